"""The OpenAI-compatible server: same tokens as the Python API, batching, errors, metrics.

The server runs with uvicorn on a thread on 127.0.0.1 (any free port) and is driven with the
official ``openai`` client and with httpx; the models are small random ones.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import start_server

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from npgpt.api import GPT2  # noqa: E402
from npgpt.config import GPT2Config  # noqa: E402
from npgpt.formats import npgpt_format  # noqa: E402
from npgpt.params import init_params  # noqa: E402
from npgpt.sampling import SamplingParams, log_softmax  # noqa: E402
from npgpt.server import background_server, create_app  # noqa: E402
from npgpt.server.protocol import CHAT_STOP, ChatMessage, chat_prompt  # noqa: E402
from npgpt.server.response_parts import bytes_text  # noqa: E402
from npgpt.server.routes import ROUTES  # noqa: E402
from npgpt.server.scheduler import Request, Scheduler  # noqa: E402

TINY = GPT2Config(n_ctx=128, n_embd=32, n_head=2, n_layer=2)


def tiny_model(seed: int = 0) -> GPT2:
    return GPT2(TINY, init_params(TINY, seed=seed))


@pytest.fixture(scope="module")
def model() -> GPT2:
    return tiny_model()


@pytest.fixture(scope="module")
def url(model):
    with background_server(create_app({"tiny": model, "other": tiny_model(seed=1)}, max_batch=8)) as base:
        yield base


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


def collect_stream(chunks) -> tuple[dict[int, str], dict[int, str], dict[int, list]]:
    """Text, finish_reason and token logprobs per choice index from a completions stream."""
    text, finish, lps = {}, {}, {}
    for c in chunks:
        for ch in c.choices:
            text[ch.index] = text.get(ch.index, "") + ch.text
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
            if ch.logprobs:
                lps.setdefault(ch.index, []).extend(ch.logprobs.token_logprobs)
    return text, finish, lps


# -- same results as the Python API ---------------------------------------------------------------------
SAMPLING = dict(temperature=0.9, top_p=0.95, presence_penalty=0.5, frequency_penalty=0.3, seed=7)


def test_completion_equals_the_python_api(client, model):
    prompt = "The meaning of life is"
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=24, n=3, **SAMPLING)
    ref = model.completions([prompt] * 3, max_new_tokens=24, **SAMPLING)
    assert [c.text for c in r.choices] == [c.text for c in ref]
    assert [c.finish_reason for c in r.choices] == [c.finish_reason for c in ref]
    assert [c.index for c in r.choices] == [0, 1, 2]
    n_prompt = len(model.tokenizer.encode(prompt))
    assert r.usage.prompt_tokens == n_prompt
    assert r.usage.completion_tokens == sum(len(c.tokens) for c in ref)
    assert r.usage.total_tokens == n_prompt + r.usage.completion_tokens
    assert r.object == "text_completion" and r.model == "tiny" and r.id.startswith("cmpl-")


def test_stream_equals_the_python_api(client, model):
    prompt = "Once upon a time"
    chunks = client.completions.create(
        model="tiny",
        prompt=prompt,
        max_tokens=30,
        n=2,
        logprobs=2,
        stream=True,
        stream_options={"include_usage": True},
        **SAMPLING,
    )
    chunks = list(chunks)
    text, finish, lps = collect_stream(chunks)
    ref = model.completions([prompt] * 2, max_new_tokens=30, logprobs=2, **SAMPLING)
    assert [text[i] for i in range(2)] == [c.text for c in ref]
    assert [finish[i] for i in range(2)] == [c.finish_reason for c in ref]
    for i, c in enumerate(ref):
        np.testing.assert_allclose(lps[i], c.token_logprobs, rtol=1e-4, atol=1e-4)
    assert chunks[-1].usage.completion_tokens == sum(len(c.tokens) for c in ref)


def test_greedy_stop_sequences_and_generate(client, model):
    prompt = "Hello"
    full = model.generate(prompt, max_new_tokens=40, temperature=0)
    stop = full[5:8]  # a stop sequence that surely occurs
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=40, temperature=0, stop=[stop])
    assert r.choices[0].text == model.generate(prompt, max_new_tokens=40, temperature=0, stop=[stop])
    assert r.choices[0].finish_reason == "stop" and stop not in r.choices[0].text
    # OpenAI accepts top_p=0 (and HF keeps the top token): greedy, whatever the temperature
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, top_p=0, seed=5)
    assert r.choices[0].text == model.generate(prompt, max_new_tokens=12, temperature=0)


def test_logit_bias_in_completions_and_chat(url, model):
    """OpenAI's logit_bias ({"id": bias}, ids as strings): -100 bans a token, in completions and chat alike."""
    prompt = "Hello"
    greedy = model.completions(prompt, max_new_tokens=8, temperature=0)[0].tokens
    bias = {str(t): -100 for t in greedy}
    body = {"prompt": prompt, "max_tokens": 8, "temperature": 0, "logit_bias": bias, "logprobs": 0}
    r = httpx.post(url + "/v1/completions", json=body).json()["choices"][0]
    ref = model.completions(prompt, max_new_tokens=8, temperature=0, logit_bias=bias, logprobs=0)[0]
    assert r["text"] == ref.text and not set(greedy) & set(ref.tokens)
    messages = [{"role": "user", "content": "Hi"}]
    chat = {"messages": messages, "max_tokens": 8, "temperature": 0, "logit_bias": {"50256": -100}}
    r = httpx.post(url + "/v1/chat/completions", json=chat).json()["choices"][0]
    ids = model.tokenizer.encode(chat_prompt([ChatMessage(role="user", content="Hi")]))
    kw = dict(max_new_tokens=8, temperature=0, stop=CHAT_STOP, skip_leading_space=True)
    assert r["message"]["content"] == model.completions(ids, logit_bias={50256: -100}, **kw)[0].text


def test_several_prompts_and_token_ids(client, model):
    prompts = ["A cat", "Twenty-one pilots and"]
    r = client.completions.create(model="tiny", prompt=prompts, max_tokens=10, n=2, seed=3)
    ref = model.completions([p for p in prompts for _ in range(2)], max_new_tokens=10, seed=3)
    assert [c.text for c in r.choices] == [c.text for c in ref]  # choice i*n + j: prompt i, sample j
    ids = model.tokenizer.encode(prompts[1])
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=10, seed=3)
    assert by_ids.choices[0].text == model.generate(prompts[1], max_new_tokens=10, seed=3)


def test_a_seeded_prompt_gets_the_same_choices_alone_and_in_a_list(client):
    """As vLLM (each prompt its own request; choice k of n seeded seed + k) and OpenAI (a seed per request):
    a prompt's choices do not depend on the prompts beside it, and n=1 is choice 0 of n=2."""
    kw = dict(model="tiny", max_tokens=12, seed=3, temperature=1.0)
    both = client.completions.create(prompt=["A cat", "Twenty-one pilots and"], n=2, **kw)
    for i, prompt in enumerate(["A cat", "Twenty-one pilots and"]):
        alone = client.completions.create(prompt=prompt, n=2, **kw)
        assert [c.text for c in both.choices[2 * i : 2 * i + 2]] == [c.text for c in alone.choices]
        assert client.completions.create(prompt=prompt, n=1, **kw).choices[0].text == alone.choices[0].text
    assert both.choices[0].text != both.choices[1].text


def test_seed_minus_one_is_a_random_seed_and_other_negatives_are_seeds(client, url, model):
    """``seed: -1`` (llama.cpp's server's "a random seed", as its clients send it) was a 400, as was any negative
    seed, which OpenAI and vLLM take (any signed 64-bit integer). Now -1 samples as no seed does, and another
    negative is a seed as any other: the same text each time, that of its 64 bits read unsigned."""
    kw = dict(model="tiny", prompt="A cat", max_tokens=12, temperature=1.0)
    texts = {client.completions.create(seed=-1, **kw).choices[0].text for _ in range(4)}
    assert len(texts) > 1  # random: not one seed each time
    for seed in (-2, -(2**63)):
        first, again = (client.completions.create(seed=seed, **kw).choices[0].text for _ in range(2))
        assert first == again == model.generate("A cat", max_new_tokens=12, seed=seed + 2**64)
    chat = dict(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=2, seed=-1)
    assert client.chat.completions.create(**chat).choices[0].message.content is not None
    for seed in (2**63, -(2**63) - 1):  # outside OpenAI's range, as OpenAI and vLLM answer
        error = httpx.post(url + "/v1/completions", json={"prompt": "x", "seed": seed}).json()["error"]
        assert error["param"] == "seed" and str(2**63 - 1 if seed > 0 else -(2**63)) in error["message"], error


def test_top_k_minus_one_is_off_as_in_vllm(client, model):
    """``top_k: -1``, vLLM's "off" (its clients and llama.cpp's send it), was a 400; now it samples as top_k 0,
    npgpt's off, does. Below -1 is still a 400, as vLLM answers."""
    kw = dict(model="tiny", prompt="A cat", max_tokens=12, temperature=1.0, seed=4)
    off = client.completions.create(extra_body={"top_k": -1}, **kw).choices[0].text
    assert off == client.completions.create(extra_body={"top_k": 0}, **kw).choices[0].text
    assert off == model.generate("A cat", max_new_tokens=12, temperature=1.0, seed=4)
    with pytest.raises(openai.BadRequestError, match="top_k"):
        client.completions.create(extra_body={"top_k": -2}, **kw)


@pytest.mark.parametrize(
    ("path", "field", "says"),
    [
        (
            "/v1/completions",
            "max_tokens",
            "send how many tokens to generate, at most the context the prompt leaves (default 16)",
        ),
        ("/v1/chat/completions", "max_tokens", "leave it out to generate up to the end of the context"),
        ("/v1/chat/completions", "max_completion_tokens", "leave it out to generate up to the end of the context"),
    ],
)
def test_max_tokens_minus_one_says_what_to_send_instead(url, path, field, says):
    """``max_tokens: -1`` (llama.cpp's "no limit", as its clients send it; OpenAI and vLLM refuse it) got
    pydantic's "Input should be greater than or equal to 1", naming no way to ask for a long reply."""
    body = {"prompt": "x"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "x"}]}
    error = httpx.post(url + path, json={**body, field: -1}).json()["error"]
    assert (
        error["param"] == field
        and error["message"] == f"{field}: -1 (llama.cpp's 'no limit') is no token count; {says}"
    )
    assert "integer below minimum value" in httpx.post(url + path, json={**body, field: -2}).json()["error"]["message"]


