"""npgpt/formats/gguf_format.py against GGUF files written by llama.cpp's own convert_hf_to_gguf.py.

The fixture (tests/fixtures/gguf_tiny.tar.xz, made by scripts/make_gguf_fixture.py) holds a tiny random
GPT-2 (width 32, 2 heads, 2 layers, GPT-2's 50257 tokens) as transformers saved it, transformers' logits
for one prompt, and the converter's F32, F16, BF16 and Q8_0 GGUFs of it. GGUFReader parses the 100k
tokenizer strings of each file in a few seconds, so each file is read once per module where possible.
"""

from __future__ import annotations

import dataclasses
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import hf_logits, random_params, run_cli

from npgpt.api import GPT2
from npgpt.config import GPT2Config
from npgpt.errors import CheckpointError
from npgpt.formats import detect, gguf_format, gguf_tokenizer, gguf_write, load_checkpoint, save_checkpoint
from npgpt.params import flatten, init_params

gguf = pytest.importorskip("gguf")
from gguf import quants  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "gguf_tiny.tar.xz"
OUTTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}
# Max |logit - transformers' logit| allowed per type: float32 is exact; the others round the weights.
# Measured on this fixture: f16 9.1e-4, bf16 1.0e-2, q8_0 2.9e-2 (logits: std 0.59, range +-2.2).
LOGIT_TOL = {"f32": 1e-4, "f16": 5e-3, "bf16": 5e-2, "q8_0": 1e-1}
# llama.cpp's GPT-2 knobs that npgpt's GPT2Config may carry: each is honoured if it does, else refused.
CARRIED = {f.name for f in dataclasses.fields(GPT2Config)}


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf_tiny")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(d, filter="data")
    return d


@pytest.fixture(scope="module")
def original(fixture_dir):
    """(config, params) of the Hugging Face original, and the reference ids and logits."""
    config, params = load_checkpoint(fixture_dir / "hf")
    ref = np.load(fixture_dir / "reference.npz")
    return config, params, ref["ids"], ref["logits"]


def rounded(params: dict, qtype_name: str) -> dict:
    """The original weights as a GGUF of ``qtype_name`` stores them: matrices rounded (Q8_0 along GGUF's
    rows, i.e. the input dimension of [out, in]); 1-D tensors and position_embd kept float32."""
    qtype = gguf.GGMLQuantizationType[qtype_name]
    out = {}
    for name, arr in flatten(params).items():
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim == 1 or name == "wpe" or qtype_name == "F32":
            out[name] = arr
            continue
        matrix = name.endswith(("c_attn.w", "c_proj.w", "c_fc.w"))
        gg = np.ascontiguousarray(arr.T if matrix else arr)  # npgpt [in, out] -> GGUF [out, in]
        try:
            back = quants.dequantize(quants.quantize(gg, qtype), qtype)
        except quants.QuantError:  # rows not a multiple of 32: F16, as the converter falls back
            back = gg.astype(np.float16).astype(np.float32)
        out[name] = back.T if matrix else back
    return out


@pytest.mark.slow
@pytest.mark.parametrize("outtype", list(OUTTYPES))
def test_llama_cpp_converter_output_loads_to_transformers_logits(fixture_dir, original, outtype):
    config, params, ids, ref_logits = original
    path = fixture_dir / f"tiny-{outtype}.gguf"
    assert detect(path) == "gguf"
    got_config, got = load_checkpoint(path)
    assert got_config == config
    # Every weight is exactly the original as this type rounds it ...
    expected = rounded(params, OUTTYPES[outtype])
    for name, arr in flatten(got).items():
        np.testing.assert_array_equal(arr, expected[name], err_msg=name)
    # ... and the logits are transformers' within that rounding (float32: <= 1e-4).
    diff = np.abs(GPT2(got_config, got).logits(ids) - ref_logits).max()
    assert diff <= LOGIT_TOL[outtype], (outtype, diff)
    if outtype == "f32":
        assert not got["blocks"][0]["mlp"]["c_fc"]["w"].flags.owndata  # F32 stays memory-mapped


def _tensor_bytes(path) -> dict:
    reader = gguf.GGUFReader(path)
    return reader, {t.name: (t.tensor_type.name, [int(n) for n in t.shape], bytes(t.data)) for t in reader.tensors}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("outtype", "dtype"), [("f32", "float32"), ("f16", "float16"), ("bf16", "bfloat16"), ("q8_0", "q8_0")]
)
def test_npgpt_gguf_writer_matches_llama_cpp_converter(fixture_dir, original, tmp_path, outtype, dtype):
    """``npgpt convert --to gguf`` writes what llama.cpp's converter writes: every tensor's name, type, shape
    and bytes, and the same architecture, hyperparameter and tokenizer metadata, so llama.cpp loads it."""
    config, params, _, _ = original
    ours = save_checkpoint(tmp_path / "ours.gguf", config, params, fmt="gguf", dtype=dtype)
    our_reader, our_tensors = _tensor_bytes(ours)
    their_reader, their_tensors = _tensor_bytes(fixture_dir / f"tiny-{outtype}.gguf")
    assert our_tensors.keys() == their_tensors.keys()
    for name in their_tensors:
        assert our_tensors[name] == their_tensors[name], name
    informational = {"general.name", "general.size_label", "general.type", "GGUF.kv_count"}
    their_keys = set(their_reader.fields) - informational
    assert their_keys <= set(our_reader.fields)
    for key in their_keys:
        a, b = our_reader.fields[key], their_reader.fields[key]
        assert a.types == b.types, key
        assert [bytes(a.parts[i]) for i in a.data] == [bytes(b.parts[i]) for i in b.data], key


@pytest.mark.slow
def test_roundtrip_odd_shape_and_cli(pair, tmp_path):
    """npgpt -> gguf -> npgpt on 3 heads x width 48 x 5 layers: float32 exact, logits == transformers;
    Q8_0 equals the original quantized by gguf (width 48 is not a multiple of 32, so those matrices are
    F16, as llama.cpp's converter does; mlp.c_proj's rows of 192 are Q8_0)."""
    model, ref = pair("odd")
    src = tmp_path / "odd.safetensors"
    save_checkpoint(src, model.config, model.params)
    r = run_cli("convert", str(src), str(tmp_path / "odd.gguf"), "--to", "gguf")
    assert r.returncode == 0, r.stderr
    config, params = load_checkpoint(tmp_path / "odd.gguf")
    assert config == model.config
    ids = np.array([[464, 2068, 7586, 21831, 50256]])
    np.testing.assert_allclose(GPT2(config, params).logits(ids), hf_logits(ref, ids), atol=1e-4, rtol=0)
    save_checkpoint(tmp_path / "q8.gguf", model.config, model.params, fmt="gguf", dtype="q8_0")
    _, q8 = load_checkpoint(tmp_path / "q8.gguf")
    expected = rounded(model.params, "Q8_0")
    for name, arr in flatten(q8).items():
        np.testing.assert_array_equal(arr, expected[name], err_msg=name)


