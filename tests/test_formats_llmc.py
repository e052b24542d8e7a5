"""npgpt/formats/llmc.py: llm.c's model files, written as llm.c's own train_gpt2.py writes them.

llm.c is not pip-installable, so ``llmc_write_model`` below reproduces its writer line by line from
karpathy/llm.c ``train_gpt2.py`` (``GPT.from_pretrained``'s Conv1D transposes, ``write_fp32``,
``write_bf16``, ``write_tensors``, ``pad_vocab``, ``write_model``; read at commit fe04df9), fed from a
``transformers`` GPT2LMHeadModel as ``GPT.from_pretrained`` is.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import hf_logits, run_cli

from npgpt.api import GPT2
from npgpt.errors import CheckpointError
from npgpt.formats import convert, detect, llmc, load_checkpoint, save_checkpoint


# --- llm.c's writer (train_gpt2.py), with torch, as llm.c runs it ----------------------------------------
def llmc_params_from_hf(hf_model):
    """``GPT.from_pretrained``: HF's state dict with Conv1D weights transposed to nn.Linear's [out, in];
    ``named_parameters()`` lists the tied wte/lm_head once, as transformer.wte.weight."""
    sd_hf = hf_model.state_dict()
    transposed = ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"]
    params = {}
    for k, v in sd_hf.items():
        if k.endswith((".attn.masked_bias", ".attn.bias")) or k == "lm_head.weight":
            continue
        params[k] = v.t() if any(k.endswith(w) for w in transposed) else v
    return params


def write_fp32(tensor, file):
    import torch

    t = tensor.detach().cpu().to(torch.float32)
    b = t.numpy().tobytes()
    file.write(b)


def write_bf16(tensor, file):
    import torch

    t = tensor.detach().cpu().to(torch.bfloat16)
    # numpy doesn't have bf16 datatype so we have to trick it
    t = t.view(torch.int16)  # trick: reinterpret as int16
    b = t.numpy().tobytes()
    file.write(b)


def write_tensors(model_tensors, L, file, dtype):
    assert dtype in {"float32", "bfloat16"}
    write_fun = write_fp32 if dtype == "float32" else write_bf16
    write_fun(model_tensors["transformer.wte.weight"], file)  # (V, C)
    write_fun(model_tensors["transformer.wpe.weight"], file)  # (T, C)
    for suffix in (
        "ln_1.weight",
        "ln_1.bias",
        "attn.c_attn.weight",
        "attn.c_attn.bias",
        "attn.c_proj.weight",
        "attn.c_proj.bias",
        "ln_2.weight",
        "ln_2.bias",
        "mlp.c_fc.weight",
        "mlp.c_fc.bias",
        "mlp.c_proj.weight",
        "mlp.c_proj.bias",
    ):
        for i in range(L):  # llm.c writes each parameter for every layer, then the next parameter
            write_fun(model_tensors[f"transformer.h.{i}.{suffix}"], file)
    write_fun(model_tensors["transformer.ln_f.weight"], file)  # (C, )
    write_fun(model_tensors["transformer.ln_f.bias"], file)  # (C, )


def pad_vocab(tensor, multiple=128, value=0):
    import torch.nn.functional as F

    assert tensor.ndim == 2
    V, C = tensor.shape
    assert V == 50257, "just being defensive here"
    Vp = ((V + multiple - 1) // multiple) * multiple
    pad_rows = Vp - V
    padded = tensor if pad_rows == 0 else F.pad(tensor, (0, 0, 0, pad_rows), value=value)
    assert padded.shape == (Vp, C)
    return padded


def llmc_write_model(hf_model, filename, dtype):
    import torch

    assert dtype in {"float32", "bfloat16"}
    version = {"float32": 3, "bfloat16": 5}[dtype]
    cfg = hf_model.config
    header = torch.zeros(256, dtype=torch.int32)
    header[0] = 20240326  # magic
    header[1] = version  # checkpoint version
    header[2] = cfg.n_positions  # block_size
    header[3] = cfg.vocab_size
    header[4] = cfg.n_layer
    header[5] = cfg.n_head
    header[6] = cfg.n_embd
    with torch.no_grad():
        params = {name: param.cpu() for name, param in llmc_params_from_hf(hf_model).items()}
        wte = params["transformer.wte.weight"]  # (V, C)
        wte_padded = pad_vocab(wte)  # (Vp, C)
        params["transformer.wte.weight"] = wte_padded  # (Vp, C)
        header[7] = wte_padded.size(0)  # padded vocab size store in header
        with open(filename, "wb") as file:
            file.write(header.numpy().tobytes())  # header
            write_tensors(params, cfg.n_layer, file, dtype)  # params
    return filename


# --- tests -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llmc_files(pair, tmp_path_factory):
    _, ref = pair("odd")  # 3 heads, width 48, 5 layers, n_ctx 96, GPT-2's 50257 tokens
    d = tmp_path_factory.mktemp("llmc")
    return ref, {dtype: llmc_write_model(ref, d / f"model_{dtype}.bin", dtype) for dtype in ("float32", "bfloat16")}


IDS = np.array([[50256, 464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 50256]])


def test_llmc_float32_loads_to_transformers_logits(llmc_files):
    ref, files = llmc_files
    assert detect(files["float32"]) == "llmc"  # a .bin, read by its magic, not refused as a pickle
    config, params = load_checkpoint(files["float32"])
    assert (config.n_vocab, config.n_ctx, config.n_embd, config.n_head, config.n_layer) == (50257, 96, 48, 3, 5)
    assert params["wte"].shape == (50257, 48)  # llm.c's 47 zero padding rows dropped
    assert not params["blocks"][0]["attn"]["c_attn"]["w"].flags.owndata  # a view of the memory map
    got = GPT2(config, params).logits(IDS)
    np.testing.assert_allclose(got, hf_logits(ref, IDS), atol=1e-4, rtol=0)


def test_llmc_bfloat16_is_the_bf16_rounded_model(llmc_files):
    """Exact against transformers on bf16-rounded weights; against the float32 original within bf16 rounding."""
    import copy

    import torch

    ref, files = llmc_files
    config, params = load_checkpoint(files["bfloat16"])
    got = GPT2(config, params).logits(IDS)
    rounded = copy.deepcopy(ref)
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    np.testing.assert_allclose(got, hf_logits(rounded, IDS), atol=1e-4, rtol=0)
    diff = np.abs(got - hf_logits(ref, IDS)).max()
    assert 0 < diff < 0.05, diff  # bf16 keeps 8 significant bits; measured 2.5e-3 (logits std 0.14)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_npgpt_writes_llmc_files_byte_for_byte(llmc_files, tmp_path, dtype):
    """npgpt's writer reproduces train_gpt2.py's file exactly, so llm.c's C loader reads it as its own."""
    ref, files = llmc_files
    config, params = load_checkpoint(files["float32"])
    out = save_checkpoint(tmp_path / "out.bin", config, params, fmt="llmc", dtype=dtype)
    assert out.read_bytes() == files[dtype].read_bytes()


