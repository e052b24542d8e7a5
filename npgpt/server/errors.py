"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, and their handlers.

A :class:`~npgpt.errors.NpgptError` carries the offending argument as data (``err.param``, the
Python API's name); here it becomes OpenAI's name (``max_new_tokens`` -> ``max_tokens``).
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..errors import NpgptError, cut, reason, shown
from ..generate import check_request as _check_request
from ..sampling import SamplingParams
from .body import too_deep
from .jsonbody import NotJSON
from .scheduler import ShuttingDown
from .unsupported import Refused

if TYPE_CHECKING:
    from ..api import GPT2

log = logging.getLogger("npgpt.server")

OPENAI_NAMES = {"max_new_tokens": "max_tokens"}  # the Python API's argument -> the OpenAI API's field
_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


class APIError(Exception):
    """An error response in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return SafeJSON(self.body(), status_code=self.status, headers=self.headers)


def json_safe(obj: Any) -> Any:
    """``obj`` (JSON-like) made encodable: strings valid Unicode (a lone surrogate, which UTF-8 cannot
    encode yet JSON's ``\\ud83d`` escape and Python strings allow, becomes U+FFFD) and non-finite
    floats, which JSON has no literal for, null."""
    if isinstance(obj, str):
        return obj.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {json_safe(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """Compact JSON that is valid and encodes as UTF-8 (see :func:`json_safe`, applied only when needed)."""
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        text.encode("utf-8")
    except (UnicodeEncodeError, ValueError):  # rare: only then pay for a second pass
        text = json.dumps(json_safe(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text


class SafeJSON(JSONResponse):
    """A JSON response that cannot fail to encode (see :func:`dumps`): a lone surrogate that reached a
    response (in a prompt echoed back, a stop string, an error message) is U+FFFD, never a 500."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")


def bad_request(e: NpgptError, code: str | None = None) -> APIError:
    """A 400 for a user error, in the OpenAI API's names (but a :class:`.unsupported.Refused` option's, which
    are the request's own: ``max_new_tokens`` sent in a body is named as sent)."""
    if isinstance(e, Refused):
        return APIError(400, str(e), param=e.param, code=code)
    message = str(e)
    for ours, theirs in OPENAI_NAMES.items():
        message = message.replace(ours, theirs)
    return APIError(400, message, param=OPENAI_NAMES.get(e.param or "", e.param), code=code)


def check_request(model: GPT2, rows: Sequence[Sequence[int]], params: SamplingParams) -> None:
    """The Python API's own request check (:func:`npgpt.generate.check_request`), answered as a 400."""
    try:
        _check_request(model.engine, model.tokenizer, rows, params)
    except NpgptError as e:
        # the only check on max_new_tokens there is the context length (its range is SamplingParams'),
        # and a prompt that fills the context alone is refused on the prompt
        full = e.param == "prompt" and any(len(r) >= model.config.n_ctx for r in rows)
        code = "context_length_exceeded" if e.param == "max_new_tokens" or full else None
        raise bad_request(e, code) from None


def validation_error(errors: Sequence[Any], content_type: str = "application/json", empty: bool = False) -> APIError:
    """One OpenAI-style error from pydantic's list: a malformed body, else the most specific problem.

    ``content_type``: the request's header. FastAPI reads a body as JSON only under a JSON
    Content-Type (from 0.132 not without one either: a browser sends those with no CORS preflight),
    and the body it did not read comes as bytes; ``curl -d '{...}'`` sends a form. ``empty``: the request had
    no body at all (``Content-Length: 0``: ``curl -X POST`` without ``-d``), which FastAPI reads as JSON null."""
    deep = next((e for e in errors if e.get("type") == "json_too_deep"), None)  # whichever field it is in
    if deep is not None:
        return APIError(400, deep["msg"], code="invalid_json")
    err = sorted(errors, key=lambda e: str(e.get("type", "")).endswith("_type"))[0]  # a union's type misses last
    if err.get("type") == "json_invalid":
        return APIError(400, f"malformed JSON body: {err.get('ctx', {}).get('error', err['msg'])}", code="invalid_json")
    loc = [x for x in err["loc"] if x != "body"]
    if not loc and (isinstance(err.get("input"), bytes) or "json" not in content_type.lower()):
        return APIError(
            400,
            f"the body was not read as JSON: its Content-Type is {shown(content_type) if content_type else 'missing'}; "
            "send the header "
            "'Content-Type: application/json' (curl: -H 'Content-Type: application/json')",
            code="invalid_json",
        )
    if not loc and empty:
        return APIError(400, "the request has no body; send the request's fields as a JSON object", code="invalid_json")
    if not loc:
        return APIError(400, f"the body must be a JSON object, got {_json_kind(err.get('input'))}", code="invalid_json")
    param = _param(loc)
    # completions' prompt, whose forms are tagged (str, list[int]...): which was meant is anyone's guess (/tokenize's
    # prompt is a text only, and its error says so as any field's does)
    if loc[0] == "prompt" and len(loc) > 1 and isinstance(loc[1], str) and err["type"] in _EXPECTED:
        return APIError(
            400,
            "prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids "
            f"(token ids are JSON integers); {param} is {_json_kind(err.get('input'))}",
            param="prompt",
        )
    if err["type"] in _EXPECTED:
        # the deepest field a union's forms failed on (``stop: [5]``: stop[0]), and every form it may take there
        typed = [(_param([x for x in e["loc"] if x != "body"]), e) for e in errors if e.get("type") in _EXPECTED]
        param = max((p for p, _ in typed), key=len)
        wanted = dict.fromkeys(_EXPECTED[e["type"]] for p, e in typed if p == param)
        got = next(_json_kind(e.get("input")) for p, e in typed if p == param)
        # OpenAI's own words, so that a client's handling of OpenAI's error fits
        message = f"Invalid type for '{param}': expected {' or '.join(wanted)}, but got {got} instead."
        return APIError(400, message, param=param)
    ctx = err.get("ctx") or {}
    if err["type"] == "too_long" and isinstance(err.get("input"), dict) and "max_length" in ctx:  # OpenAI's words
        message = (
            f"Invalid '{param}': too many properties. Expected an object with at most {ctx['max_length']} "
            f"properties, but got an object with {len(err['input'])} properties instead."
        )
        return APIError(400, message, param=param)
    if err["type"] == "string_too_long" and "max_length" in ctx:  # OpenAI's own words
        if "[key]" in loc:  # an object's key (metadata's): named by the object, the key quoted (cut if long)
            param = _param(loc[: loc.index("[key]") - 1])
        named = f"'{param}' key {shown(err.get('input'))}" if "[key]" in loc else f"'{param}'"
        message = (
            f"Invalid {named}: string too long. Expected a string with maximum length {ctx['max_length']}, "
            f"but got a string with length {len(err.get('input') or '')} instead."
        )
        return APIError(400, message, param=param, code="string_above_max_length")
    if err["type"] == "too_long" and "max_length" in ctx:  # OpenAI's own words, for a list over its limit
        message = (
            f"Invalid '{param}': array too long. Expected an array with maximum length {ctx['max_length']}, "
            f"but got an array with length {ctx.get('actual_length', len(err.get('input') or ()))} instead."
        )
        return APIError(400, message, param=param)
    if err["type"] == "missing":  # OpenAI's words; and a body sent to the other endpoint says where it belongs
        message = f"Missing required parameter: '{param}'."
        given = err.get("input") if len(loc) == 1 else None
        other = _OTHER_ENDPOINT.get(param)
        if isinstance(given, dict) and other is not None and other[0] in given:
            message += f" This body has '{other[0]}', which {other[1]}: send it to POST {other[2]}."
        return APIError(400, message, param=param)
    if err["type"] in _BOUNDS:  # OpenAI's own words and code: "integer below minimum value", integer_below_min_value
        side, op, key = _BOUNDS[err["type"]]
        given, bound = err.get("input"), ctx.get(key)
        # the field's type, which its bound is written in (temperature's 2.0, n's 128): temperature 3 is a decimal
        number = "decimal" if isinstance(bound, float) else "integer"
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # OpenAI's "Expected a value <= 2"
        message = (
            f"Invalid '{param}': {number} {side} {'minimum' if side == 'below' else 'maximum'} value. "
            f"Expected a value {op} {shown(bound)}, but got {shown(given)} instead."
        )
        return APIError(400, message, param=param, code=f"{number}_{side}_{'min' if side == 'below' else 'max'}_value")
    if err["type"] == "string_too_short" and ctx.get("min_length") == 1:  # OpenAI's words and code
        message = (
            f"Invalid '{param}': empty string. Expected a string with minimum length 1, but got an empty string "
            "instead."
        )
        return APIError(400, message, param=param, code="empty_string")
    if err["type"] == "too_short" and ctx.get("min_length") == 1 and not err.get("input"):
        message = (
            f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead."
        )
        return APIError(400, message, param=param)
    return APIError(400, f"{param}: {err['msg']}", param=param)


# a missing field -> (the other endpoint's field, what it is, where it goes): a chat body sent to completions
_OTHER_ENDPOINT = {
    "prompt": ("messages", "is a chat request's", "/v1/chat/completions"),
    "messages": ("prompt", "is a text completion's", "/v1/completions"),
}

# pydantic's range errors -> (OpenAI's side of the bound, the comparison expected, pydantic's ctx key)
_BOUNDS = {
    "greater_than_equal": ("below", ">=", "ge"),
    "greater_than": ("below", ">", "gt"),
    "less_than_equal": ("above", "<=", "le"),
    "less_than": ("above", "<", "lt"),
}

# pydantic's type errors -> the JSON type the field wanted
_EXPECTED = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "string_type": "a string",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",  # a nested object's (stream_options, tools[0]), as FastAPI validates it
}


