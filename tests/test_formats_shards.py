"""Hugging Face sharded safetensors, written by transformers' save_pretrained(max_shard_size=...)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from checkpoint_writers import close_to_hf
from conftest import hf_logits

import npgpt
from npgpt.errors import CheckpointError
from npgpt.formats import detect, load_checkpoint

torch = pytest.importorskip("torch")


def test_sharded_safetensors_from_save_pretrained_load_memory_mapped(pair, tmp_path):
    _, ref = pair("odd")
    ref.save_pretrained(tmp_path, max_shard_size="200KB")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(shards) >= 3 and sorted(set(index["weight_map"].values())) == shards
    assert not (tmp_path / "model.safetensors").exists()
    assert detect(tmp_path) == "hf-sharded"
    assert close_to_hf(tmp_path, ref) <= 1e-4
    _, params = load_checkpoint(tmp_path)
    assert not params["wte"].flags.writeable and not params["wte"].flags.owndata  # a view of a mapped shard


def test_missing_shard_is_named(pair, tmp_path):
    _, ref = pair("odd")
    ref.save_pretrained(tmp_path, max_shard_size="200KB")
    victim = sorted(tmp_path.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"{victim.name}: missing shard"):
        load_checkpoint(tmp_path)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"]["transformer.wte.weight"] = "../../etc/passwd"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="not a file name"):
        load_checkpoint(tmp_path)


def test_a_local_directory_of_another_architecture_is_refused(pair, tmp_path):
    _, ref = pair("odd")
    ref.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(
        json.dumps({**cfg, "model_type": "gpt_neo", "architectures": ["GPTNeoForCausalLM"]})
    )
    with pytest.raises(CheckpointError, match=r"model_type is 'gpt_neo', not GPT-2"):
        load_checkpoint(tmp_path)


def test_an_index_without_a_weight_map_says_what_is_missing(tmp_path):
    """It said "(KeyError: 'weight_map')": Python's type name, not what is wrong with the file."""
    from npgpt.formats.hf_files import shard_map

    index = tmp_path / "model.safetensors.index.json"
    index.write_text('{"metadata": {}}')
    with pytest.raises(CheckpointError, match=r"not a shard index .*, but it has no weight_map; re-download it$"):
        shard_map(index)


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_shards_are_read_whole_as_transformers_reads_them(pair, tmp_path, kind):
    """The weight_map names the files; each shard's own header says what is in it. A tensor a shard holds that
    the weight_map leaves out (an index edited or merged by hand) was "1 tensor(s) missing ... the file is
    incomplete", though transformers (and vLLM) read every tensor of each shard named and run the model; now read
    so too, to transformers' logits. A tensor in two shards, of which transformers keeps whichever it reads last,
    is refused naming both."""
    from transformers import GPT2LMHeadModel

    _, ref = pair("odd")
    if kind == "safetensors":
        ref.save_pretrained(tmp_path, max_shard_size="200KB")
    else:  # transformers 5 writes no pickles: what transformers 4's save_pretrained wrote (a committed fixture)
        fixture = Path(__file__).parent / "fixtures" / "transformers4_bin_sharded"
        shutil.copytree(fixture, tmp_path, dirs_exist_ok=True)
        ref = GPT2LMHeadModel.from_pretrained(fixture).eval()
    name = "model.safetensors.index.json" if kind == "safetensors" else "pytorch_model.bin.index.json"
    index = json.loads((tmp_path / name).read_text())
    weight_map = index["weight_map"]
    shard = weight_map["transformer.h.0.ln_1.weight"]
    assert sum(s == shard for s in weight_map.values()) > 1  # the shard stays named by its other tensors
    del weight_map["transformer.h.0.ln_1.weight"]
    (tmp_path / name).write_text(json.dumps(index))
    ids = np.array([[1, 5, 9, 2, 7, 3]])  # within the fixture's 96 tokens
    got = npgpt.load(tmp_path).logits(ids)
    assert np.abs(got - hf_logits(GPT2LMHeadModel.from_pretrained(tmp_path).eval(), ids)).max() <= 1e-4
    assert np.abs(got - hf_logits(ref, ids)).max() <= 1e-4

    other = next(s for s in sorted(set(weight_map.values())) if s != shard)
    weight_map["transformer.h.0.ln_1.weight"] = other
    (tmp_path / name).write_text(json.dumps(index))
    # a second copy of ln_1.weight in another named shard, as a hand-merged folder would hold it
    twin = tmp_path / ("extra.safetensors" if kind == "safetensors" else "extra.bin")

    if kind == "safetensors":
        from safetensors.torch import save_file

        save_file({"transformer.h.0.ln_1.weight": torch.zeros(ref.config.n_embd)}, twin, metadata={"format": "pt"})
    else:
        torch.save({"transformer.h.0.ln_1.weight": torch.zeros(ref.config.n_embd)}, twin)
    weight_map["transformer.h.0.ln_1.weight"] = twin.name
    (tmp_path / name).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"tensor 'transformer.h.0.ln_1.weight' is in two shards, .*{twin.name}"):
        load_checkpoint(tmp_path)