@pytest.mark.slow
def test_padded_vocabulary_roundtrips_with_pad_tokens(tmp_path):
    config = GPT2Config(n_vocab=50304, n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    params = random_params(config)
    path = gguf_write.save(tmp_path / "padded.gguf", config, params, dtype="float16")
    reader = gguf.GGUFReader(path)
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert bytes(tokens.parts[tokens.data[-1]]) == b"[PAD50303]" and len(tokens.data) == 50304
    loaded_config, loaded = load_checkpoint(path)
    assert loaded_config == config
    np.testing.assert_array_equal(loaded["wte"], params["wte"].astype(np.float16).astype(np.float32))


# --- refusals: one line, before any compute ---------------------------------------------------------------
def _put(w, key, value, add):
    """``add(value)``, the writer's typed call; a string or list instead (a corrupt file) as that type; None: no
    such key."""
    if value is None:
        return
    if isinstance(value, str):
        w.add_string(key, value)
    elif isinstance(value, list):
        w.add_array(key, value)
    else:
        add(value)


def _gpt2_tensors(C, F, T, blocks) -> dict:
    """GGUF name -> NumPy shape of every GPT-2 tensor but token_embd: width C, MLP F, T positions."""
    names = {"position_embd.weight": (T, C)}
    for i in blocks:
        for part, shape in [("attn_norm", [C]), ("attn_qkv", [3 * C, C]), ("attn_output", [C, C])]:
            names[f"blk.{i}.{part}.weight"], names[f"blk.{i}.{part}.bias"] = shape, shape[:1]
        for part, shape in [("ffn_norm", [C]), ("ffn_up", [F, C]), ("ffn_down", [C, F])]:
            names[f"blk.{i}.{part}.weight"], names[f"blk.{i}.{part}.bias"] = shape, shape[:1]
    return {**names, "output_norm.weight": (C,), "output_norm.bias": (C,)}


def _write(
    path, arch="gpt2", eps=1e-5, n_ff=None, tokenizer="gpt2", tokens=None, n_vocab=300, n_layer=1, n_ctx=8, wte=None
):
    """A small GGUF written with gguf's own writer; each argument breaks one thing npgpt checks."""
    C = 32
    w = gguf.GGUFWriter(path, arch)
    _put(w, f"{arch}.block_count", n_layer, w.add_block_count)
    _put(w, f"{arch}.context_length", n_ctx, w.add_context_length)
    w.add_embedding_length(C)
    w.add_feed_forward_length(n_ff or 4 * C)
    w.add_head_count(2)
    _put(w, f"{arch}.attention.layer_norm_epsilon", eps, w.add_layer_norm_eps)
    if tokenizer:
        w.add_tokenizer_model(tokenizer)
        w.add_token_list(tokens if tokens is not None else [f"t{i}" for i in range(n_vocab)])
    w.add_tensor("token_embd.weight", np.zeros((n_vocab, C), np.float32) if wte is None else wte)
    layers = range(n_layer if isinstance(n_layer, int) and n_layer < 10 else 1)
    for name, shape in _gpt2_tensors(C, n_ff or 4 * C, n_ctx if isinstance(n_ctx, int) else 8, layers).items():
        w.add_tensor(name, np.zeros(shape, np.float32))  # the rest of a GPT-2, as its metadata says
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


NOT_GPT2_TOKENS = "not GPT-2's 50257"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "llama"}, "architecture 'llama'; npgpt runs GPT-2"),
        # A knob GPT2Config carries passes the config check; this tiny file then fails on its tokens.
        ({"eps": 1e-3}, NOT_GPT2_TOKENS if "layer_norm_epsilon" in CARRIED else "layer_norm_epsilon=0.001"),
        ({"n_ff": 100}, NOT_GPT2_TOKENS if "n_inner" in CARRIED else "n_inner=100"),
        ({"tokenizer": "llama"}, "tokenizer 'llama', not GPT-2's"),
        ({"tokenizer": None}, "no tokenizer in its metadata .* convert the model again with llama.cpp's"),
        ({}, NOT_GPT2_TOKENS),  # a 'gpt2' BPE with another vocabulary (e.g. Llama 3's)
        ({"n_layer": 10**9}, r"block_count 1000000000 but only \d+ tensors"),
        # Metadata of the wrong type, and a 1-D token_embd: were internal errors (int("two"), shape[1])
        ({"n_layer": "two"}, "'gpt2.block_count' is 'two', not an integer"),
        ({"n_ctx": [8, 8]}, r"'gpt2.context_length' is \[8, 8\], not an integer"),
        ({"eps": "x"}, "'gpt2.attention.layer_norm_epsilon' is 'x', not a number"),
        # llama.cpp requires it for gpt2 ("key not found in model"); it was taken as GPT-2's 1e-5
        ({"eps": None}, "'gpt2.attention.layer_norm_epsilon' is missing"),
        ({"wte": np.zeros(9600, np.float32)}, r"token_embd.weight is not a matrix \(ggml shape \[9600\]\)"),
    ],
)
def test_non_gpt2_gguf_is_refused(tmp_path, kwargs, message):
    path = _write(tmp_path / "bad.gguf", **kwargs)
    with pytest.raises(CheckpointError, match=message) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)


