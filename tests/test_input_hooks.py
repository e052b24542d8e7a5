"""TransformerLens's optional input hooks (use_attn_in, use_split_qkv_input, use_hook_mlp_in): blocks.{i}.hook_attn_in,
hook_q_input, hook_k_input, hook_v_input [B, T, H, C] and hook_mlp_in [B, T, C], cached and edited, against
TransformerLens with those flags on, on the same weights (3 heads, width 48, 2 layers, a left-padded batch).
Tolerance: 1e-4 at the real tokens, as tests/test_hooks.py's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_hooks import ODD, batch, bridge, scaled_params, tl_run

from npgpt import hooks
from npgpt.api import GPT2
from npgpt.errors import NpgptError

TWO = dataclasses.replace(ODD, n_layer=2)
INPUTS = ("hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input", "hook_mlp_in")


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory):
    params = scaled_params(TWO, 5)
    return GPT2(TWO, params), bridge(TWO, params, str(tmp_path_factory.mktemp("tl-inputs")))


def tl_flags(br, split: bool) -> None:
    """use_split_qkv_input or use_attn_in (TransformerLens allows one at a time), and use_hook_mlp_in."""
    br.set_use_split_qkv_input(False)
    br.set_use_attn_in(False)
    (br.set_use_split_qkv_input if split else br.set_use_attn_in)(True)
    br.set_use_hook_mlp_in(True)


def zero_head_1(x, hook):
    out = x * 1
    out[:, :, 1] = 0
    return out


STEER = np.random.default_rng(7).standard_normal(TWO.n_embd).astype(np.float32)


def in_place_head_2(x, hook):  # written in place, None returned, as TransformerLens's hooks may
    x[:, :, 2] += STEER if isinstance(x, np.ndarray) else x.new_tensor(STEER)


def steer(x, hook):  # a shift: a scale (or a constant) would be undone by the layer norm that reads the input
    return x + (STEER if isinstance(x, np.ndarray) else x.new_tensor(STEER))


@pytest.mark.parametrize("split", [True, False])
def test_input_hooks_are_cached_as_transformer_lens_caches_them(two, split):
    """They were refused ('not computed (TransformerLens's optional hook): use blocks.{i}.hook_resid_pre'); named
    in names_filter they are now cached, each equal to TransformerLens's with its flag on, in its place in forward
    order (hook_names(n_layer, inputs=True))."""
    model, br = two
    tl_flags(br, split)
    ids, mask = batch(TWO)
    real = mask.astype(bool)
    names = [f"blocks.{i}.{n}" for i in range(TWO.n_layer) for n in INPUTS if split != (n == "hook_attn_in")]
    _, cache = model.run_with_cache(ids, names_filter=names, attention_mask=mask)
    _, tl_cache = tl_run(br, ids, mask)
    assert set(cache) == set(names)
    for name in names:
        theirs = tl_cache[name].float().numpy()
        assert cache[name].shape == theirs.shape and cache[name].dtype == np.float32, name
        np.testing.assert_allclose(cache[name][real], theirs[real], atol=1e-4, rtol=1e-4, err_msg=name)
    order = [n for n in hooks.hook_names(TWO.n_layer, inputs=True) if n in tl_cache or n.endswith(INPUTS)]
    assert [n for n in order if n in names] == [n for n in tl_cache if n in names]
    short = ("q_input", 1) if split else ("attn_in", 1)  # TransformerLens's shorthand reads them too
    assert cache[short].shape == (*ids.shape, TWO.n_head, TWO.n_embd)


CASES = [
    ("blocks.0.hook_q_input", zero_head_1, True),
    ("blocks.1.hook_k_input", zero_head_1, True),
    ("blocks.0.hook_v_input", in_place_head_2, True),
    ("blocks.1.hook_q_input", steer, True),
    ("blocks.0.hook_attn_in", zero_head_1, False),
    ("blocks.1.hook_attn_in", in_place_head_2, False),
    ("blocks.0.hook_mlp_in", steer, True),
    ("blocks.1.hook_mlp_in", zero_head_1, False),
]


@pytest.mark.parametrize("name,fn,split", CASES)
def test_an_edit_through_an_input_hook_equals_transformer_lens(two, name, fn, split):
    """Zero-ablating one head's query/key/value input, an edit in place, a steering vector on the MLP's input:
    the logits, and each head's q/k/v, ln2's scale and the MLP's output after it, equal TransformerLens's; the
    residual stream does not carry an edit of hook_mlp_in, as there."""
    import torch

    model, br = two
    tl_flags(br, split)
    ids, mask = batch(TWO)
    real = mask.astype(bool)
    after = ["attn.hook_q", "attn.hook_k", "attn.hook_v", "ln2.hook_scale", "hook_mlp_out", "hook_resid_post"]
    seen = [f"blocks.{i}.{n}" for i in range(TWO.n_layer) for n in after]
    tl_seen: dict[str, np.ndarray] = {}

    def record(name: str):  # by the name asked for: the bridge's hook.name may be an alias
        return lambda x, hook: tl_seen.__setitem__(name, x.detach().clone().numpy())

    with torch.no_grad():
        theirs = br.run_with_hooks(
            torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            fwd_hooks=[(name, fn)] + [(n, record(n)) for n in seen],
        ).numpy()
    plain = model.run_with_hooks(ids, attention_mask=mask)
    ours, cache = model.run_with_cache(ids, names_filter=seen, fwd_hooks=[(name, fn)], attention_mask=mask)
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4)
    for n in seen:
        np.testing.assert_allclose(cache[n][real], tl_seen[n][real], atol=1e-4, rtol=1e-4, err_msg=n)
    assert np.abs(ours - plain)[real].max() > 1e-2  # it did something


def test_reading_an_input_hook_changes_nothing_and_none_is_computed_unless_named():
    """A hook that only reads them leaves the logits exactly as they were; names_filter None (every hook point) and a
    function of names do not reach them, as TransformerLens's with its flags off (each is [B, T, H, C])."""
    model = GPT2(TWO, scaled_params(TWO, 6))
    ids, mask = batch(TWO)
    plain = model.run_with_hooks(ids, attention_mask=mask)
    read = [(f"blocks.{i}.{n}", lambda x, hook: None) for i in range(TWO.n_layer) for n in INPUTS]
    np.testing.assert_array_equal(model.run_with_hooks(ids, fwd_hooks=read, attention_mask=mask), plain)
    for names_filter in (None, lambda n: True):
        _, cache = model.run_with_cache(ids, names_filter=names_filter, attention_mask=mask)
        assert set(cache) == set(hooks.hook_names(TWO.n_layer))
    with pytest.raises(NpgptError, match=r"optional input hooks, computed only where named.*names_filter=\["):
        cache["blocks.0.hook_q_input"]


