"""The server facing a hostile or careless client: what one request can make it do is bounded, and
each such request ends in a clear 4xx naming what to change, never a 5xx, a hang or unbounded work."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient
from test_playground import browser  # noqa: F401 - the headless Chromium fixture

from npgpt.api import GPT2
from npgpt.config import GPT2Config
from npgpt.params import init_params
from npgpt.server import background_server, create_app
from npgpt.server.body import MAX_JSON_DEPTH

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


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/completions", '{"prompt": "a", "max_tokens": 1, "temperature": %s}'),
        ("/v1/completions", '{"prompt": "a", "max_tokens": 1, "logit_bias": {"5": %s}}'),
        ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "a"}], "max_tokens": 1, "top_p": %s}'),
        # a field npgpt ignores: the tool's JSON schema went through unread, a 200
        (
            "/v1/chat/completions",
            '{"messages": [{"role": "user", "content": "a"}], "max_tokens": 1, '
            '"tools": [{"type": "function", "function": {"name": "f", "parameters": {"maximum": %s}}}]}',
        ),
        ("/v1/next_tokens", '{"prompt": "a", "k": %s}'),
        ("/v1/internals", '{"prompt": "a", "layer": %s}'),
    ],
)
def test_nan_and_infinity_literals_are_no_json_and_a_400_saying_so(http, path, body, constant):
    """Python's JSON parser reads NaN, Infinity and -Infinity as floats; they are no JSON (RFC 8259), and OpenAI
    answers such a body as invalid JSON. They reached the fields' own checks ("temperature ... got nan") or, in a
    field npgpt does not read, a 200."""
    r = http.post(path, content=body % constant, headers=JSON)
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "invalid_json", r.text
    assert error["message"] == (
        f"the JSON body holds {constant}, which is not JSON (RFC 8259 has no NaN or infinity); send a finite number"
    )
    assert http.post(path, content=body % '"NaN"' if "tools" in body else body % "1", headers=JSON).status_code == 200


@pytest.mark.parametrize(
    "path, body, key",
    [
        ("/v1/completions", '{"prompt": "a", "max_tokens": 2, "max_tokens": 3}', "max_tokens"),
        ("/v1/chat/completions", '{"messages": [{"role": "user", "role": "system", "content": "a"}]}', "role"),
        ("/v1/next_tokens", '{"prompt": "a", "k": 2, "k": 3}', "k"),
        ("/v1/internals", '{"prompt": "a", "layer": 0, "layer": 1}', "layer"),
    ],
)
def test_a_key_given_twice_is_a_400_naming_it(http, path, body, key):
    """Python's JSON parser kept the last of the two values silently (3 tokens were generated for
    ``max_tokens: 2, max_tokens: 3``), where other parsers, and a proxy that checked the body, read the first."""
    r = http.post(path, content=body, headers=JSON)
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "invalid_json", r.text
    assert error["message"] == (
        f"the JSON body gives the key '{key}' twice in one object, and parsers differ on which one counts; "
        "send each field once"
    )
    once = body.replace(f', "{key}": 3', "").replace(', "role": "system"', "").replace(', "layer": 1', "")
    assert http.post(path, content=once, headers=JSON).status_code == 200


def test_a_gzip_or_deflate_body_is_read_and_other_codings_are_a_415(app, http):
    """A body sent with Content-Encoding: gzip was read as it came, and refused as "not UTF-8 (byte 1 is 0x8b)",
    naming a byte of the gzip header rather than the header the server did not honour; one with ``br`` that the
    client had not compressed was answered as if it were plain."""
    import gzip
    import zlib

    body = json.dumps({"prompt": "a", "max_tokens": 2, "seed": 1}).encode()
    plain = http.post("/v1/completions", content=body, headers=JSON).json()["choices"]
    for coding, data in [
        ("gzip", gzip.compress(body)),
        ("x-gzip", gzip.compress(body)),
        ("Deflate", zlib.compress(body)),
    ]:
        r = http.post("/v1/completions", content=data, headers={**JSON, "Content-Encoding": coding})
        assert r.status_code == 200 and r.json()["choices"] == plain, (coding, r.text)
    r = http.post("/v1/completions", content=body, headers={**JSON, "Content-Encoding": "br"})
    assert r.status_code == 415 and r.json()["error"]["message"] == (
        "the request body's Content-Encoding 'br' is not supported: send it uncompressed, or compressed with gzip "
        "or deflate"
    )
    for data in (body, gzip.compress(body)[:-8]):  # not gzip at all; cut short
        r = http.post("/v1/completions", content=data, headers={**JSON, "Content-Encoding": "gzip"})
        error = r.json()["error"]
        assert r.status_code == 400 and error["message"].startswith("the request body is not valid gzip data"), r.text
    # a small body that decodes to more than the body limit is refused as it grows, not decoded whole
    with TestClient(create_app({"tiny": GPT2(TINY, init_params(TINY, seed=0))}, max_body_bytes=10_000)) as small:
        bomb = gzip.compress(b'{"prompt": "' + b"a" * 50_000_000 + b'"}')
        r = small.post("/v1/completions", content=bomb, headers={**JSON, "Content-Encoding": "gzip"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text
        # 5 KB sent, under the limit: the count that is over is the decompressed one, and it is named (it was "the
        # request body is over the limit of 10000 bytes", of a body the client knew to be half that)
        small_bomb = gzip.compress(b'{"prompt": "' + b"a" * 5_000_000 + b'"}')
        assert len(small_bomb) < 10_000
        r = small.post("/v1/completions", content=small_bomb, headers={**JSON, "Content-Encoding": "gzip"})
        assert r.status_code == 413 and r.json()["error"]["message"] == (
            "the request body decompresses (gzip) to over the limit of 10000 bytes; send less"
        ), r.text


def test_content_encoding_is_a_list_of_codings_undone_last_first(http):
    """Content-Encoding is a list (RFC 9110 8.4): the codings in the order applied, on one header line or
    several. ``gzip, identity`` (identity is no coding) was a 415 "Content-Encoding 'gzip, identity' is not
    supported", and so was a body gzipped twice (``gzip, gzip``) or deflated then gzipped; each is now undone,
    last first, and only a coding the server cannot undo is refused, by name, with ``Accept-Encoding`` listing
    those it can (as RFC 9110 asks of a 415)."""
    import gzip
    import zlib

    body = json.dumps({"prompt": "a", "max_tokens": 2, "seed": 1}).encode()
    plain = http.post("/v1/completions", content=body, headers=JSON).json()["choices"]
    cases = [
        ("gzip, identity", gzip.compress(body)),
        ("identity, gzip", gzip.compress(body)),
        ("gzip,", gzip.compress(body)),
        (", , identity", body),
        ("gzip, gzip", gzip.compress(gzip.compress(body))),
        ("deflate, GZIP", gzip.compress(zlib.compress(body))),
        ("gzip, deflate", zlib.compress(gzip.compress(body))),
        (["gzip", "deflate"], zlib.compress(gzip.compress(body))),  # two header lines: one list
    ]
    for coding, data in cases:
        headers = [("Content-Type", "application/json")]
        headers += [("Content-Encoding", c) for c in ([coding] if isinstance(coding, str) else coding)]
        r = http.post("/v1/completions", content=data, headers=headers)
        assert r.status_code == 200 and r.json()["choices"] == plain, (coding, r.text)
    r = http.post("/v1/completions", content=gzip.compress(body), headers={**JSON, "Content-Encoding": "gzip, br"})
    assert r.status_code == 415 and r.headers["accept-encoding"] == "gzip, deflate", r.text
    assert r.json()["error"]["message"] == (
        "the request body's Content-Encoding 'br' (in Content-Encoding 'gzip, br') is not supported: send it "
        "uncompressed, or compressed with gzip or deflate"
    )
    # the listed order is the order applied: gzip then deflate is not deflate then gzip
    wrong = gzip.compress(zlib.compress(body))
    r = http.post("/v1/completions", content=wrong, headers={**JSON, "Content-Encoding": "gzip, deflate"})
    assert r.status_code == 400 and " is not valid " in r.json()["error"]["message"], r.text
    r = http.post("/v1/completions", content=gzip.compress(body), headers={**JSON, "Content-Encoding": "gzip, gzip"})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith(
        "the request body (its gzip undone) is not valid gzip data"
    ), r.text
    # every layer is bounded by the body limit: a bomb inside a small outer coding is refused as it grows
    with TestClient(create_app({"tiny": GPT2(TINY, init_params(TINY, seed=0))}, max_body_bytes=10_000)) as small:
        bomb = gzip.compress(gzip.compress(b'{"prompt": "' + b"a" * 50_000_000 + b'"}'))
        r = small.post("/v1/completions", content=bomb, headers={**JSON, "Content-Encoding": "gzip, gzip"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text


def test_a_request_without_a_body_is_answered_whatever_its_content_encoding(http):
    """GET /v1/models or /health sent with ``Content-Encoding: br`` (a client that sets the header on every
    request) was a 415 "the request body's Content-Encoding 'br' is not supported", though there was no body to
    decode; a request with no body (RFC 9112 6.3: no Transfer-Encoding, no Content-Length but 0) is now answered as
    if the header were not there."""
    for coding in ("br", "zstd, gzip"):
        for path in ("/v1/models", "/health"):
            assert http.get(path, headers={"Content-Encoding": coding}).status_code == 200, (coding, path)
        r = http.post("/v1/completions", headers={**JSON, "Content-Encoding": coding, "Content-Length": "0"})
        assert r.status_code == 400 and r.json()["error"]["message"].startswith("the request has no body"), r.text
        r = http.post("/v1/completions", content=b"{}", headers={**JSON, "Content-Encoding": coding})
        assert r.status_code == 415, r.text  # a body in a coding the server cannot undo is still refused


def test_an_endpoints_url_with_a_trailing_slash_is_answered_not_redirected(http):
    """POST /v1/completions/ was a 307 to the URL without the slash, with an empty body: curl without -L printed
    nothing, and a client that does not follow redirects (httpx's default) had no JSON to read. Each endpoint
    answers at its URL with a trailing slash as at its own, as /v1/models/ already did."""
    completion = {"prompt": "a", "max_tokens": 2, "seed": 1}
    chat = {"messages": [{"role": "user", "content": "a"}], "max_tokens": 2, "seed": 1}
    for path, body in [
        ("/v1/completions", completion),
        ("/v1/chat/completions", chat),
        ("/tokenize", {"prompt": "a"}),
        ("/v1/next_tokens", {"prompt": "a"}),
    ]:
        want = http.post(path, json=body).json()
        for slashed in (path + "/", path + "//"):
            r = http.post(slashed, json=body, follow_redirects=False)
            assert r.status_code == 200, (slashed, r.status_code, r.text)
            assert r.json().get("choices", r.json().get("tokens")) == want.get("choices", want.get("tokens"))
    for path in ("/health/", "/metrics/", "/v1/models/"):
        assert http.get(path, follow_redirects=False).status_code == 200, path


def test_a_raw_deflate_body_is_read_as_browsers_and_curl_read_one(http):
    """``Content-Encoding: deflate`` is zlib-wrapped by RFC 9110, but some clients send raw deflate data, which
    browsers, curl and urllib3 read (falling back when the zlib header is not there): it was a 400 "not valid
    deflate data". It is now read, in one piece or in many, and bounded by the body limit as gzip is."""
    import zlib

    def raw(data: bytes, level: int = 6) -> bytes:
        c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        return c.compress(data) + c.flush()

    body = json.dumps({"prompt": "a " * 60, "max_tokens": 2, "seed": 1}).encode()
    plain = http.post("/v1/completions", content=body, headers=JSON).json()["choices"]
    for level in (0, 1, 9):  # stored, fixed and dynamic blocks
        data = raw(body, level)
        for content in (data, (data[i : i + 7] for i in range(0, len(data), 7))):  # whole, and in 7-byte pieces
            r = http.post("/v1/completions", content=content, headers={**JSON, "Content-Encoding": "deflate"})
            assert r.status_code == 200 and r.json()["choices"] == plain, (level, r.text)
    for bad in (raw(body)[:-3], b"\xff\xff\xff\xff"):  # cut short; neither zlib nor raw deflate
        r = http.post("/v1/completions", content=bad, headers={**JSON, "Content-Encoding": "deflate"})
        error = r.json()["error"]
        assert r.status_code == 400 and error["message"].startswith("the request body is not valid deflate"), r.text
    with TestClient(create_app({"tiny": GPT2(TINY, init_params(TINY, seed=0))}, max_body_bytes=10_000)) as small:
        bomb = raw(b'{"prompt": "' + b"a" * 50_000_000 + b'"}')
        r = small.post("/v1/completions", content=bomb, headers={**JSON, "Content-Encoding": "deflate"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text


def test_a_compressed_body_is_read_to_its_end_and_nothing_after_it_is_dropped(http):
    """A gzip body of two members (RFC 1952 allows several, one after another, as a client compressing piece by
    piece sends; gzip -d and Python's gzip read them all) was read to the end of its first only, and refused
    as malformed JSON, naming no cause; bytes after the compressed data (``gzip.compress(body) + b"junk"``) were
    dropped without a word. Now every member is read, zero bytes after the last are skipped as gzip -d skips
    them, and anything else after the end is a 400 saying so."""
    import gzip
    import zlib

    body = json.dumps({"prompt": "a b c", "max_tokens": 2, "seed": 1}).encode()
    plain = http.post("/v1/completions", content=body, headers=JSON).json()["choices"]

    def post(data, coding: str = "gzip", pieces: int = 1):
        step = -(-len(data) // pieces)
        content = data if pieces == 1 else (data[i : i + step] for i in range(0, len(data), step))
        return http.post("/v1/completions", content=content, headers={**JSON, "Content-Encoding": coding})

    members = gzip.compress(body[:10]) + gzip.compress(body[10:20]) + gzip.compress(body[20:])
    for data in (members, gzip.compress(body) + b"\0" * 9, members + b"\0" * 3):
        for pieces in (1, 5, len(data)):  # whole, in pieces, a byte at a time
            r = post(data, pieces=pieces)
            assert r.status_code == 200 and r.json()["choices"] == plain, (pieces, r.text)
    for data, coding in [
        (gzip.compress(body) + b"junk", "gzip"),
        (gzip.compress(body) + b"\0\0x", "gzip"),
        (zlib.compress(body) + b"junk", "deflate"),
        (zlib.compress(body) + b"\0", "deflate"),  # zlib data has no members, nor padding
    ]:
        for pieces in (1, len(data)):
            error = post(data, coding, pieces).json()["error"]
            assert error["message"].startswith(f"the request body is not valid {coding} data"), error
            assert "after the" in error["message"] and error["code"] == "invalid_json", error
    cut = members[:-5]  # the last member cut short
    assert "ends before the compressed data does" in post(cut).json()["error"]["message"]


@pytest.mark.parametrize(
    "path, body, message",
    [
        (
            "/v1/completions",
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            "Missing required parameter: 'prompt'. This body has 'messages', which is a chat request's: send it to "
            "POST /v1/chat/completions.",
        ),
        (
            "/v1/chat/completions",
            {"prompt": "hi", "max_tokens": 2},
            "Missing required parameter: 'messages'. This body has 'prompt', which is a text completion's: send it "
            "to POST /v1/completions.",
        ),
        ("/v1/completions", {"max_tokens": 2}, "Missing required parameter: 'prompt'."),
    ],
)
def test_a_body_sent_to_the_other_endpoint_says_where_it_belongs(http, path, body, message):
    """A chat body posted to /v1/completions (a client's base URL or route mixed up) got pydantic's
    "prompt: Field required", which says neither what is wrong with the body nor where it should go."""
    r = http.post(path, json=body)
    assert r.status_code == 400 and r.json()["error"]["message"] == message, r.text


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


def test_the_playground_never_inserts_server_text_as_html(http):
    """Model output, token strings, model names and error messages reach the page; a prompt or a model
    name holding ``<img src=x onerror=...>`` must show as text. So the page's script writes text only
    (textContent, Option, attributes): HTML sinks may only be emptied, never fed."""
    import re

    page = http.get("/").text
    script = page[page.index("<script>") : page.rindex("</script>")]
    sinks = re.findall(r"\.(?:innerHTML|outerHTML)\s*\+?=\s*([^;]*);", script)
    assert sinks and all(value.strip() in ('""', "''") for value in sinks), sinks
    for banned in ("insertAdjacentHTML", "document.write", "eval(", "new Function", "DOMParser", "srcdoc"):
        assert banned not in script, banned


def test_the_playground_shows_html_in_names_prompts_and_errors_as_text(browser):  # noqa: F811
    """In headless Chromium: a model named with HTML, a prompt holding HTML and ``</script>``, the model's
    output and a server error quoting HTML all show as their text, and none of it runs."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    name = "<img src=x onerror=window.pwned=1>"
    prompt = "</script><img src=x onerror=window.pwned=2><b>bold</b>"
    model = GPT2(TINY, init_params(TINY, seed=0))
    with background_server(create_app({name: model})) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        js = browser.execute_script
        wait.until(lambda d: js("return document.getElementById('model').options.length") == 1)
        assert js("return document.getElementById('model').options[0].textContent") == name
        box = browser.find_element(By.ID, "prompt")
        box.clear()
        box.send_keys(prompt)
        js("const e = document.getElementById('max_tokens'); e.value = 4; e.dispatchEvent(new Event('input'));")
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda d: "done" in js("return document.getElementById('status').textContent"))
        assert js("return document.getElementById('echo').textContent") == prompt
        # an error quoting HTML: a model the server does not have, as if chosen from a stale list
        unknown = "<img src=y onerror=window.pwned=3>"
        js(
            "const o = new Option(arguments[0], arguments[0]); const s = document.getElementById('model');"
            "s.add(o); s.value = arguments[0];",
            unknown,
        )
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda d: js("return document.getElementById('error').textContent"))
        assert repr(unknown) in js("return document.getElementById('error').textContent")
        time.sleep(0.2)  # an onerror would have fired by now
        assert js("return document.querySelectorAll('main img, main b, header img').length") == 0
        assert js("return window.pwned") is None


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/completions", {"prompt": "a", "model": "x" * 500_000}),
        ("/v1/chat/completions", {"messages": [{"role": "r" * 300_000, "content": "a"}]}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "t" * 300_000}]}]}),
        ("/v1/completions", {"prompt": "a", "response_format": {"type": "j" * 300_000}}),
    ],
)
def test_an_error_quotes_a_huge_string_cut_short(http, path, body):
    """An unknown model name, role or part type was quoted whole: a 500 KB name came back as a 500 KB error."""
    r = http.post(path, json=body)
    message = r.json()["error"]["message"]
    assert r.status_code in (400, 404) and len(message) < 400, (r.status_code, message[:300])
    assert "characters)" in message  # how long the cut string was


async def _asgi(app, body: dict, stalled: asyncio.Event | None) -> list[bytes]:
    """POST ``body`` to /v1/completions straight through ASGI, as uvicorn would. ``stalled``: the client reads
    nothing until it is set, so each write of the body waits, as a write to a full socket does."""
    sent: list[bytes] = []
    asked = False

    async def receive() -> dict:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await asyncio.Event().wait()  # the client never leaves
        return {}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body":
            if stalled is not None:
                await stalled.wait()
            sent.append(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/completions",
        "raw_path": b"/v1/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    return sent


def test_streams_nobody_reads_are_bounded_in_all_and_the_others_go_on():
    """Each stream's events waited for its client without a limit in all: many clients that never read held
    a whole completion each (up to --max-request-tokens). Over the server's bound, the stream holding the most
    unread events is ended with an error event its client reads when it reads again; a reading client is not held up."""
    model = GPT2(TINY, init_params(TINY, seed=0))
    app = create_app({"tiny": model}, max_unread_events=100)
    sched = app.state.schedulers["tiny"]
    slow = {"prompt": "a", "max_tokens": 100, "n": 4, "ignore_eos": True, "stream": True}  # 400 events each

    async def main() -> tuple[list[list[bytes]], list[bytes]]:
        gate = asyncio.Event()
        stalled = [asyncio.create_task(_asgi(app, slow, gate)) for _ in range(3)]
        reader = await asyncio.wait_for(_asgi(app, {**slow, "n": 1, "max_tokens": 60}, None), 30)
        while sched.active or sched.queued:  # every stalled completion has been generated (or was ended)
            await asyncio.sleep(0.01)
        gate.set()
        return [await asyncio.wait_for(t, 30) for t in stalled], reader

    try:
        stalled, reader = asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        sched.close()
    events = [e for e in b"".join(reader).decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and '"finish_reason":"length"' in events[-2], events[-3:]
    for sent in stalled:
        last = [e for e in b"".join(sent).decode().split("\n\n") if e][-2:]
        assert last[1] == "data: [DONE]", last
        error = json.loads(last[0].removeprefix("data: "))["error"]
        assert error["code"] == "stream_not_read" and "100" in error["message"], error


def test_a_preflight_cors_refuses_is_a_json_error_naming_what_is_refused():
    """With --allowed-origins, Starlette's CORS middleware answered a refused preflight with a plain-text
    "Disallowed CORS origin" 400, where every other error is OpenAI's JSON; still a 400, and still no
    Access-Control-Allow-Origin for the refused origin."""
    app = create_app({"tiny": GPT2(TINY, init_params(TINY, seed=0))}, allowed_origins=["https://ok.example"])
    with TestClient(app, raise_server_exceptions=False) as c:
        for origin, method, words in [
            ("http://evil.example", "POST", ["'http://evil.example'", "--allowed-origins"]),
            ("https://ok.example", "PUT", ["'PUT'", "GET, POST"]),
        ]:
            r = c.options("/v1/completions", headers={"Origin": origin, "Access-Control-Request-Method": method})
            assert r.status_code == 400 and r.headers["content-type"] == "application/json", r.text
            error = r.json()["error"]
            assert error["code"] == "cors_refused" and all(w in error["message"] for w in words), error
            assert r.headers.get("access-control-allow-origin") == (None if "evil" in origin else origin)
        ok = c.options(
            "/v1/completions", headers={"Origin": "https://ok.example", "Access-Control-Request-Method": "POST"}
        )
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://ok.example"


@pytest.mark.parametrize("bad", [-1, 50257, 2**40])
@pytest.mark.parametrize("scoring", [False, True])
def test_a_prompt_id_that_is_no_token_is_a_400_naming_it_generating_or_scoring(http, bad, scoring):
    """The server's prompt ids went to the tokenizer's decode first ("token id -1 is not in GPT-2's vocabulary",
    without the padded vocabulary's note), its own range check never reached; now the one check the Python API
    uses (npgpt.token_ids.check_token_ids), naming the prompt and the id, for generation and scoring alike."""
    body = {"prompt": [[5, 6], [5, bad]], "max_tokens": 0 if scoring else 2}
    if scoring:
        body |= {"echo": True, "logprobs": 1}
    r = http.post("/v1/completions", json=body)
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "prompt", r.text
    assert error["message"] == f"prompt 1 has token id {bad}, outside the vocabulary [0, 50257)"


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
        (
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": []}]},
            "messages[1].content",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}], "prediction": {"type": "content", "content": []}},
            "prediction.content",
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_content_of_no_parts_is_a_400_in_openais_words(http, body, param, stream):
    """``content: []`` read as an empty message and was answered (200); OpenAI refuses it with this 400."""
    r = http.post("/v1/chat/completions", json=body | {"max_tokens": 1, "stream": stream})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == param, r.text
    assert error["message"] == (
        f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead."
    )
    one_part = json.loads(json.dumps(body).replace("[]", '[{"type": "text", "text": "Hi"}]'))
    assert http.post("/v1/chat/completions", json=one_part | {"max_tokens": 1}).status_code == 200


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_a_service_tier_openai_has_not_is_a_400_naming_the_tiers(http, path):
    """Any string was taken as a service_tier ("premium", "Auto"); OpenAI refuses a tier it has not, and its
    client types the ones it has. Each of those is accepted (and served alike)."""
    from npgpt.server.protocol import SERVICE_TIERS

    body = {"prompt": "a"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "a"}]}
    body |= {"max_tokens": 1}
    for tier in ("premium", "Auto", ""):
        r = http.post(path, json=body | {"service_tier": tier})
        error = r.json()["error"]
        assert r.status_code == 400 and error["param"] == "service_tier", r.text
        assert error["message"] == (
            "service_tier must be one of auto, default, flex, scale, priority, fast (npgpt serves each alike), "
            f"got {tier!r}"
        )
    for tier in (*SERVICE_TIERS, None):
        assert http.post(path, json=body | {"service_tier": tier}).status_code == 200, tier


@pytest.mark.parametrize(
    "setting",
    [
        {"max_batch": 10**8},
        {"max_batch": 0},
        {"max_queue": 10**9},
        {"max_rows": 10**7},
        {"max_request_tokens": 2**24 + 1},
        {"max_request_tokens": 2**24},  # its default logprobs limit, twice it, is within range too
        {"max_request_logprobs": 0},
        {"max_unread_events": 2**40},
        {"max_batch": 4.0},
    ],
)
def test_create_app_refuses_a_setting_outside_its_range_naming_it(setting):
    """create_app took max_batch=10**8 (each request then a 500 for a 3.7 TiB kv cache) and limits so large that
    they never bind; each setting has a range now, and the error names it (npgpt serve writes it as its option)."""
    from npgpt.errors import NpgptError
    from npgpt.server.settings import RANGES

    ((name, value),) = setting.items()
    low, high, _ = RANGES[name]
    model = GPT2(TINY, init_params(TINY, seed=0))
    if isinstance(value, int) and low <= value <= high:
        create_app({"tiny": model}, **setting)
        return
    with pytest.raises(NpgptError, match=rf"^{name} must be a whole number from {low} to {high} \(.*\), got ") as e:
        create_app({"tiny": model}, **setting)
    assert e.value.param == name


@pytest.mark.parametrize("grace", [float("inf"), float("nan"), 1e9, -1])
def test_a_shutdown_grace_outside_its_range_is_refused(app, grace):
    from npgpt.errors import NpgptError

    with pytest.raises(NpgptError, match=r"^shutdown_timeout must be a number of seconds from 0 to 3600 "):
        with background_server(app, shutdown_timeout=grace):
            pass


@pytest.mark.parametrize(
    "path, body, param, words, code",
    [
        (
            "/v1/completions",
            {"prompt": "a", "n": 129},
            "n",
            "integer above maximum value. Expected a value <= 128, but got 129",
            "integer_above_max_value",
        ),
        (
            "/v1/completions",
            {"prompt": "a", "logprobs": -1},
            "logprobs",
            "integer below minimum value. Expected a value >= 0, but got -1",
            "integer_below_min_value",
        ),
        (
            "/v1/completions",
            {"prompt": "a", "seed": 2**64},
            "seed",
            f"integer above maximum value. Expected a value <= {2**63 - 1}, but got {2**64}",
            "integer_above_max_value",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "a"}], "max_completion_tokens": 0},
            "max_completion_tokens",
            "integer below minimum value. Expected a value >= 1, but got 0",
            "integer_below_min_value",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "a"}], "logprobs": True, "top_logprobs": 21},
            "top_logprobs",
            "integer above maximum value. Expected a value <= 20, but got 21",
            "integer_above_max_value",
        ),
        (
            "/v1/next_tokens",
            {"prompt": "a", "k": 0},
            "k",
            "integer below minimum value. Expected a value >= 1, but got 0",
            "integer_below_min_value",
        ),
    ],
)
def test_a_number_out_of_range_is_a_400_in_openais_words(http, path, body, param, words, code):
    """A field's range was refused in pydantic's words ("n: Input should be less than or equal to 128"), which no
    OpenAI client knows; OpenAI's message and code ("Invalid 'n': integer above maximum value. ...") now."""
    r = http.post(path, json=body)
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == param and error["code"] == code, r.text
    assert error["message"] == f"Invalid '{param}': {words} instead."


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("temperature", 3, "decimal above maximum value. Expected a value <= 2, but got 3"),
        ("temperature", 2.5, "decimal above maximum value. Expected a value <= 2, but got 2.5"),
        ("temperature", -1, "decimal below minimum value. Expected a value >= 0, but got -1"),
        ("top_p", 1.5, "decimal above maximum value. Expected a value <= 1, but got 1.5"),
        ("top_p", -0.1, "decimal below minimum value. Expected a value >= 0, but got -0.1"),
        ("presence_penalty", 3, "decimal above maximum value. Expected a value <= 2, but got 3"),
        ("frequency_penalty", -2.5, "decimal below minimum value. Expected a value >= -2, but got -2.5"),
        ("min_p", 2, "decimal above maximum value. Expected a value <= 1, but got 2"),
        ("best_of", 0, "integer below minimum value. Expected a value >= 1, but got 0"),
        ("top_k", -2, "integer below minimum value. Expected a value >= -1, but got -2"),
        ("repetition_penalty", 0, "decimal below minimum value. Expected a value > 0, but got 0"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_a_sampling_option_past_openais_range_is_a_400_in_its_words(http, path, field, value, words):
    """temperature 3 was taken (the Python API's temperature has no maximum; OpenAI's is 2), and the other
    sampling options' ranges were refused in npgpt's words, not OpenAI's ("Invalid 'temperature': decimal above
    maximum value. ..."). A decimal field is a decimal whatever the number sent: 3 is "decimal", not "integer"."""
    body = {"prompt": "a"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "a"}]}
    r = http.post(path, json=body | {"max_tokens": 1, field: value})
    error = r.json()["error"]
    kind, side = words.split()[:2]
    code = f"{kind}_{side}_{'max' if side == 'above' else 'min'}_value"
    assert r.status_code == 400 and error["param"] == field and error["code"] == code, r.text
    assert error["message"] == f"Invalid '{field}': {words} instead."
    edge = {"temperature": 2, "top_p": 1, "presence_penalty": 2, "frequency_penalty": -2, "min_p": 1, "best_of": 1}
    edge |= {"top_k": -1, "repetition_penalty": 1e-9}
    assert http.post(path, json=body | {"max_tokens": 1, field: edge[field]}).status_code == 200  # the bound itself


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_metadata_past_openais_limits_is_a_400_in_its_words(http, path):
    """metadata is accepted and ignored, but typed as OpenAI types it: at most 16 pairs, keys of at most 64
    characters, values of at most 512. 100 pairs or a value of a megabyte were taken."""
    body = {"prompt": "a"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "a"}]}
    body |= {"max_tokens": 1}
    cases = [
        (
            {str(i): "v" for i in range(17)},
            "metadata",
            "Invalid 'metadata': too many properties. Expected an object with at most 16 properties, but got an "
            "object with 17 properties instead.",
        ),
        (
            {"k" * 65: "v"},
            "metadata",
            f"Invalid 'metadata' key '{'k' * 65}': string too long. Expected a string with maximum length 64, but got "
            "a string with length 65 instead.",
        ),
        (
            {"k": "v" * 513},
            "metadata.k",
            "Invalid 'metadata.k': string too long. Expected a string with maximum length 512, but got a string with "
            "length 513 instead.",
        ),
    ]
    for metadata, param, message in cases:
        r = http.post(path, json=body | {"metadata": metadata})
        error = r.json()["error"]
        assert r.status_code == 400 and error["param"] == param and error["message"] == message, r.text
    at_limits = {f"{i:064d}": "v" * 512 for i in range(16)}
    assert http.post(path, json=body | {"metadata": at_limits}).status_code == 200


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("field", ["user", "safety_identifier"])
def test_an_end_user_identifier_past_openais_64_characters_is_a_400_in_its_words(http, path, field):
    """user (accepted and ignored) took 100,000 characters; OpenAI's limit is 64, its 400 "Invalid 'user': string
    too long. ...", code string_above_max_length."""
    body = {"prompt": "a"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "a"}]}
    body |= {"max_tokens": 1}
    for length in (65, 100_000):
        r = http.post(path, json=body | {field: "u" * length})
        error = r.json()["error"]
        assert r.status_code == 400 and error["param"] == field and error["code"] == "string_above_max_length"
        assert error["message"] == (
            f"Invalid '{field}': string too long. Expected a string with maximum length 64, but got a string with "
            f"length {length} instead."
        )
    assert http.post(path, json=body | {field: "u" * 64}).status_code == 200


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_a_prompt_cache_key_is_taken_at_any_length_as_vllm_takes_it(http, path):
    """prompt_cache_key (accepted and ignored) was capped at OpenAI's 64 characters, so an agent that writes its
    session id there (``paperclip:company:<uuid>:agent:<uuid>``, 97 characters), as it may for vLLM, which takes
    the field at any length, got a 400 "string too long" for a hint npgpt never reads. Any string is taken now;
    its type is still checked."""
    body = {"prompt": "a"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "a"}]}
    body |= {"max_tokens": 1}
    session = f"paperclip:company:{'0' * 36}:agent:{'1' * 36}"
    for key in (session, "k" * 65, "k" * 10_000):
        r = http.post(path, json=body | {"prompt_cache_key": key})
        assert r.status_code == 200, r.text
    r = http.post(path, json=body | {"prompt_cache_key": 5})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt_cache_key", r.text


