"""npgpt/generate.py: the kv cache, batching, stop handling and streaming are exact."""

from __future__ import annotations

import time

import numpy as np
import pytest

from npgpt.errors import NpgptError
from npgpt.generate import RowSampler, TextTracker, decode_step, left_pad, prefill
from npgpt.sampling import SamplingParams
from npgpt.tokenizer import Tokenizer

PROMPTS = ["The quick brown fox jumps over the lazy dog.", "Hello", "In the beginning God created", "1 2 3 4"]


@pytest.mark.parametrize("name", ["odd", pytest.param("124M", marks=pytest.mark.slow)])
@pytest.mark.parametrize("batch", [1, 4])
def test_cached_decoding_equals_full_recomputation(pair, name, batch):
    model, _ = pair(name)
    rows = [model.tokenizer.encode(p) for p in PROMPTS[:batch]]
    steps = 64
    logits, state = prefill(model.engine, rows, max(map(len, rows)) + steps)
    seqs = [list(r) for r in rows]
    worst = 0.0
    for step in range(1, steps + 1):
        tokens = logits.argmax(-1)
        for b in range(batch):
            seqs[b].append(int(tokens[b]))
        logits = decode_step(model.engine, state, tokens)
        if step % 16 == 0:  # full recomputation is the slow part: check every 16th step, in one batch
            ids, n_pad = left_pad(seqs)
            mask = np.arange(ids.shape[1])[None, :] >= n_pad[:, None]
            full = model.logits(ids, attention_mask=mask)[:, -1]
            worst = max(worst, np.abs(full - logits).max())
    assert worst <= 1e-4


def test_batch_equals_each_prompt_alone(pair):
    model, _ = pair("odd")
    batched = model.completions(PROMPTS, max_new_tokens=24, temperature=0, stop_at_eot=False, logprobs=5)
    for prompt, got in zip(PROMPTS, batched, strict=True):
        alone = model.completions([prompt], max_new_tokens=24, temperature=0, stop_at_eot=False, logprobs=5)[0]
        assert got.tokens == alone.tokens
        assert np.abs(np.array(got.token_logprobs) - np.array(alone.token_logprobs)).max() <= 1e-4
    # and the logits under left padding equal the logits of the row alone
    rows = [model.tokenizer.encode(p) for p in PROMPTS]
    logits, _ = prefill(model.engine, rows, 64)
    for b, r in enumerate(rows):
        assert np.abs(logits[b] - model.logits([r])[0, -1]).max() <= 1e-4


@pytest.mark.parametrize("name", ["tiny", "odd"])
def test_greedy_equals_hugging_face_generate(pair, name):
    import torch

    model, ref = pair(name)
    for prompt in PROMPTS[:3]:
        ids = model.tokenizer.encode(prompt)
        with torch.no_grad():
            out = ref.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=30,
                do_sample=False,
                pad_token_id=0,
            )
        expected = out[0, len(ids) :].tolist()
        got = model.completions([prompt], max_new_tokens=30, temperature=0, stop_at_eot=False)[0].tokens
        assert got == expected


def test_greedy_limits(pair):
    model, _ = pair("odd")
    kw = dict(max_new_tokens=16, stop_at_eot=False)
    greedy = model.generate(PROMPTS[0], temperature=0, **kw)
    assert model.generate(PROMPTS[0], top_k=1, seed=1, **kw) == greedy
    assert model.generate(PROMPTS[0], top_p=1e-9, seed=2, **kw) == greedy
    assert model.generate(PROMPTS[0], top_p=0, seed=4, **kw) == greedy  # OpenAI's and HF's top_p=0
    assert model.generate(PROMPTS[0], temperature=1e-6, seed=3, **kw) == greedy


def test_seed_reproducible_and_rows_independent_of_batch(pair):
    model, _ = pair("odd")
    kw = dict(max_new_tokens=20, temperature=1.0, top_k=50, top_p=0.95, stop_at_eot=False)
    a = model.generate(PROMPTS[0], seed=7, **kw)
    assert model.generate(PROMPTS[0], seed=7, **kw) == a
    assert model.generate([PROMPTS[0], PROMPTS[1]], seed=7, **kw)[0] == a
    assert model.generate(PROMPTS[0], seed=8, **kw) != a


