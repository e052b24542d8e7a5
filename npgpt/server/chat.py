"""``POST /v1/chat/completions``: the messages as one transcript (:func:`~npgpt.server.protocol.chat_prompt`),
answered as one stream of ``chat.completion.chunk`` s; the plain ``chat.completion`` is that stream folded.

Per choice the stream holds a first delta with the role, deltas of content (with ``logprobs`` if
asked), then an empty delta with the ``finish_reason``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from ..chat import CHAT_STOP
from ..generate import Event
from .errors import APIError, check_request
from .limits import Limits
from .metrics import Metrics
from .protocol import ChatRequest, chat_prompt, token_entry
from .scheduler import Scheduler
from .streaming import Answer, Chunk, Run


async def start(
    body: ChatRequest, request: Request, name: str, sched: Scheduler, metrics: Metrics, special_tokens: bool = True
) -> Answer:
    """Check and queue the request (errors here are plain 4xx/503 responses); its answer follows.

    ``special_tokens``: a literal ``<|endoftext|>`` in a message is the special token.
    """
    m, tok = sched.model, sched.model.tokenizer
    body.check_supported()
    limits: Limits = request.app.state.limits
    limits.check_rows(1, body.n or 1)
    # a long transcript takes a while to tokenise: on a thread, so the event loop keeps serving
    prompt = await asyncio.to_thread(tok.encode, chat_prompt(body.messages), allow_special=special_tokens)
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    if len(prompt) >= m.config.n_ctx:  # else the 400 would blame max_tokens, which no value of could help
        raise APIError(
            400,
            f"the messages take {len(prompt)} tokens as a transcript, leaving none of the model's context of "
            f"{m.config.n_ctx} for a reply; send fewer or shorter messages",
            param="messages",
            code="context_length_exceeded",
        )
    max_tokens = body.max_completion_tokens or body.max_tokens or m.config.n_ctx - len(prompt)
    # the reply's leading whitespace is dropped (the model writes ``Assistant: Hi``), stops matched after it
    params = body.sampling(max_tokens, logprobs, stop=CHAT_STOP, skip_leading_space=True)
    n = body.n or 1
    sent = "max_completion_tokens" if body.max_completion_tokens else "max_tokens" if body.max_tokens else None
    limits.check_tokens([prompt], n, params.max_new_tokens, prompt_param="messages", max_tokens_param=sent)
    rows = [prompt] * n
    check_request(m, rows, params)
    run = Run(sched, rows, params)
    metrics.prompt(name, len(prompt))
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": name,
    }

    said = [False] * n  # whether each choice's content has begun: before, a whitespace token is dropped

    def token_logprobs(ev: Event) -> list[dict[str, Any]] | None:
        """The token's entry, none for one of the leading whitespace the reply drops nor for the
        ``<|endoftext|>`` that ends it (so the entries' tokens spell the content, as OpenAI's do, not
        ``"\n"``, then the content, then the end token; ``usage`` still counts both)."""
        said[ev.row] = said[ev.row] or bool(ev.text)
        if logprobs is None:
            return None
        if ev.token is None or not said[ev.row] and not tok.token_bytes(ev.token).strip():
            return []
        if params.stop_at_eot and ev.token == tok.eot_id:  # with ignore_eos it is text in the content
            return []
        return [
            {**token_entry(tok, ev.token, ev.logprob), "top_logprobs": [token_entry(tok, t, lp) for t, lp in ev.top]}
        ]

    def chunk(i: int, delta: dict[str, Any], lp: list | None, finish: str | None) -> Chunk:
        choice = {
            "index": i,
            "delta": delta,
            "logprobs": None if lp is None else {"content": lp},
            "finish_reason": finish,
        }
        return {**head, "choices": [choice]}

    async def chunks() -> AsyncIterator[Chunk]:
        done = 0
        for i in range(n):
            yield chunk(i, {"role": "assistant", "content": ""}, None, None)
        async for ev in run.events(request, poll_disconnect=not body.stream):
            done += ev.token is not None
            text, lp = ev.text, token_logprobs(ev)
            if text or lp:
                yield chunk(ev.row, {"content": text}, lp, None)
            if ev.finish_reason:
                yield chunk(ev.row, {}, None, ev.finish_reason)
        yield {
            **head,
            "choices": [],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": done, "total_tokens": len(prompt) + done},
        }

    def fold(chunks: list[Chunk]) -> Chunk:
        out: list[dict[str, Any]] = [
            {
                "index": i,
                "message": {"role": "assistant", "content": ""},
                "logprobs": {"content": []} if logprobs is not None else None,
                "finish_reason": None,
            }
            for i in range(n)
        ]
        for c in chunks[:-1]:
            for part in c["choices"]:
                o = out[part["index"]]
                o["message"]["content"] += part["delta"].get("content", "")
                if part["logprobs"] is not None:
                    o["logprobs"]["content"] += part["logprobs"]["content"]
                o["finish_reason"] = part["finish_reason"] or o["finish_reason"]
        return {**head, "object": "chat.completion", "choices": out, "usage": chunks[-1]["usage"]}

    return Answer(chunks(), fold)