@pytest.mark.parametrize(
    "extra, param, message",
    [
        # read as audio: "audio output is not supported", though no audio was asked for
        ({"modalities": ["foo"]}, "modalities[0]", "modalities[0] must be one of text, audio, got 'foo'"),
        ({"tools": [{"type": "foo"}]}, "tools[0].type", "tools[0].type must be one of function, custom, got 'foo'"),
        (
            {"prediction": {"type": "foo", "content": "x"}},
            "prediction.type",
            "prediction.type must be one of content, got 'foo'",
        ),
        ({"response_format": {}}, "response_format.type", "Missing required parameter: 'response_format.type'."),
        # a custom tool without its object (or its name) was accepted, where a function tool's is required
        ({"tools": [{"type": "custom"}]}, "tools[0].custom", "Missing required parameter: 'tools[0].custom'."),
        (
            {"tools": [{"type": "custom", "custom": {}}]},
            "tools[0].custom.name",
            "Missing required parameter: 'tools[0].custom.name'.",
        ),
        ({"tools": [{"type": "function"}]}, "tools[0].function", "Missing required parameter: 'tools[0].function'."),
        (
            {"tools": [{"type": "function", "function": {"name": "f" * 65}}]},
            "tools[0].function.name",
            "Invalid 'tools[0].function.name': string too long. Expected a string with maximum length 64, but got a "
            "string with length 65 instead.",
        ),
    ],
)
def test_a_value_openai_has_not_in_a_chat_field_is_a_400_naming_the_values(http, extra, param, message):
    """modalities, tools[].type and prediction.type took any string (200s, or a message about audio for
    modalities ["foo"]), and response_format {} was read as text; OpenAI refuses each, as its client's types do."""
    body = {"messages": [{"role": "user", "content": "a"}], "max_tokens": 1}
    r = http.post("/v1/chat/completions", json=body | extra)
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == param and error["message"] == message, r.text