def test_input_hooks_on_16_bit_weights_and_in_activation_grads():
    """On float16 weights (torch) the recomputed q is the model's 16-bit product; under JAX the gradient with
    respect to an input hook equals finite differences."""
    torch = pytest.importorskip("torch")
    params = scaled_params(TWO, 2)
    ref, half = GPT2(TWO, params), GPT2(TWO, params, backend="torch", dtype="float16")
    ids, mask = batch(TWO)
    real = mask.astype(bool)
    fwd = [("blocks.0.hook_q_input", zero_head_1)]
    want = ref.run_with_hooks(ids, fwd_hooks=fwd, attention_mask=mask)
    slack = 3 * float(np.abs(half.run_with_hooks(ids, attention_mask=mask) - ref.logits(ids, mask))[real].max())
    np.testing.assert_allclose(
        half.run_with_hooks(ids, fwd_hooks=fwd, attention_mask=mask)[real], want[real], atol=slack
    )
    assert torch is not None
    pytest.importorskip("jax")
    name = "blocks.1.hook_k_input"

    def metric(logits):
        return (logits[:, -1, 11] - logits[:, -1, 500]).sum()

    _, acts, grads = hooks.activation_grads(ref, ids, metric, names_filter=[name], attention_mask=mask)
    direction = np.random.default_rng(0).standard_normal(acts[name].shape).astype(np.float32)

    def shifted(s: float) -> float:
        return float(metric(ref.run_with_hooks(ids, [(name, lambda x, n: x + s * direction)], attention_mask=mask)))

    fd = (shifted(1e-2) - shifted(-1e-2)) / 2e-2
    assert float((grads[name] * direction).sum()) == pytest.approx(fd, rel=2e-2, abs=2e-3)


@pytest.mark.parametrize("split", [True, False])
def test_transformer_lens_s_switches_let_names_filter_none_and_functions_reach_them(two, split):
    """TransformerLens's names_filter None and its functions of names reach the input hooks once their switch is on
    (set_use_split_qkv_input, set_use_attn_in, set_use_hook_mlp_in); npgpt refused the switches ('drop the call'), and
    without them a TransformerLens hook fwd_hooks=[(lambda n: n.endswith('q_input'), fn)] never ran, silently. The
    switches are TransformerLens's now: off by default (None and functions do not reach them, as there), on they do,
    and the cache and the edited logits equal TransformerLens's with the same switches on."""
    import torch

    model = GPT2(TWO, two[0].params)  # its own switches: the fixture's model stays as made
    br = two[1]
    tl_flags(br, split)
    ids, mask = batch(TWO)
    real = mask.astype(bool)
    on = [n for n in INPUTS if n == "hook_mlp_in" or split != (n == "hook_attn_in")]
    fn_filter = lambda n: n.endswith(tuple(on)) or n.endswith("hook_resid_pre")  # noqa: E731
    q_or_attn_in = "hook_q_input" if split else "hook_attn_in"
    edit = [(lambda n: n.endswith(q_or_attn_in), zero_head_1)]
    plain = model.run_with_hooks(ids, attention_mask=mask)
    np.testing.assert_array_equal(model.run_with_hooks(ids, fwd_hooks=edit, attention_mask=mask), plain)  # off
    (model.set_use_split_qkv_input if split else model.set_use_attn_in)(True)
    model.set_use_hook_mlp_in(True)
    _, tl_cache = tl_run(br, ids, mask)
    for names_filter in (None, fn_filter):
        _, cache = model.run_with_cache(ids, names_filter=names_filter, attention_mask=mask)
        want = [n for n in hooks.hook_names(TWO.n_layer, inputs=True) if n.endswith(tuple(on))]
        assert set(want) <= set(cache) and not any(n.endswith(INPUTS) and n not in want for n in cache), names_filter
        for name in want:
            np.testing.assert_allclose(cache[name][real], tl_cache[name].numpy()[real], atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        theirs = br.run_with_hooks(torch.tensor(ids), attention_mask=torch.tensor(mask), fwd_hooks=edit).numpy()
    ours = model.run_with_hooks(ids, fwd_hooks=edit, attention_mask=mask)
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=1e-4)
    assert np.abs(ours - plain)[real].max() > 1e-2  # it did something
    model.set_use_hook_mlp_in(False)
    (model.set_use_split_qkv_input if split else model.set_use_attn_in)(False)
    _, cache = model.run_with_cache(ids, attention_mask=mask)
    assert set(cache) == set(hooks.hook_names(TWO.n_layer))
    with pytest.raises(NpgptError, match=r"set_use_attn_in takes True or False, got 'yes'"):
        model.set_use_attn_in("yes")
