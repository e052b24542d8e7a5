"""Batched float32 steps on MLAS's packed sgemm (npgpt/batched.py): same numbers, built only when it pays."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import hf_logits, random_params

from npgpt import batched
from npgpt.api import GPT2
from npgpt.batched import BatchedMatrix, batched_layout
from npgpt.config import GPT2Config
from npgpt.formats import hf
from npgpt.generate import decode_step, prefill
from npgpt.hugepages import _minus
from npgpt.params import flatten

pytest.importorskip("onnxruntime")

ODD = GPT2Config(n_vocab=101, n_ctx=24, n_embd=48, n_head=3, n_layer=2)  # odd heads, odd vocabulary
UNTIED = dataclasses.replace(ODD, tie_word_embeddings=False, activation_function="relu", n_inner=80)


def _decode(model: GPT2, rows: list[list[int]], steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy decode ``steps`` tokens for every row together; (token ids [B, steps], last logits [B, V])."""
    logits, state = prefill(model.engine, rows, max(map(len, rows)) + steps + 1)
    out = []
    for _ in range(steps):
        tokens = logits.argmax(-1)
        out.append(tokens)
        logits = decode_step(model.engine, state, tokens)
    return np.stack(out, 1), logits


@pytest.mark.parametrize("config", [ODD, UNTIED], ids=["odd", "untied-relu"])
def test_batched_decoding_matches_hugging_face_and_one_row_at_a_time(config, tmp_path):
    """Four sequences decoded together run their products on the packed copy; their logits equal
    Hugging Face's full forward pass and the same sequences decoded one at a time (NumPy's path)."""
    from transformers import GPT2LMHeadModel

    params = random_params(config, seed=3)
    ref = GPT2LMHeadModel.from_pretrained(hf.save(tmp_path / "hf", config, params), attn_implementation="eager").eval()
    rng = np.random.default_rng(0)
    rows = rng.integers(0, config.n_vocab, (4, 5)).tolist()

    model = GPT2(config, params)
    tokens, logits = _decode(model, rows, 6)
    together = model.engine._batched[1]  # built at the first step of several sequences
    assert isinstance(together["blocks"][0]["mlp"]["c_fc"]["w"], BatchedMatrix)
    head = "wte" if config.tie_word_embeddings else "lm_head"
    assert isinstance(together[head], BatchedMatrix) and together[head].shape == params[head].shape

    full = np.concatenate([np.array(rows), tokens], 1)  # the last logits are for this whole sequence
    theirs = hf_logits(ref, full)[:, -1]
    assert np.abs(logits - theirs).max() <= 1e-4 * max(1.0, np.abs(theirs).max())
    for i, row in enumerate(rows):  # one at a time: the NumPy path, no packed copy
        alone = GPT2(config, params)
        one_tokens, one_logits = _decode(alone, [row], 6)
        assert alone.engine._batched is None
        np.testing.assert_array_equal(one_tokens[0], tokens[i])
        np.testing.assert_allclose(one_logits[0], logits[i], rtol=0, atol=1e-4)


def test_one_sequence_and_scoring_a_batch_never_build_the_copy():
    """The packed copy doubles the weights' memory: one sequence, or scoring a batch of texts (many
    tokens per row, not a decode step), runs on NumPy's arrays alone and builds nothing."""
    model = GPT2(ODD, random_params(ODD))
    _decode(model, [[1, 2, 3]], 3)
    model.logits(np.ones((3, 10), dtype=np.int64))
    assert model.engine._batched is None


def test_products_pick_the_kernel_by_rows_and_equal_numpys(monkeypatch):
    """1 row and more than MAX_ROWS rows go to NumPy; the rows between to MLAS; all agree."""
    rng = np.random.default_rng(0)
    for w in (
        rng.standard_normal((40, 72), dtype=np.float32),
        np.ascontiguousarray(rng.standard_normal((72, 40), dtype=np.float32).T),
    ):
        m = BatchedMatrix(w)
        monkeypatch.setattr(batched, "MAX_ROWS", 6)
        for rows, on_mlas in ((1, False), (2, True), (6, True), (7, False)):
            x = rng.standard_normal((rows, 40), dtype=np.float32)
            np.testing.assert_allclose(x @ m, x @ w, rtol=1e-5, atol=1e-5)
            assert _used_mlas(m, x) is on_mlas, rows
        # The table orientation (a tied head's wte) indexes the same array and never multiplies on MLAS.
        np.testing.assert_array_equal(m.T[[3, 0], :], w.T[[3, 0], :])
        assert not _used_mlas(m.T.T.T, rng.standard_normal((2, 72), dtype=np.float32))
        assert m.T.T.shape == w.shape and np.asarray(m) is w