def test_logprobs_and_echo(client, model):
    prompt = "Stars shine at night"
    ids = model.tokenizer.encode(prompt)
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=6, logprobs=3, echo=True, seed=1)
    ref = model.completions([prompt], max_new_tokens=6, logprobs=3, seed=1)[0]
    c = r.choices[0]
    assert c.text == prompt + ref.text
    lp = c.logprobs
    assert len(lp.tokens) == len(ids) + 6 and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    want = log_softmax(model.logits([ids])[0])
    np.testing.assert_allclose(
        lp.token_logprobs[1 : len(ids)], [want[t - 1, ids[t]] for t in range(1, len(ids))], rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(lp.token_logprobs[len(ids) :], ref.token_logprobs, rtol=1e-4, atol=1e-4)
    for token, token_lp, top in zip(lp.tokens[1:], lp.token_logprobs[1:], lp.top_logprobs[1:], strict=True):
        assert top[token] == token_lp and len(top) == 3 + (token_lp < sorted(top.values())[-3])  # top 3 + itself
    assert "".join(lp.tokens) == c.text
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]


def test_completions_top_logprobs_list_the_chosen_token(client):
    """OpenAI's legacy rule: ``top_logprobs`` holds the k most likely and always the chosen token (up to k + 1)."""
    for k in (0, 1, 2):
        r = client.completions.create(model="tiny", prompt="Stars", max_tokens=12, logprobs=k, temperature=2, seed=0)
        lp = r.choices[0].logprobs
        for token, token_lp, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
            assert top[token] == token_lp and k <= len(top) <= k + 1
        assert any(len(top) == k + 1 for top in lp.top_logprobs)  # temperature 2: some token is not a top one


def test_chat_completion(client, model):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]
    prompt = chat_prompt([ChatMessage(**m) for m in messages])
    assert prompt == "System: You are terse.\nUser: Say hi.\nAssistant:"
    ref = model.generate(prompt, max_new_tokens=20, seed=5, stop=list(CHAT_STOP)).lstrip()
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, seed=5)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == ref
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, seed=5, stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ref
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    lp = (
        client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=5, seed=5, logprobs=True, top_logprobs=2
        )
        .choices[0]
        .logprobs.content
    )
    assert len(lp) == 5 and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in lp)


def test_chat_stop_does_not_match_the_dropped_leading_whitespace():
    """The bundled model's reply to "hi" at seed 2 starts with "\n", which the reply drops: the stop "\n"
    must not end it there (it answered "" with finish_reason "stop"), only at a newline the client sees."""
    from npgpt.api import load

    m = load("bundled")
    free = m.generate(chat_prompt([ChatMessage(role="user", content="hi")]), max_new_tokens=20, seed=2)
    assert free.startswith("\n") and "\n" in free.lstrip()
    body = {"messages": [{"role": "user", "content": "hi"}], "stop": "\n", "seed": 2, "max_tokens": 20}
    with background_server(create_app({"bundled": m})) as base:
        r = httpx.post(base + "/v1/chat/completions", json=body, timeout=60).json()["choices"][0]
        assert r["message"]["content"] == free.lstrip().split("\n")[0] != ""
        assert r["finish_reason"] == "stop"
        lines = httpx.post(base + "/v1/chat/completions", json={**body, "stream": True}, timeout=60).text.splitlines()
        chunks = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
        assert (
            "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
            == r["message"]["content"]
        )


