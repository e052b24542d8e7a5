"""Fuzzing the endpoints: whatever a client sends, the answer is a 200 or a 4xx in OpenAI's error shape, never a 5xx.

Bodies are drawn by hypothesis (bounded examples, loopback only): the endpoints' own fields with
values that are plausible, wrong in type, extreme (1e308, -0.0, 5e-324, 2**64, NaN and Infinity
literals), invalid Unicode (lone surrogates), or huge lists; plus bodies that are not JSON at all.
A streamed answer must end with ``[DONE]`` and carry no server error.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from npgpt.api import GPT2  # noqa: E402
from npgpt.config import GPT2Config  # noqa: E402
from npgpt.params import init_params  # noqa: E402
from npgpt.server import background_server, create_app  # noqa: E402

TINY = GPT2Config(n_ctx=64, n_embd=32, n_head=2, n_layer=2)
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

EXTREME_NUMBERS = [
    1e308,
    -1e308,
    -0.0,
    0.0,
    5e-324,
    1e-39,
    1e-50,
    2**63,
    2**64 + 1,
    -(2**63),
    10**30,
    -1,
    0,
    1,
    math.nan,
    math.inf,
    -math.inf,
    0.5,
    2,
    3,
    16,
    127,
    128,
    129,
    1.5,
]
# any character, lone surrogates included (json.dumps writes them as \ud83d escapes, valid JSON)
ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None), max_size=12)
TEXT = st.one_of(
    st.sampled_from(["", " ", "Hello", "a\ud83d b", "\udfff", "<|endoftext|>", "\x00", "é" * 30]), ANY_TEXT
)
SCALAR = st.one_of(st.none(), st.booleans(), st.sampled_from(EXTREME_NUMBERS), st.integers(), st.floats(), TEXT)
JSON = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8
)
HUGE = st.sampled_from(
    [
        ["a"] * 5000,
        [[1]] * 5000,
        [50256] * 3000,
        [[]] * 100,
        [""] * 50,
        list(range(60000)),
        ["stop"] * 1000,
        "word " * 20000,
    ]
)

# A plausible body (so that generation, streaming, echo and logprobs run), then 0-2 fields made wild.
PLAUSIBLE_PROMPT = st.one_of(
    TEXT.filter(bool),
    st.lists(TEXT.filter(bool), min_size=1, max_size=3),
    st.lists(st.integers(0, 50256), min_size=1, max_size=6),
    st.lists(st.lists(st.integers(0, 50256), min_size=1, max_size=4), min_size=1, max_size=2),
)
TINY_FLOATS = st.sampled_from([1e-39, 1e-50, 5e-324, -0.0, 0.0, 1e-3])
SAMPLING = {
    "temperature": st.one_of(st.floats(0, 2), TINY_FLOATS),
    "top_p": st.floats(0.01, 1),
    "top_k": st.integers(0, 50),
    "min_p": st.floats(0, 1),
    "repetition_penalty": st.floats(0.5, 2),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "n": st.integers(1, 3),
    "seed": st.integers(0, 2**63 - 1),
    "stop": st.one_of(TEXT, st.lists(TEXT, max_size=3)),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "model": st.just("tiny"),
    "user": TEXT,
    "max_tokens": st.integers(1, 8),
}
COMPLETION = {"prompt": PLAUSIBLE_PROMPT, "logprobs": st.integers(0, 5), "echo": st.booleans(), **SAMPLING}
MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "developer", "user", "assistant"]),
        "content": st.one_of(
            TEXT, st.none(), st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=2)
        ),
    }
)
CHAT = {
    "messages": st.lists(MESSAGE, min_size=1, max_size=3),
    "logprobs": st.booleans(),
    "top_logprobs": st.integers(0, 5),
    "max_completion_tokens": st.integers(1, 8),
    **SAMPLING,
}
NEXT = {"prompt": TEXT.filter(bool), "k": st.integers(1, 100), "model": st.just("tiny")}
WILD = st.one_of(SCALAR, JSON, HUGE)
EXTRA_KEYS = ["best_of", "logit_bias", "suffix", "unknown_field", "max_completion_tokens", "messages", "prompt"]


def bodies(fields: dict, required: str) -> st.SearchStrategy[dict]:
    """A body with ``required`` and any other of ``fields``, then up to two fields (or new keys) set wild."""
    plausible = st.fixed_dictionaries(
        {required: fields[required]}, optional={k: v for k, v in fields.items() if k != required}
    )

    @st.composite
    def body(draw: st.DrawFn) -> dict:
        b = draw(plausible)
        for key, value in draw(st.lists(st.tuples(st.sampled_from(sorted({*fields, *EXTRA_KEYS})), WILD), max_size=2)):
            b[key] = value
        return b

    return body()


STATUSES: Counter = Counter()  # (path, status) over the module, printed at its end


@pytest.fixture(scope="module")
def client():
    model = GPT2(TINY, init_params(TINY, seed=0))
    app = create_app({"tiny": model}, max_batch=8, max_rows=8, max_request_tokens=256)
    with background_server(app) as base, httpx.Client(base_url=base, timeout=120) as c:
        yield c
    print("\nfuzzed responses by endpoint and status:", dict(sorted(STATUSES.items())))


def check(r: httpx.Response) -> None:
    """200 or 4xx; a 4xx in OpenAI's shape; a stream ends with [DONE] and holds no server error."""
    path = r.request.url.path
    STATUSES[("/v1/models/{name}" if path.startswith("/v1/models/") else path), r.status_code] += 1
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if 300 <= r.status_code < 400:  # /v1/models/ redirects to /v1/models
        return
    if r.status_code >= 400:
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], error
        assert error["type"] == "invalid_request_error" or r.status_code in (404, 405, 413, 429), error
    elif r.headers["content-type"].startswith("text/event-stream"):
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert events and events[-1] == "[DONE]", r.text[-300:]
        for e in events[:-1]:
            assert "error" not in json.loads(e), e
    else:
        assert isinstance(r.json(), dict)


