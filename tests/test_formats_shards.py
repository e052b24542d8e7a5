"""Hugging Face sharded safetensors, written by transformers' save_pretrained(max_shard_size=...)."""

from __future__ import annotations

import json

import pytest
from checkpoint_writers import close_to_hf

from npgpt.errors import CheckpointError
from npgpt.formats import detect, load_checkpoint

pytest.importorskip("torch")


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
