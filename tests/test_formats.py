"""npgpt/formats: Hugging Face and npgpt files load exactly; format detection (PyTorch files: test_formats_torch)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, hf_logits, random_params, run_cli

from npgpt.cli.flags import as_flags
from npgpt.config import GPT2Config
from npgpt.errors import CheckpointError, NpgptError
from npgpt.formats import convert, detect, load_checkpoint, npgpt_format, openai_tf, save_checkpoint
from npgpt.formats import hf as hf_format
from npgpt.params import flatten


def assert_same_params(a: dict, b: dict) -> None:
    fa, fb = flatten(a), flatten(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        assert np.array_equal(np.asarray(fa[k]), np.asarray(fb[k])), k


def test_hf_save_pretrained_loads_with_and_without_prefix(pair, tmp_path):
    """Files written by transformers itself: GPT2LMHeadModel (prefixed) and GPT2Model (bare)."""
    from transformers import GPT2Model

    model, ref = pair("odd")
    ref.save_pretrained(tmp_path / "lm")  # transformer.h.0..., tied lm_head dropped
    config, params = load_checkpoint(tmp_path / "lm")
    assert config == model.config and detect(tmp_path / "lm") == "hf"
    assert_same_params(params, model.params)
    GPT2Model.from_pretrained(tmp_path / "lm").save_pretrained(tmp_path / "bare")  # h.0... without prefix
    _, bare = load_checkpoint(tmp_path / "bare")
    assert_same_params(bare, model.params)


def test_hf_task_models_load_their_language_model_or_are_named(pair, tmp_path):
    """GPT2DoubleHeadsModel holds GPT-2's LM head beside a multiple-choice head: it loads as
    GPT2LMHeadModel.from_pretrained loads it. The classifiers, with no LM head, are refused by name
    (all were "unexpected tensor 'multiple_choice_head.summary.b'" and the like)."""
    import torch
    from transformers import GPT2DoubleHeadsModel, GPT2ForSequenceClassification

    model, ref = pair("odd")
    torch.manual_seed(0)
    GPT2DoubleHeadsModel.from_pretrained(ref.name_or_path).save_pretrained(tmp_path / "double")
    _, params = load_checkpoint(tmp_path / "double")
    assert_same_params(params, model.params)
    GPT2ForSequenceClassification.from_pretrained(ref.name_or_path).save_pretrained(tmp_path / "classifier")
    with pytest.raises(CheckpointError, match="'score.weight' is the head of a GPT2ForSequenceClassification"):
        load_checkpoint(tmp_path / "classifier")


def _framework_names(ref, framework: str) -> dict:
    """ref's weights under the names and in the layout that transformers' TF and Flax GPT-2 and mlx-lm save."""
    sd = {k: v.numpy() for k, v in ref.state_dict().items() if not k.endswith((".attn.bias", "lm_head.weight"))}
    matrices = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")
    if framework == "flax":  # FlaxConv1D's kernel is [out, in]; embeddings "embedding", norms "scale"
        out = {}
        for k, v in sd.items():
            if k.endswith(matrices):
                out[k.replace(".weight", ".kernel")] = np.ascontiguousarray(v.T)
            elif k.endswith(("wte.weight", "wpe.weight")):
                out[k.replace(".weight", ".embedding")] = v
            else:
                out[k.replace("ln_1.weight", "ln_1.scale").replace("ln_2.weight", "ln_2.scale")] = v
        return out
    if framework == "mlx":  # mlx-lm's sanitize: nn.Linear [out, in], every name under model.
        return {
            "model." + k.removeprefix("transformer."): np.ascontiguousarray(v.T if k.endswith(matrices) else v)
            for k, v in sd.items()
        }
    return {k.replace(".", "/") + ":0": v for k, v in sd.items()}  # TensorFlow's variable names


@pytest.mark.parametrize("framework", ["tf", "flax", "mlx"])
def test_safetensors_of_another_framework_are_refused_by_their_format(pair, tmp_path, framework):
    """A model.safetensors that transformers' TFGPT2/FlaxGPT2 save_pretrained or mlx-lm wrote (metadata format tf,
    flax, mlx) was read as PyTorch's: TensorFlow's names ended in "internal error: list index out of range",
    Flax's and mlx-lm's in "N tensor(s) missing, e.g. 'wte'" or "'model.' before GPT-2's name ... remove the
    prefix", advice that would then read [out, in] matrices as Conv1D's [in, out]. Each is now refused by its
    format, with the way to a PyTorch checkpoint (transformers 4's from_tf / from_flax). An "mlx" file with
    GPT2LMHeadModel's names is read, as transformers 4 reads it."""
    from safetensors.numpy import save_file

    _, ref = pair("odd")
    ref.config.save_pretrained(tmp_path)
    save_file(_framework_names(ref, framework), tmp_path / "model.safetensors", metadata={"format": framework})
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path)
    said = str(e.value)
    assert "\n" not in said and f"safetensors metadata format is {framework!r}" in said
    assert (
        ("from_" + framework) in said if framework != "mlx" else "the Hugging Face model it was converted from" in said
    )
    if framework == "mlx":
        sd = {k: v.numpy() for k, v in ref.state_dict().items() if not k.endswith(".attn.bias")}
        save_file(sd, tmp_path / "model.safetensors", metadata={"format": "mlx"})
        assert np.abs(load_checkpoint(tmp_path)[1]["wte"] - sd["transformer.wte.weight"]).max() == 0


def test_hf_buffers_and_tied_head_are_dropped(tmp_path):
    from safetensors.numpy import load_file, save_file

    config = CONFIGS["tiny"]
    hf_format.save(tmp_path, config, random_params(config))
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"]
    tensors["transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, 8, 8), np.float32))
    tensors["transformer.h.0.attn.masked_bias"] = np.array(-1e4, np.float32)
    save_file(tensors, tmp_path / "model.safetensors")
    _, params = load_checkpoint(tmp_path)
    assert params["wte"].shape == (config.n_vocab, config.n_embd)


def test_a_tied_head_saved_as_lm_head_alone_is_wte(pair, tmp_path):
    """safetensors' own save_model keeps one name of a tied pair, the first in sorted order: a tied
    GPT2LMHeadModel's file holds lm_head.weight and no transformer.wte.weight. transformers ties wte to
    it and loads the model exactly; npgpt refused it as incomplete ("1 tensor(s) missing, e.g. 'wte'")."""
    import shutil

    from safetensors.numpy import load_file
    from safetensors.torch import save_model
    from transformers import GPT2LMHeadModel

    model, ref = pair("odd")
    shutil.copy(Path(ref.name_or_path) / "config.json", tmp_path)
    save_model(ref, str(tmp_path / "model.safetensors"))
    assert "lm_head.weight" in load_file(tmp_path / "model.safetensors")
    assert "transformer.wte.weight" not in load_file(tmp_path / "model.safetensors")
    back = GPT2LMHeadModel.from_pretrained(tmp_path).state_dict()
    assert all(np.array_equal(back[name].numpy(), value.numpy()) for name, value in ref.state_dict().items())
    config, params = load_checkpoint(tmp_path)
    assert config == model.config
    assert_same_params(params, model.params)


@pytest.mark.parametrize(
    "method, packed",
    [
        ("gptq", {"qweight": np.int32, "qzeros": np.int32, "scales": np.float16, "g_idx": np.int32}),
        ("bitsandbytes", {"weight": np.int8, "SCB": np.float32}),
    ],
)
def test_a_quantized_hf_checkpoint_is_refused_by_its_quantization_config(tmp_path, method, packed):
    """A config.json with quantization_config (GPTQ's packed int32 matrices, bitsandbytes' int8 ones):
    transformers runs the weights through that method's kernels. npgpt called the file corrupt (an int32
    tensor) or told it to save with model.float(), which a quantized transformers model refuses."""
    from safetensors.numpy import load_file, save_file

    config = CONFIGS["tiny"]
    hf_format.save(tmp_path, config, random_params(config))
    tensors = load_file(tmp_path / "model.safetensors")
    for name in [n for n in tensors if n.endswith(".mlp.c_fc.weight")]:
        del tensors[name]
        for leaf, dtype in packed.items():
            tensors[name.removesuffix("weight") + leaf] = np.zeros((4, 4), dtype)
    save_file(tensors, tmp_path / "model.safetensors")
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, "quantization_config": {"quant_method": method}}))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path)
    message = str(e.value)
    assert "\n" not in message and f"quantized with {method!r}" in message and "dequantize()" in message


