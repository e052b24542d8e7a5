"""Scoring a text: ``GPT2.score``, ``npgpt score`` and the completions API's ``max_tokens: 0`` + ``echo``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from npgpt.api import GPT2, load
from npgpt.config import GPT2Config
from npgpt.errors import NpgptError
from npgpt.evaluate import perplexity
from npgpt.formats import npgpt_format
from npgpt.params import init_params
from npgpt.tokenizer import default_files

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from npgpt.server import create_app

TINY = GPT2Config(n_ctx=64, n_embd=48, n_head=3, n_layer=2)
TEXT = "In the beginning God created the heaven and the earth."
HELDOUT = Path(__file__).parent / "fixtures" / "kjv_heldout.txt"


@pytest.fixture(scope="module")
def tiny() -> GPT2:
    return GPT2(TINY, init_params(TINY, seed=3))


@pytest.fixture(scope="module")
def bundled() -> GPT2:
    return load(str(Path(str(default_files()[0])).parent / "bundled.safetensors"))


def direct_logprobs(model: GPT2, ids: list[int]) -> np.ndarray:
    """log p(ids[t] | ids[:t]) for t >= 1, in float64 from one forward pass."""
    logits = model.logits([ids])[0].astype(np.float64)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    return np.array([logits[t - 1, ids[t]] - lse[t - 1] for t in range(1, len(ids))])


def test_score_equals_direct_computation(tiny) -> None:
    s = tiny.score(TEXT)
    ids = tiny.tokenizer.encode(TEXT)
    want = direct_logprobs(tiny, ids)
    assert s.tokens == ids and s.token_logprobs[0] is None and s.n_scored == len(ids) - 1
    np.testing.assert_allclose(s.token_logprobs[1:], want, rtol=1e-5, atol=1e-5)
    assert s.log_likelihood == pytest.approx(want.sum(), abs=1e-4)
    assert s.perplexity == pytest.approx(math.exp(-want.sum() / (len(ids) - 1)), rel=1e-5)
    assert tiny.score(ids) == s  # token ids score the same
    special = tiny.score("<|endoftext|>" + TEXT, allow_special=True)
    assert special.tokens == [tiny.tokenizer.eot_id, *ids] and special.n_scored == len(ids)


def test_ranks_offsets_and_a_continuations_loglikelihood_are_the_models(tiny, tiktoken_gpt2) -> None:
    """model.score gave logprobs alone: lm-evaluation-harness's loglikelihood (a continuation's log-likelihood and
    is_greedy) needed a second forward pass to find the model's top tokens, and a text's context/continuation split
    had no token offsets. Score now holds each token's rank (1: greedy) and text_offset, and
    loglikelihood(start) gives (log-likelihood, is_greedy) of tokens[start:], equal to direct computation."""
    from npgpt.tokenizer import Tokenizer

    text = "In the beginning 👋 God créated"
    s = tiny.score(text)
    ids = s.tokens
    logits = tiny.logits([ids])[0].astype(np.float64)
    for t in range(1, len(ids)):
        assert s.ranks[t] == 1 + int((logits[t - 1] > logits[t - 1, ids[t]]).sum())
    assert s.ranks[0] is None and len(s.ranks) == len(ids)
    assert s.text_offset == tiktoken_gpt2.decode_with_offsets(ids)[1] and text == Tokenizer().decode(ids)
    for start in range(1, len(ids)):
        ll, greedy = s.loglikelihood(start)
        assert ll == pytest.approx(direct_logprobs(tiny, ids)[start - 1 :].sum(), abs=1e-4)
        assert greedy == bool((logits[start - 1 : -1].argmax(-1) == ids[start:]).all())  # lm-eval's is_greedy
    # a greedy continuation is greedy; one token off it is not
    context = tiny.tokenizer.encode("And God said")
    cont = tiny.completions(context, max_new_tokens=4, temperature=0)[0].tokens
    assert tiny.score(context + cont).loglikelihood(len(context))[1] is True
    assert tiny.score(context + cont[:-1] + [cont[-1] + 1]).loglikelihood(len(context))[1] is False
    for bad in (0, len(ids), -1, 1.0):
        with pytest.raises(NpgptError, match=r"start must be the continuation's first token, in \[1, "):
            s.loglikelihood(bad)
    with pytest.raises(NpgptError, match="not scored"):  # stride == window: each window's first token has none
        tiny.score(ids, window=2, stride=2).loglikelihood(1)


@pytest.mark.slow
def test_a_continuations_loglikelihood_is_lm_evaluation_harness_own(bundled, tmp_path) -> None:
    """lm-evaluation-harness's HFLM on the same weights (a Hugging Face folder of them) gives each (context,
    continuation) the log-likelihood and is_greedy Score.loglikelihood gives, the context's tokens counted as it
    counts them (an empty context is <|endoftext|>)."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("torch")
    import shutil

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from npgpt.formats import hf
    from npgpt.params import host_params

    hf.save(tmp_path, bundled.config, host_params(bundled.params))
    encoder, merges = default_files()
    shutil.copy(encoder, tmp_path / "vocab.json")
    shutil.copy(merges, tmp_path / "merges.txt")
    lm = HFLM(pretrained=str(tmp_path), batch_size=2, device="cpu")
    greedy = bundled.generate("And God said", max_new_tokens=3, temperature=0)
    requests = [("In the beginning", " God created"), ("", "Hello world"), ("And God said", greedy)]
    answers = lm.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)])
    for (context, continuation), (ll, is_greedy) in zip(requests, answers, strict=True):
        ctx = bundled.tokenizer.encode(context) or [bundled.tokenizer.eot_id]
        ours = bundled.score(ctx + bundled.tokenizer.encode(continuation)).loglikelihood(len(ctx))
        assert ours[0] == pytest.approx(ll, abs=1e-4) and ours[1] == is_greedy
    assert answers[-1][1] is True