def _write_model(path, meta=None, blocks=(0, 1), drop=(), causal=None, head_size=None, ffn=128):
    """A tiny two-block GPT-2 GGUF (width 32, 300 tokens, 8 positions) with every tensor, written with gguf's
    own writer; ``meta`` overrides a hyperparameter, ``blocks`` says which blk.N are written, ``drop`` leaves
    tensors out. Its tokens are not GPT-2's: every
    refusal below comes before the tokenizer is read."""
    meta = {"block_count": 2, "context_length": 8, "embedding_length": 32, "head_count": 2, **(meta or {})}
    C, F, V, T = 32, ffn, 300, 8
    w = gguf.GGUFWriter(path, "gpt2")
    w.add_block_count(meta["block_count"])
    w.add_context_length(meta["context_length"])
    w.add_embedding_length(meta["embedding_length"])
    w.add_feed_forward_length(meta.get("feed_forward_length", 4 * meta["embedding_length"]))
    w.add_head_count(meta["head_count"])
    w.add_layer_norm_eps(1e-5)
    if "head_count_kv" in meta:
        w.add_head_count_kv(meta["head_count_kv"])
    if head_size is not None:  # (key_length, value_length)
        w.add_key_length(head_size[0])
        w.add_value_length(head_size[1])
    if causal is not None:
        w.add_causal_attention(causal)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(V)])
    names = {"token_embd.weight": (V, C), **_gpt2_tensors(C, F, T, blocks)}
    for name, shape in names.items():
        if name not in drop:
            w.add_tensor(name, np.zeros(shape, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        # block_count against the blk.N present: fewer (was "unexpected tensor 'blocks...'"), more, a gap
        ({"meta": {"block_count": 1}}, r"gpt2.block_count is 1 but the file holds tensors of blk.1 \(2 blocks\)"),
        ({"meta": {"block_count": 3}}, r"no tensor 'blk.2.attn_norm.weight' \(gpt2.block_count 3, 2 blocks present\)"),
        ({"meta": {"block_count": 3}, "blocks": (0, 2)}, "no tensor 'blk.1.attn_norm.weight'"),
        ({"drop": ("blk.1.ffn_up.bias",)}, "no tensor 'blk.1.ffn_up.bias'"),
        # the rows and widths the metadata gives, named by key and tensor (was "'wpe' has shape ..." in npgpt's names)
        ({"meta": {"context_length": 16}}, r"context_length is 16 but position_embd.weight has ggml shape \[32, 8\]"),
        ({"meta": {"embedding_length": 64}}, r"embedding_length is 64 but token_embd.weight has ggml shape \[32, 300"),
        ({"meta": {"feed_forward_length": 64}}, r"gpt2.feed_forward_length is 64 but blk.0.ffn_up.weight"),
        # what convert_hf_to_gguf.py writes for a GPT-2 with n_inner 64: "re-convert" named the tool that wrote it
        (
            {"ffn": 64},
            r"feed_forward_length is 128 but .*; llama.cpp's convert_hf_to_gguf.py writes 4 \* n_embd for a GPT-2 "
            "whatever its n_inner .*write this model's GGUF with npgpt's converter",
        ),
        ({"meta": {"head_count": 3}}, r"n_embd \(32\) must be divisible by n_head \(3\)"),
        # a per-layer array (llama.cpp's get_key_or_arr): was "not an integer; the file is corrupt"
        (
            {"meta": {"head_count": [2, 4]}},
            r"'gpt2.attention.head_count' differs per layer \(\[2, 4\]\); npgpt's GPT-2 has one value for every",
        ),
        ({"meta": {"feed_forward_length": [128, 64]}}, r"'gpt2.feed_forward_length' differs per layer"),
        (
            {"meta": {"head_count": [2, 2, 2]}},
            r"'gpt2.attention.head_count' has 3 values, one per layer, but gpt2.block_count is 2",
        ),
        ({"meta": {"head_count_kv": [2, 1]}}, r"'gpt2.attention.head_count_kv' differs per layer"),
        # llama.cpp's head size, when given, must be GPT-2's n_embd / n_head: it was not read
        (
            {"head_size": (8, 8)},
            r"'gpt2.attention.key_length' is 8, but gpt2.embedding_length / gpt2.attention.head_count is 32 / 2",
        ),
        ({"head_size": (16, 32)}, r"'gpt2.attention.value_length' is 32, but .* is 32 / 2"),
        # llama.cpp reads {arch}.attention.causal for every architecture; False was silently run causal
        (
            {"causal": False},
            r"'gpt2.attention.causal' is False: llama.cpp would let each token attend to the ones after",
        ),
    ],
)
def test_gguf_metadata_that_disagrees_with_its_tensors_is_refused_by_key(tmp_path, kwargs, message):
    path = _write_model(tmp_path / "m.gguf", **kwargs)
    with pytest.raises(CheckpointError, match=message) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)


def test_a_consistent_tiny_gguf_reaches_the_tokenizer_check(tmp_path):
    """The writer above is consistent: untampered, the file passes every check but the tokenizer's."""
    with pytest.raises(CheckpointError, match=NOT_GPT2_TOKENS):
        load_checkpoint(_write_model(tmp_path / "m.gguf"))
    with pytest.raises(CheckpointError, match=NOT_GPT2_TOKENS):  # causal attention said outright: GPT-2's
        load_checkpoint(_write_model(tmp_path / "causal.gguf", causal=True))
    # per-layer arrays of one value, and llama.cpp's head size where it is GPT-2's, read as GPT-2's
    meta = {"head_count": [2, 2], "feed_forward_length": [128, 128], "head_count_kv": [2, 2]}
    with pytest.raises(CheckpointError, match=NOT_GPT2_TOKENS):
        load_checkpoint(_write_model(tmp_path / "arrays.gguf", meta=meta, head_size=(16, 16)))


@pytest.mark.parametrize(
    ("shift", "message"), [(4, "has data offset 38404, expected 38400"), (-38400, "has data offset 0, expected 38400")]
)
def test_gguf_tensor_data_offsets_are_checked_as_llama_cpp_does(tmp_path, shift, message):
    """A tensor's offset moved into another tensor's bytes (misaligned, or overlapping the one before): GGUFReader
    views whatever bytes it names, so the weights were silently the wrong ones; llama.cpp refuses such a file."""
    path = _write_model(tmp_path / "m.gguf")
    reader = gguf.GGUFReader(path)
    second = reader.tensors[1].field.parts[-1]  # position_embd's offset (after token_embd's 38400 bytes), a view
    where = second.ctypes.data - reader.data.ctypes.data
    data = bytearray(path.read_bytes())
    data[where : where + 8] = np.uint64(int(second[0]) + shift).tobytes()
    bad = tmp_path / "moved.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"moved.gguf: tensor '{reader.tensors[1].name}' {message}") as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("qtype", ["Q8_1", "I32", "F64"])
def test_a_gguf_tensor_type_gguf_cannot_dequantize_is_refused_naming_the_outtype(tmp_path, qtype, monkeypatch):
    """Refused before any tensor is read (it used to be found only when that tensor was dequantized, after the
    tokenizer check and every tensor before it), naming the type and the converter's --outtype."""
    path = _write_model(tmp_path / "m.gguf", drop=("blk.1.ffn_up.weight",))
    t = gguf.GGMLQuantizationType[qtype]
    block, size = gguf.GGML_QUANT_SIZES[t]
    raw = np.zeros((128, 32 // block * size), np.uint8)  # ffn_up [128, 32] in that type's bytes
    bad = tmp_path / "typed.gguf"
    reader = gguf.GGUFReader(path)
    w = gguf.GGUFWriter(bad, "gpt2")
    for field in reader.fields.values():
        if not field.name.startswith("GGUF.") and field.name != "general.architecture":
            sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub)
    for tensor in reader.tensors:
        w.add_tensor(tensor.name, np.asarray(tensor.data))
    w.add_tensor("blk.1.ffn_up.weight", raw, raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    monkeypatch.setattr(gguf_format, "_check_tokenizer", lambda *a: None)  # the tiny file's tokens are not GPT-2's
    with pytest.raises(
        CheckpointError, match=rf"tensor 'blk.1.ffn_up.weight' is {qtype}, a type npgpt cannot read.*--outtype f16"
    ) as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value)


def test_a_big_endian_gguf_is_refused_naming_the_byte_order(tmp_path, monkeypatch):
    """A GGUF written with llama.cpp's --bigendian (for s390x): GGUFReader reads its metadata, but its F32 weights
    were taken in this machine's byte order, i.e. garbage (here NaN, refused as a diverged run; finite garbage
    loaded). llama.cpp refuses a file of the other byte order."""
    import functools

    config = GPT2Config(n_vocab=50257, n_ctx=8, n_embd=32, n_head=2, n_layer=1)
    writer = functools.partial(gguf.GGUFWriter, endianess=gguf.GGUFEndian.BIG)
    monkeypatch.setattr(gguf, "GGUFWriter", writer)
    path = gguf_write.save(tmp_path / "big.gguf", config, random_params(config))
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=r"big.gguf: a GGUF in the other byte order .*--bigendian") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)


