"""``avssl prep`` run safety: workers die with the run (kill -9, SIGTERM), one run per output folder
(the lock under a start race), an unwritable output folder, and one-line user errors with exit status 2."""
from __future__ import annotations

import multiprocessing as mp
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest

import media
from avssl.data import decoding, prep
from avssl.data.prep import lock
from avssl.data.prep.transcode import PART
from avssl.data.manifest import read_manifest

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/: shared helpers and scripts
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.path.dirname(HERE), COLUMNS="400")


def prep_cmd(*args: str) -> list:
    return [sys.executable, "-m", "avssl", "prep", *args]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """12 copies of a 4 s 320×240 video: a run with 2 workers lasts a couple of seconds."""
    src = tmp_path_factory.mktemp("lifetime") / "src"
    first = media.write_video(str(src / "a" / "v00.mp4"), num_frames=60, fps=15, width=320, height=240)
    for i in range(1, 12):
        shutil.copy(first, src / "a" / f"v{i:02d}.mp4")
    return src


def descendants(pid: int) -> list:
    """Live (non-zombie) processes whose parent chain leads to ``pid``."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(name)] = int(fields[1])
    out, frontier = [], {pid}
    while frontier:
        children = [p for p, pp in parents.items() if pp in frontier]
        out += children
        frontier = set(children)
    return out


def alive(pids) -> list:
    """Those of ``pids`` that still run (zombies count as gone: nothing is left of them but the entry)."""
    left = []
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    left.append(p)
        except OSError:
            pass
    return left


def partials(out) -> list:
    return [os.path.join(d, n) for d, _, ns in os.walk(out) for n in ns if PART in n]


def start_mid_run(src, out):
    """Start `avssl prep` with 2 workers and return once both workers run and a partial output exists."""
    proc = subprocess.Popen(prep_cmd(str(src), str(out), "--workers", "2", "--short-side", "256"), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        workers = descendants(proc.pid)
        if len(workers) >= 2 and partials(out):
            return proc, workers
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("prep never got mid-run: " + proc.communicate()[0].decode()[-2000:])


def gone_within(pids, seconds: float) -> list:
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(pids)


def test_kill_9_leaves_no_worker_and_a_rerun_completes(corpus, tmp_path):
    out = tmp_path / "out"
    proc, workers = start_mid_run(corpus, out)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        left = gone_within(workers, 5.0)
        assert not left, f"workers {left} outlived their killed parent"
    finally:
        for p in alive(workers):
            os.kill(p, signal.SIGKILL)
    # The dead run's lock and partial files are taken over and cleaned by the next run, which finishes.
    assert (out / lock.LOCK_NAME).exists()
    rerun = subprocess.run(prep_cmd(str(corpus), str(out), "--workers", "2", "--short-side", "256"), env=ENV,
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == 12
    assert all(decoding.probe(r.path)["height"] == 256 for r in rows)
    assert not partials(out) and not (out / lock.LOCK_NAME).exists()


def test_sigterm_stops_workers_removes_partials_and_exits_by_the_signal(corpus, tmp_path):
    out = tmp_path / "out"
    before = {p: os.stat(p).st_mtime_ns for p in sorted(map(str, corpus.rglob("*.mp4")))}
    proc, workers = start_mid_run(corpus, out)
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)
        left = gone_within(workers, 5.0)
        assert not left, f"workers {left} outlived the stopped run"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for p in alive(workers):
            os.kill(p, signal.SIGKILL)
    output = proc.stdout.read().decode()
    assert proc.returncode == -signal.SIGTERM, output[-2000:]
    assert "stopped by SIGTERM" in output
    assert not partials(out), "partial outputs left behind"
    assert not (out / lock.LOCK_NAME).exists()
    for p in (out / "videos").rglob("*.mp4"):  # what finished before the signal is whole
        assert decoding.probe(p)["height"] == 256
    assert {p: os.stat(p).st_mtime_ns for p in before} == before


# -- the lock ------------------------------------------------------------------------------------
def _contender(out: str, barrier, results, rounds: int) -> None:
    for r in range(rounds):
        barrier.wait()
        try:
            fd = lock.acquire(out)
        except prep.PrepLockedError:
            fd = None
        results.put((r, fd is not None))
        barrier.wait()  # everyone has tried: the holder lets go, or dies holding it
        if fd is not None:
            if r % 3 == 0:
                lock.release(out, fd)
            elif r % 3 == 1:
                os.close(fd)  # as at a crash: the file stays, the kernel drops the flock
            else:
                lock.release(out, fd)  # a dead run's lock from an older avssl: a bare pid
                with open(os.path.join(out, lock.LOCK_NAME), "w") as f:
                    f.write("999999999")
        barrier.wait()


def test_preps_started_at_the_same_instant_take_the_lock_once(tmp_path):
    """Every round, 8 runs start at the same instant, on a free folder or on the lock of a run that
    died (flock or bare pid). Old behaviour: a contender read the new, still empty lock file, took pid 0
    for dead and deleted it, so two runs held the lock (here: in about one round in twenty)."""
    n, rounds = 8, 400
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_contender, args=(str(tmp_path), barrier, results, rounds)) for _ in range(n)]
    for p in procs:
        p.start()
    holders = {r: 0 for r in range(rounds)}
    try:
        for _ in range(n * rounds):
            r, held = results.get(timeout=60)
            holders[r] += held
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    wrong = {r: h for r, h in holders.items() if h != 1}
    assert not wrong, f"rounds where the number of holders was not 1: {wrong}"
    assert not (tmp_path / lock.LOCK_NAME).exists()


def test_a_dead_holders_lock_is_taken_over_and_a_live_one_refused(tmp_path):
    out = str(tmp_path)
    fd = lock.acquire(out)
    with open(tmp_path / lock.LOCK_NAME) as f:
        assert f.read().split() == [str(os.getpid()), "flock"]  # complete as soon as it is visible
    with pytest.raises(prep.PrepLockedError, match=rf"another `avssl prep` \(pid {os.getpid()}\) is writing to"):
        lock.acquire(out)
    # Its holder dies without letting go: a child takes the lock and is killed.
    ctx = mp.get_context("fork")
    lock.release(out, fd)
    child = ctx.Process(target=lambda: (lock.acquire(out), time.sleep(60)))
    child.start()
    deadline = time.monotonic() + 10
    while not (tmp_path / lock.LOCK_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    fd = lock.acquire(out)  # the kernel dropped the dead holder's flock
    lock.release(out, fd)


# -- output folders that cannot be written ----------------------------------------------------------
def _unprivileged() -> dict:
    """subprocess arguments that make permission bits bind: as root, drop the capabilities that ignore them."""
    if os.geteuid() != 0:
        return {}

    def drop():
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: gone from the bounding set, so from exec
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")

    return {"preexec_fn": drop}


@pytest.fixture
def small_src(tmp_path):
    src = tmp_path / "src"
    media.write_video(str(src / "a" / "x.mp4"), num_frames=5, fps=10, audio=False)
    media.write_video(str(src / "a" / "y.mp4"), num_frames=5, fps=10, audio=False)
    return src


def run_prep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(prep_cmd(*args), env=ENV, capture_output=True, text=True, timeout=120, **_unprivileged())


def error_lines(proc: subprocess.CompletedProcess) -> list:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "error:" in line]


def test_read_only_output_folder_fails_at_once_with_one_line(small_src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        t0 = time.monotonic()
        proc = run_prep(str(small_src), str(out), "--workers", "1", "--short-side", "32")
        assert time.monotonic() - t0 < 30
    finally:
        out.chmod(0o755)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and f"cannot write {out}: the output folder is not writable" in lines[0], lines
    assert os.listdir(out) == []


def test_unwritable_output_subfolder_stops_the_run_and_blames_no_source(small_src, tmp_path):
    out = tmp_path / "out"
    (out / "videos" / "a").mkdir(parents=True)
    (out / "videos" / "a").chmod(0o555)
    try:
        proc = run_prep(str(small_src), str(out), "--workers", "1", "--short-side", "32")
    finally:
        (out / "videos" / "a").chmod(0o755)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and f"cannot write {out / 'videos' / 'a'}: Permission denied" in lines[0], lines
    # No report calls a source bad, no manifest, nothing half-written, no lock left.
    assert not (out / "prep_report.json").exists() and not (out / "manifest.csv").exists()
    assert not partials(out) and not (out / lock.LOCK_NAME).exists()
    assert "x.mp4" not in proc.stdout and "y.mp4" not in proc.stdout


def _small_disk():
    # Writes past 4 kB fail with EFBIG (as a full disk fails with ENOSPC) instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_a_disk_that_fills_up_stops_the_run_and_blames_no_source(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    media.write_video(str(src / "a" / "x.mp4"), num_frames=30, fps=10, width=160, height=120)
    proc = subprocess.run(prep_cmd(str(src), str(out), "--workers", "1", "--short-side", "120"), env=ENV,
                          capture_output=True, text=True, timeout=120, preexec_fn=_small_disk)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and f"cannot write {out / 'videos' / 'a'}: File too large" in lines[0], lines
    assert not (out / "prep_report.json").exists() and "x.mp4" not in proc.stdout
    assert not partials(out) and not (out / lock.LOCK_NAME).exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["{src}"], "OUT_DIR is required unless --check is given"),
        (["{src}", "{tmp}/out", "--short-side", "31"], "short_side must be an even number"),
        (["{tmp}/missing", "{tmp}/out"], "source folder not found: {tmp}/missing"),
        (["{src}", "{src}/out"], "must not be {src} or inside it"),
        (["{src}", "{tmp}/locked"], r"another `avssl prep` (pid {pid}) is writing to {tmp}/locked"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(small_src, tmp_path, args, message):
    fill = {"src": str(small_src), "tmp": str(tmp_path), "pid": str(os.getpid())}
    locked = tmp_path / "locked"
    locked.mkdir()
    fd = lock.acquire(str(locked))  # held by this (live) process
    try:
        proc = subprocess.run(prep_cmd(*[a.format(**fill) for a in args]), env=ENV, capture_output=True,
                              text=True, timeout=120)
    finally:
        lock.release(str(locked), fd)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 1 and message.format(**fill) in lines[0], lines
