"""The router: each endpoint picks its model's scheduler and hands over to its serving module.

``GET /v1/models``, ``POST /v1/completions`` (:mod:`.completions`), ``POST /v1/chat/completions``
(:mod:`.chat`), ``POST /v1/next_tokens`` (npgpt's own: the most likely next tokens, for the
playground), ``POST /tokenize`` and ``/detokenize`` (vLLM's: :mod:`.tokenize`), ``GET /health``,
``GET /metrics`` (Prometheus text) and ``GET /`` (the playground); ``HEAD`` on each ``GET`` URL.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from importlib import resources
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.routing import APIRoute

from ..errors import shown
from . import chat, completions
from .errors import APIError
from .inside import inside_routes
from .jsonbody import JSONRoute
from .metrics import Metrics
from .protocol import ChatRequest, CompletionRequest, NextTokensRequest
from .response_parts import model_card
from .scheduler import Scheduler
from .streaming import respond
from .tokenize import tokenize_routes

ROUTES = (  # (method, path) of each route without a path parameter but the playground, for a 404 to suggest
    ("GET", "/v1/models"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/next_tokens"),
    ("POST", "/v1/internals"),
    ("POST", "/tokenize"),
    ("POST", "/detokenize"),
    ("GET", "/health"),
    ("GET", "/metrics"),
)


def router(schedulers: dict[str, Scheduler], metrics: Metrics, special_tokens: bool = True) -> APIRouter:
    """The app's routes over ``schedulers`` (model name -> its scheduler; the first is the default).

    ``special_tokens``: whether a literal ``<|endoftext|>`` in a prompt (completions, next_tokens,
    internals) is the special token; in a chat message it is always text.
    """

    def pick(name: str | None) -> tuple[str, Scheduler]:
        """The scheduler of the requested model; the request names a loaded model, never a path."""
        if name is None:
            name = next(iter(schedulers))
        if name not in schedulers:  # 404, as OpenAI and vLLM answer (the openai client's NotFoundError)
            raise APIError(
                404,
                f"model {shown(name)} is not served here; choose one of {', '.join(schedulers)}",
                param="model",
                code="model_not_found",
            )
        return name, schedulers[name]

    api = APIRouter(route_class=JSONRoute)
    loaded = int(time.time())  # each model's ``created``: when this server loaded it (vLLM gives a time too)

    @api.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(name, s.model, loaded) for name, s in schedulers.items()]}

    # ``:path``: a name may hold "/" (``openai-community/gpt2``), which the openai client sends as it is
    @api.get("/v1/models/{model:path}")
    async def get_model(model: str) -> dict[str, Any]:
        # a trailing "/" is no part of a name (a name has no empty segment: check_model_name), and every other URL
        # takes one (a redirect to the URL without it): ``/v1/models/org/gpt2/`` is org/gpt2's card
        model = model.rstrip("/")
        if not model:  # ``/v1/models/``: the list, as the redirect to /v1/models answered before ``:path``
            return await list_models()
        name, sched = pick(model)
        return model_card(name, sched.model, loaded)

    @api.post("/v1/completions")
    async def create_completion(body: CompletionRequest, request: Request) -> Any:
        answer = await completions.start(body, request, *pick(body.model), metrics, special_tokens)
        return await respond(answer, bool(body.stream), *usage_options(body))

    @api.post("/v1/chat/completions")
    async def create_chat_completion(body: ChatRequest, request: Request) -> Any:
        answer = await chat.start(body, request, *pick(body.model), metrics)
        return await respond(answer, bool(body.stream), *usage_options(body))

    @api.post("/v1/next_tokens")
    async def next_tokens(body: NextTokensRequest) -> dict[str, Any]:
        name, sched = pick(body.model)
        m = sched.model

        # tokenising a long prompt takes a while (a second for 1 MB): on a thread of its own, neither on the event
        # loop nor on the model's worker, where it would hold up every request generating
        ids = await asyncio.to_thread(m.tokenizer.encode, body.prompt, allow_special=special_tokens)
        top = await asyncio.wrap_future(sched.call(partial(m.next_tokens, ids, k=body.k)))
        return {
            "object": "next_tokens",
            "model": name,
            "tokens": [
                {"id": i, "text": text, "prob": p, "logprob": float(np.log(max(p, 1e-45)))} for i, text, p in top
            ],
        }

    # POST /v1/internals: the playground's "inside" panel
    api.include_router(inside_routes(pick, special_tokens), prefix="/v1")
    # POST /tokenize and /detokenize, vLLM's (beside /v1, as vLLM serves them)
    api.include_router(tokenize_routes(pick, special_tokens))

    @api.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "models": {
                name: {"active_rows": s.active, "queued_requests": s.queued, "max_batch": s.max_batch}
                for name, s in schedulers.items()
            },
        }

    @api.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        gauges = {
            "npgpt_active_rows": {k: s.active for k, s in schedulers.items()},
            "npgpt_queued_requests": {k: s.queued for k, s in schedulers.items()},
        }
        return PlainTextResponse(metrics.render(gauges), media_type="text/plain; version=0.0.4")

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse((resources.files("npgpt.server") / "static" / "index.html").read_text("utf-8"))

    # HEAD where GET is (load balancers and uptime checkers send it), as Starlette's own routes and any HTTP server
    # answer it: FastAPI's take only the methods they name. The headers are GET's; the ASGI server sends no body.
    for route in list(api.routes):
        if isinstance(route, APIRoute) and route.methods == {"GET"}:
            api.add_api_route(
                route.path,
                route.endpoint,
                methods=["HEAD"],
                response_class=route.response_class,
                include_in_schema=False,
                name=f"{route.name}_head",
            )
    return api


def usage_options(body: CompletionRequest | ChatRequest) -> tuple[bool, bool]:
    """``stream_options``: the usage chunk at the end, and vLLM's usage on every chunk too."""
    options = body.stream_options
    return bool(options and options.include_usage), bool(options and options.continuous_usage_stats)