def test_convert_cli_to_and_from_llmc(llmc_files, tmp_path):
    ref, files = llmc_files
    r = run_cli("convert", str(files["float32"]), str(tmp_path / "m.safetensors"))
    assert r.returncode == 0, r.stderr
    r = run_cli("convert", str(tmp_path / "m.safetensors"), str(tmp_path / "back.bin"), "--to", "llmc")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back.bin").read_bytes() == files["float32"].read_bytes()
    # hf -> llmc -> hf: the round trip keeps every weight
    convert(files["float32"], tmp_path / "hf", fmt="hf")
    _, a = load_checkpoint(files["float32"])
    _, b = load_checkpoint(tmp_path / "hf")
    np.testing.assert_array_equal(a["wte"], b["wte"])
    np.testing.assert_array_equal(a["blocks"][4]["mlp"]["c_proj"]["w"], b["blocks"][4]["mlp"]["c_proj"]["w"])


def test_llmc_file_in_a_directory_is_found(llmc_files, tmp_path):
    """``convert SRC DIR --to llmc`` writes DIR/model.bin; DIR then loads as that file."""
    config, params = load_checkpoint(llmc_files[1]["float32"])
    (tmp_path / "out").mkdir()
    assert save_checkpoint(tmp_path / "out", config, params, fmt="llmc") == tmp_path / "out" / "model.bin"
    assert detect(tmp_path / "out") == "llmc"
    assert load_checkpoint(tmp_path / "out")[0] == config


def test_llmc_writer_pads_any_vocabulary(tmp_path):
    """A vocabulary of 300 pads to 384 (a multiple of 128) and reads back to 300 rows."""
    from conftest import random_params

    from npgpt.config import GPT2Config

    config = GPT2Config(n_vocab=300, n_ctx=16, n_embd=32, n_head=2, n_layer=2)
    params = random_params(config)
    path = llmc.save(tmp_path / "small.bin", config, params)
    header = np.fromfile(path, dtype="<i4", count=256)
    assert list(header[:8]) == [20240326, 3, 16, 300, 2, 2, 32, 384]
    loaded_config, loaded = llmc.load(path)
    assert loaded_config == config
    np.testing.assert_array_equal(loaded["wte"], params["wte"])


def _corrupt(path, tmp_path, index=None, value=None, truncate=0):
    data = bytearray(path.read_bytes())
    if index is not None:
        data[4 * index : 4 * index + 4] = np.int32(value).tobytes()
    out = tmp_path / f"bad{index}_{value}_{truncate}.bin"
    out.write_bytes(bytes(data[: len(data) - truncate]))
    return out