def test_a_seeded_prompt_samples_the_same_alone_and_beside_others(pair):
    """Each prompt's k-th row draws from (seed, k), whatever its place in the batch (as vLLM runs each
    prompt of a list as its own request, its n samples seeded seed + k): a prompt samples the same alone
    and after others, and a prompt repeated gets different samples, as n > 1 does."""
    model, _ = pair("odd")
    kw = dict(max_new_tokens=20, temperature=1.0, seed=7, stop_at_eot=False)
    alone = [model.generate(p, **kw) for p in PROMPTS[:3]]
    assert model.generate(PROMPTS[:3], **kw) == alone
    assert model.generate(PROMPTS[2::-1], **kw) == alone[::-1]
    twice = model.generate([PROMPTS[1], PROMPTS[0], PROMPTS[1]], **kw)
    assert twice[:2] == [alone[1], alone[0]] and twice[2] != alone[1]


def test_stream_concatenates_to_generate(pair):
    model, _ = pair("odd")
    kw = dict(max_new_tokens=40, temperature=0.9, seed=5, stop=[" the"])
    deltas = list(model.stream(PROMPTS[0], **kw))
    assert "".join(deltas) == model.generate(PROMPTS[0], **kw)
    for row, delta in model.stream(PROMPTS[:2], **kw):
        assert isinstance(row, int) and delta


def test_stop_sequence_spanning_two_tokens_stops_at_right_character():
    tok = Tokenizer()
    ids = tok.encode("Hello world, and goodbye")
    stop = "o wor"  # starts inside "Hello" and ends inside " world"
    tracker = TextTracker(tok, [stop])
    out, stopped = "", False
    for t in ids:
        delta, stopped = tracker.push(t)
        out += delta
        if stopped:
            break
    assert stopped and out == "Hell"


def test_stop_sequences_skip_the_dropped_leading_whitespace():
    """With skip_leading_space (chat replies) the leading whitespace is not given out, and a stop lying
    wholly within it does not end the text: the reader never sees it. One reaching past it still does."""
    tok = Tokenizer()

    def run(text: str, stop: list[str], skip: bool) -> tuple[str, bool]:
        tracker, out = TextTracker(tok, stop, skip_leading_space=skip), ""
        for t in tok.encode(text):
            delta, stopped = tracker.push(t)
            out += delta
            if stopped:
                return out, True
        return out + tracker.finish(), False

    assert run("\n \nHi there\nUser: x", ["\n"], skip=True) == ("Hi there", True)
    assert run("\n \nHi there", ["\n\n", " "], skip=True) == ("Hi", True)
    assert run("\n\n", ["\n"], skip=True) == ("", False)
    assert run("\nUser: x", ["\nUser:"], skip=True) == ("", True)  # reaches past the whitespace: still a stop
    assert run("\n \nHi there", ["\n"], skip=False) == ("", True)


def test_held_back_text_is_the_longest_stop_prefix_and_long_stops_stay_cheap():
    """The text held back after each token is the longest suffix that begins a stop sequence (checked
    against trying every length), and 16 stops of 60,000 characters, a body's worth, add little per
    token: only the lengths the last token could have made are tried, not every length of the text."""
    tok = Tokenizer()
    rng = np.random.default_rng(0)
    for _ in range(200):
        text = "".join(rng.choice(list("ab "), size=int(rng.integers(1, 30))))
        stop = ["".join(rng.choice(list("ab "), size=int(rng.integers(1, 6)))) for _ in range(3)]
        tracker = TextTracker(tok, stop)
        for t in tok.encode(text):
            _, stopped = tracker.push(t)
            if stopped:
                break
            want = max(
                (k for k in range(1, len(tracker.text) + 1) for s in stop if s.startswith(tracker.text[-k:])), default=0
            )
            assert tracker.text[tracker.emitted :] == tracker.text[len(tracker.text) - want :], (text, stop)
    ids = tok.encode("And God said, Let there be light: and there was light. " * 200)
    tracker = TextTracker(tok, ["x" * 60_000] * 15 + ["light: and there was darkness"])
    start = time.perf_counter()
    assert not any(tracker.push(t)[1] for t in ids)
    # it was over a minute (each token tried every length of the text); ~0.2 s now: the bound is a loaded CI's
    assert time.perf_counter() - start < 20.0