@pytest.mark.parametrize(
    "method, path, headers, body, echoed",
    [
        ("POST", "/v1/" + "x" * 10_000, JSON, b"{}", "x" * 96),  # a URL no route serves (404; httpx sends 64 kB)
        ("GET", "/v1/completions", {"Content-Type": "text/plain; a=" + "x" * 100_000}, None, None),  # 405
        ("POST", "/v1/completions", {"Content-Type": "text/plain; a=" + "x" * 100_000}, b"{}", "text/plain; a=xx"),
        (
            "OPTIONS",
            "/v1/completions",
            {"Origin": "http://" + "x" * 100_000, "Access-Control-Request-Method": "POST"},
            None,
            "'http://xx",
        ),
        ("POST", "/v1/completions", JSON, json.dumps({"prompt": "a", "metadata": {"k" * 100_000: 5}}), "'kkk"),
    ],
)
def test_an_error_echoes_at_most_a_few_hundred_characters_of_what_was_sent(http, method, path, headers, body, echoed):
    """A Content-Type header of 100,000 characters was echoed whole in the 400 that names it; every echo of the
    client's input in an error (a URL, a header, a string field, a key) is cut to its first 100 characters and its
    length, by one helper (npgpt.errors.cut and shown)."""
    r = http.request(method, path, headers=headers, content=body)
    error = r.json()["error"]
    assert 400 <= r.status_code < 500 and len(error["message"]) < 600 and len(error["param"] or "") < 200, r.text[:700]
    if echoed:
        assert echoed in error["message"] and " characters)" in error["message"], error["message"]