@pytest.mark.parametrize(
    ("index", "value", "truncate", "message"),
    [
        (1, 2, 0, "version 2 is not supported"),  # the pre-padding float32 version
        (1, 4, 0, "version 4 is not supported"),
        (5, 5, 0, "impossible llm.c header"),  # 48 channels do not split into 5 heads
        (7, 50000, 0, "smaller than vocab_size"),
        (7, 0, 0, "before the padded vocabulary"),
        (3, 60000, 0, "smaller than vocab_size"),
        (4, 6, 0, r"its header \(maxT=\d+, V=\d+, Vp=\d+, L=6, C=\d+, float32\) needs \d+; "),  # a layer too many
        (None, None, 4, "truncated or corrupt"),
    ],
)
def test_llmc_bad_headers_are_refused_before_compute(llmc_files, tmp_path, index, value, truncate, message):
    bad = _corrupt(llmc_files[1]["float32"], tmp_path, index, value, truncate)
    with pytest.raises(CheckpointError, match=message) as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value) and "GPT2Config" not in str(e.value)  # the header's fields, not a whole config


def test_llmc_bad_magic_is_not_a_model(tmp_path):
    data_shard = tmp_path / "tiny_shakespeare_val.bin"  # llm.c's token shards have magic 20240520
    data_shard.write_bytes(np.array([20240520, 1, 3] + [0] * 253, "<i4").tobytes() + b"\0" * 6)
    with pytest.raises(CheckpointError, match="bad magic 20240520"):
        llmc.load(data_shard)
    with pytest.raises(CheckpointError, match="too short"):
        (tmp_path / "short.bin").write_bytes(b"\0" * 10)
        llmc.load(tmp_path / "short.bin")


def test_llmc_refuses_other_dtypes(tmp_path, llmc_files):
    config, params = load_checkpoint(llmc_files[1]["float32"])
    with pytest.raises(CheckpointError, match="dtype='float16' cannot be written as llmc"):
        save_checkpoint(tmp_path / "x.bin", config, params, fmt="llmc", dtype="float16")


def test_llmc_run_folders_are_found_by_their_files_headers(llmc_files, tmp_path):
    """llm.c's files are named by what wrote them: train_gpt2.py's gpt2_124M.bin, train_gpt2.cu's checkpoints
    model_00005000.bin in its -o folder (beside state_00005000_00000.bin). A folder holding one was 'no model
    found' (only model.bin, npgpt's own name, was looked for): each is found by its header; several are named
    for the user to pick one, a long run's list cut short."""
    import shutil

    ref, files = llmc_files
    run = tmp_path / "log124M"
    run.mkdir()
    shutil.copy(files["float32"], run / "model_00005000.bin")
    (run / "state_00005000_00000.bin").write_bytes(np.array([20240527, 1] + [0] * 254, "<i4").tobytes())
    assert detect(run) == "llmc"
    config, params = load_checkpoint(run)
    np.testing.assert_allclose(GPT2(config, params).logits(IDS), hf_logits(ref, IDS), atol=1e-4, rtol=0)
    for step in range(10000, 60000, 10000):
        shutil.copy(files["bfloat16"], run / f"model_{step:08d}.bin")
    names = "model_00005000.bin, model_00010000.bin, model_00020000.bin, model_00030000.bin and 2 more"
    with pytest.raises(CheckpointError, match=rf"log124M: holds several model files \({names}\); pass the path"):
        load_checkpoint(run)


@pytest.mark.parametrize(
    "name, magic, what",
    [
        ("state_00005000_00000.bin", 20240527, "llm.c's training state"),
        ("gpt2_124M_debug_state.bin", 20240327, "llm.c's debug state"),
        ("gpt2_tokenizer.bin", 20240328, "llm.c's tokenizer file"),
        ("tiny_shakespeare_val.bin", 20240520, "llm.c's training tokens"),
    ],
)
def test_llmcs_other_files_are_named_as_what_they_are(tmp_path, name, magic, what):
    """The files llm.c writes beside its models (train_gpt2.cu's optimizer state, train_gpt2.py's debug state and
    tokenizer, the token shards of dev/data) were 'neither llm.c's .bin nor a PyTorch checkpoint (...); re-download
    it or re-save it with torch.save': each is named by its header's magic, with the file to pass instead."""
    (tmp_path / name).write_bytes(np.array([magic, 2] + [0] * 254, "<i4").tobytes() + b"\0" * 64)
    said = rf"{name}: {what} .*, not a model; pass llm.c's model file \(gpt2_124M.bin, model_NNNNNNNN.bin\)$"
    with pytest.raises(CheckpointError, match=said):
        load_checkpoint(tmp_path / name)
    r = run_cli("info", str(tmp_path / name))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and what in r.stderr