def test_writing_hf_over_an_earlier_model_leaves_only_the_new_weights(tmp_path):
    """Resharding left the old shards beside the new ones, and one file left the old index and shards."""
    config = CONFIGS["tiny"]
    out = tmp_path / "out"
    out.mkdir()
    for mine in ("README.md", "extra.safetensors", "model-00001-of-00002.bin"):  # never the writer's to delete
        (out / mine).write_text("mine")

    def files() -> set[str]:
        return {p.name for p in out.iterdir()} - {"README.md", "extra.safetensors", "model-00001-of-00002.bin"}

    for seed, size in enumerate(["20KB", "60KB", None, "20KB"]):
        params = random_params(config, seed=seed)
        hf_format.save(out, config, params, max_shard_size=size)
        tokenizer = {"vocab.json", "merges.txt", "tokenizer_config.json"}
        if size is None:
            assert files() == {"config.json", "model.safetensors", *tokenizer}
        else:
            shards = set(json.loads((out / "model.safetensors.index.json").read_text())["weight_map"].values())
            assert files() == {"config.json", "model.safetensors.index.json", *shards, *tokenizer}, size
        assert_same_params(load_checkpoint(out)[1], params)
    assert (out / "README.md").read_text() == "mine"


def test_writing_hf_over_an_earlier_model_leaves_none_of_its_tokenizer(tmp_path):
    """Converted into a folder transformers had saved a fine-tune in (an added token '[SEP]' in its tokenizer.json,
    its own eos in generation_config.json, a chat template), a plain GPT-2 kept those files: transformers read a
    tokenizer of 50258 tokens and the fine-tune's eos for it, and npgpt refused the folder it had just written
    ("the tokenizer's added token '[SEP]' is id 50257, but the weights have 50257 token rows"). The earlier model's
    tokenizer files that the new one does not write are removed with its weights."""
    import transformers

    from npgpt.formats import chat_template, tokenizer_spec
    from npgpt.tokenizer import default_files

    torch = pytest.importorskip("torch")
    vocab, merges = default_files()
    tok = transformers.GPT2TokenizerFast(vocab=str(vocab), merges=str(merges))
    tok.add_tokens(["[SEP]"])
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    torch.manual_seed(0)
    ft = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=len(tok), n_positions=16, n_embd=8, n_head=2, n_layer=1)
    )
    ft.generation_config.eos_token_id = 50257
    ft.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert {"tokenizer.json", "generation_config.json", "chat_template.jinja"} <= {p.name for p in tmp_path.iterdir()}
    config = GPT2Config(n_ctx=16, n_embd=8, n_head=2, n_layer=1)
    save_checkpoint(tmp_path, config, random_params(config), fmt="hf")
    assert len(transformers.AutoTokenizer.from_pretrained(tmp_path)) == 50257
    assert transformers.GPT2LMHeadModel.from_pretrained(tmp_path).generation_config.eos_token_id == 50256
    assert tokenizer_spec(tmp_path) is None and chat_template(tmp_path) is None
    assert load_checkpoint(tmp_path)[0] == config


@pytest.mark.parametrize("fmt", ["hf", "hf-sharded"])
def test_a_converted_hf_folder_carries_gpt2s_tokenizer_for_transformers(tmp_path, fmt):
    """`npgpt convert SRC DIR --to hf` wrote config.json and the weights only: transformers 5's
    AutoTokenizer.from_pretrained(DIR) then built a GPT-2 tokenizer of no tokens, silently, and
    pipeline("text-generation", model=DIR) generated nothing (transformers 4 refused the folder). Now
    GPT-2's vocab.json and merges.txt are written beside the weights, as in openai-community/gpt2, with
    tokenizer_config.json's model_max_length the model's context; npgpt reads the folder back as before."""
    from transformers import AutoTokenizer

    config = GPT2Config(n_ctx=32, n_embd=16, n_head=2, n_layer=1)  # GPT-2's vocabulary
    params = random_params(config, seed=1)
    out = save_checkpoint(
        tmp_path / "out", config, params, fmt, max_shard_size="100KB" if fmt == "hf-sharded" else None
    )
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == 50257 and tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.model_max_length == config.n_ctx
    assert tokenizer.decode([15496, 11, 995]) == "Hello, world"
    back, loaded = load_checkpoint(out)
    assert back == config
    assert_same_params(loaded, params)


@pytest.mark.parametrize("fmt", ["hf-sharded", "openai"])
def test_a_write_that_fails_part_way_leaves_the_earlier_model_whole(tmp_path, monkeypatch, fmt):
    """Sharded at the same size, the new shards have the old ones' names: each was renamed into place as
    it was written, so a full disk at the second shard left a new first shard beside an old second one
    under the old index and config.json (silently mixed weights). Now nothing is renamed until the set
    is written in full (files.write_together), and config.json is renamed last."""
    import errno

    from npgpt import files

    config = CONFIGS["tiny"]
    old, new = random_params(config, seed=1), random_params(config, seed=2)
    kwargs = {"max_shard_size": "20KB"} if fmt == "hf-sharded" else {}
    save_checkpoint(tmp_path, config, old, fmt=fmt, **kwargs)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    written = []
    real = files.temp_beside

    def disk_fills(path):  # the third file of the new set finds the disk full
        written.append(path)
        if len(written) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path)

    monkeypatch.setattr(files, "temp_beside", disk_fills)
    with pytest.raises(NpgptError, match="no space left on device|No space left on device"):
        save_checkpoint(tmp_path, config, new, fmt=fmt, **kwargs)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # every old file, no temp files
    assert_same_params(load_checkpoint(tmp_path)[1], old)
    monkeypatch.undo()
    save_checkpoint(tmp_path, config, new, fmt=fmt, **kwargs)
    assert_same_params(load_checkpoint(tmp_path)[1], new)