@pytest.mark.parametrize("key", ["user-id", "a[0]", "str", "k" * 64])
def test_a_metadata_value_of_the_wrong_type_is_named_by_its_key(http, key):
    """A metadata key holding "-" or "[" (``user-id``), or one spelling a type's name (``str``), was dropped from
    the error's param and message, taken for pydantic's union tags: "Invalid type for 'metadata'"."""
    r = http.post("/v1/completions", json={"prompt": "a", "max_tokens": 1, "metadata": {key: 5}})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == f"metadata.{key}", r.text
    assert error["message"] == f"Invalid type for 'metadata.{key}': expected a string, but got an integer instead."


def test_a_max_tokens_past_the_context_is_told_the_context_not_the_request_limit(http):
    """max_tokens 10**9 on a 128-token model was told "over the server's limit of 131072 per request
    (--max-request-tokens); send max_tokens of at most 131071", a value the context refuses next; and with n > 1,
    a prompt over the context was named by its row ("prompt 3" of 2 prompts). The context is checked first, each
    prompt by its own index, as OpenAI answers (context_length_exceeded)."""
    r = http.post("/v1/completions", json={"prompt": "a", "max_tokens": 10**9})
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "context_length_exceeded" and error["param"] == "max_tokens"
    assert "context of 128" in error["message"] and "max-request-tokens" not in error["message"], error
    long = "a " * 200
    r = http.post("/v1/completions", json={"prompt": ["a", long], "n": 3, "max_tokens": 1})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "prompt" and error["message"].startswith("prompt 1 has"), error


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("bias, kind", [([], "an array"), ("", "a string"), (0, "an integer"), (False, "a boolean")])
def test_a_logit_bias_that_is_no_object_is_a_400_even_when_empty(http, path, bias, kind):
    """logit_bias [], "", 0 or false was read as no bias (200), being falsy; [1] was refused. OpenAI refuses any
    logit_bias that is not an object, in its words."""
    body = {"prompt": "a"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "a"}]}
    r = http.post(path, json=body | {"max_tokens": 1, "logit_bias": bias})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "logit_bias", r.text
    assert error["message"] == f"Invalid type for 'logit_bias': expected an object, but got {kind} instead."
    assert http.post(path, json=body | {"max_tokens": 1, "logit_bias": {}}).status_code == 200


