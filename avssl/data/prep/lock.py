"""One prep run at a time per output folder: an atomically created lock file, held with ``flock``."""
from __future__ import annotations

import contextlib
import errno
import os
import time
from typing import Optional

from avssl.data.prep.errors import OutputError, PrepLockedError

LOCK_NAME = ".avssl-prep.lock"


def _try_flock(fd: int) -> Optional[bool]:
    """Take an exclusive flock without waiting: True taken, False held elsewhere, None unsupported here."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            return None  # e.g. Lustre mounted without flock
        raise


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire(out: str) -> int:
    """Make this process the only prep run writing to ``out``; returns the lock's file descriptor.

    The lock file is written (pid, then ``flock`` when held that way) and flocked under a temporary
    name, then linked to ``.avssl-prep.lock``, which fails if a lock exists: a reader never sees a
    lock without its pid. An existing lock is alive while its flock is held (the kernel drops it when
    the holder dies, whatever its pid later becomes) or, for a lock written without flock (a file
    system without locks, an older avssl), while its pid runs. A dead one is replaced in one rename,
    done while holding its flock, so two runs that find it together cannot both take it over (on a file
    system without flock, that last step is not protected).

    Raises:
        PrepLockedError: another run holds the lock.
        OutputError: ``out`` is not writable.
    """
    path = os.path.join(out, LOCK_NAME)
    tmp = os.path.join(out, f"{LOCK_NAME}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise OutputError(out, f"the output folder is not writable ({e.strerror})") from None
    try:
        flocked = _try_flock(fd)
        os.write(fd, f"{os.getpid()}\n{'flock' if flocked else ''}\n".encode())
        for _ in range(100):
            try:
                os.link(tmp, path)
                return fd
            except FileExistsError:
                pass
            if _take_over(path, tmp):
                return fd
        raise PrepLockedError(f"could not take the lock {path}: it keeps changing")
    except BaseException:
        os.close(fd)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _take_over(path: str, tmp: str) -> bool:
    """Replace the lock at ``path`` by ``tmp`` if its holder is gone. False: look again (it changed)."""
    try:
        other = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # released meanwhile
    try:
        text = os.read(other, 256).decode("ascii", "replace").split()
        pid = int(text[0]) if text and text[0].isdigit() else None
        # Its flock: held by its owner while it lives (a lock written with flock), and by whoever is
        # taking a dead lock over (any lock), so that only one run can.
        got = _try_flock(other)
        if "flock" in text[1:]:
            alive = got is False or (got is None and pid is not None and _pid_alive(pid))
        else:
            if got is False:
                return False  # another run is taking this dead lock over: look again
            young = time.time() - os.fstat(other).st_mtime < 5.0  # an older avssl writes its pid just after
            alive = (pid is not None and pid != os.getpid() and _pid_alive(pid)) or (pid is None and young)
        if not _same_file(other, path):
            return False  # replaced meanwhile
        if alive:
            who = f"pid {pid}" if pid is not None else "pid unknown"
            raise PrepLockedError(
                f"another `avssl prep` ({who}) is writing to {os.path.dirname(path)}; if none is, remove {path}"
            )
        os.replace(tmp, path)  # its holder is gone: ours, complete and flocked, takes its place
        return True
    finally:
        os.close(other)


def release(out: str, fd: int) -> None:
    """Remove the lock (while still holding it, so that no one can take the old file) and close it."""
    path = os.path.join(out, LOCK_NAME)
    try:
        if _same_file(fd, path):
            os.remove(path)
    finally:
        os.close(fd)