@pytest.mark.parametrize("fmt", ["hf", "hf-sharded", "openai"])
def test_ctrl_c_while_a_folder_is_renamed_into_place_leaves_a_whole_model(tmp_path, monkeypatch, fmt):
    """Ctrl-C between withdrawing the old config.json and the last rename left a folder with neither model
    (no config.json: nothing loads). The new set is whole on disk by then, so its renames finish first."""
    from npgpt import files

    config = CONFIGS["tiny"]
    old, new = random_params(config, seed=1), random_params(config, seed=2)
    kwargs = {"max_shard_size": "20KB"} if fmt == "hf-sharded" else {}
    save_checkpoint(tmp_path, config, old, fmt=fmt, **kwargs)
    real, calls = files.publish, []

    def ctrl_c(tmp, path):
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt
        real(tmp, path)

    monkeypatch.setattr(files, "publish", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, config, new, fmt=fmt, **kwargs)
    assert_same_params(load_checkpoint(tmp_path)[1], new)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_one_weight_under_two_names_is_refused(pair, tmp_path):
    """GPT2LMHeadModel's transformer.wte.weight and GPT2Model's wte.weight in one file: one of them was
    used silently (the bare one, zeros here: logits off by 0.7 from transformers')."""
    import torch
    from safetensors.torch import save_file

    _, ref = pair("odd")
    ref.save_pretrained(tmp_path)
    tensors = {k: v.contiguous() for k, v in ref.state_dict().items() if k != "lm_head.weight"}
    save_file(
        {**tensors, "wte.weight": torch.zeros_like(tensors["transformer.wte.weight"])}, tmp_path / "model.safetensors"
    )
    with pytest.raises(CheckpointError, match="'transformer.wte.weight' and 'wte.weight' are the same weight twice"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("fmt", ["npgpt", "gguf"])
def test_a_weight_beyond_float16s_range_is_refused_before_writing(tmp_path, fmt):
    """It was written as infinity, and the file then refused at load as corrupt."""
    if fmt == "gguf":
        pytest.importorskip("gguf")
    config = CONFIGS["tiny"]
    params = random_params(config)
    params["blocks"][1]["attn"]["c_attn"]["w"][0, 0] = -65520.0  # float16 rounds it to -inf (65519 to -65504)
    with pytest.raises(CheckpointError, match="'blocks.1.attn.c_attn.w' as float16: it holds 65520"):
        save_checkpoint(tmp_path / "out", config, params, fmt=fmt, dtype="float16")
    assert not (tmp_path / "out").exists()
    params["blocks"][1]["attn"]["c_attn"]["w"][0, 0] = -65519.0
    _, back = load_checkpoint(save_checkpoint(tmp_path / "out", config, params, fmt=fmt, dtype="float16"))
    assert back["blocks"][1]["attn"]["c_attn"]["w"][0, 0] == -65504.0


@pytest.mark.parametrize(
    ("where", "value", "refused"),
    [
        ("attn.c_attn.w", 65520.0, "as float16 (q8_0 stores it so: its rows of 48 values"),  # [144, 48] in GGUF
        ("mlp.c_proj.w", 8.4e6, "as q8_0: it holds 8.4e+06, beyond what a block's float16 scale"),  # [48, 192]
    ],
)
def test_a_q8_0_weight_beyond_float16s_range_is_refused_before_writing(tmp_path, where, value, refused):
    """Rows of 48 values do not split into Q8_0's 32-value blocks and are stored as float16, where
    65520 became infinity (a block's scale, its largest magnitude / 127, too): the finished file was
    then refused at load as corrupt."""
    pytest.importorskip("gguf")
    config = CONFIGS["odd"]
    params = random_params(config)
    mlp_or_attn, name, leaf = where.split(".")
    params["blocks"][1][mlp_or_attn][name][leaf][0, 0] = -value
    with pytest.raises(CheckpointError, match=re.escape(f"'blocks.1.{where}' {refused}")):
        save_checkpoint(tmp_path / "out", config, params, fmt="gguf", dtype="q8_0")
    assert not (tmp_path / "out").exists()
    params["blocks"][1][mlp_or_attn][name][leaf][0, 0] = -value / 2
    _, back = load_checkpoint(save_checkpoint(tmp_path / "out", config, params, fmt="gguf", dtype="q8_0"))
    assert np.isclose(back["blocks"][1][mlp_or_attn][name][leaf][0, 0], -value / 2, rtol=1e-3)


@pytest.mark.parametrize("spec", ["[1, 2]", '"abc"', '{"chars": 5}', '{"type": "char", "chars": "aab"}'])
def test_a_damaged_tokenizer_in_an_npgpt_file_is_refused_at_load_naming_the_file(tmp_path, spec):
    """A tokenizer entry that was JSON but no vocabulary (a list, repeated characters) was read as it was: convert
    copied it into the new file (or called the model character-level for --to hf), load refused it without
    naming the file. Every reader of the header refuses it now, naming the file and the fix."""
    import npgpt

    config = CONFIGS["tiny"]
    path = npgpt_format.save(tmp_path / "m.safetensors", config, random_params(config), metadata={"tokenizer": spec})
    said = f"{path}: .*re-train or re-convert it"
    with pytest.raises(CheckpointError, match=said):
        npgpt_format.tokenizer_spec(path)
    with pytest.raises(CheckpointError, match=said):
        npgpt.load(path)
    for fmt in ("npgpt", "hf"):
        with pytest.raises(CheckpointError, match=said):
            convert(path, tmp_path / f"out-{fmt}", fmt=fmt)
        assert not (tmp_path / f"out-{fmt}").exists()


@pytest.mark.parametrize("name", ["gpt2-0.5", "model.bin", "run.v2"])
def test_an_npgpt_file_under_another_name_loads_with_its_tokenizer(tmp_path, name):
    """`npgpt convert SRC gpt2-0.5` wrote a file that detect refused (its name does not end in .safetensors)."""
    config = CONFIGS["tiny"]
    params = random_params(config)
    src = save_checkpoint(tmp_path / "src.safetensors", config, params)
    out = convert(src, tmp_path / name)
    assert out == tmp_path / name and detect(out) == "npgpt"
    assert_same_params(load_checkpoint(out)[1], params)
    spec = {"type": "char", "chars": "ab"}  # a character-level model's vocabulary, read from the file
    npgpt_format.save(out, config, params, metadata={"tokenizer": json.dumps(spec)})
    assert npgpt_format.tokenizer_spec(out) == spec
    (tmp_path / "notes.v2").write_text("# not a model")
    with pytest.raises(CheckpointError, match="not a model file npgpt knows"):
        detect(tmp_path / "notes.v2")
    assert npgpt_format.tokenizer_spec(tmp_path / "notes.v2") is None


def test_npgpt_format_roundtrip_is_memory_mapped(tmp_path):
    config = CONFIGS["odd"]
    params = random_params(config)
    path = npgpt_format.save(tmp_path / "m.safetensors", config, params)
    loaded_config, loaded = load_checkpoint(path)
    assert loaded_config == config
    assert_same_params(loaded, params)
    wte = loaded["wte"]
    assert not wte.flags.owndata and not wte.flags.writeable  # a view of the mapped file, not a copy
    npgpt_format.save(tmp_path / "dir" / "model.safetensors", config, params)
    assert detect(tmp_path / "dir") == "npgpt"


def test_float16_storage_loads_as_float32(tmp_path):
    config = CONFIGS["tiny"]
    params = random_params(config)
    path = npgpt_format.save(tmp_path / "h.safetensors", config, params, dtype="float16")
    _, loaded = load_checkpoint(path)
    assert loaded["wte"].dtype == np.float32
    np.testing.assert_allclose(loaded["wte"], params["wte"], atol=1e-3)


def test_truncated_npgpt_file_is_an_error(tmp_path):
    config = CONFIGS["tiny"]
    path = npgpt_format.save(tmp_path / "t.safetensors", config, random_params(config))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_wrong_shapes_are_named(tmp_path):
    config = CONFIGS["tiny"]
    hf_format.save(tmp_path, config, random_params(config))
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["n_embd"] = 64
    cfg["n_head"] = 4
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape") as e:
        load_checkpoint(tmp_path)
    # the tensor, both shapes and the fields they come from; not the whole config's 300 characters
    assert str(e.value).endswith(
        "tensor 'wte' has shape (50257, 32), expected (50257, 64) from the config's n_vocab=50257, n_embd=64; "
        "the config does not belong to these weights"
    ), str(e.value)
    cfg["n_embd"], cfg["n_head"], cfg["n_inner"] = 32, 2, 64  # the MLP's width: d_mlp, not n_embd
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path)
    assert "'blocks.0.mlp.c_fc.w' has shape (32, 128), expected (32, 64) from the config's n_embd=32, d_mlp=64;" in str(
        e.value
    ), str(e.value)


