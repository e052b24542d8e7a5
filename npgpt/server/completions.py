"""``POST /v1/completions``: OpenAI's legacy text completions, as one stream of chunks.

Each chunk holds one choice's new text (``echo``: the prompt first), its ``logprobs`` for the new
token, and its ``finish_reason`` once done; the plain response is those chunks folded.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

from fastapi import Request

from ..errors import NpgptError
from ..generate import Event, check_logit_bias
from ..sampling import check_finite, log_softmax, top_logprobs
from ..token_ids import check_token_ids, count_tokens
from ..tokenizer import TextOffsets, Tokenizer
from .errors import APIError, bad_request, check_request
from .limits import Limits, count_prompts
from .metrics import Metrics
from .protocol import CompletionRequest
from .response_parts import token_text
from .scheduler import Scheduler
from .streaming import Answer, Chunk, Run, Tally

LOGPROB_KEYS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


async def start(
    body: CompletionRequest,
    request: Request,
    name: str,
    sched: Scheduler,
    metrics: Metrics,
    special_tokens: bool = True,
) -> Answer:
    """Check and queue the request (errors here are plain 4xx/503 responses); its answer follows.

    ``special_tokens``: a literal ``<|endoftext|>`` in a text prompt is the special token (as in
    OpenAI's and vLLM's servers). ``max_tokens: 0`` with ``echo`` scores the prompt and generates
    nothing, as OpenAI's completions API did for scoring clients.
    """
    tok = sched.model.tokenizer
    body.check_supported(tok)
    limits: Limits = request.app.state.limits
    n = body.n or 1
    limits.check_rows(count_prompts(body.prompt), n)  # before any per-row work
    # tokenising many prompts takes a while: on a thread, so the event loop keeps serving
    encode = partial(tok.encode, allow_special=special_tokens)
    n_vocab, n_tokens = sched.model.config.n_vocab, count_tokens(sched.model.config.n_vocab, tok)

    def check(ids: list[int], what: str) -> None:
        check_token_ids(ids, n_vocab, n_tokens, what)

    prompts, texts = await asyncio.to_thread(prompt_rows, body.prompt, encode, tok.decode, check)
    max_tokens = 16 if body.max_tokens is None else body.max_tokens  # 0 is a valid value, not "unset"
    if max_tokens == 0 and not body.echo:
        raise APIError(
            400,
            "max_tokens is 0 without echo: nothing would be returned; ask for max_tokens >= 1, "
            "or send echo: true (with logprobs) to score the prompt",
            param="max_tokens",
        )
    # checks the sampling fields either way; on a thread, as a client's bias on every token takes ~0.1 s to check
    params = await asyncio.to_thread(body.sampling, max(max_tokens, 1), body.logprobs)
    sent = "max_tokens" if body.max_tokens is not None and "max_tokens" in body.model_fields_set else None
    # the model's context first: a max_tokens past it is told so, never told to fit the server's request limit
    # with a value the context refuses next. (Each prompt once: its n rows are the same.)
    if max_tokens:
        check_request(sched.model, prompts, params)
    else:
        check_prompts(sched.model.config.n_ctx, prompts)
        try:  # nothing is sampled, but a bias naming no token is still the request's mistake
            check_logit_bias(n_vocab, n_tokens, params)
        except NpgptError as e:
            raise bad_request(e) from None
    limits.check_tokens(prompts, n, max_tokens, max_tokens_param=sent)  # sent: None is the default of 16
    rows = [p for p in prompts for _ in range(n)]
    if body.logprobs is not None:  # the answer's size: before any prompt is scored or row started
        echoed = n * sum(len(p) for p in prompts) if body.echo else 0
        parts = [f"{len(prompts)} prompt(s) echoed{'' if n == 1 else f' x n={n}'}: {echoed} tokens"] if echoed else []
        parts += [f"max_tokens={max_tokens} for each of its {len(rows)} completion(s)"] if max_tokens else []
        limits.check_logprobs(echoed + len(rows) * max_tokens, body.logprobs, ", plus ".join(parts))
    echo_lp = None
    if body.echo and params.logprobs is not None:
        echo_lp = await score_prompts(sched, prompts, params.logprobs, request)
    run = Run(sched, rows, params, request.app.state.backlog) if max_tokens else None
    metrics.prompt(name, sum(len(p) for p in prompts))
    head = {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": name,
    }
    want_lp = params.logprobs is not None
    prefix = [texts[i // n] if body.echo else "" for i in range(len(rows))]
    # Echoed prompts' logprobs are a dict per token (k alternatives each, their texts decoded): seconds of
    # Python for a harness's batch of long windows, so built on a thread, and the event loop keeps serving.
    logs = await asyncio.to_thread(
        lambda: [
            CompletionLogprobs(tok, prompts[i // n], None if echo_lp is None else echo_lp[i // n])
            for i in range(len(rows))
        ]
    )

    tally = Tally([len(prompts[i // n]) for i in range(len(rows))], sum(len(p) for p in prompts))

    async def chunks() -> AsyncIterator[Chunk]:
        for i in range(len(rows)):
            if prefix[i] or run is None:
                lp = logs[i].flush() if echo_lp is not None else None
                yield {**head, "choices": [choice(i, prefix[i], lp, None if run else "length")]}
        if run is not None:
            async for ev in run.events(request, poll_disconnect=not body.stream):
                tally.add(ev)
                lp = logs[ev.row].add(ev) if want_lp else None
                if ev.text or ev.finish_reason or lp:
                    yield {**head, "choices": [choice(ev.row, ev.text, lp, ev.finish_reason)]}
        yield {**head, "choices": [], "usage": tally.usage()}

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

    return Answer(chunks(), fold, tally)


def check_prompts(n_ctx: int, prompts: list[list[int]]) -> None:
    """What scoring needs (nothing generated): each prompt non-empty and within the context. (Its ids are tokens:
    :func:`prompt_rows` checked them.)"""
    for i, r in enumerate(prompts):
        if not r:
            raise APIError(400, f"prompt {i} is empty; give at least one token of text", param="prompt")
        if len(r) > n_ctx:
            raise APIError(
                400,
                f"prompt {i} has {len(r)} tokens, over the model's context of {n_ctx}; shorten it",
                param="prompt",
                code="context_length_exceeded",
            )


def choice(i: int, text: str, logprobs: dict | None, finish: str | None) -> dict[str, Any]:
    return {"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish}


def prompt_rows(
    prompt: Any,
    encode: Callable[[str], list[int]],
    decode: Callable[[list[int]], str],
    check_ids: Callable[[list[int], str], None],
) -> tuple[list[list[int]], list[str]]:
    """Token ids and text of each prompt: a string, strings, token ids, or lists of token ids. ``check_ids(ids,
    what)``: refuses a prompt's ids that are no token (:func:`npgpt.token_ids.check_token_ids`), before any is
    decoded."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise APIError(400, "prompt is empty; give text or token ids", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        prompt = [prompt]
    ids = [encode(p) if isinstance(p, str) else list(p) for p in prompt]
    try:
        for i, p in enumerate(prompt):
            if not isinstance(p, str):
                check_ids(ids[i], f"prompt {i}")
        texts = [p if isinstance(p, str) else decode(p) for p in prompt]
    except NpgptError as e:
        raise APIError(400, str(e), param="prompt") from None
    return ids, texts


