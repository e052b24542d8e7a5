"""``POST /v1/completions``: OpenAI's legacy text completions, as one stream of chunks.

Each chunk holds one choice's new text (``echo``: the prompt first), its ``logprobs`` for the new
token, and its ``finish_reason`` once done; the plain response is those chunks folded.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request

from ..errors import NpgptError
from ..generate import Event
from ..sampling import log_softmax, top_logprobs
from ..tokenizer import Tokenizer
from .errors import APIError, check_request
from .limits import Limits, count_prompts
from .metrics import Metrics
from .protocol import CompletionRequest, token_text
from .scheduler import Scheduler
from .streaming import Answer, Chunk, Run

LOGPROB_KEYS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


async def start(body: CompletionRequest, request: Request, name: str, sched: Scheduler, metrics: Metrics) -> Answer:
    """Check and queue the request (errors here are plain 4xx/503 responses); its answer follows."""
    tok = sched.model.tokenizer
    body.check_supported()
    limits: Limits = request.app.state.limits
    n = body.n or 1
    limits.check_rows(count_prompts(body.prompt), n)  # before any per-row work
    # tokenising many prompts takes a while: on a thread, so the event loop keeps serving
    prompts, texts = await asyncio.to_thread(prompt_rows, body.prompt, tok.encode, tok.decode)
    params = body.sampling(body.max_tokens or 16, body.logprobs)
    limits.check_tokens(prompts, n, params.max_new_tokens)
    rows = [p for p in prompts for _ in range(n)]
    check_request(sched.model, rows, params)
    echo_lp = None
    if body.echo and params.logprobs is not None:
        echo_lp = await score_prompts(sched, prompts, params.logprobs)
    run = Run(sched, rows, params)
    metrics.prompt(name, sum(len(p) for p in prompts))
    head = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
            "model": name}
    want_lp = params.logprobs is not None
    prefix = [texts[i // n] if body.echo else "" for i in range(len(rows))]
    logs = [CompletionLogprobs(tok, len(texts[i // n])) for i in range(len(rows))]
    if echo_lp is not None:
        for i, log_ in enumerate(logs):
            log_.echo(prompts[i // n], *echo_lp[i // n])

    async def chunks() -> AsyncIterator[Chunk]:
        done = 0
        for i in range(len(rows)):
            if prefix[i]:
                lp = logs[i].flush() if echo_lp is not None else None
                yield {**head, "choices": [choice(i, prefix[i], lp, None)]}
        async for ev in run.events(request, poll_disconnect=not body.stream):
            done += ev.token is not None
            lp = logs[ev.row].add(ev) if want_lp else None
            if ev.text or ev.finish_reason or lp:
                yield {**head, "choices": [choice(ev.row, ev.text, lp, ev.finish_reason)]}
        n_prompt = sum(len(p) for p in prompts)
        yield {**head, "choices": [], "usage": {"prompt_tokens": n_prompt, "completion_tokens": done,
                                                "total_tokens": n_prompt + done}}

    def fold(chunks: list[Chunk]) -> Chunk:
        out = [choice(i, "", {k: [] for k in LOGPROB_KEYS} if want_lp else None, None) for i in range(len(rows))]
        for c in chunks[:-1]:
            for part in c["choices"]:
                o = out[part["index"]]
                o["text"] += part["text"]
                for k, v in (part["logprobs"] or {}).items():
                    o["logprobs"][k] += v
                o["finish_reason"] = part["finish_reason"] or o["finish_reason"]
        return {**head, "choices": out, "usage": chunks[-1]["usage"]}

    return Answer(chunks(), fold)


def choice(i: int, text: str, logprobs: dict | None, finish: str | None) -> dict[str, Any]:
    return {"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish}


def prompt_rows(prompt: Any, encode: Callable[[str], list[int]],
                decode: Callable[[list[int]], str]) -> tuple[list[list[int]], list[str]]:
    """Token ids and text of each prompt: a string, strings, token ids, or lists of token ids."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise APIError(400, "prompt is empty; give text or token ids", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        prompt = [prompt]
    ids = [encode(p) if isinstance(p, str) else list(p) for p in prompt]
    try:
        texts = [p if isinstance(p, str) else decode(p) for p in prompt]
    except NpgptError as e:
        raise APIError(400, str(e), param="prompt") from None
    return ids, texts


async def score_prompts(sched: Scheduler, prompts: list[list[int]], k: int) -> list[tuple[list, list]]:
    """Each prompt token's logprob (None for the first) and top-k alternatives, for ``echo``."""
    def score() -> list[tuple[list, list]]:
        out = []
        for ids in prompts:
            n_tokens = sched.model.tokenizer.n_vocab  # a padded vocabulary's extra ids are no token
            lp = log_softmax(sched.model.logits([ids])[0, :, :n_tokens])  # [T, V] -> [T, n_tokens]
            out.append(([None] + [float(lp[t - 1, ids[t]]) for t in range(1, len(ids))],
                        [None] + [top_logprobs(lp[t - 1], k) for t in range(1, len(ids))]))
        return out

    return await asyncio.wrap_future(sched.call(score))


class CompletionLogprobs:
    """The legacy completions ``logprobs`` object, built token by token: ``tokens``,
    ``token_logprobs``, ``top_logprobs`` ({token: logprob}) and ``text_offset`` (characters from
    the start of the prompt)."""

    def __init__(self, tok: Tokenizer, offset: int) -> None:
        self.tok = tok
        self.offset = offset  # of the next generated token
        self._clear()

    def _clear(self) -> None:
        self.obj: dict[str, list] = {k: [] for k in LOGPROB_KEYS}

    def echo(self, ids: list[int], lps: list[float | None], tops: list) -> None:
        offset, raw = 0, b""
        for t, lp, top in zip(ids, lps, tops, strict=True):
            self._append(t, lp, top, offset)
            raw += self.tok.token_bytes(t)
            offset = len(raw.decode("utf-8", errors="ignore"))

    def add(self, ev: Event) -> dict[str, list] | None:
        """Record a generated token; returns the object for just this token."""
        if ev.token is None:
            return None
        self._append(ev.token, ev.logprob, ev.top, self.offset)
        self.offset += len(ev.text)
        return {k: v[-1:] for k, v in self.obj.items()}

    def flush(self) -> dict[str, list]:
        obj = self.obj
        self._clear()
        return obj

    def _append(self, token: int, lp: float | None, top: list | None, offset: int) -> None:
        self.obj["tokens"].append(token_text(self.tok, token))
        self.obj["token_logprobs"].append(lp)
        self.obj["top_logprobs"].append(None if top is None else {token_text(self.tok, t): v for t, v in top})
        self.obj["text_offset"].append(offset)