def _split_writer(monkeypatch):
    """gguf's writer as the converter's ``--split-max-tensors 12`` runs it, given the final name (npgpt's writer
    writes to a temporary one, which would name the parts after it)."""
    import contextlib
    import functools

    monkeypatch.setattr(gguf, "GGUFWriter", functools.partial(gguf.GGUFWriter, split_max_tensors=12))
    monkeypatch.setattr(gguf_write, "atomic_path", contextlib.nullcontext)


def test_a_split_gguf_is_read_across_its_parts_given_the_first(tmp_path, monkeypatch):
    """A GGUF split into parts (the converter's --split-max-tensors, llama.cpp's gguf-split) was refused, with the
    advice to merge the parts; llama.cpp reads it across its parts given the first, and so does npgpt now: the same
    weights as were written, its folder read as its first part, every part listed as the model's files."""
    from npgpt.formats import model_files

    config = GPT2Config(n_vocab=50257, n_ctx=8, n_embd=32, n_head=2, n_layer=2)
    params = random_params(config)
    _split_writer(monkeypatch)
    gguf_write.save(tmp_path / "m.gguf", config, params)
    monkeypatch.undo()
    parts = sorted(tmp_path.glob("m-*.gguf"))
    assert [p.name for p in parts] == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert model_files(parts[0]) == model_files(tmp_path) == parts
    loaded_config, loaded = load_checkpoint(tmp_path)
    assert loaded_config == config
    for name, arr in flatten(params).items():
        np.testing.assert_array_equal(flatten(loaded)[name], arr, err_msg=name)


def test_a_split_gguf_part_missing_or_out_of_place_is_refused_naming_it(tmp_path, monkeypatch):
    """A later part given is refused naming the first (llama.cpp: "model must be loaded with the first split"); a
    part missing, a part in another's place and a first part not named as gguf-split names them, each named."""
    import shutil

    _split_writer(monkeypatch)
    _write_model(tmp_path / "m.gguf")
    monkeypatch.undo()
    parts = sorted(tmp_path.glob("m-*.gguf"))
    assert len(parts) == 3
    with pytest.raises(CheckpointError, match=NOT_GPT2_TOKENS):  # every part read: refused at the tokenizer only
        load_checkpoint(parts[0])
    for i, part in enumerate(parts[1:], 2):
        first = "load its first part m-00001-of-00003.gguf"
        with pytest.raises(CheckpointError, match=rf"part {i} of a GGUF split into 3 files .*{first}") as e:
            load_checkpoint(part)
        assert "\n" not in str(e.value)
    shutil.move(parts[2], tmp_path / "elsewhere.gguf")
    with pytest.raises(CheckpointError, match=r"part 3 of 3 of this split GGUF, m-00003-of-00003.gguf, is not beside"):
        load_checkpoint(parts[0])
    shutil.copy(parts[1], parts[2])  # part 2 in part 3's place
    with pytest.raises(CheckpointError, match=r"m-00003-of-00003.gguf: its split.no is 1, not 2: it is not part 3"):
        load_checkpoint(parts[0])
    shutil.copy(parts[0], tmp_path / "first.gguf")
    with pytest.raises(CheckpointError, match=r"first.gguf: the first of 3 parts .* not named as llama.cpp's"):
        load_checkpoint(tmp_path / "first.gguf")


def test_a_tensor_type_newer_than_the_gguf_package_names_the_upgrade(tmp_path):
    path = _write_model(tmp_path / "m.gguf")
    reader = gguf.GGUFReader(path)
    type_field = reader.tensors[0].field.parts[-2]  # token_embd's ggml type, a view into the file's bytes
    where = type_field.ctypes.data - reader.data.ctypes.data
    data = bytearray(path.read_bytes())
    data[where : where + 4] = np.uint32(250).tobytes()
    (tmp_path / "new.gguf").write_bytes(bytes(data))
    with pytest.raises(
        CheckpointError, match="a tensor type the installed gguf package does not know .*pip install -U gguf"
    ):
        load_checkpoint(tmp_path / "new.gguf")


@pytest.mark.parametrize("kept", [0.05, 0.5, 0.999])
def test_a_gguf_cut_short_says_so_with_the_sizes(tmp_path, kept):
    """A GGUF whose download or copy stopped part way was 'not a readable GGUF file (When changing to a larger
    dtype, its size must be a divisor of the total size in bytes of the last axis of the array.); the file is
    truncated or corrupt': NumPy's words for GGUFReader's view past the end. The header says where the data ends;
    the error says that and the file's size (or that the file ends inside its header), as for safetensors."""
    config = GPT2Config(n_vocab=50257, n_ctx=8, n_embd=32, n_head=2, n_layer=1)
    whole = save_checkpoint(tmp_path / "whole.gguf", config, init_params(config, seed=0), fmt="gguf")
    data = whole.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * kept)])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(cut)
    inside = f"at byte {cut.stat().st_size}, inside its header"
    where = inside if kept < 0.1 else f"its tensors' data ends at byte {len(data)}, the file has {cut.stat().st_size}"
    assert str(e.value) == f"{cut}: truncated ({where}); re-download or re-convert it"


