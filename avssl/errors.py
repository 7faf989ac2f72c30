"""Errors a user sees by name.

:class:`UserError` marks a mistake the user can fix (a config, a path, a permission, the data): the CLI
prints its message as one line and exits with status 2, with no traceback unless ``--debug`` is given.
Any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (config, paths, permissions, data), not with avssl."""


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or infinite; the run stops and the last good checkpoint is kept."""