def test_too_short_or_too_long_for_one_pass_says_what_to_do(tiny) -> None:
    """ "the text has 1 token(s); scoring needs at least 2" and logits' "sequence of 65 tokens exceeds the
    model's context of 64" named no way forward."""
    with pytest.raises(NpgptError, match=r"at least 2.*put <\|endoftext\|> \(id 50256; .*\) before it"):
        tiny.score("Hi")
    with pytest.raises(NpgptError, match=r"at most 64 tokens a row .*; model.score\(ids\) scores a longer text"):
        tiny.logits([list(range(65))])
    assert tiny.score("<|endoftext|>Hi", allow_special=True).n_scored == 1


def test_a_perplexity_past_floats_range_is_inf_not_an_overflow_error() -> None:
    """A model sure of other tokens (ln_f scaled up: a mean loss over 709 nats) made Score.perplexity an
    OverflowError of math.exp, and evaluate's np.exp a RuntimeWarning; exp of it is inf, as torch.exp gives."""
    params = init_params(TINY, seed=3)
    params["ln_f"] = {"g": params["ln_f"]["g"] * 1e5, "b": params["ln_f"]["b"]}
    sure = GPT2(TINY, params)
    s = sure.score(TEXT)
    assert s.cross_entropy > 710 and s.perplexity == math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert perplexity(sure, TEXT)["perplexity"] == math.inf


def test_a_long_text_is_scored_in_sliding_windows(tiny) -> None:
    """Beyond the context: every token after the first scored once, as ``npgpt eval`` does; the
    first window's tokens equal one direct forward pass."""
    text = HELDOUT.read_text(encoding="utf-8")[:2000]
    s = tiny.score(text, window=64, stride=32)
    assert len(s.tokens) > 3 * TINY.n_ctx and s.n_scored == len(s.tokens) - 1
    assert all(lp is not None and lp < 0 for lp in s.token_logprobs[1:])
    np.testing.assert_allclose(s.token_logprobs[1:64], direct_logprobs(tiny, s.tokens[:64]), rtol=1e-5, atol=1e-5)
    # tokens 64..95 are scored in the window starting at 32
    np.testing.assert_allclose(
        s.token_logprobs[64:96], direct_logprobs(tiny, s.tokens[32:96])[31:], rtol=1e-5, atol=1e-5
    )
    ppl = perplexity(tiny, text, window=64, stride=32)
    assert s.perplexity == pytest.approx(ppl["perplexity"], rel=1e-9) and s.n_scored == ppl["tokens"]
    disjoint = tiny.score(text, window=64, stride=64)  # each window's first token has no context: not scored
    assert disjoint.token_logprobs[64] is None and disjoint.n_scored == len(s.tokens) - math.ceil(len(s.tokens) / 64)


