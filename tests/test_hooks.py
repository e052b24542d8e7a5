"""hooks.py against TransformerLens: every cached activation, ablations and patches, on the same
random weights with TransformerLens's weight processing off; and JAX's activation gradients
against finite differences."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
import pickle
import shutil

import numpy as np
import pytest
from conftest import random_params

from npgpt import activation_grads, hooks, lens_names
from npgpt.api import GPT2
from npgpt.config import PRESETS, GPT2Config
from npgpt.errors import NpgptError, shown
from npgpt.formats import hf
from npgpt.model import gpt2
from npgpt.tokenizer import default_files

ODD = GPT2Config(n_ctx=32, n_embd=48, n_head=3, n_layer=3)


def scaled_params(config: GPT2Config, seed: int) -> dict:
    """random_params with weights 10x GPT-2's initial scale, so activations are O(1) and a 1e-4
    tolerance means something (at 0.02 they are small enough to pass any absolute test)."""
    params = random_params(config, seed)
    for blk in params["blocks"]:
        for layer in ("attn", "mlp"):
            for sub in blk[layer].values():
                sub["w"] = sub["w"] * 10
    params["wte"], params["wpe"] = params["wte"] * 10, params["wpe"] * 10
    return params


def batch(config: GPT2Config, T: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Two rows, the second left-padded by 3. The JAX tests all run ODD on these ids' shape [2, 7]: JAX
    compiles each operation of an uncompiled (hooked) pass and of its gradient once per shape, seconds
    each time on a loaded host, so one shape throughout compiles once for the file."""
    ids = np.random.default_rng(1).integers(0, config.n_vocab, (2, T))
    mask = np.ones((2, T), np.int64)
    mask[1, :3] = 0
    return ids, mask


def bridge(config: GPT2Config, params: dict, path: str):
    """TransformerLens's bridge over a Hugging Face model with these weights: classic hook names,
    no weight processing (no folded layer norms, no centring); offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    tl = pytest.importorskip("transformer_lens.model_bridge")
    from transformers import GPT2LMHeadModel

    hf.save(path, config, params)
    encoder_json, vocab_bpe = default_files()  # GPT-2's tokenizer, as the Hub ships it, for text inputs
    shutil.copy(encoder_json, os.path.join(path, "vocab.json"))
    shutil.copy(vocab_bpe, os.path.join(path, "merges.txt"))
    ref = GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    br = tl.TransformerBridge.boot_transformers(path, hf_model=ref)
    br.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    br.set_use_attn_result(True)  # attn.hook_result too, as npgpt's hook names have it
    return br


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory):
    params = scaled_params(ODD, 3)
    return GPT2(ODD, params), bridge(ODD, params, str(tmp_path_factory.mktemp("tl-odd")))


def assert_cache_equal(cache: dict, tl_cache, mask: np.ndarray, n_layer: int) -> None:
    """Every activation equal within 1e-4 at the real tokens (padding positions mean nothing), the masked
    attention scores -inf in both."""
    real = mask.astype(bool)
    assert set(hooks.hook_names(n_layer)) <= set(tl_cache.keys())
    for name in hooks.hook_names(n_layer):
        ours, theirs = cache[name], tl_cache[name].float().numpy()
        assert ours.shape == theirs.shape and ours.dtype == np.float32, name
        if name.endswith(("hook_attn_scores", "hook_pattern")):  # [B, H, Tq, Tk]: real query rows
            ours, theirs = ours.transpose(0, 2, 1, 3)[real], theirs.transpose(0, 2, 1, 3)[real]
            assert np.array_equal(np.isneginf(ours), np.isneginf(theirs)), name  # and assert_allclose checks it too
        else:
            ours, theirs = ours[real], theirs[real]
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4, err_msg=name)


def tl_run(br, ids: np.ndarray, mask: np.ndarray, **kw):
    import torch

    with torch.no_grad():
        return br.run_with_cache(torch.tensor(ids), attention_mask=torch.tensor(mask), **kw)


def test_hook_points_are_reached_in_order_and_change_nothing():
    """model.gpt2's own hook points are every hook name but attn.hook_result, which npgpt.hooks makes of
    attn.hook_z and attn.c_proj.w (the model file stays the paper)."""
    model = GPT2(ODD, scaled_params(ODD, 0))
    ids = np.arange(5)[None] + 100
    seen: list[str] = []
    with_hook, _ = gpt2(ids, model.params, ODD, hook=lambda name, x: seen.append(name) or x)
    assert seen == [n for n in hooks.hook_names(ODD.n_layer) if not n.endswith("attn.hook_result")]
    without, _ = gpt2(ids, model.params, ODD)
    np.testing.assert_array_equal(with_hook, without)


def test_every_cached_activation_equals_transformer_lens(odd):
    model, br = odd
    ids, mask = batch(ODD)
    logits, cache = model.run_with_cache(ids, attention_mask=mask)
    tl_logits, tl_cache = tl_run(br, ids, mask)
    assert_cache_equal(cache, tl_cache, mask, ODD.n_layer)
    real = mask.astype(bool)
    np.testing.assert_allclose(logits[real], tl_logits.numpy()[real], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(logits, model.logits(ids, attention_mask=mask), atol=1e-5)


@pytest.mark.parametrize(
    "changes",
    [
        # 5 heads of 8, an untied head, relu, its own MLP width and eps, scores divided by the layer index too
        dict(n_head=5, n_embd=40, n_layer=2, tie_word_embeddings=False, activation_function="relu", n_inner=56,
             layer_norm_epsilon=1e-3, scale_attn_by_inverse_layer_idx=True),
        dict(n_head=7, n_embd=56, n_layer=1, tie_word_embeddings=False, activation_function="silu"),  # one block
        dict(activation_function="quick_gelu", reorder_and_upcast_attn=True),
    ],
)  # fmt: skip
def test_every_cached_activation_equals_transformer_lens_on_other_shapes(tmp_path, changes):
    """The cache and logits of GPT-2s that are not GPT-2 small's shape (odd head counts, untied heads, other
    activations and config fields transformers honours) equal TransformerLens's within 1e-4, left-padded batch.
    (TransformerLens 4.3's bridge ignores scale_attn_weights=False, where npgpt's logits are transformers'.)"""
    config = dataclasses.replace(ODD, **changes)
    params = scaled_params(config, 11)
    model, br = GPT2(config, params), bridge(config, params, str(tmp_path / "tl"))
    ids, mask = batch(config)
    logits, cache = model.run_with_cache(ids, attention_mask=mask)
    tl_logits, tl_cache = tl_run(br, ids, mask)
    assert_cache_equal(cache, tl_cache, mask, config.n_layer)
    real = mask.astype(bool)
    np.testing.assert_allclose(logits[real], tl_logits.numpy()[real], atol=1e-4, rtol=1e-4)


def as_numpy(x) -> np.ndarray:
    return x.detach().float().numpy()


def test_cache_reads_transformer_lens_shorthand_keys(odd):
    """TransformerLens users write cache["pattern", 0], cache["resid_post", -1], cache["scale", 1, "ln1"],
    cache["k1a"]: each was a KeyError on npgpt's plain dict. Now each key reads the array
    TransformerLens's ActivationCache reads for it."""
    model, br = odd
    ids, _ = batch(ODD)
    ones = np.ones_like(ids)
    _, cache = model.run_with_cache(ids)
    _, tl_cache = tl_run(br, ids, ones)
    keys = [
        ("pattern", 0), ("resid_post", -1), ("q", 2), ("attn", -3), ("attn_scores", 1, "attn"), ("key", 1),
        ("scale", 1, "ln1"), ("normalized", 2, "ln2"), ("pre", 1), ("mlp_post", 0), ("resid_mid", -2),
        ("embed",), "pattern0", "k1a", "scale2ln2", "scale", "normalized", "pos_embed", "blocks.2.hook_mlp_out",
    ]  # fmt: skip
    for key in keys:
        ours, theirs = cache[key], as_numpy(tl_cache[key])
        seen = np.isfinite(theirs)  # scores hidden from a query: MASKED here, -inf there
        assert ours.shape == theirs.shape, key
        np.testing.assert_allclose(ours[seen], theirs[seen], atol=1e-4, rtol=1e-4, err_msg=str(key))
    assert isinstance(cache, dict) and list(cache) == hooks.hook_names(ODD.n_layer)  # still a dict of full names


def test_cache_helpers_equal_transformer_lens(odd):
    """accumulated_resid, decompose_resid, stack_activation and apply_ln_to_stack were AttributeErrors
    on npgpt's cache; now each gives TransformerLens's stack and labels on the same weights."""
    model, br = odd
    ids, _ = batch(ODD)
    _, cache = model.run_with_cache(ids)
    _, tl_cache = tl_run(br, ids, np.ones_like(ids))

    def check(method: str, *args, **kw) -> None:
        ours, theirs = getattr(cache, method)(*args, **kw), getattr(tl_cache, method)(*args, **kw)
        if kw.get("return_labels"):
            assert ours[1] == theirs[1], (method, kw)
            ours, theirs = ours[0], theirs[0]
        np.testing.assert_allclose(ours, as_numpy(theirs), atol=1e-4, rtol=1e-4, err_msg=f"{method} {args} {kw}")

    for kw in [
        {}, {"layer": 2, "incl_mid": True}, {"layer": 1, "mlp_input": True}, {"layer": 0}, {"apply_ln": True},
        {"layer": 2, "apply_ln": True}, {"layer": -1, "incl_mid": True, "apply_ln": True},
        {"layer": 1, "mlp_input": True, "apply_ln": True}, {"apply_ln": True, "pos_slice": -1},
        {"layer": 3, "incl_mid": True, "apply_ln": True, "pos_slice": [0, 3]}, {"layer": 2, "pos_slice": (1, 5)},
    ]:  # fmt: skip
        check("accumulated_resid", return_labels=True, **kw)
    for kw in [
        {}, {"apply_ln": True}, {"layer": 2, "mode": "mlp"}, {"incl_embeds": False, "layer": 1, "pos_slice": 2},
        {"layer": 1, "mlp_input": True, "mode": "attn", "apply_ln": True},
    ]:  # fmt: skip
        check("decompose_resid", return_labels=True, **kw)
    for args in [("resid_post",), ("pattern", 2), ("scale", -1, "ln2"), ("z",)]:
        check("stack_activation", *args)
    stack, tl_stack = cache.accumulated_resid(), tl_cache.accumulated_resid()
    for kw in [{}, {"layer": 1}, {"layer": 1, "mlp_input": True, "batch_slice": 1}, {"recompute_ln": True}]:
        ours, theirs = cache.apply_ln_to_stack(stack, **kw), tl_cache.apply_ln_to_stack(tl_stack, **kw)
        np.testing.assert_allclose(ours, as_numpy(theirs), atol=1e-4, rtol=1e-4, err_msg=str(kw))
    # The logit lens's last row is the final layer norm of the stream, as the model applies it
    ln_f = model.params["ln_f"]
    final = cache["ln_final.hook_normalized"] * ln_f["g"] + ln_f["b"]
    np.testing.assert_allclose(cache.accumulated_resid(apply_ln=True)[-1], final, atol=1e-5)


def test_the_cache_is_a_jax_pytree_and_copies_and_pickles_as_a_dict_does():
    """A dict subclass is one leaf to JAX: tree_map over a host=False cache, and a jitted function returning
    one, failed where the plain dict worked; and a pickle or deepcopy would take the model along."""
    jax = pytest.importorskip("jax")
    model = GPT2(ODD, scaled_params(ODD, 2), backend="jax")
    ids, _ = batch(ODD)
    _, a = model.run_with_cache(ids, host=False)
    _, b = model.run_with_cache(ids + 1, host=False)
    diff = jax.tree_util.tree_map(lambda x, y: x - y, a, b)  # same model, same names: one structure
    assert isinstance(diff, hooks.ActivationCache) and list(diff) == list(a)
    np.testing.assert_allclose(diff["resid_pre", 1], a["resid_pre", 1] - b["resid_pre", 1])
    jitted = jax.jit(lambda: model.run_with_cache(ids, host=False)[1])()
    np.testing.assert_allclose(jitted.accumulated_resid(apply_ln=True), a.accumulated_resid(apply_ln=True), atol=1e-5)
    copied = copy.deepcopy(a)
    assert (
        isinstance(copied, hooks.ActivationCache) and copied.model is model and copied["pattern0"] is not a["pattern0"]
    )
    assert type(pickle.loads(pickle.dumps(dict(a)))) is dict and type(pickle.loads(pickle.dumps(a))) is dict


def test_cache_keys_and_helper_arguments_that_name_nothing_are_one_line():
    """An unknown shorthand was a bare KeyError ('blocks.0.hook_blah'); now one line saying why, still a
    KeyError (TransformerLens's kind) and an NpgptError."""
    model = GPT2(ODD, scaled_params(ODD, 1))
    ids = np.arange(5) + 7
    _, cache = model.run_with_cache(ids)
    _, part = model.run_with_cache(ids, names_filter="blocks.0.attn.hook_pattern")
    cases = {
        ("blah", 0): r"unknown activation cache\['blah', 0\] \(hook name 'blocks.0.hook_blah'\); "
        r"TransformerLens's names are embed, pos_embed.*resid_post.*pattern",
        ("pattern", 3): r"cache\['pattern', 3\].*layers are 0 to 2 \(or -3 to -1 from the end\)",
        ("pattern", -4): "layers are 0 to 2",
        "k6": r"cache\['k6'\] \(hook name 'blocks.6.attn.hook_k'\).*layers are 0 to 2",
        "resid_post": r"is in every block: give the layer, e.g. cache\['resid_post', 0\]",
        ("q_input", 1): r"TransformerLens's optional input hooks, computed only where named; run with names_filter",
        ("pattern", 1.0): "the layer in cache.* must be a whole number, got 1.0",
        3: "cache keys are hook names or TransformerLens's shorthand",
    }
    for key, message in cases.items():
        with pytest.raises(KeyError, match=message) as caught:
            cache[key]
        assert isinstance(caught.value, NpgptError) and "\n" not in str(caught.value) and str(caught.value)[0] != "'"
    with pytest.raises(KeyError, match="not in this cache: the names_filter of the run that made it left it out"):
        part["resid_pre", 0]
    for call, message in [
        (lambda: cache.accumulated_resid(layer=4), r"layer must be a whole number in \[0, 3\].*got 4"),
        (lambda: cache.accumulated_resid(layer=-2), r"in \[0, 3\].*got -2"),
        (lambda: cache.stack_activation("resid_post", 0), r"in \[1, 3\].*got 0"),
        (lambda: cache.decompose_resid(mode="heads"), "mode must be 'all', 'mlp' or 'attn'"),
        (  # was "cache['attn_out', 3] (hook name 'blocks.3.hook_attn_out'): this model's layers are 0 to 2"
            lambda: cache.decompose_resid(mlp_input=True),
            r"decompose_resid\(mlp_input=True\) decomposes the input of block layer's MLP, and layer 3 \(or None, -1\) "
            r"is the unembed, past the last block; give a block's layer, in \[0, 2\]",
        ),
        (
            lambda: cache.stack_neuron_results(None, mlp_input=True, incl_remainder=True),
            r"^stack_neuron_results\(mlp_input=True\) decomposes the input of block layer's MLP, and layer 3",
        ),
        (lambda: cache.accumulated_resid(pos_slice="last"), "pos_slice must be a position"),
    ]:
        with pytest.raises(NpgptError, match=message):
            call()


def test_neuron_slice_and_batch_slice_errors_name_them_not_pos_slice():
    """cache.get_neuron_results(1, neuron_slice='3') said 'pos_slice must be a position, ...', naming an argument not
    given; apply_ln_to_stack(stack, batch_slice='x') (logit_attrs too) the same, and batch_slice=5 of 2 rows was
    NumPy's 'index 5 is out of bounds for axis 1 with size 2'. Each now names its own argument and unit."""
    model = GPT2(ODD, scaled_params(ODD, 1))
    _, cache = model.run_with_cache([[5, 6, 7], [8, 9, 10]])
    stack = cache.decompose_resid()
    for call, message in [
        (lambda: cache.get_neuron_results(1, neuron_slice="3"), r"^neuron_slice must be a neuron, a \(stop,\)"),
        (
            lambda: cache.stack_neuron_results(1, neuron_slice=1.5),
            r"^neuron_slice must be a neuron, .* list of neurons",
        ),
        (
            lambda: cache.apply_ln_to_stack(stack, batch_slice="x"),
            r"^batch_slice must be a row, .* list of rows, got 'x'",
        ),
        (
            lambda: cache.logit_attrs(stack, 5, batch_slice=5),
            r"^batch_slice has row 5, outside this input's 2 rows \[-2, 1\]",
        ),
        (lambda: cache.apply_ln_to_stack(stack, batch_slice=[0, -3]), r"^batch_slice has row -3, outside"),
        (lambda: cache.accumulated_resid(pos_slice="last"), r"^pos_slice must be a position, .* list of positions"),
    ]:
        with pytest.raises(NpgptError, match=message) as caught:
            call()
        assert caught.value.param in message
    assert cache.logit_attrs(stack, 5, batch_slice=-1).shape == (8, 3)


def test_transformer_lens_cache_methods_npgpt_has_not_name_its_way(odd):
    """cache.remove_batch_dim(), cache.logit_attrs(...) and the head/neuron helpers were bare
    AttributeErrors; now one line naming the way to the same numbers (logit_attrs and stack_head_results
    are npgpt's now, checked against TransformerLens's here)."""
    model, br = odd
    ids, _ = batch(ODD)
    _, cache = model.run_with_cache(ids)
    for name, hint in [
        ("logit_lens", r"npgpt.lens.logit_lens\(model, ids\), or accumulated_resid\(apply_ln=True\) @ model.W_U")
    ]:
        with pytest.raises(AttributeError, match=f"npgpt's cache has no {name} .*; {hint}") as caught:
            getattr(cache, name)
        assert isinstance(caught.value, NpgptError)
    assert not hasattr(cache, "no_such_thing") and hasattr(cache, "accumulated_resid")
    # cache.to("cpu") (TransformerLens's, refused as the methods above were): a host cache is on the CPU already
    assert cache.to("cpu") is cache
    with pytest.raises(NpgptError, match=r"npgpt's cache moves no arrays \(cache.to\('cuda'\)\): .*host=False"):
        cache.to("cuda")
    _, tl_cache = tl_run(br, ids, np.ones_like(ids))
    tokens = np.array([5, 900])  # the hint's numbers are TransformerLens's logit_attrs
    stack = cache.decompose_resid()
    ours = cache.apply_ln_to_stack(stack) @ model.params["wte"][tokens].T  # [components, B, T, tokens]
    for j, token in enumerate(tokens):
        theirs = tl_cache.logit_attrs(tl_cache.decompose_resid(), tokens=int(token))
        np.testing.assert_allclose(ours[..., j], as_numpy(theirs), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_cache_helpers_on_the_backends_arrays_equal_numpys(backend: str):
    """host=False keeps the backend's arrays: the helpers stack and normalise them in that library."""
    pytest.importorskip(backend)
    params = scaled_params(ODD, 2)
    ids, _ = batch(ODD)
    _, ours = GPT2(ODD, params).run_with_cache(ids)
    _, theirs = GPT2(ODD, params, backend=backend).run_with_cache(ids, host=False)
    for kw in [{"apply_ln": True, "incl_mid": True}, {"layer": 1, "mlp_input": True, "apply_ln": True}]:
        np.testing.assert_allclose(np.asarray(theirs.accumulated_resid(**kw)), ours.accumulated_resid(**kw), atol=1e-4)
    np.testing.assert_allclose(
        np.asarray(theirs.decompose_resid(apply_ln=True)), ours.decompose_resid(apply_ln=True), atol=1e-4
    )
    np.testing.assert_allclose(
        np.asarray(theirs.stack_activation("pattern")), ours.stack_activation("pattern"), atol=1e-4
    )


@pytest.mark.slow
def test_every_cached_activation_equals_transformer_lens_124M(tmp_path):
    """At GPT-2 124M's shapes (its vocabulary, width 768, 12 heads of 64, context) on two of its layers:
    every layer is the same code, and twelve made it the file's slowest test."""
    config = dataclasses.replace(PRESETS["124M"], n_layer=2)
    params = random_params(config, 5)
    br = bridge(config, params, str(tmp_path / "tl-124M"))
    ids, mask = batch(config, T=6)
    _, cache = GPT2(config, params).run_with_cache(ids, attention_mask=mask)
    assert_cache_equal(cache, tl_run(br, ids, mask)[1], mask, config.n_layer)


def zero_head_1(z, name):
    z[:, :, 1] = 0  # in place, returning None, as TransformerLens's hooks may
    return None


def test_zero_ablation_equals_transformer_lens(odd):
    import torch

    model, br = odd
    ids, mask = batch(ODD)
    name = "blocks.1.attn.hook_z"
    ours = model.run_with_hooks(ids, fwd_hooks=[(name, zero_head_1)], attention_mask=mask)
    with torch.no_grad():
        theirs = br.run_with_hooks(
            torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            fwd_hooks=[(name, lambda z, hook: zero_head_1(z, hook.name))],
        ).numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4)
    assert np.abs(ours - model.logits(ids, attention_mask=mask))[real].max() > 1e-2  # it did something


def test_a_score_set_to_minus_inf_ablates_as_in_transformer_lens(odd):
    """The masked scores were about -1e9 here and -inf in TransformerLens, so a cache compared with its cache
    differed there; they are -inf now, and a hook that sets a score to -inf (TransformerLens users' way to stop a
    query attending to a token) is masked as the model masks, never a NaN row: the logits equal TransformerLens's."""
    import torch

    model, br = odd
    ids, mask = batch(ODD)
    name = "blocks.0.attn.hook_attn_scores"
    _, cache = model.run_with_cache(ids, attention_mask=mask, names_filter=name)
    assert np.isneginf(cache[name][0, :, 0, 1:]).all() and np.isfinite(cache[name][0, :, -1]).all()

    def no_first_key(scores, hook):  # every query but the first stops attending to token 0 (in place, returns None)
        scores[:, :, 1:, 0] = -np.inf if isinstance(scores, np.ndarray) else -torch.inf

    ours = model.run_with_hooks(ids, fwd_hooks=[(name, no_first_key)], attention_mask=mask)
    with torch.no_grad():
        theirs = br.run_with_hooks(
            torch.tensor(ids), attention_mask=torch.tensor(mask), fwd_hooks=[(name, no_first_key)]
        ).numpy()
    real = mask.astype(bool)
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4)
    assert np.abs(ours - model.logits(ids, attention_mask=mask))[real].max() > 1e-2  # it did something


