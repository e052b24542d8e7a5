"""Reading a request's JSON body: FastAPI's route, strictly JSON, with each key of an object given once.

``json.loads`` keeps the last of two values for one key (``{"max_tokens": 2, "max_tokens": 300}`` asks for
300), other parsers the first, and a proxy or logger in between may read the other one: RFC 8259 leaves it
open. Such a body is refused (400, ``invalid_json``) rather than answered for one reading of it; so is one
holding ``NaN`` or ``Infinity``, which ``json.loads`` reads and JSON has not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from ..errors import shown


class NotJSON(ValueError):
    """The body parses with Python's ``json`` but is not JSON (RFC 8259): a key given twice, ``NaN``."""


class DuplicateKey(NotJSON):
    """A JSON object in the body names one key twice."""


def _no_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity``, which ``json.loads`` reads as floats, are no JSON (RFC 8259), and
    OpenAI answers them as invalid JSON: a ``temperature`` of NaN would reach the sampler as a number."""
    raise NotJSON(
        f"the JSON body holds {name}, which is not JSON (RFC 8259 has no NaN or infinity); send a finite number"
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's (key, value) pairs as a dict; a key given twice is refused, where ``json.loads`` would
    silently keep the last value (``{"max_tokens": 2, "max_tokens": 300}``), and another parser the first."""
    obj = dict(pairs)
    if len(obj) < len(pairs):
        keys = [k for k, _ in pairs]
        twice = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise DuplicateKey(
            f"the JSON body gives the key {shown(twice)} twice in one object, and parsers differ on which one counts; "
            "send each field once"
        )
    return obj


def _utf8(body: bytes) -> bytes:
    """``body`` if it is UTF-8, as JSON sent between systems must be (RFC 8259, and OpenAI's API reads nothing
    else); a UTF-8 byte order mark, which RFC 8259 lets a parser ignore, is ignored (``json.loads`` drops it).
    A body in UTF-16 or UTF-32, which ``json.loads`` would guess from its first bytes and read, is refused
    (:class:`NotJSON`): another server or proxy on the way reads it as UTF-8, as garbage."""
    encoding = json.detect_encoding(body)
    if encoding not in ("utf-8", "utf-8-sig"):
        raise NotJSON(
            f"the body is {encoding.upper()}, not UTF-8, which JSON sent between systems must be (RFC 8259); "
            "send JSON encoded as UTF-8"
        )
    return body


class _JSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = _utf8(await self.body())
            self._json = json.loads(body, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
        return self._json


class JSONRoute(APIRoute):
    """FastAPI's route, reading a JSON body with each key once (:func:`_unique_keys`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            return await handle(_JSONRequest(request.scope, request.receive))

        return handler