def test_an_empty_string_where_text_is_needed_is_a_400_in_openais_words(http):
    """next_tokens' prompt "" was refused in pydantic's words ("prompt: String should have at least 1 character")."""
    r = http.post("/v1/next_tokens", json={"prompt": ""})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "prompt" and error["code"] == "empty_string", r.text
    assert error["message"] == (
        "Invalid 'prompt': empty string. Expected a string with minimum length 1, but got an empty string instead."
    )


def test_best_of_under_n_is_refused_as_openai_and_vllm_refuse_it(http):
    """best_of 1 with n 2 (one candidate, two returned) was answered with two completions; OpenAI and vLLM refuse
    a best_of below n."""
    r = http.post("/v1/completions", json={"prompt": "a", "max_tokens": 1, "n": 2, "best_of": 1})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "best_of", r.text
    assert error["message"] == "best_of must be greater than or equal to n, got best_of=1 and n=2; leave best_of out"
    assert http.post("/v1/completions", json={"prompt": "a", "max_tokens": 1, "n": 2, "best_of": 2}).status_code == 200


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_a_logit_bias_on_every_token_is_checked_off_the_event_loop(http, path, monkeypatch):
    """Checking a 50,257-entry logit_bias (each key an id, each bias in range, no token twice) takes ~0.1 s of
    Python, and ran on the event loop, where /health and every other client wait on it (issue 14, kind 7: no
    per-entry work on the event loop). It runs on a thread: no event loop runs where it is checked."""
    import npgpt.sampling

    checked_on_loop = []
    original = npgpt.sampling._checked_bias

    def spy(bias):
        try:
            asyncio.get_running_loop()
            checked_on_loop.append(True)
        except RuntimeError:  # no loop in this thread
            checked_on_loop.append(False)
        return original(bias)

    monkeypatch.setattr(npgpt.sampling, "_checked_bias", spy)
    body = {"prompt": "a"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "a"}]}
    bias = {str(i): 1 for i in range(50257)}
    r = http.post(path, json=body | {"max_tokens": 1, "temperature": 0, "logit_bias": bias})
    assert r.status_code == 200 and checked_on_loop and not any(checked_on_loop), (r.text, checked_on_loop)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions", "/v1/next_tokens"])
