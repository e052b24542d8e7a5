"""From the scheduler's worker thread to the client: one stream of chunks per request.

:class:`Run` carries a request's :class:`~npgpt.generate.Event` s from the worker thread onto the
event loop. An endpoint turns them into one stream of response chunks (:class:`Answer`); a
streaming request sends that stream as server-sent events ``data: {...}`` ending with
``data: [DONE]``, and a plain request gets the same stream folded into one JSON body.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from ..errors import NpgptError, reason, shown
from ..generate import Event
from ..sampling import SamplingParams
from .errors import APIError, SafeJSON, dumps
from .scheduler import QueueFull, RowFailed, Scheduler, ShuttingDown
from .scheduler import Request as Job

log = logging.getLogger("npgpt.server")

POLL_S = 0.25  # how often a plain request checks that its client is still there
MAX_UNREAD_EVENTS = 65_536  # events generated and not yet read, over every stream: some 30 MB (more with logprobs)

Chunk = dict[str, Any]


class Backlog:
    """A bound on the events generated for streams and not yet read by their clients, over all requests.

    The model does not wait for a client (one worker serves every request), so a client that stops reading
    its stream leaves its events queued; one request's are bounded by ``--max-request-tokens``, but not
    many requests'. When the events unread in all are over ``max_events``, the stream holding the most
    is ended: its queue is emptied, its rows leave the batch, and its client reads an error event
    (``stream_not_read``) once it reads again. A client that reads as the text comes holds a few events
    at most, so it is never the one ended, and nobody else waits.

    Only the event loop's thread uses it. The unread events are counted from the runs' queues every
    ``check_every`` deliveries (runs are held weakly: a request whose response never started is forgotten
    with it), so the bound may be passed by ``check_every`` events.
    """

    def __init__(self, max_events: int = MAX_UNREAD_EVENTS) -> None:
        if max_events < 1:
            raise ValueError(f"max_unread_events must be >= 1, got {shown(max_events)}")
        self.max_events = max_events
        self.check_every = max(1, min(64, max_events // 8))
        self.runs: weakref.WeakSet[Run] = weakref.WeakSet()
        self.delivered = 0

    def delivered_one(self) -> None:
        self.delivered += 1
        if self.delivered < self.check_every:
            return
        self.delivered = 0
        runs = [r for r in self.runs if not r.ended]
        total = sum(r.queue.qsize() for r in runs)
        while total > self.max_events and runs:
            hog = max(runs, key=lambda r: r.queue.qsize())
            runs.remove(hog)
            unread = hog.queue.qsize()
            total -= unread
            hog.end(
                APIError(
                    503,
                    f"this stream was ended: its client left {unread} events unread while the server held over "
                    f"{self.max_events} unread in all, its limit (--max-unread-events); read a stream as it comes, "
                    "or send stream: false",
                    "server_error",
                    code="stream_not_read",
                )
            )


class Run:
    """One request in a scheduler; its events cross from the worker thread to the event loop.

    Queued on creation, so a full queue is a 503 before any stream starts. Its unread events count
    towards ``backlog`` (see :class:`Backlog`).
    """

    def __init__(self, sched: Scheduler, rows: list[list[int]], params: SamplingParams, backlog: Backlog) -> None:
        self.sched = sched
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.left = len(rows)
        self.ended = False  # by the backlog: events that still come are dropped
        self.backlog = backlog
        self.job = Job(rows, params, self._deliver)
        try:
            sched.submit(self.job)
        except QueueFull as e:
            raise APIError(
                503, f"the server is busy ({e})", "server_error", code="queue_full", headers={"Retry-After": "1"}
            ) from None
        except ShuttingDown as e:
            raise shutting_down(e) from None
        backlog.runs.add(self)

    def _deliver(self, item: Any) -> None:  # on the worker thread
        try:
            self.loop.call_soon_threadsafe(self._put, item)
        except RuntimeError:  # the loop has closed: nobody is listening any more
            pass

    def _put(self, item: Any) -> None:  # on the event loop
        if self.ended:
            return
        self.queue.put_nowait(item)
        self.backlog.delivered_one()

    def end(self, error: APIError) -> None:
        """Drop the unread events and stop generating; the reader gets ``error`` next."""
        self.ended = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(error)
        self.sched.cancel(self.job)

    async def events(self, request: Request, poll_disconnect: bool = False) -> AsyncIterator[Event]:
        """Events until every row has finished. A stream's cancellation (its client left) or, with
        ``poll_disconnect``, a disconnect noticed while waiting, frees the rows at once."""
        check_at = self.loop.time() + POLL_S
        try:
            while self.left:
                if not poll_disconnect:
                    item = await self.queue.get()
                else:  # nothing tells a plain request that its client left: look now and then
                    try:
                        item = await asyncio.wait_for(self.queue.get(), POLL_S)
                    except asyncio.TimeoutError:
                        item = None
                    if self.loop.time() >= check_at:
                        check_at = self.loop.time() + POLL_S
                        if await request.is_disconnected():
                            return
                    if item is None:
                        continue
                if isinstance(item, APIError):  # ended by the backlog
                    raise item
                if isinstance(item, NpgptError):  # the model failed this request (non-finite logits): say why
                    raise APIError(500, f"generation failed: {item}", "server_error", code="model_error")
                if isinstance(item, BaseException):
                    raise failure(item)
                self.left -= item.finish_reason is not None
                yield item
        finally:
            if self.left:
                self.sched.cancel(self.job)


def failure(error: BaseException) -> APIError:
    """The error a request gets when the scheduler ends it: shutdown is a 503, anything else a 500."""
    if isinstance(error, ShuttingDown):
        return shutting_down(error)
    if isinstance(error, RowFailed):
        if isinstance(error.__cause__, NpgptError):  # the model's fault (non-finite logits), said as scoring says it
            msg = f"generation failed for choice {error.index}: {error.__cause__}"
            return APIError(500, msg, "server_error", code="model_error")
        return APIError(500, f"generation of {error}", "server_error", code="generation_failed")
    return APIError(500, f"generation failed: {reason(error)}", "server_error", code="generation_failed")


def shutting_down(error: BaseException) -> APIError:
    return APIError(503, str(error), "server_error", code="server_shutting_down")


class Tally:
    """A request's tokens so far: its prompts' (each counted once) and those generated, per choice.

    ``choice_prompts``: the tokens of each choice's prompt (its index's), for :meth:`choice_usage`."""

    def __init__(self, choice_prompts: list[int], prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.choice_prompts = choice_prompts
        self.generated = [0] * len(choice_prompts)

    def add(self, event: Event) -> None:
        self.generated[event.row] += event.token is not None

    def usage(self) -> dict[str, int]:
        return usage(self.prompt_tokens, sum(self.generated))

    def choice_usage(self, index: int) -> dict[str, int]:
        """vLLM's continuous usage on a choice's chunk: that choice's prompt and its tokens so far."""
        return usage(self.choice_prompts[index], self.generated[index])