def test_a_query_a_hook_leaves_no_key_has_transformer_lens_zero_pattern(odd):
    """A hook that masks every key of a real query (-inf, TransformerLens users' way): TransformerLens's pattern row
    is then 0 (its softmax's NaN set to 0) and the query's z 0; npgpt's row was uniform over the masked keys, future
    ones too. It is 0 now, and the logits equal TransformerLens's."""
    import torch

    model, br = odd
    ids, mask = batch(ODD)
    name = "blocks.1.attn.hook_attn_scores"

    def blind_query_4(scores, hook):
        scores[:, :, 4, :] = -np.inf if isinstance(scores, np.ndarray) else -torch.inf

    seen = []
    pattern = ("blocks.1.attn.hook_pattern", lambda p, hook: seen.append(np.array(p)))
    ours = model.run_with_hooks(ids, fwd_hooks=[(name, blind_query_4), pattern], attention_mask=mask)
    assert (seen[0][:, :, 4] == 0).all() and np.allclose(seen[0][0, :, 5].sum(-1), 1)
    with torch.no_grad():
        theirs = br.run_with_hooks(
            torch.tensor(ids), attention_mask=torch.tensor(mask), fwd_hooks=[(name, blind_query_4)]
        ).numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4)
    assert np.abs(ours - model.logits(ids, attention_mask=mask))[real].max() > 1e-2  # it did something


def test_a_padding_querys_pattern_row_is_transformer_lens_s_zeros_and_the_logits_stay(odd):
    """A left-padded row's padding queries see no key: TransformerLens's pattern row there is 0 (its softmax's NaN
    set to 0), npgpt's cache and hooks saw the model's own row, uniform over every key, future ones too (1/7 each),
    which an attention plot of a padded batch showed. The cache and a hook see zeros there now, and the pattern
    equals TransformerLens's at every query; what the model computes from the rows a hook leaves is its own, so the
    logits still equal model.logits at every position, padding too, and a hook's own values in such a row are kept."""
    model, br = odd
    ids, mask = batch(ODD)
    logits, cache = model.run_with_cache(ids, attention_mask=mask)
    _, tl_cache = tl_run(br, ids, mask)
    for i in range(ODD.n_layer):
        name = f"blocks.{i}.attn.hook_pattern"
        assert not cache[name][1, :, :3].any(), name  # row 1's three padding queries
        np.testing.assert_allclose(cache[name], tl_cache[name].numpy(), atol=1e-4, rtol=1e-4, err_msg=name)
    np.testing.assert_array_equal(logits, model.logits(ids, attention_mask=mask))
    seen = []
    read = [(lambda n: n.endswith("hook_pattern"), lambda p, hook: seen.append(np.array(p)))]
    np.testing.assert_array_equal(model.run_with_hooks(ids, fwd_hooks=read, attention_mask=mask), logits)
    assert len(seen) == ODD.n_layer and not any(p[1, :, :3].any() for p in seen)

    def look_at_the_last_key(pattern, hook):  # a padding query given a row of its own
        pattern[1, :, 0] = 0
        pattern[1, :, 0, -1] = 1

    name = "blocks.0.attn.hook_pattern"
    ours = model.run_with_hooks(ids, fwd_hooks=[(name, look_at_the_last_key)], attention_mask=mask)
    real = mask.astype(bool)
    assert np.abs(ours - logits)[1, 0].max() > 1e-3 and np.array_equal(ours[real], logits[real])


def test_activation_patching_equals_transformer_lens(odd):
    import torch

    model, br = odd
    clean, mask = batch(ODD)
    corrupted = clean.copy()
    corrupted[:, 4] = 42
    name = "blocks.2.hook_resid_pre"
    _, cache = model.run_with_cache(clean, names_filter=[name], attention_mask=mask)
    assert list(cache) == [name]

    def patch(resid, _name):
        out = resid.copy() if isinstance(resid, np.ndarray) else resid.clone()
        out[:, 4] = cache[name][:, 4] if isinstance(resid, np.ndarray) else torch.tensor(cache[name][:, 4])
        return out

    ours = model.run_with_hooks(corrupted, fwd_hooks=[(name, patch)], attention_mask=mask)
    with torch.no_grad():
        theirs = br.run_with_hooks(
            torch.tensor(corrupted),
            attention_mask=torch.tensor(mask),
            fwd_hooks=[(name, lambda r, hook: patch(r, hook.name))],
        ).numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4)
    # Patching the whole residual stream of the corrupted position restores the clean logits there.
    full = model.run_with_hooks(corrupted, fwd_hooks=[(name, lambda r, n: cache[name])], attention_mask=mask)
    np.testing.assert_allclose(full[real], model.logits(clean, attention_mask=mask)[real], atol=1e-4)


def test_left_padded_rows_equal_their_unpadded_runs():
    model = GPT2(ODD, scaled_params(ODD, 1))
    ids, mask = batch(ODD)
    _, cache = hooks.run_with_cache(model, ids, attention_mask=mask)
    _, alone = hooks.run_with_cache(model, ids[1, 3:])
    for name in ("blocks.2.hook_resid_post", "blocks.0.attn.hook_q", "ln_final.hook_normalized"):
        np.testing.assert_allclose(cache[name][1, 3:], alone[name][0], atol=1e-5, err_msg=name)
    np.testing.assert_allclose(
        cache["blocks.1.attn.hook_pattern"][1, :, 3:, 3:], alone["blocks.1.attn.hook_pattern"][0], atol=1e-6
    )


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_the_cache_holds_each_activation_as_its_hook_point_saw_it(backend: str):
    """The stream leaving block i is the array entering block i+1: a hook patching
    blocks.1.hook_resid_pre in place also changed the cached blocks.0.hook_resid_post (as in
    TransformerLens, whose cache holds that same tensor). Now the cache holds copies."""
    pytest.importorskip(backend)
    model = GPT2(ODD, scaled_params(ODD, 1), backend=backend)
    ids = np.arange(5)[None] + 7
    _, plain = model.run_with_cache(ids)

    def zero(resid, hook):
        resid[:, 1] = 0

    _, cache = model.run_with_cache(ids, fwd_hooks=[("blocks.1.hook_resid_pre", zero)])
    np.testing.assert_array_equal(cache["blocks.0.hook_resid_post"], plain["blocks.0.hook_resid_post"])
    assert (cache["blocks.1.hook_resid_pre"][:, 1] == 0).all()


def test_names_filter_forms_and_errors():
    model = GPT2(ODD, scaled_params(ODD, 1))
    ids = np.arange(4) + 7
    assert list(model.run_with_cache(ids, names_filter="hook_embed")[1]) == ["hook_embed"]
    picked = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_pattern"))[1]
    assert list(picked) == [f"blocks.{i}.attn.hook_pattern" for i in range(3)]
    with pytest.raises(NpgptError, match="unknown hook name.*blocks.3.hook_resid_pre"):
        model.run_with_cache(ids, names_filter=["blocks.3.hook_resid_pre"])
    with pytest.raises(NpgptError, match="returned shape"):
        model.run_with_hooks(ids, fwd_hooks=[("hook_embed", lambda x, n: x[:, :1])])
    with pytest.raises(NpgptError, match=r"attention_mask must be \[B, T\], the shape of ids \(1, 4\), got \(3,\)"):
        model.run_with_cache(ids, attention_mask=np.ones(3))
    with pytest.raises(NpgptError, match="vocabulary"):
        model.run_with_cache([ODD.n_vocab])


def test_a_names_filter_function_that_cannot_take_a_name_is_refused_before_the_run(odd):
    """run_with_cache(ids, names_filter=lambda: True), or a hook fn(activation, hook) passed as names_filter, was
    Python's bare TypeError from inside the run ('<lambda>() takes 0 positional arguments but 1 was given'), naming
    neither names_filter nor the form it takes; a fwd_hooks item's function of names the same. Each is now one line
    before the run; functions that take a name (a regex's search, str methods bound) run as before."""
    import re

    model, _ = odd
    ids = np.arange(5) + 7
    for names_filter in (lambda: True, zero_head_1, lambda a, b, c: True):
        with pytest.raises(
            NpgptError, match=r"^names_filter is a function that cannot be called with one hook name \(.*\); a function"
        ) as caught:
            model.run_with_cache(ids, names_filter=names_filter)
        assert caught.value.param == "names_filter"
    with pytest.raises(NpgptError, match=r"^fwd_hooks' item 1's name is a function that cannot be called with one"):
        model.run_with_hooks(ids, fwd_hooks=[("hook_embed", zero_head_1), (lambda: True, zero_head_1)])
    _, cache = model.run_with_cache(ids, names_filter=re.compile(r"hook_pattern$").search)
    assert sorted(cache) == [f"blocks.{i}.attn.hook_pattern" for i in range(3)]
    _, cache = model.run_with_cache(ids, names_filter=lambda name, *rest: name == "hook_embed")
    assert list(cache) == ["hook_embed"]


