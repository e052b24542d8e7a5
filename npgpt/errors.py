"""User-facing errors. The CLI and the server print these as one line, never a traceback."""


class NpgptError(ValueError):
    """A problem the user can fix; the message says what was expected and what to do."""


class CheckpointError(NpgptError):
    """A checkpoint is missing, corrupt, truncated or of an unknown format."""
