"""ASGI middleware: CORS, the request body limit, compressed bodies, the bearer key, and per-request metrics."""

from __future__ import annotations

import hmac
import time
import zlib
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers
from starlette.responses import Response

from ..errors import shown
from .errors import APIError
from .metrics import Metrics

ENDPOINTS = {
    "/",
    "/health",
    "/metrics",
    "/v1/models",
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/next_tokens",
    "/tokenize",
    "/detokenize",
}


class AbsoluteForm:
    """A request line naming the whole URL, ``POST http://host:8000/v1/completions HTTP/1.1`` (RFC 9112's
    absolute-form, which a server "MUST accept"), is routed by its path. uvicorn's h11 protocol, the one npgpt
    runs without httptools installed, took the whole URL for the path ("Unknown request URL: POST
    /http://host:8000/v1/completions"), where its httptools protocol reads the path out of it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        raw = scope.get("raw_path") or b""
        if scope["type"] == "http" and raw[:8].lower().startswith((b"http://", b"https://")):
            path = urlsplit(scope["path"]).path or "/"
            scope = {**scope, "path": path, "raw_path": urlsplit(raw).path or b"/"}
        await self.app(scope, receive, send)


class TrailingSlash:
    """An endpoint's URL with a trailing slash (``POST /v1/completions/``) is the endpoint's, answered as it is.
    Starlette answered it with a ``307`` to the URL without the slash and an empty body: curl without ``-L``
    printed nothing, a client that does not follow redirects (httpx's default) got no JSON, and behind a TLS
    proxy the redirect named ``http://``. ``/v1/models/`` was already the list (:mod:`.routes`)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.endswith("/") and path.rstrip("/") in ENDPOINTS:
            bare = path.rstrip("/")
            scope = {**scope, "path": bare, "raw_path": bare.encode()}
        await self.app(scope, receive, send)


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


class ContentEncoding:
    """A request body sent with ``Content-Encoding: gzip`` or ``deflate`` (zlib-wrapped or raw, see
    :meth:`_decoded`), as some clients and proxies compress large bodies, is decoded before it is read as JSON;
    any other coding (``br``, ``zstd``) is a 415 naming the ones taken (and listing them in ``Accept-Encoding``,
    as RFC 9110 asks). Without this, a compressed body was read as it came and refused as "not UTF-8", naming a
    byte of the gzip header. Both the bytes received and the bytes they decode to are bounded by ``max_bytes``
    (413): a small body that decodes to gigabytes is refused as it grows past the limit.

    The header is a list (RFC 9110): the codings in the order they were applied, across one header line or
    several, ``identity`` and empty items meaning nothing (``gzip, identity`` is gzip). They are undone last
    first, each bounded as the first is; one this server cannot undo refuses the body, naming it. A request
    with no body (a GET, ``Content-Length: 0``) has nothing encoded: its header is not looked at."""

    WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 32 + zlib.MAX_WBITS}

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")]
        listed = [v.decode("latin-1") for k, v in scope["headers"] if k == b"content-encoding"]
        codings = [c for c in (c.strip().lower() for v in listed for c in v.split(",")) if c and c != "identity"]
        if not codings or not _has_body(scope["headers"]):  # nothing to undo: a GET /v1/models is answered
            return await self.app(scope, receive, send)
        error = self._refusal(codings, ", ".join(x.strip() for x in listed))
        body, undone = b"", list[str]()
        for coding in reversed(codings):  # the last applied first
            if error is not None:
                break
            body, error = await self._decoded(receive if not undone else _replay(body), coding, undone)
            undone.append(coding)
        if error is not None:
            return await error.response()(scope, receive, send)
        replayed = False

        async def decoded() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # http.disconnect, when the client leaves
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        headers.append((b"content-length", str(len(body)).encode()))
        await self.app({**scope, "headers": headers}, decoded, send)

    def _refusal(self, codings: list[str], header: str) -> APIError | None:
        """The 415 for the first of ``codings`` this server cannot undo (``header``: the header as sent), if any."""
        unknown = next((c for c in codings if c not in self.WBITS), None)
        if unknown is None:
            return None
        of = f" (in Content-Encoding {shown(header)})" if header.lower() != unknown else ""
        return APIError(
            415,
            f"the request body's Content-Encoding {shown(unknown)}{of} is not supported: send it uncompressed, or "
            "compressed with gzip or deflate",
            code="unsupported_content_encoding",
            headers={"Accept-Encoding": "gzip, deflate"},
        )

    async def _decoded(self, receive: Any, coding: str, undone: list[str]) -> tuple[bytes, APIError | None]:
        """The body, its ``coding`` undone (``undone``: the codings applied after it, already undone); or the
        error to answer (413 over the limit, 400 for data that does not decode).

        ``deflate`` is zlib-wrapped by RFC 9110, but some clients send raw deflate data (no zlib header), which
        browsers, curl and urllib3 read too, falling back to raw when the zlib header is not there: so does this,
        once, over what arrived so far (held only until the zlib header is known, and bounded as the rest).
        Data after the compressed data ends is refused (:class:`_Inflater`), never silently dropped."""
        too_big = APIError(
            413, f"the request body is over the limit of {self.max_bytes} bytes", code="request_too_large"
        )
        # what it decodes to: the client sent fewer bytes than that, and is told which count is over
        unpacked = APIError(
            413,
            f"the request body decompresses ({coding}) to over the limit of {self.max_bytes} bytes; send less",
            code="request_too_large",
        )
        wbits = self.WBITS[coding]
        inflater, received, more = _Inflater(wbits, self.max_bytes), 0, True
        held: list[bytes] | None = [] if wbits == self.WBITS["deflate"] else None  # kept for a raw retry
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left before it sent the body
                return b"", APIError(400, "the request body did not arrive", code="invalid_json")
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                return b"", too_big
            try:
                inflater.feed(chunk)
            except zlib.error as e:
                if held is None:
                    return b"", self._undecodable(coding, undone, str(e))
                inflater, chunk = _Inflater(-zlib.MAX_WBITS, self.max_bytes), b"".join([*held, chunk])
                held = None  # one retry: raw deflate (the zlib header was not there), from the first byte
                try:
                    inflater.feed(chunk)
                except (zlib.error, TrailingData):
                    return b"", self._undecodable(coding, undone, str(e))  # neither: the zlib reading's error says more
            except TrailingData as e:
                return b"", self._undecodable(coding, undone, str(e))
            if held is not None:  # the header was good once anything came out: nothing to retry
                held = None if inflater.out or inflater.decoder.eof else [*held, chunk]
            if inflater.over:
                return b"", unpacked
            more = message.get("more_body", False)
        if received and not inflater.decoder.eof:
            return b"", self._undecodable(coding, undone, "it ends before the compressed data does")
        return bytes(inflater.out), None

    def _undecodable(self, coding: str, undone: list[str], why: str) -> APIError:
        coding = "deflate" if coding == "deflate" else "gzip"  # x-gzip is gzip
        body = "the request body" + (f" (its {', '.join(reversed(undone))} undone)" if undone else "")
        return APIError(
            400,
            f"{body} is not valid {coding} data, as its Content-Encoding says ({why}); compress it with "
            f"{coding}, or send it uncompressed without the header",
            code="invalid_json",
        )


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request with these headers has a body (RFC 9112 6.3: a Transfer-Encoding, or a Content-Length
    other than 0): a request without one has nothing its Content-Encoding could apply to, and is answered as
    if the header were not there, as other servers answer it (a client that sets the header on every request)."""
    fields = dict(headers)
    return b"transfer-encoding" in fields or fields.get(b"content-length", b"0").strip() not in (b"0", b"")


def _replay(body: bytes) -> Any:
    """An ASGI ``receive`` that gives ``body`` in one message: a coding's output, for the coding under it."""

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class TrailingData(ValueError):
    """Bytes after the end of the compressed data that are not another gzip member."""


