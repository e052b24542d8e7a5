"""Gradients: ``jax.grad`` of npgpt's loss equals PyTorch autograd through Hugging Face's GPT-2.

Same weights on both sides (written with ``formats.hf.save``, read by ``from_pretrained``), the
same ids, and HF's own loss (``GPT2LMHeadModel(ids, labels=ids).loss``): every parameter's
gradient must agree, including ``wte``, which collects the tied output head's gradient too.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402

from npgpt.config import GPT2Config  # noqa: E402
from npgpt.formats import hf  # noqa: E402
from npgpt.params import flatten, init_params  # noqa: E402
from npgpt.train.loss import loss  # noqa: E402
from npgpt.train.step import accumulated_grads  # noqa: E402


def perturbed_params(config: GPT2Config, seed: int) -> dict:
    """Random weights with non-trivial gains and biases (init has ones and zeros), so their
    gradients are exercised as much as the matrices'."""
    params = init_params(config, seed)
    rng = np.random.default_rng(seed + 1)
    for name, value in flatten(params).items():
        if name.endswith((".g", ".b")):
            value += rng.standard_normal(value.shape, dtype=np.float32) * np.float32(0.1)
    return params


def hf_loss_and_grads(config: GPT2Config, params: dict, ids: np.ndarray, tmp_path) -> tuple[float, dict]:
    """HF's loss and the gradient of every parameter, by npgpt name."""
    hf.save(tmp_path, config, params)
    model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="eager")
    model.eval()  # no dropout
    # A tied head: HF's lm_head *is* wte, so wte's .grad below includes the head's share.
    assert (model.lm_head.weight is model.transformer.wte.weight) == config.tie_word_embeddings
    ids_t = torch.tensor(ids, dtype=torch.long)
    out = model(ids_t, labels=ids_t)
    out.loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        ours = hf.hf_to_npgpt_name(name)
        assert ours is not None, name
        grads[ours] = p.grad.numpy()
    return out.loss.item(), grads


def npgpt_loss_and_grads(params: dict, ids: np.ndarray, config: GPT2Config) -> tuple[float, dict]:
    # What training differentiates (float32 products on a GPU too); one compile beats op-by-op dispatch.
    grad_fn = jax.jit(accumulated_grads, static_argnums=2)
    value, grads = grad_fn(jax.tree.map(jnp.asarray, params), jnp.asarray(ids[None], jnp.int32), config)
    return float(value), {k: np.asarray(v) for k, v in flatten(grads).items()}


def check_grads(config: GPT2Config, batch: int, seq: int, tmp_path, rtol=1e-4, atol=1e-6) -> None:
    params = perturbed_params(config, seed=config.n_layer)
    ids = np.random.default_rng(0).integers(0, config.n_vocab, (batch, seq))
    ref_loss, ref = hf_loss_and_grads(config, params, ids, tmp_path)
    our_loss, ours = npgpt_loss_and_grads(params, ids, config)
    assert our_loss == pytest.approx(ref_loss, rel=1e-5)
    assert ours.keys() == ref.keys()  # every parameter, nothing extra
    for name in ref:
        np.testing.assert_allclose(ours[name], ref[name], rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize(
    "config",
    [
        GPT2Config(n_vocab=97, n_ctx=16, n_embd=32, n_head=4, n_layer=2),  # tiny
        GPT2Config(n_vocab=101, n_ctx=24, n_embd=48, n_head=3, n_layer=5),  # odd head count/depth
        GPT2Config(
            n_vocab=101,
            n_ctx=24,
            n_embd=48,
            n_head=3,
            n_layer=3,
            n_inner=40,
            activation_function="silu",
            layer_norm_epsilon=1e-3,
            scale_attn_by_inverse_layer_idx=True,
            tie_word_embeddings=False,
        ),
    ],
    ids=["tiny", "odd", "untied-silu-n_inner"],
)
def test_grads_match_hf(config, tmp_path):
    check_grads(config, batch=2, seq=12, tmp_path=tmp_path)


def test_last_position_is_ignored():
    """Like HF, the loss of a window ignores the last token's logits: changing what would follow
    it changes nothing, and the unused position embedding gets no gradient."""
    config = GPT2Config(n_vocab=50, n_ctx=8, n_embd=16, n_head=2, n_layer=1)
    params = jax.tree.map(jnp.asarray, init_params(config, 0))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 50, (2, 8)), jnp.int32)
    grads = jax.jit(jax.grad(loss), static_argnums=2)(params, ids, config)
    assert not np.any(np.asarray(grads["wpe"][7]))  # inputs are ids[:, :7]: positions 0..6
    assert np.any(np.asarray(grads["wpe"][6]))


@pytest.mark.slow
def test_grads_match_hf_124m(tmp_path):
    """GPT-2 small's real shape (random weights): the full 50257-token head and 12 layers."""
    check_grads(GPT2Config(), batch=1, seq=16, tmp_path=tmp_path)


def test_training_products_are_float32_not_tensorfloat32():
    """On the GPU machine XLA's default float32 product (TensorFloat-32) put these gradients ~1e-4
    off HF's: training's gradient and evaluation programs ask for float32 in every product."""
    from npgpt.train.step import make_eval_loss

    config = GPT2Config(n_vocab=97, n_ctx=16, n_embd=32, n_head=4, n_layer=2)
    params = jax.tree.map(jnp.asarray, init_params(config))
    ids = jnp.zeros((1, 2, 9), jnp.int32)
    programs = [
        jax.jit(accumulated_grads, static_argnums=2).lower(params, ids, config).as_text(),
        make_eval_loss(config).lower(params, ids[0]).as_text(),
    ]
    for text in programs:
        products = [line for line in text.splitlines() if "dot_general" in line]
        assert products and all("precision = [HIGHEST, HIGHEST]" in line for line in products)