@pytest.mark.parametrize(("damage", "message"), [("folder", r"unreadable \(Is a directory\)"), (b"{", "not JSON")])
def test_an_unreadable_hf_config_json_is_one_line_naming_the_fix(tmp_path, damage, message):
    """A folder where config.json should be was an internal IsADirectoryError."""
    config = CONFIGS["tiny"]
    hf_format.save(tmp_path, config, random_params(config))
    (tmp_path / "config.json").unlink()
    if damage == "folder":
        (tmp_path / "config.json").mkdir()
    else:
        (tmp_path / "config.json").write_bytes(damage)
    with pytest.raises(CheckpointError, match=rf"config.json: {message}.*; re-download the model$") as e:
        hf_format.load(tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("dtype", ["F8_E4M3", "F8_E5M2", "I8"])
def test_a_safetensors_dtype_npgpt_does_not_read_names_the_fix(tmp_path, dtype):
    """An 8-bit tensor (float8, int8) was refused as "unsupported dtype" with no way forward."""
    config = CONFIGS["tiny"]
    hf_format.save(tmp_path, config, random_params(config))
    tensors = npgpt_format.read_safetensors(tmp_path / "model.safetensors")[0]
    name = "transformer.h.0.ln_1.weight"
    header, chunks, at = {}, [], 0
    for key, arr in tensors.items():  # the file as safetensors lays it out, one tensor of one-byte ``dtype``
        raw = np.zeros(arr.size, np.uint8).tobytes() if key == name else np.ascontiguousarray(arr).tobytes()
        kind = dtype if key == name else "F32"
        header[key] = {"dtype": kind, "shape": list(arr.shape), "data_offsets": [at, at + len(raw)]}
        chunks.append(raw)
        at += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    (tmp_path / "model.safetensors").write_bytes(len(head).to_bytes(8, "little") + head + b"".join(chunks))
    with pytest.raises(
        CheckpointError, match=rf"'{name}' has unsupported dtype {dtype} .*save the model as float32"
    ) as e:
        load_checkpoint(tmp_path)
    assert "\n" not in str(e.value)


def test_unknown_directory_says_what_was_expected(tmp_path):
    with pytest.raises(CheckpointError, match="hparams.json"):
        detect(tmp_path)
    with pytest.raises(CheckpointError, match="no such"):
        detect(tmp_path / "missing")


@pytest.mark.parametrize(
    "name, framework, flag", [("tf_model.h5", "TensorFlow", "from_tf"), ("flax_model.msgpack", "Flax", "from_flax")]
)
@pytest.mark.parametrize("passed", ["folder", "file"])
def test_tensorflow_and_flax_weights_are_named_with_the_conversion(tmp_path, name, framework, flag, passed):
    """A Hub folder holding only TensorFlow or Flax weights (older GPT-2 uploads): it was "no model found" (the
    folder) or "not a model file npgpt knows" (the file); now the weights are named, with how to convert them."""
    hf_format.save(tmp_path, CONFIGS["tiny"], random_params(CONFIGS["tiny"]))
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / name).write_bytes(b"\x89HDF\r\n\x1a\n" if name.endswith(".h5") else b"\x83\xa4")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path if passed == "folder" else tmp_path / name)
    message = str(e.value)
    assert "\n" not in message and f"{name}: {framework} weights" in message and f"{flag}=True" in message


def test_convert_between_all_formats_keeps_logits(pair, tmp_path):
    model, ref = pair("odd")
    src = tmp_path / "hf"
    hf_format.save(src, model.config, model.params)
    convert(src, tmp_path / "openai", fmt="openai")
    convert(tmp_path / "openai", tmp_path / "m.safetensors", fmt="npgpt")
    convert(tmp_path / "m.safetensors", tmp_path / "hf2", fmt="hf")
    for path in [tmp_path / "openai", tmp_path / "m.safetensors", tmp_path / "hf2"]:
        _, params = load_checkpoint(path)
        assert_same_params(params, model.params)
    assert detect(tmp_path / "openai") == "openai"
    _, params = openai_tf.load(tmp_path / "openai")
    ids = np.array([[1, 2, 3, 4]])
    from npgpt.model import gpt2

    logits, _ = gpt2(ids, params, model.config)
    assert np.abs(logits - hf_logits(ref, ids)).max() <= 1e-4


@pytest.mark.slow
def test_loading_124m_costs_about_the_weights(tmp_path):
    """Memory-mapped loading: peak RSS grows by about the file's size, not twice it."""
    from npgpt.config import PRESETS
    from npgpt.params import init_params

    path = npgpt_format.save(tmp_path / "124M.safetensors", PRESETS["124M"], init_params(PRESETS["124M"]))
    script = textwrap.dedent(f"""
        import resource, numpy as np
        import npgpt
        from npgpt.tokenizer import Tokenizer
        Tokenizer()
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        m = npgpt.load({str(path)!r})
        m.logits(np.array([[1, 2, 3, 4]]))
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
    """)
    grown = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert grown <= 1.15 * path.stat().st_size, (grown, path.stat().st_size)


