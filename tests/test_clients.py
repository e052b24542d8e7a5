"""What real clients send (issue 14): parameter extremes, special tokens in prompts, exact text offsets,
invalid Unicode, the repetition penalty's reference semantics, and the Python API's traps.

The server runs in-process (FastAPI's TestClient) with the bundled model, whose text is readable
English, so offsets can be checked against tiktoken's own ``gpt2`` encoding.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from npgpt.api import GPT2, load
from npgpt.config import GPT2Config
from npgpt.errors import NpgptError
from npgpt.params import init_params
from npgpt.sampling import SamplingParams, apply_penalties, check_finite, choose
from npgpt.tokenizer import TextOffsets, Tokenizer, default_files

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from npgpt.server import create_app
from npgpt.server.protocol import ChatMessage, chat_prompt

TINY = GPT2Config(n_ctx=64, n_embd=48, n_head=3, n_layer=2)
# A float32 softmax is one-hot once every other logit is this far below the top, divided by the
# temperature: exp(-104) is under float32's smallest subnormal (1.4e-45).
FLOAT32_ONE_HOT = 104.0


@pytest.fixture(scope="module")
def bundled() -> GPT2:
    return load(str(Path(str(default_files()[0])).parent / "bundled.safetensors"))


@pytest.fixture(scope="module")
def client(bundled):
    with TestClient(create_app({"bundled": bundled})) as c:
        yield c


def post(client, body: dict, path: str = "/v1/completions"):
    """POST a body as JSON with \\u escapes (so lone surrogates survive, as a real client sends them)."""
    return client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


def stream(client, body: dict, path: str = "/v1/completions") -> tuple[int, list[dict]]:
    """Status and the parsed SSE events of a streamed request (an error body if it was refused)."""
    with client.stream(
        "POST", path, content=json.dumps({**body, "stream": True}), headers={"Content-Type": "application/json"}
    ) as r:
        if r.status_code != 200:
            return r.status_code, [json.loads(r.read())]
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return 200, [json.loads(e) for e in events[:-1]]


def folded(events: list[dict]) -> dict[int, dict]:
    """Per choice of a completions stream: text, finish_reason and the logprobs lists joined."""
    out: dict[int, dict] = {}
    for e in events:
        for c in e.get("choices", []):
            o = out.setdefault(c["index"], {"text": "", "finish_reason": None, "logprobs": {}})
            o["text"] += c["text"]
            o["finish_reason"] = c["finish_reason"] or o["finish_reason"]
            for k, v in (c["logprobs"] or {}).items():
                o["logprobs"].setdefault(k, []).extend(v)
    return out


# -- 1. parameter extremes ---------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    logits=arrays(np.float32, st.integers(2, 40), elements=st.floats(-40, 40, width=32)),
    log10_t=st.floats(-45, -3),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_tiny_temperature_picks_the_top_token(logits, log10_t, seed) -> None:
    """Wherever float32 softmax would be one-hot, sampling at that temperature picks the top logit;
    exact ties for the top are shared among the tied tokens (never another token)."""
    t = 10.0**log10_t
    token = choose(
        logits, np.zeros(len(logits), np.float32), SamplingParams(temperature=t), np.random.default_rng(seed)
    )
    below = logits[logits < logits.max()]
    gap = float(logits.max()) - float(below.max()) if below.size else math.inf
    if gap / t >= FLOAT32_ONE_HOT:
        assert logits[token] == logits.max()
        if (logits == logits.max()).sum() == 1:
            assert token == int(np.argmax(logits))


def test_tiny_temperatures_equal_greedy(bundled) -> None:
    """A log grid of temperatures from 5e-324 to 1e-3: each small enough for the model's top-2 gaps
    gives the greedy completion (the issue's 1e-39 and 1e-50 gave an empty one)."""
    prompt = "And God said"
    greedy = bundled.completions(prompt, max_new_tokens=12, temperature=0, logprobs=2)[0]
    gap = min(top[0][1] - top[1][1] for top in greedy.top_logprobs)  # logprob gap = logit gap
    temps = [5e-324, 1e-50, 1e-45, 1e-39, *10.0 ** np.arange(-38, -2, 3)]
    must = [t for t in temps if gap / t >= FLOAT32_ONE_HOT]
    assert 1e-39 in must and len(must) >= 12
    for t in must:
        for seed in (0, 1):
            c = bundled.completions(prompt, max_new_tokens=12, temperature=float(t), seed=seed, logprobs=1)[0]
            assert (c.text, c.tokens, c.finish_reason) == (greedy.text, greedy.tokens, greedy.finish_reason), t
            assert c.token_logprobs == pytest.approx(greedy.token_logprobs)


def test_tiny_temperature_over_the_server(client, bundled) -> None:
    want = bundled.generate("And God said", max_new_tokens=8, temperature=0)
    for t in (1e-39, 1e-50):
        r = post(client, {"prompt": "And God said", "max_tokens": 8, "temperature": t, "logprobs": 2})
        c = r.json()["choices"][0]
        assert r.status_code == 200 and c["text"] == want and c["finish_reason"] == "length"
        assert all(
            lp == max(top.values())
            for lp, top in zip(c["logprobs"]["token_logprobs"], c["logprobs"]["top_logprobs"], strict=True)
        )


def test_non_finite_logits_are_refused() -> None:
    ok = np.array([1.0, -np.inf, 0.5], np.float32)  # -inf alone: an impossible token, fine
    check_finite(ok)
    counts, rng = np.zeros(3, np.float32), np.random.default_rng(0)
    assert choose(ok, counts, SamplingParams(temperature=0), rng) == 0
    for bad in ([np.nan, 1.0, 0.0], [1.0, np.inf, 0.0], [-np.inf] * 3):
        for params in (SamplingParams(temperature=0), SamplingParams(temperature=0.7), SamplingParams(top_p=0.5)):
            with pytest.raises(NpgptError, match="not finite"):
                choose(np.array(bad, np.float32), counts, params, rng)


def nan_model() -> GPT2:
    """A model whose logits are all NaN (one NaN in the final layer norm's bias), as a broken checkpoint."""
    params = init_params(TINY, seed=0)
    params["ln_f"]["b"][5] = np.nan
    return GPT2(TINY, params)


def test_nan_logits_end_generation_with_a_clear_error() -> None:
    m = nan_model()
    for kw in ({"temperature": 0}, {"temperature": 0.8, "seed": 1}, {"top_k": 5}):
        with pytest.raises(NpgptError, match="not finite .*broken or a 16-bit computation overflowed"):
            m.generate("In the beginning", max_new_tokens=4, **kw)
    with pytest.raises(NpgptError, match="not finite"):
        m.score("In the beginning")


def test_logits_not_finite_for_one_prompt_of_many_name_that_prompt() -> None:
    """A NaN position embedding that only a long prompt reaches made model.completions([short, long]) say "the
    model's logits are not finite ..." with nothing to tell which of the prompts to look at (a batch of 100 gave no
    clue); the error now begins "prompt 1: " (the index among the prompts given). One prompt's
    says what it said."""
    params = init_params(TINY, seed=0)
    params["wpe"][20] = np.nan  # position 20: only a prompt of 20 tokens or more reaches it
    m = GPT2(TINY, params)
    short, long = [5, 6, 7], list(range(100, 125))
    assert m.completions(short, max_new_tokens=5, temperature=0)[0].tokens  # the short prompt alone is fine
    for prompts in ([short, long], [short, short, long]):
        with pytest.raises(NpgptError, match=f"^prompt {len(prompts) - 1}: the model's logits are not finite"):
            m.completions(prompts, max_new_tokens=5, temperature=0)
    with pytest.raises(NpgptError, match="^the model's logits are not finite"):
        m.generate(long, max_new_tokens=2)


def test_nan_logits_over_the_server(caplog) -> None:
    caplog.set_level(logging.INFO, logger="npgpt.server")
    with TestClient(create_app({"broken": nan_model()})) as c:
        for body in (
            {"prompt": "In the beginning", "max_tokens": 4},
            {"prompt": "In the beginning", "max_tokens": 0, "echo": True, "logprobs": 1},
        ):
            r = post(c, body)
            assert r.status_code == 500, r.text
            error = r.json()["error"]
            assert error["type"] == "server_error" and "not finite" in error["message"]
            # the model's fault, said as scoring says it (not "generation failed for choice 0 failed: NpgptError: ...")
            assert error["code"] == "model_error" and "NpgptError" not in error["message"], error
            assert error["message"].count("failed") == (body["max_tokens"] > 0)
        status, events = stream(c, {"prompt": "In the beginning", "max_tokens": 4})
        assert status == 200 and "not finite" in events[-1]["error"]["message"]
        assert events[-1]["error"]["code"] == "model_error"
        assert not any(ch.get("text") for e in events for ch in e.get("choices", []))
    # the model's expected failure is logged as one line; a traceback is kept for bugs
    failed = [r for r in caplog.records if "not finite" in r.getMessage()]
    assert failed and all(r.exc_info is None and "\n" not in r.getMessage() for r in failed), [
        (r.getMessage(), r.exc_info) for r in caplog.records
    ]
    assert not any(r.exc_info for r in caplog.records), [r.getMessage() for r in caplog.records if r.exc_info]
    from npgpt.server.scheduler import _log_failure

    _log_failure("generation step failed", ZeroDivisionError("a bug"))  # not a user's error: its traceback
    assert caplog.records[-1].exc_info is not None and caplog.records[-1].exc_info[0] is ZeroDivisionError


# -- 3. special tokens in prompts (and, as text, in chat messages) ---------------------------------------
def test_endoftext_in_a_prompt_is_the_special_token(client, bundled) -> None:
    """The issue's example: lm-evaluation-harness's string mode sends the rolling window
    "<|endoftext|>In the beginning..."; its log-likelihood must be the one of [EOT] + the text."""
    text = "<|endoftext|>In the beginning God created the heaven and the earth."
    r = post(client, {"prompt": text, "max_tokens": 0, "echo": True, "logprobs": 0})
    lp = r.json()["choices"][0]["logprobs"]
    want = bundled.score(text, allow_special=True)
    assert want.tokens[0] == bundled.tokenizer.eot_id and lp["tokens"][0] == "<|endoftext|>"
    assert len(lp["tokens"]) == len(want.tokens)
    assert sum(lp["token_logprobs"][1:]) == pytest.approx(want.log_likelihood, abs=1e-4)
    ids = bundled.tokenizer.encode(text, allow_special=True)
    logits = bundled.logits([ids])[0].astype(np.float64)
    direct = sum(
        logits[t - 1, ids[t]] - np.log(np.exp(logits[t - 1] - logits[t - 1].max()).sum()) - logits[t - 1].max()
        for t in range(1, len(ids))
    )
    assert want.log_likelihood == pytest.approx(direct, abs=1e-6)
    assert math.exp(-sum(lp["token_logprobs"][1:]) / (len(ids) - 1)) == pytest.approx(want.perplexity, rel=1e-4)


def test_special_tokens_can_be_turned_off(bundled) -> None:
    usage = {}
    for special in (True, False):
        with TestClient(create_app({"bundled": bundled}, special_tokens=special)) as c:
            r = post(c, {"prompt": "<|endoftext|>In the beginning", "max_tokens": 0, "echo": True})
            usage[special] = r.json()["usage"]["prompt_tokens"]
    as_text = len(bundled.tokenizer.encode("<|endoftext|>"))
    assert usage[True] == 4 and usage[False] == 3 + as_text


def test_endoftext_means_the_same_in_every_prompt_and_is_text_in_chat(bundled) -> None:
    """One rule everywhere: in text to continue (the Python API, the CLI's generate, next and tokenize, the
    server's completions, next_tokens and internals) <|endoftext|> is id 50256 unless the server runs with
    --no-special-tokens; in a chat message (the server's chat, npgpt chat) it is plain text, whatever the flag.
    (The API read it as text while the server read it as the token, and the server's chat read it as the token.)"""
    text = "<|endoftext|>In the beginning"
    tok = bundled.tokenizer
    special, plain = tok.encode(text, allow_special=True), tok.encode(text)
    assert special[0] == tok.eot_id and len(plain) > len(special)
    greedy = {"max_new_tokens": 4, "temperature": 0}
    assert bundled.completions(text, **greedy)[0].tokens == bundled.completions(special, **greedy)[0].tokens
    assert bundled.next_tokens(text, k=3) == bundled.next_tokens(special, k=3)
    message = [{"role": "user", "content": "<|endoftext|>Hi"}]
    transcript = tok.encode(chat_prompt([ChatMessage(**m) for m in message]))  # the message's text as text
    for flag in (True, False):
        want = special if flag else plain
        with TestClient(create_app({"bundled": bundled}, special_tokens=flag)) as c:
            r = post(c, {"prompt": text, "max_tokens": 0, "echo": True})
            assert r.json()["usage"]["prompt_tokens"] == len(want)
            chat = post(c, {"messages": message, "max_tokens": 1}, "/v1/chat/completions").json()
            assert chat["usage"]["prompt_tokens"] == len(transcript)
            top = post(c, {"prompt": text, "k": 3}, "/v1/next_tokens").json()["tokens"]
            assert [(t["id"], t["text"]) for t in top] == [(i, t) for i, t, _ in bundled.next_tokens(want, k=3)]
            inside = post(c, {"prompt": text}, "/v1/internals").json()
            assert len(inside["tokens"]) == len(want)
    assert run_cli("tokenize", "--ids", text).stdout.split() == [str(t) for t in special]


def test_the_tokenizer_is_tiktokens_gpt2(tiktoken_gpt2) -> None:
    tok = Tokenizer()
    assert tok._enc.name == "gpt2"  # clients look the encoding up by this name
    text = "<|endoftext|>In the beginning God created the heaven and the earth. 👋 naïve"
    assert tok.encode(text, allow_special=True) == tiktoken_gpt2.encode(text, allowed_special="all")


def test_serve_has_the_special_tokens_flag() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0 and "--no-special-tokens" in result.stdout


# -- 4. text_offset --------------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(text=st.text(st.sampled_from(list("ab é中👋\n.,")), min_size=1, max_size=30), data=st.data())
def test_text_offsets_equal_tiktokens(text, data, tiktoken_gpt2) -> None:
    ids = tiktoken_gpt2.encode(text)
    i = data.draw(st.integers(0, len(ids) - 1))
    j = data.draw(st.integers(i + 1, len(ids)))
    part = ids[i:j]  # may start or end inside a character
    tracker = TextOffsets(Tokenizer())
    offsets = [tracker.push(t) for t in part]
    decoded = Tokenizer().decode(part)
    assert offsets == sorted(offsets) and all(0 <= o <= len(decoded) for o in offsets)
    assert tracker.length <= len(decoded)
    try:
        _, want = tiktoken_gpt2.decode_with_offsets(part)
    except UnicodeDecodeError:
        return  # not valid UTF-8: tiktoken refuses; ours are offsets into the U+FFFD text
    assert offsets == want


def expected_offsets(tiktoken_gpt2, prompt_ids: list[int], ids: list[int], echo: bool) -> list[int]:
    offsets = tiktoken_gpt2.decode_with_offsets(prompt_ids + ids)[1]
    return offsets if echo else offsets[len(prompt_ids) :]


def test_text_offset_with_a_stop_sequence(client, bundled, tiktoken_gpt2) -> None:
    """The issue's example: " him, Z" held " him" and "," back, and the offsets read [12, 17, 17, 17, ...]."""
    body = {"prompt": "And God said", "max_tokens": 12, "temperature": 0, "logprobs": 0, "stop": [" him, Z"]}
    got = post(client, body).json()["choices"][0]["logprobs"]["text_offset"]
    ref = bundled.completions("And God said", max_new_tokens=12, temperature=0, stop=[" him, Z"])[0]
    want = expected_offsets(tiktoken_gpt2, bundled.tokenizer.encode("And God said"), ref.tokens, False)
    assert got == want and got[:4] == [12, 17, 21, 22]


def test_text_offsets_in_every_mode(client, bundled, tiktoken_gpt2) -> None:
    """Random prompts, seeds, stops (cut from the text itself, so they are held back and hit), echo,
    n and streaming: text_offset always equals decode_with_offsets on the same tokens."""
    rng = np.random.default_rng(14)
    prompts = ["And God said", "In the beginning", "Thou shalt", "And it came to pass, that"]
    checked = 0
    for case in range(10):
        prompt, seed = prompts[case % len(prompts)], int(rng.integers(1000))
        n, echo, streamed = int(rng.integers(1, 3)), bool(case % 2), bool(case // 2 % 2)
        free = bundled.completions(prompt, max_new_tokens=16, temperature=0.9, seed=seed)[0].text
        a = int(rng.integers(0, max(1, len(free) - 3)))
        stop = [free[a : a + int(rng.integers(2, 6))] or "x", "\n\n\n"]
        body = {
            "prompt": prompt,
            "max_tokens": 16,
            "temperature": 0.9,
            "seed": seed,
            "logprobs": 1,
            "n": n,
            "echo": echo,
            "stop": stop,
        }
        if streamed:
            status, events = stream(client, body)
            choices = folded(events)
        else:
            r = post(client, body)
            status, choices = r.status_code, {c["index"]: c for c in r.json()["choices"]}
        assert status == 200
        refs = bundled.completions([prompt] * n, max_new_tokens=16, temperature=0.9, seed=seed, stop=stop)
        prompt_ids = bundled.tokenizer.encode(prompt)
        for i, ref in enumerate(refs):
            c = choices[i]
            assert c["text"] == (prompt if echo else "") + ref.text
            try:
                want = expected_offsets(tiktoken_gpt2, prompt_ids, ref.tokens, echo)
            except UnicodeDecodeError:
                continue
            assert c["logprobs"]["text_offset"] == want, (body, i)
            checked += 1
    assert checked >= 10


def test_text_offset_after_a_prompt_that_ends_inside_a_character(client, bundled) -> None:
    """Token ids cut inside "👋": the prompt's text ends with U+FFFD, and the completion's tokens
    are counted from the end of that text, as the returned text is."""
    ids = bundled.tokenizer.encode("And God said 👋")
    prompt = ids[:-1]
    assert bundled.tokenizer.decode(prompt).endswith("\ufffd")
    c = post(client, {"prompt": prompt, "max_tokens": 4, "temperature": 0, "logprobs": 0, "echo": True}).json()
    c = c["choices"][0]
    offsets, text = c["logprobs"]["text_offset"], c["text"]
    prompt_text = bundled.tokenizer.decode(prompt)
    assert text.startswith(prompt_text) and offsets[len(prompt)] == len(prompt_text)
    assert offsets == sorted(offsets) and offsets[-1] <= len(text)


# -- 5. invalid Unicode ----------------------------------------------------------------------------------
LONE = "a\ud83d b"  # a lone surrogate: valid JSON ("\ud83d"), not valid Unicode
SWEEP = [
    ("/v1/completions", {"prompt": LONE}),
    ("/v1/completions", {"prompt": LONE, "echo": True}),
    ("/v1/completions", {"prompt": LONE, "echo": True, "logprobs": 2}),
    ("/v1/completions", {"prompt": [LONE, "x"], "echo": True}),
    ("/v1/completions", {"prompt": "x", "stop": LONE}),
    ("/v1/completions", {"prompt": "x", "stop": [LONE, "\udc00"]}),
    ("/v1/completions", {"prompt": "x", "user": LONE}),
    ("/v1/completions", {"prompt": "x", "model": LONE}),
    ("/v1/completions", {"prompt": "x", "suffix": LONE}),
    ("/v1/completions", {"prompt": "x", "logit_bias": {LONE: 1}}),
    ("/v1/completions", {"prompt": "x", LONE: 1}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": LONE}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": LONE}]}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x", "name": LONE}]}),
    ("/v1/chat/completions", {"messages": [{"role": LONE, "content": "x"}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "stop": [LONE], "user": LONE}),
]


@pytest.mark.parametrize(("path", "body"), SWEEP, ids=range(len(SWEEP)))
def test_invalid_unicode_is_never_a_server_error(client, path, body) -> None:
    """Every string field: a 400 naming the field or U+FFFD, never a 5xx, the same streamed or not."""
    body = {"max_tokens": 4, "temperature": 0, **body}
    plain = post(client, body, path)
    assert plain.status_code < 500, plain.text
    status, events = stream(client, body, path)
    assert status == plain.status_code, (plain.text, events)
    if status != 200:
        assert events[0]["error"] == plain.json()["error"]
        return
    if path == "/v1/completions":
        texts = {c["index"]: c["text"] for c in plain.json()["choices"]}
        assert {i: c["text"] for i, c in folded(events).items()} == texts
        if body.get("echo"):
            assert plain.json()["choices"][0]["text"].startswith("a\ufffd b")
    else:
        text = "".join(c["delta"].get("content", "") for e in events for c in e["choices"])
        assert text == plain.json()["choices"][0]["message"]["content"]


def test_next_tokens_with_invalid_unicode(client) -> None:
    r = post(client, {"prompt": LONE, "k": 3}, "/v1/next_tokens")
    assert r.status_code == 200 and len(r.json()["tokens"]) == 3


# -- 8. repetition penalty -------------------------------------------------------------------------------
def test_repetition_penalty_equals_transformers(pair) -> None:
    """transformers' RepetitionPenaltyLogitsProcessor penalises the prompt's tokens too; greedy output
    with repetition_penalty=1.5 equals its ``generate`` on identical weights."""
    import torch

    model, ref = pair("odd")
    base = model.tokenizer.encode("the cat sat on the mat")
    ids = base + [int(t) for t in np.argsort(-model.logits([base])[0, -1])[:2]]  # the likeliest next tokens
    with torch.no_grad():
        out = ref.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            repetition_penalty=1.5,
            max_new_tokens=16,
            min_new_tokens=16,
            pad_token_id=0,
        )
    want = out[0, len(ids) :].tolist()
    got = model.completions([ids], max_new_tokens=16, temperature=0, repetition_penalty=1.5, stop_at_eot=False)[0]
    assert got.tokens == want
    # The test can tell: penalising generated tokens only (the old behaviour) or not at all differs.
    p = SamplingParams(temperature=0, repetition_penalty=1.5)
    seq, counts = list(ids), np.zeros(model.config.n_vocab, np.float32)
    for _ in range(16):
        token = int(np.argmax(apply_penalties(model.logits([seq])[0, -1], counts, p)))
        seq.append(token)
        counts[token] += 1
    assert seq[len(ids) :] != want
    assert model.completions([ids], max_new_tokens=16, temperature=0, stop_at_eot=False)[0].tokens != want