def test_chat_logprobs_skip_the_dropped_leading_whitespace():
    """The bundled model's reply to "hi" at seed 2 starts with "\n", which the reply drops: its logprobs
    must not list it either, so the entries' tokens spell the content (they began "\n" before it)."""
    from npgpt.api import load

    body = {"messages": [{"role": "user", "content": "hi"}], "seed": 2, "max_tokens": 8, "logprobs": True}
    with background_server(create_app({"bundled": load("bundled")})) as base:
        for stream in (False, True):
            r = httpx.post(base + "/v1/chat/completions", json={**body, "stream": stream}, timeout=60)
            if stream:
                chunks = [json.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: {")]
                parts = [c["choices"][0] for c in chunks if c["choices"]]
                content = "".join(p["delta"].get("content", "") for p in parts)
                entries = [e for p in parts if p["logprobs"] for e in p["logprobs"]["content"]]
            else:
                choice = r.json()["choices"][0]
                content, entries = choice["message"]["content"], choice["logprobs"]["content"]
            assert content and "".join(bytes(e["bytes"]).decode() for e in entries) == content, (stream, entries)


def chat_logprobs(base: str, body: dict) -> list[dict[int, tuple[str, list[dict], str]]]:
    """Per choice index: (content, logprobs entries, finish_reason), from the plain answer and the streamed one."""
    plain = httpx.post(base + "/v1/chat/completions", json=body, timeout=60).json()["choices"]
    answers = [{c["index"]: (c["message"]["content"], c["logprobs"]["content"], c["finish_reason"]) for c in plain}]
    streamed: dict[int, tuple[str, list[dict], str]] = {}
    lines = httpx.post(base + "/v1/chat/completions", json={**body, "stream": True}, timeout=60).text.splitlines()
    for line in lines:
        for p in json.loads(line[6:])["choices"] if line.startswith("data: {") else []:
            content, entries, finish = streamed.get(p["index"], ("", [], None))
            entries = entries + (p["logprobs"]["content"] if p["logprobs"] else [])
            streamed[p["index"]] = (content + p["delta"].get("content", ""), entries, p["finish_reason"] or finish)
    return [*answers, streamed]


REPLY = [{"role": "user", "content": "Hello"}]


@pytest.mark.parametrize(
    "stop, tokens",
    [
        ("%. Part", ["Task", " incomprehensible"]),  # "%." and " Particularly" are the stop's
        (". Part", ["Task", " incomprehensible", "%"]),  # "%." is half content: listed as the half
    ],
)
def test_chat_logprobs_leave_out_the_tokens_of_a_matched_stop(url, model, stop, tokens):
    """The tiny model's reply at seed 1 is the tokens "Task", " incomprehensible", "%.", " Particularly", ...:
    with a stop in it, the entries of the tokens the stop took out of the content are not listed (they went
    out as each token came, before its text was known to be a stop), so the entries' tokens spell the content."""
    free = model.generate(chat_prompt([ChatMessage(**m) for m in REPLY]), max_new_tokens=4, seed=1)
    assert free.lstrip() == "Task incomprehensible%. Particularly"
    body = {"model": "tiny", "messages": REPLY, "seed": 1, "max_tokens": 10, "logprobs": True, "top_logprobs": 1}
    for answer in chat_logprobs(url, {**body, "n": 2, "stop": [stop]}):
        assert answer[0][0] == "".join(tokens) and answer[0][2] == "stop"
        assert [e["token"] for e in answer[0][1]] == tokens
        for content, entries, _ in answer.values():
            assert "".join(e["token"] for e in entries) == content, entries
            assert all(bytes(e["bytes"]).decode() == e["token"] for e in entries)


def test_chat_logprobs_show_a_first_token_as_the_content_has_it(url, model):
    """The tiny model's reply at seed 0 begins with the token " extraordinarily", whose space the reply
    drops: its entry shows "extraordinarily" (and those bytes), as the content has it, so the entries'
    tokens spell the content (they began " extraordinarily" before it)."""
    prompt = chat_prompt([ChatMessage(**m) for m in REPLY])
    assert model.generate(prompt, max_new_tokens=1, seed=0) == " extraordinarily"
    body = {"model": "tiny", "messages": REPLY, "seed": 0, "max_tokens": 6, "logprobs": True, "top_logprobs": 1}
    for answer in chat_logprobs(url, {**body, "n": 2}):
        assert answer[0][1][0]["token"] == "extraordinarily" and answer[0][0].startswith("extraordinarily")
        for content, entries, _ in answer.values():
            assert "".join(e["token"] for e in entries) == content, entries
            assert all(bytes(e["bytes"]).decode() == e["token"] for e in entries)


def scripted_chat_logprobs(text: str | list[int], stop: tuple[str, ...] = ()) -> tuple[str, list[dict]]:
    """A chat reply whose tokens are ``text`` 's (or these ids; each chosen by its logits): its content and
    entries."""
    from npgpt.generate import RowSampler
    from npgpt.server.chat import HeldLogprobs

    tok = tiny_model().tokenizer
    params = SamplingParams(max_new_tokens=64, temperature=0, stop=stop, logprobs=0, skip_leading_space=True)
    row, held = RowSampler(0, params, np.random.default_rng(0), tok, tok.n_vocab), HeldLogprobs(tok)
    content, entries = "", []
    for t in [*(tok.encode(text) if isinstance(text, str) else text), tok.eot_id]:
        logits = np.zeros(tok.n_vocab, np.float32)
        logits[t] = 10
        ev = row.pick(logits)
        content += ev.text
        entries += held.add(ev, counts=ev.token != tok.eot_id)
        if row.done:
            return content, entries
    raise AssertionError("the reply did not end")


@pytest.mark.parametrize(
    "text, stop, content",
    [
        (" \u65e5\u672c", (), "\u65e5\u672c"),  # " \xe6" is the dropped space and the first byte of the reply
        (" \U0001f99c hi", (), "\U0001f99c hi"),  # " \xf0\x9f": the space and two of the parrot's four bytes
        ("ab \u65e5", ("\u65e5",), "ab "),  # " \xe6": the space is content, the byte the stop's
        ("x\U0001f99c hi", ("hi",), "x\U0001f99c "),
    ],
)
def test_chat_logprobs_bytes_join_to_the_content_when_a_token_splits_a_character(text, stop, content):
    """A token holding the first bytes of a character and text the content lacks (the dropped leading space, or
    what follows a stop) lost those bytes, or kept the stop's: a CJK reply's first token " \\xe6" was left out,
    so the entries' bytes (OpenAI: combined, they make the text) missed the first character's first byte."""
    got, entries = scripted_chat_logprobs(text, stop)
    assert got == content
    assert b"".join(bytes(e["bytes"]) for e in entries) == content.encode(), entries
    assert all(e["token"] == bytes_text(bytes(e["bytes"])) for e in entries)  # bytes:\\xe6 for part of a character


@pytest.mark.parametrize(
    "pieces",
    [
        [" monk", b"\xe2\x95", " Ole"],  # a token of a character's first bytes, then one that does not finish it
        [" monk", b"\xe2", b"\x95", " Ole"],  # two such tokens
        [" flows", b" \xe2\x86", "x y"],  # text, then the first bytes
        ["a", b"\xe4\xba", b"\xe2\x86", " z"],  # the bytes of one unfinished character, then another's
    ],
)
def test_chat_logprobs_bytes_join_to_the_content_when_the_tokens_are_not_utf8(pieces):
    """Tokens whose bytes are not UTF-8 (a character's first bytes that the next token does not finish: the
    content shows U+FFFD) had those bytes counted twice: raw in the first token's entry and as U+FFFD in the
    next one's (" monk", "\\xe2\\x95", "\ufffd Ole": entries' bytes 2 longer than the content's UTF-8). The
    U+FFFD's bytes now go to the token whose bytes it stands for."""
    tok = tiny_model().tokenizer
    by_bytes = {tok.token_bytes(i): i for i in range(tok.n_vocab)}
    ids = [t for p in pieces for t in ([by_bytes[p]] if isinstance(p, bytes) else tok.encode(p))]
    content, entries = scripted_chat_logprobs(ids)
    assert "\ufffd" in content
    assert b"".join(bytes(e["bytes"]) for e in entries) == content.encode(), entries
    assert all(e["token"] == bytes_text(bytes(e["bytes"])) for e in entries)


@pytest.mark.parametrize("path", ["/health", "/v1/models", "/v1/models/tiny", "/metrics", "/", "/openapi.json"])
def test_head_answers_where_get_does_without_a_body(url, path):
    """``HEAD /health``, as load balancers and uptime checkers send it, was a 405 (FastAPI's routes take only
    the methods they name, where Starlette's and any HTTP server add HEAD to GET): now GET's status and
    headers, and no body."""
    get, head = httpx.get(url + path), httpx.head(url + path)
    assert head.status_code == get.status_code == 200, head.text
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    if path != "/metrics":  # the counters move between the two requests
        assert head.headers["content-length"] == get.headers["content-length"]
    assert httpx.head(url + "/v1/models/nope").status_code == 404  # as GET answers it
    r = httpx.head(url + "/v1/completions")  # a POST URL: still 405, naming POST
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert all("head" not in ops for ops in httpx.get(url + "/openapi.json").json()["paths"].values())


def test_models_health_next_tokens_and_metrics(client, url, model):
    assert [m.id for m in client.models.list().data] == ["tiny", "other"]
    assert client.models.retrieve("other").id == "other"
    # created: when the server loaded them, not 0 (1970 in a client that shows it); the same on every call
    created = {m.created for m in client.models.list().data} | {client.models.retrieve("tiny").created}
    assert len(created) == 1 and time.time() - 3600 < created.pop() <= time.time()
    # the request's model picks among loaded models: another model, another answer
    a = client.completions.create(model="tiny", prompt="Hi", max_tokens=8, temperature=0).choices[0].text
    b = client.completions.create(model="other", prompt="Hi", max_tokens=8, temperature=0).choices[0].text
    assert a == model.generate("Hi", max_new_tokens=8, temperature=0) and a != b
    health = httpx.get(url + "/health").json()
    assert health["status"] == "ok" and set(health["models"]) == {"tiny", "other"}
    top = httpx.post(url + "/v1/next_tokens", json={"prompt": "The cat", "k": 5}).json()["tokens"]
    assert [(t["id"], t["text"]) for t in top] == [(i, s) for i, s, _ in model.next_tokens("The cat", k=5)]
    text = httpx.get(url + "/metrics").text
    assert 'npgpt_requests_total{endpoint="/v1/completions",status="200"}' in text
    assert 'npgpt_batch_size_bucket{model="tiny",kind="decode",le="+Inf"}' in text
    assert 'npgpt_request_duration_seconds_count{endpoint="/v1/completions"}' in text
    assert 'npgpt_generated_tokens_total{model="tiny"}' in text


# -- errors -------------------------------------------------------------------------------------------
BAD = [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (json.dumps({"model": "nope", "prompt": "x"}), 404, "model"),
    (json.dumps({"model": "/etc/passwd", "prompt": "x"}), 404, "model"),
    (json.dumps({"prompt": "x", "temperature": -1}), 400, "temperature"),
    (json.dumps({"prompt": "x", "top_p": -0.1}), 400, "top_p"),
    (json.dumps({"prompt": "x", "max_tokens": 500}), 400, "max_tokens"),
    (json.dumps({"prompt": "x", "max_tokens": 0}), 400, "max_tokens"),
    (json.dumps({"prompt": "x", "n": 0}), 400, "n"),
    (json.dumps({"prompt": "x", "seed": 2**63}), 400, "seed"),  # over OpenAI's range (-1 is random)
    (json.dumps({"prompt": "x", "logprobs": 50}), 400, "logprobs"),
    (json.dumps({"prompt": "x", "stop": [""]}), 400, "stop"),
    (json.dumps({"prompt": ""}), 400, "prompt"),
    (json.dumps({"prompt": []}), 400, "prompt"),
    (json.dumps({"prompt": [70000]}), 400, "prompt"),
    (json.dumps({"prompt": 5}), 400, "prompt"),
    (json.dumps({"prompt": "x", "logit_bias": {"abc": 1}}), 400, "logit_bias"),
    (json.dumps({"prompt": "x", "logit_bias": {"70000": 1}}), 400, "logit_bias"),
    (json.dumps({"prompt": "x", "max_tokens": 0, "echo": True, "logit_bias": {"70000": 1}}), 400, "logit_bias"),
    (json.dumps({"prompt": "x", "logit_bias": {"-1": 1}}), 400, "logit_bias"),
    (json.dumps({"prompt": "x", "logit_bias": {"5": 101}}), 400, "logit_bias"),
    (json.dumps({"prompt": "x", "logit_bias": {"5": "1"}}), 400, "logit_bias"),
    (json.dumps({"prompt": "x", "logit_bias": [5]}), 400, "logit_bias"),
    (json.dumps({"prompt": "x", "best_of": 3}), 400, "best_of"),
    (json.dumps({"prompt": "x", "suffix": "y"}), 400, "suffix"),
    (json.dumps({"max_tokens": 5}), 400, "prompt"),
]


@pytest.mark.parametrize(("body", "status", "param"), BAD, ids=range(len(BAD)))
def test_bad_requests_get_openai_errors(url, model, body, status, param):
    r = httpx.post(url + "/v1/completions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    ok = httpx.post(url + "/v1/completions", json={"prompt": "still", "max_tokens": 3, "temperature": 0})
    assert ok.status_code == 200 and ok.json()["choices"][0]["text"] == model.generate(
        "still", max_new_tokens=3, temperature=0
    )


COMPLETION = {"prompt": "x", "max_tokens": 2}
CHAT = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
WRONG_TYPES = [  # OpenAI's types, strictly: pydantic's lax mode read each as the value it looks like
    ("/v1/completions", COMPLETION | {"n": "2"}, "n", "an integer", "a string"),
    ("/v1/completions", COMPLETION | {"n": True}, "n", "an integer", "a boolean"),
    ("/v1/completions", COMPLETION | {"max_tokens": "16"}, "max_tokens", "an integer", "a string"),
    ("/v1/completions", COMPLETION | {"temperature": "0.5"}, "temperature", "a number", "a string"),
    ("/v1/completions", COMPLETION | {"stream": "true"}, "stream", "a boolean", "a string"),
    ("/v1/completions", COMPLETION | {"echo": 1}, "echo", "a boolean", "an integer"),
    ("/v1/completions", COMPLETION | {"logprobs": True}, "logprobs", "an integer", "a boolean"),  # chat's form
    ("/v1/completions", COMPLETION | {"seed": 1.5}, "seed", "an integer", "a decimal number"),
    ("/v1/completions", COMPLETION | {"stop": 5}, "stop", "a string or an array", "an integer"),
    ("/v1/completions", COMPLETION | {"stop": ["a", 5]}, "stop[1]", "a string", "an integer"),
    ("/v1/chat/completions", CHAT | {"logprobs": 1}, "logprobs", "a boolean", "an integer"),
    ("/v1/chat/completions", CHAT | {"top_logprobs": "2", "logprobs": True}, "top_logprobs", "an integer", "a string"),
    (
        "/v1/chat/completions",
        CHAT | {"stream": True, "stream_options": {"include_usage": "true"}},
        "stream_options.include_usage",
        "a boolean",
        "a string",
    ),
    ("/v1/chat/completions", CHAT | {"ignore_eos": "false"}, "ignore_eos", "a boolean", "a string"),
    ("/v1/next_tokens", {"prompt": "x", "k": "3"}, "k", "an integer", "a string"),
    ("/v1/internals", {"prompt": "x", "layer": "1"}, "layer", "an integer", "a string"),
]


@pytest.mark.parametrize(("path", "body", "param", "wanted", "got"), WRONG_TYPES, ids=range(len(WRONG_TYPES)))
def test_a_field_of_the_wrong_type_is_refused_naming_it(url, path, body, param, wanted, got):
    """As OpenAI answers: "Invalid type for 'n': expected an integer, but got a string instead." """
    r = httpx.post(url + path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error
    assert error["message"] == f"Invalid type for '{param}': expected {wanted}, but got {got} instead.", error


def test_a_prompt_of_booleans_is_no_token_ids(url):
    error = httpx.post(url + "/v1/completions", json={"prompt": [True], "max_tokens": 1}).json()["error"]
    assert error["param"] == "prompt" and "prompt[0] is a boolean" in error["message"], error


def test_whole_numbers_written_as_decimals_and_integers_for_numbers_are_taken(url, model):
    """16.0 is the integer 16 (JSON Schema's rule, and what Python clients send after arithmetic); 1 is a number."""
    body = {"prompt": "x", "max_tokens": 3.0, "n": 1.0, "logprobs": 1.0, "temperature": 0, "top_p": 1}
    r = httpx.post(url + "/v1/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == model.generate("x", max_new_tokens=3, temperature=0)


@pytest.mark.parametrize("stream", [None, False])
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_stream_options_without_stream_is_refused(url, path, stream):
    """OpenAI answers 400: "The 'stream_options' parameter is only allowed when 'stream' is enabled"."""
    body = {"max_tokens": 2, "stream_options": {"include_usage": True}}
    body |= {"prompt": "x"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "x"}]}
    if stream is not None:
        body["stream"] = stream
    r = httpx.post(url + path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "stream_options" and error["type"] == "invalid_request_error", error
    assert "stream: true" in error["message"], error
    body["stream"] = True
    with httpx.stream("POST", url + path, json=body) as ok:
        assert ok.status_code == 200 and '"usage"' in ok.read().decode()


@pytest.mark.parametrize(
    ("method", "path", "meant"),
    [
        ("POST", "/v1/foo", None),
        ("POST", "/v1/completion", "POST /v1/completions"),
        ("POST", "/completions", "POST /v1/completions"),
        ("POST", "/chat/completions", "POST /v1/chat/completions"),
        ("POST", "/v1/chat/completion", "POST /v1/chat/completions"),
        ("GET", "/v1/model", "GET /v1/models"),
    ],
)
def test_an_unknown_url_names_the_method_and_path(url, method, path, meant):
    """As OpenAI's "Unknown request URL: POST /v1/foo. Please check the URL for typos...", and the route meant."""
    r = httpx.request(method, url + path, json={"prompt": "x"})
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "unknown_url", error
    assert error["message"].startswith(f"Unknown request URL: {method} {path}. "), error
    assert ("Did you mean" not in error["message"]) if meant is None else f"Did you mean {meant}?" in error["message"]


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/v1/embeddings", "npgpt serves no embeddings"),
        ("/embeddings", "npgpt serves no embeddings"),
        ("/v1/responses", "npgpt serves no Responses API"),
        ("/v1/audio/speech", "npgpt serves no audio"),
        ("/v1/images/generations", "npgpt serves no images"),
        ("/v1/moderations", "npgpt serves no moderations"),
    ],
)
def test_an_openai_endpoint_npgpt_has_not_says_so(url, path, says):
    """openai's client.embeddings.create (LangChain's OpenAIEmbeddings, a RAG tool pointed at base_url) gets a 404
    saying npgpt has no such endpoint, not "check the URL for typos" as if the URL were mistyped."""
    r = httpx.post(url + path, json={"input": "hi", "model": "m"})
    assert r.status_code == 404, r.text
    error = r.json()["error"]
    assert error["code"] == "unknown_url" and error["type"] == "invalid_request_error", error
    assert says in error["message"] and "typos" not in error["message"], error


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("POST", "/api/generate", "POST /v1/completions"),
        ("POST", "/api/chat", "POST /v1/chat/completions"),
        ("GET", "/api/tags", "GET /v1/models"),
        ("POST", "/api/embed", None),
    ],
)
def test_ollamas_api_says_npgpt_serves_openais(url, method, path, route):
    """An Ollama client pointed at npgpt serve (`POST /api/generate`, `/api/chat`, `GET /api/tags`) got "Please check
    the URL for typos", as if the URL were mistyped: it now says npgpt serves the OpenAI API, and its route for the
    same request."""
    r = httpx.request(method, url + path, json={"model": "m", "prompt": "hi"})
    assert r.status_code == 404, r.text
    message = r.json()["error"]["message"]
    assert message.startswith(f"Unknown request URL: {method} {path}. npgpt serves the OpenAI API, not Ollama's")
    assert "typos" not in message and "\n" not in message, message
    assert (f"its {route} does what this one does" in message) if route else "does what" not in message, message