def test_score_errors(tiny) -> None:
    with pytest.raises(NpgptError, match="at least 2"):
        tiny.score("In")
    with pytest.raises(NpgptError, match="vocabulary"):
        tiny.score([1, 70000])
    with pytest.raises(NpgptError, match="token ids"):
        tiny.score([[1, 2]])


@pytest.mark.parametrize(
    "text, message",
    [
        (b"In the beginning", "text must be a string or a 1-D sequence of token ids, got bytes; decode the bytes"),
        (5, "got int"),
        (None, "got NoneType"),
        ([1.5, 2.0, 3.0], "text must be a string or a 1-D sequence of token ids, got float64"),
        ([True, False], "got bool"),
        (np.array([[1, 2], [3, 4]]), r"got rows of ids \(2, 2\); .*score each"),
        ([1, 2, -1], r"text has token id -1, outside the vocabulary \[0, 50257\)"),
        ([1, True, 3], "text must be a string or a 1-D sequence of token ids, got True among the ids"),
        ((5, np.True_), "got np.True_ among the ids, which is no token id"),
    ],
)
def test_scoring_and_perplexity_refuse_what_is_not_token_ids(tiny, text, message) -> None:
    """The same one line from model.score and evaluate.perplexity: bytes were read as ids, floats cast."""
    for run in (tiny.score, lambda t: perplexity(tiny, t)):
        with pytest.raises(NpgptError, match=message):
            run(text)


def test_token_ids_may_come_in_another_librarys_array(tiny) -> None:
    """A PyTorch tensor of ids (a tokenizer's return_tensors="pt", squeezed) was scored before the checks
    of ids were shared: it still is, by model.score and evaluate.perplexity alike."""
    torch = pytest.importorskip("torch")
    ids = tiny.tokenizer.encode("In the beginning God created the heaven")
    assert tiny.score(torch.tensor(ids)) == tiny.score(ids)
    assert perplexity(tiny, torch.tensor(ids)) == perplexity(tiny, ids)


def test_a_padded_vocabularys_extra_ids_are_refused_not_an_index_error() -> None:
    config = GPT2Config(n_ctx=16, n_embd=16, n_head=2, n_layer=1, n_vocab=50304)  # nanoGPT's padded vocabulary
    model = GPT2(config, init_params(config, 0))
    for run in (model.score, lambda t: perplexity(model, t)):
        with pytest.raises(NpgptError, match=r"\[0, 50257\).*ids 50257 to 50303 are the model's padded vocabulary"):
            run([1, 50300, 5])
    assert model.score(np.array([1, 50256, 5])).n_scored == 2


# -- the server ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(bundled):
    with TestClient(create_app({"bundled": bundled})) as c:
        yield c


def test_max_tokens_0_with_echo_scores_the_prompt(client, bundled) -> None:
    """The issue's example: 200, the prompt's tokens with logprobs (the first null), completion_tokens 0."""
    r = client.post(
        "/v1/completions", json={"prompt": "In the beginning", "max_tokens": 0, "echo": True, "logprobs": 1}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    c = body["choices"][0]
    s = bundled.score("In the beginning")
    assert c["text"] == "In the beginning" and c["finish_reason"] == "length"
    lp = c["logprobs"]
    assert lp["tokens"] == ["In", " the", " beginning"] and lp["text_offset"] == [0, 2, 6]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    np.testing.assert_allclose(lp["token_logprobs"][1:], s.token_logprobs[1:], rtol=1e-5, atol=1e-5)
    # the most likely token, then the prompt's own if it is not that one (OpenAI's "up to logprobs + 1")
    assert [list(top) for top in lp["top_logprobs"][1:]] == [[" the"], [" LORD", " beginning"]]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}


