"""blocks.{i}.attn.hook_result, TransformerLens's per-head attention output [B, T, H, C] (filled there with
use_attn_result): cached, read and replaced by a hook, against TransformerLens on the same weights, and on
every backend and weight storage."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_hooks import ODD, as_numpy, batch, bridge, scaled_params, tl_run

from npgpt import hooks
from npgpt.api import GPT2
from npgpt.errors import NpgptError

UNTIED = dataclasses.replace(ODD, tie_word_embeddings=False)  # 3 heads, width 48, 3 layers


@pytest.fixture(scope="module")
def untied(tmp_path_factory: pytest.TempPathFactory):
    params = scaled_params(UNTIED, 8)
    return GPT2(UNTIED, params), bridge(UNTIED, params, str(tmp_path_factory.mktemp("tl-result")))


def zero_head(head: int):
    def zero(result, hook):  # in place, returning None, as TransformerLens's hooks may
        result[:, :, head] = 0

    return zero


def triple_head_2(result, hook):  # a replacement, returned
    out = result * 1
    out[:, :, 2] = out[:, :, 2] * 3
    return out


def returned_zero_head_1(result, hook):
    if hasattr(result, "at"):  # JAX
        return result.at[:, :, 1].set(0)
    out = result * 1
    out[:, :, 1] = 0
    return out


def c_proj_b(model: GPT2, layer: int) -> np.ndarray:
    return np.asarray(model.params["blocks"][layer]["attn"]["c_proj"]["b"])


def test_hook_result_is_listed_and_cached_as_transformer_lens_caches_it(untied):
    """blocks.{i}.attn.hook_result was refused ('not computed ... use hook_z times each head's rows of
    attn.c_proj.w'). It is now a hook point after attn.hook_z, its cache entry equal to TransformerLens's
    (use_attn_result=True), read by the shorthand, and stack_head_results is those arrays."""
    model, br = untied
    ids, mask = batch(UNTIED)
    real = mask.astype(bool)
    names = hooks.hook_names(UNTIED.n_layer)
    for i in range(UNTIED.n_layer):
        at = names.index(f"blocks.{i}.attn.hook_result")
        assert names[at - 1 : at + 2] == [f"blocks.{i}.attn.hook_z", names[at], f"blocks.{i}.hook_attn_out"]
    _, cache = model.run_with_cache(ids, attention_mask=mask)
    _, tl_cache = tl_run(br, ids, mask)
    assert list(cache) == names
    for i in range(UNTIED.n_layer):
        ours, theirs = cache["result", i], as_numpy(tl_cache[f"blocks.{i}.attn.hook_result"])
        assert ours.shape == theirs.shape == (*ids.shape, UNTIED.n_head, UNTIED.n_embd) and ours.dtype == np.float32
        np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4, err_msg=str(i))
        np.testing.assert_allclose(ours.sum(2) + c_proj_b(model, i), cache["attn_out", i], atol=1e-5)
    heads = [cache["result", i][:, :, h] for i in range(UNTIED.n_layer) for h in range(UNTIED.n_head)]
    np.testing.assert_array_equal(cache.stack_head_results(), np.stack(heads))
    # names_filter's forms; a cache without it computes the same numbers for stack_head_results
    one = model.run_with_cache(ids, names_filter="blocks.1.attn.hook_result", attention_mask=mask)[1]
    assert list(one) == ["blocks.1.attn.hook_result"]
    np.testing.assert_array_equal(one["result1"], cache["blocks.1.attn.hook_result"])
    some = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_result"), attention_mask=mask)[1]
    assert list(some) == [f"blocks.{i}.attn.hook_result" for i in range(UNTIED.n_layer)]
    z_only = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_z"), attention_mask=mask)[1]
    np.testing.assert_allclose(z_only.stack_head_results(), cache.stack_head_results(), atol=1e-6)


@pytest.mark.parametrize("name,fn", [("blocks.1.attn.hook_result", zero_head(1)), ("result0", triple_head_2)])
def test_a_hook_on_hook_result_changes_the_attention_output_as_in_transformer_lens(untied, name, fn):
    """A hook on hook_result (zero one head's output, in place; scale one, returned) gives TransformerLens's
    logits for the same hook: the block's attention output is the sum of the edited results plus c_proj.b."""
    import torch

    model, br = untied
    ids, mask = batch(UNTIED)
    real = mask.astype(bool)
    full = hooks.act_name(name)
    ours = model.run_with_hooks(ids, fwd_hooks=[(full, fn)], attention_mask=mask)
    with torch.no_grad():
        theirs = br.run_with_hooks(
            torch.tensor(ids), attention_mask=torch.tensor(mask), fwd_hooks=[(full, lambda x, hook: fn(x, hook))]
        ).numpy()
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4)
    assert np.abs(ours - model.logits(ids, attention_mask=mask))[real].max() > 1e-2  # it did something
    _, cache = model.run_with_cache(ids, fwd_hooks=[(full, fn)], attention_mask=mask)  # the edit, as cached
    layer = int(full.split(".")[1])
    np.testing.assert_allclose(
        cache["attn_out", layer], cache["result", layer].sum(2) + c_proj_b(model, layer), atol=1e-5
    )


def test_zeroing_a_heads_result_is_zeroing_its_z_and_reading_it_changes_nothing(untied):
    model, br = untied
    ids, mask = batch(UNTIED)
    via_result = model.run_with_hooks(ids, fwd_hooks=[("blocks.2.attn.hook_result", zero_head(0))], attention_mask=mask)
    via_z = model.run_with_hooks(ids, fwd_hooks=[("blocks.2.attn.hook_z", zero_head(0))], attention_mask=mask)
    np.testing.assert_allclose(via_result, via_z, atol=1e-4, rtol=1e-4)
    seen: list[str] = []
    read = [(lambda n: n.endswith("hook_result"), lambda x, hook: seen.append(hook.name))]
    np.testing.assert_array_equal(model.run_with_hooks(ids, fwd_hooks=read), model.run_with_hooks(ids))
    assert seen == [f"blocks.{i}.attn.hook_result" for i in range(UNTIED.n_layer)]
    # A hook on hook_z before it: the result is computed from the edited z
    _, cache = model.run_with_cache(
        ids, fwd_hooks=[("blocks.0.attn.hook_z", zero_head(2))], names_filter="blocks.0.attn.hook_result"
    )
    assert (cache["result", 0][:, :, 2] == 0).all() and (cache["result", 0][:, :, 1] != 0).any()


STORAGE = [
    ("numpy", "float32"),
    ("torch", "float32"),
    ("jax", "float32"),
    ("torch", "float16"),
    ("jax", "bfloat16"),
    ("numpy", "int8"),
    ("torch", "int8"),
]


@pytest.mark.parametrize("backend,dtype", STORAGE)
def test_hook_result_on_every_backend_and_weight_storage(backend: str, dtype: str):
    """hook_result read, cached (host and host=False) and edited on each backend, with 16-bit and int8 weight
    matrices too: as far from the float32 NumPy model's as the storage moves the block's own attention output,
    and a head zero-ablated through it equal to the same ablation through hook_z, within what summing the
    results (in place of the model's c_proj product) moves the logits."""
    pytest.importorskip(backend)
    if backend == "numpy" and dtype == "int8":
        pytest.importorskip("onnxruntime")
    params = scaled_params(ODD, 2)
    ref, model = GPT2(ODD, params), GPT2(ODD, params, backend=backend, dtype=dtype)
    ids, mask = batch(ODD)
    real = mask.astype(bool)
    wanted = lambda n: n.endswith(("hook_result", "hook_attn_out"))  # noqa: E731
    _, want = ref.run_with_cache(ids, names_filter=wanted, attention_mask=mask)
    _, cache = model.run_with_cache(ids, names_filter=wanted, attention_mask=mask)
    _, kept = model.run_with_cache(ids, names_filter=wanted, attention_mask=mask, host=False)
    assert type(kept["result", 1]) is type(model.params["wpe"])
    for i in range(ODD.n_layer):
        ours = cache["result", i]
        stored = 3 * float(np.abs(cache["attn_out", i] - want["attn_out", i])[real].max()) + 1e-4  # storage's error
        assert ours.dtype == np.float32 and ours.shape == (*ids.shape, ODD.n_head, ODD.n_embd)
        np.testing.assert_allclose(ours[real], want["result", i][real], atol=stored, err_msg=str(i))
        np.testing.assert_allclose(model.backend.to_numpy(kept["result", i]), ours, atol=1e-6)
        np.testing.assert_allclose(ours.sum(2) + c_proj_b(ref, i), cache["attn_out", i], atol=stored)
    z_only = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_z"), attention_mask=mask)[1]
    np.testing.assert_allclose(z_only.stack_head_results(), cache.stack_head_results(), atol=1e-4)
    plain = model.run_with_hooks(ids, attention_mask=mask)
    read = [("blocks.1.attn.hook_result", lambda x, hook: None)]
    np.testing.assert_array_equal(model.run_with_hooks(ids, fwd_hooks=read, attention_mask=mask), plain)
    summed = model.run_with_hooks(
        ids, fwd_hooks=[("blocks.1.attn.hook_result", lambda x, h: x * 1)], attention_mask=mask
    )
    slack = 3 * float(np.abs(summed - plain)[real].max()) + 1e-4  # the sum of the results in place of c_proj's product
    for zero in [returned_zero_head_1] + ([] if backend == "jax" else [zero_head(1)]):  # JAX's arrays: no in place
        ours = model.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_result", zero)], attention_mask=mask)
        via_z = model.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_z", zero)], attention_mask=mask)
        np.testing.assert_allclose(ours[real], via_z[real], atol=slack)
        assert np.abs(ours - plain)[real].max() > 3 * slack  # it did something (int8: slack is ~5 % of it)


def test_activation_grads_reach_hook_result():
    """JAX: the gradient of a metric with respect to each head's result equals finite differences."""
    pytest.importorskip("jax")
    model = GPT2(ODD, scaled_params(ODD, 4))
    ids, mask = batch(ODD)

    def metric(logits):
        return (logits[:, -1, 11] - logits[:, -1, 500]).sum()

    name = "blocks.1.attn.hook_result"
    _, acts, grads = hooks.activation_grads(model, ids, metric, names_filter=[name], attention_mask=mask)
    direction = np.random.default_rng(0).standard_normal(acts[name].shape).astype(np.float32)

    def shifted(s: float) -> float:
        fwd = [(name, lambda x, n: x + s * direction)]
        return float(metric(np.asarray(model.run_with_hooks(ids, fwd, attention_mask=mask), np.float64)))

    fd = (shifted(1e-2) - shifted(-1e-2)) / 2e-2
    assert float((grads[name] * direction).sum()) == pytest.approx(fd, rel=2e-2, abs=2e-3)
    # and the gradient at hook_z now flows through the results: still equal to finite differences
    _, _, both = hooks.activation_grads(model, ids, metric, names_filter=None, attention_mask=mask)
    np.testing.assert_allclose(both[name], grads[name], rtol=1e-4, atol=1e-6)


def test_transformer_lens_s_switch_for_it_is_taken_and_switches_it(untied):
    """model.set_use_attn_result(True), the line TransformerLens needs before hook_result, was a one-line error
    ("drop the call"), so TransformerLens code stopped at its first line. It is now the switch: on (npgpt's
    default), names_filter None and functions of names reach attn.hook_result; off (TransformerLens's default),
    only its name does, as there, and a cache that lacks it says why."""
    import torch

    model, br = untied
    ids, mask = batch(UNTIED)
    try:
        model.set_use_attn_result(True)
        logits, cache = model.run_with_cache(ids, attention_mask=mask)
        assert "blocks.2.attn.hook_result" in cache
        model.set_use_attn_result(False)
        br.set_use_attn_result(False)
        with torch.no_grad():
            _, tl_cache = br.run_with_cache(torch.tensor(ids), attention_mask=torch.tensor(mask))
        for names_filter in (None, lambda name: name.endswith(("hook_z", "hook_result"))):
            off_logits, off = model.run_with_cache(ids, attention_mask=mask, names_filter=names_filter)
            assert not any(n.endswith("attn.hook_result") for n in off), names_filter
            np.testing.assert_array_equal(off_logits, logits)
            with pytest.raises(KeyError, match=r"model.set_use_attn_result\(False\) keeps names_filter None and"):
                off["result", 0]
        assert not any(n.endswith("attn.hook_result") for n in tl_cache)  # as TransformerLens's, switched off
        _, named = model.run_with_cache(ids, attention_mask=mask, names_filter="blocks.1.attn.hook_result")
        np.testing.assert_array_equal(named["result", 1], cache["result", 1])  # a name reaches it anyway
        seen: list[str] = []
        model.run_with_hooks(
            ids, attention_mask=mask, fwd_hooks=[(lambda n: "result" in n, lambda x, hook: seen.append(hook.name))]
        )
        assert seen == []  # a function of names does not reach it, as in TransformerLens
        with pytest.raises(NpgptError, match="set_use_attn_result takes True or False, got 'yes'"):
            model.set_use_attn_result("yes")
    finally:
        model.set_use_attn_result(True)
        br.set_use_attn_result(True)
    _, cache = model.run_with_cache([1, 2, 3], names_filter="blocks.0.attn.hook_z")
    with pytest.raises(KeyError, match="the names_filter of the run that made it left it out"):
        cache["result", 0]


def test_compute_head_results_fills_the_cache_as_transformer_lens_s(untied):
    """cache.compute_head_results(), TransformerLens's way to hook_result for a run made without use_attn_result,
    was refused with a hint; it now adds every block's attn.hook_result to the cache, TransformerLens's arrays."""
    import torch

    model, br = untied
    ids, mask = batch(UNTIED)
    z_only = [f"blocks.{i}.attn.hook_z" for i in range(UNTIED.n_layer)]
    _, cache = model.run_with_cache(ids, attention_mask=mask, names_filter=z_only)
    with torch.no_grad():
        _, tl_cache = br.run_with_cache(torch.tensor(ids), attention_mask=torch.tensor(mask), names_filter=z_only)
    kept = cache.head_results(1)
    cache["blocks.1.attn.hook_result"] = kept  # one cached already is kept, as there
    cache.compute_head_results()
    tl_cache.compute_head_results()
    assert cache["result", 1] is kept
    real = mask.astype(bool)  # padding positions mean nothing (and differ)
    for layer in range(UNTIED.n_layer):
        ours, theirs = cache["result", layer], as_numpy(tl_cache["result", layer])
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4)
    _, part = model.run_with_cache(ids, names_filter="blocks.0.attn.hook_z")
    with pytest.raises(KeyError, match=r"cache\['z', 1\].*the names_filter of the run that made it left it out"):
        part.compute_head_results()
