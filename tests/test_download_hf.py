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
from npgpt.formats.hf_files import TOKENIZER_FILES

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
            *TOKENIZER_FILES,
            "model.safetensors",
            "model.safetensors.index.json",
            *shards,
        ]
    if kind == "bin":
        weights = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"]
        assert fetched == ["config.json", *TOKENIZER_FILES, *weights]
    assert np.abs(npgpt.load(path).logits(IDS) - hf_logits(ref, IDS)).max() <= 1e-4
    assert npgpt.load("org/tiny").source == str(path)


def _gpt2_tokenizer():
    from transformers import GPT2TokenizerFast

    from npgpt.tokenizer import default_files

    vocab, merges = default_files()
    return GPT2TokenizerFast(vocab=str(vocab), merges=str(merges))


def test_a_fine_tunes_tokenizer_is_fetched_and_kept(tmp_path, hub):
    """Only config.json and the weights were fetched: a fine-tune's added token ('[SEP]' at 50257, saved by
    transformers beside the model) was lost, and npgpt encoded '[SEP]' as GPT-2's four tokens where transformers
    reads one. The tokenizer files are fetched and checked as a local folder's, the added tokens kept."""
    import torch
    import transformers

    tok = _gpt2_tokenizer()
    tok.add_tokens(["[SEP]"])
    torch.manual_seed(0)
    ref = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=len(tok), n_positions=16, n_embd=8, n_head=2, n_layer=1)
    )
    ref.save_pretrained(tmp_path / "repo")
    tok.save_pretrained(tmp_path / "repo")
    fetched = hub(tmp_path / "repo")
    download.download_hf("org/tiny")
    assert fetched[: 1 + len(TOKENIZER_FILES)] == ["config.json", *TOKENIZER_FILES]
    text = "hello[SEP] world"
    assert npgpt.load("org/tiny").tokenizer.encode(text) == tok(text)["input_ids"] == [31373, 50257, 995]


CHAT = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>"


def test_a_chat_template_is_fetched_and_kept(tmp_path, hub):
    """The converted file kept no chat template: a chat fine-tune's chat_template.jinja (what transformers'
    save_pretrained writes) was not fetched, so npgpt chat and serve could not say the model has a template of its
    own. It is fetched with the tokenizer files and kept in the converted file's metadata."""
    import torch
    import transformers

    from npgpt.formats import chat_template

    tok = _gpt2_tokenizer()
    tok.chat_template = CHAT
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=len(tok), n_positions=16, n_embd=8, n_head=2, n_layer=1)
    ).save_pretrained(tmp_path / "repo")
    tok.save_pretrained(tmp_path / "repo")
    assert (tmp_path / "repo" / "chat_template.jinja").is_file()
    hub(tmp_path / "repo")
    target = download.download_hf("org/tiny")
    assert chat_template(target) == ("its metadata's chat_template", CHAT)


def test_a_gpt2_of_another_vocabulary_is_refused_before_any_weights(tmp_path, hub):
    """A GPT-2 trained with its own BPE (other languages' GPT-2s ship one of GPT-2's size) downloaded and ran
    with GPT-2's English tokenizer, silently reading wrong tokens; a local folder of it is refused. It is refused
    now, from its tokenizer files, before the weights are fetched."""
    import transformers

    repo = tmp_path / "repo"
    transformers.GPT2Config(vocab_size=50257, n_positions=16, n_embd=8, n_head=2, n_layer=1).save_pretrained(repo)
    vocab = json.loads(_gpt2_tokenizer().backend_tokenizer.to_str())["model"]["vocab"]
    swapped = {**vocab, "the": vocab["Ġthe"], "Ġthe": vocab["the"]}  # another BPE's ranks of the same tokens
    (repo / "vocab.json").write_text(json.dumps(swapped), encoding="utf-8")
    (repo / "model.safetensors").write_bytes(b"not fetched")
    fetched = hub(repo)
    with pytest.raises(CheckpointError, match=r"vocab.json: a vocabulary of 50257 tokens, not GPT-2's") as e:
        download.download_hf("org/tiny")
    assert "model.safetensors" not in fetched and "\n" not in str(e.value)


def test_other_architectures_are_refused_before_any_weights(tmp_path, hub):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (repo / "model.safetensors").write_bytes(b"not fetched")
    fetched = hub(repo)
    with pytest.raises(CheckpointError, match=r"model_type is 'llama', not GPT-2") as e:
        download.download_hf("org/tiny")
    assert fetched == ["config.json"] and "\n" not in str(e.value)


def test_a_gpt2_model_type_with_its_own_code_is_refused_before_any_weights(tmp_path, hub):
    """bigcode/santacoder's config.json says model_type gpt2 with auto_map to its own modeling code
    (GPT2LMHeadCustomModel, multi-query attention, run by transformers with trust_remote_code=True): the download
    fetched its weights (gigabytes), then failed on a tensor's shape ('the config does not belong to these
    weights'). The config is refused, naming the code, before any weights are fetched, and so is the folder."""
    import transformers

    from npgpt.formats import load_checkpoint

    repo = tmp_path / "repo"
    config = transformers.GPT2Config(vocab_size=512, n_positions=16, n_embd=8, n_head=2, n_layer=1)
    config.architectures = ["GPT2LMHeadCustomModel"]
    config.auto_map = {
        "AutoConfig": "configuration_gpt2_mq.GPT2CustomConfig",
        "AutoModelForCausalLM": "modeling_gpt2_mq.GPT2LMHeadCustomModel",
    }
    transformers.GPT2LMHeadModel(config).save_pretrained(repo)
    fetched = hub(repo)
    said = r"auto_map names the model's own code \(modeling_gpt2_mq.GPT2LMHeadCustomModel\), which transformers runs"
    with pytest.raises(CheckpointError, match=said) as e:
        download.download_hf("org/tiny")
    assert fetched == ["config.json"] and "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match=said):
        load_checkpoint(repo)


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


@pytest.mark.parametrize("revision", ["a b", "v1..2", "feat/", ".hidden", "x\ny", "main~1", "tag.lock", "a:b"])
def test_a_revision_no_git_name_can_have_is_refused_before_the_hub(hub, tmp_path, revision):
    """download --hf REPO --revision "a b" (a shell variable of two words) went to the Hub, and offline came back as
    'cannot download org/tiny/config.json ... (Name or service not known)', naming the network. A revision no
    branch, tag or commit can have (git's check-ref-format rules) is refused in one line before anything is
    fetched; a good one (a branch, a tag, refs/pr/1, a commit hash) is used as before."""
    fetched = hub(tmp_path / "empty")
    with pytest.raises(NpgptError, match=r"^revision .* is not a branch, tag or commit name: .*check the revision"):
        download.download_hf("org/tiny", revision=revision)
    assert fetched == []
    for good in ("main", "v1.0", "refs/pr/1", "0123abcd" * 5):
        with pytest.raises(NpgptError, match="config.json"):  # the empty fake Hub has no config.json: it was asked
            download.download_hf("org/tiny", revision=good)
    assert fetched == ["config.json"] * 4