def test_stop_sequence_in_generation(pair):
    model, _ = pair("odd")
    free = model.generate(PROMPTS[2], max_new_tokens=30, temperature=0, stop_at_eot=False)
    stop = free[5:9]  # a piece of text the greedy run is known to produce
    cut = model.completions([PROMPTS[2]], max_new_tokens=30, temperature=0, stop_at_eot=False, stop=[stop])[0]
    assert cut.text == free[: free.index(stop)]
    assert cut.finish_reason == "stop"


def test_rows_stop_independently(pair):
    model, _ = pair("odd")
    free = model.generate(PROMPTS[0], max_new_tokens=20, temperature=0, stop_at_eot=False)
    stop = free[3:7]
    both = model.completions([PROMPTS[0], PROMPTS[1]], max_new_tokens=20, temperature=0, stop_at_eot=False, stop=[stop])
    alone = model.completions([PROMPTS[1]], max_new_tokens=20, temperature=0, stop_at_eot=False, stop=[stop])[0]
    assert both[0].finish_reason == "stop" and both[0].text == free[: free.index(stop)]
    assert both[1].tokens == alone.tokens and both[1].finish_reason == alone.finish_reason


def test_logprobs_are_the_models(pair):
    model, _ = pair("tiny")
    c = model.completions([PROMPTS[1]], max_new_tokens=3, temperature=0, stop_at_eot=False, logprobs=3)[0]
    ids = model.tokenizer.encode(PROMPTS[1])
    logits = model.logits([ids])[0, -1].astype(np.float64)
    expected = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    assert c.tokens[0] == int(np.argmax(logits))
    assert abs(c.token_logprobs[0] - expected[c.tokens[0]]) < 1e-4
    assert [t for t, _ in c.top_logprobs[0]] == list(np.argsort(-expected)[:3])
    # the model's own distribution, as vLLM's default (raw) logprobs: before logit_bias, penalties,
    # temperature and the filters, which shape only the choice
    top = int(np.argmax(logits))
    kw = dict(temperature=0.5, top_k=2, presence_penalty=1.0, logit_bias={top: -100}, seed=0, logprobs=3)
    shaped = model.completions([PROMPTS[1]], max_new_tokens=1, **kw)[0]
    assert shaped.tokens[0] != top
    assert abs(shaped.token_logprobs[0] - expected[shaped.tokens[0]]) < 1e-4
    assert shaped.top_logprobs[0][0][0] == top and abs(shaped.top_logprobs[0][0][1] - expected[top]) < 1e-4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(top_p=-0.1), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-2), "top_k"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_new_tokens=10_000), "context"),
        (dict(logit_bias={50257: 1}), r"logit_bias .*50257.* outside the vocabulary \[0, 50257\)"),
        (dict(logit_bias=dict.fromkeys(range(50257), -100)), "logit_bias bans every token"),
        (dict(logit_bias={10**5000: 1}), "logit_bias names token id a 5001-digit integer"),
    ],
)
def test_bad_parameters_fail_before_compute(pair, kwargs, match):
    model, _ = pair("tiny")
    with pytest.raises(NpgptError, match=match):
        model.generate("Hello", **kwargs)


def test_the_default_max_new_tokens_fits_a_prompt_near_the_end_of_the_context(pair):
    """A prompt within 64 tokens of the context was refused by the default max_new_tokens (64) the user never set,
    naming it ("lower max_new_tokens"). vLLM caps a request at the model's length; the default now does the same:
    the rest of the context, ending "length". A value the user gives that does not fit is still refused."""
    model, _ = pair("tiny")  # n_ctx 128
    n_ctx = model.config.n_ctx
    for left in (1, 5, 63):
        prompt = list(range(1, n_ctx - left + 1))
        out = model.completions([prompt, [5, 6]], temperature=0, stop_at_eot=False)
        assert [len(c.tokens) for c in out] == [left, 64]  # each row its own room; a short one the full default
        assert [c.finish_reason for c in out] == ["length", "length"]
        alone = model.completions(prompt, max_new_tokens=left, temperature=0, stop_at_eot=False)[0]
        assert out[0].tokens == alone.tokens
    with pytest.raises(NpgptError, match="max_new_tokens is 10: together over") as err:
        model.generate(list(range(1, n_ctx - 4)), max_new_tokens=10)
    assert err.value.param == "max_new_tokens"
    with pytest.raises(NpgptError, match="leaving none of the model's context") as err:
        model.generate(list(range(1, n_ctx + 1)))  # no number of new tokens fits: the prompt is what to change
    assert err.value.param == "prompt"