def test_a_body_is_parsed_and_validated_off_the_event_loop(http, path, monkeypatch):
    """A 1 MB body (here 30,000 chat messages, or a list of 300,000 ignored values) takes ~0.3-0.9 s of Python to
    parse (each object's keys checked once), walk (depth, lone surrogates) and validate, and FastAPI does all of
    it on the event loop, where /health and every stream waited on it (issue 14, kind 7). Each step runs on a
    thread: no event loop runs where a key is checked or the body is walked; errors are the same."""
    import npgpt.server.body
    import npgpt.server.jsonbody

    on_loop: list[tuple[str, bool]] = []

    def spy(name, original):
        def checked(*args):
            try:
                asyncio.get_running_loop()
                on_loop.append((name, True))
            except RuntimeError:  # no loop in this thread
                on_loop.append((name, False))
            return original(*args)

        return checked

    monkeypatch.setattr(npgpt.server.jsonbody, "_unique_keys", spy("parse", npgpt.server.jsonbody._unique_keys))
    monkeypatch.setattr(npgpt.server.body, "check_depth", spy("walk", npgpt.server.body.check_depth))
    body = {"prompt": "a"} if path != "/v1/chat/completions" else {"messages": [{"role": "user", "content": "a"}]}
    extra = {"max_tokens": 1} if path != "/v1/next_tokens" else {}
    r = http.post(path, json=body | extra | {"x": [{}] * 1000})
    assert r.status_code == 200, r.text
    assert {name for name, _ in on_loop} == {"parse", "walk"}
    assert not any(loop for _, loop in on_loop), on_loop
    # refused as before: FastAPI's own errors, from a body read on a thread
    field = next(iter(body))
    r = http.post(path, json=extra | {field: 5})
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    r = http.post(path, content=b'{"prompt": "a", "prompt": "b"}', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "twice" in r.json()["error"]["message"], r.text
    r = http.post(path, content=b'{"prompt": ', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json", r.text


@pytest.mark.timeout(120)
def test_connections_that_never_send_a_whole_request_are_closed_and_the_server_still_answers(app, monkeypatch):
    """A connection that sent nothing, or a request head a byte at a time (slowloris), was held open for ever:
    a few hundred of them used up the server's file descriptors and every later request, /health included,
    waited unanswered. A request's head must arrive within the head deadline and its body within the request
    deadline (Node.js's headersTimeout and requestTimeout, 60 s and 300 s; shortened here); a connection past
    either is closed, and a whole request is answered as before."""
    import socket
    import urllib.request

    from npgpt.server.connections import DeadlineProtocol

    monkeypatch.setattr(DeadlineProtocol, "head_timeout", 1.0)
    monkeypatch.setattr(DeadlineProtocol, "request_timeout", 2.0)
    with background_server(app) as url:
        host, port = url.removeprefix("http://").split(":")
        silent = [socket.create_connection((host, int(port))) for _ in range(20)]
        head = socket.create_connection((host, int(port)))
        head.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head never ends
        body = socket.create_connection((host, int(port)))
        body.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b'{"pro')
        trickle = socket.create_connection((host, int(port)))
        kept = socket.create_connection((host, int(port)))
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        start = time.monotonic()
        while time.monotonic() - start < 1.6:  # a byte every 0.2 s: each arrives well inside any read timeout
            try:
                trickle.sendall(b"X")
            except OSError:  # closed by the server
                break
            time.sleep(0.2)

        def closed(s: socket.socket, wait: float = 0.5) -> bool:
            s.settimeout(wait)
            try:
                while data := s.recv(65536):
                    if b"HTTP/1.1 200" in data:  # the kept-alive connection's answer
                        return False
                return True
            except TimeoutError:
                return False
            except OSError:
                return True

        assert all(closed(s) for s in [*silent, head, trickle])
        assert not closed(kept)  # a whole request: answered
        assert not closed(body, 0.1)  # its head is in: the body has until the request deadline
        time.sleep(1.0)
        assert closed(body)
        with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
            assert r.status == 200
        for s in [*silent, head, body, trickle, kept]:
            s.close()


def read_all(s) -> bytes:
    """What the server sent on ``s`` until it closed it (within 10 s)."""
    s.settimeout(10)
    out = b""
    while data := s.recv(65536):
        out += data
    return out


@pytest.mark.timeout(120)
def test_a_request_too_slow_to_arrive_gets_a_408_before_its_connection_closes(monkeypatch):
    """A request whose head or body did not arrive by its deadline saw its connection closed without a word (a
    reset to its client, which may retry as if the server had failed); as Node.js and nginx answer, it gets a
    ``408 Request Timeout`` first, in OpenAI's shape, with ``Connection: close``. A connection that sent nothing
    (idle, kept alive) is still closed without a word, as clients expect of an idle connection."""
    import socket

    from npgpt.server.connections import DeadlineProtocol

    monkeypatch.setattr(DeadlineProtocol, "head_timeout", 0.5)
    monkeypatch.setattr(DeadlineProtocol, "request_timeout", 1.0)
    with background_server(create_app({"tiny": GPT2(TINY, init_params(TINY, seed=0))})) as url:
        host, port = url.removeprefix("http://").split(":")
        silent = socket.create_connection((host, int(port)))
        head = socket.create_connection((host, int(port)))
        head.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head never ends
        body = socket.create_connection((host, int(port)))
        body.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b'{"pro')
        kept = socket.create_connection((host, int(port)))  # answered, then idle on a kept-alive connection
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_all(silent) == b""
        for s, what in ((head, "head"), (body, "body")):
            raw = read_all(s)
            status, _, rest = raw.partition(b"\r\n")
            headers, _, payload = rest.partition(b"\r\n\r\n")
            assert status == b"HTTP/1.1 408 Request Timeout", raw
            assert b"connection: close" in headers.lower() and b"application/json" in headers, raw
            error = json.loads(payload)["error"]
            assert error["code"] == "request_timeout" and f"request's {what} did not arrive" in error["message"]
        answer = read_all(kept)
        assert answer.startswith(b"HTTP/1.1 200") and b"408" not in answer, answer
        for s in (silent, head, body, kept):
            s.close()


