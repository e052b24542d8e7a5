"""npgpt/sampling.py: each filter does what it says; sampling follows the distribution."""

from __future__ import annotations

import warnings
from dataclasses import fields

import numpy as np
import pytest

from npgpt.errors import NpgptError
from npgpt.sampling import (
    FOREIGN_OPTIONS,
    SamplingParams,
    apply_logit_bias,
    apply_penalties,
    choose,
    filter_logits,
    log_softmax,
    sample,
    top_logprobs,
)

LOGITS = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05], dtype=np.float32))


def kept(logits: np.ndarray) -> list[int]:
    return [int(i) for i in np.flatnonzero(np.isfinite(logits))]


def test_top_k_keeps_the_k_most_likely():
    assert kept(filter_logits(LOGITS, SamplingParams(top_k=2))) == [0, 1]


def test_top_p_keeps_the_smallest_set_reaching_p():
    assert kept(filter_logits(LOGITS, SamplingParams(top_p=0.69))) == [0, 1]  # 0.5 + 0.2 reaches 0.69
    assert kept(filter_logits(LOGITS, SamplingParams(top_p=0.71))) == [0, 1, 2]
    assert kept(filter_logits(LOGITS, SamplingParams(top_p=1e-9))) == [0]


@pytest.mark.parametrize("top_p", [0.0, 1e-9, 0.3, 0.8, 0.95, 1.0])
def test_top_p_keeps_what_transformers_top_p_warper_keeps(top_p):
    """top_p=0 keeps the single most likely token (greedy), as HF's warper does with min_tokens_to_keep=1
    and as OpenAI accepts it; other values keep the same nucleus as HF's."""
    torch = pytest.importorskip("torch")
    warper = pytest.importorskip("transformers.generation.logits_process").TopPLogitsWarper(top_p)
    rng = np.random.default_rng(0)
    p = SamplingParams(top_p=top_p)
    for scale in (0.5, 3.0, 8.0):
        logits = (rng.standard_normal(1000) * scale).astype(np.float32)
        expected = np.isfinite(warper(None, torch.from_numpy(logits[None].copy()))[0].numpy())
        assert kept(filter_logits(logits, p)) == [int(i) for i in np.flatnonzero(expected)]
    assert p.greedy == (top_p == 0.0)
    greedy = int(np.argmax(LOGITS))
    assert choose(LOGITS, np.zeros(5), SamplingParams(top_p=0.0), np.random.default_rng(1)) == greedy


def test_min_p_drops_tokens_below_a_fraction_of_the_top():
    assert kept(filter_logits(LOGITS, SamplingParams(min_p=0.25))) == [0, 1, 2]  # >= 0.125


def test_temperature_sharpens_and_keeps_float32():
    out = filter_logits(LOGITS, SamplingParams(temperature=0.5))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (LOGITS - LOGITS.max()) / 0.5, rtol=1e-6)  # shifted: softmax is the same


def test_penalties():
    logits = np.array([2.0, -2.0, 1.0], dtype=np.float32)
    counts = np.array([1, 1, 0], dtype=np.float32)
    rep = apply_penalties(logits, counts, SamplingParams(repetition_penalty=2.0))
    np.testing.assert_allclose(rep, [1.0, -4.0, 1.0])
    counts = np.array([3, 0, 1], dtype=np.float32)
    pen = apply_penalties(logits, counts, SamplingParams(presence_penalty=0.5, frequency_penalty=0.25))
    np.testing.assert_allclose(pen, [2.0 - 0.5 - 0.75, -2.0, 1.0 - 0.5 - 0.25])
    assert pen.dtype == np.float32


