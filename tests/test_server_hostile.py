"""The server facing a hostile or careless client: what one request can make it do is bounded, and
each such request ends in a clear 4xx naming what to change, never a 5xx, a hang or unbounded work."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from npgpt.api import GPT2
from npgpt.config import GPT2Config
from npgpt.params import init_params
from npgpt.server import create_app
from npgpt.server.protocol import MAX_JSON_DEPTH

TINY = GPT2Config(n_ctx=128, n_embd=32, n_head=2, n_layer=2)
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def app():
    return create_app({"tiny": GPT2(TINY, init_params(TINY, seed=0))})


@pytest.fixture(scope="module")
def http(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, 600, 5000])  # arrays, inside the body's object
@pytest.mark.parametrize(
    "path, head",
    [
        ("/v1/completions", '{"prompt": "a", "metadata": '),  # a field npgpt ignores
        ("/v1/completions", '{"prompt": '),
        ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "a"}], "tools": '),
        ("/v1/next_tokens", '{"prompt": "a", "k": '),
    ],
)
def test_a_body_nested_too_deep_is_a_400_saying_so(http, path, head, depth):
    """Nesting a few hundred deep was a 500 RecursionError (in the walk that fixes lone surrogates);
    past Python's parser's limit, FastAPI's "There was an error parsing the body", which names nothing."""
    body = head + "[" * depth + "]" * depth + "}"
    r = http.post(path, content=body, headers=JSON)
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "invalid_json", r.text
    assert error["message"] == (
        f"the JSON body nests arrays and objects more than {MAX_JSON_DEPTH} deep; no request needs that many"
    )
    ok = head + "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1) + "}"  # at the limit: read as usual
    assert http.post(path, content=ok, headers=JSON).json().get("error", {}).get("code") != "invalid_json"


@pytest.mark.parametrize("field", ["n", "seed", "max_tokens", "prompt"])
def test_a_number_of_thousands_of_digits_is_a_400_naming_it(http, field):
    """Python's JSON parser refuses an integer over 4300 digits (a guard against quadratic int()), which got
    FastAPI's "There was an error parsing the body", naming nothing."""
    body = '{"prompt": "a", "' + field + '": ' + "9" * 5000 + "}"
    r = http.post("/v1/completions", content=body, headers=JSON)
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "invalid_json", r.text
    assert error["message"] == (
        "the JSON body holds an integer of more than 4300 digits, which is no value any field takes"
    )


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("GET", "/v1/completions", "POST"),
        ("PUT", "/v1/models", "GET"),
        ("DELETE", "/health", "GET"),
        ("POST", "/", "GET"),
    ],
)
def test_a_wrong_method_is_a_405_naming_the_one_the_url_takes(http, method, path, allowed):
    """It said only "Method Not Allowed" (the Allow header named the method, which few read)."""
    r = http.request(method, path)
    assert r.status_code == 405 and r.headers["allow"] == allowed
    assert r.json()["error"]["message"] == f"Invalid method for URL ({method} {path}): it takes {allowed}"


def test_a_preflight_the_server_does_not_allow_says_how_to_allow_it(http):
    """A browser page on another origin asks with OPTIONS first; without --allowed-origins naming it the 405
    says so, rather than only that OPTIONS is not allowed."""
    preflight = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
    r = http.options("/v1/completions", headers=preflight)
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
    message = r.json()["error"]["message"]
    assert "'http://localhost:3000'" in message and "--allowed-origins" in message, message
