"""Small shared helpers: atomic writes."""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import BinaryIO, Callable, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder; on success it is renamed onto ``path``, on error removed.

    For writers that need a file name (e.g. a media muxer). A reader (or a crash) never sees a
    half-written file under the final name, and a failed write leaves the previous file as it was.
    The temporary name keeps the extension, so format guessing still works.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    os.close(fd)
    try:
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
