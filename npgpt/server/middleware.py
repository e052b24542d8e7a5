"""ASGI middleware: CORS, the request body limit, the bearer key, and per-request metrics."""

from __future__ import annotations

import hmac
import time
from typing import Any

from fastapi import HTTPException
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers
from starlette.responses import Response

from ..errors import shown
from .errors import APIError
from .metrics import Metrics

ENDPOINTS = {"/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/next_tokens"}


class CORS(CORSMiddleware):
    """Starlette's CORS middleware, whose refused preflight (a plain-text "Disallowed CORS origin" 400) is
    OpenAI's JSON error instead, naming what was refused and how to allow it. Status and headers are
    Starlette's: what a browser decides on is unchanged."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        origin, method = request_headers["origin"], request_headers["access-control-request-method"]
        wanted = request_headers.get("access-control-request-headers")
        refused = []
        if not self.is_allowed_origin(origin=origin):
            refused.append(
                f"a web page from {shown(origin)} may not call this server (start the server with "
                "--allowed-origins naming that origin)"
            )
        if method not in self.allow_methods:
            refused.append(f"method {shown(method)} is not allowed (the server takes {', '.join(self.allow_methods)})")
        if wanted is not None and not self.allow_all_headers:
            bad = [h.strip() for h in wanted.lower().split(",") if h.strip() not in self.allow_headers]
            if bad:
                refused.append(f"header(s) {', '.join(map(shown, bad))} are not allowed")
        if "access-control-request-private-network" in request_headers and not self.allow_private_network:
            refused.append("private network access is not allowed")
        headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        message = f"CORS preflight refused: {'; '.join(refused) or bytes(response.body).decode()}"
        return APIError(400, message, code="cors_refused", headers=headers).response()


class BodyLimit:
    """413 for request bodies over ``max_bytes``: by Content-Length, or counted as they arrive."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = APIError(
            413, f"the request body is over the limit of {self.max_bytes} bytes", code="request_too_large"
        )
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


class BearerKey:
    """401 for ``/v1/*`` requests without ``Authorization: Bearer <key>``."""

    def __init__(self, app: Any, api_key: str) -> None:
        self.app, self.key = app, api_key.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            scheme, _, given = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.key):
                error = APIError(
                    401,
                    "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                return await error.response()(scope, receive, send)
        await self.app(scope, receive, send)


class RequestMetrics:
    """Counts each request by endpoint and status, and times it to the end of its response."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"].rstrip("/") or "/"
        endpoint = path if path in ENDPOINTS else "/v1/models/{model}" if path.startswith("/v1/models/") else "other"
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
