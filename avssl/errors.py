"""Errors a user sees by name.

:class:`UserError` marks a mistake the user can fix (a config, a path, a permission, the data): the CLI
prints its message as one line and exits with status 2, with no traceback unless ``--debug`` is given.
Any other exception is a bug and keeps its traceback.

An ``OSError`` raised by the operating system on a user's path (missing, not readable or writable, a
file where a folder is wanted, a read-only or full disk) is one too: :func:`path_error` turns it into a
:class:`PathError` whose message names the path. Errors about avssl's own files stay bugs.
"""
from __future__ import annotations

import errno
import os
from typing import Optional


class UserError(Exception):
    """A problem with the user's input (config, paths, permissions, data), not with avssl."""


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or infinite; the run stops and the last good checkpoint is kept."""


class PathError(UserError, OSError):
    """A user's path cannot be used: missing, not readable or writable, or a file where a folder is
    wanted (or the reverse). The message names the path and says what to do."""


class InvalidArgument(UserError, ValueError):
    """A value given to a command (an option, or a function argument taken from one) is out of range."""


class DataError(UserError, ValueError):
    """The data a user named holds nothing to work on: a manifest with no rows, no video in the wanted
    split, or none of the listed files present."""


#: errno -> (what went wrong, what to do) for OS errors about a path.
_PATH_ERRNOS = {
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.EACCES: ("permission denied", "check its permissions or choose another path"),
    errno.EPERM: ("operation not permitted", "check its permissions or choose another path"),
    errno.EROFS: ("read-only file system", "choose a writable location"),
    errno.EISDIR: ("a folder, not a file", "give a file path"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "give a folder path"),
    errno.EEXIST: ("already exists", "give a folder path, or remove the file that is in the way"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
    errno.ELOOP: ("too many levels of symbolic links", "check the links"),
}
#: errno -> (what went wrong, what to do) for OS errors about the disk, named path or not.
_DISK_ERRNOS = {
    errno.ENOSPC: ("no space left on device", "free some space or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write elsewhere"),
}
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def path_error(e: OSError, what: str = "") -> Optional[PathError]:
    """The :class:`PathError` that ``e`` stands for, or None when ``e`` is not about a user's path.

    ``what`` names the path's role (e.g. ``"output_dir"``) at the start of the message. An error that
    names no file (other than a full disk), or names a file inside the avssl package, is not a user's
    mistake: None, so that it keeps its traceback.
    """
    if isinstance(e, UserError):
        return e if isinstance(e, PathError) else None
    filename = os.fspath(e.filename) if isinstance(e.filename, (str, bytes, os.PathLike)) else None
    if isinstance(filename, bytes):
        filename = os.fsdecode(filename)
    lead = f"{what} " if what else ""
    if e.errno in _DISK_ERRNOS:
        problem, todo = _DISK_ERRNOS[e.errno]
        where = f"{filename}: " if filename else ""
        return PathError(f"{lead}{where}{problem}; {todo}")
    if e.errno is None and filename is None and isinstance(
        e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
    ) and str(e):
        # Raised by avssl's own checks with a message that already names the path ("... not found: PATH").
        return PathError(f"{lead}{e}")
    if e.errno not in _PATH_ERRNOS or not filename:
        return None
    if os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep):
        return None  # avssl's own files: a bug or a broken install, keep the traceback
    problem, todo = _PATH_ERRNOS[e.errno]
    if e.errno == errno.EEXIST and os.path.isfile(filename):
        problem = "a file, not a folder"
    return PathError(f"{lead}{filename}: {problem}; {todo}")


__all__ = ["UserError", "NonFiniteLossError", "PathError", "InvalidArgument", "DataError", "path_error"]