@pytest.mark.parametrize("size", ["0", "abc", "12XB"])
def test_a_bad_shard_size_is_refused_before_the_source_is_read(tmp_path, size):
    with pytest.raises(CheckpointError, match=r"max_shard_size='.*e\.g\. 500MB") as e:
        convert(tmp_path / "no-such-source", tmp_path / "out", fmt="hf-sharded", max_shard_size=size)
    assert as_flags(e.value).startswith(f"--max-shard-size {size}")  # the CLI's user typed the flag
    with pytest.raises(CheckpointError, match="cannot be written as llmc"):
        convert(tmp_path / "no-such-source", tmp_path / "out", fmt="llmc", dtype="float16")
    assert not (tmp_path / "out").exists()  # nothing half-written (an empty folder was left before)


@pytest.mark.parametrize("name", ["model.bin", "gpt2-tiny.safetensors"])
def test_a_folder_holding_an_npgpt_file_under_another_name_is_found(tmp_path, name):
    """`npgpt convert SRC DIR/model.bin` writes npgpt's format under that name, and a renamed file keeps it:
    passing the folder was "no model found", though the file itself loads. Its tokenizer is read too."""
    import npgpt
    from npgpt.char_tokenizer import CharTokenizer
    from npgpt.formats import model_files

    tok = CharTokenizer.from_text(["In the beginning God created the heaven and the earth."])
    config = CONFIGS["tiny"]
    params = random_params(config)
    file = save_checkpoint(tmp_path / "run" / name, config, params, tokenizer=tok.to_spec())
    assert file == tmp_path / "run" / name and detect(tmp_path / "run") == "npgpt"
    assert model_files(tmp_path / "run") == [file]
    _, back = load_checkpoint(tmp_path / "run")
    for key, value in flatten(params).items():
        np.testing.assert_array_equal(flatten(back)[key], value)
    model = npgpt.load(tmp_path / "run")
    assert isinstance(model.tokenizer, CharTokenizer) and model.tokenizer.chars == tok.chars
    save_checkpoint(tmp_path / "run" / "second.safetensors", config, params)
    with pytest.raises(CheckpointError, match=r"holds several npgpt model files \(.+\); pass the path of the one"):
        detect(tmp_path / "run")


@pytest.mark.parametrize("fmt", ["npgpt", "hf", "llmc", "openai", "gguf"])
def test_writing_under_a_file_is_one_line(tmp_path, fmt):
    if fmt == "gguf":
        pytest.importorskip("gguf")
    config = CONFIGS["tiny"]
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    with pytest.raises(NpgptError, match=r"a part of the path is a file, not a folder \(.*notes\.txt\)"):
        save_checkpoint(tmp_path / "notes.txt" / "model.out", config, random_params(config), fmt=fmt)
    assert (tmp_path / "notes.txt").read_text() == "a file, not a folder"


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("ENOSPC", "No space left on device; free some space or choose a folder you can write to"),
        ("EACCES", "permission denied; choose a folder you can write to"),
    ],
)
def test_a_failed_save_says_it_as_every_writer_does(tmp_path, monkeypatch, code, why):
    """save_checkpoint had its own twin of files' message, blind to the errno: a full disk was not told to free
    space."""
    import errno

    import npgpt.formats

    num = getattr(errno, code)

    def fail(*args, **kwargs):
        raise OSError(num, os.strerror(num))

    monkeypatch.setattr(npgpt.formats, "_write", fail)
    config = CONFIGS["tiny"]
    with pytest.raises(CheckpointError) as e:
        save_checkpoint(tmp_path / "out", config, random_params(config), fmt="hf")
    assert str(e.value) == f"cannot write {tmp_path / 'out'}: {why}"


@pytest.fixture
def read_only_disk(tmp_path):
    from conftest import small_disk

    with small_disk(tmp_path / "ro", "1m", read_only=True) as mnt:
        yield mnt


@pytest.mark.parametrize("fmt", ["npgpt", "hf", "hf-sharded", "llmc", "openai", "gguf"])
def test_writing_onto_a_read_only_disk_is_one_line(read_only_disk, tmp_path, fmt):
    """A folder to create there (every format) or a bundle to write into it (openai): an OSError was an
    internal error."""
    if fmt == "gguf":
        pytest.importorskip("gguf")
    config = CONFIGS["tiny"]
    for dst in (read_only_disk / "out", read_only_disk):
        with pytest.raises(NpgptError, match="(?i)read-only file system; choose a folder you can write to"):
            save_checkpoint(dst, config, random_params(config), fmt=fmt)
    assert os.listdir(read_only_disk) == []
    if fmt == "hf":
        src = save_checkpoint(tmp_path / "src.safetensors", config, random_params(config))
        r = run_cli("convert", str(src), str(read_only_disk / "out"), "--to", fmt)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "read-only file system" in r.stderr.lower(), r.stderr


@pytest.mark.parametrize("size", ["-5MB", "0MB", "0.0001KB", 0, -1, "infMB", "nanMB"])
def test_a_shard_size_that_is_not_positive_is_refused_before_writing(tmp_path, size):
    """The Hub's parser takes "-5MB" and "0MB" (a split on them writes one tensor per shard) and
    raises OverflowError on "infMB": each is one line naming the option, and nothing is written."""
    from npgpt.registry import bundled_path

    with pytest.raises(CheckpointError, match="max_shard_size=") as e:
        convert(bundled_path(), tmp_path / "out", fmt="hf-sharded", max_shard_size=size)
    assert as_flags(e.value).startswith("--max-shard-size ")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name, fmt, hint, flags",
    [
        ("model.gguf", "npgpt", "add fmt='gguf', or name it model.safetensors", "add --to gguf, or"),
        ("model.GGUF", "llmc", "add fmt='gguf', or name it model.bin", "add --to gguf, or"),
        ("model.safetensors", "gguf", "add fmt='npgpt', or name it model.gguf", "add --to npgpt, or"),
        ("model.safetensors", "hf", "fmt='hf' writes a folder", "--to hf writes a folder"),
        # nanoGPT's and PyTorch's names: npgpt reads these pickles and writes none; torch.load refused what it wrote
        (
            "ckpt.pt",
            "npgpt",
            "PyTorch checkpoint's name, and npgpt writes no PyTorch checkpoints; name it ckpt.safetensors",
            "name it ckpt.safetensors",
        ),
        ("model.PTH", "llmc", "name it model.bin", "name it model.bin"),
        ("model.ckpt", "gguf", "name it model.gguf", "name it model.gguf"),
    ],
)
def test_a_file_name_of_another_format_is_refused_before_reading(tmp_path, name, fmt, hint, flags):
    """`npgpt convert SRC model.gguf` (the default --to npgpt) wrote npgpt's format under a name
    llama.cpp and Ollama take for GGUF, where they then refused it."""
    with pytest.raises(CheckpointError, match=re.escape(hint)) as e:
        convert(tmp_path / "no-such-source", tmp_path / name, fmt=fmt)
    assert flags in as_flags(e.value), as_flags(e.value)  # npgpt convert's user typed --to
    assert not (tmp_path / name).exists()
    config = CONFIGS["tiny"]
    with pytest.raises(CheckpointError, match=re.escape(hint)):
        save_checkpoint(tmp_path / name, config, random_params(config), fmt=fmt)