@pytest.mark.parametrize("penalty", [1e-39, 1e-45, 1e-300, 5e-324, 1e300, 1.7e308])
def test_a_penalty_past_floats_range_behaves_as_its_limit(penalty):
    """A repetition_penalty of 1e-39 divided a seen logit of 2 past float32's range: inf, then NaN after the max was
    subtracted, and every sampled token was the last id (GPT-2's <|endoftext|>), with no error. Now the penalised
    logits are those of the limit: below 1, the largest seen positive logit wins; above 1, every seen negative
    logit (all of them here) is multiplied away from the least negative one."""
    logits = np.array([3.0, 2.0, 1.0, -1.0, -np.inf], dtype=np.float32)  # the last is banned (logit_bias -100)
    counts = np.zeros(5, np.float32)
    small = penalty < 1
    seen = np.array([False, True, True, False, True]) if small else np.ones(5, bool)
    logits = logits if small else -np.abs(logits)
    winner = 1 if small else 2  # id 3 ties with 2 as both are -1: the lowest id, as argmax takes it
    for temperature in (0.0, 1.0, 0.7):
        p = SamplingParams(repetition_penalty=penalty, temperature=temperature, top_p=0.9 if temperature == 0.7 else 1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no overflow warnings either
            picks = {choose(logits, counts, p, np.random.default_rng(seed), seen) for seed in range(30)}
            out = apply_penalties(logits, counts, p, seen)
        assert out.dtype == np.float32 and not np.isnan(out).any() and out[winner] == out.max()
        assert picks == ({winner} if small or temperature == 0 else {2, 3}), (temperature, picks)


def test_sampled_frequencies_pass_chi_square():
    from scipy.stats import chisquare

    probs = np.exp(LOGITS.astype(np.float64))
    probs /= probs.sum()
    rng = np.random.default_rng(0)
    n = 20_000
    draws = np.bincount([sample(LOGITS, rng) for _ in range(n)], minlength=len(probs))
    assert chisquare(draws, probs * n).pvalue > 0.001


def test_top_logprobs_sorted():
    lp = np.log(np.array([0.1, 0.6, 0.3]))
    assert [t for t, _ in top_logprobs(lp, 2)] == [1, 2]


def test_more_logprobs_than_the_vocabulary_lists_every_token():
    """A character-level model of 4 characters (5 tokens) asked for logprobs=10 failed mid-generation with
    NumPy's "kth(=9) out of bounds (5)"; the alternatives are then every token, as OpenAI lists at most k."""
    lp = np.log(np.array([0.1, 0.6, 0.3]))
    assert [t for t, _ in top_logprobs(lp, 20)] == [1, 2, 0]
    from npgpt.api import GPT2
    from npgpt.char_tokenizer import CharTokenizer
    from npgpt.config import GPT2Config
    from npgpt.params import init_params

    tok = CharTokenizer("abcd")
    config = GPT2Config(n_vocab=tok.n_vocab, n_ctx=16, n_embd=16, n_head=2, n_layer=1)
    model = GPT2(config, init_params(config, seed=0), tokenizer=tok)
    out = model.completions("ab", max_new_tokens=3, logprobs=10, seed=0, stop_at_eot=False)[0]
    assert [sorted(t for t, _ in top) for top in out.top_logprobs] == [list(range(tok.n_vocab))] * 3


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(temperature=float("nan")),
        dict(min_p=2.0),
        dict(seed=1.5),
        dict(stop=[""]),
        dict(logprobs=50),
        dict(presence_penalty=3.0),
    ],
)
def test_invalid_parameters_raise(kwargs):
    with pytest.raises(NpgptError):
        SamplingParams(**kwargs)


def test_any_integer_is_a_seed_as_in_openai_and_vllm():
    """A negative seed was refused ("seed must be a non-negative integer"), where OpenAI's API and vLLM take any
    integer and the server took a signed 64-bit one. Now -1 is no seed (vLLM's SamplingParams and llama.cpp read it
    so), another negative its two's complement read unsigned (what the server gives it); bools and floats are no
    seed. Equal seeds still give equal text, and unequal ones (-2**70 and 0) different generators."""
    from npgpt.sampling import row_rng

    assert SamplingParams(seed=-1).seed is None
    for seed in (-2, -5, np.int64(-5), np.int8(-128), -(2**63)):
        assert SamplingParams(seed=seed).seed == int(seed) % 2**64
    seeds = [-(2**63) - 1, -(2**70), -(2**200), 0, 5, 2**64 - 5]
    mapped = [SamplingParams(seed=s).seed for s in seeds]
    assert all(type(m) is int and m >= 0 for m in mapped) and len(set(mapped)) == len(seeds)
    draws = [row_rng(m, 0).random() for m in mapped]  # SeedSequence takes each
    assert len(set(draws)) == len(draws)
    for bad in (True, np.bool_(False), -1.0, 2.5, "3", [1]):
        with pytest.raises(NpgptError, match="seed must be an integer") as err:
            SamplingParams(seed=bad)
        assert err.value.param == "seed"