def test_the_routes_a_404_suggests_are_served(url):
    for method, path in ROUTES:
        r = httpx.request(method, url + path, json={})
        assert r.status_code not in (404, 405), (method, path, r.text)


def test_chat_and_other_errors(url):
    cases = [
        ("/v1/chat/completions", {"messages": []}, 400),
        ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, 400),
        ("/v1/next_tokens", {"prompt": ""}, 400),
        ("/v1/nothing", {}, 404),
    ]
    for path, body, status in cases:
        r = httpx.post(url + path, json=body)
        assert r.status_code == status, (path, body, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    big = httpx.post(
        url + "/v1/completions",
        content=b'{"prompt": "' + b"a" * 1_100_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"

    def chunked():  # no Content-Length: the limit is counted as the body arrives
        yield b'{"prompt": "'
        for _ in range(12):
            yield b"a" * 100_000
        yield b'"}'

    big = httpx.post(url + "/v1/completions", content=chunked(), headers={"Content-Type": "application/json"})
    assert big.status_code == 413
    assert httpx.post(url + "/v1/completions", json={"prompt": "ok", "max_tokens": 2}).status_code == 200


def test_a_json_body_sent_as_a_form_is_told_the_header(url):
    """``curl -d '{...}'`` without -H sends a form; the error names the header, not a "not an object" riddle."""
    body = json.dumps({"prompt": "x", "max_tokens": 2})
    r = httpx.post(url + "/v1/completions", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and "Content-Type: application/json" in r.json()["error"]["message"]
    ok = httpx.post(url + "/v1/completions", content=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200
    not_object = httpx.post(url + "/v1/completions", content=b"[1]", headers={"Content-Type": "application/json"})
    assert not_object.json()["error"]["message"] == "the body must be a JSON object, got an array"  # not pydantic's
    null = httpx.post(url + "/v1/chat/completions", content=b"null", headers={"Content-Type": "application/json"})
    assert null.status_code == 400 and null.json()["error"]["message"] == "the body must be a JSON object, got null"
    empty = httpx.post(url + "/v1/completions", content=b"")  # no body, no header: the header is what to fix
    assert empty.status_code == 400 and "Content-Type: application/json" in empty.json()["error"]["message"]
    # the header but no body (curl -X POST -H ... without -d) was "the body must be a JSON object, got null"
    empty = httpx.post(url + "/v1/completions", content=b"", headers={"Content-Type": "application/json"})
    assert empty.status_code == 400 and empty.json()["error"]["message"].startswith("the request has no body")


def test_a_body_that_is_not_utf8_is_told_so(url):
    """A Latin-1 é in the JSON got FastAPI's "There was an error parsing the body", which names no fix."""
    r = httpx.post(
        url + "/v1/completions", content=b'{"prompt": "caf\xe9"}', headers={"Content-Type": "application/json"}
    )
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "invalid_json", r.text
    assert error["message"] == "the body is not UTF-8 (byte 15 is 0xe9); send JSON encoded as UTF-8"
    # json.loads guesses UTF-16 from a body starting FF FE: named as such (test_a_body_in_utf16_is_refused...)
    r = httpx.post(url + "/v1/completions", content=b"\xff\xfe{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"] == (
        "the body is UTF-16, not UTF-8, which JSON sent between systems must be (RFC 8259); send JSON encoded as UTF-8"
    )


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"])
def test_a_body_in_utf16_or_utf32_is_refused_and_a_utf8_bom_ignored(url, encoding):
    """A body in UTF-16 or UTF-32 was answered 200: json.loads guesses the encoding from the first bytes. JSON
    between systems must be UTF-8 (RFC 8259), as OpenAI reads it, and a proxy on the way reads it so: refused by
    name. A UTF-8 byte order mark, which RFC 8259 lets a parser ignore, is ignored."""
    text = json.dumps({"prompt": "caf\u00e9", "max_tokens": 1, "temperature": 0})
    headers = {"Content-Type": "application/json"}
    r = httpx.post(url + "/v1/completions", content=text.encode(encoding), headers=headers)
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "invalid_json", r.text
    assert error["message"] == (  # (with a BOM, json.detect_encoding names no byte order: "UTF-16")
        f"the body is {encoding.upper()}, not UTF-8, which JSON sent between systems must be (RFC 8259); "
        "send JSON encoded as UTF-8"
    )
    plain = httpx.post(url + "/v1/completions", content=text.encode(), headers=headers)
    bom = httpx.post(url + "/v1/completions", content=b"\xef\xbb\xbf" + text.encode(), headers=headers)
    assert bom.status_code == plain.status_code == 200, bom.text
    assert bom.json()["choices"][0]["text"] == plain.json()["choices"][0]["text"]


def test_chat_over_the_context_blames_the_messages(url):
    long = {"messages": [{"role": "user", "content": "x " * 200}]}
    error = httpx.post(url + "/v1/chat/completions", json=long).json()["error"]
    assert error["param"] == "messages" and error["code"] == "context_length_exceeded"
    assert "max_tokens" not in error["message"]
    error = httpx.post(url + "/v1/chat/completions", json={**long, "max_tokens": 5}).json()["error"]
    assert error["param"] == "messages" and "max_tokens" not in error["message"]  # no max_tokens could help
    fits = {"messages": [{"role": "user", "content": "x " * 100}], "max_tokens": 250}  # room, not for 250 more
    error = httpx.post(url + "/v1/chat/completions", json=fits).json()["error"]
    assert error["param"] == "max_tokens" and error["code"] == "context_length_exceeded"
    # in chat's words (one transcript, no "prompt 0"), naming the field the client sent
    assert error["message"].startswith("the messages take 105 tokens as a transcript and max_tokens is 250")
    newer = {**fits, "max_tokens": None, "max_completion_tokens": 250}
    error = httpx.post(url + "/v1/chat/completions", json=newer).json()["error"]
    assert error["param"] == "max_completion_tokens" and "max_completion_tokens is 250" in error["message"]


def test_a_prompt_that_fills_the_context_blames_the_prompt(url):
    """A 257-token prompt with max_tokens 1 was told to lower max_tokens, which no value of could help."""
    error = httpx.post(url + "/v1/completions", json={"prompt": [5] * 256, "max_tokens": 1}).json()["error"]
    assert error["param"] == "prompt" and error["code"] == "context_length_exceeded"
    assert "shorten the prompt" in error["message"] and "max_tokens" not in error["message"]


UNHONOURED = [  # chat fields GPT-2 cannot honour: a 400 naming them, never a reply that ignores them
    ("response_format", {"type": "json_object"}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
    ("tool_choice", "required"),
    ("tool_choice", {"type": "function", "function": {"name": "f"}}),
    ("function_call", {"name": "f"}),
    ("function_call", "required"),
    ("modalities", ["text", "audio"]),
    ("audio", {"voice": "alloy", "format": "wav"}),
    ("web_search_options", {}),  # {} searches, with the default context size
    ("reasoning_effort", "low"),
    ("verbosity", "low"),
    ("continue_final_message", True),  # vLLM's
    ("echo", True),  # vLLM's chat echo
]


@pytest.mark.parametrize(("field", "value"), UNHONOURED)
def test_chat_refuses_what_it_would_ignore(url, field, value):
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    r = httpx.post(url + "/v1/chat/completions", json={**body, field: value})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field
    if field == "response_format":  # named as sent, not always "JSON"
        assert repr(value["type"]) in r.json()["error"]["message"]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    fine = [
        {"response_format": {"type": "text"}},
        {"tools": tools, "tool_choice": "auto"},
        {"functions": [tools[0]["function"]], "function_call": "auto"},
        {"logit_bias": {}},
        {"logit_bias": {"50256": -100}},
        {"modalities": ["text"]},
        # what only labels, routes or bills a request, or asks for what npgpt does anyway
        {"user": "u1", "store": True, "metadata": {"k": "v"}, "service_tier": "auto", "prompt_cache_key": "k"},
        {"safety_identifier": "s", "parallel_tool_calls": False},
        {"prediction": {"type": "content", "content": "x"}},  # only speeds up the same reply
        {"echo": False, "continue_final_message": False, "web_search_options": None},
    ]
    for extra in fine:
        assert httpx.post(url + "/v1/chat/completions", json={**body, **extra}).status_code == 200, extra


IGNORED_BUT_TYPED = [  # (endpoint, field, a value of the wrong type, the JSON type the message names)
    *[
        (path, field, value, wanted)
        for path in ("/v1/completions", "/v1/chat/completions")
        for field, value, wanted in [
            ("user", 5, "a string"),
            ("metadata", "x", "an object"),
            ("metadata", {"k": 1}, "a string"),  # metadata.k: OpenAI's values are strings
            ("store", "yes", "a boolean"),
            ("service_tier", 5, "a string"),
            ("prompt_cache_key", 5, "a string"),
            ("safety_identifier", [1], "a string"),
            ("priority", "high", "an integer"),  # vLLM's
            ("request_id", 3, "a string"),
            ("cache_salt", 1, "a string"),
            ("add_special_tokens", "no", "a boolean"),
            ("skip_special_tokens", "no", "a boolean"),
            ("spaces_between_special_tokens", 0, "a boolean"),
        ]
    ],
    ("/v1/chat/completions", "tools", "x", "an array"),
    ("/v1/chat/completions", "tools", ["x"], "an object"),
    ("/v1/chat/completions", "tools", [{"type": "function", "function": "f"}], "an object"),
    ("/v1/chat/completions", "tools", [{"type": "function", "function": {"name": 5}}], "a string"),
    ("/v1/chat/completions", "functions", {"name": "f"}, "an array"),
    ("/v1/chat/completions", "parallel_tool_calls", "yes", "a boolean"),
    ("/v1/chat/completions", "prediction", "x", "an object"),
    ("/v1/chat/completions", "prediction", {"type": "content", "content": 5}, "a string"),
    ("/v1/chat/completions", "chat_template_kwargs", [], "an object"),
    ("/v1/chat/completions", "stream_options", "x", "an object"),
]


@pytest.mark.parametrize(("path", "field", "value", "wanted"), IGNORED_BUT_TYPED)
def test_a_field_accepted_and_ignored_still_has_its_type(url, path, field, value, wanted):
    """``"user": 5`` or ``"tools": "x"`` were answered as if they were right, since npgpt ignores the fields;
    OpenAI answers a wrong type with a 400 naming the field, whatever the field does."""
    body = {"prompt": "x"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "x"}]}
    r = httpx.post(url + path, json={**body, "max_tokens": 1, field: value})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"].startswith(field) and f"expected {wanted}" in error["message"], error
    assert error["message"].startswith(f"Invalid type for '{error['param']}'"), error


def test_a_function_tool_without_its_function_is_a_400():
    """``tools: [{"type": "function"}]`` names no function: OpenAI's missing parameter, not a tool accepted."""
    from fastapi.testclient import TestClient

    with TestClient(create_app({"tiny": tiny_model()})) as http:
        body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1, "tools": [{"type": "function"}]}
        error = http.post("/v1/chat/completions", json=body).json()["error"]
        assert error == {
            "message": "Missing required parameter: 'tools[0].function'.",
            "type": "invalid_request_error",
            "param": "tools[0].function",
            "code": None,
        }


@pytest.mark.parametrize(
    ("path", "field", "value", "says"),
    [
        ("/v1/completions", "max_completion_tokens", 3, "send max_tokens"),
        ("/v1/completions", "max_completion_tokens", 0, "send max_tokens"),
        ("/v1/completions", "top_logprobs", 3, "logprobs is the number of alternatives"),
        ("/v1/chat/completions", "best_of", 3, "use n"),
        ("/v1/chat/completions", "suffix", "y", "a chat reply has no text after it"),
    ],
)
def test_the_other_endpoints_field_is_refused_not_ignored(url, path, field, value, says):
    """``max_completion_tokens: 3`` sent to /v1/completions (chat's name, which the openai client's docs now give
    for max_tokens) generated max_tokens' default of 16 tokens; completions' ``top_logprobs``, chat's ``best_of``
    and ``suffix`` were ignored likewise. OpenAI answers the other endpoint's fields with a 400: so does npgpt,
    naming the field meant; null, or a value that changes nothing, is still accepted."""
    body = {"prompt": "x"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "x"}]}
    r = httpx.post(url + path, json={**body, "max_tokens": 2, field: value})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == field and says in error["message"], r.text
    for same in (None, {"best_of": 1, "suffix": ""}.get(field)):
        assert httpx.post(url + path, json={**body, "max_tokens": 2, field: same}).status_code == 200, same
    if field == "best_of":  # best_of = n: n samples, all of them returned
        assert httpx.post(url + path, json={**body, "max_tokens": 2, "n": 3, field: 3}).status_code == 200


