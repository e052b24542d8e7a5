"""Config fidelity: every transformers ``GPT2Config`` field that changes the math is honoured
(logits and greedy tokens equal to transformers') or refused at load with one line; nanoGPT's
``bias=False`` equals its own math; a padded vocabulary's extra rows are never produced."""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import run_cli

import npgpt
from npgpt.activations import NAMES, TANH_GELU
from npgpt.api import GPT2
from npgpt.config import GPT2Config
from npgpt.errors import CheckpointError, NpgptError
from npgpt.formats import convert, hf, load_checkpoint
from npgpt.params import flatten, init_params, unflatten

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Odd shapes: 3 heads of 16, 5 layers; a vocabulary the real tokenizer can decode.
SHAPE = dict(vocab_size=512, n_positions=32, n_embd=48, n_head=3, n_layer=5)
IDS = np.random.default_rng(0).integers(0, 512, (2, 13))


def hf_model(directory, **fields):
    """A random transformers GPT-2 with ``fields`` set, saved to ``directory`` and reloaded (eager
    attention, the only implementation that honours reorder_and_upcast_attn)."""
    config = transformers.GPT2Config(**{**SHAPE, **fields})
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # larger than GPT-2's init, so activations and scales leave the linear regime
        for name, p in model.named_parameters():
            p.copy_(
                1.0 + 0.2 * torch.randn_like(p)
                if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))
                else 0.15 * torch.randn_like(p)
            )
    model.save_pretrained(directory)
    return transformers.GPT2LMHeadModel.from_pretrained(directory, attn_implementation="eager").eval()


