"""The isolated worker pool: each file is handled in a worker process with a time limit.

A corrupt file, a hang or a crash of the decoder (even a segfault) marks that one file bad and the run
goes on. Workers die with the run: killed with it (even by ``kill -9``, through a parent-death signal
on Linux), and stopped by it on SIGTERM (see :func:`unwinds_on_sigterm`).
"""
from __future__ import annotations

import functools
import logging
import math
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait as _mp_wait
from typing import Any, Callable, Dict, List, Optional, Sequence

from avssl.data import decoding
from avssl.data.prep.errors import OutputError

log = logging.getLogger("avssl.data.prep")


def default_workers() -> int:
    """The CPUs this process may use (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _error_text(e: BaseException) -> str:
    if isinstance(e, decoding.DecodeError):
        return e.reason
    return f"{type(e).__name__}: {e}"


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies, however it dies (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request: nothing will signal us
        os._exit(1)


def _worker_main(conn, fn: Callable, settings: Dict[str, Any], parent_pid: int, inherited: Sequence[Any] = ()) -> None:
    _die_with_parent(parent_pid)
    # A forked worker holds copies of the parent's pipe ends (its own and the other workers'): closed,
    # the parent's death reads as end-of-file here even where no parent-death signal exists.
    for c in inherited:
        c.close()
    # Ctrl-C reaches the whole process group; the parent decides and stops the workers itself. SIGTERM
    # ends a worker at once (not through the parent's handler, which a fork copies).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        idx, job = msg

        def stage(name: str, budget: float, _idx: int = idx) -> None:
            conn.send(("stage", _idx, name, budget))

        try:
            result = fn(job, settings, stage)
        except OutputError as e:  # the output side failed, not the file: the parent stops the run
            result = {"status": "output_error", "error": e}
        except Exception as e:  # noqa: BLE001 - every per-file failure is reported, never fatal
            result = {"status": "bad", "reason": _error_text(e)}
        try:
            conn.send(("done", idx, result))
        except Exception as e:  # noqa: BLE001 - e.g. an unpicklable result
            conn.send(("done", idx, {"status": "bad", "reason": f"result could not be returned: {e}"}))


@dataclass
class _Worker:
    proc: Any
    conn: Any
    job: Optional[int] = None
    stage: str = "idle"
    deadline: float = math.inf


def _mp_context():
    # fork: workers start instantly and need no re-import; they only run PyAV (whose threads are
    # created per file), never torch's thread pools, so forking a process that has threads is safe.
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")
    return mp.get_context("spawn")


def run_isolated(
    jobs: Sequence[Dict[str, Any]],
    fn: Callable[[Dict[str, Any], Dict[str, Any], Callable[[str, float], None]], Dict[str, Any]],
    settings: Dict[str, Any],
    workers: int,
    timeout: float,
    on_result: Callable[[int, Dict[str, Any]], None],
    on_tick: Optional[Callable[[], None]] = None,
    on_lost: Optional[Callable[[int], None]] = None,
) -> None:
    """Run ``fn(job, settings, stage)`` for every job in ``workers`` processes, one job at a time each.

    A job gets ``timeout`` seconds until it calls ``stage(name, budget)``, which gives it ``budget``
    more seconds from then. A job that overruns is killed; a worker that dies (crash, signal,
    ``os._exit``) reports its job as bad; either way a fresh worker takes its place. Results come to
    ``on_result(index, result)`` in completion order; ``on_lost(index)`` runs after a killed or crashed
    job (to clean up), ``on_tick()`` at least every 0.2 s. An :class:`OutputError` raised by ``fn``
    (the output cannot be written) stops the run: it is raised here once the workers are stopped.

    Workers never outlive this call: they are stopped when it returns or raises (SIGTERM included, see
    :func:`prepare`), and on Linux the kernel kills them if this process dies (even by SIGKILL).
    """
    ctx = _mp_context()
    forking = ctx.get_start_method() == "fork"
    pending = deque(range(len(jobs)))
    pool: List[_Worker] = []

    def spawn() -> _Worker:
        parent, child = ctx.Pipe(duplex=True)
        inherited = [parent] + [w.conn for w in pool] if forking else []
        proc = ctx.Process(target=_worker_main, args=(child, fn, settings, os.getpid(), inherited), daemon=True)
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def retire(w: _Worker, reason: str) -> None:
        idx = w.job
        try:
            w.conn.close()
        except OSError:
            pass
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(5)
        pool.remove(w)
        if idx is not None:
            if on_lost is not None:
                on_lost(idx)
            on_result(idx, {"status": "bad", "reason": reason})
        if pending:
            pool.append(spawn())

    try:
        for _ in range(max(1, min(workers, len(jobs)))):
            pool.append(spawn())
        while True:
            for w in pool:
                if w.job is None and pending:
                    w.job = pending.popleft()
                    w.stage, w.deadline = "probing", time.monotonic() + timeout
                    w.conn.send((w.job, jobs[w.job]))
            busy = [w for w in pool if w.job is not None]
            if not busy:
                break
            now = time.monotonic()
            wait_s = max(0.0, min(0.2, min(w.deadline for w in busy) - now))
            ready = set(_mp_wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=wait_s))
            for w in busy:
                if w.conn in ready or w.proc.sentinel in ready:
                    try:
                        got = w.conn.poll()
                        msg = w.conn.recv() if got else None
                    except (EOFError, OSError):
                        msg = None
                    if msg is None:
                        w.proc.join(1)
                        code = w.proc.exitcode
                        if code is not None and code < 0:
                            try:
                                how = f"was killed by {signal.Signals(-code).name}"
                            except ValueError:
                                how = f"was killed by signal {-code}"
                        else:
                            how = f"exited with code {code}"
                        retire(w, f"the worker process {how} while {w.stage} (decoder crash)")
                        continue
                    if msg[0] == "stage":
                        w.stage, w.deadline = msg[2], time.monotonic() + float(msg[3])
                    else:
                        idx = w.job
                        w.job, w.stage, w.deadline = None, "idle", math.inf
                        if msg[2].get("status") == "output_error":
                            raise msg[2]["error"]
                        on_result(idx, msg[2])
                elif time.monotonic() > w.deadline:
                    retire(w, f"timed out while {w.stage} (no result within the time limit)")
            if on_tick is not None:
                on_tick()
        for w in pool:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in pool:
            w.proc.join(5)
    finally:
        for w in pool:
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(5)
            try:
                w.conn.close()
            except OSError:
                pass


class _Terminated(BaseException):
    """SIGTERM arrived during a run: unwinds it (workers stopped, partial files and lock removed)."""


def unwinds_on_sigterm(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` with SIGTERM turned into an exception (main thread only), so that its ``finally``
    blocks stop the workers and remove partial outputs and the lock; then the signal takes its course
    (the process ends by it, or the caller's own handler runs). A caller that ignores SIGTERM keeps it so."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return fn(*args, **kwargs)
        previous = signal.getsignal(signal.SIGTERM)
        if previous in (signal.SIG_IGN, None):
            return fn(*args, **kwargs)

        def on_term(signum: int, frame: Any) -> None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
            raise _Terminated(signum)

        signal.signal(signal.SIGTERM, on_term)
        try:
            return fn(*args, **kwargs)
        except _Terminated:
            log.error("avssl prep stopped by SIGTERM; partial outputs removed, finished ones kept")
            signal.signal(signal.SIGTERM, previous)
            os.kill(os.getpid(), signal.SIGTERM)  # SIG_DFL ends the process here, by the signal
            raise InterruptedError("avssl prep was stopped by SIGTERM") from None
        finally:
            if signal.getsignal(signal.SIGTERM) in (on_term, signal.SIG_IGN):
                signal.signal(signal.SIGTERM, previous)

    return wrapper

