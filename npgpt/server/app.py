"""The app's wiring: one scheduler per model, middleware, error handlers, routes; and a background runner.

Each model has one :class:`~npgpt.server.scheduler.Scheduler`: the model runs on its worker
thread, never on the event loop, and concurrent requests share its batch.

With an API key, the interactive docs (``/docs``, ``/redoc``) and ``/openapi.json`` are turned off:
they would describe a private server to anyone, and a browser cannot send the key to them anyway.

Browsers let a page call the server only from its own origin unless ``allowed_origins`` (``npgpt serve
--allowed-origins``) names the pages' origins, as vLLM's ``--allowed-origins`` does: Starlette's CORS
middleware then answers their preflight ``OPTIONS`` (before the key is checked: a preflight carries none).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import TYPE_CHECKING

from fastapi import FastAPI

from ..errors import NpgptError
from .connections import DeadlineProtocol
from .errors import add_handlers
from .limits import MAX_REQUEST_TOKENS, MAX_ROWS, Limits
from .metrics import Metrics
from .middleware import CORS, AbsoluteForm, BearerKey, BodyLimit, ContentEncoding, RequestMetrics, TrailingSlash
from .routes import ROUTES, router
from .scheduler import Scheduler
from .settings import check_settings
from .shutdown import SHUTDOWN_TIMEOUT_S, DrainingServer
from .streaming import MAX_UNREAD_EVENTS, Backlog

if TYPE_CHECKING:
    from ..api import GPT2

MAX_BODY_BYTES = 1_000_000


def create_app(
    models: dict[str, GPT2],
    api_key: str | None = None,
    max_batch: int = 16,
    max_queue: int = 64,
    max_body_bytes: int = MAX_BODY_BYTES,
    special_tokens: bool = True,
    max_rows: int = MAX_ROWS,
    max_request_tokens: int = MAX_REQUEST_TOKENS,
    max_request_logprobs: int | None = None,
    allowed_origins: Sequence[str] = (),
    max_unread_events: int = MAX_UNREAD_EVENTS,
) -> FastAPI:
    """The FastAPI app serving ``models`` (name -> model; the first is the default).

    ``api_key``: if set, ``/v1/*`` needs ``Authorization: Bearer <key>``, and ``/docs``, ``/redoc``
    and ``/openapi.json`` are off. ``max_batch``: rows decoded together per model. ``max_queue``:
    requests that may wait for a free row before new ones get 503. Bodies over ``max_body_bytes``
    get 413, as do gzip or deflate bodies that decode to more. ``special_tokens``: a literal
    ``<|endoftext|>`` in a prompt is the special token (as in OpenAI's and vLLM's servers and the Python
    API); False reads it as plain text. In a chat message it is always text. ``max_rows`` (prompts x
    ``n``), ``max_request_tokens`` (prompt tokens + ``max_tokens``, over the rows) and ``max_request_logprobs``
    (tokens listed with logprobs x (``logprobs`` + 1); None: twice ``max_request_tokens``) bound one request
    (:mod:`.limits`); over them is a 400. ``allowed_origins``: the origins (``https://host[:port]``, Ollama's
    wildcard ones such as ``chrome-extension://*`` or ``http://localhost:*``, or ``*`` for any) whose web pages
    may call the server (CORS); none by default, the safe choice for a server without a key. ``max_unread_events``:
    events generated for streams and not yet read by their clients, over all requests; over it, the stream
    holding the most is ended with an error (:class:`~.streaming.Backlog`). Raises ValueError for no models,
    NpgptError for a setting outside its range (:data:`.settings.RANGES`).
    """
    if not models:
        raise ValueError("create_app needs at least one model")
    for name in models:
        check_model_name(name)
    # a scoring client's logprobs 1 over every token the token limit admits, the token limit raised or not
    logprobs_limit = 2 * max_request_tokens if max_request_logprobs is None else max_request_logprobs
    check_settings(
        max_batch=max_batch,
        max_queue=max_queue,
        max_rows=max_rows,
        max_request_tokens=max_request_tokens,
        max_request_logprobs=logprobs_limit,
        max_unread_events=max_unread_events,
    )
    limits = Limits(max_rows, max_request_tokens, logprobs_limit)
    backlog = Backlog(max_unread_events)
    metrics = Metrics()
    schedulers = {
        name: Scheduler(m, max_batch=max_batch, max_queue=max_queue, on_step=partial(metrics.step, name))
        for name, m in models.items()
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for s in schedulers.values():
            s.close()

    public = api_key is None
    app = FastAPI(
        title="npgpt",
        summary="GPT-2 behind an OpenAI-compatible API",
        lifespan=lifespan,
        docs_url="/docs" if public else None,
        redoc_url="/redoc" if public else None,
        openapi_url="/openapi.json" if public else None,
    )
    app.state.limits = limits
    app.state.backlog = backlog
    app.state.schedulers = schedulers  # for the server's shutdown (:mod:`.shutdown`) to end what is left
    app.add_middleware(TrailingSlash)  # innermost: the routes see the endpoint's own URL
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(ContentEncoding, max_bytes=max_body_bytes)  # outside BodyLimit, which sees the decoded body
    if api_key is not None:
        app.add_middleware(BearerKey, api_key=api_key)
    app.add_middleware(RequestMetrics, metrics=metrics)
    if allowed_origins:  # outside the key's check: a preflight is answered before the key is asked for
        exact = [o for o in allowed_origins if o == "*" or "*" not in o]
        # Ollama's wildcard origins (chrome-extension://*, http://localhost:*): a * is any run of characters but /
        wild = "|".join(re.escape(o).replace(r"\*", "[^/]*") for o in allowed_origins if o not in exact)
        app.add_middleware(
            CORS,
            allow_origins=exact,
            allow_origin_regex=wild or None,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    # outermost: every layer, the key's check first, sees the path of a request line naming the whole URL
    app.add_middleware(AbsoluteForm)
    add_handlers(app, ROUTES)
    app.include_router(router(schedulers, metrics, special_tokens=special_tokens))
    return app


def check_model_name(name: str) -> None:
    """NpgptError for a model name a client cannot send back: ``GET /v1/models/{name}`` puts it in a URL,
    where ``?``, ``#`` and ``%`` start a query, a fragment or an escape (in clients that do not escape
    them, and curl), a client normalises ``.``/``..`` and empty segments away (the openai client refuses
    them), and a control character or an outer space is lost or unreadable in a config file. A ``/`` between
    segments is fine (``openai-community/gpt2``), as are ``:`` and ``@`` (``gpt2:int8``)."""
    bad = next((c for c in name if c in "?#%" or not c.isprintable()), None)
    segments = name.split("/")
    if bad is not None or not name or name != name.strip() or any(s in ("", ".", "..") for s in segments):
        why = (
            f"{bad!r} cannot be sent in a URL"
            if bad is not None
            else "it has spaces around it"
            if name and name != name.strip()
            else "a URL path cannot hold an empty, '.' or '..' segment"
        )
        raise NpgptError(
            f"model name {name!r} is not one clients can send ({why}); give the model another name, e.g. gpt2"
        )


@contextmanager
def background_server(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, shutdown_timeout: float = SHUTDOWN_TIMEOUT_S
) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a thread (tests, notebooks); yields the base URL (port 0: any free port).

    On leaving, the server shuts down as ``npgpt serve`` does (:mod:`.shutdown`): requests still running
    get ``shutdown_timeout`` seconds, then end with an error."""
    import uvicorn

    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without it
    # Nagle's algorithm holds each response's last write for the client's delayed ACK (~40 ms a request)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = DrainingServer(uvicorn.Config(app, http=DeadlineProtocol, log_level="warning"), app, shutdown_timeout)
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
        thread.join(shutdown_timeout + 30)
        sock.close()