def ref_logits(ref, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return ref(torch.tensor(ids)).logits.numpy()


def ref_greedy(ref, prompt: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = ref.generate(
            torch.tensor([prompt]),
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        )
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("name", NAMES)
def test_each_activation_equals_transformers_on_every_backend(name):
    """Over [-12, 12]: float32 NumPy, PyTorch and JAX arrays against transformers' ACT2FN."""
    from transformers.activations import ACT2FN

    from npgpt.model import ACTIVATIONS

    x = np.linspace(-12, 12, 4801, dtype=np.float32)
    expected = ACT2FN[name](torch.from_numpy(x).double()).numpy()
    tolerance = 2e-6 * np.maximum(1.0, np.abs(expected))  # float32 rounding (and erf's 1.2e-7)
    assert (np.abs(ACTIVATIONS[name](x) - expected) <= tolerance).all()
    assert ACTIVATIONS[name](x).dtype == np.float32
    assert (np.abs(ACTIVATIONS[name](torch.from_numpy(x)).numpy() - expected) <= tolerance).all()
    jnp = pytest.importorskip("jax.numpy")
    assert (np.abs(np.asarray(ACTIVATIONS[name](jnp.asarray(x))) - expected) <= tolerance).all()


CASES = {
    **{f"activation_function={a}": {"activation_function": a} for a in NAMES},
    "n_inner=40": {"n_inner": 40},
    "layer_norm_epsilon=1e-1": {"layer_norm_epsilon": 1e-1},
    "layer_norm_epsilon=0.0": {"layer_norm_epsilon": 0.0},  # transformers' nn.LayerNorm(eps=0) loads and runs
    "scale_attn_weights=False": {"scale_attn_weights": False},
    "scale_attn_by_inverse_layer_idx": {"scale_attn_by_inverse_layer_idx": True},
    "reorder_and_upcast_attn": {"reorder_and_upcast_attn": True},
    "tie_word_embeddings=False": {"tie_word_embeddings": False},
    "combined": {
        "activation_function": "relu",
        "n_inner": 72,
        "layer_norm_epsilon": 1e-3,
        "scale_attn_by_inverse_layer_idx": True,
        "reorder_and_upcast_attn": True,
        "tie_word_embeddings": False,
    },
    "combined unscaled": {
        "activation_function": "quick_gelu",
        "n_inner": 24,
        "scale_attn_weights": False,
        "scale_attn_by_inverse_layer_idx": True,
        "tie_word_embeddings": False,
    },
}
# Fields whose value does not change the numbers (beyond rounding): nothing to show they are used.
# (An epsilon of 0 instead of 1e-5 moves a row of variance ~1 by ~5e-6.)
SAME_AS_DEFAULT = {f"activation_function={a}" for a in TANH_GELU} | {"reorder_and_upcast_attn"}
SAME_AS_DEFAULT.add("layer_norm_epsilon=0.0")


@pytest.mark.parametrize("case", list(CASES))
def test_logits_and_greedy_tokens_equal_transformers(tmp_path, case):
    fields = CASES[case]
    ref = hf_model(tmp_path, **fields)
    model = npgpt.load(tmp_path)
    for field, value in fields.items():
        assert getattr(model.config, field) == value
    assert model.config.n_params == ref.num_parameters()
    got = model.logits(IDS)
    assert got.shape == (2, 13, 512)
    assert np.abs(got - ref_logits(ref, IDS)).max() <= 1e-4
    prompt = IDS[0, :5].tolist()
    tokens = model.completions([prompt], max_new_tokens=8, temperature=0, stop_at_eot=False)[0].tokens
    assert tokens == ref_greedy(ref, prompt, 8)
    if case not in SAME_AS_DEFAULT:  # the field matters for these weights: ignoring it fails the tolerance
        plain = dataclasses.replace(
            model.config,
            **{f.name: f.default for f in dataclasses.fields(GPT2Config) if f.name in fields and f.name != "n_inner"},
        )
        if plain != model.config:
            params = flatten(load_checkpoint(tmp_path)[1])
            params.pop("lm_head", None)
            if "n_inner" in fields:  # a shape: cannot be ignored, the tensors would not fit
                plain = dataclasses.replace(plain, n_inner=fields["n_inner"])
            ignored = GPT2(plain, unflatten(params, plain)).logits(IDS)
            assert np.abs(ignored - got).max() > 5e-4  # 5x the tolerance (erf GELU vs tanh GELU: ~1e-3)


@pytest.mark.parametrize(
    "backend, dtype, atol", [("numpy", "float32", 1e-4), ("torch", "float32", 1e-4), ("torch", "bfloat16", 0.5)]
)
def test_untied_head_on_every_layout(tmp_path, backend, dtype, atol):
    """The NumPy layout and the 16-bit weights keep the untied head as the head."""
    ref = hf_model(tmp_path, tie_word_embeddings=False, n_inner=40)
    expected = ref_logits(ref, IDS)
    got = npgpt.load(tmp_path, backend=backend, dtype=dtype).logits(IDS)
    assert np.abs(got - expected).max() <= atol
    assert np.argmax(got[0, -1]) == np.argmax(expected[0, -1])


def test_save_writes_what_transformers_reads(tmp_path):
    """hf.save of a non-default config: transformers builds the same model from it, and npgpt
    reads back the same config and tensors; the npgpt and OpenAI formats round-trip it too."""
    config = GPT2Config(
        n_vocab=512,
        n_ctx=32,
        n_embd=48,
        n_head=3,
        n_layer=5,
        n_inner=40,
        activation_function="silu",
        layer_norm_epsilon=1e-3,
        scale_attn_by_inverse_layer_idx=True,
        reorder_and_upcast_attn=True,
        tie_word_embeddings=False,
    )
    assert GPT2Config.from_dict(config.to_dict()) == config
    params = init_params(config, seed=3, std=0.15)
    model = GPT2(config, params)
    hf.save(tmp_path / "hf", config, params)
    ref = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    assert np.abs(ref_logits(ref, IDS) - model.logits(IDS)).max() <= 1e-4
    for fmt in ("hf", "npgpt", "openai"):
        out = convert(tmp_path / "hf", tmp_path / f"out-{fmt}", fmt=fmt)  # beside the source: it is not rewritten
        back_config, back = load_checkpoint(out)
        assert back_config == config
        assert flatten(back).keys() == flatten(params).keys()
        for name, value in flatten(params).items():
            np.testing.assert_array_equal(flatten(back)[name], value)


# transformers' GPT2Config.attribute_map: another name for each of four fields, read in their place.
ALIASES = {
    "hidden_size": "n_embd",
    "num_attention_heads": "n_head",
    "num_hidden_layers": "n_layer",
    "max_position_embeddings": "n_positions",
}


@pytest.mark.parametrize("keep", [True, False], ids=["beside GPT-2's names", "in their place"])
def test_transformers_other_names_for_the_shape_are_read_as_transformers_reads_them(tmp_path, keep):
    """A config.json with transformers' ``attribute_map`` names (hidden_size, num_attention_heads, ...):
    transformers reads them, over GPT-2's names where both are there. npgpt ran n_head and ignored
    num_attention_heads (3 heads where transformers ran 4: logits off by whole units), and refused a
    config.json with only those names as missing n_embd."""
    hf_model(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    values = {alias: raw[name] for alias, name in ALIASES.items()} | {"num_attention_heads": 4}
    if not keep:
        raw = {k: v for k, v in raw.items() if k not in ALIASES.values()}
    (tmp_path / "config.json").write_text(json.dumps({**raw, **values}))
    ref = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert ref.config.n_head == 4
    model = npgpt.load(tmp_path)
    assert model.config.n_head == 4
    assert np.abs(model.logits(IDS) - ref_logits(ref, IDS)).max() <= 1e-4


# -- nanoGPT's bias=False ----------------------------------------------------------------------------------
def nanogpt_logits(sd: dict, idx, n_head: int, n_layer: int):
    """nanoGPT's ``GPT.forward`` (model.py) with ``bias=False``, written out: LayerNorm is
    ``F.layer_norm(x, shape, weight, None, 1e-5)``, Linear has no bias, GELU is exact (nn.GELU)."""
    import torch.nn.functional as F

    B, T = idx.shape
    C = sd["transformer.wte.weight"].shape[1]
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        h = F.layer_norm(x, (C,), sd[p + "ln_1.weight"], None, 1e-5)
        q, k, v = F.linear(h, sd[p + "attn.c_attn.weight"]).split(C, dim=2)
        q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(y, sd[p + "attn.c_proj.weight"])
        h = F.layer_norm(x, (C,), sd[p + "ln_2.weight"], None, 1e-5)
        x = x + F.linear(F.gelu(F.linear(h, sd[p + "mlp.c_fc.weight"])), sd[p + "mlp.c_proj.weight"])
    x = F.layer_norm(x, (C,), sd["transformer.ln_f.weight"], None, 1e-5)
    return F.linear(x, sd["transformer.wte.weight"])  # nanoGPT ties lm_head to wte


def test_bias_free_model_equals_nanogpt_and_transformers(tmp_path):
    config = GPT2Config(
        n_vocab=512, n_ctx=32, n_embd=48, n_head=3, n_layer=5, bias=False, activation_function="gelu"
    )  # nanoGPT's nn.GELU() is the exact (erf) GELU
    params = init_params(config, seed=5, std=0.15)
    flat = flatten(params)
    assert not any(name.endswith(".b") for name in flat)
    for name in flat:
        if name.endswith(".g"):
            flat[name] = flat[name] + np.random.default_rng(6).normal(0, 0.2, flat[name].shape).astype(np.float32)
    params = unflatten(flat, config)
    assert config.n_params == sum(v.size for v in flat.values())

    # nanoGPT's names and nn.Linear's [out, in] layout
    def nanogpt_name(k: str) -> str:  # blocks.0.mlp.c_fc.w -> transformer.h.0.mlp.c_fc.weight
        return "transformer." + (k + ".weight" if k in ("wte", "wpe") else k.replace("blocks.", "h.")[:-2] + ".weight")

    sd = {
        nanogpt_name(k): torch.from_numpy(np.ascontiguousarray(v.T if k.endswith(".w") else v)) for k, v in flat.items()
    }
    with torch.no_grad():
        expected = nanogpt_logits(sd, torch.tensor(IDS), 3, 5).numpy()
    model = GPT2(config, params)
    assert np.abs(model.logits(IDS) - expected).max() <= 1e-4
    # torch 16-bit weights: the layouts need no biases either
    assert np.abs(GPT2(config, params, backend="torch", dtype="bfloat16").logits(IDS) - expected).max() <= 0.5
    # transformers has no bias=False: hf.save writes zero biases, the same function
    hf.save(tmp_path, config, params)
    ref = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert np.abs(ref_logits(ref, IDS) - expected).max() <= 1e-4
    assert npgpt.load(tmp_path).config == dataclasses.replace(config, bias=True)


# -- refusals ------------------------------------------------------------------------------------------------
REFUSED = [
    ("activation_function", "prelu"),
    ("activation_function", "xielu"),
    ("activation_function", "gelu_fancy"),
    ("activation_function", 3),
    ("n_head", True),
    ("n_embd", 48.0),
    ("n_layer", "5"),
    ("vocab_size", -1),
    ("n_inner", True),
    ("n_inner", 0),
    ("n_inner", "64"),
    ("layer_norm_epsilon", True),
    ("layer_norm_epsilon", -1e-05),
    ("layer_norm_epsilon", float("nan")),
    ("layer_norm_epsilon", "1e-5"),
    ("scale_attn_weights", 1),
    ("scale_attn_by_inverse_layer_idx", "yes"),
    ("reorder_and_upcast_attn", None),
    ("tie_word_embeddings", 0),
    ("add_cross_attention", True),
    ("model_type", "gpt_neo"),
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("plain")
    hf.save(
        d,
        GPT2Config(n_vocab=512, n_ctx=32, n_embd=48, n_head=3, n_layer=2),
        init_params(GPT2Config(n_vocab=512, n_ctx=32, n_embd=48, n_head=3, n_layer=2)),
    )
    return d


def with_field(saved, tmp_path, field, value):
    """A copy of the saved HF directory whose config.json sets ``field`` to ``value``."""
    for f in saved.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((saved / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, field: value}))
    return tmp_path


@pytest.mark.parametrize("field, value", REFUSED)
def test_unusable_values_are_refused_in_one_line(saved, tmp_path, field, value):
    path = with_field(saved, tmp_path, field, value)
    with pytest.raises(CheckpointError) as e:
        npgpt.load(path)
    message = str(e.value)
    assert "\n" not in message and field in message and repr(value) in message


def test_refused_through_the_npgpt_format_and_openai_hparams(tmp_path):
    with pytest.raises(ValueError, match="activation_function.*'prelu'"):
        GPT2Config(activation_function="prelu")
    with pytest.raises(ValueError, match=r"n_head must be a positive int, got True"):
        GPT2Config.from_dict({"n_vocab": 5, "n_ctx": 4, "n_embd": 4, "n_head": True, "n_layer": 1})
    (tmp_path / "hparams.json").write_text(
        json.dumps({"n_vocab": 5, "n_ctx": 4, "n_embd": 4, "n_head": 1, "n_layer": 1, "bias": "no"})
    )
    (tmp_path / "model.ckpt.index").write_bytes(b"")
    with pytest.raises(CheckpointError, match="bias must be true or false, got 'no'"):
        load_checkpoint(tmp_path)


def test_untied_checkpoint_without_its_head_is_refused(tmp_path):
    from safetensors.numpy import load_file, save_file

    hf_model(tmp_path, tie_word_embeddings=False)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["lm_head.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="missing.*'lm_head'"):
        npgpt.load(tmp_path)


def test_a_head_apart_from_wte_under_a_tied_config_is_the_head_transformers_runs(tmp_path):
    """config.json says tie_word_embeddings but the file holds an lm_head.weight that differs from wte:
    transformers keeps the file's head (and warns); npgpt dropped it and unembedded with wte (logits
    off by ~1, other greedy tokens)."""
    hf_model(tmp_path, tie_word_embeddings=False)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    ref = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert not torch.equal(ref.lm_head.weight, ref.transformer.wte.weight)
    model = npgpt.load(tmp_path)
    assert not model.config.tie_word_embeddings
    assert np.abs(model.logits(IDS) - ref_logits(ref, IDS)).max() < 1e-4
    prompt = IDS[0, :5].tolist()
    tokens = model.completions([prompt], max_new_tokens=8, temperature=0, stop_at_eot=False)[0].tokens
    assert tokens == ref_greedy(ref, prompt, 8)


@pytest.mark.parametrize("field, value", [("activation_function", "prelu"), ("n_head", True)])
def test_cli_refuses_in_one_line(saved, tmp_path, field, value):
    r = run_cli("info", str(with_field(saved, tmp_path, field, value)))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in r.stderr


# -- a padded vocabulary (nanoGPT's and llm.c's 50304) ---------------------------------------------------------
N_TOKENS = 50257


@pytest.fixture(scope="module")
def padded() -> GPT2:
    """A model whose 47 padding rows hold by far the largest logits at every position."""
    config = GPT2Config(n_vocab=50304, n_ctx=64, n_embd=48, n_head=3, n_layer=2)
    flat = flatten(init_params(config, seed=1))
    flat["wte"][N_TOKENS:] = 1.0  # ln_f makes every final state ~10 * ones: these rows score ~480
    flat["ln_f.g"][:], flat["ln_f.b"][:] = 0.01, 10.0
    return GPT2(config, unflatten(flat, config))


def test_padded_transformers_model_keeps_its_full_width(tmp_path):
    ref = hf_model(tmp_path, vocab_size=50304, n_layer=2)
    got = npgpt.load(tmp_path).logits(IDS)
    assert got.shape == (2, 13, 50304)
    assert np.abs(got - ref_logits(ref, IDS)).max() <= 1e-4


def test_padded_rows_dominate_but_logits_keep_the_full_width(padded):
    logits = padded.logits([[464, 3290, 318]])
    assert logits.shape == (1, 3, 50304)  # the model's full width
    assert (logits.argmax(-1) >= N_TOKENS).all()


@pytest.mark.parametrize(
    "sampling",
    [
        dict(temperature=0),
        dict(temperature=1.0, seed=1),
        dict(temperature=2.0, top_k=0, top_p=1.0, seed=2),
        dict(temperature=1.0, top_k=40, top_p=0.9, min_p=0.01, seed=3),
        dict(temperature=0.8, repetition_penalty=1.3, presence_penalty=1.0, frequency_penalty=1.0, seed=4),
        dict(temperature=0, repetition_penalty=2.0),
    ],
)
def test_generation_never_produces_a_padded_id(padded, sampling):
    done = padded.completions(
        ["Hello", "The cat sat on", "1 2 3"], max_new_tokens=6, stop_at_eot=False, logprobs=5, **sampling
    )
    for c in done:
        assert len(c.tokens) == 6 and max(c.tokens) < N_TOKENS
        assert all(np.isfinite(c.token_logprobs))
        assert all(i < N_TOKENS for top in c.top_logprobs for i, _ in top)
        assert all(len(top) == 5 for top in c.top_logprobs)
    assert isinstance(padded.generate("Hello", max_new_tokens=4, temperature=0.7, seed=0), str)
    assert all(i < N_TOKENS for i, _, _ in padded.next_tokens("Hello", k=10))


def test_generated_logprobs_are_scores_on_a_padded_vocabulary(padded):
    """Since 2839c63 model.score and the server's echo take the softmax over the model's full output, a padded
    vocabulary's rows too, but a generated token's logprob was over the tokens alone: on this model -0.3 for a
    token that score (and echo in the same response) gave -470. One definition: the model's own, as vLLM and
    transformers' compute_transition_scores give it; the alternatives stay tokens."""
    prompt = padded.tokenizer.encode("Hello there")
    (done,) = padded.completions([prompt], max_new_tokens=3, temperature=0, stop_at_eot=False, logprobs=2)
    scored = padded.score(prompt + done.tokens).token_logprobs[-3:]
    np.testing.assert_allclose(done.token_logprobs, scored, rtol=1e-5)
    assert all(i < N_TOKENS for top in done.top_logprobs for i, _ in top)
    assert [top[0][1] for top in done.top_logprobs] == pytest.approx(done.token_logprobs, rel=1e-6)  # greedy


def test_next_tokens_and_the_logit_lens_give_scores_probabilities_on_a_padded_vocabulary(padded):
    """next_tokens and the logit lens took the softmax over the tokens alone, so on a padded vocabulary their
    probabilities were not the model's: here the padded rows hold nearly all of it, and next_tokens listed a
    token at ~1 that score gives e^-470. Now both are the softmax over the full output, as score, a generated
    token's logprob, transformers and TransformerLens (over d_vocab_out) take it; the tokens listed stay tokens.
    Tolerance: float32 softmax against score's float64 log-softmax, rtol 1e-4."""
    from npgpt.lens import logit_lens

    prompt = padded.tokenizer.encode("Hello there")
    top = padded.next_tokens(prompt, k=3)
    assert all(i < N_TOKENS for i, _, _ in top)
    scored = [np.exp(padded.score(prompt + [i]).token_logprobs[-1]) for i, _, _ in top]
    np.testing.assert_allclose([p for _, _, p in top], scored, rtol=1e-4, atol=1e-30)
    lens = logit_lens(padded, prompt)
    assert lens.top_ids.max() < N_TOKENS and lens.top_ids[-1, -1] == top[0][0]
    np.testing.assert_allclose(lens.top_probs[-1, -1], top[0][2], rtol=1e-4, atol=1e-30)
    np.testing.assert_allclose(lens.final_probs[-1], lens.top_probs[-1], rtol=1e-6)


PADDED_ID = "ids 50257 to 50303 are the model's padded vocabulary, no token"


def test_a_padded_id_is_no_token_wherever_a_texts_ids_come_in(padded):
    """No text has a padded row's id: generate's prompt refuses it as score's text does (and logit_bias, and
    next_tokens); the model's forward (logits, the hooks) takes any row of its embedding, as transformers' does."""
    for call in (
        lambda: padded.generate([464, 50300], max_new_tokens=2),
        lambda: padded.completions([[464, 50300]], max_new_tokens=2),
        lambda: padded.next_tokens([464, 50300]),
        lambda: padded.score([464, 50300, 318]),
        lambda: padded.generate("Hi", max_new_tokens=2, logit_bias={50300: 5}),
    ):
        with pytest.raises(NpgptError, match=r"\[0, 50257\).*" + PADDED_ID):
            call()
    assert padded.logits([[464, 50300]]).shape == (1, 2, 50304)
    assert padded.run_with_cache([[464, 50300]])[0].shape == (1, 2, 50304)
    assert padded.generate([464, 50256], max_new_tokens=2, temperature=0)  # the last token is one


def test_server_never_produces_a_padded_id(padded):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from npgpt.server import background_server, create_app

    bodies = [
        {"model": "padded", "prompt": p, "max_tokens": 5, "logprobs": 3, **s}
        for p in ("Hello", "The cat", "Once upon a time")
        for s in ({"temperature": 0}, {"temperature": 1.0})
    ]
    with background_server(create_app({"padded": padded}, max_batch=4)) as base, httpx.Client(timeout=120) as http:
        with ThreadPoolExecutor(len(bodies)) as pool:  # together: they share the decoding batch
            responses = list(pool.map(lambda b: http.post(base + "/v1/completions", json=b), bodies))
        echo = http.post(
            base + "/v1/completions",
            json={
                "model": "padded",
                "prompt": "Hello there",
                "max_tokens": 1,
                "echo": True,
                "logprobs": 2,
                "temperature": 0,
            },
        )
        top = http.post(base + "/v1/next_tokens", json={"model": "padded", "prompt": "Hello", "k": 5})
        refused = [
            http.post(base + "/v1/completions", json={"model": "padded", "prompt": [464, 50300], **extra})
            for extra in ({"max_tokens": 2}, {"max_tokens": 0, "echo": True, "logprobs": 1})
        ]
    greedy = padded.completions(["Hello"], max_new_tokens=5, temperature=0, stop_at_eot=False)[0].text
    for body, r in zip(bodies, responses, strict=True):
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert len(choice["logprobs"]["tokens"]) >= 1
        assert all(np.isfinite(choice["logprobs"]["token_logprobs"]))
        if body["prompt"] == "Hello" and body["temperature"] == 0 and choice["finish_reason"] == "length":
            assert choice["text"] == greedy
    assert echo.status_code == 200, echo.text
    echoed = echo.json()["choices"][0]["logprobs"]
    scored = padded.score("Hello there").token_logprobs  # one definition: the softmax over the full output
    np.testing.assert_allclose(echoed["token_logprobs"][1 : len(scored)], scored[1:], rtol=1e-5)
    assert all(padded.tokenizer.encode(t)[0] < N_TOKENS for top in echoed["top_logprobs"][1:] for t in top)
    assert top.status_code == 200 and all(t["id"] < N_TOKENS for t in top.json()["tokens"])
    for r in refused:
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text


@pytest.mark.parametrize("scoring", [False, True])
def test_the_server_refuses_a_padded_id_in_a_prompt_saying_it_is_padding(padded, scoring):
    """The server's id prompts went to the tokenizer's decode first: "token id 50300 is not in GPT-2's
    vocabulary", no word of the padded vocabulary; now the Python API's check and message."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from npgpt.server import create_app

    body = {"prompt": [[464, 50300]], "max_tokens": 0 if scoring else 2} | ({"echo": True} if scoring else {})
    with TestClient(create_app({"padded": padded}), raise_server_exceptions=False) as http:
        r = http.post("/v1/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
    assert (
        r.json()["error"]["message"]
        == "prompt 0 has token id 50300, outside the vocabulary [0, 50257); " + PADDED_ID + ": no text has them"
    )
