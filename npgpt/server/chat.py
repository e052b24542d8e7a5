"""``POST /v1/chat/completions``: the messages as one transcript (:func:`~npgpt.server.protocol.chat_prompt`),
answered as one stream of ``chat.completion.chunk`` s; the plain ``chat.completion`` is that stream folded.

Per choice the stream holds a first delta with the role, deltas of content (with ``logprobs`` if
asked), then an empty delta with the ``finish_reason``.
"""

from __future__ import annotations

import asyncio
import codecs
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from ..generate import Event
from ..tokenizer import Tokenizer
from .errors import APIError, check_request
from .limits import Limits
from .metrics import Metrics
from .protocol import ChatRequest, chat_prompt, chat_stop
from .response_parts import bytes_text, token_entry
from .scheduler import Scheduler
from .streaming import Answer, Chunk, Run, Tally


async def start(body: ChatRequest, request: Request, name: str, sched: Scheduler, metrics: Metrics) -> Answer:
    """Check and queue the request (errors here are plain 4xx/503 responses); its answer follows.

    A literal ``<|endoftext|>`` in a message is text, as in ``npgpt chat``: what a person wrote never
    ends the transcript (OpenAI's chat reads message content as text too), whatever ``--special-tokens``.
    """
    m, tok = sched.model, sched.model.tokenizer
    # checking a 1 MB body's messages, writing their transcript and tokenising it take ~0.5 s of Python: on a
    # thread, so the event loop (/health, every stream) keeps serving
    await asyncio.to_thread(body.check_supported, tok)
    limits: Limits = request.app.state.limits
    limits.check_rows(1, body.n or 1)
    prompt, stop = await asyncio.to_thread(_transcript, body, tok)
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
    # max_completion_tokens wins over the deprecated max_tokens when both are sent, as in OpenAI's API and vLLM
    max_tokens = body.max_completion_tokens or body.max_tokens or m.config.n_ctx - len(prompt)
    sent = "max_completion_tokens" if body.max_completion_tokens else "max_tokens" if body.max_tokens else None
    if sent and len(prompt) + max_tokens > m.config.n_ctx:  # in chat's words, naming the field sent
        raise APIError(
            400,
            f"the messages take {len(prompt)} tokens as a transcript and {sent} is {max_tokens}: together over "
            f"the model's context of {m.config.n_ctx}; send fewer or shorter messages, or lower {sent}",
            param=sent,
            code="context_length_exceeded",
        )
    # the reply's leading whitespace is dropped (the model writes ``Assistant: Hi``), stops matched after it
    # on a thread, as a client's logit_bias on every token takes ~0.1 s to check
    params = await asyncio.to_thread(body.sampling, max_tokens, logprobs, stop=stop, skip_leading_space=True)
    n = body.n or 1
    limits.check_tokens([prompt], n, max_tokens, prompt_param="messages", max_tokens_param=sent)
    rows = [prompt] * n
    check_request(m, rows, params)
    if logprobs is not None:  # the answer's size, at most (before any row starts)
        field = f"{sent}={max_tokens}" if sent else f"max_tokens={max_tokens} (not sent: the rest of the context)"
        limits.check_logprobs(
            n * max_tokens,
            logprobs,
            f"{field} for each of its {n} repl{'y' if n == 1 else 'ies'}",
            param="top_logprobs",
            smaller=f"a lower {sent or 'max_tokens'}{'' if n == 1 else ' or n'}",
        )
    run = Run(sched, rows, params, request.app.state.backlog)
    metrics.prompt(name, len(prompt))
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": name,
    }

    held = [HeldLogprobs(tok) for _ in range(n)] if logprobs is not None else []

    def token_logprobs(ev: Event) -> list[dict[str, Any]] | None:
        """The entries the choice's content now covers (see :class:`HeldLogprobs`); none for an
        ``<|endoftext|>``, which is no text, whether it ends the reply or ``ignore_eos`` goes on past it (so
        the entries' tokens spell the content, as OpenAI's do; ``usage`` still counts it)."""
        if logprobs is None:
            return None
        # no entry for an eos token that ends the reply, nor for <|endoftext|> gone past (ignore_eos), which is
        # no text; a fine-tune's own eos token gone past is text in the content, as any added token
        end_token = params.stop_at_eot and ev.token in tok.eos_token_ids
        return held[ev.row].add(ev, counts=ev.token is not None and ev.token != tok.eot_id and not end_token)

    def chunk(i: int, delta: dict[str, Any], lp: list | None, finish: str | None) -> Chunk:
        choice = {
            "index": i,
            "delta": delta,
            "logprobs": None if lp is None else {"content": lp},
            "finish_reason": finish,
        }
        return {**head, "choices": [choice]}

    tally = Tally([len(prompt)] * n, len(prompt))

    async def chunks() -> AsyncIterator[Chunk]:
        for i in range(n):
            yield chunk(i, {"role": "assistant", "content": ""}, None, None)
        async for ev in run.events(request, poll_disconnect=not body.stream):
            tally.add(ev)
            text, lp = ev.text, token_logprobs(ev)
            if text or lp:
                yield chunk(ev.row, {"content": text}, lp, None)
            if ev.finish_reason:
                yield chunk(ev.row, {}, None, ev.finish_reason)
        yield {**head, "choices": [], "usage": tally.usage()}

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

    return Answer(chunks(), fold, tally)


def _transcript(body: ChatRequest, tok: Tokenizer) -> tuple[list[int], tuple[str, ...]]:
    """The messages' transcript as token ids, and the stop sequences that end a reply to it."""
    return tok.encode(chat_prompt(body.messages)), chat_stop(body.messages)


