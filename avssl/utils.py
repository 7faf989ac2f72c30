"""Small shared helpers: atomic writes, and the checks on folders a command writes to."""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import tempfile
from typing import BinaryIO, Callable, Iterator, Union

from avssl.errors import path_error

PathLike = Union[str, "os.PathLike[str]"]


def _create_temp(folder: str, suffix: str) -> str:
    """Create an empty, uniquely named file in ``folder`` and return its path.

    Created with mode 0666 so that the kernel applies the umask exactly as it does for
    ``open(path, "w")`` (``tempfile.mkstemp`` would give 0600 whatever the umask).
    """
    for _ in range(100):
        tmp = os.path.join(folder, f".tmp-{secrets.token_hex(4)}{suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name in {folder}")


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder; on success it is renamed onto ``path``, on error removed.

    For writers that need a file name (e.g. a media muxer). A reader (or a crash) never sees a
    half-written file under the final name, and a failed write leaves the previous file as it was.
    The temporary name keeps the extension, so format guessing still works. The file ends up with the
    mode ``open(path, "w")`` would give it: that of the file it replaces, else 0666 less the umask.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        tmp = _create_temp(folder, os.path.basename(path))
    except OSError as e:
        if e.errno is None:
            raise
        # Name the file the caller asked for, not the temporary one.
        raise type(e)(e.errno, e.strerror, path) from None
    try:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temp file beside ``path``, fsync it, then rename it onto ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def check_writable_dir(path: PathLike, what: str = "output folder") -> str:
    """Check that folder ``path`` exists or can be created, and that files can be written in it.

    Creates nothing: the nearest existing folder on the way to ``path`` gets a temporary probe file,
    removed at once (a real file, not ``os.access``, which ignores read-only mounts and is fooled by
    root's privileges). Returns ``path``. Raises :class:`~avssl.errors.PathError` naming ``what`` and
    the path when it is a file, lies under a file, or is not writable (permissions, a read-only file
    system, a full disk), so a command stops before its work rather than when it first saves something.
    """
    path = os.fspath(path)
    probe = os.path.abspath(path)
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        if not os.path.isdir(probe):
            code = errno.EEXIST if probe == os.path.abspath(path) else errno.ENOTDIR
            raise OSError(code, os.strerror(code), path)
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        e.filename = path  # the probe file's name means nothing to the user
        err = path_error(e, what)
        if err is None:
            raise
        raise err from None
    return path