@pytest.mark.parametrize("message", [{"role": "user"}, {"role": "system", "content": None}])
def test_a_message_without_content_is_refused_but_the_assistants(url, message):
    body = {"messages": [{"role": "user", "content": "x"}, message], "max_tokens": 1}
    r = httpx.post(url + "/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[1].content", r.text
    assistant = {"role": "assistant", "content": None}
    assert httpx.post(url + "/v1/chat/completions", json={**body, "messages": [assistant]}).status_code == 200


def test_usage_counts_each_prompt_once_and_every_token_generated(client, model):
    """OpenAI's and vLLM's count, streamed or not: a "length" choice used all of max_tokens, whatever its text."""
    messages = [{"role": "user", "content": "Hello"}]
    kw = dict(model="tiny", messages=messages, max_tokens=4, n=3, temperature=0, extra_body={"ignore_eos": True})
    plain = client.chat.completions.create(**kw)
    assert {c.finish_reason for c in plain.choices} == {"length"}
    n_prompt = len(model.tokenizer.encode(chat_prompt([ChatMessage(**m) for m in messages])))
    assert (plain.usage.prompt_tokens, plain.usage.completion_tokens, plain.usage.total_tokens) == (
        n_prompt,
        12,
        n_prompt + 12,
    )
    streamed = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert streamed[-1].usage == plain.usage and streamed[-1].choices == []


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("include_usage", [True, False])
def test_with_include_usage_every_other_chunk_has_a_null_usage(url, path, include_usage):
    """OpenAI's stream_options.include_usage: "All other chunks will also include a usage field, but with a null
    value". npgpt's chunks had no usage key, so a client reading chunk["usage"] from the JSON (as OpenAI documents
    it) failed with a KeyError on the first chunk. Without include_usage no chunk has the key, as in OpenAI's."""
    body = {
        "model": "tiny",
        "max_tokens": 3,
        "n": 2,
        "stream": True,
        "stream_options": {"include_usage": include_usage},
    }
    body |= {"prompt": "x"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "x"}]}
    with httpx.stream("POST", url + path, json=body, timeout=60) as r:
        assert r.status_code == 200
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    if include_usage:
        assert all(c["usage"] is None for c in chunks[:-1]) and chunks[-1]["usage"]["completion_tokens"] == 6
        assert chunks[-1]["choices"] == []
    else:
        assert all("usage" not in c for c in chunks)


