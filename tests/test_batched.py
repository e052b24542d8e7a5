"""Batched float32 steps on MLAS's packed sgemm (npgpt/batched.py): same numbers, built only when it pays."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
from conftest import child_json, hf_logits, random_params

from npgpt import batched
from npgpt.api import GPT2
from npgpt.batched import BatchedMatrix, batched_layout
from npgpt.config import GPT2Config
from npgpt.formats import hf
from npgpt.generate import decode_step, prefill
from npgpt.hooks import run_with_cache
from npgpt.hugepages import _minus
from npgpt.params import flatten

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def shared_pool(monkeypatch):
    """As under npgpt's entry points, which share one ONNX Runtime pool (process-wide, so not in the
    test process: here each session keeps its own, the numbers are the same);
    test_entry_points_build_it_on_one_pool_and_the_library_alone_does_not checks the real thing."""
    monkeypatch.setattr(batched, "pool_shared", lambda: True)


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
    laid_out = GPT2(ODD, random_params(ODD)).params
    mapped = np.lib.format.open_memmap(tmp_path / "w.npy", mode="w+", dtype=np.float32, shape=(48, 144))
    blocks = [dict(b) for b in laid_out["blocks"]]
    blocks[0] = {**blocks[0], "mlp": {**blocks[0]["mlp"], "c_fc": {**blocks[0]["mlp"]["c_fc"], "w": mapped}}}
    assert batched_layout({**laid_out, "blocks": blocks}) is None  # the caller writes it in place
    assert mapped.flags.writeable

    available = batched._available_bytes
    monkeypatch.setattr(batched, "_available_bytes", lambda: 1e3)
    assert batched_layout(GPT2(ODD, random_params(ODD)).params) is None  # not twice the weights' size
    monkeypatch.setattr(batched, "_available_bytes", available)

    monkeypatch.setattr(batched, "pool_shared", lambda: False)  # no entry point shared ONNX Runtime's pool
    assert batched_layout(GPT2(ODD, random_params(ODD)).params) is None
    monkeypatch.setattr(batched, "pool_shared", lambda: True)
    assert batched_layout(GPT2(ODD, random_params(ODD)).params) is not None


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx", "a kernel"])
def test_without_onnx_runtime_batched_steps_stay_on_numpy(monkeypatch, missing):
    """onnxruntime or onnx not installed (onnxruntime does not depend on onnx), or an ONNX Runtime
    that cannot build the session: batched decoding runs as before, with the same tokens, and no
    weight is left read-only."""
    import sys

    import onnxruntime

    if missing == "a kernel":

        def refuse(*args, **kwargs):
            raise RuntimeError("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation")

        monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    else:
        monkeypatch.setitem(sys.modules, missing, None)  # import fails
    params = random_params(ODD, seed=8)
    model = GPT2(ODD, params)
    tokens, logits = _decode(model, [[1, 2], [3, 4]], 3)
    assert model.engine._batched[1] is None
    assert model.params["blocks"][0]["mlp"]["c_fc"]["w"].flags.writeable
    monkeypatch.undo()
    ref_tokens, ref_logits = _decode(GPT2(ODD, random_params(ODD, seed=8)), [[1, 2], [3, 4]], 3)
    np.testing.assert_array_equal(tokens, ref_tokens)
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-4)


def test_only_decode_steps_of_several_sequences_run_on_it():
    """Once built, a prompt (several tokens) and scoring still run on NumPy's arrays, bit for bit as a
    model that never built it; a decode step of several sequences runs on the packed copy, and
    hooked runs (run_with_cache) pick the same weights as GPT2.logits for the same ids."""
    params = random_params(ODD, seed=5)
    model, plain = GPT2(ODD, params), GPT2(ODD, params)
    _decode(model, [[1, 2], [3, 4]], 1)
    c_fc = model.engine._batched[1]["blocks"][0]["mlp"]["c_fc"]["w"]
    calls = []

    class Counting:  # the session, counting its runs
        def __init__(self, inner):
            self.inner = inner

        def run(self, *args, **kwargs):
            calls.append(args)
            return self.inner.run(*args, **kwargs)

    c_fc._session = Counting(c_fc._session)
    prompt = np.random.default_rng(1).integers(0, ODD.n_vocab, (1, 9))
    batch = np.random.default_rng(2).integers(0, ODD.n_vocab, (3, 7))
    np.testing.assert_array_equal(model.logits(prompt), plain.logits(prompt))
    np.testing.assert_array_equal(model.logits(batch), plain.logits(batch))
    assert calls == [] and plain.engine._batched is None
    step = np.array([[5], [6], [7]])  # three sequences, one token each: a decode step's shape
    logits = model.logits(step)
    assert len(calls) == 1
    np.testing.assert_array_equal(run_with_cache(model, step)[0], logits)
    np.testing.assert_allclose(logits, plain.logits(step), rtol=0, atol=1e-4)


def test_a_replaced_array_builds_it_again():
    """The packed copy holds the arrays it was built on: replacing one in params (not writing into
    it, which is refused) makes the next batched step build it again, so no step uses the old one."""
    params = random_params(ODD, seed=6)
    model = GPT2(ODD, params)
    rows = [[1, 2], [3, 4]]
    _decode(model, rows, 1)
    first = model.engine._batched[1]
    new = random_params(ODD, seed=7)
    model.params["blocks"][1]["mlp"]["c_fc"]["w"] = new["blocks"][1]["mlp"]["c_fc"]["w"]
    model.params["blocks"][0]["ln_2"]["b"] = new["blocks"][0]["ln_2"]["b"]  # not a matrix: counts too
    tokens, logits = _decode(model, rows, 3)
    assert model.engine._batched[1] is not first
    fresh = GPT2(ODD, {**params, "blocks": [dict(b) for b in params["blocks"]]})
    fresh.params["blocks"][1]["mlp"]["c_fc"]["w"] = new["blocks"][1]["mlp"]["c_fc"]["w"]
    fresh.params["blocks"][0]["ln_2"]["b"] = new["blocks"][0]["ln_2"]["b"]
    fresh_tokens, fresh_logits = _decode(fresh, rows, 3)
    np.testing.assert_array_equal(tokens, fresh_tokens)
    np.testing.assert_allclose(logits, fresh_logits, rtol=0, atol=1e-5)


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


ENTRY_CHILD = r"""
import json, os, sys
import npgpt
from npgpt.cli.options import load_model
from npgpt.generate import decode_step, prefill
from npgpt.onnx_session import pool_shared