def test_a_peft_adapter_is_told_to_merge_into_its_base_model(tmp_path):
    """A LoRA adapter as PEFT's save_pretrained writes it (adapter_config.json + adapter_model.safetensors):
    its folder was "no model found", its weights file "a safetensors file without npgpt's config"."""
    from safetensors.numpy import save_file

    adapter = tmp_path / "lora"
    adapter.mkdir()
    peft_config = {"peft_type": "LORA", "base_model_name_or_path": "gpt2", "r": 8, "target_modules": ["c_attn"]}
    (adapter / "adapter_config.json").write_text(json.dumps(peft_config))
    lora = "base_model.model.transformer.h.0.attn.c_attn.lora_{}.weight"
    save_file(
        {lora.format("A"): np.zeros((8, 32), np.float32), lora.format("B"): np.zeros((96, 8), np.float32)},
        adapter / "adapter_model.safetensors",
    )
    for path in (adapter, adapter / "adapter_model.safetensors", adapter / "adapter_config.json"):
        with pytest.raises(CheckpointError, match=r"a PEFT adapter .*merge_and_unload\(\)"):
            load_checkpoint(path)
    r = run_cli("info", str(adapter))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "merge_and_unload" in r.stderr


@pytest.mark.parametrize("fmt", ["hf", "hf-sharded", "npgpt"])
def test_a_peft_adapter_beside_the_models_weights_is_refused_not_ignored(tmp_path, fmt):
    """A LoRA adapter saved in the model's folder: transformers (with PEFT) applies it on top of the weights,
    npgpt loaded the weights alone and said nothing. It refuses, naming the two ways on."""
    config = CONFIGS["tiny"]
    kwargs = {"max_shard_size": "20KB"} if fmt == "hf-sharded" else {}
    save_checkpoint(tmp_path / "m", config, random_params(config), fmt=fmt, **kwargs)
    peft_config = {"peft_type": "LORA", "base_model_name_or_path": "gpt2", "r": 8, "target_modules": ["c_attn"]}
    (tmp_path / "m" / "adapter_config.json").write_text(json.dumps(peft_config))
    weights = [p for p in (tmp_path / "m").iterdir() if p.name in ("model.safetensors", "model.safetensors.index.json")]
    for path in (tmp_path / "m", *([] if fmt == "npgpt" else weights)):  # an npgpt file is whole by itself
        with pytest.raises(CheckpointError, match=r"a PEFT adapter \(adapter_config.json\) beside the model") as e:
            load_checkpoint(path)
        assert "merge_and_unload()" in str(e.value) and "move adapter_config.json out" in str(e.value)
    (tmp_path / "m" / "adapter_config.json").unlink()
    assert load_checkpoint(tmp_path / "m")[0] == config  # the choice made: the model alone


