"""npgpt/model.py: logits equal Hugging Face's, in float32, on NumPy, JAX and PyTorch arrays."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import hf_logits

from npgpt import model as M
from npgpt.backends import get_backend
from npgpt.cache import init_cache
from npgpt.generate import left_pad

PROMPTS = [[464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13], [15496, 995], [40, 1101, 257, 1332, 286]]


def padded_batch(n_vocab: int) -> tuple[np.ndarray, np.ndarray]:
    ids, n_pad = left_pad([[t % n_vocab for t in p] for p in PROMPTS])
    mask = (np.arange(ids.shape[1])[None, :] >= n_pad[:, None]).astype(np.int64)
    return ids, mask


@pytest.mark.parametrize("name", ["tiny", "odd", pytest.param("124M", marks=pytest.mark.slow)])
def test_logits_match_hugging_face_on_left_padded_batch(pair, name):
    model, ref = pair(name)
    ids, mask = padded_batch(model.config.n_vocab)
    ours = model.logits(ids, attention_mask=mask)
    theirs = hf_logits(ref, ids, mask)
    assert ours.dtype == np.float32 and ours.shape == (3, ids.shape[1], model.config.n_vocab)
    real = mask.astype(bool)  # padding positions have no meaning in either implementation
    assert np.abs(ours[real] - theirs[real]).max() <= 1e-4


def test_padded_row_equals_row_alone(pair):
    model, _ = pair("odd")
    ids, mask = padded_batch(model.config.n_vocab)
    batch = model.logits(ids, attention_mask=mask)
    for b, prompt in enumerate(PROMPTS):
        alone = model.logits([prompt])[0]
        assert np.abs(batch[b, -len(prompt) :] - alone).max() <= 1e-4


def test_float32_throughout(pair):
    """No silent float64: every intermediate of the attention and the logits stay float32."""
    model, _ = pair("tiny")
    p = model.params
    x = np.random.default_rng(0).standard_normal((2, 5, 32)).astype(np.float32)
    assert M.gelu(x).dtype == np.float32
    assert M.softmax(x).dtype == np.float32
    assert M.layer_norm(x, **p["blocks"][0]["ln_1"]).dtype == np.float32
    q = x.reshape(2, 5, 2, 16).transpose(0, 2, 1, 3)
    mask = M.attention_mask(np.ones((2, 5), bool), 0, 5)
    assert mask.dtype == np.float32
    scores = q @ np.swapaxes(q, -1, -2) / np.sqrt(np.float32(16))
    assert scores.dtype == np.float32
    out, _ = M.mha(x, **p["blocks"][0]["attn"], n_head=2, mask=mask, kv=None, start=0, scale=0.25)
    assert out.dtype == np.float32
    logits, _ = M.gpt2(np.array([[1, 2, 3]]), p, model.config)
    assert logits.dtype == np.float32


def test_cache_in_chunks_equals_full_pass(pair):
    model, _ = pair("odd")
    ids = np.array([PROMPTS[0]])
    full, _ = M.gpt2(ids, model.params, model.config)
    cache = init_cache(model.config, 1, 16, model.params["wte"])
    first, cache = M.gpt2(ids[:, :6], model.params, model.config, cache=cache, start=0)
    rest, cache = M.gpt2(ids[:, 6:], model.params, model.config, cache=cache, start=6)
    assert np.abs(np.concatenate([first, rest], axis=1) - full).max() <= 1e-5


def test_attention_mask_masks_padding_and_future():
    valid = np.array([[False, True, True], [True, True, True]])
    mask = M.attention_mask(valid, 0, 3)
    assert mask.shape == (2, 1, 3, 3)
    allowed = mask == 0
    assert not allowed[0, 0, :, 0].any()  # the pad slot is never attended
    assert allowed[1, 0].tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    per_row = M.attention_mask(valid, np.array([1, 2]), 1)  # rows at different slots
    assert (per_row[:, 0, 0] == 0).tolist() == [[False, True, False], [True, True, True]]


def test_same_file_runs_on_jax(pair):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    model, ref = pair("odd")
    ids, mask = padded_batch(model.config.n_vocab)
    jparams = get_backend("jax").put_params(model.params)
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    additive = M.attention_mask(mask.astype(bool), 0, ids.shape[1])
    with jax.default_matmul_precision("highest"):  # on a GPU XLA's default float32 product is TensorFloat-32
        logits, _ = M.gpt2(
            jnp.asarray(ids), jparams, model.config, positions=jnp.asarray(positions), mask=jnp.asarray(additive)
        )
    assert logits.dtype == jnp.float32
    real = mask.astype(bool)
    assert np.abs(np.asarray(logits)[real] - hf_logits(ref, ids, mask)[real]).max() <= 1e-4


def test_same_file_runs_on_torch(pair):
    torch = pytest.importorskip("torch")
    model, ref = pair("odd")
    ids = np.array([PROMPTS[2]])
    tparams = get_backend("torch").put_params(model.params)
    on = tparams["wpe"].device  # a GPU where PyTorch sees one: the positions and mask are made there too
    logits, _ = M.gpt2(torch.from_numpy(ids).to(on), tparams, model.config)
    assert logits.dtype == torch.float32 and logits.device == on
    assert np.abs(logits.cpu().numpy() - hf_logits(ref, ids)).max() <= 1e-4


def test_the_arrays_the_model_makes_go_where_the_weights_are():
    """Positions and the default mask are made on the weights' device: on a GPU, a torch model whose
    arange landed on the CPU failed ("Expected all tensors to be on the same device"). PyTorch's
    "meta" device stands in for the GPU: a tensor made on the CPU would meet the weights there too."""
    torch = pytest.importorskip("torch")
    from npgpt.config import GPT2Config
    from npgpt.params import flatten, init_params, unflatten

    config = GPT2Config(n_vocab=64, n_ctx=16, n_embd=32, n_head=2, n_layer=2)
    flat = {name: torch.from_numpy(a).to("meta") for name, a in flatten(init_params(config)).items()}
    params = unflatten(flat, config)
    ids = torch.zeros((2, 5), dtype=torch.long, device="meta")
    logits, _ = M.gpt2(ids, params, config)
    assert logits.shape == (2, 5, 64) and logits.device.type == "meta"