@pytest.mark.parametrize("chat", [False, True])
def test_continuous_usage_stats_puts_the_usage_so_far_on_every_chunk(client, model, chat):
    """vLLM's stream_options.continuous_usage_stats was ignored: a client reading usage from each chunk got none.
    A choice's chunk carries that choice's usage so far (its prompt's tokens and its own generated ones), as vLLM's
    serving_chat/serving_completion do (previous_num_tokens[i]); the last chunk, the whole request's."""
    kw = dict(model="tiny", max_tokens=5, n=2, temperature=0, extra_body={"ignore_eos": True})
    options = {"include_usage": True, "continuous_usage_stats": True}
    if chat:
        messages = [{"role": "user", "content": "Hello"}]
        chunks = list(client.chat.completions.create(messages=messages, **kw, stream=True, stream_options=options))
        prompts = [len(model.tokenizer.encode(chat_prompt([ChatMessage(**m) for m in messages])))] * 2
    else:
        texts = ["Hello", "Hello there, world"]
        chunks = list(client.completions.create(prompt=texts, **kw, stream=True, stream_options=options))
        prompts = [len(model.tokenizer.encode(t)) for t in texts for _ in range(2)]
    assert all(
        c.usage is not None and c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens
        for c in chunks
    )
    for i, n_prompt in enumerate(prompts):
        own = [c.usage for c in chunks if c.choices and c.choices[0].index == i]
        assert own and all(u.prompt_tokens == n_prompt for u in own), (i, own)
        done = [u.completion_tokens for u in own]
        assert done == sorted(done) and done[-1] == 5, (i, done)
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == 5 * len(prompts)
    assert last.usage.prompt_tokens == sum(prompts[::2])
    with pytest.raises(openai.BadRequestError) as e:  # as vLLM reads it, only with include_usage: never ignored
        list(
            client.completions.create(
                prompt="Hello", **kw, stream=True, stream_options={"continuous_usage_stats": True}
            )
        )
    assert (
        e.value.body["param"] == "stream_options.continuous_usage_stats" and "include_usage" in e.value.body["message"]
    )


def test_an_unknown_model_is_the_clients_not_found_error(client):
    """OpenAI and vLLM answer an unknown ``model`` with 404, which the openai client raises as NotFoundError."""
    messages = [{"role": "user", "content": "x"}]
    for create in (
        lambda: client.completions.create(model="gpt-3.5-turbo-instruct", prompt="x", max_tokens=1),
        lambda: client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=1),
        lambda: client.models.retrieve("gpt-4o"),
    ):
        with pytest.raises(openai.NotFoundError) as e:
            create()
        assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"


def test_api_key(model):
    with background_server(create_app({"tiny": model}, api_key="sesame")) as base:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sesame"}):
            r = httpx.post(base + "/v1/completions", json={"prompt": "x"}, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(base + "/v1/models").status_code == 401
        assert httpx.get(base + "/health").status_code == 200
        good = openai.OpenAI(base_url=base + "/v1", api_key="sesame", max_retries=0)
        assert good.completions.create(model="tiny", prompt="x", max_tokens=2).choices[0].text is not None
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base + "/v1", api_key="nope", max_retries=0).models.list()


@pytest.mark.parametrize("key", [None, "sesame"])
def test_cors_only_for_the_allowed_origins(model, key):
    """A browser page from another origin may call the server only if allowed_origins names it: its
    preflight OPTIONS is answered (before the key is asked for: a preflight carries none), and its
    responses carry Access-Control-Allow-Origin. Without it, same-origin only (the preflight got 405)."""
    page = "http://localhost:3000"
    preflight = {
        "Origin": page,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"prompt": "x", "max_tokens": 2}
    for origins, allowed in [((), None), ([page], page), (["https://other.example"], None), (["*"], "*")]:
        with background_server(create_app({"tiny": model}, api_key=key, allowed_origins=origins)) as base:
            r = httpx.options(base + "/v1/completions", headers=preflight)
            assert r.headers.get("access-control-allow-origin") == allowed, origins
            if allowed:
                assert r.status_code == 200 and "POST" in r.headers["access-control-allow-methods"]
                assert "authorization" in r.headers["access-control-allow-headers"].lower()
            r = httpx.post(base + "/v1/completions", json=body, headers={"Origin": page, **auth})
            assert r.status_code == 200 and r.headers.get("access-control-allow-origin") == allowed, origins
            r = httpx.post(base + "/v1/completions", json=body)  # no Origin: not a cross-origin call
            assert r.status_code == (401 if key else 200) and "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(
    "bad", ["localhost:3000", "http://localhost:3000/", "https://a.example/app", "://x", "http://a.example:99999"]
)
def test_serve_refuses_an_origin_a_browser_never_sends(bad):
    from conftest import run_cli

    r = run_cli("serve", "--allowed-origins", f"http://ok.example,{bad}", "--port", "1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and repr(bad) in r.stderr and "scheme://host" in r.stderr


def test_allowed_origins_are_written_as_a_browser_sends_them():
    """The Origin header is compared as a string: HTTP://UP.COM or http://a.com:80 matched nothing a browser sends."""
    from npgpt.cli.serve import parse_origins

    given = "HTTP://UP.Example, http://a.example:80,https://b.example:443,http://[::1]:3000,https://c.example:8443,*"
    assert parse_origins(given) == [
        "http://up.example",
        "http://a.example",
        "https://b.example",
        "http://[::1]:3000",
        "https://c.example:8443",
        "*",
    ]


def test_ollamas_wildcard_origins_are_taken():
    """OLLAMA_ORIGINS, read as --allowed-origins, holds Ollama's wildcard origins (its FAQ's chrome-extension://*,
    moz-extension://*; its defaults' http://localhost:*): npgpt serve refused to start ("OLLAMA_ORIGINS:
    'chrome-extension://*' is not an origin"), for a variable set for Ollama. They are taken, as Ollama takes them: a
    * is any run of characters but /, and a page from another origin is still refused."""
    from fastapi.testclient import TestClient

    from npgpt.cli.serve import parse_origins

    origins = parse_origins("Chrome-Extension://*, http://localhost:*,https://ok.example")
    assert origins == ["chrome-extension://*", "http://localhost:*", "https://ok.example"]
    app = create_app({"tiny": GPT2(TINY, init_params(TINY, seed=0))}, allowed_origins=origins)
    asks = {"Access-Control-Request-Method": "POST"}
    with TestClient(app) as c:
        for origin, allowed in (
            ("chrome-extension://abcdefghij", True),
            ("http://localhost:5173", True),
            ("https://ok.example", True),
            ("http://evil.example", False),
            ("http://localhost.evil.example", False),
            ("https://x.example/chrome-extension://a", False),
        ):
            r = c.options("/v1/completions", headers={"Origin": origin, **asks})
            assert (r.status_code == 200) is allowed, (origin, r.text)
            assert (r.headers.get("access-control-allow-origin") == origin) is allowed, origin
            r = c.get("/v1/models", headers={"Origin": origin})
            assert (r.headers.get("access-control-allow-origin") == origin) is allowed, origin


class Gate:
    """Wraps a backend's forward: blocks until opened, or sleeps ``delay`` per call."""

    def __init__(self, forward, delay: float = 0.0) -> None:
        self.forward, self.delay = forward, delay
        self.opened, self.entered = threading.Event(), threading.Event()
        self.calls = 0  # forward passes run: prefills and decode steps
        if delay:
            self.opened.set()

    def __call__(self, *args, **kw):
        self.entered.set()
        self.calls += 1
        self.opened.wait(30)
        time.sleep(self.delay)
        return self.forward(*args, **kw)


def gated_model(delay: float = 0.0) -> tuple[GPT2, Gate]:
    m = tiny_model()
    gate = Gate(m.backend.forward, delay)
    m.engine.backend = dataclasses.replace(m.backend, forward=gate)
    return m, gate


def test_full_queue_gets_503_with_retry_after():
    m, gate = gated_model()
    with background_server(create_app({"tiny": m}, max_batch=1, max_queue=1)) as base, ThreadPoolExecutor(2) as pool:
        body = {"prompt": "queued", "max_tokens": 4, "temperature": 0}
        first = pool.submit(httpx.post, base + "/v1/completions", json=body, timeout=60)
        assert gate.entered.wait(10)  # the first request is in the batch, its prefill held at the gate
        second = pool.submit(httpx.post, base + "/v1/completions", json=body, timeout=60)
        deadline = time.time() + 10
        while httpx.get(base + "/health").json()["models"]["tiny"]["queued_requests"] < 1:
            assert time.time() < deadline
            time.sleep(0.01)
        r = httpx.post(base + "/v1/completions", json=body)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert r.json()["error"]["code"] == "queue_full"
        gate.opened.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert first.result().json()["choices"][0]["text"] == second.result().json()["choices"][0]["text"]
        assert httpx.post(base + "/v1/completions", json=body).status_code == 200


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_frees_its_rows(stream):
    m, gate = gated_model(delay=0.02)  # 100 tokens would take over 2 s
    with background_server(create_app({"tiny": m})) as base:
        body = {"prompt": "leaving", "max_tokens": 100, "stream": stream}
        t0 = time.perf_counter()
        if stream:
            with httpx.stream("POST", base + "/v1/completions", json=body) as r:
                next(r.iter_lines())
        else:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(base + "/v1/completions", json=body, timeout=0.3)
        while httpx.get(base + "/health").json()["models"]["tiny"]["active_rows"]:
            assert time.perf_counter() - t0 < 60, "the rows of a departed client were never freed"  # a hang bound
            time.sleep(0.02)
        # Freed, not run to the end: a finished request would have taken a prefill + 99 decode steps.
        assert gate.calls < 50, f"{gate.calls} forward passes ran for a client that left after its first token"
        r = httpx.post(base + "/v1/completions", json={"prompt": "next", "max_tokens": 2})
        assert r.status_code == 200


@pytest.mark.parametrize("stream", [True, False])
def test_a_scoring_client_that_leaves_stops_its_scoring(stream):
    """lm-evaluation-harness's loglikelihood (echo, logprobs, max_tokens 0) over many prompts is one forward
    pass a prompt; a client that times out (the openai client then retries it, twice by default) must not
    leave the rest of its prompts to be scored for nobody."""
    m, gate = gated_model(delay=0.1)  # 60 prompts would take 6 s
    with background_server(create_app({"tiny": m})) as base:
        body = {"prompt": [f"prompt {i}" for i in range(60)], "max_tokens": 0, "echo": True, "logprobs": 1}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(base + "/v1/completions", json={**body, "stream": stream}, timeout=0.3)
        # No timing threshold: wait (up to 60 s, for a loaded machine) until the scoring stops, whenever that is;
        # without the check it stops only after all 60 prompts, ~6 s after the client left.
        deadline, calls = time.monotonic() + 60, None
        while calls is None and time.monotonic() < deadline:
            before = gate.calls
            time.sleep(0.5)  # ~5 prompts while it still scores (the client is looked for every 0.25 s)
            calls = before if gate.calls == before else None
        assert calls is not None, "the prompts of a departed client were still being scored after 60 s"
        assert calls < 60, "every prompt was scored for a client that left after 0.3 s"
        r = httpx.post(base + "/v1/completions", json={"prompt": "next", "max_tokens": 2})
        assert r.status_code == 200


# -- continuous batching ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "backend, dtype", [("numpy", "float32"), ("torch", "float32"), ("torch", "float16"), ("torch", "bfloat16")]
)
def test_scheduler_rows_join_and_leave_the_batch(backend, dtype):
    """More rows than max_batch, arriving at different times, with different params: each equals the API."""
    if backend != "numpy":
        pytest.importorskip(backend)
    model = GPT2(TINY, init_params(TINY, seed=0), backend=backend, dtype=dtype)
    sched = Scheduler(model, max_batch=3)
    specs = [
        ("Red", dict(max_new_tokens=20, seed=1, top_k=50), 4),
        ("Green apples are", dict(max_new_tokens=5, temperature=0), 1),
        ("Blue", dict(max_new_tokens=30, seed=2, top_p=0.8, stop=("e",)), 2),
        ("A long prompt " * 10, dict(max_new_tokens=12, seed=3, repetition_penalty=1.3), 1),
    ]
    try:
        inboxes = []
        for prompt, kw, n in specs:
            inbox: queue.Queue = queue.Queue()
            sched.submit(Request([model.tokenizer.encode(prompt)] * n, SamplingParams(**kw), inbox.put))
            inboxes.append(inbox)
            time.sleep(0.005)
        for (prompt, kw, n), inbox in zip(specs, inboxes, strict=True):
            texts, tokens, left = [""] * n, [[] for _ in range(n)], n
            while left:
                ev = inbox.get(timeout=30)
                texts[ev.row] += ev.text
                tokens[ev.row].append(ev.token)
                left -= ev.finish_reason is not None
            ref = model.completions([prompt] * n, **kw)
            assert texts == [c.text for c in ref] and tokens == [c.tokens for c in ref]
        assert sched.active == 0 and sched.queued == 0
    finally:
        sched.close()


