"""Errors a user sees by name."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops and the last good checkpoint is kept."""