def test_a_negative_seed_samples_the_same_each_time(pair):
    model, _ = pair("tiny")
    kw = dict(max_new_tokens=8, stop_at_eot=False)
    first = model.generate(["Hi", "Hi"], seed=-7, **kw)
    assert first == model.generate(["Hi", "Hi"], seed=-7, **kw) == model.generate(["Hi", "Hi"], seed=2**64 - 7, **kw)
    assert first[0] != first[1]  # a prompt's samples still differ from one another
    assert model.generate("Hi", seed=-(2**70), **kw) == model.generate("Hi", seed=-(2**70), **kw)


def test_a_nan_temperature_is_told_it_must_be_finite():
    with pytest.raises(NpgptError, match="temperature must be a finite number >= 0"):
        SamplingParams(temperature=float("nan"))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_new_tokens=0),
        dict(temperature=-1.0),
        dict(top_p=-0.1),
        dict(top_k=-2),
        dict(seed=True),
        dict(stop=[""]),
        dict(logprobs=50),
    ],
)
def test_invalid_parameter_is_named_as_data(kwargs):
    """The server reports ``param`` from ``err.param``, never from the message's text."""
    with pytest.raises(NpgptError) as err:
        SamplingParams(**kwargs)
    assert err.value.param == next(iter(kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(top_k=True),  # a bool is not top_k=1
        dict(logprobs=True),
        dict(stop=5),
        dict(stop={"a"}),
        dict(stop_at_eot="no"),  # truthy, yet meant as False
        dict(temperature=10**400),  # past float's range: not an OverflowError
    ],
)
def test_wrong_types_are_refused_naming_the_option(kwargs):
    with pytest.raises(NpgptError) as err:
        SamplingParams(**kwargs)
    assert err.value.param == next(iter(kwargs))


def test_numpy_scalars_are_numbers():
    """np.int64(3) is an integer and np.float32(0.5) a temperature (they were refused as
    'temperature must be >= 0, got np.float32(0.5)'); they are stored as Python's numbers."""
    p = SamplingParams(max_new_tokens=np.int64(3), temperature=np.float32(0.5), top_k=np.int32(4), seed=np.uint8(7))
    assert (p.max_new_tokens, p.temperature, p.top_k, p.seed) == (3, 0.5, 4, 7)
    assert type(p.max_new_tokens) is int and type(p.temperature) is float and type(p.seed) is int


@pytest.mark.parametrize("stop", ["", ("\n", ""), [""]])
def test_an_empty_stop_sequence_is_refused_with_the_fix(stop) -> None:
    """An empty stop would match before any text (vLLM refuses it too): one line naming it and the fix."""
    with pytest.raises(NpgptError, match=r"stop sequences must be non-empty.*leave out the empty one") as e:
        SamplingParams(stop=stop)
    assert e.value.param == "stop" and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "stop, says",
    [
        ([50256], r"got 50256; .*; to stop at another token id, pass its text: model.tokenizer.decode\(\[id\]\)"),
        (["\n", None], "got None"),
        ([b"\n"], r"got b'\\n'"),
    ],
)
def test_a_stop_that_is_not_text_is_refused_as_such(stop, says) -> None:
    """transformers' and vLLM's habit of stopping at token ids, stop=[50256], was told "leave out the empty one"."""
    with pytest.raises(NpgptError, match=f"stop sequences must be text, {says}") as e:
        SamplingParams(stop=stop)
    assert e.value.param == "stop"


