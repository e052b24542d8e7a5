"""Per-request limits, so that one request cannot take the server: rows, and tokens in all.

A request's rows are its prompts times ``n``; its tokens are what its rows hold at the end, each
row's prompt plus ``max_tokens``, which bounds the kv cache and the compute it asks for. Both are
checked before any per-row work: the rows from the body's shape alone (before tokenising), the
tokens once the prompts are token ids. Over a limit is a 400 naming the limit, its server option,
and the request's parameter to change.

The defaults: 256 rows (two prompts at OpenAI's largest ``n`` of 128), and 131072 tokens (128 rows
of a full 1024-token GPT-2 context), so any one-prompt request the model can run is admitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import shown
from .errors import APIError

MAX_ROWS = 256
MAX_REQUEST_TOKENS = 131_072


@dataclass(frozen=True)
class Limits:
    """``max_rows``: prompts x ``n`` per request; ``max_request_tokens``: the sum over its rows of
    prompt tokens + ``max_tokens``. Raises ValueError unless both are >= 1."""

    max_rows: int = MAX_ROWS
    max_request_tokens: int = MAX_REQUEST_TOKENS

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_request_tokens < 1:
            raise ValueError(
                f"max_rows and max_request_tokens must be >= 1, got {shown(self.max_rows)} "
                f"and {shown(self.max_request_tokens)}"
            )

    def check_rows(self, n_prompts: int, n: int) -> None:
        """400 if ``n_prompts`` x ``n`` rows are over ``max_rows`` (param: ``n`` if one prompt, else ``prompt``)."""
        if n_prompts * n > self.max_rows:
            raise APIError(
                400,
                f"this request asks for {n_prompts} prompt(s) x n={n} = {n_prompts * n} completions, "
                f"over the server's limit of {self.max_rows} per request (--max-rows); send fewer "
                "prompts or a lower n, or split the request",
                param="n" if n_prompts == 1 else "prompt",
                code="too_many_rows",
            )

    def check_tokens(self, prompts: Sequence[Sequence[int]], n: int, max_tokens: int) -> None:
        """400 if the rows' prompt tokens plus ``max_tokens`` each, in all, are over ``max_request_tokens``."""
        total = n * (sum(len(p) for p in prompts) + len(prompts) * max_tokens)
        if total > self.max_request_tokens:
            raise APIError(
                400,
                f"this request asks for {total} tokens in all (n={n} x the prompts' "
                f"{sum(len(p) for p in prompts)} tokens + max_tokens={max_tokens} per completion), over "
                f"the server's limit of {self.max_request_tokens} per request (--max-request-tokens); "
                "lower max_tokens or n, or send fewer prompts",
                param="max_tokens",
                code="too_many_tokens",
            )


def count_prompts(prompt: Any) -> int:
    """How many prompts a completions ``prompt`` holds (text, texts, token ids, lists of ids), without
    looking at each: one string or one list of ids is one prompt."""
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        return len(prompt)
    return 1