def _json_kind(value: Any) -> str:
    """The JSON type of a parsed value, in OpenAI's words (``16.5``: a decimal number)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null"


def _param(loc: Sequence[Any]) -> str:
    """A field's location as the client wrote it (``messages[0].content``), without pydantic's union tags."""
    param = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            param += f"[{part}]"
        elif i and loc[i - 1] in _KEYED:  # the client's key, whatever it holds ("user-id", "str"), cut if long
            param += "." + cut(part)
        elif part not in _UNION_TAGS and not any(c in part for c in "[-"):  # skip tags such as "list[str]"
            param += ("." if param else "") + part
    return param


# the fields that are objects of the client's own keys with typed values: a part of a location after one is a key
_KEYED = {"metadata"}


# OpenAI's (and vLLM's) endpoints npgpt has no counterpart of (first path part after /v1), said so rather than "typos"
NOT_SERVED = {
    "embeddings": "embeddings (its models generate text; POST /v1/internals gives a prompt's residual stream)",
    "responses": "Responses API; send the conversation's messages to POST /v1/chat/completions",
    "audio": "audio (speech, transcription or translation); its models read and write text",
    "images": "images; its models read and write text",
    "moderations": "moderations",
}

# Ollama's own API (/api/...) -> npgpt's route for the same request; an Ollama client can talk to npgpt as an
# OpenAI-compatible connection (Open WebUI's, Continue's), which is what npgpt serves
OLLAMA = {
    "generate": "POST /v1/completions",
    "chat": "POST /v1/chat/completions",
    "tags": "GET /v1/models",
    "show": "GET /v1/models",
    "ps": "GET /v1/models",
}


def unknown_url(method: str, path: str, routes: Sequence[tuple[str, str]]) -> APIError:
    """OpenAI's 404 for a URL no route serves, naming the method and path, and the one of ``routes``
    ((method, path) pairs) it is close to, if any (``/v1/completion`` or ``/completions``: ``POST /v1/completions``)."""
    where = cut(path)
    paths = [p for _, p in routes]
    target = path.rstrip("/")
    close = difflib.get_close_matches(target, paths, n=1, cutoff=0.8) or (
        [] if target.startswith("/v1/") else difflib.get_close_matches("/v1" + target, paths, n=1, cutoff=0.8)
    )
    hint = " Please check the URL for typos."
    part = target.removeprefix("/v1").lstrip("/").split("/")[0]
    ollama = target.split("/")[2] if target.startswith("/api/") and target.count("/") >= 2 else None
    if ollama is not None:
        instead = f"; its {OLLAMA[ollama]} does what this one does" if ollama in OLLAMA else ""
        hint = (
            f" npgpt serves the OpenAI API, not Ollama's{instead}: set the client up for an OpenAI-compatible "
            "server at this one's /v1."
        )
    elif part in NOT_SERVED:
        hint = f" npgpt serves no {NOT_SERVED[part]}."
    elif close:
        methods = [m for m, p in routes if p == close[0]]
        hint += f" Did you mean {method if method in methods else methods[0]} {close[0]}?"
    return APIError(
        404,
        f"Unknown request URL: {method} {where}.{hint} This server serves "
        "GET /v1/models, POST /v1/completions and POST /v1/chat/completions.",
        code="unknown_url",
    )


def wrong_method(request: Request, allowed: str, headers: Mapping[str, str] | None) -> APIError:
    """The 405 for a method the URL does not take, naming the one it does. A browser's CORS preflight (OPTIONS
    with an Origin) is refused only because no ``--allowed-origins`` names the page's origin: say that."""
    message = f"Invalid method for URL ({request.method} {cut(request.url.path)}): it takes {allowed}"
    origin = request.headers.get("origin")
    if request.method == "OPTIONS" and origin and "access-control-request-method" in request.headers:
        message = (
            f"a web page from {shown(origin)} may not call this server: its browser's CORS preflight is refused "
            "unless the server is started with --allowed-origins naming that origin"
        )
    return APIError(405, message, headers=headers)


