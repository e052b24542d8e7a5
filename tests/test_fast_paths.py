"""The speed-ups change no result: attention in query blocks, NumPy's weight layout, released pages."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import hf_logits, random_params

from npgpt import model as M
from npgpt.api import GPT2, load
from npgpt.backends import _numpy_layout
from npgpt.config import GPT2Config
from npgpt.files import is_mapped
from npgpt.formats import hf, npgpt_format
from npgpt.generate import left_pad

LINEARS = (("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_proj"))
# Longer context than the shared test configs, so prompts span several query blocks.
LONG = GPT2Config(n_ctx=2 * M.QUERY_BLOCK + 64, n_embd=32, n_head=2, n_layer=2)


@pytest.fixture(scope="module")
def long_pair(tmp_path_factory: pytest.TempPathFactory):
    from transformers import GPT2LMHeadModel

    params = random_params(LONG, seed=7)
    path = hf.save(tmp_path_factory.mktemp("long") / "hf", LONG, params)
    return GPT2(LONG, params), GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()


def test_query_blocks_match_hugging_face_on_padded_batch(long_pair):
    model, ref = long_pair
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, LONG.n_vocab, n).tolist() for n in (LONG.n_ctx, M.QUERY_BLOCK + 5, 9)]
    ids, n_pad = left_pad(rows)
    mask = (np.arange(ids.shape[1])[None, :] >= n_pad[:, None]).astype(np.int64)
    ours, theirs = model.logits(ids, attention_mask=mask), hf_logits(ref, ids, mask)
    assert np.abs(ours[mask.astype(bool)] - theirs[mask.astype(bool)]).max() <= 1e-4


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_blocks_over_a_cache_equal_one_full_pass(long_pair, backend):
    """A second long chunk attends over cached keys (NumPy: the filled prefix; JAX: the whole buffer)."""
    if backend == "jax":
        pytest.importorskip("jax")
    base, _ = long_pair
    model = GPT2(LONG, base.params, backend=backend)
    be = model.backend
    ids = np.random.default_rng(1).integers(0, LONG.n_vocab, (2, LONG.n_ctx))
    full, _ = M.gpt2(be.asarray(ids), model.params, LONG)
    half = LONG.n_ctx // 2
    cache = model.engine.new_cache(2, LONG.n_ctx)
    first, cache = M.gpt2(be.asarray(ids[:, :half]), model.params, LONG, cache=cache, start=0)
    rest, cache = M.gpt2(be.asarray(ids[:, half:]), model.params, LONG, cache=cache, start=half)
    chunks = np.concatenate([be.to_numpy(first), be.to_numpy(rest)], axis=1)
    assert np.abs(chunks - be.to_numpy(full)).max() <= 1e-4


def _mapped_rss(path: str) -> int:
    """Bytes of ``path``'s memory mapping resident in this process (Linux)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            if "-" in line.split(" ", 1)[0]:  # a mapping's header line
                inside = line.rstrip().endswith(path)
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total


def test_numpy_layout_same_values_and_no_resident_second_copy(tmp_path):
    config = GPT2Config(n_vocab=4096, n_ctx=64, n_embd=64, n_head=2, n_layer=2)
    params = random_params(config, seed=3)
    path = npgpt_format.save(tmp_path / "m.safetensors", config, params)
    model = load(path)

    p = model.params
    assert p["wte"].flags.f_contiguous and p["blocks"][0]["mlp"]["c_proj"]["w"].flags.f_contiguous
    assert p["blocks"][0]["mlp"]["c_fc"]["w"].flags.c_contiguous  # wider than tall: as loaded
    # Every matrix lives in NumPy's own memory (huge pages), none in the checkpoint's mapping.
    matrices = [p["wte"]] + [b[g][n]["w"] for b in p["blocks"] for g, n in LINEARS]
    assert not any(is_mapped(w) for w in matrices)
    assert is_mapped(p["wpe"])  # only gathered: stays in the file
    for b, ref in zip(p["blocks"], params["blocks"], strict=True):
        for g, n in LINEARS:
            np.testing.assert_array_equal(b[g][n]["w"], ref[g][n]["w"])
    np.testing.assert_array_equal(p["wte"], params["wte"])
    ids = np.random.default_rng(0).integers(0, config.n_vocab, (2, 24))
    np.testing.assert_allclose(model.logits(ids), M.gpt2(ids, params, config)[0], atol=1e-5)
    if sys.platform == "linux":
        # The head's transposed copy was made from the mapped file; those pages were handed back.
        assert _mapped_rss(str(path)) <= path.stat().st_size - params["wte"].nbytes // 2


def test_numpy_layout_keeps_matrices_already_in_memory():
    """Only a mapped checkpoint is copied: a matrix converted at load (already NumPy's) is kept as is."""
    params = random_params(GPT2Config(n_vocab=64, n_ctx=16, n_embd=32, n_head=2, n_layer=1), seed=4)
    laid = _numpy_layout(params)
    for g, n in LINEARS[:3]:
        assert laid["blocks"][0][g][n]["w"] is params["blocks"][0][g][n]["w"]
    np.testing.assert_array_equal(laid["wte"], params["wte"])


def test_numpy_layout_keeps_a_writable_mapping_in_place(tmp_path):
    """A matrix handed in as a writable memmap ("r+") stays that array: the caller's writes reach the model."""
    config = GPT2Config(n_vocab=64, n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    params = random_params(config, seed=5)
    w = np.lib.format.open_memmap(tmp_path / "c_fc.npy", mode="w+", dtype=np.float32, shape=(32, 128))
    w[:] = params["blocks"][0]["mlp"]["c_fc"]["w"]
    params["blocks"][0]["mlp"]["c_fc"]["w"] = w
    model = GPT2(config, params)
    assert np.shares_memory(model.params["blocks"][0]["mlp"]["c_fc"]["w"], w)
    before = model.logits([[1, 2, 3]])
    w[:] = 0.0
    assert not np.allclose(model.logits([[1, 2, 3]]), before)