def test_empty_lines_before_a_request_line_are_skipped_as_rfc_9112_asks():
    """A CRLF sent after a request's body (as some clients end a POST), or before the first request, was answered
    by h11 with a 400 "the request is not valid HTTP/1.1" and the connection closed, so a client's next request on
    it failed; RFC 9112 (2.2) asks a server to ignore empty lines before a request line, as nginx, Node.js and Go
    do. Both requests are answered now; a line that is not empty is still a 400."""
    import socket

    body = json.dumps({"prompt": "a", "max_tokens": 1}).encode()
    post = (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    last = post.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    with background_server(create_app({"tiny": GPT2(TINY, init_params(TINY, seed=0))})) as url:
        host, port = url.removeprefix("http://").split(":")
        for sent in (
            post + b"\r\n" + last,  # one packet
            b"\r\n\r\n\n" + last,  # before the first request
            [post + b"\r\n", b"\r\n" + last],  # the CRLF, then the next request, apart
        ):
            s = socket.create_connection((host, int(port)))
            for piece in [sent] if isinstance(sent, bytes) else sent:
                s.sendall(piece)
                time.sleep(0.2)
            raw = read_all(s)
            s.close()
            assert raw.count(b"HTTP/1.1 200 OK") == raw.count(b"HTTP/1.1 ") == (1 if sent[:1] == b"\r" else 2), raw
        s = socket.create_connection((host, int(port)))
        s.sendall(b"\r\nnot a request\r\n\r\n")
        assert read_all(s).startswith(b"HTTP/1.1 400 Bad Request")
        s.close()


def test_a_request_line_naming_the_whole_url_is_routed_by_its_path():
    """``POST http://host:port/v1/completions HTTP/1.1`` (RFC 9112's absolute-form, which a server must accept) was
    "Unknown request URL: POST /http://host:port/v1/completions" under uvicorn's h11 protocol; it is routed by its
    path, behind the API key as any request (the key is checked on that path, never skipped)."""
    import socket

    body = json.dumps({"prompt": "a", "max_tokens": 1}).encode()

    def post(url: str, target: bytes, key: bytes = b"") -> bytes:
        host, port = url.removeprefix("http://").split(":")
        head = b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        head += b"Authorization: Bearer " + key + b"\r\n" if key else b""
        with socket.create_connection((host, int(port))) as s:
            s.sendall(head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            return read_all(s)

    model = GPT2(TINY, init_params(TINY, seed=0))
    with background_server(create_app({"tiny": model})) as url:
        for target in (url + "/v1/completions", url + "/v1/completions?x=1", "HTTP://x/v1/completions/"):
            answer = post(url, target.encode())
            assert answer.startswith(b"HTTP/1.1 200"), answer
            assert b'"text_completion"' in answer, answer
    with background_server(create_app({"tiny": model}, api_key="k")) as url:
        assert post(url, (url + "/v1/completions").encode()).startswith(b"HTTP/1.1 401"), "the key was skipped"
        assert post(url, (url + "/v1/completions").encode(), b"k").startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    "head, says",
    [
        (b"POST /v1/completions HTTP/1.1\r\n", "it has no Host header"),
        (b"POST /v1/completions HTTP/1.1\r\nHost: a\r\nHost: b\r\n", "more than one Host header"),
        (
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n",
            "Transfer-Encoding is not chunked",
        ),
        (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n", "Content-Length is not a whole"),
        (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n", "disagree"),
    ],
    ids=["no Host", "two Hosts", "gzip transfer coding", "bad length", "two lengths"],
)
def test_a_request_invalid_http_is_told_what_is_wrong_with_it(head, says):
    """A request written by hand without its Host header (printf into nc), one with a Transfer-Encoding other than
    chunked, or a Content-Length that is no number, was told "the request is not valid HTTP/1.1 (a malformed request
    line or header, such as a space in the URL or a header without its colon)", examples that were not its fault;
    the parser's reason is now said, with what to send."""
    import socket

    with background_server(create_app({"tiny": GPT2(TINY, init_params(TINY, seed=0))})) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(head + b"Content-Type: application/json\r\n\r\n{}")
            answer = read_all(s)
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 400 Bad Request", answer
    error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "invalid_http_request" and says in error["message"], error
    assert error["message"].startswith("the request is not valid HTTP/1.1: "), error


def test_a_client_that_hangs_up_mid_body_is_no_unhandled_error(caplog):
    """A client that closed its connection while its request's body was being read (curl interrupted during an
    upload, a client's own timeout, or a body past its deadline) was logged as "unhandled error" with two
    tracebacks (npgpt's and uvicorn's "Exception in ASGI application"): Starlette's ClientDisconnect reached the
    500 handler. It is a client leaving, counted as 499 (nginx's "client closed request"), with no traceback."""
    import logging
    import socket
    import urllib.request

    app = create_app({"tiny": GPT2(TINY, init_params(TINY, seed=0))})
    with caplog.at_level(logging.WARNING), background_server(app) as url:
        host, port = url.removeprefix("http://").split(":")
        s = socket.create_connection((host, int(port)))
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        s.sendall(b"Content-Length: 100\r\n\r\n" + b'{"pro')
        time.sleep(0.3)
        s.close()
        deadline = time.monotonic() + 10
        while 'status="499"' not in (metrics := urllib.request.urlopen(url + "/metrics").read().decode()):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.05)
        assert 'endpoint="/v1/completions",status="499"' in metrics, metrics
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_chats_messages_are_checked_and_written_out_off_the_event_loop(monkeypatch):
    """A 1 MB chat body (35,000 messages) took ~0.4 s of Python on the event loop after it was parsed: each message
    checked, the transcript written out and its stop sequences found, while /health and every stream waited (issue
    14, kind 7). Each runs on a thread: no event loop runs where a message is checked or the transcript written."""
    import npgpt.chat
    import npgpt.server.protocol

    on_loop: list[tuple[str, bool]] = []

    def spy(name, original):
        def checked(*args, **kwargs):
            try:
                asyncio.get_running_loop()
                on_loop.append((name, True))
            except RuntimeError:  # no loop in this thread
                on_loop.append((name, False))
            return original(*args, **kwargs)

        return checked

    monkeypatch.setattr(npgpt.server.protocol, "check_message", spy("check", npgpt.server.protocol.check_message))
    monkeypatch.setattr(npgpt.chat, "chat_prompt", spy("transcript", npgpt.chat.chat_prompt))
    monkeypatch.setattr(npgpt.chat, "chat_stop", spy("stop", npgpt.chat.chat_stop))
    with TestClient(create_app({"tiny": GPT2(TINY, init_params(TINY, seed=0))})) as http:
        messages = [{"role": "user", "content": "a"}] * 3
        r = http.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 1})
    assert r.status_code == 200, r.text
    assert {name for name, _ in on_loop} == {"check", "transcript", "stop"}
    assert not any(loop for _, loop in on_loop), on_loop


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /v1/mo dels HTTP/1.1\r\nHost: x\r\n\r\n",  # a space in the URL
        b"GET /v1/models HTTP/1.1\r\nHost x\r\n\r\n",  # a header without its colon
    ],
    ids=["space in URL", "header without colon"],
)
def test_bytes_that_are_no_http_request_get_an_openai_shaped_400(raw):
    """uvicorn answered them with a plain-text 400 "Invalid HTTP request received.", the one error not in OpenAI's
    shape (a client reading error.message got none); it is now one, naming what to check."""
    import socket

    with background_server(create_app({"tiny": GPT2(TINY, init_params(TINY, seed=0))})) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(raw)
            answer = read_all(s)
    status, _, rest = answer.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert status == b"HTTP/1.1 400 Bad Request" and b"application/json" in headers, answer
    error = json.loads(payload)["error"]
    assert error["code"] == "invalid_http_request" and "not valid HTTP/1.1" in error["message"], error