def test_a_stop_at_the_end_tokens_id_is_told_generation_ends_there_already(tmp_path) -> None:
    """stop=[50256] (transformers' eos habit) was told to pass decode([50256]), '<|endoftext|>', which never matches:
    a generated <|endoftext|> is no text. The refusal says generation ends at the end token already."""
    with pytest.raises(NpgptError, match=r"generation ends at the end token already \(stop_at_eot=True") as e:
        SamplingParams(stop=[50256])
    # the hint's text is indeed no stop for a generated <|endoftext|>
    from conftest import CONFIGS, random_params

    import npgpt
    from npgpt.formats import npgpt_format

    npgpt_format.save(tmp_path / "m.safetensors", CONFIGS["tiny"], random_params(CONFIGS["tiny"]))
    (c,) = npgpt.load(tmp_path / "m.safetensors").completions(
        "Hi", max_new_tokens=3, stop=["<|endoftext|>"], stop_at_eot=False, logit_bias={50256: 100}, temperature=0
    )
    assert (c.tokens, c.finish_reason) == ([50256] * 3, "length")
    assert "\n" not in str(e.value)


def test_logit_bias_is_added_and_minus_100_bans():
    """OpenAI's logit_bias: added to the token's logit before sampling; -100 bans it (and 100 all but picks it)."""
    logits = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05], dtype=np.float32))
    zeros = np.zeros(5, np.float32)
    p = SamplingParams(temperature=0, logit_bias={"0": -100, 3: 2.5})
    assert p.logit_bias == {0: -100.0, 3: 2.5}  # OpenAI's JSON keys are strings of the ids
    biased = apply_logit_bias(logits, p)
    assert biased[0] == -np.inf and biased[3] == np.float32(logits[3] + 2.5)
    assert (biased[[1, 2, 4]] == logits[[1, 2, 4]]).all()
    assert logits[0] == np.log(np.float32(0.5))  # the caller's row is untouched: other rows may share it
    assert choose(logits, zeros, p, np.random.default_rng(0)) == 3
    # a ban holds however likely the token is, and whatever the sampler
    banned = SamplingParams(temperature=5.0, logit_bias={0: -100, 1: -100, 2: -100, 3: -100})
    assert {choose(logits, zeros, banned, np.random.default_rng(s)) for s in range(50)} == {4}


@pytest.mark.parametrize("bias", [{"5": 1, "05": -100}, {5: 1, "5": -100}, {"7": 2, "007": 0}])
def test_a_logit_bias_naming_one_token_twice_is_refused(bias):
    """``{"5": 1, "05": -100}`` (two JSON keys, one token) kept the last bias silently: token 5 was banned."""
    with pytest.raises(NpgptError, match=r"logit_bias gives token \d+ a bias twice") as e:
        SamplingParams(logit_bias=bias)
    assert e.value.param == "logit_bias"


def test_a_logit_bias_over_the_whole_vocabulary_costs_little_per_token():
    """Its entries were added one by one in a Python loop for every row at every step: 16 ms a token for a
    50,257-entry map (one request of n=128 such rows held the whole batch ~2 s a step). Now one dense add."""
    n_vocab = 50257
    p = SamplingParams(logit_bias={str(i): (-100 if i % 7 == 0 else i % 5 - 2) for i in range(n_vocab)})
    logits = np.random.default_rng(0).standard_normal(n_vocab).astype(np.float32)
    want = np.array([-np.inf if i % 7 == 0 else logits[i] + np.float32(i % 5 - 2) for i in range(n_vocab)])
    assert np.array_equal(apply_logit_bias(logits, p), want.astype(np.float32))
    # The map is turned into arrays once per request, not walked per step (no timing here: the table is
    # the same object at every call, and the add reads only it)
    assert p.bias_table is p.bias_table and len(p.bias_table[0]) == n_vocab
    # ... and into one dense vector per logits' length, shared by the request's rows: the indexed add of 50,257
    # entries still took 0.3-0.6 ms a row a step (a third of sampling's time; n=128 rows: ~60 ms a step), the
    # dense add 0.03 ms
    assert p.bias_vector(n_vocab) is p.bias_vector(n_vocab)
    exact = [-np.inf if i % 7 == 0 else i % 5 - 2 for i in range(n_vocab)]
    assert np.array_equal(p.bias_vector(n_vocab), np.array(exact, np.float32))
    # a padded vocabulary (nanoGPT's 50304): its rows past the ids get no bias; ids past a shorter row are left out
    padded = np.random.default_rng(1).standard_normal(50304).astype(np.float32)
    assert np.array_equal(apply_logit_bias(padded, p)[n_vocab:], padded[n_vocab:])
    assert np.array_equal(apply_logit_bias(padded, p)[:n_vocab], apply_logit_bias(padded[:n_vocab], p))
    short = SamplingParams(logit_bias={1: 3, 9: -100, 60000: 5})
    assert np.array_equal(apply_logit_bias(np.zeros(4, np.float32), short), np.array([0, 3, 0, 0], np.float32))


