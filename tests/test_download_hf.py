"""`npgpt download --hf` on every layout a GPT-2 repo ships, against a fake Hub (never the network).

The fake replaces ``huggingface_hub.hf_hub_download``: it serves the files transformers (or
torch.save) wrote into a folder, and raises the Hub's own EntryNotFoundError for the others.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import hf_logits

import npgpt
from npgpt import download
from npgpt.errors import CheckpointError, NpgptError

IDS = np.array([[464, 2068, 7586, 21831, 50256, 11]])


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """``hub(folder)`` serves ``folder`` as repo org/tiny; returns the list of files asked for."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    monkeypatch.setenv("NPGPT_HOME", str(tmp_path / "home"))
    fetched: list[str] = []

    def serve(folder):
        def fake_hf_hub_download(repo_id, filename, *, revision=None, tqdm_class=None):
            fetched.append(filename)
            if not (folder / filename).is_file():
                raise EntryNotFoundError(f"404 Client Error. Entry Not Found for url: .../{filename}")
            return str(folder / filename)

        monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
        return fetched

    return serve


def write_repo(kind: str, ref, folder) -> None:
    import torch

    if kind == "safetensors":
        ref.save_pretrained(folder)
    elif kind == "sharded":
        ref.save_pretrained(folder, max_shard_size="200KB")
    else:  # what save_pretrained(safe_serialization=False) wrote before transformers 5
        ref.config.save_pretrained(folder)
        torch.save(ref.state_dict(), folder / "pytorch_model.bin")


@pytest.mark.parametrize("kind", ["safetensors", "sharded", "bin"])
def test_every_layout_downloads_and_converts(pair, tmp_path, hub, kind):
    _, ref = pair("odd")
    write_repo(kind, ref, tmp_path / "repo")
    fetched = hub(tmp_path / "repo")
    path = download.download_hf("org/tiny")
    assert fetched[0] == "config.json"
    if kind == "sharded":
        shards = sorted(p.name for p in (tmp_path / "repo").glob("model-*.safetensors"))
        assert len(shards) >= 3 and fetched == [
            "config.json",
            "model.safetensors",
            "model.safetensors.index.json",
            *shards,
        ]
    if kind == "bin":
        assert fetched == ["config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"]
    assert np.abs(npgpt.load(path).logits(IDS) - hf_logits(ref, IDS)).max() <= 1e-4
    assert npgpt.load("org/tiny").source == str(path)


def test_other_architectures_are_refused_before_any_weights(tmp_path, hub):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (repo / "model.safetensors").write_bytes(b"not fetched")
    fetched = hub(repo)
    with pytest.raises(CheckpointError, match=r"model_type is 'llama', not GPT-2") as e:
        download.download_hf("org/tiny")
    assert fetched == ["config.json"] and "\n" not in str(e.value)


def test_a_config_nested_too_deeply_is_one_line_before_any_weights(tmp_path, hub):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text("[" * 100_000)  # was an internal RecursionError
    fetched = hub(repo)
    with pytest.raises(CheckpointError, match=r"org/tiny/config.json is not valid JSON \(nested too deeply") as e:
        download.download_hf("org/tiny")
    assert fetched == ["config.json"] and "\n" not in str(e.value)


def test_a_home_that_cannot_be_written_is_refused_before_any_file_is_fetched(tmp_path, hub, pair, monkeypatch):
    """The weights (gigabytes) were fetched into Hugging Face's cache, then the conversion found no place to go."""
    _, ref = pair("odd")
    write_repo("safetensors", ref, tmp_path / "repo")
    fetched = hub(tmp_path / "repo")
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("NPGPT_HOME", str(tmp_path / "file" / "home"))
    with pytest.raises(NpgptError, match="a part of the path is a file, not a folder.*set NPGPT_HOME to a folder") as e:
        download.download_hf("org/tiny")
    assert fetched == [] and "\n" not in str(e.value)


def test_repo_without_weights_is_one_line(tmp_path, hub, pair):
    _, ref = pair("odd")
    ref.config.save_pretrained(tmp_path / "repo")
    hub(tmp_path / "repo")
    with pytest.raises(NpgptError, match="org/tiny has no GPT-2 weights"):
        download.download_hf("org/tiny")
    assert not (tmp_path / "home" / "hf" / "org--tiny").exists()