def test_an_unknown_hook_name_names_the_closest_one():
    """A misspelt hook name ('hook_patern', 'hook_attn_output', TransformerLens's shorthand 'pattern0' as a name)
    was told only that it was unknown, with one fixed example; now the line names the hook meant."""
    model = GPT2(ODD, scaled_params(ODD, 1))
    ids = np.arange(4) + 7
    cases = {
        "blocks.1.attn.hook_patern": "blocks.1.attn.hook_pattern",
        "blocks.2.hook_attn_output": "blocks.2.hook_attn_out",
        "pattern0": "blocks.0.attn.hook_pattern",
        "ln_final.hook_norm": "ln_final.hook_normalized",
    }
    for typo, meant in cases.items():
        message = f"unknown hook name.*did you mean {meant!r} \\(for {typo!r}\\)"
        with pytest.raises(NpgptError, match=message):
            model.run_with_cache(ids, names_filter=[typo])
        with pytest.raises(NpgptError, match=message):
            model.run_with_hooks(ids, fwd_hooks=[(typo, lambda x, hook: x)])
    _, cache = model.run_with_cache(ids)
    with pytest.raises(KeyError, match="did you mean 'blocks.1.attn.hook_pattern'"):
        cache["blocks.1.attn.hook_patern"]
    with pytest.raises(NpgptError, match="blocks.3.hook_resid_pre: this model's layers are 0 to 2"):
        model.run_with_cache(ids, names_filter="blocks.3.hook_resid_pre")


def test_steering_vector_changes_the_prediction():
    model = GPT2(ODD, scaled_params(ODD, 1))
    ids = np.arange(5) + 7
    target = 1234
    direction = model.params["wte"][target] * 20  # the token's own embedding, large, at every position
    steered = model.run_with_hooks(ids, fwd_hooks=[("blocks.2.hook_resid_post", lambda r, n: r + direction)])
    before = model.logits(ids)[0, -1]
    assert before.argmax() != target and steered[0, -1].argmax() == target