def test_a_tokenizer_saved_beside_the_model_must_be_gpt2s(tmp_path):
    """npgpt encodes with GPT-2's BPE: a model saved with another tokenizer (a BPE trained on other text, a
    WordPiece one) loaded and read wrong tokens, writing gibberish. GPT-2's own, as transformers saves it
    (tokenizer.json) or as the Hub ships it (vocab.json + merges.txt), loads."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from npgpt.tokenizer import default_files

    config = CONFIGS["tiny"]
    hf_format.save(tmp_path / "hub", config, random_params(config))
    encoder, bpe = default_files()
    (tmp_path / "hub" / "vocab.json").write_bytes(encoder.read_bytes())
    (tmp_path / "hub" / "merges.txt").write_bytes(bpe.read_bytes())
    load_checkpoint(tmp_path / "hub")
    hf_format.save(tmp_path / "saved", config, random_params(config))
    AutoTokenizer.from_pretrained(tmp_path / "hub").save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "tokenizer.json").is_file()
    load_checkpoint(tmp_path / "saved")

    bpe_trained = Tokenizer(models.BPE())
    bpe_trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    bpe_trained.train_from_iterator(["the quick brown fox"] * 8, trainers.BpeTrainer(initial_alphabet=alphabet))
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.train_from_iterator(["the quick brown fox"] * 8, trainers.WordPieceTrainer(special_tokens=["[UNK]"]))
    for name, tokenizer, said in [("bpe", bpe_trained, "tokens, not GPT-2's"), ("wp", wordpiece, "a WordPiece")]:
        hf_format.save(tmp_path / name, config, random_params(config))
        PreTrainedTokenizerFast(tokenizer_object=tokenizer).save_pretrained(tmp_path / name)
        with pytest.raises(CheckpointError, match=f"tokenizer.json: .*{said}.*GPT-2's tokenizer only"):
            load_checkpoint(tmp_path / name)
    (tmp_path / "bert").mkdir()
    hf_format.save(tmp_path / "bert", config, random_params(config))
    for gpt2s in ("vocab.json", "merges.txt", "tokenizer_config.json"):  # the writer's GPT-2 tokenizer: none here
        (tmp_path / "bert" / gpt2s).unlink()
    (tmp_path / "bert" / "vocab.txt").write_text("[PAD]\n[UNK]\nthe\n")  # BertTokenizer's, as some GPT-2s use
    with pytest.raises(CheckpointError, match=r"vocab.txt: the vocabulary of a tokenizer that is not GPT-2's"):
        load_checkpoint(tmp_path / "bert")


def test_gpt2s_vocabulary_with_other_merges_is_refused_naming_the_merge(tmp_path):
    """A tokenizer with GPT-2's vocabulary but other BPE merges (here GPT-2's without "Ġt he", as merges.txt and
    in tokenizer.json) loaded: only the vocabulary was compared with GPT-2's, so npgpt encoded " the" as GPT-2's
    one token 262 where transformers, with the saved merges, splits it in two; the model read other tokens
    than it was trained on. The merges are now compared too, in either file, naming the first that differs."""
    import json

    from transformers import AutoTokenizer

    from npgpt.tokenizer import default_files, gpt2_merges

    config = CONFIGS["tiny"]
    hf_format.save(tmp_path, config, random_params(config))
    encoder, bpe = default_files()
    (tmp_path / "vocab.json").write_bytes(encoder.read_bytes())
    merges = [m for m in gpt2_merges() if m != "Ġt he"]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    assert AutoTokenizer.from_pretrained(tmp_path)(" the")["input_ids"] != [262]  # transformers reads them
    with pytest.raises(
        CheckpointError, match=r"merges.txt: BPE merges that are not GPT-2's \(merge 6 is 'e r', GPT-2's 'Ġt he'\)"
    ):
        load_checkpoint(tmp_path)
    (tmp_path / "merges.txt").write_bytes(bpe.read_bytes())
    load_checkpoint(tmp_path)  # GPT-2's own, "# #" (merge 1979) and all
    AutoTokenizer.from_pretrained(tmp_path).save_pretrained(tmp_path)
    fast = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    fast["model"]["merges"] = [m.split(" ") for m in merges]  # tokenizers' pairs
    (tmp_path / "tokenizer.json").write_text(json.dumps(fast), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"tokenizer.json: BPE merges that are not GPT-2's \(merge 6 is "):
        load_checkpoint(tmp_path)


def test_gpt2s_merges_in_an_order_that_splits_text_alike_load_and_one_that_does_not_is_refused(tmp_path):
    """GPT-2's merges with two that never meet traded (npgpt.merge_order: 'Ġ t' and 'Ġ a', 'h e' and 'i n': none
    makes a part of the other, none can overlap the other) split every text as GPT-2's order does, in
    transformers too; they were refused as "not GPT-2's". They load now. An order in which two that meet trade
    places ('t h' before 'Ġ t': transformers splits " the" otherwise) is still refused, naming the two."""
    from transformers import AutoTokenizer

    from npgpt.tokenizer import Tokenizer, default_files, gpt2_merges

    config = CONFIGS["tiny"]
    hf_format.save(tmp_path, config, random_params(config))
    (tmp_path / "vocab.json").write_bytes(default_files()[0].read_bytes())
    merges = list(gpt2_merges())
    merges[0], merges[1], merges[2], merges[3] = merges[1], merges[0], merges[3], merges[2]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    load_checkpoint(tmp_path)
    text = (Path(__file__).parent / "fixtures" / "kjv_heldout.txt").read_text(encoding="utf-8")[:20000]
    text += " the attention in heat, at a wheel; 'the' THE then"
    assert AutoTokenizer.from_pretrained(tmp_path)(text)["input_ids"] == Tokenizer().encode(text)

    merges = ["t h", *(m for m in gpt2_merges() if m != "t h")]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    assert AutoTokenizer.from_pretrained(tmp_path)(" the")["input_ids"] != [262]
    with pytest.raises(CheckpointError, match=r"merges.txt: GPT-2's BPE merges, but 't h' before 'Ġ t', which split"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("fmt", "where"),
    [
        (fmt, where)
        for fmt in ("npgpt", "hf", "hf-sharded", "llmc", "openai", "gguf")
        for where in ("under-a-file", "cannot-be-created", "a-folder-as-the-file")
        if not (where == "a-folder-as-the-file" and fmt in ("hf", "hf-sharded", "openai"))  # these write a folder
    ],
)
def test_a_destination_that_cannot_be_written_is_refused_before_the_source_is_read(tmp_path, monkeypatch, fmt, where):
    """convert read the whole source (gigabytes for 1558M, finite checks and all) and only then found the
    destination unwritable."""
    import npgpt.formats

    def not_read(path, *args, **kwargs):
        raise AssertionError("the source was read")

    monkeypatch.setattr(npgpt.formats, "load_checkpoint", not_read)
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    suffix = {"npgpt": ".safetensors", "llmc": ".bin", "gguf": ".gguf"}.get(fmt, "")
    if where == "a-folder-as-the-file":
        dst = tmp_path / f"out{suffix}"
        dst.mkdir()
        (dst / ({"npgpt": "model.safetensors", "llmc": "model.bin", "gguf": "model.gguf"}[fmt])).mkdir()
    else:
        parent = tmp_path / "notes.txt" if where == "under-a-file" else "/proc/npgpt-no-such-folder"
        dst = Path(parent) / f"out{suffix}"
    with pytest.raises(CheckpointError, match="cannot write") as e:
        convert(tmp_path / "src.safetensors", dst, fmt=fmt)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("held", "fmt"), [("hf", "openai"), ("hf", "llmc"), ("openai", "gguf"), ("npgpt", "openai")])
def test_writing_into_a_folder_holding_a_model_of_another_format_is_refused(tmp_path, held, fmt):
    """The new files were written beside the old model, "wrote" was printed, and loading the folder went on
    reading the old model (detect looks for model.safetensors + config.json before hparams.json)."""
    if "gguf" in (held, fmt):
        pytest.importorskip("gguf")
    old, new = (
        GPT2Config(n_ctx=16, n_embd=32, n_head=2, n_layer=1),
        GPT2Config(n_ctx=16, n_embd=32, n_head=2, n_layer=2),
    )
    save_checkpoint(tmp_path / "m", old, random_params(old), fmt=held)
    src = save_checkpoint(tmp_path / "new.safetensors", new, random_params(new))
    message = f"already holds a model in {held} format, which would still be read in place of the {fmt} one"
    with pytest.raises(CheckpointError, match=message):
        convert(src, tmp_path / "m", fmt=fmt)
    with pytest.raises(CheckpointError, match=message):
        save_checkpoint(tmp_path / "m", new, random_params(new), fmt=fmt)
    assert load_checkpoint(tmp_path / "m")[0] == old and detect(tmp_path / "m") == held


@pytest.mark.parametrize(
    ("held", "fmt"),
    [
        ("hf", "hf"),
        ("hf", "hf-sharded"),
        ("npgpt", "npgpt"),
        ("openai", "openai"),
        # npgpt's file and Hugging Face's are both model.safetensors: one replaces the other, as before
        ("npgpt", "hf"),
        ("hf", "npgpt"),
        ("npgpt", "hf-sharded"),
        ("hf-sharded", "npgpt"),
    ],
)
def test_writing_over_a_model_of_the_same_format_replaces_it(tmp_path, held, fmt):
    old, new = (
        GPT2Config(n_ctx=16, n_embd=32, n_head=2, n_layer=1),
        GPT2Config(n_ctx=16, n_embd=32, n_head=2, n_layer=2),
    )
    save_checkpoint(
        tmp_path / "m", old, random_params(old), fmt=held, max_shard_size="20KB" if held == "hf-sharded" else None
    )
    src = save_checkpoint(tmp_path / "new.safetensors", new, random_params(new))
    convert(src, tmp_path / "m", fmt=fmt, max_shard_size="20KB" if fmt == "hf-sharded" else None)
    assert load_checkpoint(tmp_path / "m")[0] == new


@pytest.mark.parametrize("magic, kind", [(0x67676D6C, "GGML"), (0x67676D66, "GGMF"), (0x67676A74, "GGJT")])
@pytest.mark.parametrize("name", ["ggml-model-gpt-2-117M.bin", "model.gguf", "folder"])
def test_a_file_of_ggufs_predecessors_is_named_as_one(tmp_path, magic, kind, name):
    """ggml's GPT-2 example files (ggml-model-gpt-2-117M.bin, written by ggml's convert-ckpt-to-ggml.py:
    struct.pack("i", 0x67676d6c), then the hyperparameters) were 'neither llm.c's .bin nor a PyTorch checkpoint;
    re-download it or re-save it with torch.save', and a folder holding one 'no model found': neither a fresh
    download nor torch.save helps. They are named as GGUF's predecessors, with the way to a GGUF."""
    import struct

    path = tmp_path / ("ggml-model-f16.bin" if name == "folder" else name)
    hparams = struct.pack("iiiiii", 50257, 1024, 768, 12, 12, 1)  # n_vocab, n_ctx, n_embd, n_head, n_layer, ftype
    path.write_bytes(struct.pack("i", magic) + (b"" if kind == "GGML" else struct.pack("i", 1)) + hparams * 4)
    said = f"{path}: a {kind} file (ggml's and llama.cpp's format before GGUF, August 2023), which npgpt does not read"
    with pytest.raises(CheckpointError, match=re.escape(said) + r".*convert_hf_to_gguf\.py, or load that original$"):
        load_checkpoint(tmp_path if name == "folder" else path)