class _Inflater:
    """Decodes a body fed in pieces with ``wbits`` (zlib's), into ``out``, up to ``max_bytes`` + 1 bytes (then
    ``over``). A gzip body may hold several members, one after another (RFC 1952; ``gzip -d``, Python's
    ``gzip.decompress`` and Go's reader read them all, and some clients compress a body piece by piece), and
    zero bytes after the last, which the same readers skip; any other data after the end raises
    :class:`TrailingData`: dropped, it would leave a body cut short or hide a client's mistake."""

    def __init__(self, wbits: int, max_bytes: int) -> None:
        self.wbits, self.max_bytes = wbits, max_bytes
        self.decoder, self.out, self.padding = zlib.decompressobj(wbits), bytearray(), False

    @property
    def over(self) -> bool:
        return len(self.out) > self.max_bytes or bool(self.decoder.unconsumed_tail)

    def feed(self, data: bytes) -> None:
        """Decode ``data``, the next piece of the body; raises zlib.error or :class:`TrailingData`."""
        gzip = self.wbits == ContentEncoding.WBITS["gzip"]
        while data and not self.over:
            if self.decoder.eof:  # what follows the end: another gzip member, or zeros after the last
                if gzip and (self.padding or data[0] == 0):
                    self.padding = True
                    if data.strip(b"\0"):
                        raise TrailingData("it has data after the zero bytes that follow the compressed data")
                    return
                if not gzip or not b"\x1f\x8b".startswith(data[:2]):  # no gzip member starts here
                    raise TrailingData("it has more bytes after the compressed data ends")
                self.decoder = zlib.decompressobj(self.wbits)
            self.out += self.decoder.decompress(data, self.max_bytes + 1 - len(self.out))
            data = self.decoder.unused_data if self.decoder.eof else b""


# what the key guards: the API, and vLLM's /tokenize and /detokenize (tokenising a 1 MB body costs a second of CPU;
# vLLM leaves them open, but only probes and scrapers, which never tokenise, need to go without the key)
GUARDED = ("/v1/", "/tokenize", "/detokenize")


class BearerKey:
    """401 for requests to the API (:data:`GUARDED`) without ``Authorization: Bearer <key>``."""

    def __init__(self, app: Any, api_key: str) -> None:
        self.app, self.key = app, api_key.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(GUARDED):
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
