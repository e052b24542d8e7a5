"""npgpt convert: every format npgpt reads, each written by its own tool, to every format it writes, exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from checkpoint_writers import nanogpt_checkpoint, save_bin

from npgpt.config import GPT2Config
from npgpt.errors import CheckpointError
from npgpt.formats import detect, load_checkpoint
from npgpt.params import flatten

torch = pytest.importorskip("torch")


SMALL = GPT2Config(n_ctx=32, n_embd=48, n_head=3, n_layer=2)  # GPT-2's vocabulary: every format can hold it


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same small model in every format npgpt reads, each written by its own tool."""
    from conftest import random_params
    from transformers import GPT2LMHeadModel

    from npgpt.formats import save_checkpoint

    root = tmp_path_factory.mktemp("sources")
    params = random_params(SMALL, seed=3)
    save_checkpoint(root / "npgpt.safetensors", SMALL, params, "npgpt")
    save_checkpoint(root / "openai", SMALL, params, "openai")
    save_checkpoint(root / "hf", SMALL, params, "hf")
    ref = GPT2LMHeadModel.from_pretrained(root / "hf").eval()
    ref.save_pretrained(root / "hf-sharded", max_shard_size="40KB")
    save_bin(root / "hf-bin", ref)
    (root / "nanogpt").mkdir()
    torch.save(nanogpt_checkpoint(ref, vocab=SMALL.n_vocab), root / "nanogpt" / "ckpt.pt")
    return root, params


@pytest.mark.slow  # a GPT-2-vocabulary model through every format: about a minute in all
@pytest.mark.parametrize("src", ["npgpt", "hf", "hf-sharded", "openai", "hf-bin", "nanogpt"])
def test_convert_every_format_to_every_writable_format(sources, tmp_path, src):
    from npgpt.formats import FORMATS, convert

    root, params = sources
    path = root / ("npgpt.safetensors" if src == "npgpt" else src)
    assert detect(path) == src
    expected = flatten(params)
    # nanoGPT runs its weights with the exact GELU (nn.GELU), which llm.c's and llama.cpp's GPT-2 cannot
    small = dataclasses.replace(SMALL, activation_function="gelu") if src == "nanogpt" else SMALL
    for fmt in FORMATS:
        if src == "nanogpt" and fmt in ("llmc", "gguf"):
            with pytest.raises(CheckpointError, match=r"cannot hold activation_function='gelu'"):
                convert(path, tmp_path / fmt, fmt=fmt)
            continue
        out = convert(path, tmp_path / fmt, fmt=fmt, max_shard_size="40KB" if fmt == "hf-sharded" else None)
        assert detect(out) == fmt, (src, fmt)
        config, converted = load_checkpoint(out)
        assert config == small
        got = flatten(converted)
        assert got.keys() == expected.keys()
        for name in expected:
            assert np.array_equal(got[name], expected[name]), (src, fmt, name)


def test_convert_cli_reads_pickles_and_writes_shards(sources, tmp_path):
    from conftest import run_cli

    root, params = sources
    done = run_cli(
        "convert",
        str(root / "nanogpt" / "ckpt.pt"),
        str(tmp_path / "out"),
        "--to",
        "hf-sharded",
        "--max-shard-size",
        "40KB",
    )
    assert done.returncode == 0, done.stderr
    assert detect(tmp_path / "out") == "hf-sharded"
    assert np.array_equal(load_checkpoint(tmp_path / "out")[1]["wte"], params["wte"])
    done = run_cli("convert", str(root / "hf"), str(tmp_path / "x"), "--to", "nanogpt")
    assert done.returncode != 0 and "reads nanogpt but does not write it" in done.stdout + done.stderr


CHAT = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>"


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A Hugging Face GPT-2 whose tokenizer carries a chat template, both saved by transformers."""
    from conftest import random_params
    from transformers import GPT2LMHeadModel, GPT2TokenizerFast

    from npgpt.formats import save_checkpoint
    from npgpt.tokenizer import default_files

    d = tmp_path_factory.mktemp("chat")
    vocab, merges = default_files()
    tok = GPT2TokenizerFast(vocab=str(vocab), merges=str(merges))
    tok.chat_template = CHAT
    tok.save_pretrained(d)
    GPT2LMHeadModel.from_pretrained(
        save_checkpoint(d / "weights", SMALL, random_params(SMALL, seed=4), "hf")
    ).save_pretrained(d)
    return d


@pytest.mark.parametrize("fmt", ["npgpt", "hf", "hf-sharded", "gguf"])
def test_convert_carries_the_chat_template(chat_model, tmp_path, fmt):
    """npgpt convert dropped a model's chat template: a chat fine-tune converted to GGUF, to npgpt's format or to
    another Hugging Face folder lost the template that llama.cpp's server and transformers' apply_chat_template
    render (llama.cpp's convert_hf_to_gguf.py and save_pretrained both keep it). It is written where each reads it,
    read back by the real tool, and carried on through a second conversion."""
    from transformers import AutoTokenizer

    from npgpt.formats import chat_template, convert

    name = {"npgpt": "out.safetensors", "gguf": "out.gguf"}.get(fmt, "out")
    out = convert(chat_model, tmp_path / name, fmt=fmt, max_shard_size="40KB" if fmt == "hf-sharded" else None)
    if fmt.startswith("hf"):
        assert AutoTokenizer.from_pretrained(out).chat_template == CHAT
    if fmt == "gguf":
        import gguf

        assert gguf.GGUFReader(out).fields["tokenizer.chat_template"].contents() == CHAT
    assert chat_template(out)[1] == CHAT
    again = convert(out, tmp_path / "again.safetensors")
    assert chat_template(again)[1] == CHAT


def test_a_model_without_a_template_removes_the_earlier_models_from_a_hf_folder(chat_model, tmp_path):
    """A folder converted over keeps no earlier model's chat_template.jinja, which transformers would apply to it."""
    from npgpt.formats import chat_template, convert

    convert(chat_model, tmp_path / "out", fmt="hf")
    assert chat_template(tmp_path / "out")[1] == CHAT
    convert(chat_model / "weights", tmp_path / "out", fmt="hf")
    assert chat_template(tmp_path / "out") is None


def test_convert_cli_says_llmc_leaves_the_chat_template_behind(chat_model, tmp_path):
    from conftest import run_cli

    proc = run_cli("convert", str(chat_model), str(tmp_path / "model.bin"), "--to", "llmc")
    assert proc.returncode == 0, proc.stderr
    notice = "the model's chat template (chat_template.jinja's chat_template) is not in"
    assert notice in " ".join(proc.stderr.split()) and "--to npgpt, hf, hf-sharded, gguf carry it" in proc.stderr
