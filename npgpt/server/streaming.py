"""From the scheduler's worker thread to the client: one stream of chunks per request.

:class:`Run` carries a request's :class:`~npgpt.generate.Event` s from the worker thread onto the
event loop. An endpoint turns them into one stream of response chunks (:class:`Answer`); a
streaming request sends that stream as server-sent events ``data: {...}`` ending with
``data: [DONE]``, and a plain request gets the same stream folded into one JSON body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from ..errors import NpgptError
from ..generate import Event
from ..sampling import SamplingParams
from .errors import APIError, SafeJSON, dumps
from .scheduler import QueueFull, RowFailed, Scheduler, ShuttingDown
from .scheduler import Request as Job

log = logging.getLogger("npgpt.server")

POLL_S = 0.25  # how often a plain request checks that its client is still there

Chunk = dict[str, Any]


class Run:
    """One request in a scheduler; its events cross from the worker thread to the event loop.

    Queued on creation, so a full queue is a 503 before any stream starts.
    """

    def __init__(self, sched: Scheduler, rows: list[list[int]], params: SamplingParams) -> None:
        self.sched = sched
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.left = len(rows)
        self.job = Job(rows, params, self._deliver)
        try:
            sched.submit(self.job)
        except QueueFull as e:
            raise APIError(
                503, f"the server is busy ({e})", "server_error", code="queue_full", headers={"Retry-After": "1"}
            ) from None
        except ShuttingDown as e:
            raise shutting_down(e) from None

    def _deliver(self, item: Any) -> None:  # on the worker thread
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop has closed: nobody is listening any more
            pass

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
    return APIError(
        500, f"generation failed: {type(error).__name__}: {error}", "server_error", code="generation_failed"
    )


def shutting_down(error: BaseException) -> APIError:
    return APIError(503, str(error), "server_error", code="server_shutting_down")


@dataclass
class Answer:
    """An endpoint's answer: ``chunks`` as streamed, the last one carrying only ``usage``;
    ``fold`` makes the plain response from the whole list."""

    chunks: AsyncIterator[Chunk]
    fold: Callable[[list[Chunk]], Chunk]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's ``usage``. ``prompt_tokens``: each prompt's tokens once, however many completions ``n``
    asks of it (as OpenAI and vLLM count). ``completion_tokens``: the tokens generated, over every choice,
    as OpenAI bills them and vLLM counts them: the ``<|endoftext|>`` that ends a reply, a chat reply's
    leading whitespace (dropped from its content) and the tokens of a matched stop sequence (cut from
    its text) included. So a choice that ends with ``finish_reason`` "length" used exactly ``max_tokens``,
    whatever its text shows."""
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}


async def respond(answer: Answer, stream: bool, include_usage: bool) -> Any:
    """Server-sent events for a streaming request (the usage chunk only if asked), else one JSON body."""
    if not stream:
        return SafeJSON(answer.fold([c async for c in answer.chunks]))

    async def events() -> AsyncIterator[str]:
        try:
            async for c in answer.chunks:
                if include_usage or "usage" not in c:
                    yield sse(c)
        except APIError as e:  # the status line has gone out; report the error in the stream
            yield sse(e.body())
        except Exception as e:  # a bug: still a final error event and [DONE], never a cut stream
            log.exception("a stream failed")
            yield sse(APIError(500, f"internal error: {type(e).__name__}: {e}", "server_error").body())
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def sse(obj: Chunk) -> str:
    return f"data: {dumps(obj)}\n\n"