def test_logit_bias_stays_in_its_own_row(model):
    """Rows of one prompt share the prefill's logits, and a finished row's place is taken by the next:
    one request's logit_bias (and penalties) must never reach another's tokens."""
    ids = model.tokenizer.encode("The same prompt")
    greedy = model.completions([ids], max_new_tokens=6, temperature=0)[0].tokens
    ban = {t: -100 for t in greedy}  # every token greedy picked
    specs = [  # (params, rows); the first two share the prefill, the last takes a finished row's place
        (dict(max_new_tokens=6, temperature=0, logit_bias=ban), 1),
        (dict(max_new_tokens=6, temperature=0), 1),
        (dict(max_new_tokens=2, temperature=0, logit_bias={greedy[0]: 100}, frequency_penalty=2.0), 1),
        (dict(max_new_tokens=6, temperature=0), 2),
    ]
    sched = Scheduler(model, max_batch=3)
    try:
        gate = threading.Event()
        sched.call(gate.wait)  # holds the worker, so the first three rows are admitted in one prefill
        inboxes = []
        for kw, n in specs:
            inboxes.append(inbox := queue.Queue())
            sched.submit(Request([ids] * n, SamplingParams(**kw), inbox.put))
        gate.set()
        for (kw, n), inbox in zip(specs, inboxes, strict=True):
            tokens, left = [[] for _ in range(n)], n
            while left:
                ev = inbox.get(timeout=30)
                tokens[ev.row].append(ev.token)
                left -= ev.finish_reason is not None
            assert tokens == [c.tokens for c in model.completions([ids] * n, **kw)]
        assert not set(greedy) & set(model.completions([ids], **specs[0][0])[0].tokens)
    finally:
        sched.close()


def test_concurrent_clients_get_their_own_results(client, model):
    """16 clients at once, each with its own prompt and sampling: each gets what the API gives it alone."""

    def params(i: int) -> dict:
        return dict(
            max_tokens=6 + i // 2,
            temperature=[0, 0.7, 1.0, 1.3][i % 4],
            top_p=0.9 if i % 5 == 1 else 1.0,
            seed=100 + i,
            presence_penalty=0.1 * (i % 3),
            n=1 + i % 3,
        )  # (top_p costs a sort per token)

    def one(i: int) -> list[str]:
        r = client.completions.create(model="tiny", prompt=f"Client {i} says", **params(i))
        return [c.text for c in r.choices]

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(one, range(16)))
    for i in range(16):
        kw = params(i)
        n, kw["max_new_tokens"] = kw.pop("n"), kw.pop("max_tokens")
        assert got[i] == [c.text for c in model.completions([f"Client {i} says"] * n, **kw)], i


@pytest.mark.slow
def test_batching_speedup_for_16_clients(tmp_path):
    """16 concurrent requests must take at least 3x fewer decode steps than the same 16 one after another.

    The server is the real ``npgpt serve`` in a subprocess with one BLAS thread: on a shared
    2-core machine, BLAS threads spinning against other processes make timings noise.
    """
    cfg = GPT2Config(n_ctx=128, n_embd=256, n_head=4, n_layer=4)  # the tied 50257-row head dominates a step
    params = init_params(cfg, seed=0)
    path = npgpt_format.save(tmp_path / "bench.safetensors", cfg, params)
    prompts = [f"Request number {i} is about" for i in range(16)]
    server, base = start_server(f"bench={path}", "--max-batch", "16", log=tmp_path / "server.log")
    try:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=300)

        def one(prompt: str) -> tuple[str, int, float]:
            t = time.perf_counter()
            r = client.completions.create(model="bench", prompt=prompt, max_tokens=32, temperature=0)
            return r.choices[0].text, r.usage.completion_tokens, time.perf_counter() - t

        one("warm up")
        steps_before = _steps(httpx.get(base + "/metrics").text)
        t0 = time.perf_counter()
        sequential = [one(p) for p in prompts]
        t_seq = time.perf_counter() - t0
        steps_between = _steps(httpx.get(base + "/metrics").text)
        with ThreadPoolExecutor(16) as pool:
            t0 = time.perf_counter()
            concurrent = list(pool.map(one, prompts))
            t_con = time.perf_counter() - t0
        metrics = httpx.get(base + "/metrics").text
    finally:
        server.terminate()
        server.wait(30)
    expected = [c.text for c in GPT2(cfg, params).completions(prompts, max_new_tokens=32, temperature=0)]
    assert [c[0] for c in sequential] == expected
    assert [c[0] for c in concurrent] == expected
    tokens = sum(c[1] for c in concurrent)
    assert tokens == sum(c[1] for c in sequential)
    lat = sorted(c[2] for c in concurrent)
    p50, p95 = statistics.median(lat), lat[round(0.95 * (len(lat) - 1))]
    seq_lat = sorted(c[2] for c in sequential)
    speedup = t_seq / t_con
    print(
        f"\n16 clients x {tokens / 16:.0f} tokens: one after another {tokens / t_seq:.0f} tok/s (latency p50 "
        f"{statistics.median(seq_lat):.2f} s), concurrent {tokens / t_con:.0f} tok/s (latency p50 {p50:.2f} s, "
        f"p95 {p95:.2f} s): {speedup:.1f}x"
    )
    big = _bucket(metrics, "16") - _bucket(metrics, "8")
    assert big > 0, "no decode step ran more than 8 rows: the requests were not batched"
    # Batching, counted rather than timed (a timed threshold is noise on a shared 2-core machine; the speedup
    # above is a figure): 16 rows per step instead of 1 must take at least 3x fewer decode steps.
    seq_steps, con_steps = steps_between - steps_before, _steps(metrics) - steps_between
    assert 3 * con_steps <= seq_steps, f"{con_steps} decode steps for 16 concurrent requests, {seq_steps} one by one"


def _steps(metrics: str) -> int:
    line = 'npgpt_batch_size_count{model="bench",kind="decode"} '
    return int(next((x for x in metrics.splitlines() if x.startswith(line)), line + "0").split()[-1])


def _bucket(metrics: str, le: str) -> int:
    line = f'npgpt_batch_size_bucket{{model="bench",kind="decode",le="{le}"}} '
    return int(next(x for x in metrics.splitlines() if x.startswith(line)).split()[-1])


def test_serve_help_has_an_example():
    from typer.testing import CliRunner

    from npgpt.cli import app

    r = CliRunner().invoke(app, ["serve", "--help"])
    assert r.exit_code == 0 and "Example" in r.output and "--max-batch" in r.output and "--allowed-origins" in r.output


def test_a_model_named_with_a_slash_is_retrieved(model):
    """Names such as ``openai-community/gpt2`` are common (vLLM serves under the Hugging Face id): the openai
    client's ``models.retrieve`` sends the name as it is in the path, ``GET /v1/models/org/gpt2``."""
    from fastapi.testclient import TestClient

    with TestClient(create_app({"org/gpt2": model})) as http:
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http, max_retries=0)
        assert client.models.retrieve("org/gpt2").id == "org/gpt2"
        with pytest.raises(openai.NotFoundError) as e:
            client.models.retrieve("org/gpt3")
        assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
        assert "org/gpt2" in e.value.body["message"]  # the names served, to choose from
        assert http.get("/v1/models/").json()["data"][0]["id"] == "org/gpt2"
        # a trailing slash, as every other URL takes it (it was "model 'org/gpt2/' is not served here")
        assert http.get("/v1/models/org/gpt2/").json()["id"] == "org/gpt2"
        assert http.get("/v1/models//").json()["object"] == "list"