@pytest.mark.parametrize(
    "bias",
    [
        {"abc": 1},  # not a token id
        {"1.5": 1},
        {"9" * 5000: 1},  # more digits than int() takes
        {"\u0663": 1},  # an Arabic-Indic 3: a digit to str.isdigit, not to JSON
        {-1: 1},
        {"-1": 1},
        {True: 1},
        {5: 101},  # OpenAI's range is [-100, 100]
        {5: -100.5},
        {5: float("nan")},
        {5: "1"},
        [(5, 1)],  # not a mapping
    ],
)
def test_bad_logit_bias_is_named(bias):
    with pytest.raises(NpgptError, match="logit_bias") as err:
        SamplingParams(logit_bias=bias)
    assert err.value.param == "logit_bias"


def test_filters_and_repetition_penalty_equal_hugging_faces_processors():
    """Repetition penalty, temperature, top-k, top-p and min-p, in Hugging Face's order, on random logits
    (no ties: which of two equal tokens a cut keeps is arbitrary): the same tokens kept, the same
    probabilities for them."""
    torch = pytest.importorskip("torch")
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    rng = np.random.default_rng(0)
    for _ in range(150):
        V = int(rng.integers(2, 60))
        logits = (rng.standard_normal(V) * rng.choice([0.5, 2.0, 8.0])).astype(np.float32)
        t, k = float(rng.choice([0.3, 0.7, 1.0, 1.5])), int(rng.choice([0, 2, 5, 100]))
        top_p, min_p, rep = float(rng.choice([1.0, 0.9, 0.5, 0.1])), float(rng.choice([0.0, 0.05, 0.3])), 1.3
        prompt = rng.integers(0, V, size=4)
        p = SamplingParams(temperature=t, top_k=k, top_p=top_p, min_p=min_p, repetition_penalty=rep)
        seen = np.zeros(V, dtype=bool)
        seen[prompt] = True
        ours = filter_logits(apply_penalties(logits, np.zeros(V, np.float32), p, seen), p)
        hf = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(rep), TemperatureLogitsWarper(t)])
        hf += [TopKLogitsWarper(k)] if k else []
        hf += [TopPLogitsWarper(top_p)] if top_p < 1 else []
        hf += [MinPLogitsWarper(min_p)] if min_p else []
        theirs = hf(torch.tensor(prompt[None]), torch.tensor(logits[None]).double())[0].numpy()
        np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs))
        np.testing.assert_allclose(np.exp(log_softmax(ours)), np.exp(log_softmax(theirs)), atol=1e-6)


