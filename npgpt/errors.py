"""User-facing errors. The CLI and the server print these as one line, never a traceback."""


class NpgptError(ValueError):
    """A problem the user can fix; the message says what was expected and what to do.

    ``param``: the offending argument's name (the Python API's, e.g. ``max_new_tokens``), or None.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class CheckpointError(NpgptError):
    """A checkpoint is missing, corrupt, truncated or of an unknown format."""
