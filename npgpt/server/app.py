"""The OpenAI-compatible HTTP API, served by ``npgpt serve``.

Endpoints: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (the
messages as a plain transcript, see :func:`npgpt.server.schemas.chat_prompt`), ``POST
/v1/next_tokens`` (npgpt's own: the most likely next tokens, for the playground), ``GET /health``,
``GET /metrics`` (Prometheus text) and ``GET /`` (the playground). Streams are server-sent events
``data: {...}`` ending with ``data: [DONE]``. Errors have OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``.

Each model has one :class:`~npgpt.server.scheduler.Scheduler`: the model runs on its worker
thread, never on the event loop, and concurrent requests share its batch.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import NpgptError
from ..generate import Event
from ..sampling import SamplingParams, log_softmax, top_logprobs
from .inside import inside_routes
from .metrics import Metrics
from .scheduler import QueueFull, Scheduler
from .scheduler import Request as Job
from .schemas import CHAT_STOP, ChatRequest, CompletionRequest, NextTokensRequest, chat_prompt

if TYPE_CHECKING:
    from ..api import GPT2

log = logging.getLogger("npgpt.server")

MAX_BODY_BYTES = 1_000_000
_POLL_S = 0.25  # how often a non-streaming request checks that its client is still there
_ENDPOINTS = {"/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions",
              "/v1/next_tokens"}
_SAMPLING_FIELDS = {"temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty",
                    "frequency_penalty", "seed", "logprobs", "stop"}


class APIError(Exception):
    """An error response in OpenAI's shape."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def create_app(models: dict[str, GPT2], api_key: str | None = None, max_batch: int = 16, max_queue: int = 64,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app serving ``models`` (name -> model; the first is the default).

    ``api_key``: if set, ``/v1/*`` needs ``Authorization: Bearer <key>``. ``max_batch``: rows
    decoded together per model. ``max_queue``: requests that may wait for a free row before new
    ones get 503. Bodies over ``max_body_bytes`` get 413.
    """
    if not models:
        raise ValueError("create_app needs at least one model")
    metrics = Metrics()
    schedulers = {
        name: Scheduler(m, max_batch=max_batch, max_queue=max_queue,
                        on_step=lambda kind, rows, name=name: metrics.step(name, kind, rows))
        for name, m in models.items()
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for s in schedulers.values():
            s.close()

    app = FastAPI(title="npgpt", summary="GPT-2 behind an OpenAI-compatible API", lifespan=lifespan)
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)
    if api_key is not None:
        app.add_middleware(_BearerKey, api_key=api_key)
    app.add_middleware(_RequestMetrics, metrics=metrics)
    app.state.schedulers = schedulers
    app.state.metrics = metrics

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError) -> JSONResponse:
        return e.response()

    @app.exception_handler(NpgptError)
    async def _user_error(request: Request, e: NpgptError) -> JSONResponse:
        return _bad_request(e).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return _validation_error(e.errors()).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = "invalid_request_error" if e.status_code < 500 else "server_error"
        return APIError(e.status_code, str(e.detail), kind, headers=e.headers).response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return APIError(500, f"internal error: {type(e).__name__}: {e}", "server_error").response()

    def pick(name: str | None) -> tuple[str, Scheduler]:
        """The scheduler of the requested model; the request names a loaded model, never a path."""
        if name is None:
            name = next(iter(schedulers))
        if name not in schedulers:
            raise APIError(400, f"model {name!r} is not served here; choose one of {', '.join(schedulers)}",
                           param="model", code="model_not_found")
        return name, schedulers[name]

    v1 = APIRouter(prefix="/v1")

    @v1.get("/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(name, s.model) for name, s in schedulers.items()]}

    @v1.get("/models/{model}")
    async def get_model(model: str) -> dict[str, Any]:
        if model not in schedulers:
            raise APIError(404, f"model {model!r} is not served here", param="model", code="model_not_found")
        return _model_card(model, schedulers[model].model)

    @v1.post("/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        name, sched = pick(body.model)
        tok = sched.model.tokenizer
        body.check_supported()
        prompts, texts = _prompt_rows(body.prompt, tok.encode, tok.decode)
        params = _sampling(body, body.max_tokens or 16, body.logprobs)
        n = body.n or 1
        rows = [p for p in prompts for _ in range(n)]
        _check_fits(sched.model, rows, params)
        echo_lp = None
        if body.echo and params.logprobs is not None:
            echo_lp = await _score_prompts(sched, prompts, params.logprobs)
        run = _Run(sched, rows, params)  # queued here, so a full queue is a 503 before any stream starts
        metrics.prompt(name, sum(len(p) for p in prompts))
        head = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": name}
        prefix = [texts[i // n] if body.echo else "" for i in range(len(rows))]
        logs = [_CompletionLogprobs(tok, len(texts[i // n])) for i in range(len(rows))]
        if echo_lp is not None:
            for i, log_ in enumerate(logs):
                log_.echo(prompts[i // n], *echo_lp[i // n])

        def usage(done: int) -> dict[str, int]:
            p = sum(len(x) for x in prompts)
            return {"prompt_tokens": p, "completion_tokens": done, "total_tokens": p + done}

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            async def stream() -> AsyncIterator[str]:
                done = 0
                for i in range(len(rows)):
                    if prefix[i]:
                        lp = logs[i].flush() if echo_lp is not None else None
                        yield _sse({**head, "choices": [_text_choice(i, prefix[i], lp, None)]})
                async for ev in run.events(request):
                    done += ev.token is not None
                    lp = logs[ev.row].add(ev) if params.logprobs is not None else None
                    if ev.text or ev.finish_reason or lp:
                        yield _sse({**head, "choices": [_text_choice(ev.row, ev.text, lp, ev.finish_reason)]})
                if include_usage:
                    yield _sse({**head, "choices": [], "usage": usage(done)})

            return _event_stream(stream())

        out = [[prefix[i], None] for i in range(len(rows))]
        done = 0
        async for ev in run.events(request, poll_disconnect=True):
            done += ev.token is not None
            out[ev.row][0] += ev.text
            out[ev.row][1] = ev.finish_reason or out[ev.row][1]
            if params.logprobs is not None:
                logs[ev.row].add(ev)
        choices = [_text_choice(i, text, logs[i].flush() if params.logprobs is not None else None, finish)
                   for i, (text, finish) in enumerate(out)]
        return {**head, "choices": choices, "usage": usage(done)}

    @v1.post("/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        name, sched = pick(body.model)
        m, tok = sched.model, sched.model.tokenizer
        prompt = tok.encode(chat_prompt(body.messages))
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        max_tokens = body.max_completion_tokens or body.max_tokens or max(1, m.config.n_ctx - len(prompt))
        params = _sampling(body, max_tokens, logprobs, stop=CHAT_STOP)
        n = body.n or 1
        rows = [prompt] * n
        _check_fits(m, rows, params)
        run = _Run(sched, rows, params)
        metrics.prompt(name, len(prompt))
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": name}
        strip = [_LeadingSpace() for _ in rows]

        def usage(done: int) -> dict[str, int]:
            return {"prompt_tokens": len(prompt), "completion_tokens": done, "total_tokens": len(prompt) + done}

        def chat_lp(ev: Event) -> list[dict[str, Any]]:
            if logprobs is None or ev.token is None:
                return []
            return [{**_token_entry(tok, ev.token, ev.logprob),
                     "top_logprobs": [_token_entry(tok, t, lp) for t, lp in ev.top]}]

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            chunk_head = {**head, "object": "chat.completion.chunk"}

            def chunk(i: int, delta: dict[str, Any], lp: list | None, finish: str | None) -> str:
                choice = {"index": i, "delta": delta, "logprobs": None if lp is None else {"content": lp},
                          "finish_reason": finish}
                return _sse({**chunk_head, "choices": [choice]})

            async def stream() -> AsyncIterator[str]:
                done = 0
                for i in range(n):
                    yield chunk(i, {"role": "assistant", "content": ""}, None, None)
                async for ev in run.events(request):
                    done += ev.token is not None
                    text, lp = strip[ev.row](ev.text), chat_lp(ev)
                    if text or lp:
                        yield chunk(ev.row, {"content": text}, lp if logprobs is not None else None, None)
                    if ev.finish_reason:
                        yield chunk(ev.row, {}, None, ev.finish_reason)
                if include_usage:
                    yield _sse({**chunk_head, "choices": [], "usage": usage(done)})

            return _event_stream(stream())

        texts, finish = [""] * n, [None] * n
        lps: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        done = 0
        async for ev in run.events(request, poll_disconnect=True):
            done += ev.token is not None
            texts[ev.row] += strip[ev.row](ev.text)
            finish[ev.row] = ev.finish_reason or finish[ev.row]
            lps[ev.row] += chat_lp(ev)
        choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]},
                    "logprobs": {"content": lps[i]} if logprobs is not None else None, "finish_reason": finish[i]}
                   for i in range(n)]
        return {**head, "choices": choices, "usage": usage(done)}

    @v1.post("/next_tokens")
    async def next_tokens(body: NextTokensRequest) -> dict[str, Any]:
        name, sched = pick(body.model)
        m = sched.model
        top = await asyncio.wrap_future(sched.call(lambda: m.next_tokens(body.prompt, k=body.k)))
        return {"object": "next_tokens", "model": name,
                "tokens": [{"id": i, "text": text, "prob": p, "logprob": float(np.log(max(p, 1e-45)))}
                           for i, text, p in top]}

    v1.include_router(inside_routes(pick))  # POST /v1/internals: the playground's "inside" panel
    app.include_router(v1)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok",
                "models": {name: {"active_rows": s.active, "queued_requests": s.queued, "max_batch": s.max_batch}
                           for name, s in schedulers.items()}}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        gauges = {"npgpt_active_rows": {k: s.active for k, s in schedulers.items()},
                  "npgpt_queued_requests": {k: s.queued for k, s in schedulers.items()}}
        return PlainTextResponse(metrics.render(gauges), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse((resources.files("npgpt.server") / "static" / "index.html").read_text("utf-8"))

    return app


# -- generation as async events ----------------------------------------------------------------------
class _Run:
    """One request in a scheduler; its events cross from the worker thread to the event loop."""

    def __init__(self, sched: Scheduler, rows: list[list[int]], params: SamplingParams) -> None:
        self.sched = sched
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.left = len(rows)
        self.job = Job(rows, params, self._deliver)
        try:
            sched.submit(self.job)
        except QueueFull as e:
            raise APIError(503, f"the server is busy ({e})", "server_error", code="queue_full",
                           headers={"Retry-After": "1"}) from None

    def _deliver(self, item: Any) -> None:  # on the worker thread
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop has closed: nobody is listening any more
            pass

    async def events(self, request: Request, poll_disconnect: bool = False) -> AsyncIterator[Event]:
        """Events until every row has finished. A stream's cancellation (its client left) or, with
        ``poll_disconnect``, a disconnect noticed while waiting, frees the rows at once."""
        check_at = self.loop.time() + _POLL_S
        try:
            while self.left:
                if not poll_disconnect:
                    item = await self.queue.get()
                else:  # nothing tells a plain request that its client left: look now and then
                    try:
                        item = await asyncio.wait_for(self.queue.get(), _POLL_S)
                    except asyncio.TimeoutError:
                        item = None
                    if self.loop.time() >= check_at:
                        check_at = self.loop.time() + _POLL_S
                        if await request.is_disconnected():
                            return
                    if item is None:
                        continue
                if isinstance(item, BaseException):
                    raise APIError(500, f"generation failed: {type(item).__name__}: {item}", "server_error")
                self.left -= item.finish_reason is not None
                yield item
        finally:
            if self.left:
                self.sched.cancel(self.job)


def _event_stream(chunks: AsyncIterator[str]) -> StreamingResponse:
    async def with_done() -> AsyncIterator[str]:
        try:
            async for c in chunks:
                yield c
        except APIError as e:  # the status line has gone out; report the error in the stream
            yield _sse(e.body())
        yield "data: [DONE]\n\n"

    return StreamingResponse(with_done(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


# -- requests -----------------------------------------------------------------------------------------
def _prompt_rows(prompt: Any, encode: Any, decode: Any) -> tuple[list[list[int]], list[str]]:
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


def _sampling(body: Any, max_tokens: int, logprobs: int | None, stop: tuple[str, ...] = ()) -> SamplingParams:
    try:
        return body.sampling(max_tokens, logprobs, stop)
    except NpgptError as e:
        raise _bad_request(e) from None


def _check_fits(model: GPT2, rows: list[list[int]], params: SamplingParams) -> None:
    for i, r in enumerate(rows):
        if len(r) == 0:
            raise APIError(400, "prompt is empty; give at least one token of text", param="prompt")
        if len(r) + params.max_new_tokens > model.config.n_ctx:
            raise APIError(400, f"the prompt has {len(r)} tokens and max_tokens is {params.max_new_tokens}: "
                           f"together over the model's context of {model.config.n_ctx} tokens; shorten the "
                           "prompt or lower max_tokens", param="max_tokens", code="context_length_exceeded")
        if min(r) < 0 or max(r) >= model.config.n_vocab:
            raise APIError(400, f"prompt {i} has a token id outside [0, {model.config.n_vocab})", param="prompt")


def _bad_request(e: NpgptError) -> APIError:
    first = str(e).split(" ", 1)[0]
    param = {"max_new_tokens": "max_tokens"}.get(first, first if first in _SAMPLING_FIELDS else None)
    return APIError(400, str(e).replace("max_new_tokens", "max_tokens"), param=param)


def _validation_error(errors: list[dict[str, Any]]) -> APIError:
    """One OpenAI-style error from pydantic's list: a malformed body, else the most specific problem."""
    err = sorted(errors, key=lambda e: str(e.get("type", "")).endswith("_type"))[0]  # a union's type misses last
    if err.get("type") == "json_invalid":
        return APIError(400, f"malformed JSON body: {err.get('ctx', {}).get('error', err['msg'])}",
                        code="invalid_json")
    loc = [x for x in err["loc"] if x != "body"]
    if not loc:
        return APIError(400, f"the body must be a JSON object: {err['msg']}", code="invalid_json")
    param = ""
    for part in loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif part not in _UNION_TAGS and not any(c in part for c in "[-"):  # skip tags such as "list[str]"
            param += ("." if param else "") + part
    if param == "prompt" and err["type"].endswith("_type"):
        return APIError(400, "prompt must be a string, a list of strings, a list of token ids or a list of lists of "
                        "token ids", param="prompt")
    return APIError(400, f"{param}: {err['msg']}", param=param)


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


async def _score_prompts(sched: Scheduler, prompts: list[list[int]], k: int) -> list[tuple[list, list]]:
    """Each prompt token's logprob (None for the first) and top-k alternatives, for ``echo``."""
    def score() -> list[tuple[list, list]]:
        out = []
        for ids in prompts:
            lp = log_softmax(sched.model.logits([ids])[0])  # [T, V]
            out.append(([None] + [float(lp[t - 1, ids[t]]) for t in range(1, len(ids))],
                        [None] + [top_logprobs(lp[t - 1], k) for t in range(1, len(ids))]))
        return out

    return await asyncio.wrap_future(sched.call(score))


# -- responses ----------------------------------------------------------------------------------------
def _model_card(name: str, model: GPT2) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "npgpt", "context_length": model.config.n_ctx,
            "config": model.config.to_dict()}


def _text_choice(i: int, text: str, logprobs: dict | None, finish: str | None) -> dict[str, Any]:
    return {"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish}


def _token_text(tok: Any, token: int) -> str:
    """A token as text; a token that is part of a UTF-8 character is written ``bytes:\\xe2\\x80``, like OpenAI."""
    raw = tok.token_bytes(token)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


def _token_entry(tok: Any, token: int, logprob: float | None) -> dict[str, Any]:
    return {"token": _token_text(tok, token), "logprob": logprob, "bytes": list(tok.token_bytes(token))}


class _CompletionLogprobs:
    """The legacy completions ``logprobs`` object, built token by token: ``tokens``,
    ``token_logprobs``, ``top_logprobs`` ({token: logprob}) and ``text_offset`` (characters from
    the start of the prompt)."""

    def __init__(self, tok: Any, offset: int) -> None:
        self.tok = tok
        self.offset = offset  # of the next generated token
        self._clear()

    def _clear(self) -> None:
        self.obj: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}

    def echo(self, ids: list[int], lps: list[float | None], tops: list) -> None:
        offset, raw = 0, b""
        for t, lp, top in zip(ids, lps, tops, strict=True):
            self._append(t, lp, top, offset)
            raw += self.tok.token_bytes(t)
            offset = len(raw.decode("utf-8", errors="ignore"))

    def add(self, ev: Event) -> dict[str, list] | None:
        """Record a generated token; returns the object for just this token (for streaming)."""
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
        self.obj["tokens"].append(_token_text(self.tok, token))
        self.obj["token_logprobs"].append(lp)
        self.obj["top_logprobs"].append(None if top is None else {_token_text(self.tok, t): v for t, v in top})
        self.obj["text_offset"].append(offset)


class _LeadingSpace:
    """Drops a chat reply's leading whitespace (the model writes ``Assistant: Hi``), across deltas."""

    def __init__(self) -> None:
        self.started = False

    def __call__(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        return text


# -- ASGI middleware --------------------------------------------------------------------------------
class _BodyLimit:
    """413 for request bodies over ``max_bytes``: by Content-Length, or counted as they arrive."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = APIError(413, f"the request body is over the limit of {self.max_bytes} bytes",
                           code="request_too_large")
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_bytes:
            return await too_big.response()(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, too_big.message)  # FastAPI's own passes its body parsing
            return message

        await self.app(scope, counted, send)


class _BearerKey:
    """401 for ``/v1/*`` requests without ``Authorization: Bearer <key>``."""

    def __init__(self, app: Any, api_key: str) -> None:
        self.app, self.key = app, api_key.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            scheme, _, given = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.key):
                error = APIError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                                 code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                return await error.response()(scope, receive, send)
        await self.app(scope, receive, send)


class _RequestMetrics:
    """Counts each request by endpoint and status, and times it to the end of its response."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"].rstrip("/") or "/"
        endpoint = path if path in _ENDPOINTS else "/v1/models/{model}" if path.startswith("/v1/models/") else "other"
        t0, status = time.perf_counter(), 500

        async def timed(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            self.metrics.request_done(endpoint, status, time.perf_counter() - t0)


# -- running in the background (tests, notebooks) -------------------------------------------------------
@contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a thread; yields the base URL (port 0: any free port)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="npgpt-uvicorn", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