def post(client: httpx.Client, path: str, body: object) -> httpx.Response:
    # json.dumps writes NaN/Infinity literals (as many clients do) and lone surrogates as \\u escapes
    return client.post(path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


@FUZZ
@given(body=bodies(COMPLETION, "prompt"))
@example({"prompt": "a\ud83d b", "echo": True, "max_tokens": 2})  # issue 14's examples, then kin
@example({"prompt": ["\udfff", "b"], "echo": True, "logprobs": 1, "stream": True, "max_tokens": 2})
@example({"prompt": "x", "stop": ["\ud83d", "y"], "max_tokens": 4, "user": "\ud800"})
@example({"prompt": "x", "temperature": 1e-39, "logprobs": 2, "max_tokens": 3})
@example({"prompt": "x", "temperature": math.nan})
@example({"prompt": "x", "top_p": math.inf, "max_tokens": 1e308})
@example({"prompt": "x", "n": 2**64 + 1, "seed": -0.0})
@example({"prompt": ["a"] * 5000, "n": 128})
@example({"prompt": [[1]] * 4096, "n": 1, "max_tokens": 1})
def test_completions(client, body):
    check(post(client, "/v1/completions", body))


@FUZZ
@given(body=bodies(CHAT, "messages"))
@example({"messages": [{"role": "user", "content": "\ud83d"}], "logprobs": True, "max_tokens": 2})
@example({"messages": [{"role": "user", "content": "hi"}], "stop": "\udc00", "stream": True, "max_tokens": 2})
def test_chat_completions(client, body):
    check(post(client, "/v1/chat/completions", body))


@settings(FUZZ, max_examples=60)
@given(body=st.one_of(bodies(NEXT, "prompt"), WILD))
def test_next_tokens_and_bodies_that_are_not_objects(client, body):
    check(post(client, "/v1/next_tokens", body))


@settings(FUZZ, max_examples=80)
@given(
    raw=st.one_of(
        st.binary(max_size=64),
        st.sampled_from(
            [
                b"",
                b"{",
                b'{"prompt": "x",}',
                b"\xff\xfe{}",
                b'{"prompt": "\\ud83d"}',
                b'{"prompt": "x"}' * 2,
                b"[" * 10000,
                b'{"prompt": NaN}',
                b"null",
            ]
        ),
    ),
    path=st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/next_tokens"]),
)
def test_bodies_that_are_not_json(client, raw, path):
    check(client.post(path, content=raw, headers={"Content-Type": "application/json"}))


@settings(FUZZ, max_examples=40)
@given(name=TEXT)
def test_model_names(client, name):
    check(client.get("/v1/models/" + name.encode("utf-8", "surrogatepass").hex()))
    r = client.get("/v1/models", params={"x": name.encode("utf-8", "replace")})
    check(r)