def test_a_large_list_of_prompts_runs_in_bounded_batches_with_the_same_text(pair, monkeypatch):
    """A list of 100,000 prompts ran as one batch: its [B, V] logits alone were 20 GB a step. Rows now run at most
    256 (vLLM's max_num_seqs) and 16,384 padded prompt tokens at a time, in order; each row's text is what it is
    beside any other prompts (its generator is its prompt's sample's over the whole list)."""
    from npgpt.generate import MAX_BATCH_ROWS, MAX_BATCH_TOKENS, batches

    split = batches([[1, 2]] * 100_000, [64] * 100_000, 1024)
    assert [b for batch in split for b in batch] == list(range(100_000))
    assert max(len(batch) for batch in split) == MAX_BATCH_ROWS == 256 and len(split) == 391
    long = batches([[1] * 1000] * 100, [24] * 100, 1024)  # 1000 tokens a row: 16 rows are 16,000 tokens
    assert {len(batch) for batch in long} == {16, 4} and 16 * 1000 <= MAX_BATCH_TOKENS < 17 * 1000

    model, _ = pair("tiny")
    sizes: list[int] = []
    forward = model.engine.forward
    monkeypatch.setattr(model.engine, "forward", lambda ids, *a, **k: sizes.append(len(ids)) or forward(ids, *a, **k))
    prompts = [[i % 5000 + 1, 7] for i in range(600)] + [[3, 3], [3, 3]]  # the last prompt twice: its 2 samples
    out = model.completions(prompts, max_new_tokens=2, seed=3, stop_at_eot=False)
    assert max(sizes) == 256 and len(out) == 602
    some = [0, 255, 256, 599, 600, 601]
    alone = model.completions([prompts[i] for i in some], max_new_tokens=2, seed=3, stop_at_eot=False)
    assert [out[i].tokens for i in some] == [c.tokens for c in alone]
    assert out[600].tokens != out[601].tokens


def test_empty_prompt_is_an_error(pair):
    model, _ = pair("tiny")
    with pytest.raises(NpgptError, match="empty"):
        model.generate("")


def test_a_generated_endoftext_is_no_text_when_generation_goes_on_past_it():
    """With stop_at_eot=False (the server's ignore_eos) <|endoftext|> was written into the text, and so into
    streamed deltas and stop matching; as vLLM (skip_special_tokens, its default) it is no text: the text is
    the other tokens' text, which stop sequences are matched in, and the token is still chosen and counted."""
    tok = Tokenizer()
    parrot = tok.encode(" \U0001f99c")  # three tokens, the character's bytes split: joined across the token
    chosen = [*tok.encode("Hi"), *parrot[:2], tok.eot_id, parrot[2], tok.eot_id, *tok.encode(" there")]

    def run(stop: tuple[str, ...]) -> list:
        params = SamplingParams(max_new_tokens=len(chosen), temperature=0, stop_at_eot=False, stop=stop, logprobs=0)
        row = RowSampler(0, params, np.random.default_rng(0), tok, tok.n_vocab)
        out = []
        for t in chosen:
            logits = np.zeros(tok.n_vocab, np.float32)
            logits[t] = 10
            out.append(row.pick(logits))
            if row.done:
                break
        return out

    evs = run(())
    assert [e.token for e in evs] == chosen and evs[-1].finish_reason == "length"
    assert "".join(e.text for e in evs) == "Hi \U0001f99c there" == "".join(e.piece for e in evs)
    cut = run((" there", "<|endoftext|>"))  # matched in the text, across where the token was
    assert "".join(e.text for e in cut) == "Hi \U0001f99c" and cut[-1].finish_reason == "stop"