# -- 9. API traps ----------------------------------------------------------------------------------------
def test_completions_takes_a_string_as_one_prompt(bundled) -> None:
    one = bundled.completions("And God said", max_new_tokens=4, temperature=0)
    assert len(one) == 1 and one[0].text == bundled.generate("And God said", max_new_tokens=4, temperature=0)
    ids = bundled.tokenizer.encode("And God said")
    assert [c.text for c in bundled.completions(ids, max_new_tokens=4, temperature=0)] == [one[0].text]
    assert [c.text for c in bundled.completions(np.array(ids), max_new_tokens=4, temperature=0)] == [one[0].text]
    assert len(bundled.completions(["And God said", ids], max_new_tokens=2, temperature=0)) == 2
    assert [ev.row for ev in bundled.events("And God said", max_new_tokens=2, temperature=0)] == [0, 0]


def test_unknown_options_name_the_valid_one(bundled) -> None:
    with pytest.raises(NpgptError, match="unknown option 'max_tokens'; did you mean 'max_new_tokens'"):
        bundled.generate("x", max_tokens=3)
    with pytest.raises(NpgptError, match="did you mean 'max_new_tokens'"):
        list(bundled.stream("x", max_tokens=3))
    with pytest.raises(NpgptError, match="did you mean 'temperature'"):
        bundled.completions("x", temprature=0.5)
    with pytest.raises(NpgptError, match="valid options: max_new_tokens, temperature"):
        bundled.generate("x", frobnicate=True)
    with pytest.raises(NpgptError, match="unknown option 'echo'; generate returns the completion only"):
        bundled.generate("x", echo=True)  # another library's option: how to do it in npgpt
    valid = [f for f in SamplingParams.__dataclass_fields__]
    for name in valid:  # every option, misspelt by one letter, is suggested back
        typo = name[:-2] + name[-1] if len(name) > 3 else name + "s"
        with pytest.raises(NpgptError, match=f"did you mean '{name}'") as e:
            SamplingParams.from_options({typo: 1})
        assert e.value.param == typo