def test_jax_backend_cache_equals_numpy():
    pytest.importorskip("jax")
    params = scaled_params(ODD, 2)
    ids, mask = batch(ODD)
    _, ours = GPT2(ODD, params).run_with_cache(ids, attention_mask=mask)
    _, on_jax = GPT2(ODD, params, backend="jax").run_with_cache(ids, attention_mask=mask)
    for name in hooks.hook_names(ODD.n_layer):
        np.testing.assert_allclose(on_jax[name], ours[name], atol=1e-4, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_activation_grads_equal_finite_differences(backend: str):
    jax = pytest.importorskip("jax")
    model = GPT2(ODD, scaled_params(ODD, 4), backend=backend)
    ids, mask = batch(ODD)
    a, b = 11, 500

    def metric(logits):
        return (logits[:, -1, a] - logits[:, -1, b]).sum()

    names = ["hook_embed", "blocks.0.attn.hook_pattern", "blocks.1.mlp.hook_post", "blocks.2.hook_resid_mid"]
    value, acts, grads = hooks.activation_grads(model, ids, metric, names_filter=names, attention_mask=mask)
    assert set(grads) == set(names)
    base = np.asarray(metric(model.logits(ids, attention_mask=mask)), np.float64)
    assert value == pytest.approx(float(base), rel=1e-4, abs=1e-4)
    rng = np.random.default_rng(0)
    for name in names:
        direction = rng.standard_normal(acts[name].shape).astype(np.float32)
        eps = 1e-2

        def shifted(s, name=name, direction=direction):
            fwd = [(name, lambda x, n: x + s * direction)]
            return float(metric(np.asarray(model.run_with_hooks(ids, fwd, attention_mask=mask), np.float64)))

        fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
        assert float((grads[name] * direction).sum()) == pytest.approx(fd, rel=2e-2, abs=2e-3), name
    assert jax is not None


def test_activation_grads_equal_torch_autograd_through_transformer_lens(tmp_path):
    """JAX's gradient of a logit difference at every activation equals torch's autograd through TransformerLens's
    hooks within 1e-4, on an untied relu model of 4 heads, left-padded, at the real positions (and, for the
    attention pattern, real keys: a padding key's v means nothing, so neither does the gradient there). The bridge
    gives no gradient at its q, k, v and z hooks (their tensors are views it makes), so those are not compared."""
    pytest.importorskip("jax")
    import functools

    import torch

    config = dataclasses.replace(
        ODD, n_head=4, n_embd=32, n_layer=2, tie_word_embeddings=False, activation_function="relu"
    )
    params = scaled_params(config, 12)
    model, br = GPT2(config, params), bridge(config, params, str(tmp_path / "tl-grads"))
    ids, mask = batch(config)

    def metric(logits):
        return logits[0, -1, 7] - logits[0, -1, 9] + logits[1, -1, 3]

    value, _, grads = activation_grads.activation_grads(model, ids, metric, attention_mask=mask)
    theirs: dict[str, np.ndarray] = {}

    def keep_grad(t, hook, name):
        t.register_hook(lambda g: theirs.__setitem__(name, g.detach().numpy()))

    names = hooks.hook_names(config.n_layer)
    fwd_hooks = [(n, functools.partial(keep_grad, name=n)) for n in names]
    tl_value = metric(br.run_with_hooks(torch.tensor(ids), attention_mask=torch.tensor(mask), fwd_hooks=fwd_hooks))
    tl_value.backward()
    assert abs(value - tl_value.item()) < 1e-4 and len(theirs) == len(names) - 4 * config.n_layer
    real = mask.astype(bool)
    for name, theirs_grad in theirs.items():
        ours = np.asarray(grads[name])
        if name.endswith(("hook_attn_scores", "hook_pattern")):  # [B, H, Tq, Tk]: real queries, real keys
            keys = np.broadcast_to(real[:, None, None, :], ours.shape)
            at = np.broadcast_to(real[:, None, :, None], ours.shape) & keys
            ours, theirs_grad = ours[at], theirs_grad[at]
        else:
            ours, theirs_grad = ours[real], theirs_grad[real]
        np.testing.assert_allclose(ours, theirs_grad, atol=1e-4, rtol=1e-4, err_msg=name)


def test_activation_grads_of_a_16_bit_jax_model_are_computed_in_float32():
    """The weights are read as float32 from any backend: a JAX bfloat16 model's stayed bfloat16 (only
    torch's were widened), so its gradient was computed in 16 bits. Now it equals a float32 model's on the
    same (bfloat16-rounded) weights, to float32 rounding."""
    jax = pytest.importorskip("jax")
    model = GPT2(ODD, scaled_params(ODD, 4), backend="jax", dtype="bfloat16")
    assert {a.dtype for a in jax.tree_util.tree_leaves(activation_grads.jax_params(model)[2])} == {np.dtype(np.float32)}
    wide = GPT2(ODD, jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), model.params), backend="jax")
    ids, mask = batch(ODD)

    def metric(logits):
        return (logits[:, -1, 11] - logits[:, -1, 500]).sum()

    names = ["hook_embed", "blocks.1.mlp.hook_post"]
    value, _, grads = hooks.activation_grads(model, ids, metric, names_filter=names, attention_mask=mask)
    want, _, want_grads = hooks.activation_grads(wide, ids, metric, names_filter=names, attention_mask=mask)
    assert value == pytest.approx(want, rel=1e-5, abs=1e-5)
    for name in names:
        np.testing.assert_allclose(grads[name], want_grads[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_attribution_patching_is_clean_minus_corrupted_times_gradient():
    pytest.importorskip("jax")
    model = GPT2(ODD, scaled_params(ODD, 4))
    clean = batch(ODD)[0] + 0
    corrupted = clean.copy()
    corrupted[0, 2] = 7

    def metric(logits):
        return logits[0, -1, 5] - logits[0, -1, 9]

    name = "blocks.1.hook_resid_pre"
    attr = hooks.attribution_patching(model, clean, corrupted, metric, names_filter=[name])
    _, clean_cache = model.run_with_cache(clean, names_filter=[name])
    _, corrupted_cache, grads = hooks.activation_grads(model, corrupted, metric, names_filter=[name])
    np.testing.assert_allclose(attr[name], (clean_cache[name] - corrupted_cache[name]) * grads[name], atol=1e-6)
    assert np.abs(attr[name][0, :2]).max() < 1e-6  # before the changed token nothing differs
    assert np.abs(attr[name][1]).max() < 1e-6  # nor in the row not changed
    assert np.abs(attr[name][0, 2:]).max() > 0


def test_gradients_and_attributions_read_transformer_lens_keys_too():
    """activation_grads' cache and grads and attribution_patching's result were plain dicts
    (grads["resid_pre", 1] a KeyError) beside run_with_cache's ActivationCache; now each is one."""
    pytest.importorskip("jax")
    model = GPT2(ODD, scaled_params(ODD, 4))
    clean = batch(ODD)[0] + 0
    corrupted = clean.copy()
    corrupted[0, 2] = 7

    def metric(logits):
        return logits[0, -1, 5] - logits[0, -1, 9]

    resid = lambda name: name.endswith("resid_pre")  # noqa: E731
    _, cache, grads = hooks.activation_grads(model, corrupted, metric, names_filter=resid)
    attr = hooks.attribution_patching(model, clean, corrupted, metric, names_filter=resid)
    for arrays in (cache, grads, attr):
        np.testing.assert_array_equal(arrays["resid_pre", -2], arrays["blocks.1.hook_resid_pre"])
        assert arrays.accumulated_resid(layer=2).shape == (3, *clean.shape, ODD.n_embd)
    with pytest.raises(KeyError, match="the names_filter of the run that made it left it out"):
        grads["pattern", 0]


def test_attribution_patching_checks_the_two_shapes_before_running(monkeypatch):
    """Inputs of two shapes were found out only after both runs (the clean forward and the gradient)."""
    pytest.importorskip("jax")
    model = GPT2(ODD, scaled_params(ODD, 4))

    def no_run(*args, **kwargs):
        raise AssertionError("a run started before the shapes were checked")

    monkeypatch.setattr(hooks, "hooked_forward", no_run)
    with pytest.raises(NpgptError, match=r"same shape \[batch, seq\], got \(1, 6\) and \(1, 5\); pad the shorter"):
        hooks.attribution_patching(model, np.arange(6)[None], np.arange(5)[None], lambda logits: logits[0, -1, 0])


def test_activation_grads_of_an_int8_model_is_a_clear_error():
    """int8 matrices are codes for a kernel, not arrays to differentiate: one NpgptError naming the
    fix (it was an AttributeError from inside the weight conversion)."""
    pytest.importorskip("jax")
    pytest.importorskip("onnxruntime")
    model = GPT2(ODD, scaled_params(ODD, 4), dtype="int8")
    with pytest.raises(NpgptError, match="dtype='float32'"):
        hooks.activation_grads(model, np.arange(5)[None], lambda logits: logits[0, -1, 0])
    with pytest.raises(NpgptError, match="dtype='float32'"):
        hooks.attribution_patching(model, np.arange(5)[None], np.arange(5)[None] + 1, lambda logits: logits[0, -1, 0])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_replacement_of_another_dtype_is_cast_to_the_activations(backend: str):
    """A float64 steering vector added in NumPy made every activation after it, and the logits,
    float64 (the logits are documented float32); now the replacement is cast, as if made in float32.
    A replacement that is not numbers is refused with one line."""
    if backend == "torch":
        pytest.importorskip("torch")
    model = GPT2(ODD, scaled_params(ODD, 1), backend=backend)
    ids = np.arange(5) + 7
    direction = np.random.default_rng(0).standard_normal(ODD.n_embd)  # float64

    def steer(wide: bool):
        def fn(r, _name):
            d = direction if wide else direction.astype(np.float32)
            if backend == "torch":
                import torch

                return r + torch.from_numpy(d).to(r.device)
            return r + d

        return fn

    name = "blocks.1.hook_resid_pre"
    logits, cache = model.run_with_cache(ids, fwd_hooks=[(name, steer(True))])
    assert logits.dtype == np.float32 and {a.dtype for a in cache.values()} == {np.dtype(np.float32)}
    np.testing.assert_allclose(logits, model.run_with_hooks(ids, fwd_hooks=[(name, steer(False))]), atol=1e-5)
    with pytest.raises(NpgptError, match=r"hook on 'blocks.0.attn.hook_z' returned (torch\.)?bool values"):
        model.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_z", lambda z, n: z > 0)])


def test_a_replacement_that_is_no_array_is_one_line_and_another_librarys_is_converted():
    """A hook returning a list or a number was an AttributeError ('list' object has no attribute
    'shape'), and a torch tensor on the NumPy backend a TypeError from inside the model; the first
    is now one line naming the fix, the second is converted, as NumPy on JAX already was."""
    torch = pytest.importorskip("torch")
    model = GPT2(ODD, scaled_params(ODD, 1))
    ids = np.arange(5) + 7
    for bad, kind in (([0.0], "list"), (0.0, "float")):
        with pytest.raises(NpgptError, match=rf"hook on 'hook_embed' returned a {kind}; return an array of .*None"):
            model.run_with_hooks(ids, fwd_hooks=[("hook_embed", lambda x, n, bad=bad: bad)])
    name = "blocks.1.attn.hook_z"
    as_numpy = model.run_with_hooks(ids, fwd_hooks=[(name, lambda z, n: z * 0.5)])
    as_torch = model.run_with_hooks(ids, fwd_hooks=[(name, lambda z, n: torch.from_numpy(z) * 0.5)])
    np.testing.assert_array_equal(as_torch, as_numpy)


def test_a_metric_jax_cannot_differentiate_is_one_line():
    """A metric written with NumPy (np.exp, as docs/looking-inside.md's p_him), float(), or one that
    returns more than one number raised JAX's tracer errors from deep inside jax.grad; now one line
    saying what the metric must be."""
    pytest.importorskip("jax")
    model = GPT2(ODD, scaled_params(ODD, 4))
    ids, _ = batch(ODD)
    name = "blocks.1.hook_resid_pre"
    for metric in (lambda logits: np.exp(logits[0, -1, 3]), lambda logits: float(logits[0, -1, 3])):
        with pytest.raises(NpgptError, match=r"metric must compute with jax\.numpy"):
            hooks.activation_grads(model, ids, metric, names_filter=name)
    for metric, got in ((lambda logits: logits[:, -1, 3], r"shape \(2,\)"), (lambda logits: 3, "a int")):
        with pytest.raises(NpgptError, match=f"metric must return one JAX float .*got {got}"):
            hooks.attribution_patching(model, ids, ids + 1, metric, names_filter=name)


def test_a_hook_written_for_transformer_lens_reads_hook_name_and_layer():
    """TransformerLens passes a HookPoint, and its hooks read ``hook.name`` and ``hook.layer()``:
    here they were an AttributeError on a str. The name is now a str that answers both."""
    model = GPT2(ODD, scaled_params(ODD, 1))
    ids = np.arange(5) + 7
    seen = []

    def tl_style(z, hook):
        seen.append((hook.name, hook.layer(), hook == "blocks.1.attn.hook_z", isinstance(hook, str)))
        z[:, :, 1] = 0

    name = "blocks.1.attn.hook_z"
    ours = model.run_with_hooks(ids, fwd_hooks=[(name, tl_style)])
    assert seen == [(name, 1, True, True)]
    np.testing.assert_array_equal(ours, model.run_with_hooks(ids, fwd_hooks=[(name, zero_head_1)]))
    with pytest.raises(NpgptError, match="'hook_embed' is in no block"):
        model.run_with_hooks(ids, fwd_hooks=[("hook_embed", lambda x, hook: hook.layer())])


def test_a_hook_is_called_as_transformer_lens_calls_it_with_hook_by_keyword(odd):
    """TransformerLens calls a hook fn(activation, hook=hook_point); npgpt called fn(x, name) by position, so a
    TransformerLens hook with a keyword-only hook (def f(x, *, hook)) or **kwargs was a TypeError ('takes 1
    positional argument but 2 were given'). A hook with a parameter named hook, or **kwargs, is now given it by
    keyword, as there; any other, npgpt's fn(x, hook_name), by position. Each edit equals TransformerLens's."""
    import functools

    import torch

    model, br = odd
    ids, mask = batch(ODD)
    real = mask.astype(bool)
    name = "blocks.1.attn.hook_z"
    seen: list = []

    def keyword_only(z, *, hook):
        seen.append(hook.name)
        z[:, :, 1] = 0

    def with_kwargs(z, **kwargs):
        seen.append(kwargs["hook"].name)
        z[:, :, 1] = 0

    def with_state(z, hook, head):  # functools.partial(fn, head=1), as TransformerLens users bind arguments
        seen.append(hook.name)
        z[:, :, head] = 0

    def npgpt_style(z, hook_name):
        seen.append(hook_name)
        z[:, :, 1] = 0

    for fn in (keyword_only, with_kwargs, functools.partial(with_state, head=1), npgpt_style):
        seen.clear()
        ours = model.run_with_hooks(ids, fwd_hooks=[(name, fn)], attention_mask=mask)
        assert seen == [name], fn
        if fn is npgpt_style:
            continue
        seen.clear()
        with torch.no_grad():
            theirs = br.run_with_hooks(torch.tensor(ids), fwd_hooks=[(name, fn)], attention_mask=torch.tensor(mask))
        assert seen == [name], fn
        np.testing.assert_allclose(ours[real], theirs.numpy()[real], atol=1e-4, rtol=1e-4, err_msg=str(fn))
    _, cache = model.run_with_cache(ids, fwd_hooks=[(name, keyword_only)], attention_mask=mask, names_filter=name)
    assert not cache[name][:, :, 1].any()


def test_a_hook_that_cannot_take_an_activation_and_a_hook_is_refused_before_the_run():
    """A hook of the wrong arity (lambda x: ..., or def f(x, hook, head) with head unbound) was a bare TypeError
    raised from inside the forward pass (<lambda>() takes 1 positional argument but 2 were given), after every block
    before it had run. It is refused before the run, in one line naming the hook point and what to write."""
    model = GPT2(ODD, scaled_params(ODD, 1))
    ids = np.arange(4) + 7

    def three(x, hook, head):
        return None

    for fn, why in (
        (lambda x: None, "too many positional arguments"),
        (three, "missing a required argument: 'head'"),
        (lambda: None, "too many positional arguments"),
    ):
        for run in (model.run_with_hooks, model.run_with_cache):
            with pytest.raises(NpgptError, match=rf"fwd_hooks' hook for 'blocks.2.hook_resid_post' .*: {why}; a hook "):
                run(ids, fwd_hooks=[("hook_embed", lambda x, hook: None), ("blocks.2.hook_resid_post", fn)])
    ok = [("hook_embed", lambda x, *rest: None), ("hook_embed", lambda x, hook, head=1: None)]
    np.testing.assert_array_equal(model.run_with_hooks(ids, fwd_hooks=ok), model.logits(ids))


def test_a_fwd_hooks_name_of_the_wrong_form_is_told_as_fwd_hooks_not_names_filter():
    """fwd_hooks=[(("pattern", 0), fn)] (a cache's shorthand key as a hook point) was refused as 'names_filter must
    be a hook name, ...', an argument the call never had. The fwd_hooks item is named now, with the full name of a
    shorthand (TransformerLens's fwd_hooks take a hook name or a function of names, as npgpt's)."""
    model = GPT2(ODD, scaled_params(ODD, 1))
    ids = np.arange(4) + 7
    keep = lambda x, hook: None  # noqa: E731
    for name, says in (
        (("pattern", 0), r"'blocks\.0\.attn\.hook_pattern' \(npgpt\.hooks\.act_name\('pattern', 0\)\)"),
        (3, "a hook name such as 'blocks.0.attn.hook_pattern'"),
        ([["hook_embed"]], "a hook name such as"),
    ):
        for run in (model.run_with_hooks, model.run_with_cache):
            with pytest.raises(NpgptError, match=r"^fwd_hooks' item 1 names its hook point by .*; give " + says) as e:
                run(ids, fwd_hooks=[("hook_embed", keep), (name, keep)])
            assert "names_filter" not in str(e.value)
    pairs = [(["hook_embed", "hook_pos_embed"], keep), (lambda n: n == "hook_embed", keep)]  # still taken
    np.testing.assert_array_equal(model.run_with_hooks(ids, fwd_hooks=pairs), model.logits(ids))


def test_names_filter_and_fwd_hooks_of_the_wrong_form_are_one_line():
    """names_filter=3 was a TypeError ('int' object is not iterable), and one (name, fn) pair not in
    a list a ValueError (too many values to unpack); now each is one line naming the form."""
    model = GPT2(ODD, scaled_params(ODD, 1))
    ids = np.arange(4) + 7
    for bad in (3, [0], ["hook_embed", 2], [["hook_embed"]]):  # a list in the list: unhashable, a TypeError once
        with pytest.raises(NpgptError, match="names_filter must be a hook name, a list of names or a function"):
            model.run_with_cache(ids, names_filter=bad)
    keep = lambda x, n: None  # noqa: E731
    for bad in (("hook_embed", keep), [("hook_embed",)], [("hook_embed", 3)]):
        with pytest.raises(NpgptError, match=r"fwd_hooks must be a list of \(name, fn\) pairs.*one hook is"):
            model.run_with_hooks(ids, fwd_hooks=bad)


def test_jax_hooked_runs_and_the_logit_lens_take_float32_products(monkeypatch):
    """The backend's compiled forward pass asks for float32 products (on a GPU XLA's default is
    TensorFloat-32, ~1e-3 off); run_with_hooks, run_with_cache and the logit lens run the model
    outside it, so they ask for it themselves: every product sees "highest"."""
    jax = pytest.importorskip("jax")
    from npgpt import lens

    config = GPT2Config(n_vocab=97, n_ctx=16, n_embd=32, n_head=4, n_layer=2)
    model = GPT2(config, random_params(config, 0), backend="jax")
    seen: list = []

    def record(x, hook):
        seen.append(jax.config.jax_default_matmul_precision)

    hooks.run_with_hooks(model, [[1, 2, 3]], fwd_hooks=[(lambda name: True, record)])
    hooks.run_with_cache(model, [[1, 2, 3]], fwd_hooks=[(lambda name: True, record)])
    real_matmul = lens.matmul

    def matmul(x, w):
        seen.append(jax.config.jax_default_matmul_precision)
        return real_matmul(x, w)

    monkeypatch.setattr(lens, "matmul", matmul)
    lens.logit_lens(model.engine, [1, 2, 3])
    assert seen and set(seen) == {"highest"}


def test_fwd_hooks_may_be_a_generator():
    """Checking the pairs must not use up a generator of them: the hooks still run."""
    config = GPT2Config(n_vocab=97, n_ctx=16, n_embd=32, n_head=4, n_layer=2)
    model = GPT2(config, random_params(config, 0))
    seen: list[str] = []

    def zero(x, hook):
        seen.append(hook.name)
        return x * 0

    plain = hooks.run_with_hooks(model, [[1, 2, 3]])
    pairs = ((f"blocks.{i}.hook_resid_pre", zero) for i in range(2))
    zeroed = hooks.run_with_hooks(model, [[1, 2, 3]], fwd_hooks=pairs)
    assert seen == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    assert not np.allclose(zeroed, plain)
    with pytest.raises(NpgptError, match="fwd_hooks must be a list of"):
        hooks.run_with_hooks(model, [[1, 2, 3]], fwd_hooks=3)


def test_the_config_answers_transformer_lens_cfg_names(odd):
    """model.cfg.n_layers (TransformerLens's) was an AttributeError: cfg and its names are aliases of npgpt's."""
    model, br = odd
    for name in ("n_layers", "d_model", "n_heads", "d_head", "d_vocab", "d_mlp", "n_ctx"):
        assert getattr(model.cfg, name) == getattr(br.cfg, name), name
    assert model.cfg is model.config


def test_the_config_answers_transformer_lens_s_other_cfg_names_or_says_where_they_are(odd):
    """model.cfg.d_vocab_out, act_fn, eps, normalization_type (TransformerLens's, read by its demos and utilities)
    were bare AttributeErrors, and so were cfg.use_attn_result and cfg.device, which are the model's here. The
    first are now TransformerLens's values; the others one line naming where npgpt keeps them (an AttributeError
    still, so getattr(cfg, name, default) and hasattr work as before)."""
    from npgpt.config import ConfigAttributeError

    model, br = odd
    for name in (
        "d_vocab_out", "act_fn", "eps", "normalization_type", "positional_embedding_type", "attn_only",
        "default_prepend_bos",
    ):  # fmt: skip
        assert getattr(model.cfg, name) == getattr(br.cfg, name), name
    for name, says in [
        ("use_attn_result", r"the switch is the model's: model.use_attn_result, set with model.set_use_attn_result"),
        (
            "use_split_qkv_input",
            r"the switch is the model.s: model.use_split_qkv_input, set with model.set_use_split_qkv_input\(True\)",
        ),
        ("device", "the device is the backend's, chosen at load: model.backend.name"),
        ("dtype", "the weights' storage is the model's: model.dtype"),
    ]:
        with pytest.raises(
            ConfigAttributeError, match=f"npgpt's config has no {name} .TransformerLens's cfg.{name}.; {says}"
        ):
            getattr(model.cfg, name)
        assert hasattr(br.cfg, name) and getattr(model.cfg, name, 7) == 7
    with pytest.raises(AttributeError, match="'GPT2Config' object has no attribute 'no_such_name'"):
        model.cfg.no_such_name  # noqa: B018
    assert "d_vocab_out" not in model.cfg.to_dict() and model.cfg.from_dict(model.cfg.to_dict()) == model.cfg


def test_transformer_lens_options_of_run_with_cache_name_npgpts_way(odd):
    """run_with_cache(ids, return_type="loss") was a bare TypeError (unexpected keyword argument)."""
    model, br = odd
    import inspect

    for run, name, says in (
        (model.run_with_hooks, "remove_batch_dim", r"remove_batch_dim=True is not npgpt's; .*\[0\]"),
        (model.run_with_hooks, "bwd_hooks", "bwd_hooks=True is not npgpt's; .*activation_grads"),
        (model.run_with_cache, "colour", "unknown option 'colour'; valid: names_filter"),
    ):
        with pytest.raises(NpgptError, match=says) as e:
            run([1, 2, 3], **{name: True})
        assert e.value.param == name
    lens = set().union(*(inspect.signature(f).parameters for f in (br.run_with_cache, br.run_with_hooks, br.forward)))
    lens.add("device")  # its run_with_cache reads device from **kwargs (its docstring names it)
    assert set(lens_names.LENS_OPTIONS) | set(lens_names.LENS_SAME) <= lens  # TransformerLens's own names


def test_an_option_a_hooked_run_does_not_take_names_the_run_that_does_or_the_option_meant(odd):
    """model(ids, fwd_hooks=[...]) was a TypeError (run_with_hooks() got multiple values for argument 'fwd_hooks');
    run_with_hooks(ids, names_filter=...) (or host=) said "unknown option 'names_filter'; valid: names_filter, ...",
    listing it as valid; a misspelling (name_filter) was answered with the whole list. Each now names the run that
    takes the option, or the option meant."""
    model, _ = odd
    ids = np.arange(5) + 7
    hook = [("blocks.1.attn.hook_z", zero_head_1)]
    for call, says in [
        (lambda: model(ids, fwd_hooks=hook), r"^model\(input\) takes no fwd_hooks; run_with_hooks takes them: "),
        (lambda: model(ids, names_filter="hook_embed"), r"^model\(input\) takes no names_filter; run_with_cache takes"),
        (
            lambda: model.run_with_hooks(ids, names_filter="hook_embed"),
            r"^model\.run_with_hooks takes no names_filter; run_with_cache takes it: model\.run_with_cache\(input, "
            r"names_filter=\.\.\.\)$",
        ),
        (lambda: model.run_with_hooks(ids, host=False), r"^model\.run_with_hooks takes no host; run_with_cache takes"),
        (
            lambda: model.run_with_cache(ids, name_filter="hook_embed"),
            r"^unknown option 'name_filter'; did you mean 'names_filter'\?$",
        ),
        (lambda: model.run_with_hooks(ids, fwd_hook=hook), r"^unknown option 'fwd_hook'; did you mean 'fwd_hooks'\?$"),
        (lambda: model(ids, return_typ="loss"), r"^unknown option 'return_typ'; did you mean 'return_type'\?$"),
        (lambda: model(ids, colour=1), r"^unknown option 'colour'; valid: return_type, loss_per_token, prepend_bos"),
    ]:
        with pytest.raises(NpgptError, match=says):
            call()
    np.testing.assert_array_equal(model(ids, stop_at_layer=1), model.run_with_cache(ids)[1]["resid_post", 0])


def test_the_hooked_runs_take_their_input_as_transformer_lens_s_input_keyword(odd):
    """model.run_with_cache(input="text") and run_with_hooks(input=ids, fwd_hooks=...), TransformerLens's keyword
    (model(input=...) took it already), were TypeErrors: missing 1 required positional argument: 'ids'. Both take it
    now; the input given twice, or not at all, is one line."""
    model, _ = odd
    hook = [("blocks.1.attn.hook_z", zero_head_1)]
    logits, cache = model.run_with_cache(input="The cat sat", names_filter="hook_embed")
    np.testing.assert_array_equal(logits, model.run_with_cache("The cat sat")[0])
    assert list(cache) == ["hook_embed"]
    np.testing.assert_array_equal(
        model.run_with_hooks(input="The cat sat", fwd_hooks=hook), model.run_with_hooks("The cat sat", hook)
    )
    for call, says in [
        (lambda: model.run_with_cache("The cat", input="The dog"), "run_with_cache got the input twice"),
        (lambda: model.run_with_hooks(fwd_hooks=hook), r"run_with_hooks needs the input: model\.run_with_hooks\(text"),
    ]:
        with pytest.raises(NpgptError, match=says):
            call()


TEXTS = ["The cat sat on the mat", "Hi<|endoftext|> there", "A"]


def test_text_runs_as_transformer_lens_runs_it(odd):
    """model.run_with_cache("text") was refused, and its hint (model.tokenizer.encode) gave other activations than
    TransformerLens's, which puts <|endoftext|> first for GPT-2. Text is now read as there: to_tokens,
    prepend_bos, padding_side and lists of texts give TransformerLens's ids and activations."""
    import torch

    model, br = odd
    for text in ("The cat sat on the mat", TEXTS):
        sides = ({}, {"prepend_bos": False}, {"padding_side": "left"}, {"prepend_bos": None, "padding_side": None})
        for kw in sides:
            assert model.to_tokens(text, **kw).tolist() == br.to_tokens(text, **kw).tolist(), kw
            assert model.to_str_tokens(text, **kw) == br.to_str_tokens(text, **kw), kw
            logits, cache = model.run_with_cache(text, **kw)
            with torch.no_grad():
                tl_logits, tl_cache = br.run_with_cache(text, **kw)
            ids, mask = hooks.to_tokens(model, text, **kw)
            mask = np.ones(ids.shape, np.int64) if mask is None else mask  # right padding: no mask, as there
            assert_cache_equal(cache, tl_cache, mask, ODD.n_layer)
            real = mask.astype(bool)
            np.testing.assert_allclose(logits[real], tl_logits.numpy()[real], atol=1e-4, rtol=1e-4)
            hooked = model.run_with_hooks(text, fwd_hooks=[("blocks.1.attn.hook_z", zero_head_1)], **kw)
            assert hooked.shape == logits.shape and not np.allclose(hooked, logits)
    # Left padding without <|endoftext|> first: TransformerLens's mask counts the last pad as a token (it reads
    # pads with its default prepend_bos); npgpt's rows are their unpadded runs, as with prepend_bos.
    kw = {"prepend_bos": False, "padding_side": "left"}
    _, cache = model.run_with_cache(TEXTS, **kw)
    for row, text in enumerate(TEXTS):
        n = len(model.to_tokens(text, prepend_bos=False)[0])
        np.testing.assert_allclose(
            cache["resid_post", -1][row, -n:], model.run_with_cache(text, **kw)[1]["resid_post", -1][0], atol=1e-5
        )
    ids = br.to_tokens(TEXTS).numpy()
    assert model.to_string(ids) == br.to_string(ids) and model.to_string(ids[0]) == br.to_string(ids[0])
    assert model.to_str_tokens(ids[:1]) == br.to_str_tokens(ids[:1])
    assert model.to_string(464) == br.to_string(464) == "The"  # one id: was refused ('must be token ids [T]')
    # TransformerLens's keywords (input=, tokens=) were TypeErrors: npgpt's parameters were text, text_or_ids and ids
    assert np.array_equal(
        model.to_tokens(input="The cat", prepend_bos=False), br.to_tokens(input="The cat", prepend_bos=False)
    )
    assert model.to_str_tokens(input="The cat") == br.to_str_tokens(input="The cat")
    assert model.to_string(tokens=ids[0]) == br.to_string(tokens=ids[0])
    for texts in ("", ["", "Hi"]):  # no token: [] as there; was refused ('the text is empty and prepend_bos=False')
        assert model.to_str_tokens(texts, prepend_bos=False) == br.to_str_tokens(texts, prepend_bos=False)
    _, by_ids = model.run_with_cache(model.to_tokens("The cat"))  # ids run as given, as there
    np.testing.assert_array_equal(by_ids["resid_post", -1], model.run_with_cache("The cat")[1]["resid_post", -1])
    for call, says in (
        (lambda: model.run_with_cache("A", padding_side="middle"), "padding_side must be 'left' or 'right'"),
        (lambda: model.run_with_cache("A", prepend_bos="yes"), "prepend_bos must be True or False"),
        (lambda: model.run_with_cache("", prepend_bos=False), "the text is empty and prepend_bos=False"),
        (lambda: model.run_with_cache(["A", "B"], attention_mask=[[1], [1]]), "attention_mask is for token ids"),
        (lambda: hooks.run_with_cache(model.engine, "A"), "text needs the model's tokenizer"),
    ):
        with pytest.raises(NpgptError, match=says):
            call()
    if importlib.util.find_spec("jax") is not None:  # the gradients read text as the runs do
        metric = lambda logits: logits[0, -1, 5] - logits[0, -1, 7]  # noqa: E731
        name = "blocks.1.hook_resid_pre"
        by_text = hooks.attribution_patching(model, "The cat", "The dog", metric, names_filter=name)
        by_ids = hooks.attribution_patching(
            model, model.to_tokens("The cat"), model.to_tokens("The dog"), metric, names_filter=name
        )
        np.testing.assert_array_equal(by_text[name], by_ids[name])
        with pytest.raises(NpgptError, match="the same token lengths"):
            hooks.attribution_patching(model, ["A", "B C"], ["A B", "C"], metric, padding_side="left")


def test_a_text_longer_than_the_context_is_cut_as_transformer_lens_cuts_it(odd):
    """model.to_tokens(text) of a text past n_ctx tokens gave all of them, where TransformerLens's (truncate=True,
    its default) gives the first n_ctx: model.run_with_cache(text) and model(text) were then refused ('exceeds the
    model's context') where TransformerLens runs them, and to_tokens(text, truncate=False) or move_to_device=False
    were bare TypeErrors. Text is now cut as there, and both keywords are taken."""
    import torch

    model, br = odd
    long = "the cat sat on the mat " * 12  # 73 tokens, ODD.n_ctx 32
    for text in (long, [long, "hi there"]):
        for kw in ({}, {"prepend_bos": False}, {"padding_side": "left"}, {"truncate": False}):
            assert model.to_tokens(text, **kw).tolist() == br.to_tokens(text, **kw).tolist(), kw
        assert model.to_str_tokens(text) == br.to_str_tokens(text)
        logits, cache = model.run_with_cache(text)
        with torch.no_grad():
            tl_logits, tl_cache = br.run_with_cache(text)
        np.testing.assert_allclose(logits[0], tl_logits.numpy()[0], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(cache["resid_post", -1][0], as_numpy(tl_cache["resid_post", -1][0]), atol=1e-4)
        with torch.no_grad():
            tl_loss = float(br(text, return_type="loss"))
        assert float(model(text, return_type="loss")) == pytest.approx(tl_loss, abs=1e-4)
    assert model.to_tokens("hi", move_to_device=False).tolist() == br.to_tokens("hi", move_to_device=False).tolist()
    with pytest.raises(NpgptError, match="exceeds the model's context of 32"):
        model.run_with_cache(model.to_tokens(long, truncate=False))  # ids are never cut: they run as given
    with pytest.raises(NpgptError, match="truncate must be True or False, got 'no'"):
        model.to_tokens(long, truncate="no")


def test_single_tokens_and_their_positions_are_transformer_lens_s(odd):
    """model.to_single_token(" cat") was refused (pointing at tokenizer.encode) and model.get_token_position(...) a
    bare AttributeError: both in TransformerLens's demos (the IOI logit difference). Each now gives TransformerLens's
    id and position, and a text that is not one token, or a token the input lacks, is one line saying so."""
    import torch

    model, br = odd
    for word in (" cat", "The", "<|endoftext|>", " mat"):
        assert model.to_single_token(word) == br.to_single_token(word), word
    prompt = "The cat sat on the mat, the cat"
    ids = model.to_tokens(prompt)
    for token, input, kw in [
        (" cat", prompt, {}), (" cat", prompt, {"mode": "last"}), (" cat", prompt, {"prepend_bos": False}),
        (" sat", ids, {}), (" sat", ids[0], {}), (model.to_single_token(" the"), prompt, {"mode": "last"}),
        ("The", prompt, {}),
    ]:  # fmt: skip
        theirs = br.get_token_position(token, torch.tensor(input) if isinstance(input, np.ndarray) else input, **kw)
        assert model.get_token_position(token, input, **kw) == theirs, (token, kw)
    for call, says in [
        (lambda: model.to_single_token(" Eiffel"), r"' Eiffel' is 3 tokens \[' E', 'iff', 'el'\], not one"),
        (lambda: model.to_single_token(""), "'' is 0 tokens"),
        (lambda: model.to_single_token(5), "to_single_token takes a text that is one token"),
        (lambda: model.get_token_position(" dog", prompt), "the token ' dog' does not occur in the input"),
        (lambda: model.get_token_position(" cat", prompt, mode="middle"), "mode must be 'first' or 'last'"),
        (lambda: model.get_token_position(" cat", np.zeros((2, 3), int)), r"token ids \[T\] or \[1, T\]"),
    ]:
        with pytest.raises(NpgptError, match=says):
            call()


def test_return_type_and_loss_are_transformer_lens_s(odd):
    """run_with_hooks(..., return_type="loss") was refused (TransformerLens users compute the loss so); now
    "logits", "loss", "both" and None, with loss_per_token, return what TransformerLens's do, on ids and text."""
    import torch

    model, br = odd
    ids, mask = batch(ODD)
    for kw in ({"return_type": "loss"}, {"return_type": "loss", "loss_per_token": True}, {"return_type": "both"}):
        for inputs, tl_inputs in (
            ({"ids": ids}, {"input": torch.tensor(ids)}),
            ({"ids": ids, "attention_mask": mask}, {"input": torch.tensor(ids), "attention_mask": torch.tensor(mask)}),
            ({"ids": TEXTS, "padding_side": "left"}, {"input": TEXTS, "padding_side": "left"}),
            ({"ids": TEXTS}, {"input": TEXTS}),
        ):
            with torch.no_grad():
                theirs = br.run_with_hooks(**tl_inputs, **kw)
            for ours in (model.run_with_hooks(**inputs, **kw), model.run_with_cache(**inputs, **kw)[0]):
                if kw["return_type"] == "both":
                    assert ours[0].shape == tuple(theirs[0].shape)
                    ours, theirs_loss = ours[1], theirs[1]
                else:
                    theirs_loss = theirs
                assert ours.dtype == np.float32
                np.testing.assert_allclose(ours, theirs_loss.numpy(), atol=1e-4, rtol=1e-5, err_msg=str((kw, inputs)))
    assert model.run_with_hooks(ids, return_type=None) is None
    _, cache = model.run_with_cache(ids, return_type=None)
    assert "blocks.0.hook_resid_pre" in cache
    np.testing.assert_array_equal(model.run_with_hooks(ids, return_type="logits"), model.run_with_hooks(ids))
    for kw, says in (
        ({"return_type": "logit"}, "return_type must be 'logits', 'loss', 'both' or None"),
        ({"return_type": "loss", "loss_per_token": 1}, "loss_per_token must be True or False"),
    ):
        with pytest.raises(NpgptError, match=says):
            model.run_with_hooks(ids, **kw)
    with pytest.raises(NpgptError, match="the loss needs two tokens"):
        model.run_with_hooks([5], return_type="loss")
    for backend in ("torch", "jax"):  # the loss of the backends' logits, on the host or not
        if importlib.util.find_spec(backend) is None:
            continue
        other = GPT2(ODD, scaled_params(ODD, 3), backend=backend)  # the odd fixture's weights
        for host in (True, False):
            (_, loss), _ = other.run_with_cache(TEXTS, return_type="both", padding_side="left", host=host)
            assert isinstance(loss, np.float32)
            np.testing.assert_allclose(
                loss, model.run_with_hooks(TEXTS, return_type="loss", padding_side="left"), rtol=1e-5
            )


def test_transformer_lens_options_at_values_that_ask_for_npgpts_behaviour_are_accepted(odd):
    """run_with_hooks(ids, fwd_hooks, reset_hooks_end=True, bwd_hooks=[]), as TransformerLens code spells its
    defaults out, was refused as an unknown option though npgpt does just that; such values are now accepted,
    and the others (and device, incl_bwd, run_with_hooks' pos_slice) refused in one line naming npgpt's way."""
    model, _ = odd
    ids = np.arange(5) + 7
    plain = model.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_z", zero_head_1)])
    same = {"reset_hooks_end": True, "clear_contexts": True, "bwd_hooks": []}
    np.testing.assert_array_equal(
        model.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_z", zero_head_1)], **same), plain
    )
    logits, cache = model.run_with_cache(
        ids, incl_bwd=False, remove_batch_dim=False, return_cache_object=True, device=None, clear_contexts=False
    )
    np.testing.assert_array_equal(logits, model.run_with_hooks(ids))
    # device="cpu", TransformerLens's way to keep a GPU run's cache in host memory, was refused ('device='cpu' is not
    # npgpt's'): it is host=True's NumPy cache, with host=False too
    on_torch = GPT2(ODD, model.params, backend="torch")  # host=False keeps its torch tensors; device="cpu" NumPy
    for m, host in ((model, True), (on_torch, False)):
        _, on_cpu = m.run_with_cache(ids, device="cpu", host=host)
        assert all(isinstance(a, np.ndarray) for a in on_cpu.values())
        np.testing.assert_allclose(on_cpu["resid_post", 1], cache["resid_post", 1], atol=1e-5)
    _, plain = model.run_with_cache(ids, return_cache_object=False)  # TransformerLens's: a plain dict; was refused
    assert type(plain) is dict and plain.keys() == cache.keys()
    for run, kw, says in (
        (model.run_with_cache, {"return_cache_object": 0}, "return_cache_object=0 is not npgpt's; True or False"),
        (model.run_with_hooks, {"reset_hooks_end": "no"}, "reset_hooks_end must be True or False, got 'no'"),
        (model.run_with_hooks, {"bwd_hooks": [("hook_embed", print)]}, "bwd_hooks=.* is not npgpt.s; .*grads"),
        (model.run_with_cache, {"incl_bwd": True}, "incl_bwd=True is not npgpt's; .*activation_grads"),
        (model.run_with_cache, {"device": "cuda"}, "device='cuda' is not npgpt's; .*host=False"),
        (model.run_with_hooks, {"pos_slice": -1}, "unknown option 'pos_slice'; run_with_cache takes it"),
        (model.run_with_cache, {"clear_contexts": "yes"}, "clear_contexts='yes' is not npgpt's; True or False"),
    ):
        with pytest.raises(NpgptError, match=says):
            run(ids, **kw)


def test_run_with_cache_pos_slice_caches_those_positions_as_transformer_lens_does(odd):
    """run_with_cache(ids, pos_slice=-1), TransformerLens's way to cache only the last position (a long prompt's
    cache in a fraction of the memory), was refused ('index the cache's arrays'). Each activation is now cached at
    those positions, on the query axis of attn_scores and pattern, one position keeping its axis, as there."""
    import torch

    model, br = odd
    ids, mask = batch(ODD)
    _, full = model.run_with_cache(ids, attention_mask=mask)
    for pos_slice in (-1, 2, (2, 5), [0, 3], slice(1, None)):
        with torch.no_grad():
            _, theirs = tl_run(br, ids, mask, pos_slice=pos_slice)
        _, ours = model.run_with_cache(ids, attention_mask=mask, pos_slice=pos_slice)
        assert set(ours) == set(full)
        for name in ours:
            assert ours[name].shape == tuple(theirs[name].shape), (pos_slice, name)
        at = slice(pos_slice, pos_slice + 1 or None) if isinstance(pos_slice, int) else pos_slice
        at = slice(*at) if isinstance(at, tuple) else at
        np.testing.assert_array_equal(ours["resid_post", 1], full["resid_post", 1][:, at])
        np.testing.assert_array_equal(ours["pattern", 0], full["pattern", 0][:, :, at])
    with torch.no_grad():
        _, theirs = br.run_with_cache(torch.tensor(ids[:1]), pos_slice=-1, remove_batch_dim=True)
    _, ours = model.run_with_cache(ids[:1], pos_slice=-1, remove_batch_dim=True)
    assert {n: a.shape for n, a in ours.items()} == {n: tuple(theirs[n].shape) for n in ours}
    with pytest.raises(NpgptError, match="pos_slice must be a position"):
        model.run_with_cache(ids, pos_slice="last")


def test_run_with_cache_pos_slice_takes_ids_as_the_forward_takes_them():
    """run_with_cache(ids, pos_slice=-1) with ids from tokenizer.encode (a list, as docs/looking-inside.md passes
    them) or a 1-D array (one row) was a traceback ('list' object has no attribute 'shape'; tuple index out of range)
    though the same run without pos_slice took them. Each is now one row, cached at those positions."""
    model = GPT2(ODD, scaled_params(ODD, 3))
    ids = [11, 12, 13, 14, 15]
    _, full = model.run_with_cache([ids])
    for given in (ids, np.array(ids), np.array([ids])):
        for pos_slice in (-1, (1, 3)):
            at = slice(*pos_slice) if isinstance(pos_slice, tuple) else slice(-1, None)
            _, ours = model.run_with_cache(given, pos_slice=pos_slice)
            np.testing.assert_array_equal(ours["resid_post", 1], full["resid_post", 1][:, at])
            np.testing.assert_array_equal(ours["pattern", 0], full["pattern", 0][:, :, at])
    with pytest.raises(NpgptError, match="ids"):
        model.run_with_cache([[1, 2], [3]], pos_slice=-1)


def test_pos_slice_takes_transformer_lens_s_slice_and_torch_positions(odd):
    """pos_slice=Slice(-1) (TransformerLens's own Slice, which its helpers take beside what it holds) and positions in
    a torch tensor were refused ('pos_slice must be a position, ... got Slice: -1 Mode: int'), in run_with_cache and
    every cache helper (neuron_slice and batch_slice too); a list of floats was NumPy's IndexError. TransformerLens's
    Slice is read as what it holds and torch's positions as NumPy's, equal to TransformerLens's (run_with_cache keeps
    the axis of one position given as an int or a 0-d tensor and takes it away for Slice(-1), as there); floats are
    one line."""
    import torch
    from transformer_lens.utilities.slice import Slice

    model, br = odd
    ids, mask = batch(ODD)
    _, cache = model.run_with_cache(ids, attention_mask=mask)
    _, tl_cache = tl_run(br, ids, mask)
    for pos_slice in (Slice(-1), Slice((1, 4)), Slice([0, 2]), Slice(None), torch.tensor([0, 2]), torch.tensor(-1)):
        for method, kw in (
            ("accumulated_resid", {"apply_ln": True}),
            ("stack_head_results", {}),
            ("decompose_resid", {}),
        ):
            ours = getattr(cache, method)(pos_slice=pos_slice, **kw)[:, 0]  # row 0: no padding
            theirs = as_numpy(getattr(tl_cache, method)(pos_slice=pos_slice, **kw))[:, 0]
            np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4, err_msg=f"{method} {pos_slice}")
        with torch.no_grad():
            _, tl_sliced = br.run_with_cache(torch.tensor(ids[:1]), pos_slice=pos_slice)
        _, sliced = model.run_with_cache(ids[:1], pos_slice=pos_slice)
        np.testing.assert_allclose(sliced["resid_post", 1], as_numpy(tl_sliced["resid_post", 1]), atol=1e-4)
    neurons = cache.get_neuron_results(1, neuron_slice=Slice([3, 5]), pos_slice=torch.tensor([6]))
    np.testing.assert_allclose(
        neurons, as_numpy(tl_cache.get_neuron_results(1, neuron_slice=Slice([3, 5]), pos_slice=[6])), atol=1e-4
    )
    for bad in ([0.5], torch.tensor([0.5]), [[0, 1], [2]]):
        with pytest.raises(NpgptError, match="pos_slice must be a position, .* or a list of positions, got"):
            cache.accumulated_resid(pos_slice=bad)


def test_get_full_resid_decomposition_equals_transformer_lens(tmp_path):
    """cache.get_full_resid_decomposition(), TransformerLens's stack of every head, every neuron, the embeddings and the
    biases (its direct logit attribution of everything), was refused ('npgpt's cache has no get_full_resid_decomposition
    ...; decompose_resid() gives it per layer'), leaving the caller to assemble it and the biases by hand. It is
    TransformerLens's now, labels and order included, on an untied relu model with its own width: every layer,
    mlp_input, expand_neurons, apply_ln, pos_slice and project_output_onto; the parts sum to the stream."""
    import torch

    config = dataclasses.replace(ODD, tie_word_embeddings=False, activation_function="relu", n_inner=40)
    params = scaled_params(config, 8)
    model, br = GPT2(config, params), bridge(config, params, str(tmp_path / "tl-full"))
    ids, mask = batch(config)
    _, cache = model.run_with_cache(ids, attention_mask=mask)
    _, tl_cache = tl_run(br, ids, mask)
    onto = np.random.default_rng(0).standard_normal((config.n_embd, 2)).astype(np.float32)
    for kw in (
        {},
        {"layer": 0},
        {"layer": 1, "mlp_input": True},
        {"layer": 2, "expand_neurons": False, "apply_ln": True},
        {"layer": -1, "apply_ln": True, "pos_slice": -1},
        {"layer": 1, "mlp_input": True, "expand_neurons": False, "pos_slice": (1, 5)},
        {"project_output_onto": onto, "apply_ln": True},
        {"project_output_onto": onto[:, 0], "layer": 2},
    ):
        ours, labels = cache.get_full_resid_decomposition(return_labels=True, **kw)
        tl_kw = {k: torch.tensor(v) if k == "project_output_onto" else v for k, v in kw.items()}
        theirs, tl_labels = tl_cache.get_full_resid_decomposition(return_labels=True, **tl_kw)
        assert labels == tl_labels and ours.shape == tuple(theirs.shape), kw
        np.testing.assert_allclose(
            ours[:, 0], as_numpy(theirs)[:, 0], atol=1e-4, rtol=1e-4, err_msg=str(kw)
        )  # row 0: no padding
    np.testing.assert_allclose(cache.get_full_resid_decomposition().sum(0), cache["resid_post", -1], atol=1e-4)
    np.testing.assert_allclose(
        cache.get_full_resid_decomposition(1, mlp_input=True).sum(0), cache["resid_mid", 1], atol=1e-4
    )
    with pytest.raises(
        NpgptError, match=r"get_full_resid_decomposition\(mlp_input=True\) decomposes the input of block"
    ):
        cache.get_full_resid_decomposition(mlp_input=True)  # TransformerLens: KeyError 'blocks.3.attn.hook_result'


def test_the_unembedding_hints_name_an_untied_models_own_head(tmp_path):
    """The cache's hints for logit_attrs and logit_lens named model.params['wte'] whatever the model: for
    an untied model (its own lm_head) they gave other numbers than TransformerLens's, silently. They now name
    the matrix the model unembeds with, and its numbers are TransformerLens's logit lens and logit_attrs."""
    import dataclasses
    import re

    import torch

    config = dataclasses.replace(ODD, tie_word_embeddings=False, n_head=4, activation_function="relu", n_inner=40)
    params = scaled_params(config, 6)
    model, br = GPT2(config, params), bridge(config, params, str(tmp_path / "tl-untied"))
    ids = np.arange(5)[None] + 11
    _, cache = model.run_with_cache(ids)
    _, tl_cache = tl_run(br, ids, np.ones_like(ids))
    with pytest.raises(AttributeError) as caught:
        _ = cache.logit_lens
    hint = re.search(r"model\.(W_U)", str(caught.value)).group(1)
    np.testing.assert_array_equal(getattr(model, hint), model.params["lm_head"].T)  # the untied head
    with torch.no_grad():
        theirs = tl_cache.accumulated_resid(apply_ln=True) @ br.W_U
    ours = cache.accumulated_resid(apply_ln=True) @ getattr(model, hint)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-3, rtol=1e-4)
    theirs = tl_cache.logit_attrs(tl_cache.decompose_resid(), tokens=7)  # the untied head's row, as there
    np.testing.assert_allclose(cache.logit_attrs(cache.decompose_resid(), 7), as_numpy(theirs), atol=1e-4, rtol=1e-4)


def test_neuron_results_equal_transformer_lens(odd):
    """cache.get_neuron_results(layer) and cache.stack_neuron_results(layer) (TransformerLens's per-neuron
    attribution) were refused with a hint to multiply hook_post by c_proj's rows by hand. Each now gives
    TransformerLens's arrays and labels: neuron and position slices, projections, the remainder, apply_ln."""
    import torch

    model, br = odd
    ids, _ = batch(ODD)
    _, cache = model.run_with_cache(ids)
    _, tl_cache = tl_run(br, ids, np.ones_like(ids))
    direction = np.random.default_rng(0).standard_normal((ODD.n_embd, 2)).astype(np.float32)
    for kw in [
        {"layer": 1}, {"layer": 0, "neuron_slice": 5}, {"layer": 2, "neuron_slice": (3, 9), "pos_slice": -1},
        {"layer": 1, "neuron_slice": [1, 7, 100], "pos_slice": (1, 4)},
        {"layer": 1, "project_output_onto": direction}, {"layer": 2, "project_output_onto": direction[:, 0]},
    ]:  # fmt: skip
        theirs = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
        np.testing.assert_allclose(
            cache.get_neuron_results(**kw), as_numpy(tl_cache.get_neuron_results(**theirs)), atol=1e-4, rtol=1e-4
        )
    for kw in [
        {"layer": 2}, {"layer": -1, "neuron_slice": (0, 20), "incl_remainder": True},
        {"layer": 3, "neuron_slice": 4, "pos_slice": -1, "apply_ln": True, "incl_remainder": True},
        {"layer": 1, "neuron_slice": (0, 30), "mlp_input": True, "incl_remainder": True, "apply_ln": True},
        {"layer": 0, "incl_remainder": True}, {"layer": 2, "neuron_slice": [3, 1], "pos_slice": [0, 2]},
        {"layer": 2, "project_output_onto": direction},  # project_output_onto was a TypeError here
        {"layer": 3, "apply_ln": True, "incl_remainder": True, "pos_slice": -1, "project_output_onto": direction[:, 1]},
    ]:  # fmt: skip
        (ours, labels), (theirs, tl_labels) = (
            cache.stack_neuron_results(return_labels=True, **kw),
            tl_cache.stack_neuron_results(
                return_labels=True, **{k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
            ),
        )
        assert labels == tl_labels, kw
        np.testing.assert_allclose(ours, as_numpy(theirs), atol=1e-4, rtol=1e-4, err_msg=str(kw))
    with pytest.raises(NpgptError, match=r"neuron_slice 500 is outside this model's 192 neurons \[0, 191\]"):
        cache.get_neuron_results(0, neuron_slice=500)
    for onto, got in [  # NumPy's 'matmul: Input operand 1 has a mismatch in its core dimension 0, with gufunc ...'
        (direction.T, r"shape \(2, 48\)"),
        (direction[:-1, 0], r"shape \(47,\)"),
        (direction[None], r"shape \(1, 48, 2\)"),
        ("up", "'up'"),
        (np.float32(1), r"shape \(\)"),
    ]:
        for method in ("get_neuron_results", "stack_neuron_results"):
            with pytest.raises(NpgptError, match=r"project_output_onto must be a direction \[48\] or directions "
                               rf"\[48, k\] of the residual stream, got {got}$"):  # fmt: skip
                getattr(cache, method)(1, project_output_onto=onto)


def test_head_results_and_logit_attributions_equal_transformer_lens(tmp_path):
    """cache.stack_head_results() and cache.logit_attrs(stack, tokens), the everyday way to attribute a logit to
    heads, were refused with a hint to compute them by hand. Each now gives TransformerLens's stack, labels and
    attributions: an untied head, a left-padded batch, every token form and slice."""
    import dataclasses

    import torch

    config = dataclasses.replace(ODD, tie_word_embeddings=False)
    params = scaled_params(config, 8)
    model, br = GPT2(config, params), bridge(config, params, str(tmp_path / "tl-heads"))
    ids, mask = batch(config)
    real = mask.astype(bool)
    _, cache = model.run_with_cache(ids, attention_mask=mask)
    _, tl_cache = tl_run(br, ids, mask)

    def check(ours, theirs, where) -> None:
        theirs = as_numpy(theirs)
        assert ours.shape == theirs.shape, where
        if ours.ndim >= 3 and ours.shape[1:3] == real.shape:  # [components, B, T, ...]: the real tokens
            ours, theirs = ours[:, real], theirs[:, real]  # (row 1's pads are its first 3; slices skip them)
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4, err_msg=str(where))

    for kw in [
        {}, {"layer": 1}, {"layer": 2, "incl_remainder": True}, {"apply_ln": True}, {"pos_slice": -1},
        {"incl_remainder": True, "apply_ln": True, "pos_slice": (3, 7)}, {"layer": -1, "pos_slice": [3, 6]},
        {"layer": 0}, {"layer": 0, "incl_remainder": True}, {"layer": 0, "apply_ln": True, "pos_slice": -1},
    ]:  # fmt: skip  # layer 0 (no head; the remainder all the stream) was refused
        ours, labels = cache.stack_head_results(return_labels=True, **kw)
        theirs, tl_labels = tl_cache.stack_head_results(return_labels=True, **kw)
        assert labels == tl_labels, kw
        check(ours, theirs, kw)
    heads = cache.stack_head_results(layer=2, incl_remainder=True)  # the heads and the rest are the stream
    np.testing.assert_allclose(heads.sum(0), cache["resid_post", 1], atol=1e-4)
    last = cache.stack_head_results(pos_slice=-1)
    for tokens, wrong, kw in [
        (7, None, {}), (7, 900, {}), (np.array([5, 11]), None, {}), (np.array([5, 11]), np.array([3, 4]), {}),
        (ids[:, 3:], None, {"pos_slice": (3, 7)}), (" the", " a", {}),
    ]:  # fmt: skip
        stack = cache.decompose_resid(pos_slice=kw.get("pos_slice"))
        tl_stack = tl_cache.decompose_resid(pos_slice=kw.get("pos_slice"))
        as_tl = lambda t: torch.tensor(t) if isinstance(t, np.ndarray) else t  # noqa: E731
        theirs = tl_cache.logit_attrs(tl_stack, as_tl(tokens), as_tl(wrong), **kw)
        check(cache.logit_attrs(stack, tokens, wrong, **kw), theirs, (tokens, wrong, kw))
    engine_cache = hooks.run_with_cache(model.engine, ids, attention_mask=mask)[1]  # no tokenizer
    tl_last = tl_cache.stack_head_results(pos_slice=-1)
    theirs = tl_cache.logit_attrs(tl_last, torch.tensor([5, 11]), pos_slice=-1)
    check(cache.logit_attrs(last, np.array([5, 11]), pos_slice=-1), theirs, "heads at the last position")
    for call, says in [
        (lambda: cache.logit_attrs(last, " the cat", pos_slice=-1), "must be one token of the model's tokenizer"),
        (lambda: cache.logit_attrs(last, config.n_vocab, pos_slice=-1), r"tokens must be token ids in \[0, 50257\)"),
        (lambda: cache.logit_attrs(last, 5, np.array([1, 2]), pos_slice=-1), "tokens and incorrect_tokens must have"),
        (lambda: cache.stack_head_results(layer=4), r"layer must be a whole number in \[0, 3\]"),
        (lambda: engine_cache.logit_attrs(last, " the", pos_slice=-1), "is text, and the model has no tokenizer"),
    ]:
        with pytest.raises(NpgptError, match=says):
            call()


def test_the_model_is_called_as_transformer_lens_s(odd):
    """logits = model("text") and model(tokens, return_type="loss"), TransformerLens's everyday calls, were
    TypeErrors ('GPT2' object is not callable); model(...) and model.forward(...) now return what they return
    there."""
    import torch

    model, br = odd
    ids, mask = batch(ODD)
    with torch.no_grad():
        for args, kw in (
            (("The cat sat on the mat",), {}),
            ((TEXTS,), {"padding_side": "left"}),
            ((TEXTS,), {"return_type": "loss", "prepend_bos": False}),
            ((ids,), {"return_type": "both"}),
        ):
            theirs = br(*(torch.tensor(a) if isinstance(a, np.ndarray) else a for a in args), **kw)
            for ours in (model(*args, **kw), model.forward(*args, **kw)):
                if kw.get("return_type") == "both":
                    np.testing.assert_allclose(ours[0], theirs[0].numpy(), atol=1e-4, rtol=1e-4)
                    ours, theirs_part = ours[1], theirs[1]
                else:
                    theirs_part = theirs
                if "padding_side" in kw:  # left-padded: the pads' positions mean nothing
                    real = hooks.to_tokens(model, *args, **kw)[1].astype(bool)
                    ours, theirs_part = ours[real], theirs_part.numpy()[real]
                np.testing.assert_allclose(ours, np.asarray(theirs_part), atol=1e-4, rtol=1e-4, err_msg=str(kw))
    np.testing.assert_allclose(model(ids, attention_mask=mask), model.logits(ids, attention_mask=mask), atol=1e-5)


def test_stop_at_layer_returns_transformer_lens_s_residual_stream(odd):
    """stop_at_layer was refused ('npgpt runs every layer'), so TransformerLens code probing the stream part way
    (model(ids, stop_at_layer=2), run_with_cache(..., stop_at_layer=1)) failed. It now runs that many blocks and
    returns the residual stream there, as TransformerLens does, with hooks applied and no later hook run."""
    import torch

    model, br = odd
    ids, mask = batch(ODD)
    real = mask.astype(bool)
    t_ids, t_mask = torch.tensor(ids), torch.tensor(mask)
    calls = []

    def double(x, hook):
        calls.append(hook.name)
        return x * 2

    for stop in (0, 1, 2, -1, -3):
        with torch.no_grad():
            theirs = br(t_ids, attention_mask=t_mask, stop_at_layer=stop).numpy()
            hooked = br.run_with_hooks(
                t_ids, attention_mask=t_mask, stop_at_layer=stop, fwd_hooks=[("hook_embed", double)]
            ).numpy()
            t_out, t_cache = br.run_with_cache(t_ids, attention_mask=t_mask, stop_at_layer=stop)
        ours = model(ids, attention_mask=mask, stop_at_layer=stop)
        assert ours.shape == theirs.shape == (*ids.shape, ODD.n_embd), stop
        np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4, err_msg=str(stop))
        ours = model.run_with_hooks(ids, attention_mask=mask, stop_at_layer=stop, fwd_hooks=[("hook_embed", double)])
        np.testing.assert_allclose(ours[real], hooked[real], atol=1e-4, rtol=1e-4, err_msg=str(stop))
        out, cache = model.run_with_cache(ids, attention_mask=mask, stop_at_layer=stop, return_type="loss")
        np.testing.assert_allclose(out[real], t_out.numpy()[real], atol=1e-4, rtol=1e-4, err_msg=str(stop))
        assert list(cache) == [n for n in hooks.hook_names(ODD.n_layer) if n in t_cache], stop
    # All three blocks: the stream leaving the last, before ln_final, as HookedTransformer returns it (its 4.x
    # bridge runs the whole model for stop_at_layer=n_layers and returns the logits)
    _, cache = model.run_with_cache(ids, attention_mask=mask)
    np.testing.assert_array_equal(model(ids, attention_mask=mask, stop_at_layer=3), cache["resid_post", -1])
    calls.clear()
    model.run_with_hooks(ids, stop_at_layer=1, fwd_hooks=[(lambda name: True, double)])
    assert calls == hooks.hook_names(ODD.n_layer)[: calls.index("blocks.0.hook_resid_post") + 1]
    for bad in (4, -4, 1.5, "1"):
        with pytest.raises(
            NpgptError, match=r"stop_at_layer must be None or a whole number of blocks to run in \[-3, 3\]"
        ):
            model(ids, stop_at_layer=bad)