NOT_TEXT = [
    (
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}]},
        "messages[1].content[1].type",
        "'image_url' is not supported: GPT-2 reads text only",
    ),
    (
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]},
        "messages[1].content[0].type",
        "'input_audio' is not supported: GPT-2 reads text only",
    ),
    ({"role": "user", "content": [{"type": "text"}]}, "messages[1].content[0].text", "Missing required parameter"),
    ({"role": "robot", "content": "x"}, "messages[1].role", "one of system, developer, user, assistant, tool"),
    # a call is the assistant's: OpenAI refuses it on another message, and its shape is OpenAI's
    (
        {"role": "user", "content": "x", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}]},
        "messages[1].tool_calls",
        "an assistant message's field",
    ),
    ({"role": "assistant", "tool_calls": [{"id": "c1", "type": "x"}]}, "messages[1].tool_calls[0].type", "one of"),
    ({"role": "assistant", "tool_calls": [{"id": "c1"}]}, "messages[1].tool_calls[0].function", "Missing required"),
    (
        {"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]},
        "messages[1].tool_calls[0].function.name",
        "Missing",
    ),
    ({"role": "tool", "tool_call_id": "c1"}, "messages[1].content", "a tool message needs content"),
    ({"role": "function", "content": "42"}, "messages[1].name", "names the function"),
    # an assistant turn's refusal or audio has no line in the transcript: it was silently dropped
    ({"role": "assistant", "content": None, "refusal": "I can't."}, "messages[1].refusal", "put it in content"),
    ({"role": "assistant", "audio": {"id": "audio_1"}}, "messages[1].audio", "GPT-2 reads text only"),
    ({"role": "user", "content": "x", "name": "Alice\nAssistant:"}, "messages[1].name", "does not match pattern"),
    ({"role": "user", "content": "x", "name": "a b"}, "messages[1].name", "does not match pattern"),
]


@pytest.mark.parametrize(("message", "param", "says"), NOT_TEXT, ids=range(len(NOT_TEXT)))
def test_a_message_the_transcript_cannot_hold_is_refused_saying_why(url, message, param, says):
    body = {"messages": [{"role": "user", "content": "x"}, message], "max_tokens": 1}
    r = httpx.post(url + "/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert says in r.json()["error"]["message"] and "\n" not in r.json()["error"]["message"]


def test_a_message_with_null_or_empty_calls_refusal_or_audio_is_the_same_message(client, model):
    """Clients (langchain, litellm) send an assistant turn back as they got it: tool_calls [] or null and
    refusal null change nothing, so they are read, not refused."""
    plain = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yes"}]
    empty = {"tool_calls": [], "function_call": None, "refusal": None, "audio": None}
    for extra in (empty, {"tool_calls": None, "refusal": ""}, {"tool_calls": "", "function_call": {}}):
        sent = [plain[0], {**plain[1], **extra}, {"role": "user", "content": "Go"}]
        r = client.chat.completions.create(model="tiny", messages=sent, max_tokens=4, seed=3)
        ref = client.chat.completions.create(model="tiny", messages=[*plain, sent[2]], max_tokens=4, seed=3)
        assert r.choices[0].message.content == ref.choices[0].message.content
        assert r.usage.prompt_tokens == ref.usage.prompt_tokens


TOOL_HISTORY = [  # an agent's history as LangChain and litellm send it back: a call, its result, then the reply
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
]
TOOL_TRANSCRIPT = (
    "User: Weather in Paris?\n"
    'Assistant: get_weather({"city": "Paris"}); get_time({})\n'
    "Tool (get_weather): 18 C, sunny\n"
    "Tool (get_time): noon\n"
    "Assistant:"
)


def test_a_history_with_tool_calls_and_results_is_read(client, model):
    """A ``tool`` message (and an assistant turn with ``tool_calls`` and null content) was a 400, so an agent
    (LangChain's, litellm's) could not send back a tool's result at all, where vLLM reads them into its template.
    The calls are written on the assistant's line, each result is a ``Tool`` line named by the function whose call
    it answers, and the reply also stops where the model starts to write a tool's result itself."""
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    r = client.chat.completions.create(model="tiny", messages=TOOL_HISTORY, tools=tools, max_tokens=8, seed=3)
    assert r.usage.prompt_tokens == len(model.tokenizer.encode(TOOL_TRANSCRIPT))
    ref = model.generate(TOOL_TRANSCRIPT, max_new_tokens=8, seed=3, stop=["\nUser:", "\nTool:", "\nTool ("])
    assert r.choices[0].message.content == ref.lstrip() and r.choices[0].message.tool_calls is None
    # the deprecated forms: an assistant's function_call, answered by a function message naming it
    old = [
        TOOL_HISTORY[0],
        {"role": "assistant", "content": "", "function_call": TOOL_HISTORY[1]["tool_calls"][0]["function"]},
        {"role": "function", "name": "get_weather", "content": "18 C, sunny"},
    ]
    r = client.chat.completions.create(model="tiny", messages=old, max_tokens=1)
    transcript = 'User: Weather in Paris?\nAssistant: get_weather({"city": "Paris"})\nTool (get_weather): 18 C, sunny'
    assert r.usage.prompt_tokens == len(model.tokenizer.encode(transcript + "\nAssistant:"))


def test_a_message_name_labels_its_line_of_the_transcript(client, model):
    """``name`` was accepted and dropped: two users, or a user and the assistant's persona, read as one speaker."""
    messages = [{"role": "user", "content": "Hi", "name": "Alice"}, {"role": "user", "content": "Yo", "name": "Bob"}]
    prompt = "User (Alice): Hi\nUser (Bob): Yo\nAssistant:"
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, seed=3)
    assert r.usage.prompt_tokens == len(model.tokenizer.encode(prompt))
    ref = model.generate(prompt, max_new_tokens=8, seed=3, stop=["\nUser:", "\nUser ("]).lstrip()
    assert r.choices[0].message.content == ref


def test_several_text_parts_are_one_message(client, model):
    """A message's text parts are one text joined by line breaks, as vLLM ("\n".join(texts)) and llama.cpp's server
    join them: ["Translate to French:", "Hello"] was read as "Translate to French:Hello", the parts run together."""
    parts = [{"type": "text", "text": "Translate to French:"}, {"type": "text", "text": "Hello"}]
    kw = dict(model="tiny", max_tokens=6, temperature=0)
    a = client.chat.completions.create(messages=[{"role": "user", "content": parts}], **kw)
    b = client.chat.completions.create(messages=[{"role": "user", "content": "Translate to French:\nHello"}], **kw)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert (
        a.usage.prompt_tokens
        == b.usage.prompt_tokens
        == len(model.tokenizer.encode("User: Translate to French:\nHello\nAssistant:"))
    )
    # the Responses API's text parts, which clients moving between the APIs send and vLLM reads as text, were
    # refused as "'input_text' is not supported: GPT-2 reads text only"
    responses = [{"type": "input_text", "text": "Translate to French:"}, {"type": "output_text", "text": "Hello"}]
    c = client.chat.completions.create(messages=[{"role": "user", "content": responses}], **kw)
    assert c.choices[0].message.content == a.choices[0].message.content
    assert c.usage.prompt_tokens == a.usage.prompt_tokens


def test_refusal_and_thinking_parts_are_read_as_text_as_vllm_reads_them(client, model):
    """An assistant turn sent back with a ``refusal`` part (OpenAI's content part for a refused reply, as its
    client types an assistant message) or a ``thinking`` part (a reasoning model's thoughts, as Anthropic's API and
    LangChain write them back) was a 400 "'refusal' is not supported: GPT-2 reads text only", so the conversation
    could not go on. vLLM reads both as text (its MM_PARSER_MAP: the part's ``refusal`` or ``thinking``), joined
    with the other parts by line breaks; so does npgpt now. A part without its text is refused naming the field."""
    kw = dict(model="tiny", max_tokens=4, seed=3)
    parts = [
        {"type": "thinking", "thinking": "They greet me.", "signature": "abc"},
        {"type": "text", "text": "Hello."},
        {"type": "refusal", "refusal": "I can't do that."},
    ]
    sent = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": parts},
        {"role": "user", "content": "Go"},
    ]
    said = "They greet me.\nHello.\nI can't do that."
    plain = [sent[0], {"role": "assistant", "content": said}, sent[2]]
    a = client.chat.completions.create(messages=sent, **kw)
    b = client.chat.completions.create(messages=plain, **kw)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert (
        a.usage.prompt_tokens
        == b.usage.prompt_tokens
        == len(model.tokenizer.encode(f"User: Hi\nAssistant: {said}\nUser: Go\nAssistant:"))
    )
    for kind in ("refusal", "thinking"):
        bad = [sent[0], {"role": "assistant", "content": [{"type": kind}]}, sent[2]]
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(messages=bad, **kw)
        assert e.value.body["param"] == f"messages[1].content[0].{kind}", e.value.body
        assert e.value.body["message"] == (
            f"Missing required parameter: 'messages[1].content[0].{kind}'; a {kind} part needs its {kind}"
        )


def test_serve_takes_the_model_as_an_argument_too():
    """``npgpt serve bundled`` (vLLM's ``vllm serve MODEL``, and how a new user writes it) was "Got unexpected extra
    argument (bundled)": only ``--model`` named a model. The models given as arguments are served too, first."""
    server, base = start_server("second=bundled", "first=bundled")
    try:
        names = [m["id"] for m in httpx.get(base + "/v1/models").json()["data"]]
        assert names == ["first", "second"], names
        r = httpx.post(base + "/v1/completions", json={"prompt": "And God said", "max_tokens": 2})
        assert r.status_code == 200 and r.json()["model"] == "first", r.text  # the first model is the default
    finally:
        server.terminate()
        server.wait(timeout=30)
