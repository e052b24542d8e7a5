"""Reading a request's JSON body: FastAPI's route, strictly JSON, with each key of an object given once.

``json.loads`` keeps the last of two values for one key (``{"max_tokens": 2, "max_tokens": 300}`` asks for
300), other parsers the first, and a proxy or logger in between may read the other one: RFC 8259 leaves it
open. Such a body is refused (400, ``invalid_json``) rather than answered for one reading of it; so is one
holding ``NaN`` or ``Infinity``, which ``json.loads`` reads and JSON has not.
"""

from __future__ import annotations

import asyncio
import email.message
import json
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from ..errors import shown

if TYPE_CHECKING:
    from fastapi._compat import ModelField  # the route's body_field, whose validate FastAPI's own handler calls


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


def parse(body: bytes) -> Any:
    """The JSON ``body``, strictly (:func:`_utf8`, :func:`_unique_keys`, :func:`_no_constant`)."""
    return json.loads(_utf8(body), object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI reads a body sent with ``content_type`` as JSON (``application/json`` or ``*/*+json``)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class _JSONRequest(Request):
    _json_error: Exception | None = None

    async def json(self) -> Any:
        if self._json_error is not None:
            raise self._json_error
        if not hasattr(self, "_json"):
            self._json = parse(await self.body())
        return self._json

    async def read_off_the_loop(self, field: ModelField) -> None:
        """Parse the body and validate it as ``field`` (the route's body) on a thread, so that FastAPI, which does
        both on the event loop, finds the request model already made. A 1 MB body (a 50,000-entry logit_bias,
        thousands of prompts or messages) takes ~0.1-0.7 s of Python to parse, walk (:mod:`.body`) and validate,
        during which /health and every stream waited. A body that is not JSON is left for FastAPI to refuse as
        before (the error kept, the body not parsed twice); one that does not validate is refused here, with the
        errors FastAPI gives."""
        if not _is_json(self.headers.get("content-type")):
            return
        body = await self.body()
        if not body:
            return

        try:
            data = await asyncio.to_thread(parse, body)
        except Exception as e:  # json.loads' and NotJSON's: FastAPI's reading of the body says what they are
            self._json_error = e
            return
        value, errors = await asyncio.to_thread(field.validate, data, {}, loc=("body",))
        if errors:
            raise RequestValidationError(errors, body=data)
        self._json = value  # FastAPI validates it again: a model instance, taken as it is


class JSONRoute(APIRoute):
    """FastAPI's route, reading a JSON body with each key once (:func:`_unique_keys`), parsed and validated off
    the event loop (:meth:`_JSONRequest.read_off_the_loop`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        # one body model, not embedded (each of npgpt's routes); getattr: older FastAPI versions lack the flag
        field = None if getattr(self, "_embed_body_fields", False) else self.body_field

        async def handler(request: Request) -> Response:
            req = _JSONRequest(request.scope, request.receive)
            if field is not None:
                await req.read_off_the_loop(field)
            return await handle(req)

        return handler