@pytest.mark.parametrize(
    "name, says",
    [
        ("max_length", "max_new_tokens, which counts only the new tokens"),
        ("do_sample", "temperature=0"),
        ("num_return_sequences", r"\[prompt\] \* k"),
        ("num_beams", "no beam search"),
        ("eos_token_id", "stop_at_eot=False"),
        ("eos_token_id", "a fine-tune's own"),  # it said <|endoftext|> alone, where a chat model ends at <|im_end|>
        ("stop_token_ids", r"stop=\[its text\]"),
        ("pad_token_id", "padded and masked for you"),
        ("output_scores", "logprobs=k"),
        ("stop_at_eos", "stop_at_eot"),
        # the near miss meant something else: min_tokens "did you mean 'max_new_tokens'?", diversity_penalty
        # 'repetition_penalty', generator 'temperature', prompt_logprobs 'logprobs'
        ("min_tokens", "npgpt has no minimum"),
        ("diversity_penalty", "no beam search"),
        ("generator", "npgpt's is seed"),
        ("prompt_logprobs", r"model.score\(text\)"),
        ("n_tokens_to_generate", "npgpt's is max_new_tokens"),  # picoGPT's; nanoGPT's sample.py num_samples
        ("num_samples", r"\[prompt\] \* k"),
        ("ignore_eos", "stop_at_eot=False"),
        ("typical_p", "top_k, top_p and min_p"),
        ("output_hidden_states", "run_with_cache"),
        # vLLM's, OpenAI's and llama.cpp's got "valid options: ..." (best_of, skip_special_tokens, use_tqdm, echo)
        ("best_of", r"\[prompt\] \* k"),
        ("bad_words", r"logit_bias=\{id: -100\}"),
        ("skip_special_tokens", r"never holds a generated <\|endoftext\|>"),
        ("include_stop_str_in_output", "ends before the stop sequence"),
        ("truncate_prompt_tokens", r"encode\(text\)\[-k:\]"),
        ("use_tqdm", "no progress bar"),
        ("echo", r"prompt \+ model.generate\(prompt\)"),
        ("stream", r"model.stream\(prompt"),
        ("n_predict", "npgpt's is max_new_tokens"),
        # llama-cpp-python's: temp got "valid options: ..." (a list of every option), tfs_z, mirostat_mode and grammar
        # too; transformers' return_full_text and OpenAI chat's top_logprobs
        ("temp", "npgpt's is temperature"),
        ("tfs_z", "top_k, top_p and min_p"),
        ("mirostat_mode", "no mirostat"),
        ("grammar", "no grammar"),
        ("logits_processor", r"logit_bias=\{id: bias\}"),
        ("stopping_criteria", "stop reading"),
        ("suffix", "no insertion"),
        ("return_full_text", r"prompt \+ model.generate\(prompt\)"),
        ("top_logprobs", "npgpt's is logprobs"),
        ("penalty_alpha", "no contrastive search"),
        ("max_time", "no time limit"),
        # TransformerLens's generate options got "valid options: ..." (verbose=False is its notebooks' habit)
        ("verbose", "no progress bar .*drop it"),
        ("return_type", r"without the prompt .*prompt \+ model.generate\(prompt\) is the whole text"),
    ],
)
def test_another_librarys_generate_option_is_answered_with_npgpts_way(name, says):
    """Hugging Face's max_length got "valid options: ..." (every option but the one to use), n "did you mean 'seed'"."""
    with pytest.raises(NpgptError, match=f"unknown option '{name}'; .*{says}") as e:
        SamplingParams.from_options({name: 1})
    assert e.value.param == name