@pytest.mark.slow
def test_truncated_gguf_is_refused_and_untied_head_honoured_or_refused(fixture_dir, original, tmp_path):
    data = (fixture_dir / "tiny-f16.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"truncated \(its tensors' data ends at byte"):
        load_checkpoint(tmp_path / "cut.gguf")
    (tmp_path / "head.gguf").write_bytes(data[:100])
    with pytest.raises(CheckpointError, match=r"truncated \(at byte 100, inside its header\)"):
        load_checkpoint(tmp_path / "head.gguf")
    # An untied head (output.weight != token_embd), as the converter writes for tie_word_embeddings=False.
    config, params, _, _ = original
    reader = gguf.GGUFReader(fixture_dir / "tiny-f32.gguf")
    w = gguf.GGUFWriter(tmp_path / "untied.gguf", "gpt2")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub)
    for t in reader.tensors:
        w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.add_tensor("output.weight", np.asarray(params["wte"]) * 2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if "tie_word_embeddings" in CARRIED:  # honoured: the head is npgpt's lm_head
        untied_config, untied = load_checkpoint(tmp_path / "untied.gguf")
        assert not untied_config.tie_word_embeddings
        np.testing.assert_array_equal(untied["lm_head"], np.asarray(params["wte"]) * 2)
    else:
        with pytest.raises(CheckpointError, match="tie_word_embeddings=False"):
            load_checkpoint(tmp_path / "untied.gguf")


def test_gguf_writer_refuses_what_llama_cpp_cannot_hold(tmp_path):
    config = GPT2Config(n_vocab=300, n_ctx=8, n_embd=32, n_head=2, n_layer=1)
    params = random_params(config)
    with pytest.raises(CheckpointError, match="300 rows, GPT-2's tokenizer 50257"):
        save_checkpoint(tmp_path / "m.gguf", config, params, fmt="gguf")
    with pytest.raises(CheckpointError, match="dtype='int8' cannot be written as gguf"):
        save_checkpoint(tmp_path / "m.gguf", config, params, fmt="gguf", dtype="int8")
    assert not (tmp_path / "m.gguf").exists()


KNOBS = {"layer_norm_epsilon": 1e-3, "n_inner": 64, "tie_word_embeddings": False, "bias": False}


@pytest.mark.slow
@pytest.mark.parametrize("field", list(KNOBS))
def test_gguf_roundtrip_honours_llama_cpp_knobs(field, tmp_path):
    """A config llama.cpp's GPT-2 can express survives npgpt -> GGUF -> npgpt with transformers' logits
    (bias=False is written as zero biases, which llama.cpp requires) -- or, where this GPT2Config does not
    carry the field, a file that sets it is refused by name."""
    import torch
    from transformers import GPT2LMHeadModel

    from npgpt.formats import hf
    from npgpt.formats.compat import make_config

    if field not in CARRIED:
        shape = {"n_vocab": 50257, "n_ctx": 16, "n_embd": 32, "n_head": 2, "n_layer": 2}
        with pytest.raises(CheckpointError, match=f"{field}={KNOBS[field]!r}"):
            make_config("k.gguf", **shape, **{field: KNOBS[field]})
        return
    config = dataclasses.replace(GPT2Config(n_ctx=16, n_embd=32, n_head=2, n_layer=2), **{field: KNOBS[field]})
    params = random_params(config)
    back_config, back = load_checkpoint(save_checkpoint(tmp_path / "k.gguf", config, params, fmt="gguf"))
    assert back_config == (dataclasses.replace(config, bias=True) if field == "bias" else config)
    hf.save(tmp_path / "hf", config, params)
    torch.manual_seed(0)
    ref = GPT2LMHeadModel.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    ids = np.array([[464, 2068, 7586, 50256]])
    np.testing.assert_allclose(GPT2(back_config, back).logits(ids), hf_logits(ref, ids), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_convert_cycles_through_every_format_exactly(tmp_path):
    """npgpt -> hf -> openai -> llmc -> gguf -> npgpt and back the other way, all float32: every weight
    survives bit for bit, so any pair of formats converts exactly (the lead's round-trip promise)."""
    from npgpt.formats import convert

    config = GPT2Config(n_ctx=16, n_embd=48, n_head=3, n_layer=2)
    params = random_params(config)
    start = save_checkpoint(tmp_path / "start.safetensors", config, params)
    targets = {"hf": "hf_dir", "openai": "openai_dir", "llmc": "m.bin", "gguf": "m.gguf", "npgpt": "end.safetensors"}
    for order in (["hf", "openai", "llmc", "gguf", "npgpt"], ["gguf", "llmc", "openai", "hf", "npgpt"]):
        src = start
        for fmt in order:
            src = convert(src, tmp_path / f"{order[0]}-{targets[fmt]}", fmt=fmt)
            assert detect(src) == fmt
        end_config, end = load_checkpoint(src)
        assert end_config == config
        for name, arr in flatten(params).items():
            np.testing.assert_array_equal(flatten(end)[name], arr, err_msg=f"{order}: {name}")


def test_directory_with_one_gguf_is_that_file(tmp_path):
    (tmp_path / "d").mkdir()
    _write(tmp_path / "d" / "model.gguf", arch="llama")
    assert detect(tmp_path / "d") == "gguf"
    with pytest.raises(CheckpointError, match="model.gguf: a GGUF of architecture 'llama'"):
        load_checkpoint(tmp_path / "d")


@pytest.mark.parametrize(
    ("names", "message"),
    [
        # several GGUFs (a quantization each, as a Hub repo ships them) were "no model found"; a GGUF beside llm.c's
        # model.bin or an npgpt file was read in their place, unsaid
        (("a.gguf", "b.gguf"), r"d: holds several model files \(a.gguf, b.gguf\); pass the path of the one to load"),
        (("a.gguf", "model.bin"), r"several model files \(a.gguf, model.bin\); pass the path .*, e.g. .*d/a.gguf"),
        (("a.gguf", "run.safetensors"), r"holds several model files \(a.gguf, run.safetensors\); pass the path"),
        # a damaged .gguf alone was "no model found"; it is the file meant, and reading it says what is wrong
        (("model.gguf:broken",), r"d/model.gguf: not a GGUF file"),
        ((), r"no model found \(it holds notes.txt\); expected .*, a .gguf file or an llm.c .bin"),
    ],
)
def test_a_directory_whose_model_file_is_ambiguous_is_refused_naming_the_files(tmp_path, names, message):
    config = GPT2Config(n_vocab=50257, n_ctx=8, n_embd=32, n_head=2, n_layer=1)
    params = init_params(config, seed=0)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("an ordinary folder")
    for name in names:
        name, _, broken = name.partition(":")
        fmt = {".gguf": "gguf", ".bin": "llmc", ".safetensors": "npgpt"}[Path(name).suffix]
        if broken:
            (tmp_path / "d" / name).write_bytes(b"not a gguf at all")
        else:
            save_checkpoint(tmp_path / "d" / name, config, params, fmt=fmt)
    for call in (detect, load_checkpoint):
        with pytest.raises(CheckpointError, match=message) as e:
            call(tmp_path / "d")
        assert "\n" not in str(e.value)
    r = run_cli("info", str(tmp_path / "d"))
    assert r.returncode == 1 and re.search(message, r.stderr) and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc/self/smaps")
def test_a_dequantized_gguf_is_not_left_resident(tmp_path):
    """Q8_0/F16 tensors are dequantized to float32 copies; the file's pages they were read from are dropped, so
    loading a Q8_0 file (e.g. with dtype="int8") does not also keep the file itself in memory."""
    from conftest import resident_kb

    config = GPT2Config(n_vocab=50257, n_ctx=64, n_embd=64, n_head=2, n_layer=1)  # GGUF: GPT-2's tokenizer
    params = init_params(config, seed=0)
    path = save_checkpoint(tmp_path / "m.gguf", config, params, fmt="gguf", dtype="q8_0")
    _, loaded = load_checkpoint(path)
    size_kb = path.stat().st_size // 1024  # ~5,100 KB: 3,400 of Q8_0 weights, ~1,700 of tokenizer metadata
    # What stays is the header GGUFReader parsed (the tokenizer's tokens and merges), not the weights' pages
    assert resident_kb(path) < 0.5 * size_kb
    expected = rounded(params, "Q8_0")  # the values are still right: dropped pages were only the file's
    for name, arr in flatten(loaded).items():
        np.testing.assert_allclose(arr, expected[name], rtol=0, atol=1e-6)


# --- the tokenizer's metadata: what ends a generation, what goes around a prompt -----------------------------
CHATML = {
    "type": "gpt2",
    "added_tokens": [
        {"content": "<|endoftext|>", "id": 50256, "special": True, "normalized": False},
        {"content": "<|im_end|>", "id": 50257, "special": True, "normalized": False},
        {"content": "<|im_start|>", "id": 50258, "special": True, "normalized": False},
    ],
}


def _added(*contents):
    """A tokenizer spec with GPT-2's <|endoftext|> and ``contents`` added as special tokens from id 50257 on."""
    added = [{"content": c, "id": 50257 + i, "special": True, "normalized": False} for i, c in enumerate(contents)]
    return {"type": "gpt2", "added_tokens": [CHATML["added_tokens"][0], *added]}


def _chatml_gguf(path, monkeypatch, tokenizer=CHATML, **fields):
    """A tiny GPT-2 GGUF with ChatML's markers added (or ``tokenizer``'s), as npgpt writes it, with the tokenizer
    ``fields`` (gguf's Keys.Tokenizer names: ``EOS_ID``, ``ADD_BOS``, ``PRE``, ``MERGES``, ...) written as llama.cpp's
    converter writes them (uint32 ids, bools, a string, a list of strings), in place of the writer's own where it
    writes one; ``EOS_ID=None``: no eos id at all."""
    config = GPT2Config(n_vocab=len(tokenizer["added_tokens"]) + 50256, n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    K, W = gguf.Keys.Tokenizer, gguf.GGUFWriter
    own = {K.EOS_ID: W.add_eos_token_id, K.PRE: W.add_tokenizer_pre, K.MERGES: W.add_token_merges}
    add_model = W.add_tokenizer_model

    def add_model_and_fields(w, model):
        add_model(w, model)
        for name, value in fields.items():
            if getattr(K, name) not in own and value is not None:
                (w.add_bool if isinstance(value, bool) else w.add_uint32)(getattr(K, name), value)

    monkeypatch.setattr(W, "add_tokenizer_model", add_model_and_fields)
    for name, value in fields.items():
        if getattr(K, name) in own:  # the writer's own call writes the file's value
            add = own[getattr(K, name)]
            monkeypatch.setattr(W, add.__name__, lambda w, _, add=add, value=value: value is None or add(w, value))
    path = gguf_write.save(path, config, random_params(config), tokenizer=tokenizer)
    monkeypatch.undo()
    return path


NEUTRAL = _added("<|user|>", "<|bot|>")  # added tokens whose spelling ends no generation in llama.cpp


@pytest.mark.parametrize(
    ("fields", "eos"),
    [
        ({"EOS_ID": 50257}, (50256, 50257)),  # a chat fine-tune's own end token, as the converter writes it
        ({"EOT_ID": 50257}, (50256, 50257)),
        ({"EOS_ID": 50257, "EOM_ID": 50258}, (50256, 50257, 50258)),
        ({"FIM_SEP_ID": 50258}, (50256, 50258)),
        ({}, (50256,)),
    ],
)
def test_a_gguf_ends_generations_at_its_own_eos_token_as_llama_cpp_does(tmp_path, monkeypatch, fields, eos):
    """tokenizer.ggml.eos_token_id (and eot, eom) were not read: a chat fine-tune converted by llama.cpp, whose
    eos is its <|im_end|>, generated on past it (llama.cpp stops there, and at <|endoftext|>, as ever)."""
    import npgpt

    path = _chatml_gguf(tmp_path / "chat.gguf", monkeypatch, tokenizer=NEUTRAL, **fields)
    m = npgpt.load(path)
    assert m.tokenizer.eos_token_ids == eos
    (c,) = m.completions("Hi", max_new_tokens=3, temperature=0, logit_bias={eos[-1]: 100})
    assert (c.tokens, c.finish_reason) == ([eos[-1]], "stop")


@pytest.mark.parametrize(
    ("tokens", "fields", "eos"),
    [
        # ChatML's <|im_end|> whose eos is <|endoftext|>: llama.cpp stops at it by its spelling
        (("<|im_end|>", "<|im_start|>"), {}, (50256, 50257)),
        (("<|user|>", "<|eot_id|>", "<|end|>"), {}, (50256, 50258, 50259)),
        # a fine-tune's added "[PAD]" is llama.cpp's FIM pad token (unless the file names another), so an end too
        (("[PAD]", "<|user|>"), {}, (50256, 50257)),
        (("[PAD]", "<|user|>"), {"FIM_PAD_ID": 50258}, (50256, 50258)),
        # gpt-oss's <|end|> beside <|return|> and <|call|> is llama.cpp's one exception
        (("<|end|>", "<|return|>", "<|call|>"), {}, (50256, 50258, 50259)),
        # no eos id in the file: <|endoftext|> by its spelling; not llama.cpp's default for a 'gpt2' tokenizer,
        # token 11, GPT-2's ",", at which every generation would end at its first comma
        (("<|user|>",), {"EOS_ID": None}, (50256,)),
    ],
)
def test_a_gguf_ends_generations_at_the_tokens_llama_cpp_ends_them_by_spelling(
    tmp_path, monkeypatch, tokens, fields, eos
):
    """llama.cpp (llama-vocab.cpp's special_eog_ids) ends a generation at a token spelled <|im_end|>, <|eot_id|>,
    <|end|>, ... whatever the file's eos id says; npgpt ended only at the eos, eot and eom ids, so a ChatML
    fine-tune whose eos is <|endoftext|> generated on past its <|im_end|> where llama.cpp stops."""
    import npgpt

    path = _chatml_gguf(tmp_path / "chat.gguf", monkeypatch, tokenizer=_added(*tokens), **fields)
    m = npgpt.load(path)
    assert m.tokenizer.eos_token_ids == eos
    (c,) = m.completions("Hi", max_new_tokens=3, temperature=0, logit_bias={eos[-1]: 100})
    assert (c.tokens, c.finish_reason) == ([eos[-1]], "stop")


@pytest.mark.parametrize(
    ("tokens", "n_vocab", "eos", "refused"),
    [
        # ChatML's <|im_end|>: NORMAL, and CONTROL by its spelling (an end), as llama.cpp reads it; was padding
        (("<|im_end|>",), 50258, (50256, 50257), None),
        # a token of no end's spelling is NORMAL: a BPE token past GPT-2's, refused as with its type written
        (("<|im_end|>", "<|im_start|>"), 50259, None, r"token 50258 \(b'<\|im_start\|>'\) is of type NORMAL"),
        # a padded vocabulary's rows as the converter names them, [PAD{i}], stay padding
        ((), 50304, (50256,), None),
    ],
)
def test_a_gguf_without_token_types_reads_them_as_llama_cpp_does(tmp_path, monkeypatch, tokens, n_vocab, eos, refused):
    """tokenizer.ggml.token_type is optional: llama.cpp reads every token as NORMAL where a file has none; npgpt
    read every token past GPT-2's 50257 as padding, so a chat fine-tune's <|im_end|> was never generated and its
    spelling in a prompt was encoded as text."""
    import npgpt

    config = GPT2Config(n_vocab=n_vocab, n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    monkeypatch.setattr(gguf.GGUFWriter, "add_token_types", lambda w, types: None)
    path = gguf_write.save(tmp_path / "m.gguf", config, random_params(config), tokenizer=_added(*tokens))
    monkeypatch.undo()
    assert gguf.Keys.Tokenizer.TOKEN_TYPE not in gguf.GGUFReader(path).fields
    if refused:
        with pytest.raises(CheckpointError, match=refused):
            npgpt.load(path)
        return
    m = npgpt.load(path)
    assert (m.tokenizer.eos_token_ids, m.tokenizer.n_vocab) == (eos, 50257 + len(tokens))
    if tokens:
        assert m.tokenizer.encode("Hi<|im_end|>", allow_special=True)[-1] == 50257


@pytest.mark.parametrize(
    ("types", "message"),
    [
        ([1] * 50257, r"has 50257 token types for 50258 tokens"),
        ([1] * 50257 + [42], r"token 50257 \(b'<\|user\|>'\) is of type 42 \(no type llama.cpp knows\)"),
    ],
)
def test_a_gguf_token_type_array_llama_cpp_refuses_is_refused(tmp_path, monkeypatch, types, message):
    config = GPT2Config(n_vocab=50258, n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    add = gguf.GGUFWriter.add_token_types
    monkeypatch.setattr(gguf.GGUFWriter, "add_token_types", lambda w, _: add(w, types))
    path = gguf_write.save(tmp_path / "m.gguf", config, random_params(config), tokenizer=_added("<|user|>"))
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=message) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)


def test_a_gguf_with_its_own_eos_token_converts_to_gguf_again_keeping_it(tmp_path, monkeypatch):
    """The reader reads a chat GGUF's eos (its <|im_end|>) and the writer refused to write one: re-quantizing a
    llama.cpp chat GGUF (convert chat.gguf chat-q8.gguf --dtype q8_0) was refused; it is written as eos, eot
    and eom, as the reader reads them back."""
    import npgpt
    from npgpt.formats import convert

    path = _chatml_gguf(tmp_path / "chat.gguf", monkeypatch, EOS_ID=50257, EOM_ID=50258)
    out = convert(path, tmp_path / "again.gguf", fmt="gguf", dtype="q8_0")
    assert npgpt.load(out).tokenizer.eos_token_ids == (50256, 50257, 50258)


def test_a_gguf_carries_any_number_of_end_tokens_llama_cpp_ends_at_by_their_spelling(tmp_path):
    """The writer refused more than three end tokens besides <|endoftext|> (the file's eos, eot and eom ids: GGUF has
    no list of them), though llama.cpp ends a generation at a token spelled <|im_end|>, <|eot_id|>, <|end|>, ...
    whatever those ids say: such tokens need no id, so a model ending at three of them and two others is written
    (the others as ids) and reads back ending at all five. Four that llama.cpp would not end at by spelling are
    still refused, naming why."""
    import npgpt

    spec = _added("<|im_end|>", "<|eot_id|>", "<|end|>", "<|user|>", "<|bot|>")
    spec["eos_token_id"] = [50256, 50257, 50258, 50259, 50260, 50261]
    config = GPT2Config(n_vocab=50262, n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    path = gguf_write.save(tmp_path / "m.gguf", config, random_params(config), tokenizer=spec)
    assert npgpt.load(path).tokenizer.eos_token_ids == tuple(spec["eos_token_id"])
    spec = {**_added("<|a|>", "<|b|>", "<|c|>", "<|d|>"), "eos_token_id": [50256, 50257, 50258, 50259, 50260]}
    config = GPT2Config(n_vocab=50261, n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    with pytest.raises(CheckpointError, match=r"at most three more tokens named by id .* not at token ids \[50256,"):
        gguf_write.save(tmp_path / "n.gguf", config, random_params(config), tokenizer=spec)
    assert not (tmp_path / "n.gguf").exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"EOS_ID": 70000}, r"'tokenizer.ggml.eos_token_id' is 70000, not one of its 50259 tokens"),
        ({"EOT_ID": True}, r"'tokenizer.ggml.eot_token_id' is True, not one of its 50259 tokens"),
    ],
)
def test_a_gguf_eos_token_that_is_no_token_is_refused(tmp_path, monkeypatch, fields, message):
    path = _chatml_gguf(tmp_path / "chat.gguf", monkeypatch, **fields)
    with pytest.raises(CheckpointError, match=message) as e:
        import npgpt

        npgpt.load(path)
    assert "\n" not in str(e.value)


def _merges_swapped(first=1, second=0):
    merges = list(gguf_tokenizer._gpt2_vocab(50257)[2])
    merges[first], merges[second] = merges[second], merges[first]
    return merges


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ADD_BOS": True}, "tokenizer.ggml.add_bos_token is True: llama.cpp puts a special token before every prompt"),
        ({"ADD_EOS": True}, "tokenizer.ggml.add_eos_token is True: llama.cpp puts a special token after every prompt"),
        ({"ADD_PREFIX": True}, "tokenizer.ggml.add_space_prefix is True: llama.cpp puts a space before every prompt"),
        ({"PRE": "llama-bpe"}, "pre-tokenizer 'llama-bpe' .tokenizer.ggml.pre., not GPT-2's 'gpt-2'"),
        ({"MERGES": _merges_swapped(0, 144)}, r"GPT-2's BPE merges, but 'Ġt he' before 'Ġ t': llama.cpp would split"),
        (
            {"MERGES": list(gguf_tokenizer._gpt2_vocab(50257)[2][1:])},
            r"its 49999 BPE merges are not GPT-2's 50000 \(merge 0 differs\)",
        ),
        # llama.cpp refuses a 'gpt2' tokenizer without merges; it was read with GPT-2's
        ({"MERGES": None}, r"no BPE merges in its metadata \(tokenizer.ggml.merges is missing\), which llama.cpp"),
    ],
)
def test_a_gguf_tokenizer_setting_that_changes_the_ids_is_refused(tmp_path, monkeypatch, fields, message):
    """llama.cpp reads these and turns a prompt into other ids than GPT-2's BPE (npgpt's) does: a token put before
    it (a fine-tune's add_bos_token, which the converter copies from tokenizer_config.json), another pre-tokenizer
    or other merges. They were not read, so npgpt's logits and generations silently differed from llama.cpp's."""
    path = _chatml_gguf(tmp_path / "chat.gguf", monkeypatch, **fields)
    with pytest.raises(CheckpointError, match=message) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)