def _used_mlas(m: BatchedMatrix, x: np.ndarray) -> bool:
    """Whether ``x @ m`` ran the session: a session that raises shows it."""

    class Refuse:
        def run(self, *args, **kwargs):
            raise RuntimeError("session used")

    saved, m._session = m._session, Refuse()
    try:
        x @ m
        return False
    except RuntimeError:
        return True
    finally:
        m._session = saved


def test_weights_become_read_only_so_an_edit_cannot_leave_the_copy_stale():
    """After the copy is built an in-place write to a weight fails loudly, instead of batched steps
    quietly computing with the old values while single-sequence steps use the new ones."""
    params = random_params(ODD)
    model = GPT2(ODD, params)
    _decode(model, [[1, 2], [3, 4]], 1)
    w = model.params["blocks"][0]["mlp"]["c_fc"]["w"]
    with pytest.raises(ValueError, match="read-only"):
        w[0, 0] = 1.0


def test_no_copy_over_a_writable_map_without_memory_or_without_onnxruntime(tmp_path, monkeypatch):
    """None (NumPy's path, unchanged) where the copy would be wrong or could not be afforded."""
    params = random_params(ODD)
    laid_out = GPT2(ODD, params).params
    assert batched_layout(laid_out) is not None

    mapped = np.lib.format.open_memmap(tmp_path / "w.npy", mode="w+", dtype=np.float32, shape=(48, 144))
    blocks = [dict(b) for b in laid_out["blocks"]]
    blocks[0] = {**blocks[0], "mlp": {**blocks[0]["mlp"], "c_fc": {**blocks[0]["mlp"]["c_fc"], "w": mapped}}}
    assert batched_layout({**laid_out, "blocks": blocks}) is None  # the caller writes it in place

    monkeypatch.setattr(batched, "_available_bytes", lambda: 1e3)
    assert batched_layout(random_params(ODD)) is None  # not twice the weights' size available
    monkeypatch.undo()

    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails: npgpt[int8] not installed
    model = GPT2(ODD, random_params(ODD))
    tokens, _ = _decode(model, [[1, 2], [3, 4]], 2)
    assert model.engine._batched[1] is None and tokens.shape == (2, 2)


def test_once_built_one_prompt_runs_on_it_too_with_the_same_numbers():
    """After a batched step, a single sequence's prompt (several rows) runs on the packed copy as well;
    its logits equal those of a model that never built it."""
    params = random_params(ODD, seed=5)
    model, plain = GPT2(ODD, params), GPT2(ODD, params)
    _decode(model, [[1, 2], [3, 4]], 1)
    ids = np.random.default_rng(1).integers(0, ODD.n_vocab, (1, 9))
    c_fc = model.engine._batched[1]["blocks"][0]["mlp"]["c_fc"]["w"]
    calls = []

    class Counting:  # the session, counting its runs
        def __init__(self, inner):
            self.inner = inner

        def run(self, *args, **kwargs):
            calls.append(args)
            return self.inner.run(*args, **kwargs)

    c_fc._session = Counting(c_fc._session)
    np.testing.assert_allclose(model.logits(ids), plain.logits(ids), rtol=0, atol=1e-4)
    assert len(calls) == 1 and plain.engine._batched is None


def test_int8_weights_keep_their_own_kernel():
    model = GPT2(ODD, random_params(ODD), dtype="int8")
    _decode(model, [[1, 2], [3, 4]], 2)
    assert model.engine._batched[1] is None


def test_only_memory_mapped_after_the_snapshot_is_collapsed():
    """The ranges handed to madvise: the parts of today's mappings outside the snapshot's, where the
    kernel merged new memory into an older neighbour as well."""
    now = [(0, 100), (200, 300)]
    assert _minus(now, [(10, 20), (250, 400), (0, 5)]) == [(5, 10), (20, 100), (200, 250)]
    assert _minus(now, []) == now and _minus(now, now) == []


def test_matrices_are_the_ones_the_model_multiplies():
    """The wrapped weights are exactly the products' matrices (the hooks' list of them), no others."""
    params = GPT2(UNTIED, random_params(UNTIED)).params
    out = batched_layout(params)
    wrapped = {name for name, w in flatten(out).items() if isinstance(w, BatchedMatrix)}
    expected = {name for name, w in flatten(params).items() if name.endswith(".w") or name == "lm_head"}
    assert wrapped == expected and len(expected) == 4 * UNTIED.n_layer + 1