def test_start_at_layer_runs_from_a_given_residual_stream_as_transformer_lens_does(odd):
    """start_at_layer (TransformerLens's model(resid, start_at_layer=k), the other half of stop_at_layer, for patching
    a stream and running on from it) was refused as an unknown option. The input is now the residual stream entering
    block k, and the logits, hooks and cache (block k's hook_resid_pre on) equal TransformerLens's; a negative k
    counts from the end. Tolerance 1e-4 at the real tokens of a left-padded batch."""
    import torch

    model, br = odd
    ids, mask = batch(ODD)
    real = mask.astype(bool)
    t_mask = torch.tensor(mask)
    _, cache = model.run_with_cache(ids, attention_mask=mask)
    shift = np.random.default_rng(3).standard_normal(ODD.n_embd).astype(np.float32)  # not undone by a layer norm
    for start in (0, 1, 2, -1):
        resid = cache["resid_pre", start] + shift
        with torch.no_grad():
            theirs = br(torch.tensor(resid), attention_mask=t_mask, start_at_layer=start).numpy()
            _, t_cache = br.run_with_cache(torch.tensor(resid), attention_mask=t_mask, start_at_layer=start)
        ours, our_cache = model.run_with_cache(resid, attention_mask=mask, start_at_layer=start)
        np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4, err_msg=str(start))
        assert np.abs(ours - cache.model.logits(ids, mask))[real].max() > 1e-2  # the shift reached the logits
        assert list(our_cache) == [n for n in hooks.hook_names(ODD.n_layer) if n in t_cache], start
        for name in our_cache:
            a, b = our_cache[name], t_cache[name].numpy()
            if name.endswith(("hook_attn_scores", "hook_pattern")):  # [B, H, Tq, Tk]: the real query rows
                a, b = a.transpose(0, 2, 1, 3), b.transpose(0, 2, 1, 3)
            np.testing.assert_allclose(a[real], b[real], atol=1e-4, rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(
            model(torch.tensor(resid), attention_mask=mask, start_at_layer=start), ours, atol=1e-6
        )  # a torch tensor from a TransformerLens cache is read too
        if start not in (2, -1):  # with stop_at_layer too: blocks [start, stop) run, and the stream there comes back
            ours = model(resid, attention_mask=mask, start_at_layer=start, stop_at_layer=2)
            np.testing.assert_allclose(
                ours,
                model.run_with_cache(resid, start_at_layer=start, attention_mask=mask)[1]["resid_post", 1],
                atol=1e-5,
            )
    for call, message in [
        (
            lambda: model(cache["resid_pre", 0], start_at_layer=3),
            r"start_at_layer must be None or a block in \[-3, 2\] for this model \(negative: counted from the end",
        ),
        (
            lambda: model(ids, start_at_layer=1),
            r"the input is the residual stream entering that block, \[batch, pos, 48\]",
        ),
        (lambda: model(cache["resid_pre", 1], start_at_layer=1, return_type="loss"), "lm_loss"),
        (lambda: model(cache["resid_pre", 1], start_at_layer=1, stop_at_layer=1), "must come after start_at_layer"),
    ]:
        with pytest.raises(NpgptError, match=message):
            call()


def test_a_hook_past_stop_at_layer_is_said_to_be_past_it_not_left_out_by_names_filter():
    """A cache made with stop_at_layer=1 and no names_filter said of the hooks past the stop that 'the names_filter of
    the run that made it left it out': it names the stop, and names_filter only where that left a hook out."""
    model = GPT2(ODD, scaled_params(ODD, 3))
    ids, _ = batch(ODD)
    _, cache = model.run_with_cache(ids, stop_at_layer=1)
    for key in ("blocks.1.hook_resid_post", ("resid_pre", 2), "ln_final.hook_normalized"):
        with pytest.raises(
            KeyError,
            match=r"is not in this cache: the run that made it stopped after 1 of the blocks \(stop_at_layer\)",
        ):
            cache[key]
    assert copy.copy(cache)["blocks.0.hook_resid_post"].shape == (*ids.shape, ODD.n_embd)
    with pytest.raises(KeyError, match=r"stopped after 1 of the blocks"):
        copy.deepcopy(cache)["blocks.2.attn.hook_pattern"]
    _, cache = model.run_with_cache(ids, stop_at_layer=2, names_filter=["blocks.0.hook_resid_post"])
    with pytest.raises(KeyError, match=r"is not in this cache: the names_filter of the run that made it left it out"):
        cache["blocks.1.hook_resid_pre"]


def test_transformer_lens_model_attributes_npgpt_has_not_name_its_way(tmp_path):
    """model.QK, model.OV and model.blocks were bare AttributeErrors ('GPT2' object has no
    attribute); each is now one line naming npgpt's way (still an AttributeError); QK's and OV's hints give
    TransformerLens's circuits multiplied out."""
    import dataclasses

    config = dataclasses.replace(ODD, tie_word_embeddings=False)
    params = scaled_params(config, 2)
    model, br = GPT2(config, params), bridge(config, params, str(tmp_path / "tl-attrs"))
    for name, hint in (
        ("QK", r"model\.W_Q @ model\.W_K\.transpose\(0, 1, 3, 2\) is each head's QK circuit"),
        ("OV", r"model\.W_V @ model\.W_O is each head's OV circuit"),
        ("blocks", r"each block's weights are stacked .* model\.W_Q\[layer\] for model\.blocks\[layer\]\.attn\.W_Q"),
    ):
        with pytest.raises(AttributeError, match=f"npgpt's model has no {name} .*; {hint}") as caught:
            getattr(model, name)
        assert isinstance(caught.value, NpgptError) and hasattr(br, name)
    np.testing.assert_allclose(model.W_Q @ model.W_K.transpose(0, 1, 3, 2), as_numpy(br.QK.AB), atol=1e-4)
    np.testing.assert_allclose(model.W_V @ model.W_O, as_numpy(br.OV.AB), atol=1e-4)
    assert not hasattr(model, "no_such_thing") and copy.copy(model).config is model.config
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        model.no_such_thing  # noqa: B018


def test_hooks_added_to_the_model_run_as_transformer_lens_s(odd):
    """model.add_hook(name, fn) and `with model.hooks(fwd_hooks=[...]): model(ids)`, TransformerLens's hooks that
    outlast one call, were refused ('npgpt's model has no add_hook ...; npgpt's hooks last for one call'), and
    run_with_hooks(..., reset_hooks_end=False) too. They are TransformerLens's now: an added hook runs in every hooked
    run (model(...), run_with_hooks, run_with_cache) before the run's own, until reset_hooks() (a permanent one until
    reset_hooks(including_permanent=True)) or the end of its block, equal to TransformerBridge's; the paths that run
    no hook (logits, generate, score, next_tokens, the JAX gradients) refuse while one is added, and a backward hook
    names the gradients, in one line each."""
    import torch

    model, br = odd
    ids = np.arange(5)[None] + 7
    plain = model(ids)
    zero = [("blocks.1.attn.hook_z", lambda z, hook: zero_head_1(z, hook))]  # called as TransformerLens calls it
    steer = [(lambda n: n == "blocks.0.hook_resid_post", lambda x, hook: x + 1.0)]

    def tl(fwd_hooks):
        with torch.no_grad(), br.hooks(fwd_hooks=fwd_hooks):
            return br(torch.tensor(ids)).numpy()

    with model.hooks(fwd_hooks=zero) as same:
        assert same is model
        np.testing.assert_allclose(model(ids), tl(zero), atol=1e-4, rtol=1e-4)
        _, cache = model.run_with_cache(ids, names_filter="blocks.1.attn.hook_z")
        assert not cache["z", 1][:, :, 1].any()
        with model.hooks(fwd_hooks=steer):  # nested: both run, the outer's first
            np.testing.assert_allclose(model(ids), tl(zero + steer), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(model.run_with_hooks(ids, fwd_hooks=steer), tl(zero + steer), atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(model(ids), plain)  # the block's hooks are gone
    model.add_hook(*zero[0])
    model.add_perma_hook(*steer[0])
    np.testing.assert_allclose(model(ids), tl(zero + steer), atol=1e-4, rtol=1e-4)
    for refused, call in (
        ("model.logits", lambda: model.logits(ids)),
        ("model.generate", lambda: model.generate("Hi", max_new_tokens=2)),
        ("model.score", lambda: model.score("Hi there")),
        ("model.next_tokens", lambda: model.next_tokens("Hi")),
    ):
        with pytest.raises(NpgptError, match=f"{refused} runs the model without hooks, and this model has 2 added"):
            call()
    with pytest.raises(NpgptError, match="activation_grads runs the model without hooks"):
        activation_grads.activation_grads(model, ids, lambda logits: logits.sum())
    model.reset_hooks()  # the permanent one stays, as TransformerLens's
    np.testing.assert_allclose(model(ids), tl(steer), atol=1e-4, rtol=1e-4)
    model.reset_hooks(including_permanent=True)
    np.testing.assert_array_equal(model(ids), plain)
    np.testing.assert_allclose(model.logits(ids), plain, atol=1e-4, rtol=1e-4)  # no hook left: the fast path runs
    kept = model.run_with_hooks(ids, fwd_hooks=zero, reset_hooks_end=False)
    np.testing.assert_array_equal(model(ids), kept)  # TransformerLens's: the run's hooks stay added
    model.reset_hooks()
    np.testing.assert_array_equal(model(ids), plain)
    with pytest.raises(NpgptError, match=r"add_hook\(dir='bwd'\): npgpt's backward hooks are JAX's gradients"):
        model.add_hook("hook_embed", zero_head_1, dir="bwd")
    with pytest.raises(NpgptError, match=r"hooks\(bwd_hooks=...\): npgpt's backward hooks are JAX's gradients"):
        with model.hooks(bwd_hooks=zero):
            pass
    with pytest.raises(NpgptError, match="unknown hook name"):  # checked when added, not at the next run
        model.add_hook("blocks.9.hook_nothing", zero_head_1)
    assert len(model._added_hooks) == 0
    twin = copy.copy(model)  # the weights shared, the hooks its own
    twin.add_hook(*zero[0])
    np.testing.assert_array_equal(model(ids), plain)
    np.testing.assert_allclose(twin(ids), tl(zero), atol=1e-4, rtol=1e-4)


def test_transformer_lens_model_parts_equal_transformer_lens_s(tmp_path):
    """model.unembed(model.ln_final(cache['resid_post', -1])) (the logit lens of one stream, written by hand),
    model.embed(tokens), model.accumulated_bias(layer) (direct logit attribution's bias term) and
    model.loss_fn(logits, tokens) were bare AttributeErrors ('GPT2' object has no attribute 'unembed'). Each is
    TransformerLens's now, on torch or NumPy input, equal to TransformerBridge's on an untied gelu model."""
    import torch

    config = dataclasses.replace(ODD, tie_word_embeddings=False, activation_function="gelu", layer_norm_epsilon=1e-3)
    params = scaled_params(config, 9)
    model, br = GPT2(config, params), bridge(config, params, str(tmp_path / "tl-parts"))
    ids, mask = batch(config)
    logits, cache = model.run_with_cache(ids, attention_mask=mask)
    resid = cache["resid_post", -1]
    with torch.no_grad():
        theirs = {
            "ln_final": as_numpy(br.ln_final(torch.tensor(resid))),
            "unembed": as_numpy(br.unembed(br.ln_final(torch.tensor(resid)))),
            "embed": as_numpy(br.embed(torch.tensor(ids))),
            "loss": float(br.loss_fn(torch.tensor(logits), torch.tensor(ids))),
            "per_token": as_numpy(br.loss_fn(torch.tensor(logits), torch.tensor(ids), per_token=True)),
        }
        for layer in range(config.n_layer + 1):
            for mlp_input in (False, True)[: 1 + (layer < config.n_layer)]:
                for include in (True, False):
                    np.testing.assert_allclose(
                        model.accumulated_bias(layer, mlp_input, include_mlp_biases=include),
                        as_numpy(br.accumulated_bias(layer, mlp_input, include_mlp_biases=include)),
                        atol=1e-5,
                    )
    np.testing.assert_allclose(model.ln_final(torch.tensor(resid)), theirs["ln_final"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(model.unembed(model.ln_final(resid)), theirs["unembed"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(model.unembed(model.ln_final(resid)), logits, atol=1e-4, rtol=1e-4)  # the model's own
    np.testing.assert_array_equal(model.embed(torch.tensor(ids)), theirs["embed"])
    np.testing.assert_allclose(model.loss_fn(torch.tensor(logits), ids), theirs["loss"], rtol=1e-5)
    np.testing.assert_allclose(model.loss_fn(logits, ids, per_token=True), theirs["per_token"], atol=1e-4)
    with pytest.raises(NpgptError, match=r"unembed takes the residual stream, an array \[..., 48\], got"):
        model.unembed(logits)
    with pytest.raises(NpgptError, match=r"embed takes token ids in \[0, 50257\)"):
        model.embed([0.5])
    with pytest.raises(NpgptError, match="there is no block 3, whose MLP input it is"):
        model.accumulated_bias(3, mlp_input=True)


def test_a_fast_path_refused_for_a_permanent_hook_names_the_reset_that_removes_it(odd):
    """With a hook added by add_perma_hook, model.logits said "... or call model.reset_hooks() first"; that call leaves
    a permanent hook (TransformerLens's reset_hooks too), so the next model.logits was refused again with the same
    advice. The refusal names reset_hooks(including_permanent=True) where a permanent hook is added, and that call
    clears it."""
    model, _ = odd
    ids = np.arange(5)[None] + 100
    model.add_hook("blocks.0.hook_resid_pre", lambda x, hook: x)
    with pytest.raises(NpgptError, match=r"or call model\.reset_hooks\(\) first$"):
        model.logits(ids)
    model.reset_hooks()
    model.add_perma_hook("blocks.0.hook_resid_pre", lambda x, hook: x)
    with pytest.raises(NpgptError, match=r"or call model\.reset_hooks\(including_permanent=True\) first$"):
        model.logits(ids)
    model.reset_hooks(including_permanent=True)
    assert model.logits(ids).shape == (1, 5, model.config.n_vocab)


def test_reset_hooks_called_by_habit_does_nothing_as_there_are_no_hooks_left(odd):
    """model.reset_hooks(), the first line of many TransformerLens notebook cells, was refused ('npgpt's model has
    no reset_hooks ...; npgpt's hooks last for one call, so there are none to reset'), stopping the cell at a call
    with nothing to do; remove_all_hook_fns() the same. Both take TransformerLens's arguments and, with no hook
    added, change nothing; a run after them is as before, and an argument TransformerLens would refuse is one line."""
    model, br = odd
    ids = np.arange(5)[None] + 100
    before = model(ids)
    for m in (model, br):
        assert m.reset_hooks() is None and m.remove_all_hook_fns() is None
        m.reset_hooks(clear_contexts=False, direction="fwd", including_permanent=True, level=None)
        m.remove_all_hook_fns("bwd", including_permanent=False)
    np.testing.assert_array_equal(model(ids), before)
    with pytest.raises(NpgptError, match="reset_hooks's direction must be 'fwd', 'bwd' or 'both', got 'forward'"):
        model.reset_hooks(direction="forward")
    with pytest.raises(NpgptError, match="remove_all_hook_fns's including_permanent must be True or False"):
        model.remove_all_hook_fns(including_permanent="yes")


@pytest.mark.parametrize("tied", [True, False])
def test_transformer_lens_weights_are_its_shapes_and_values(tmp_path, tied: bool):
    """model.W_U, model.W_Q, model.b_O ... (TransformerLens's circuit code: model.W_E @ model.W_U, W_V[l, h] @
    W_O[l, h]) were refused with a hint at model.params' own layout ([C, 3C] c_attn, the heads side by side), which
    the code would have had to reshape. Each is now TransformerLens's array, its shape and values (W_Q [n_layers,
    n_heads, d_model, d_head] ...), an untied model's own head as W_U; tokens_to_residual_directions too."""
    import dataclasses

    import torch

    from npgpt.lens_weights import WEIGHT_SHAPES

    config = dataclasses.replace(ODD, tie_word_embeddings=tied)
    params = scaled_params(config, 2)
    model, br = GPT2(config, params), bridge(config, params, str(tmp_path / "tl-weights"))
    for name in WEIGHT_SHAPES:
        ours, theirs = getattr(model, name), as_numpy(getattr(br, name))
        assert ours.shape == theirs.shape and ours.dtype == np.float32, name
        np.testing.assert_allclose(ours, theirs, atol=1e-6, err_msg=name)
    tokens = np.array([[5, 900], [17, 3]])
    for ours, theirs in [
        (model.tokens_to_residual_directions(tokens), br.tokens_to_residual_directions(torch.tensor(tokens))),
        (model.tokens_to_residual_directions(" cat"), br.tokens_to_residual_directions(" cat")),
        (model.tokens_to_residual_directions(7), br.tokens_to_residual_directions(7)),
    ]:
        np.testing.assert_allclose(ours, as_numpy(theirs), atol=1e-6)
    with pytest.raises(NpgptError, match=r"tokens must be a one-token text, a token id or an array of ids"):
        model.tokens_to_residual_directions([1.5])
    if importlib.util.find_spec("torch") is not None and tied:  # 8-bit codes are no float weights to read
        with pytest.raises(NpgptError, match=r"model.W_Q needs the float weights.*'int8' codes: load it with"):
            GPT2(config, params, backend="torch", dtype="int8").W_Q  # noqa: B018
    bare = dataclasses.replace(config, bias=False)
    assert not GPT2(bare, random_params(bare, 1)).b_Q.any()  # TransformerLens's zeros where there is no bias


@pytest.mark.parametrize("tied", [True, False])
def test_transformer_lens_weights_are_read_only_views_where_the_params_allow(tied: bool):
    """model.W_U copied the head on every read (twice on the way: 154 MB each for GPT-2 124M), and model.W_Q[0] = 0
    or model.W_U[:] = 0 changed a copy, silently nothing (TransformerLens's W_U is its Parameter: a write changes
    the model there); model.W_U = x hid the weight behind an array the model never reads. W_E, W_pos and W_U are now
    views of float32 NumPy params (no copy), every weight is read-only, and model.W_U = x is one line."""
    import tracemalloc

    from npgpt.lens_weights import WEIGHT_SHAPES

    config = dataclasses.replace(ODD, tie_word_embeddings=tied)
    model = GPT2(config, scaled_params(config, 2))
    before = model.logits([[1, 2, 3]])
    viewed = {"W_E": "wte", "W_pos": "wpe", "W_U": "wte" if tied else "lm_head"}
    for name in WEIGHT_SHAPES:
        tracemalloc.start()
        weight = getattr(model, name)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if name in viewed:
            assert peak < 4096 and np.shares_memory(weight, model.params[viewed[name]]), (name, peak)
        else:  # one copy, no temporaries of its size
            assert peak < weight.nbytes + 4096, (name, peak, weight.nbytes)
        with pytest.raises(ValueError, match="read-only"):
            weight[...] = 0
        with pytest.raises(ValueError, match="read-only"):
            weight += 1
        with pytest.raises(
            AttributeError, match=rf"model\.{name} is TransformerLens's weight, read-only, made from model\.params"
        ):
            setattr(model, name, np.zeros_like(weight))
    np.testing.assert_array_equal(model.logits([[1, 2, 3]]), before)
    model.use_attn_in = True  # other attributes are set as before


def test_a_hook_reading_transformer_lens_s_hook_ctx_is_told_where_to_keep_state():
    """hook.ctx (TransformerLens's per-hook-point dict, kept between calls there) was a bare AttributeError
    on npgpt's hook name; it is now one line naming the way (a dict of your own), still an AttributeError."""
    model = GPT2(ODD, scaled_params(ODD, 1))

    def tl_style(x, hook):
        hook.ctx["seen"] = x.shape

    says = r"npgpt's hook has no ctx \(TransformerLens's HookPoint.ctx\); keep state in a dict of your own"
    with pytest.raises(AttributeError, match=says) as e:
        model.run_with_hooks([1, 2, 3], fwd_hooks=[("hook_embed", tl_style)])
    assert isinstance(e.value, NpgptError)
    with pytest.raises(AttributeError, match="no attribute 'colour'"):
        hooks.HookName("hook_embed").colour  # noqa: B018


def test_one_rows_stack_of_a_batchs_cache_takes_that_rows_scale_as_transformer_lens(odd):
    """cache.apply_ln_to_stack(stack[:, 0], batch_slice=0, has_batch_dim=False) (and logit_attrs so), a stack of one
    row of a batch's cache, divided it by every row's scale: NumPy's 'operands could not be broadcast' (a batch of as
    many rows as components: wrong numbers). TransformerLens takes the row's scale (batch_slice on the cache's rows,
    has_batch_dim on the stack's); so does npgpt now."""
    import torch

    model, br = odd
    texts = ["The cat sat on the", "Hello there"]
    _, cache = model.run_with_cache(texts)
    with torch.no_grad():
        _, tl_cache = br.run_with_cache(texts)
    stack, tl_stack = cache.decompose_resid(), tl_cache.decompose_resid()
    for row, pos in ((0, None), (1, -1)):
        ours, theirs = stack[:, row], tl_stack[:, row]
        if pos is not None:
            ours, theirs = ours[:, pos], theirs[:, pos]
        kw = {"batch_slice": row, "pos_slice": pos, "has_batch_dim": False}
        np.testing.assert_allclose(
            cache.apply_ln_to_stack(ours, **kw), as_numpy(tl_cache.apply_ln_to_stack(theirs, **kw)), atol=1e-4
        )
        np.testing.assert_allclose(
            cache.logit_attrs(ours, 5, **kw), as_numpy(tl_cache.logit_attrs(theirs, 5, **kw)), atol=1e-4, rtol=1e-4
        )


def test_a_stack_not_sliced_as_pos_slice_and_batch_slice_say_is_refused_not_broadcast(odd):
    """cache.logit_attrs(stack[:, :, -1], token) on a one-row cache, the stack taken at the last position but no
    pos_slice=-1 given, divided the last position's vectors by every position's scale ([8, 1, C] / [1, T, 1]) and
    returned [8, T] attributions, silently wrong (TransformerLens's too); a batch's gave NumPy's 'operands could not
    be broadcast'. A stack whose rows and positions are not the scale's is now one line naming both shapes."""
    model, _ = odd
    _, one = model.run_with_cache("The cat sat on the")
    _, two = model.run_with_cache(["The cat sat on the", "Hello there"])
    says = r"residual_stack has shape \(8, (1|2), 48\), and the cached layer norm scale it is divided by covers rows"
    for cache in (one, two):
        last = cache.decompose_resid()[:, :, -1]
        for method, args in (("logit_attrs", (last, 5)), ("apply_ln_to_stack", (last,))):
            with pytest.raises(
                NpgptError, match=says + r" and positions \((1|2), 6\) \(after pos_slice and batch_slice"
            ):
                getattr(cache, method)(*args)
        right = cache.logit_attrs(last, 5, pos_slice=-1)  # said as sliced: the last position's attributions
        np.testing.assert_allclose(right, cache.logit_attrs(cache.decompose_resid(), 5)[:, :, -1], atol=1e-5)
    with pytest.raises(NpgptError, match=r"a stack \[components, 2, 6, C\]"):
        two.apply_ln_to_stack(two.decompose_resid()[:, :1])  # a row taken with no batch_slice
    assert two.apply_ln_to_stack(two["resid_post", 2]).shape == (2, 6, 48)  # a stream with no components axis: as there


def test_logit_attrs_tokens_that_do_not_fit_the_stack_are_one_line(odd):
    """cache.logit_attrs(stack, tokens) with one token per row [B] of a stack sliced to one row (batch_slice=0) was
    NumPy's 'operands could not be broadcast together with shapes (8,6,48) (2,48)' (TransformerLens's: torch's
    RuntimeError); a one-row cache's stack taken at the last position with the tokens of every position [1, T]
    broadcast to [8, T] attributions, silently wrong. Tokens that do not fit the stack's rows and positions are now
    one line naming both."""
    model, _ = odd
    texts = ["The cat sat on the", "Hello there"]
    _, cache = model.run_with_cache(texts)
    stack = cache.decompose_resid()
    says = r"tokens of shape \(2,\) do not fit the stack's rows and positions \(6,\): give one id, one per row \[B\]"
    with pytest.raises(NpgptError, match=says):
        cache.logit_attrs(stack, np.array([5, 9]), batch_slice=0)
    assert cache.logit_attrs(stack, 5, batch_slice=0).shape == (8, 6)
    ids = model.to_tokens(texts[0])  # [1, 6]
    _, one = model.run_with_cache(ids)
    last = one.decompose_resid(pos_slice=-1)  # [8, 1, C]
    with pytest.raises(NpgptError, match=r"tokens of shape \(1, 6\) do not fit the stack's rows and positions \(1,\)"):
        one.logit_attrs(last, ids, pos_slice=-1)
    np.testing.assert_allclose(  # the tokens at that position: the attributions of the whole stack's there
        one.logit_attrs(last, ids[:, -1], pos_slice=-1),
        one.logit_attrs(one.decompose_resid(), ids)[:, :, -1],
        atol=1e-5,
    )


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_remove_batch_dim_gives_transformer_lens_s_batchless_cache(odd, backend):
    """run_with_cache(..., remove_batch_dim=True) and cache.remove_batch_dim() were refused; a one-row run's
    cache now drops its batch axis as TransformerLens's does, and its helpers stack what TransformerLens's do."""
    import torch

    pytest.importorskip(backend)
    model, br = odd
    if backend != "numpy":
        model = GPT2(ODD, scaled_params(ODD, 3), backend=backend)  # the odd fixture's weights
    with torch.no_grad():
        tl_logits, theirs = br.run_with_cache("The cat sat on", remove_batch_dim=True)
    for host in (True, False):
        logits, ours = model.run_with_cache("The cat sat on", remove_batch_dim=True, host=host)
        assert tuple(logits.shape) == tuple(tl_logits.shape) and not ours.has_batch_dim
        to_numpy = np.asarray if host else model.backend.to_numpy
        for key in (("resid_pre", 0), ("pattern", 1), ("scale",), ("q", 2)):
            assert to_numpy(ours[key]).shape == tuple(theirs[key].shape), key
        for helper, kw in (
            ("accumulated_resid", {"apply_ln": True}),
            ("accumulated_resid", {"layer": 1, "incl_mid": True, "apply_ln": True}),
            ("decompose_resid", {"layer": 2, "apply_ln": True}),
        ):
            got = to_numpy(getattr(ours, helper)(**kw))
            np.testing.assert_allclose(got, as_numpy(getattr(theirs, helper)(**kw)), atol=1e-4, rtol=1e-4)
    _, cache = model.run_with_cache("The cat")
    assert cache.remove_batch_dim() is cache and cache["resid_pre", 0].ndim == 2
    assert cache.remove_batch_dim()["resid_pre", 0].ndim == 2  # once only, as there
    _, cache = model.run_with_cache("The cat")  # TransformerLens 4's batch_size: was a TypeError
    assert cache.remove_batch_dim(batch_size=1)["resid_pre", 0].ndim == 2
    with pytest.raises(NpgptError, match=r"remove_batch_dim removes the batch axis of a run of one row; batch_size=2"):
        model.run_with_cache("The cat")[1].remove_batch_dim(batch_size=2)
    with pytest.raises(NpgptError, match="remove_batch_dim needs a run of one row, and this cache's arrays have 2"):
        model.run_with_cache(TEXTS[:2], remove_batch_dim=True)


def test_an_array_in_an_error_is_named_by_its_shape_in_one_line():
    """model(resid[0], start_at_layer=1) (a [T, C] stream, the batch axis dropped) was refused with the array's repr
    in the message: a page of numbers over many lines. An array (NumPy's, torch's, JAX's) in any message is now its
    shape and dtype, one line."""
    import torch

    model = GPT2(ODD, random_params(ODD, 0))
    stream = np.ones((5, ODD.n_embd), np.float32)
    for given in (stream, torch.ones(5, ODD.n_embd), np.ones((1, 0, ODD.n_embd))):
        with pytest.raises(NpgptError) as e:
            model(given, start_at_layer=1)
        assert "\n" not in str(e.value) and str(e.value).endswith(
            f"got an array of shape {tuple(given.shape)}, {str(given.dtype).removeprefix('torch.')}"
        ), e.value
    assert shown(np.int64(3)) == "np.int64(3)" and shown(np.array([1, 2])) == "array([1, 2])"  # a few: their values


def test_a_position_outside_the_input_is_refused_naming_it():
    """run_with_cache(ids, pos_slice=100) on 5 tokens cached every activation empty (a slice 100:101), where
    TransformerLens raises; the cache's helpers' pos_slice=[7] was NumPy's IndexError, a traceback. Each is one line
    naming the position and the input's range; a slice past the end is cut, as Python's (and TransformerLens's)."""
    model = GPT2(ODD, random_params(ODD, 0))
    ids = np.array([[1, 2, 3, 4, 5]])
    _, cache = model.run_with_cache(ids)
    calls = [
        lambda: model.run_with_cache(ids, pos_slice=100),
        lambda: model.run_with_cache(ids, pos_slice=-6),
        lambda: model.run_with_cache(ids, pos_slice=[0, 9]),
        lambda: cache.accumulated_resid(pos_slice=[7]),
        lambda: cache.decompose_resid(pos_slice=5),
        lambda: cache.stack_head_results(pos_slice=-9),
    ]
    for call in calls:
        with pytest.raises(
            NpgptError, match=r"pos_slice has position -?\d+, outside this input's 5 positions \[-5, 4\]"
        ):
            call()
    assert model.run_with_cache(ids, pos_slice=(3, 100))[1]["resid_pre", 0].shape == (1, 2, ODD.n_embd)
    assert cache.accumulated_resid(pos_slice=-5).shape == (ODD.n_layer + 1, 1, ODD.n_embd)  # the first position