def test_scoring_streamed_with_n_and_several_prompts(client, bundled) -> None:
    body = {
        "prompt": ["In the beginning", "And God said"],
        "max_tokens": 0,
        "echo": True,
        "logprobs": 0,
        "n": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/completions", json=body) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    choices = [c for e in events for c in e["choices"]]
    assert sorted(c["index"] for c in choices) == [0, 1, 2, 3]
    for c in choices:
        prompt = ["In the beginning", "And God said"][c["index"] // 2]
        assert c["text"] == prompt and c["finish_reason"] == "length"
        np.testing.assert_allclose(
            c["logprobs"]["token_logprobs"][1:], bundled.score(prompt).token_logprobs[1:], rtol=1e-5, atol=1e-5
        )
    assert events[-1]["usage"]["completion_tokens"] == 0


def test_max_tokens_0_and_its_neighbours(client, bundled) -> None:
    no_echo = client.post("/v1/completions", json={"prompt": "In the beginning", "max_tokens": 0})
    assert no_echo.status_code == 400 and no_echo.json()["error"]["param"] == "max_tokens"
    plain = client.post("/v1/completions", json={"prompt": "In the beginning", "max_tokens": 0, "echo": True})
    assert plain.status_code == 200 and plain.json()["choices"][0] == {
        "index": 0,
        "text": "In the beginning",
        "logprobs": None,
        "finish_reason": "length",
    }
    default = client.post("/v1/completions", json={"prompt": "In the beginning", "temperature": 0})
    assert default.json()["usage"]["completion_tokens"] == 16  # unset is 16; only an explicit 0 is 0
    full = bundled.tokenizer.decode([464] * bundled.config.n_ctx)  # a prompt of exactly n_ctx tokens: scorable
    r = client.post("/v1/completions", json={"prompt": full, "max_tokens": 0, "echo": True, "logprobs": 0})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == bundled.config.n_ctx
    over = client.post("/v1/completions", json={"prompt": full + " the", "max_tokens": 0, "echo": True})
    assert over.status_code == 400 and over.json()["error"]["code"] == "context_length_exceeded"
    bad = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 0, "echo": True, "temperature": -1})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "temperature"


# -- the CLI ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_path(tiny, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("score") / "tiny.safetensors"
    npgpt_format.save(path, TINY, init_params(TINY, seed=3))
    return path


def test_cli_score_json_from_stdin(tiny, tiny_path) -> None:
    result = run_cli("score", "-", "--model", str(tiny_path), "--json", input=TEXT)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    s = tiny.score(TEXT)
    assert [t["id"] for t in doc["tokens"]] == s.tokens and doc["tokens"][0]["logprob"] is None
    assert doc["log_likelihood"] == pytest.approx(s.log_likelihood, abs=1e-6)
    assert doc["perplexity"] == pytest.approx(s.perplexity, rel=1e-6) and doc["tokens_scored"] == s.n_scored
    assert doc["tokens"][1]["surprisal_bits"] == pytest.approx(-s.token_logprobs[1] / math.log(2))


def test_cli_score_table_and_errors(tiny, tiny_path, tmp_path) -> None:
    data = tmp_path / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    result = run_cli("score", str(data), "--model", str(tiny_path))
    assert result.returncode == 0, result.stderr
    assert "surprisal (bits)" in result.stdout and "' beginning'" in result.stdout
    assert "logprob (nats)" in result.stdout  # the two columns differ in units: each says its own
    assert f"{tiny.score(TEXT).perplexity:.3f}" in result.stdout
    for args, message in [([str(tmp_path / "missing.txt")], "cannot read"), (["-"], "standard input is empty")]:
        result = run_cli("score", *args, "--model", str(tiny_path), input="")
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert "Example: printf" in run_cli("score", "--help").stdout


def test_cli_score_reads_stdin_as_bytes(tiny_path) -> None:
    """Invalid UTF-8 on stdin is refused, as in a file (it was scored as U+FFFD tokens), and a closed
    stdin is a one-line error (it was an internal error)."""
    cmd = [sys.executable, "-m", "npgpt.cli", "score", "-", "--model", str(tiny_path)]
    env = {**os.environ, "LC_ALL": "C.UTF-8"}  # a locale in which Python decodes stdin with surrogateescape
    bad = subprocess.run(cmd, input=b"In the \xff beginning", capture_output=True, env=env, timeout=120)
    assert bad.returncode == 1 and b"not UTF-8 text (byte 7 is 0xff)" in bad.stderr, bad.stderr
    closed = subprocess.run(["sh", "-c", '"$@" <&-', "sh", *cmd], capture_output=True, text=True, timeout=120)
    assert closed.returncode == 1 and "stdin: it is closed" in closed.stderr, closed.stderr


def test_cli_score_drops_a_byte_order_mark(tiny, tiny_path, tmp_path) -> None:
    """Notepad's UTF-8 files start with a byte-order mark: it was scored as text, changing the first tokens."""
    data = tmp_path / "bom.txt"
    data.write_bytes(b"\xef\xbb\xbf" + TEXT.encode())
    result = run_cli("score", str(data), "--model", str(tiny_path), "--json")
    assert result.returncode == 0, result.stderr
    assert [t["id"] for t in json.loads(result.stdout)["tokens"]] == tiny.score(TEXT).tokens