class HeldLogprobs:
    """One choice's ``logprobs.content`` entries, given out as its content is, so that the entries' tokens
    spell ``message.content`` exactly, as OpenAI's do.

    The content is the reply's text less its leading whitespace and cut before a matched stop sequence;
    text that may begin a stop is held back until it cannot (:class:`~npgpt.generate.TextTracker`).
    Each token's entry is held back the same way: it goes out once the content given out covers the
    token's text, and the entries of tokens wholly inside the dropped leading whitespace or a matched
    stop (``"\\nUser:"`` or the client's ``stop``) never go out.

    A token partly in the content: as vLLM does (it keeps the logprobs of every token whose text made
    the output, cutting only the text), its entry is listed, but with ``token`` and ``bytes`` showing
    only the part the content holds: a first token ``" And"`` whose space the reply drops is listed as
    ``"And"``, a token ``".\\n"`` before a stop ``"\\nUser:"`` as ``"."``. ``logprob`` and ``top_logprobs``
    are still the whole token's (the alternatives are real tokens). So the ``token`` s always
    concatenate to the content, and an entry's ``bytes`` are those of its ``token``.

    Each token's bytes are placed on the characters of the text they make (:attr:`~npgpt.generate.Event.piece`,
    the characters it completes, and the first bytes of one it leaves unfinished), and an entry shows the bytes
    that make content: a token ending inside a UTF-8 character is listed when that character is in the content
    (its entry reads ``bytes:\\xe2\\x80``, as OpenAI's do), and a first token ``" \\xe6"`` (the dropped space and
    the first byte of 日) as ``bytes:\\xe6``. So the entries' ``bytes`` always join to the content's UTF-8, as
    OpenAI's do (bytes that are not UTF-8, which the text shows as U+FFFD, are placed by character, the
    U+FFFD with the token whose bytes it stands for: :meth:`replaced`).
    """

    def __init__(self, tok: Tokenizer) -> None:
        self.tok = tok
        self.text = ""  # the reply decoded: leading whitespace, content, held-back text and any stop matched
        self.lead: int | None = None  # characters of leading whitespace dropped; known once the text holds more
        self.said = 0  # characters of content given out
        # held tokens: the bytes of each as (index in ``text`` of the character they belong to, bytes), its event
        self.pending: deque[tuple[list[tuple[int, bytes]], Event]] = deque()
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")  # the bytes of an unfinished character

    def add(self, ev: Event, counts: bool) -> list[dict[str, Any]]:
        """Take the token's event (``counts``: its token is part of the reply's text) after its content
        delta ``ev.text`` has gone out; the entries to give out with that delta."""
        if counts and ev.token is not None:
            start = len(self.text)
            self.text += ev.piece
            self.pending.append((self.place(self.tok.token_bytes(ev.token), start, len(self.text)), ev))
        if self.lead is None and self.text.strip():
            self.lead = len(self.text) - len(self.text.lstrip())
        self.said += len(ev.text)
        if self.lead is None:  # nothing but whitespace yet: no content, and none of its tokens are listed
            if ev.finish_reason:
                self.pending.clear()
            return []
        lead, end = self.lead, self.lead + self.said
        out = []
        while self.pending:
            parts, token_ev = self.pending[0]
            # settled: every character it has bytes of is given out, or the reply has ended
            if not (ev.finish_reason or max(c for c, _ in parts) < end):
                break
            self.pending.popleft()
            if shown := b"".join(b for c, b in parts if lead <= c < end):  # the bytes of it the content holds
                out.append(self.entry(token_ev, shown))
        return out

    def place(self, raw: bytes, lo: int, hi: int) -> list[tuple[int, bytes]]:
        """The token's bytes ``raw``, by the index in ``text`` of the character each belongs to; its piece is
        ``text[lo:hi]``."""
        before = self.utf8.getstate()[0]  # the first bytes of a character earlier tokens left unfinished
        self.utf8.decode(raw)
        after = self.utf8.getstate()[0]
        if lo == hi:  # all inside one unfinished character
            return [(lo, raw)]
        whole = self.text[lo:hi]
        head = len(whole[0].encode()) - len(before) if before else 0  # the bytes finishing ``before`` 's character
        if before + raw != whole.encode() + after:  # bytes that are not UTF-8 became U+FFFD: place by character
            first = lo
            if before:  # text[lo] is the U+FFFD that the unfinished bytes of earlier tokens became: theirs
                self.replaced(lo)
                first = lo + 1
            parts = [(c, self.text[c].encode()) for c in range(first, hi)]
            return parts + [(hi, after)] if after else parts
        parts = [(lo, raw[:head])] if head else []
        parts += [(c, self.text[c].encode()) for c in range(lo + bool(head), hi)]
        return parts + [(hi, after)] if after else parts

    def replaced(self, c: int) -> None:
        """The held tokens' bytes of the unfinished character at ``c`` proved not UTF-8: the text shows U+FFFD
        there, so the first of those tokens shows the U+FFFD's bytes instead (the others none, so they are not
        listed, as a token wholly in the dropped leading whitespace is not), and the entries still join to the
        content's UTF-8 rather than holding both the raw bytes and the U+FFFD."""
        shown = self.text[c].encode()
        for parts, _ in self.pending:
            for k, (at, _raw) in enumerate(parts):
                if at == c:
                    parts[k], shown = (at, shown), b""

    def entry(self, ev: Event, shown: bytes) -> dict[str, Any]:
        tok = self.tok
        assert ev.token is not None
        top = [token_entry(tok, t, lp) for t, lp in ev.top]
        if shown == tok.token_bytes(ev.token):
            return {**token_entry(tok, ev.token, ev.logprob), "top_logprobs": top}
        return {"token": bytes_text(shown), "logprob": ev.logprob, "bytes": list(shown), "top_logprobs": top}
