"""The errors of a prep run that a user sees."""
from __future__ import annotations

import contextlib
import errno
from typing import Iterator

from avssl.errors import UserError


class PrepError(UserError, ValueError):
    """A mistake in how a prep run was asked for: its arguments, source or output folder."""


class PrepLockedError(PrepError, RuntimeError):
    """Another prep run holds the output folder."""


class OutputError(UserError, OSError):
    """An output file or folder cannot be written (read-only, full, gone); it stops the run."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"cannot write {path}: {reason}")

    def __reduce__(self):  # crosses the worker pipe with both arguments
        return (OutputError, (self.path, self.reason))

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}"


#: errno values that say the output side failed, whatever file the decoder was reading.
OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """Turn a failure to write ``path`` into an :class:`OutputError` naming it."""
    try:
        yield
    except OSError as e:
        raise OutputError(path, e.strerror or str(e)) from None

