"""Per-request limits, so that one request cannot take the server: rows, tokens in all, and logprobs.

A request's rows are its prompts times ``n``; its tokens are what its rows hold at the end, each
row's prompt plus ``max_tokens``, which bounds the kv cache and the compute it asks for. Its logprobs
are the entries its answer lists: each token listed with logprobs (the echoed prompts' and the
completions') and its ``logprobs`` alternatives, which bounds the answer (about 25 bytes an entry, each
built in Python) where the token limit does not: 20 alternatives a token multiply it by 21. All are
checked before any per-row work: the rows from the body's shape alone (before tokenising), the
tokens and logprobs once the prompts are token ids. Over a limit is a 400 naming the limit, its
server option, and the request's parameter to change.

The defaults: 256 rows (two prompts at OpenAI's largest ``n`` of 128), 131072 tokens (128 rows
of a full 1024-token GPT-2 context), so any one-prompt request the model can run is admitted, and
twice the token limit in logprob entries (262144 at its default): ``logprobs`` 1 (a scoring client's,
lm-evaluation-harness's) over every token the token limit admits, whatever it is set to, or 20 over
12483 tokens at the default, answers of ~10 MB at most.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import shown
from .errors import APIError

MAX_ROWS = 256
MAX_REQUEST_TOKENS = 131_072
MAX_REQUEST_LOGPROBS = 2 * MAX_REQUEST_TOKENS  # at the default token limit; create_app takes twice the one given


@dataclass(frozen=True)
class Limits:
    """``max_rows``: prompts x ``n`` per request; ``max_request_tokens``: the sum over its rows of
    prompt tokens + ``max_tokens``; ``max_request_logprobs``: the tokens its answer lists with logprobs,
    times ``logprobs`` + 1. Raises ValueError unless all are >= 1."""

    max_rows: int = MAX_ROWS
    max_request_tokens: int = MAX_REQUEST_TOKENS
    max_request_logprobs: int = MAX_REQUEST_LOGPROBS

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_request_tokens < 1 or self.max_request_logprobs < 1:
            raise ValueError(
                f"max_rows, max_request_tokens and max_request_logprobs must be >= 1, got {shown(self.max_rows)}, "
                f"{shown(self.max_request_tokens)} and {shown(self.max_request_logprobs)}"
            )

    def check_logprobs(
        self,
        listed: int,
        k: int,
        what: str,
        param: str = "logprobs",
        smaller: str = "fewer or shorter prompts, or split the request",
    ) -> None:
        """400 if ``listed`` tokens with logprobs, each with ``k`` alternatives, are over ``max_request_logprobs``
        entries (each token and its alternatives: ``k`` + 1). ``what``: how the request lists them, for the
        message (``2 prompts echoed: 1024 tokens``); ``param``: the request's field that is ``k`` (completions'
        ``logprobs``, chat's ``top_logprobs``); ``smaller``: what else the client may change."""
        entries = listed * (k + 1)
        if entries <= self.max_request_logprobs:
            return
        fits = self.max_request_logprobs // listed - 1  # the k that would fit, if any
        raise APIError(
            400,
            f"this request asks for the logprobs of {listed} tokens ({what}) x {k + 1} (each token and its "
            f"{param}={k} alternatives) = {entries} entries, over the server's limit of {self.max_request_logprobs} "
            f"per request (--max-request-logprobs); send {f'{param} of at most {fits}, or ' if fits >= 0 else ''}"
            f"{smaller}",
            param=param,
            code="too_many_logprobs",
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

    def check_tokens(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        max_tokens: int,
        prompt_param: str = "prompt",
        max_tokens_param: str | None = "max_tokens",
    ) -> None:
        """400 if the rows' prompt tokens plus ``max_tokens`` each, in all, are over ``max_request_tokens``.

        The error names what to change: ``prompt_param`` (``prompt``, or chat's ``messages``) when the
        prompts leave no room for one token each, ``n`` when only its copies of them do, else
        ``max_tokens_param``, the field the client sent ``max_tokens`` in (None: it sent none, so the
        value is the default, and the message says so rather than cite a value the client never sent).
        """
        per_row = sum(len(p) for p in prompts)
        prompt_total = n * per_row
        total = prompt_total + n * len(prompts) * max_tokens
        if total <= self.max_request_tokens:
            return
        limit = f"the server's limit of {self.max_request_tokens} per request (--max-request-tokens)"
        noun = "messages" if prompt_param == "messages" else "prompt" if len(prompts) == 1 else "prompts"
        take = f"the {noun} {'takes' if noun == 'prompt' else 'take'} {per_row} tokens"
        room = (self.max_request_tokens - prompt_total) // (n * len(prompts))  # the max_tokens that fits
        if room < 1:  # no max_tokens could help: the prompts (or n copies of them) are over alone
            alone = n == 1 or per_row + len(prompts) > self.max_request_tokens
            fix = (
                f"send fewer or shorter {'messages' if noun == 'messages' else 'prompts'}"
                if alone
                else f"lower n to at most {self.max_request_tokens // (per_row + len(prompts))}"
            )
            raise APIError(
                400,
                f"{take}{'' if n == 1 else f' x n={n} = {prompt_total}'}, leaving no room for a completion "
                f"under {limit}; {fix}",
                param=prompt_param if alone else "n",
                code="too_many_tokens",
            )
        field = max_tokens_param or "max_tokens"
        asked = f"{field}={max_tokens}" + ("" if max_tokens_param else " (not sent: its default)")
        rows = n * len(prompts)
        raise APIError(
            400,
            f"this request asks for {total} tokens in all: {per_row} {noun.rstrip('s')} tokens x n={n}, plus "
            f"{asked} for each of its {rows} completion{'s' if rows > 1 else ''}, over {limit}; send {field} of "
            f"at most {room}"
            + ("" if n == 1 else ", or lower n")
            + ("" if len(prompts) == 1 else ", or send fewer prompts"),
            param=max_tokens_param,
            code="too_many_tokens",
        )


def count_prompts(prompt: Any) -> int:
    """How many prompts a completions ``prompt`` holds (text, texts, token ids, lists of ids), without
    looking at each: one string or one list of ids is one prompt."""
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        return len(prompt)
    return 1
