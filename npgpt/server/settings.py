"""The range of each of the server's settings (``create_app``'s and the drain's arguments, ``npgpt serve``'s
options of the same names), checked before anything is loaded or served.

Each top is far past what a server needs, and below what makes it useless: ``max_batch`` 10**8 was accepted,
then every request was a 500 (a kv cache of 3.7 TiB); a limit so large that it never binds is no limit, so
one request could take the server again; an endless drain never ends. Imports nothing of FastAPI, so the CLI
checks its options with it before it imports the server.
"""

from __future__ import annotations

import math

from ..errors import NpgptError, is_finite_number, is_integer, shown

# name -> (lowest, highest, what it is)
RANGES: dict[str, tuple[int, int, str]] = {
    "max_batch": (1, 1024, "rows decoded together per model, each with its own kv cache"),
    "max_queue": (0, 65_536, "requests waiting for a free row"),
    "max_rows": (1, 65_536, "completions per request"),
    "max_request_tokens": (1, 2**24, "tokens per request"),
    "max_request_logprobs": (1, 2**25, "logprob entries per request"),
    "max_unread_events": (1, 2**24, "stream events not yet read, over all requests"),
    "shutdown_timeout": (0, 3600, "the time in-flight requests get to finish on shutdown"),
}


def check_settings(**settings: object) -> None:
    """Raise NpgptError (param: the setting's name) for the first of ``settings`` (name=value, names of
    :data:`RANGES`; None: its default) outside its range, or of the wrong type: a whole number, and for
    ``shutdown_timeout`` any finite number of seconds."""
    for name, value in settings.items():
        if value is None:
            continue
        low, high, what = RANGES[name]
        seconds = name == "shutdown_timeout"
        ok_type = is_finite_number(value) if seconds else is_integer(value)
        if not ok_type or not low <= value <= high:  # type: ignore[operator]
            kind = "a number of seconds" if seconds else "a whole number"
            got = "infinity" if isinstance(value, float) and math.isinf(value) else shown(value)
            raise NpgptError(
                f"{name} must be {kind} from {low} to {high} ({what}), got {got}", param=name, keywords=(name,)
            )