def add_handlers(app: FastAPI, routes: Sequence[tuple[str, str]] = ()) -> None:
    """Every error the app can meet answers in OpenAI's shape; a bug is a logged 500, never a traceback.

    ``routes``: the app's (method, path) pairs, for a 404 to name the one a mistyped URL meant."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError) -> JSONResponse:
        return e.response()

    @app.exception_handler(NpgptError)
    async def _user_error(request: Request, e: NpgptError) -> JSONResponse:
        return bad_request(e).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        empty = request.headers.get("content-length") == "0"
        return validation_error(e.errors(), request.headers.get("content-type", ""), empty).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        if isinstance(e.__cause__, UnicodeDecodeError):  # FastAPI's "There was an error parsing the body"
            bad = e.__cause__  # UTF-8's error: a body in another encoding is refused before (a NotJSON)
            where = f"byte {bad.start} is {bad.object[bad.start]:#04x}"
            return APIError(
                400, f"the body is not UTF-8 ({where}); send JSON encoded as UTF-8", code="invalid_json"
            ).response()
        if isinstance(e.__cause__, NotJSON):  # a key twice, NaN, UTF-16
            return APIError(400, str(e.__cause__), code="invalid_json").response()
        if isinstance(e.__cause__, RecursionError):  # json.loads gave up, deeper still than MAX_JSON_DEPTH
            return APIError(400, too_deep().message(), code="invalid_json").response()
        if isinstance(e.__cause__, ValueError) and "integer string conversion" in str(e.__cause__):
            # json.loads refuses more digits than sys.get_int_max_str_digits(): int() of them is quadratic
            return APIError(
                400,
                f"the JSON body holds an integer of more than {sys.get_int_max_str_digits()} digits, which is no "
                "value any field takes",
                code="invalid_json",
            ).response()
        if e.status_code == 404 and e.detail == "Not Found":  # no route matched (a handler's 404 is an APIError)
            return unknown_url(request.method, request.url.path, routes).response()
        if e.status_code == 405:  # Starlette's Allow header names the method; say it too, in OpenAI's words
            return wrong_method(request, (e.headers or {}).get("Allow", ""), e.headers).response()
        kind = "invalid_request_error" if e.status_code < 500 else "server_error"
        return APIError(e.status_code, str(e.detail), kind, headers=e.headers).response()

    @app.exception_handler(ClientDisconnect)
    async def _client_left(request: Request, e: ClientDisconnect) -> JSONResponse:
        # the client hung up (or its body was too slow: :mod:`.connections`) while its request's body was read: no
        # bug, and no one to answer; 499 (nginx's "client closed request") is what /metrics counts
        return APIError(
            499, "the client closed the connection before its request's body arrived", code="client_closed_request"
        ).response()

    @app.exception_handler(ShuttingDown)
    async def _shutting_down(request: Request, e: ShuttingDown) -> JSONResponse:
        return APIError(503, str(e), "server_error", code="server_shutting_down").response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return APIError(500, f"internal error: {reason(e)}", "server_error").response()