# The bundled model: 4 layers, 17 matrices, a session each. The CLI's loading, as `npgpt generate` runs it.
model = load_model(None) if sys.argv[1] == "entry point" else npgpt.load()
before = len(os.listdir("/proc/self/task"))
logits, state = prefill(model.engine, [[1, 2], [3, 4], [5, 6]], 8)
for _ in range(3):
    logits = decode_step(model.engine, state, logits.argmax(-1))
built = model.engine._batched[1] is not None
out = {"built": built, "pool_shared": pool_shared(), "new_threads": len(os.listdir("/proc/self/task")) - before}
print(json.dumps(out))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="counts threads in /proc")
def test_entry_points_build_it_on_one_pool_and_the_library_alone_does_not():
    """~50 sessions with a pool each would hold ~50 threads per core (on 64 cores, thousands): the
    copy is built only where an entry point shared ONNX Runtime's one pool, whose size does not
    grow with the matrices; npgpt.load alone leaves batched steps on NumPy."""
    entry = child_json(ENTRY_CHILD, "entry point", threads=8)
    assert entry["pool_shared"] and entry["built"] and entry["new_threads"] <= 8  # the pool's 7 workers at most
    library = child_json(ENTRY_CHILD, "library", threads=8)
    assert library == {"built": False, "pool_shared": False, "new_threads": 0}


def test_dtype_auto_measures_float32_even_without_onnx(monkeypatch, tmp_path):
    """--dtype auto at several rows measures float32 on its batched form where it can be built, and
    on NumPy's arrays where it cannot (here: onnx missing): float32 is never dropped from the choice."""
    import sys

    from npgpt.autotune import choose_dtype
    from npgpt.backends import get_backend

    monkeypatch.setitem(sys.modules, "onnx", None)
    choice = choose_dtype(get_backend("numpy"), ODD, rows=4, cache=tmp_path / "autotune.json")
    assert "float32" in choice.seconds and "int8" in choice.skipped and choice.dtype == "float32"


def test_onnx_runtime_never_gets_more_threads_than_cores(monkeypatch):
    """OMP_NUM_THREADS above the core count (a common copy-paste from bigger machines) sizes ONNX
    Runtime's pools at the cores: its spinning threads on 2 cores made batched serving 5x slower."""
    import os

    from npgpt.onnx_session import _threads

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.setenv("OMP_NUM_THREADS", "4096")
    assert _threads() == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _threads() == 1
    for unset in ("", "0", "auto"):
        monkeypatch.setenv("OMP_NUM_THREADS", unset)
        assert _threads() == 0  # ONNX Runtime's own default: the cores