# -- the openai client's own stream parser ----------------------------------------------------------------
def test_the_openai_client_reads_every_stream_as_the_plain_answer() -> None:
    """Through the ``openai`` package's own SSE decoder: with n > 1, several prompts, echo, logprobs, stop
    sequences (one the prefix of another) and a random model whose tokens often end inside a UTF-8 character,
    each choice's deltas concatenate to the plain answer's text, never holding a U+FFFD it lacks; the usage
    chunk (``choices: []``) equals the plain usage; an error after the stream started is an ``APIError``."""
    openai = pytest.importorskip("openai")
    m = GPT2(TINY, init_params(TINY, seed=3))
    with TestClient(create_app({"tiny": m, "broken": nan_model()})) as c:
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=c, max_retries=0)
        split = 0  # choices whose text holds a character made of several tokens
        for seed in (0, 1):
            kw: dict = dict(model="tiny", prompt=["Hi 👋", "é"], max_tokens=12, n=2, seed=seed, temperature=1.5)
            kw |= dict(stop=["e", "ee", " t"], logprobs=2, echo=True)
            full = client.completions.create(**kw)
            texts: dict[int, str] = {}
            for chunk in client.completions.create(**kw, stream=True, stream_options={"include_usage": True}):
                for ch in chunk.choices:
                    texts[ch.index] = texts.get(ch.index, "") + ch.text
                    assert "\ufffd" not in ch.text or "\ufffd" in full.choices[ch.index].text
                usage = chunk.usage or None
            assert usage == full.usage and [texts[ch.index] for ch in full.choices] == [ch.text for ch in full.choices]
            split += sum(any(t.startswith("bytes:") for t in ch.logprobs.tokens) for ch in full.choices)
            messages = [{"role": "user", "content": "Hi 👋"}]
            kw = dict(model="tiny", messages=messages, max_tokens=12, n=2, seed=seed, temperature=1.5, stop=["e"])
            reply = client.chat.completions.create(**kw)
            texts = {}
            for chunk in client.chat.completions.create(**kw, stream=True):
                for ch in chunk.choices:
                    texts[ch.index] = texts.get(ch.index, "") + (ch.delta.content or "")
            assert [texts[ch.index] for ch in reply.choices] == [ch.message.content for ch in reply.choices]
        assert split  # the case that matters was met
        with pytest.raises(openai.APIError, match="not finite") as e:
            for _ in client.completions.create(model="broken", prompt="Hi", max_tokens=3, stream=True):
                pass
        assert e.value.code == "model_error"


def test_too_many_stops_or_no_messages_get_openais_array_length_error(client) -> None:
    """A list over or under its length (17 stops: npgpt takes 16, OpenAI 4; no messages) is said in
    OpenAI's words with the limit and what was sent, not pydantic's ("List should have at most 16 items
    after validation")."""
    r = post(client, {"prompt": "Hi", "stop": [str(i) for i in range(17)]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stop"
    assert r.json()["error"]["message"] == (
        "Invalid 'stop': array too long. Expected an array with maximum length 16, "
        "but got an array with length 17 instead."
    )
    r = post(client, {"messages": []}, "/v1/chat/completions")
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    assert r.json()["error"]["message"] == (
        "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead."
    )