def test_npgpt_score_reads_endoftext_as_the_token_with_special_tokens_and_says_so(tmp_path):
    """Scoring one token told a CLI user to put <|endoftext|> first 'with allow_special=True', a Python keyword
    npgpt score had no flag for: --special-tokens reads it as the token (id 50256), and the message names it."""
    r = run_cli("score", "-", input="Hi")
    assert r.returncode == 1 and "with --special-tokens) before it" in r.stderr and "allow_special" not in r.stderr
    text = "<|endoftext|>Hi"
    as_token = json.loads(run_cli("score", "-", "--special-tokens", "--json", input=text).stdout)
    as_text = json.loads(run_cli("score", "-", "--json", input=text).stdout)
    ids_token = [t["id"] for t in as_token["tokens"]]
    ids_text = [t["id"] for t in as_text["tokens"]]
    assert ids_token[0] == 50256 and len(ids_token) == 2, ids_token
    assert 50256 not in ids_text and len(ids_text) > 2  # the default: text, as before


def test_the_memory_check_counts_the_logits_of_a_padded_vocabulary(monkeypatch):
    """token_nlls' memory check (f62bce0) counted the tokenizer's 50257 columns, while its pass takes the model's
    full output (2839c63: a padded vocabulary's 50304): a pass needing more than the machine had was let through."""
    import npgpt.score
    from npgpt.api import GPT2
    from npgpt.config import GPT2Config
    from npgpt.errors import NpgptError
    from npgpt.params import init_params

    config = GPT2Config(n_vocab=50304, n_ctx=16, n_embd=16, n_head=2, n_layer=1)
    model = GPT2(config, init_params(config, 0))
    ids = np.arange(16)
    monkeypatch.setattr(npgpt.score, "physical_memory", lambda: 16 * 50280 * 4)  # tokens' logits fit, all do not
    with pytest.raises(NpgptError, match=r"^1 windows of 16 tokens in one pass \(batch_size\) need"):
        npgpt.score.token_nlls(model, ids, window=16, batch_size=1)
    monkeypatch.setattr(npgpt.score, "physical_memory", lambda: 16 * 50304 * 4)
    assert np.isfinite(npgpt.score.token_nlls(model, ids, window=16, batch_size=1)[1:]).all()


def test_a_generator_of_ids_is_refused_naming_the_list_it_takes(tiny) -> None:
    """model.score(x for x in ids), model.logits(iter(ids)) and to_string(map(int, ids)) said 'text must be a string
    or a 1-D sequence of token ids, got generator' and no fix. lm-evaluation-harness passes lists, and vLLM's
    prompt_token_ids and transformers' forward take no generator either, so it stays refused, now naming the fix
    (read once, an iterator has no shape to check first); the list runs."""
    ids = tiny.tokenizer.encode(TEXT)
    for call in (tiny.score, tiny.logits, tiny.to_string):
        for lazy in (iter(ids), (t for t in ids), map(int, ids)):
            with pytest.raises(NpgptError, match=r"got \w+; pass them as a list: list\(ids\)$"):
                call(lazy)
        call(list(ids))


@pytest.mark.parametrize(
    "texts",
    [
        ["In the", "beginning"],
        ("In the",),
        [[1, 2], [3]],
        [[1, 2], [3, 4]],
        np.array(["In the", "b"]),
        np.ones((2, 3), int),
    ],
)
def test_several_texts_are_told_to_score_each(tiny, texts) -> None:
    """model.score(["a", "b"]) (a batch, as lm-evaluation-harness's requests and vLLM's prompts come) said 'got text
    (shape (2,)); encode each text first: model.tokenizer.encode(text)', whose encoded texts were then refused as
    'rows of different lengths', and rows of ids 'got int64 (2, 2)' with no way: each now names score's one text and
    the loop that scores several."""
    with pytest.raises(NpgptError, match=r"score each: \[model\.score\(t\) for t in texts\]$") as e:
        tiny.score(texts)
    assert e.value.param == "text"
    tiny.score(texts[0] if isinstance(texts[0], str) else list(texts[0]) + [5])  # one of them runs