async def score_prompts(
    sched: Scheduler, prompts: list[list[int]], k: int, request: Request | None = None
) -> list[tuple[list, list]]:
    """Each prompt token's logprob (None for the first) and top-k alternatives, for ``echo``.

    Each prompt is scored as its own job on the model's worker, so the batch decodes a step between two of
    them: a request of many long prompts (a harness's batch of scoring windows) takes its turns with the
    requests generating, rather than holding every one of them until all its prompts are scored. Between two
    prompts, a client that has left (``request`` disconnected: timed out, and the openai client retries) ends
    the scoring, rather than leaving its other prompts to be scored for nobody."""

    def score(ids: list[int]) -> tuple[list, list]:
        # the softmax over the model's full output, as model.score (npgpt/score.py); the alternatives are
        # tokens only: a padded vocabulary's extra ids have no text
        n_tokens = count_tokens(sched.model.config.n_vocab, sched.model.tokenizer)
        logits = sched.model.logits([ids])[0]  # [T, V]
        check_finite(logits)
        lp = log_softmax(logits)
        return (
            [None] + [float(lp[t - 1, ids[t]]) for t in range(1, len(ids))],
            [None] + [top_logprobs(lp[t - 1, :n_tokens], k) for t in range(1, len(ids))],
        )

    out = []
    for ids in prompts:
        if request is not None and await request.is_disconnected():
            raise APIError(499, "the client left before its prompts were scored", code="client_closed_request")
        try:
            out.append(await asyncio.wrap_future(sched.call(partial(score, ids))))
        except NpgptError as e:  # the model is broken, not the request
            raise APIError(500, str(e), "server_error", code="model_error") from None
    return out


class CompletionLogprobs:
    """The legacy completions ``logprobs`` object, built token by token: ``tokens``,
    ``token_logprobs``, ``top_logprobs`` ({token: logprob}: the ``logprobs`` most likely, then the
    token itself if it is not among them, as OpenAI and vLLM list it) and ``text_offset``.

    ``text_offset`` is each token's character offset in the prompt's text followed by the
    completion's, counted from the tokens themselves (:class:`~npgpt.tokenizer.TextOffsets`, equal
    to tiktoken's ``decode_with_offsets``), never from the text sent so far, which stop sequences
    hold back. ``echo``: the prompt's (logprobs, top logprobs), to list its tokens first.
    """

    def __init__(self, tok: Tokenizer, prompt: list[int], echo: tuple[list, list] | None = None) -> None:
        self.tok = tok
        self.offsets = TextOffsets(tok)
        self._clear()
        lps, tops = echo if echo is not None else ([None] * len(prompt), [None] * len(prompt))
        for t, lp, top in zip(prompt, lps, tops, strict=True):
            offset = self.offsets.push(t)
            if echo is not None:
                self._append(t, lp, top, offset)
        self.offsets.flush()  # the prompt's text is decoded on its own, so is the completion's

    def _clear(self) -> None:
        self.obj: dict[str, list] = {k: [] for k in LOGPROB_KEYS}

    def add(self, ev: Event) -> dict[str, list] | None:
        """Record a generated token; returns the object for just this token."""
        if ev.token is None:
            return None
        # a generated <|endoftext|> is no text (npgpt.generate): listed, at its place, taking no characters
        offset = self.offsets.skip() if ev.token == self.tok.eot_id else self.offsets.push(ev.token)
        self._append(ev.token, ev.logprob, ev.top, offset)
        return {k: v[-1:] for k, v in self.obj.items()}

    def flush(self) -> dict[str, list]:
        obj = self.obj
        self._clear()
        return obj

    def _append(self, token: int, lp: float | None, top: list | None, offset: int) -> None:
        text = token_text(self.tok, token)
        self.obj["tokens"].append(text)
        self.obj["token_logprobs"].append(lp)
        alts = None if top is None else {token_text(self.tok, t): v for t, v in top}
        if alts is not None:
            alts.setdefault(text, lp)  # OpenAI's rule: the chosen token is always listed, so up to k + 1
        self.obj["top_logprobs"].append(alts)
        self.obj["text_offset"].append(offset)
