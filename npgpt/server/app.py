"""The app's wiring: one scheduler per model, middleware, error handlers, routes; and a background runner.

Each model has one :class:`~npgpt.server.scheduler.Scheduler`: the model runs on its worker
thread, never on the event loop, and concurrent requests share its batch.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import TYPE_CHECKING

from fastapi import FastAPI

from .errors import add_handlers
from .metrics import Metrics
from .middleware import BearerKey, BodyLimit, RequestMetrics
from .routes import router
from .scheduler import Scheduler

if TYPE_CHECKING:
    from ..api import GPT2

MAX_BODY_BYTES = 1_000_000


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
        name: Scheduler(m, max_batch=max_batch, max_queue=max_queue, on_step=partial(metrics.step, name))
        for name, m in models.items()
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for s in schedulers.values():
            s.close()

    app = FastAPI(title="npgpt", summary="GPT-2 behind an OpenAI-compatible API", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if api_key is not None:
        app.add_middleware(BearerKey, api_key=api_key)
    app.add_middleware(RequestMetrics, metrics=metrics)
    add_handlers(app)
    app.include_router(router(schedulers, metrics))
    return app


@contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a thread (tests, notebooks); yields the base URL (port 0: any free port)."""
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
