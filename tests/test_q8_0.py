"""8-bit weights on the NumPy backend (npgpt/q8_0.py): llama.cpp's Q8_0 blocks, ONNX Runtime's kernel.

The scheme is checked against the ``gguf`` package's own Q8_0 quantizer (llama.cpp's reference in
Python) and against a Q8_0 GGUF written by llama.cpp's converter: loading it with ``dtype="int8"``
gives back the file's codes and scales bit for bit. Model-level checks (logits bound, cache path,
API, server, CLI) run for both int8 backends in tests/test_int8.py.
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import child_json

from npgpt.api import GPT2
from npgpt.config import GPT2Config
from npgpt.errors import NpgptError
from npgpt.params import init_params

pytest.importorskip("onnxruntime")
from npgpt.q8_0 import BLOCK, ZERO, Q8Matrix, quantize

FIXTURE = Path(__file__).parent / "fixtures" / "gguf_tiny.tar.xz"


def test_codes_and_scales_are_llama_cpps_q8_0():
    """Same codes as gguf.quants' Q8_0 (llama.cpp's quantize_row_q8_0 in NumPy), scales before its float16."""
    gguf = pytest.importorskip("gguf")
    from gguf import quants

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((7, 96), dtype=np.float32)
    rows[2, 32:64] = 0.0  # a block of zeros: scale 0, codes 0
    rows[3, :4] = [0.5, -0.5, 1.5, -127.0]  # ties: half away from zero, as C's roundf
    codes, scales = quantize(rows)
    assert codes.shape == (7, 3, BLOCK) and codes.dtype == np.uint8 and scales.shape == (7, 3)
    raw = quants.quantize(rows, gguf.GGMLQuantizationType.Q8_0).reshape(7, 3, 34)  # per block: f16 d, 32 x int8
    theirs_d = raw[..., :2].copy().view(np.float16)[..., 0]
    theirs_q = raw[..., 2:].copy().view(np.int8)
    np.testing.assert_array_equal(codes.astype(np.int16) - ZERO, theirs_q)
    np.testing.assert_array_equal(scales.astype(np.float16), theirs_d)
    assert scales[2, 1] == 0 and (codes[2, 1] == ZERO).all()


def test_padding_product_and_table_rows():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((48, 144), dtype=np.float32)  # [in, out]; 48 is 1.5 blocks: padded to 64
    m = Q8Matrix.from_float(w)
    assert m.shape == (48, 144) and m.T.shape == (144, 48) and m.codes.shape == (144, 2, BLOCK)
    assert m.nbytes == 144 * 2 * BLOCK + 4 * 144 * 2 and m.dtype == np.int8
    x = rng.standard_normal((5, 48), dtype=np.float32)
    for rows in (1, 5):
        exact, got = x[:rows] @ w, x[:rows] @ m
        assert got.dtype == np.float32 and got.shape == (rows, 144)
        # weights within half a step of their block's scale, activations likewise (int8 per block of
        # 32 inside the kernel): 1.5 % of the product's scale is far above both, and not zero.
        err = np.abs(got - exact).max()
        assert 0 < err <= 0.015 * np.abs(x[:rows]).sum(1).max() * np.abs(w).max()
    table = m.T[np.array([3, 0, 3]), :]  # the table orientation: rows of w.T, widened
    assert table.dtype == np.float32 and table.shape == (3, 48)
    np.testing.assert_allclose(table, w.T[[3, 0, 3]], atol=float(np.abs(w).max()) / 254 + 1e-6, rtol=0)
    with pytest.raises(TypeError, match="multiplies"):
        x @ m.T  # the table orientation is for lookups only
    with pytest.raises(TypeError, match="index an int8 matrix as a table"):
        m[np.array([0])]
    with pytest.raises(TypeError):
        np.exp(m)  # never widened whole behind the caller's back


def test_missing_onnxruntime_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    config = GPT2Config(n_vocab=64, n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    with pytest.raises(
        NpgptError, match=r"^int8 weights on the numpy backend need ONNX Runtime; pip install 'npgpt\[int8\]'$"
    ):
        GPT2(config, init_params(config, seed=0), dtype="int8")


def test_q8_0_gguf_loads_into_int8_with_the_files_own_codes(tmp_path, monkeypatch):
    """A Q8_0 GGUF written by llama.cpp's converter, loaded with dtype="int8": every Q8_0 matrix of the file
    is the int8 weight npgpt multiplies with, codes and scales bit for bit (the scheme is the same, and
    float16 scales are exact in float32), so no second rounding happens. (The product-only matrices
    are kept here: normally only their session holds the codes it was built from, these.)"""
    gguf = pytest.importorskip("gguf")
    import npgpt
    from npgpt import q8_0

    monkeypatch.setattr(q8_0, "runtime_keeps_its_own_copy", lambda: False)
    from npgpt.formats.gguf_format import _name_table
    from npgpt.params import flatten

    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    path = tmp_path / "tiny-q8_0.gguf"
    model = npgpt.load(path, dtype="int8")
    ours = flatten(model.params)
    table = _name_table(model.config.n_layer)
    checked = 0
    for tensor in gguf.GGUFReader(path).tensors:
        if tensor.tensor_type != gguf.GGMLQuantizationType.Q8_0:
            continue
        out = int(tensor.shape[-1])  # GGUF lists ne0 (in) first
        raw = np.asarray(tensor.data).reshape(out, -1, 34)
        m = ours[table[tensor.name]]
        assert isinstance(m, Q8Matrix)
        np.testing.assert_array_equal(m.codes.astype(np.int16) - ZERO, raw[..., 2:].copy().view(np.int8))
        np.testing.assert_array_equal(m.scales, raw[..., :2].copy().view(np.float16)[..., 0].astype(np.float32))
        checked += 1
    assert checked >= 4  # every block's matrices that split into 32-value rows


def test_a_q8_0_gguf_loads_into_int8_without_a_float32_copy(tmp_path, monkeypatch):
    """Loading a Q8_0 GGUF with dtype="int8" takes the file's blocks as they are: no Q8_0 tensor is
    dequantized (124M: load peak 986 -> 358 MB, 4.4 -> 2.7 s), and the logits are bit for bit those of
    the float32 round trip (dequantize, then quantize again), which gives back the same codes."""
    gguf = pytest.importorskip("gguf")
    from gguf import quants

    import npgpt
    from npgpt.formats import load_checkpoint
    from npgpt.params import Q8_0Blocks, flatten

    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    path = tmp_path / "tiny-q8_0.gguf"
    config, floats = load_checkpoint(path)  # the round trip's float32 params
    ids = [[464, 3139, 286, 4881, 318, 6342, 13]]
    round_trip = GPT2(config, floats, dtype="int8").logits(ids)

    real = quants.dequantize
    dequantized = []

    def recorded(data, kind):  # a tensor's data; not the one zero block the loader's type check probes with
        if data.size > gguf.GGML_QUANT_SIZES[kind][1]:
            dequantized.append(kind)
        return real(data, kind)

    monkeypatch.setattr(quants, "dequantize", recorded)
    monkeypatch.setattr(Q8_0Blocks, "dequantize", lambda self: pytest.fail("a Q8_0 matrix was dequantized"))
    model = npgpt.load(path, dtype="int8")
    assert gguf.GGMLQuantizationType.Q8_0 not in dequantized and dequantized  # F32 tensors still read
    np.testing.assert_array_equal(model.logits(ids), round_trip)
    blocks = flatten(load_checkpoint(path, q8_0_blocks=True)[1])
    assert sum(isinstance(b, Q8_0Blocks) for b in blocks.values()) >= 4


def test_q8_0_blocks_dequantize_as_ggml_does_and_other_dtypes_get_floats(tmp_path):
    """Q8_0Blocks.dequantize is gguf's (ggml's) dequantization bit for bit, and a backend/dtype that cannot
    take the blocks gets those floats: float32 on NumPy from blocks == float32 from the file."""
    pytest.importorskip("gguf")
    from npgpt.backends import get_backend
    from npgpt.formats import load_checkpoint
    from npgpt.params import Q8_0Blocks, flatten

    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    path = tmp_path / "tiny-q8_0.gguf"
    _, floats = load_checkpoint(path)
    config, blocks = load_checkpoint(path, q8_0_blocks=True)
    for name, b in flatten(blocks).items():
        if isinstance(b, Q8_0Blocks):
            got = b.dequantize()
            assert got.dtype == np.float32 and got.shape == b.shape
            np.testing.assert_array_equal(got, flatten(floats)[name])
    from npgpt.formats import save_checkpoint

    written = save_checkpoint(tmp_path / "back.safetensors", config, blocks)  # their floats, not objects
    np.testing.assert_array_equal(flatten(load_checkpoint(written)[1])["wte"], flatten(floats)["wte"])
    from npgpt import files
    from npgpt.params import dequantized

    released = []
    real_release = files.release_mapped
    with pytest.MonkeyPatch.context() as m:  # widening a matrix lets go of the file's pages it read
        m.setattr(files, "release_mapped", lambda a: released.append(a.nbytes) or real_release(a))
        dequantized(blocks)
    assert sorted(released) == sorted(b.raw.nbytes for b in flatten(blocks).values() if isinstance(b, Q8_0Blocks))
    placed = get_backend("numpy").put_params(blocks, "float32")
    assert not any(isinstance(a, Q8_0Blocks) for a in flatten(placed).values())
    ids = [[1, 2, 3, 4]]
    np.testing.assert_array_equal(GPT2(config, blocks).logits(ids), GPT2(config, floats).logits(ids))


def test_a_q8_0_wpe_and_dtype_auto_load_from_blocks_too(tmp_path, monkeypatch):
    """Another writer may store position_embd in Q8_0 too: it is a table only, so it is read as floats;
    and dtype="auto" takes the blocks as well, dequantizing them if it picks float32."""
    gguf = pytest.importorskip("gguf")
    from gguf import quants

    import npgpt
    from npgpt import autotune, formats
    from npgpt.files import is_mapped
    from npgpt.formats import gguf_write, load_checkpoint, save_checkpoint

    reader = formats.load_with_tokenizer  # what npgpt.load reads a checkpoint with

    config = GPT2Config(n_vocab=50257, n_ctx=32, n_embd=64, n_head=2, n_layer=1)
    params = init_params(config, seed=2)
    real = gguf_write._encode

    def wpe_in_q8_0(arr, dtype, name):
        if name.startswith("position_embd"):
            return quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
        return real(arr, dtype, name)

    monkeypatch.setattr(gguf_write, "_encode", wpe_in_q8_0)
    path = save_checkpoint(tmp_path / "m.gguf", config, params, fmt="gguf", dtype="q8_0")
    monkeypatch.undo()
    config, floats = load_checkpoint(path)
    ids = [[1, 2, 3, 4, 5]]
    model = npgpt.load(path, dtype="int8")
    assert isinstance(model.params["wpe"], np.ndarray) and not is_mapped(model.params["wpe"])  # its own copy
    assert not is_mapped(model.params["ln_f"]["g"])  # an int8 model reads nothing from the file after load
    np.testing.assert_array_equal(model.logits(ids), GPT2(config, floats, dtype="int8").logits(ids))

    for picked in ("int8", "float32"):
        choice = autotune.Choice(dtype=picked, seconds={}, measured=False, key="test")
        monkeypatch.setattr(autotune, "choose_dtype", lambda *a, choice=choice, **k: choice)
        asked: list[dict] = []
        monkeypatch.setattr(
            formats, "load_with_tokenizer", lambda *a, asked=asked, **k: asked.append(k) or reader(*a, **k)
        )
        auto = npgpt.load(path, dtype="auto")
        assert asked == [{"q8_0_blocks": True}] and auto.dtype == picked
        np.testing.assert_array_equal(auto.logits(ids), GPT2(config, floats, dtype=picked).logits(ids))


def test_a_nan_scale_in_a_q8_0_gguf_is_refused_when_its_blocks_are_kept(tmp_path):
    pytest.importorskip("gguf")
    from npgpt.errors import CheckpointError
    from npgpt.formats import load_checkpoint, save_checkpoint

    config = GPT2Config(n_vocab=50257, n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    params = init_params(config, seed=0)
    params["blocks"][0]["mlp"]["c_fc"]["w"][5, 7] = np.nan
    with np.errstate(invalid="ignore"):  # gguf's quantizer casts the NaN block's codes
        path = save_checkpoint(tmp_path / "m.gguf", config, params, fmt="gguf", dtype="q8_0")
    with pytest.raises(CheckpointError, match="blocks.0.mlp.c_fc.w.*NaN or infinite"):
        load_checkpoint(path, q8_0_blocks=True)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_int8_weights_are_held_once_only_the_heads_keep_their_rows(tied):
    """ONNX Runtime multiplies from its own prepacked copy, so a product-only matrix keeps no codes of its
    own (they were a second copy: 124M 418 -> 342 MB resident after load). The heads keep them: wte's
    rows are the embedding, lm_head's the unembedding directions. Logits bit for bit those of a model
    that keeps every matrix's codes."""
    from npgpt import q8_0
    from npgpt.params import flatten

    config = GPT2Config(n_vocab=101, n_ctx=16, n_embd=96, n_head=3, n_layer=2, tie_word_embeddings=tied)
    params = init_params(config, seed=3)
    model = GPT2(config, params, dtype="int8")
    weights = flatten(model.params)
    heads = ["wte"] if tied else ["wte", "lm_head"]
    for name in heads:
        assert weights[name].codes is not None and weights[name].codes.shape == (101, 3, BLOCK)
        np.testing.assert_allclose(weights[name][[7]], params[name][[7]], atol=0.02)  # its rows, widened
    products = [w for name, w in weights.items() if name.endswith(".w")]
    assert len(products) == 8 and all(w.codes is None and w.scales is None for w in products)
    assert all(w.nbytes == w.shape[1] * -(-w.shape[0] // BLOCK) * (BLOCK + 4) for w in products)  # still counted
    ids = [[5, 17, 3, 99, 0, 42]]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(q8_0, "runtime_keeps_its_own_copy", lambda: False)
        kept = GPT2(config, params, dtype="int8")
    assert all(w.codes is not None for w in flatten(kept.params).values() if isinstance(w, Q8Matrix))
    np.testing.assert_array_equal(model.logits(ids), kept.logits(ids))
    with pytest.raises(TypeError, match="loaded as a product weight only"):
        products[0].T[[1]]
    # An untied model's wte is the embedding table only: no product (124M: ~45 MB of ONNX Runtime's copy).
    assert [name for name in heads if weights[name]._session is None] == ([] if tied else ["wte"])
    if not tied:
        with pytest.raises(TypeError, match="loaded as a table only"):
            np.ones((1, 96), np.float32) @ weights["wte"].T


@pytest.mark.parametrize("fmt", ["npgpt", "gguf"])
def test_a_mapped_checkpoints_table_rows_are_read_from_its_file_not_held(tmp_path, fmt):
    """wte's codes were kept for the token embedding beside ONNX Runtime's prepacked copy for the head
    (124M: 45 MB, the largest array npgpt held). A checkpoint read in place (a read-only memory map)
    holds those rows already: a lookup reads the few it needs there, as the load made them (float rows
    quantized the same way; a GGUF's own Q8_0 blocks), so the engine holds no matrix's codes and no
    float32 copy of one, and its logits are bit for bit those of a model that keeps them."""
    from npgpt import q8_0
    from npgpt.api import load
    from npgpt.errors import CheckpointError
    from npgpt.files import is_mapped
    from npgpt.formats import save_checkpoint
    from npgpt.params import flatten

    config = GPT2Config(n_vocab=50257, n_ctx=16, n_embd=64, n_head=2, n_layer=1)  # GGUF: GPT-2's tokens
    path = save_checkpoint(
        tmp_path / f"m.{fmt}",
        config,
        init_params(config, seed=3),
        fmt=fmt,
        dtype="q8_0" if fmt == "gguf" else "float32",
    )
    model = load(path, dtype="int8")
    weights = flatten(model.params)
    assert weights["wte"].codes is None and weights["wte"].scales is None
    held = 0  # bytes in arrays of the engine's own (a view of the file's map is the file's)
    for w in weights.values():
        if isinstance(w, Q8Matrix):
            held += sum(a.nbytes for a in (w.codes, w.scales) if a is not None)
        else:
            assert w.dtype == np.float32 and (w.ndim == 1 or w.shape == (config.n_ctx, config.n_embd))  # vectors, wpe
            held += 0 if is_mapped(w) else w.nbytes
    matrices = sum(w.shape[0] * w.shape[1] for w in weights.values() if isinstance(w, Q8Matrix))
    assert held < 0.1 * matrices  # bytes a weight (1.1 with wte's codes; the vectors alone remain)
    ids = [[5, 17, 3, 50256, 0, 42, 17]]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(q8_0, "_file_rows", lambda *_: None)
        kept = load(path, dtype="int8")
    assert flatten(kept.params)["wte"].codes is not None
    np.testing.assert_array_equal(model.logits(ids), kept.logits(ids))
    rows = np.arange(0, config.n_vocab, 7)
    np.testing.assert_array_equal(weights["wte"][rows, :], flatten(kept.params)["wte"][rows, :])
    np.testing.assert_array_equal(weights["wte"][3], flatten(kept.params)["wte"][3])  # one id: [in]
    # Rows are read with pread, never mapped: looking up every row leaves no more of the file resident.
    before = _resident_kb(path)
    for i in range(0, config.n_vocab, 97):
        weights["wte"][np.array([i]), :]
    assert _resident_kb(path) <= before
    # A file cut short under the loaded model is a one-line error, not a crash (SIGBUS) or garbage.
    with open(path, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(CheckpointError, match="truncated while the model was loaded"):
        model.logits([[50000]])


def _resident_kb(path):
    """KB of ``path``'s memory-mapped pages resident in this process (Linux's /proc/self/smaps; 0 elsewhere)."""
    smaps = Path("/proc/self/smaps")
    if not smaps.exists():
        return 0
    total, current = 0, ""
    for line in smaps.read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            current = fields[5] if len(fields) > 5 else ""
        elif fields[0] == "Rss:" and current == str(path):
            total += int(fields[1])
    return total


def test_the_copy_check_runs_once_per_process_on_matrices_of_its_own():
    """Checking every matrix kept ONNX Runtime's pool thread spinning through the load (+1 s for 124M):
    the answer is the runtime's, so it is found once, and the caller's arrays are never written."""
    from npgpt import q8_0

    q8_0.runtime_keeps_its_own_copy.cache_clear()
    calls = []
    real = q8_0._session_keeps_its_own_copy
    with pytest.MonkeyPatch.context() as m:
        m.setattr(q8_0, "_session_keeps_its_own_copy", lambda *a: calls.append(a[1].nbytes) or real(*a))
        config = GPT2Config(n_vocab=101, n_ctx=16, n_embd=96, n_head=3, n_layer=2)
        GPT2(config, init_params(config, seed=3), dtype="int8")
        GPT2(config, init_params(config, seed=4), dtype="int8")
    assert calls == [q8_0.DROP_BYTES, 1 << 20]  # two matrices of its own, once


def test_codes_are_dropped_only_where_the_session_provably_does_not_read_them():
    """The check overwrites codes and scales and compares products: a session that reads them in place
    (a stand-in here) is found out, and the arrays are restored bit for bit; read-only ones are never touched."""
    from npgpt.q8_0 import _session_keeps_its_own_copy

    rng = np.random.default_rng(4)
    codes, scales = quantize(rng.standard_normal((40, 64), dtype=np.float32))
    before_codes, before_scales = codes.copy(), scales.copy()

    class InPlace:  # computes from the arrays it was given, as a zero-copy runtime would
        def run(self, _names, feed):
            w = (codes.astype(np.float32) - ZERO) * scales[..., None]  # [out, in/32, 32]
            return [feed["x"] @ w.reshape(40, -1).T]

    assert _session_keeps_its_own_copy(InPlace(), codes, scales) is False
    np.testing.assert_array_equal(codes, before_codes)
    np.testing.assert_array_equal(scales, before_scales)
    real = Q8Matrix(codes, scales, 64)  # table=True: its codes stay
    assert real.codes is codes
    assert _session_keeps_its_own_copy(real._session, codes, scales) is True  # ONNX Runtime's own copy
    np.testing.assert_array_equal(codes, before_codes)
    codes.flags.writeable = False
    assert _session_keeps_its_own_copy(real._session, codes, scales) is False


def test_table_rows_index_as_an_array_would():
    w = np.random.default_rng(5).standard_normal((48, 10), dtype=np.float32)  # [in, out]; rows of .T: [10, 48]
    table = Q8Matrix.from_float(w).T
    dense = table[np.arange(10)]
    assert dense.shape == (10, 48)
    np.testing.assert_array_equal(table[3], dense[3])  # one id: [in], not [blocks, 32]
    np.testing.assert_array_equal(table[[1, 2], :], dense[[1, 2]])
    np.testing.assert_array_equal(table[3, 4:6], dense[3, 4:6])


def test_an_int8_loaded_model_is_not_saved_as_garbage(tmp_path):
    """A model loaded with dtype="int8" holds no float weights: saving it is one line naming the fix,
    and nothing is written."""
    from npgpt.errors import CheckpointError
    from npgpt.formats import save_checkpoint

    config = GPT2Config(n_vocab=101, n_ctx=16, n_embd=48, n_head=3, n_layer=2)
    model = GPT2(config, init_params(config, seed=0), dtype="int8")
    with pytest.raises(CheckpointError, match=r"8-bit weights.*dtype='float32' to save it") as err:
        save_checkpoint(tmp_path / "m.safetensors", config, model.params)
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())


def test_an_onnxruntime_without_the_kernel_is_one_line_naming_the_fix(monkeypatch):
    """An older ONNX Runtime refuses 8-bit MatMulNBits when the session is built: one line, not its traceback."""
    import onnxruntime

    def refuse(*args, **kwargs):
        raise onnxruntime.capi.onnxruntime_pybind11_state.Fail(
            "[ONNXRuntimeError] : 1 : FAIL : Load model failed:\nOnly 4b quantization is supported for MatMulNBits op"
        )

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    with pytest.raises(NpgptError) as err:
        Q8Matrix.from_float(np.ones((64, 8), dtype=np.float32))
    message = str(err.value)
    assert "\n" not in message and "Only 4b quantization is supported" in message
    assert message.endswith("pip install -U onnxruntime (1.23 or newer), or load with dtype='float32'")


def test_the_graphs_ir_version_is_the_one_their_opset_needs_not_the_installed_onnxs(monkeypatch):
    """onnx 1.23 writes IR version 14 by default, which ONNX Runtime 1.30 refuses ("max supported
    IR version: 13"): the sessions' models carry IR 10, which opset 21 needs, whatever onnx is installed.
    An ONNX Runtime refusal keeps its reason, which it puts at the end of a long line."""
    import onnx
    import onnxruntime

    seen = []
    real = onnxruntime.InferenceSession

    def check(model_bytes, *args, **kwargs):
        seen.append(onnx.load_from_string(model_bytes).ir_version)
        return real(model_bytes, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", check)
    Q8Matrix.from_float(np.ones((64, 8), dtype=np.float32))
    assert seen == [10]

    def refuse(*args, **kwargs):
        raise onnxruntime.capi.onnxruntime_pybind11_state.Fail(
            "[ONNXRuntimeError] : 1 : FAIL : /onnxruntime_src/onnxruntime/core/graph/model.cc:202 "
            + "onnxruntime::Model::Model(onnx::ModelProto&&, " * 8
            + "const onnxruntime::ModelOptions&) Unsupported model IR version: 14, max supported IR version: 13"
        )

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    with pytest.raises(NpgptError, match="Unsupported model IR version: 14, max supported IR version: 13"):
        Q8Matrix.from_float(np.ones((64, 8), dtype=np.float32))


POOL_CHILD = r"""
import json, os, sys
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper
from npgpt.api import GPT2
from npgpt.config import GPT2Config
from npgpt.params import init_params
from npgpt.q8_0 import share_thread_pool

def relu_session():  # an application's own ONNX Runtime session, with a pool of its own (the default)
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [None]) for n in "xy")
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)  # any installed ORT reads it
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])

config = GPT2Config(n_vocab=64, n_ctx=16, n_embd=32, n_head=2, n_layer=8)  # 33 matrices, a session each
params = init_params(config, seed=0)
mode, out = sys.argv[1], {}
if mode == "entry point":
    out["shared"] = share_thread_pool()
if mode == "other code sized the pool":
    ort.set_global_thread_pool_sizes(1, 1)
before = len(os.listdir("/proc/self/task"))
logits = GPT2(config, params, dtype="int8").logits([[1, 2, 3]])
out["new_threads"] = len(os.listdir("/proc/self/task")) - before
if mode == "entry point":  # a second model loaded under another thread count runs on the same pool
    os.environ["OMP_NUM_THREADS"] = "1"
    np.testing.assert_array_equal(GPT2(config, params, dtype="int8").logits([[1, 2, 3]]), logits)
if mode == "library":  # npgpt.load alone leaves the process's ONNX Runtime as it found it
    out["own_session"] = relu_session().run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0].tolist()
out["logits"] = logits.ravel()[:16].tolist()
print(json.dumps(out))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="counts threads in /proc")
def test_int8_sessions_share_one_thread_pool_only_where_the_entry_point_asks():
    """~50 matrices, one ONNX Runtime session each. The entry points (CLI, server, bench) put them on
    one shared pool (a pool per session wakes a sleeping thread per product: ~25 % slower decoding).
    That pool is process-wide and ONNX Runtime then refuses sessions with pools of their own, so the
    library alone never creates it: an application's own sessions keep working after npgpt.load."""
    library = child_json(POOL_CHILD, "library")
    assert library["own_session"] == [0.0, 2.0]
    entry = child_json(POOL_CHILD, "entry point")
    assert entry["shared"] is True  # this ONNX Runtime has set_global_thread_pool_sizes (npgpt[int8] needs >= 1.23)
    assert entry["new_threads"] <= 4  # the pool's one worker (+ OpenBLAS's), not one per matrix (33)
    sized_elsewhere = child_json(POOL_CHILD, "other code sized the pool")  # npgpt's sessions run on that pool
    assert entry["logits"] == library["logits"] == sized_elsewhere["logits"]


BLAS_CHILD = r"""
import json
from threadpoolctl import threadpool_info
from npgpt.q8_0 import keep_blas_to_one_thread
def blas():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
before = blas()
capped = keep_blas_to_one_thread()
print(json.dumps({"capped": capped, "before": before, "after": blas()}))
"""


def test_the_entry_points_blas_cap_applies_to_numpys_blas_and_only_int8_models_ask_for_it():
    """With int8 weights NumPy's BLAS runs attention only; the CLI caps it at one thread so that its
    threads do not take the cores of ONNX Runtime's pool (a 512-token prefill: ~1.5x faster)."""
    from npgpt.q8_0 import in_use

    out = child_json(BLAS_CHILD)
    assert out["capped"] and out["before"] and max(out["before"]) == 2 and out["after"] == [1] * len(out["after"])
    config = GPT2Config(n_vocab=64, n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    params = init_params(config, seed=0)
    assert in_use(GPT2(config, params, dtype="int8").params)
    assert not in_use(GPT2(config, params).params)


def test_the_blas_cap_waits_until_every_served_model_is_int8(monkeypatch):
    """`npgpt serve --model a --model b --dtype auto` may load one int8 and one float32 model: the
    float32 one needs every core for its products, so the cap applies only if all are int8."""
    import npgpt.q8_0 as q8_0

    capped: list[bool] = []
    monkeypatch.setattr(q8_0, "keep_blas_to_one_thread", lambda: capped.append(True) or True)
    config = GPT2Config(n_vocab=64, n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    params = init_params(config, seed=0)
    int8, f32 = GPT2(config, params, dtype="int8"), GPT2(config, params)
    q8_0.cap_blas_for([int8.params, f32.params])
    assert capped == []
    q8_0.cap_blas_for([int8.params, int8.params])
    assert capped == [True]