@dataclass
class Answer:
    """An endpoint's answer: ``chunks`` as streamed, the last one carrying only ``usage``;
    ``fold`` makes the plain response from the whole list; ``tally`` counts the tokens as the chunks go."""

    chunks: AsyncIterator[Chunk]
    fold: Callable[[list[Chunk]], Chunk]
    tally: Tally


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's ``usage``. ``prompt_tokens``: each prompt's tokens once, however many completions ``n``
    asks of it (as OpenAI and vLLM count). ``completion_tokens``: the tokens generated, over every choice,
    as OpenAI bills them and vLLM counts them: the ``<|endoftext|>`` that ends a reply, a chat reply's
    leading whitespace (dropped from its content) and the tokens of a matched stop sequence (cut from
    its text) included. So a choice that ends with ``finish_reason`` "length" used exactly ``max_tokens``,
    whatever its text shows."""
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}


async def respond(answer: Answer, stream: bool, include_usage: bool, continuous_usage: bool = False) -> Any:
    """Server-sent events for a streaming request (the usage chunk only if asked, and then ``"usage": null`` on
    every other chunk, as OpenAI documents; ``continuous_usage``, vLLM's ``continuous_usage_stats``: each chunk's
    choice's usage so far instead), else one JSON body."""
    if not stream:
        chunks = [c async for c in answer.chunks]
        # Folding and encoding a large answer (a scoring request's top logprobs: megabytes of JSON) takes
        # a while: on a thread, so the event loop keeps answering the other requests (and /health).
        return await asyncio.to_thread(lambda: SafeJSON(answer.fold(chunks)))

    async def events() -> AsyncIterator[str]:
        try:
            async for c in answer.chunks:
                if continuous_usage and "usage" not in c:  # one choice a chunk, as vLLM streams them
                    c = {**c, "usage": answer.tally.choice_usage(c["choices"][0]["index"])}
                elif include_usage and "usage" not in c:  # OpenAI's: every other chunk has a null usage
                    c = {**c, "usage": None}
                if include_usage or "usage" not in c:
                    yield sse(c)
        except APIError as e:  # the status line has gone out; report the error in the stream
            yield sse(e.body())
        except Exception as e:  # a bug: still a final error event and [DONE], never a cut stream
            log.exception("a stream failed")
            yield sse(APIError(500, f"internal error: {reason(e)}", "server_error").body())
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def sse(obj: Chunk) -> str:
    return f"data: {dumps(obj)}\n\n"