def test_the_foreign_option_names_are_those_libraries_own():
    import inspect

    from transformers import GenerationConfig

    bridge = pytest.importorskip("transformer_lens.model_bridge")  # TransformerLens 4's HookedTransformer
    hf = set(vars(GenerationConfig()))
    tl = set(inspect.signature(bridge.TransformerBridge.generate).parameters)
    own = {f.name for f in fields(SamplingParams)}
    for name in FOREIGN_OPTIONS:
        assert name not in own
        # n: OpenAI's; attention_mask, streamer: generate()'s; vLLM's SamplingParams; picoGPT's gpt2.py,
        # nanoGPT's sample.py; torch's generator=
        others = {"n", "attention_mask", "streamer", "min_tokens", "ignore_eos", "prompt_logprobs", "stop_token_ids"}
        others |= {"n_tokens_to_generate", "num_samples", "generator"}
        others |= {"sampling_params", "generation_config"}  # vLLM's LLM.generate's and transformers' generate()'s
        # vLLM's SamplingParams and LLM.generate; OpenAI's echo and stream; llama.cpp's server's n_predict
        others |= {"best_of", "bad_words", "allowed_token_ids", "skip_special_tokens", "include_stop_str_in_output"}
        others |= {"truncate_prompt_tokens", "detokenize", "use_tqdm", "echo", "stream", "n_predict"}
        # llama-cpp-python's Llama.create_completion and Llama.generate (temp); transformers' pipeline's; OpenAI chat's
        others |= {"temp", "tfs_z", "mirostat_mode", "mirostat_tau", "mirostat_eta", "grammar", "suffix"}
        others |= {"logits_processor", "stopping_criteria", "return_full_text", "top_logprobs"}
        assert name in hf | tl | others, name


def test_a_zero_d_array_is_the_number_it_holds():
    """temperature=torch.tensor(0.7) (what a reduction gives), max_new_tokens=np.array(3), seed=torch.tensor(5) were
    refused ('temperature must be a finite number >= 0 (0 = greedy), got tensor(0.7000)'), though NumPy's scalars
    pass and prompt ids take 0-d arrays; vLLM's SamplingParams and transformers' GenerationConfig compute with them.
    A 0-d array is now its item(), checked as that number is: a NaN, a float count or a bool still refused."""
    torch = pytest.importorskip("torch")
    given = SamplingParams(
        max_new_tokens=np.array(3), temperature=torch.tensor(0.5), top_k=torch.tensor(4),
        top_p=np.array(0.9, np.float32), seed=torch.tensor(5), logprobs=np.array(2),
        repetition_penalty=torch.tensor(1.5, dtype=torch.float64),
    )  # fmt: skip
    want = SamplingParams(
        max_new_tokens=3, temperature=0.5, top_k=4, top_p=float(np.float32(0.9)), seed=5, logprobs=2,
        repetition_penalty=1.5,
    )  # fmt: skip
    assert given == want and type(given.max_new_tokens) is int and type(given.temperature) is float
    for name, value, says in (
        ("temperature", torch.tensor(float("nan")), "got nan"),
        ("max_new_tokens", np.array(2.0), "got 2.0"),
        ("top_k", np.array(True), "got True"),
        ("temperature", torch.tensor([0.5]), r"got tensor\(\[0.5000\]\)"),  # one number in a 1-d array: not a number
    ):
        with pytest.raises(NpgptError, match=says):
            SamplingParams(**{name: value})


def test_top_k_minus_one_is_off_as_vllms_samplingparams_reads_it():
    """vLLM's SamplingParams(top_k=-1) (its off for years, still taken) and llama.cpp's -1 were taken by npgpt's
    server and CLI as off, but the Python API refused model.generate(p, top_k=-1) ('top_k must be an integer >= 0
    (0 = off), got -1'): the rule lived beside SamplingParams, not in it. SamplingParams now reads -1 as 0; -2 is
    still refused."""
    assert SamplingParams(top_k=-1) == SamplingParams(top_k=0) == SamplingParams.from_options({"top_k": np.int64(-1)})
    with pytest.raises(NpgptError, match="top_k must be an integer >= 0 .*got -2"):
        SamplingParams(top_k=-2)


def test_logprobs_true_names_the_count_it_takes():
    """OpenAI chat's habit, logprobs=True with top_logprobs=5, said 'logprobs must be an integer in [0, 20], got True'
    and no way; a bool now names npgpt's reading (vLLM's SamplingParams would take True silently as 1)."""
    for flag in (True, False, np.True_):
        with pytest.raises(NpgptError, match=r"got \S+ \(OpenAI chat's logprobs=True, top_logprobs=k: here logprobs=k"):
            SamplingParams(logprobs=flag)
    with pytest.raises(NpgptError, match=r"got 21$"):
        SamplingParams(logprobs=21)
