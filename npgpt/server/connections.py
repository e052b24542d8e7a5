"""Deadlines for receiving a request, so that slow or silent connections cannot take the server's sockets.

uvicorn closes a connection left idle after a response (``timeout_keep_alive``), but not one that never sends
a whole request: a client that opens connections and sends nothing, or a request head a byte at a time
(slowloris), held each one open for ever, and a few hundred of them used up the process's file descriptors:
every later connection, ``/health`` included, waited unanswered. :class:`DeadlineProtocol` is uvicorn's own HTTP
protocol (the one ``http="auto"`` picks) with Node.js's two deadlines (``server.headersTimeout``,
``server.requestTimeout``): a request's head must arrive within :data:`HEAD_TIMEOUT_S` of the connection
waiting for it (opened, or its previous response sent), and its body within :data:`REQUEST_TIMEOUT_S`; a
connection past either is closed. As Node.js and nginx answer, a request begun and not finished in time first
gets a ``408 Request Timeout`` (OpenAI-shaped, ``code: request_timeout``, ``Connection: close``), so its client
learns why rather than seeing a connection reset; one that sent nothing (an idle keep-alive connection) is closed
without a word, as a client expects of an idle connection. The app, whose request's body was being read, sees a
disconnect. The compute a request asks for is not bounded here: its limits are per request (:mod:`.limits`).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import h11
from uvicorn.protocols.http.auto import AutoHTTPProtocol

HEAD_TIMEOUT_S = 60.0  # Node.js's headersTimeout
REQUEST_TIMEOUT_S = 300.0  # Node.js's requestTimeout: the head and the body


def error_response(status: int, reason: str, message: str, code: str) -> bytes:
    """A whole error response, written on the connection itself (no request reached the app), in OpenAI's shape,
    with ``Connection: close``: the connection closes after it."""
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    body = json.dumps({"error": error}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def timeout_response(what: str, seconds: float) -> bytes:
    """The ``408 Request Timeout`` for a request whose ``what`` ("head", "body") did not arrive in ``seconds``."""
    message = (
        f"the request's {what} did not arrive within {seconds:g} s of the server waiting for it; send the whole "
        "request at once"
    )
    return error_response(408, "Request Timeout", message, "request_timeout")


# h11's reasons a client can act on, by how they begin, and what to say instead: a request written by hand (printf
# into nc or curl --raw) most often lacks its Host header, which every HTTP/1.1 request must carry
_REASONS = {
    "Missing mandatory Host": "it has no Host header, which every HTTP/1.1 request must carry; send 'Host: <server>'",
    "Found multiple Host": "it has more than one Host header; send one",
    "Only Transfer-Encoding: chunked": "its Transfer-Encoding is not chunked, the one transfer coding taken; send the "
    "body with a Content-Length or chunked (a compressed body is sent with Content-Encoding)",
    "multiple Transfer-Encoding": "it has more than one Transfer-Encoding header; send one: chunked",
    "bad Content-Length": "its Content-Length is not a whole number; send the body's size in bytes",
    "conflicting Content-Length": "it has Content-Length headers that disagree; send one, the body's size in bytes",
}


def _why(error: BaseException | None) -> str | None:
    """What to say of the parser's ``error`` (h11's), if it is one of :data:`_REASONS`."""
    if isinstance(error, h11.RemoteProtocolError):
        return next((why for start, why in _REASONS.items() if str(error).startswith(start)), None)
    return None


class DeadlineProtocol(AutoHTTPProtocol):  # type: ignore[valid-type, misc]  # a class chosen at import
    """uvicorn's HTTP protocol, closing a connection whose request head or body is not in by its deadline, and
    answering bytes that are no HTTP request in OpenAI's shape."""

    head_timeout = HEAD_TIMEOUT_S
    request_timeout = REQUEST_TIMEOUT_S
    _sent_some = False  # whether the request waited for has begun to arrive

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._wait_for_request()

    def data_received(self, data: bytes) -> None:
        self._sent_some = self._sent_some or bool(data)
        super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._wait_for_request()  # the next request's head, on a connection kept alive

    def connection_lost(self, exc: Exception | None) -> None:
        timer = getattr(self, "_deadline_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        """Empty lines before a request line are skipped, as RFC 9112 (2.2) asks of a server ("SHOULD ignore at
        least one empty line (CRLF) received prior to the request-line") and as nginx, Node.js and Go do: h11, under
        uvicorn, answered a CRLF sent after a request's body (as some clients end a POST) with a 400 "not valid
        HTTP/1.1" and closed the connection, so the next request on it failed. (httptools, the other protocol
        ``http="auto"`` may pick, skips them itself.)"""
        conn = getattr(self, "conn", None)
        # h11's buffer of what has arrived and is not yet read (its own names: looked up, so that another h11
        # only loses the skipping, never a request)
        buffer: Any = getattr(conn, "_receive_buffer", None)
        data = getattr(buffer, "_data", None)
        idle = isinstance(conn, h11.Connection) and conn.their_state is h11.IDLE
        if idle and isinstance(data, bytearray) and data[:1] in (b"\r", b"\n") and hasattr(buffer, "_extract"):
            buffer._extract(len(data) - len(data.lstrip(b"\r\n")))
        super().handle_events()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are no HTTP/1.1 request (a malformed request line or header) was a
        plain-text 400, "Invalid HTTP request received.": in OpenAI's shape, as every other
        error, naming what to check: the parser's reason where it is one a client can act on (uvicorn calls this
        while handling the parser's error, :func:`_why`)."""
        why = _why(sys.exc_info()[1])
        message = (
            f"the request is not valid HTTP/1.1: {why}"
            if why
            else "the request is not valid HTTP/1.1 (a malformed request line or header, such as a space in the URL "
            "or a header without its colon); send a well-formed request"
        )
        self.transport.write(error_response(400, "Bad Request", message, "invalid_http_request"))
        self.transport.close()

    def _wait_for_request(self) -> None:
        self._waiting_since = self.loop.time()
        self._sent_some = False
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._deadline_timer = self.loop.call_later(self.head_timeout, self._check_deadline)

    def _check_deadline(self) -> None:
        """Close the connection if the request it is waiting for is late; else look again at the next deadline
        (none once the whole request is in: the answer may take as long as the request asks)."""
        self._deadline_timer = None
        if self.transport.is_closing():
            return
        cycle: Any = self.cycle
        if cycle is None or cycle.response_complete:  # waiting for a request's head
            timeout, what = self.head_timeout, "head"
        elif cycle.more_body:  # the head is in, the body is still coming
            timeout, what = self.request_timeout, "body"
        else:
            return
        left = self._waiting_since + timeout - self.loop.time()
        if left > 0:
            self._deadline_timer = self.loop.call_later(left, self._check_deadline)
            return
        if what == "body" and not cycle.response_started:
            # the app, reading the body, sees a disconnect; and anything it sends after is dropped, not written
            # after the 408
            cycle.disconnected = True
            cycle.message_event.set()
            self.transport.write(timeout_response(what, timeout))
        elif what == "head" and self._sent_some:
            self.transport.write(timeout_response(what, timeout))
        self.transport.close()