def test_a_gguf_with_gpt2s_merges_in_an_order_that_splits_text_alike_loads(tmp_path, monkeypatch):
    """'Ġ a' ranked before 'Ġ t' (two merges that never meet: npgpt.merge_order) splits every text as GPT-2's order
    does, in llama.cpp too; it was refused as "not GPT-2's"."""
    config, _ = load_checkpoint(_chatml_gguf(tmp_path / "chat.gguf", monkeypatch, MERGES=_merges_swapped()))
    assert config.n_vocab == 50259


def test_a_gguf_without_its_pre_tokenizer_loads_as_gpt2_and_warns_in_one_line(tmp_path, monkeypatch):
    """A GGUF without tokenizer.ggml.pre (written before llama.cpp's converter wrote it) was read with GPT-2's
    pre-tokenizer without a word, though llama.cpp splits its text with its 'default' one (other ids for "12345" or
    " ...") and warns that generation is degraded. It still loads as GPT-2 (its tokens and merges are GPT-2's, and
    transformers reads such a file so too), now with a CheckpointWarning saying so, one line from the CLI. A name
    llama.cpp runs as GPT-2's pre-tokenizer ('phi-2') was refused as another pre-tokenizer: it loads, no warning."""
    import warnings

    from npgpt.errors import CheckpointWarning

    path = _chatml_gguf(tmp_path / "old.gguf", monkeypatch, PRE=None)
    message = r"no pre-tokenizer in its metadata \(tokenizer.ggml.pre\); read with GPT-2's, .* llama.cpp splits"
    with pytest.warns(CheckpointWarning, match=message):
        assert load_checkpoint(path)[0].n_vocab == 50259
    r = run_cli("info", str(path))
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rf"warning: \S*old.gguf: {message}.*'gpt-2'\n", r.stderr), r.stderr
    path = _chatml_gguf(tmp_path / "phi.gguf", monkeypatch, PRE="phi-2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_checkpoint(path)[0].n_vocab == 50259


def test_a_gguf_token_spelled_twice_is_refused_reading_and_writing(tmp_path, monkeypatch):
    """Two tokens of one spelling (an added "hello" at 50257 beside GPT-2's 31373): llama.cpp aborts on such a
    vocabulary (one id per spelling, GGML_ASSERT); npgpt loaded it, and wrote one from such a tokenizer."""
    config = GPT2Config(n_vocab=50258, n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    spec = {**_added(), "added_tokens": [*_added()["added_tokens"], {**_added("hello")["added_tokens"][1]}]}
    spec["added_tokens"][1]["special"] = False
    with pytest.raises(CheckpointError, match=r"cannot write a GGUF: tokens 31373 and 50257 are both b?'hello'"):
        gguf_write.save(tmp_path / "m.gguf", config, random_params(config), tokenizer=spec)
    monkeypatch.setattr(gguf_write, "_spelled_twice", lambda tokens: None)
    path = gguf_write.save(tmp_path / "m.gguf", config, random_params(config), tokenizer=spec)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=r"m.gguf: tokens 31373 and 50257 are both b'hello', which llama.cpp"):
        load_checkpoint(path)


def test_converting_a_tokenizer_spelled_twice_to_gguf_is_refused_before_the_weights_are_read(tmp_path, monkeypatch):
    """convert(..., fmt='gguf') refused two tokens of one spelling (6ac9a98) only in the writer, after the source's
    weights had been read (minutes for a large model); the tokenizer alone says it, so it is refused first."""
    import npgpt.formats as formats

    config = GPT2Config(n_vocab=50258, n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    spec = {**_added(), "added_tokens": [*_added()["added_tokens"], {**_added("hello")["added_tokens"][1]}]}
    spec["added_tokens"][1]["special"] = False
    src = save_checkpoint(tmp_path / "m.safetensors", config, random_params(config), tokenizer=spec)
    read = []
    monkeypatch.setattr(formats, "load_checkpoint", lambda *a, **k: read.append(a) or load_checkpoint(*a, **k))
    with pytest.raises(CheckpointError, match=r"cannot write a GGUF: tokens 31373 and 50257 are both b?'hello'"):
        formats.convert(src, tmp_path / "m.gguf", fmt="gguf")
    assert not read and not (tmp_path / "m.gguf").exists()


def test_gguf_tokenizer_settings_as_the_converter_writes_them_for_gpt2_load(tmp_path, monkeypatch):
    fields = {"ADD_BOS": False, "ADD_EOS": False, "ADD_PREFIX": False, "PRE": "gpt-2", "PAD_ID": 50256}
    path = _chatml_gguf(tmp_path / "chat.gguf", monkeypatch, **fields)
    assert load_checkpoint(path)[0].n_vocab == 50259


def test_a_vocabulary_only_gguf_is_named_as_one(fixture_dir, tmp_path):
    """llama.cpp's `convert_hf_to_gguf.py --vocab-only` writes a model's metadata and tokenizer with no tensor
    (llama.cpp ships such files as models/ggml-vocab-gpt-2.gguf, for its tokenizer tests): it was 'no
    token_embd.weight tensor; the file is incomplete', as if a download were cut short. Written here as the
    converter writes it: the fixture's every key, no tensor."""
    reader = gguf.GGUFReader(fixture_dir / "tiny-f32.gguf")
    path = tmp_path / "ggml-vocab-gpt-2.gguf"
    writer = gguf.GGUFWriter(path, "gpt2")
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), kind, sub_type=sub)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    assert len(gguf.GGUFReader(path).tensors) == 0
    said = f"{path}: a vocabulary-only GGUF (the tokenizer and hyperparameters, no weights: what llama.cpp's "
    with pytest.raises(CheckpointError, match=re.escape(said) + ".*not a model; convert the model again without"):
        load_checkpoint(path)