def test_a_safetensors_file_given_by_its_path_is_read_or_told_what_it_lacks(pair, tmp_path):
    """A transformers model's weights under another name (safetensors' save_model(model, 'gpt2.safetensors')
    beside its config.json) were 'a safetensors file without npgpt's config; pass the Hugging Face directory that
    holds it', and that directory was 'no model found'. The file named is read with the config.json beside it, as
    model.safetensors given by its path is (vLLM reads every *.safetensors of a folder); a shard is told to pass its
    folder, a file without config.json beside it to add one."""
    from safetensors.torch import save_model

    model, ref = pair("odd")
    ref.save_pretrained(tmp_path / "named")
    (tmp_path / "named" / "model.safetensors").unlink()
    save_model(ref, str(tmp_path / "named" / "gpt2.safetensors"))
    config, params = load_checkpoint(tmp_path / "named" / "gpt2.safetensors")
    assert config == model.config
    assert_same_params(params, model.params)
    said = (
        f"{tmp_path / 'named'}: holds config.json and weights under another name than model.safetensors "
        f"(gpt2.safetensors), which transformers does not look for; pass the weights' path: "
        f"{tmp_path / 'named' / 'gpt2.safetensors'}"
    )
    with pytest.raises(CheckpointError, match=re.escape(said) + "$"):  # it was 'no model found'
        load_checkpoint(tmp_path / "named")

    ref.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    shard = sorted((tmp_path / "sharded").glob("model-*.safetensors"))[0]
    with pytest.raises(
        CheckpointError, match=re.escape(f"{shard}: one shard of the Hugging Face model in ") + ".*pass that directory$"
    ):
        load_checkpoint(shard)

    (tmp_path / "alone").mkdir()
    os.replace(tmp_path / "named" / "gpt2.safetensors", tmp_path / "alone" / "gpt2.safetensors")
    for name in ("gpt2.safetensors", "model.safetensors"):
        os.replace(next((tmp_path / "alone").glob("*.safetensors")), tmp_path / "alone" / name)
        with pytest.raises(
            CheckpointError, match=r"and no config\.json beside it; add the model's Hugging Face config"
        ):
            load_checkpoint(tmp_path / "alone" / name)


def test_a_hugging_face_cache_folder_names_its_snapshot(pair, tmp_path):
    """The Hub's cache keeps a repository as models--ORG--NAME/{blobs, refs/main, snapshots/HASH} (the files of a
    snapshot link into blobs/); that folder, the one a user finds under ~/.cache/huggingface/hub, was 'no model
    found; expected model.safetensors ...'. It names the snapshot to pass, refs/main's (huggingface_hub's
    revision of a plain download), and that snapshot loads."""
    model, ref = pair("odd")
    repo = tmp_path / "models--someone--tiny-gpt2"
    ref.save_pretrained(tmp_path / "saved")
    (repo / "blobs").mkdir(parents=True)
    files = [f.name for f in (tmp_path / "saved").iterdir()]
    for name in files:
        os.replace(tmp_path / "saved" / name, repo / "blobs" / name)
    for commit in ("0" * 40, "a" * 40):
        (repo / "snapshots" / commit).mkdir(parents=True)
        for name in files:
            (repo / "snapshots" / commit / name).symlink_to(Path("../../blobs") / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    snapshot = repo / "snapshots" / ("a" * 40)
    said = (
        f"{repo}: a Hugging Face cache folder (the Hub's models--ORG--NAME), whose model is in a snapshot; "
        f"pass that folder: {snapshot}"
    )
    with pytest.raises(CheckpointError, match=re.escape(said) + "$"):
        load_checkpoint(repo)
    config, params = load_checkpoint(snapshot)
    assert config == model.config
    assert_same_params(params, model.params)


@pytest.mark.parametrize("shard_size", [None, "20KB"])
def test_weights_saved_as_a_variant_load_from_their_path_and_the_folder_names_it(pair, tmp_path, shard_size):
    """save_pretrained(DIR, variant='fp16') writes model.fp16.safetensors (sharded: model.safetensors.index.fp16.json
    and model.fp16-0000N-of-0000M.safetensors), which from_pretrained(DIR, variant='fp16') reads. The folder was
    'no model found; expected model.safetensors ...', the file 'pass the Hugging Face directory', the index 'not a
    model file npgpt knows'. The folder names the weights' path, which loads; a shard names the index."""
    model, ref = pair("odd")
    ref.save_pretrained(tmp_path, variant="fp16", **({"max_shard_size": shard_size} if shard_size else {}))
    weights = tmp_path / ("model.safetensors.index.fp16.json" if shard_size else "model.fp16.safetensors")
    said = (
        f"{tmp_path}: holds Hugging Face weights saved as a variant (save_pretrained(..., variant=...): "
        f"{weights.name}), which transformers reads only when told the variant; pass the weights' path: {weights}"
    )
    with pytest.raises(CheckpointError, match=re.escape(said) + "$"):
        load_checkpoint(tmp_path)
    config, params = load_checkpoint(weights)
    assert config == model.config
    assert_same_params(params, model.params)
    if shard_size:
        shard = sorted(tmp_path.glob("model.fp16-*-of-*.safetensors"))[0]
        with pytest.raises(CheckpointError, match=re.escape(f"pass the index: {weights}") + "$"):
            load_checkpoint(shard)


def test_a_pickled_variant_loads_from_its_path(pair, tmp_path):
    """transformers 4's save_pretrained(DIR, variant='fp16', safe_serialization=False) wrote pytorch_model.fp16.bin
    (transformers 5 writes safetensors only, so torch.save writes it here): the folder names it, and its path, which
    was 'not a nanoGPT checkpoint', loads."""
    import torch

    model, ref = pair("odd")
    ref.config.save_pretrained(tmp_path)
    torch.save({k: v.clone() for k, v in ref.state_dict().items()}, tmp_path / "pytorch_model.fp16.bin")
    with pytest.raises(
        CheckpointError, match=re.escape(f"pass the weights' path: {tmp_path / 'pytorch_model.fp16.bin'}")
    ):
        load_checkpoint(tmp_path)
    config, params = load_checkpoint(tmp_path / "pytorch_model.fp16.bin")
    assert config == model.config
    assert_same_params(params, model.params)
