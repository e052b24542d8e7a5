"""PyTorch pickles (pytorch_model.bin) read without torch and without running code (npgpt/formats/torch_pickle.py).

Fixtures are written by the real tools: transformers 4's save_pretrained (committed), torch.save
of a transformers model's state dict (here), and compared with transformers' logits and
torch.load's tensors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from checkpoint_writers import IDS, close_to_hf, save_bin, state_dict
from conftest import hf_logits

import npgpt
from npgpt.errors import CheckpointError
from npgpt.formats import detect, load_checkpoint, torch_pickle
from npgpt.params import flatten

torch = pytest.importorskip("torch")
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pytorch_model_bin_loads_like_transformers(pair, tmp_path, zip_format):
    from transformers import GPT2LMHeadModel

    _, ref = pair("odd")
    save_bin(tmp_path, ref, _use_new_zipfile_serialization=zip_format)
    assert not (tmp_path / "model.safetensors").exists()
    assert detect(tmp_path) == "hf-bin" and detect(tmp_path / "pytorch_model.bin") == "hf-bin"
    assert close_to_hf(tmp_path, ref) <= 1e-4
    wte = load_checkpoint(tmp_path)[1]["wte"]
    assert not wte.flags.writeable and not wte.flags.owndata  # a view of the memory-mapped file
    # the fixture is what transformers itself reads: it loads the same weights from it
    again = GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert np.array_equal(hf_logits(again, IDS), hf_logits(ref, IDS))


@pytest.mark.parametrize("name", ["transformers4_bin", "transformers4_bin_sharded"])
def test_files_transformers_4_wrote_load_to_its_logits(name):
    """save_pretrained(safe_serialization=False) by transformers 4 itself (scripts/make_transformers4_fixture.py)."""
    from transformers import GPT2LMHeadModel

    fixture = FIXTURES / name
    ref = np.load(FIXTURES / "transformers4_bin" / "reference.npz")
    assert str(ref["transformers_version"]).startswith("4.") and detect(fixture) == "hf-bin"
    assert np.abs(npgpt.load(fixture).logits(ref["ids"]) - ref["logits"]).max() <= 1e-4
    again = GPT2LMHeadModel.from_pretrained(fixture, attn_implementation="eager").eval()  # transformers 5 agrees
    assert np.abs(hf_logits(again, ref["ids"]) - ref["logits"]).max() <= 1e-4


def test_pytorch_model_bin_needs_no_torch(tmp_path):
    """The base install (no torch) reads .bin files: torch cannot even be imported here."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now raises ImportError
        import numpy as np
        import npgpt
        ref = np.load({str(FIXTURES / "transformers4_bin" / "reference.npz")!r})
        for name in ("transformers4_bin", "transformers4_bin_sharded"):
            logits = npgpt.load({str(FIXTURES)!r} + "/" + name).logits(ref["ids"])
            print(float(np.abs(logits - ref["logits"]).max()))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [float(x) <= 1e-4 for x in done.stdout.split()] == [True, True]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_pickles_widen_exactly(pair, tmp_path, dtype):
    _, ref = pair("odd")
    sd = {k: v.to(getattr(torch, dtype)) for k, v in state_dict(ref).items()}
    save_bin(tmp_path, ref, sd)
    _, params = load_checkpoint(tmp_path)
    pairs = [("wte", "transformer.wte.weight"), ("blocks.4.attn.c_attn.w", "transformer.h.4.attn.c_attn.weight")]
    for ours, theirs in pairs:
        assert flatten(params)[ours].dtype == np.float32
        assert np.array_equal(flatten(params)[ours], sd[theirs].float().numpy()), ours


def test_strides_and_offsets_into_shared_storage(pair, tmp_path):
    """Transposed views and tensors at offsets inside one storage come back element for element."""
    _, ref = pair("odd")
    sd = state_dict(ref)
    big = torch.cat([v.flatten() for v in sd.values()])  # one storage, every tensor at an offset
    views, at = {}, 0
    for k, v in sd.items():
        views[k] = big[at : at + v.numel()].view(v.shape)
        at += v.numel()
        if v.ndim == 2:  # same values, stored column-major: stride (1, rows)
            views[k] = v.t().contiguous().t()
    assert any(not v.is_contiguous() for v in views.values()) and any(v.storage_offset() for v in views.values())
    save_bin(tmp_path, ref, views)
    _, params = load_checkpoint(tmp_path)
    assert np.array_equal(flatten(params)["blocks.1.attn.c_proj.w"], sd["transformer.h.1.attn.c_proj.weight"].numpy())
    assert np.array_equal(flatten(params)["ln_f.b"], sd["transformer.ln_f.bias"].numpy())
    assert close_to_hf(tmp_path, ref) <= 1e-4


def test_a_tensor_past_its_storage_is_refused(tmp_path):
    t = torch.arange(12.0)
    torch.save({"w": t.as_strided((3, 4), (4, 1), 0)}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    with zipfile.ZipFile(tmp_path / "ok.pt") as z:
        pkl_name = next(n for n in z.namelist() if n.endswith("data.pkl"))
        pkl = z.read(pkl_name)
    bad = pkl.replace(b"K\x03K\x04\x86", b"K\x04K\x04\x86")  # size (3, 4) -> (4, 4): 16 elements of 12
    assert bad != pkl
    with zipfile.ZipFile(tmp_path / "ok.pt") as src, zipfile.ZipFile(tmp_path / "bad.pt", "w") as dst:
        for info in src.infolist():
            dst.writestr(info, bad if info.filename == pkl_name else src.read(info))
    assert torch_pickle.load(tmp_path / "ok.pt")["w"].shape == (3, 4) and data
    with pytest.raises(CheckpointError, match="reaches element 15 of a storage of 12"):
        torch_pickle.load(tmp_path / "bad.pt")


class _Payload:
    """Pickles as a call to os.system: unpickled by torch.load(weights_only=False) it runs."""

    def __init__(self, sentinel: str):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"echo pwned > {self.sentinel}",)


def test_code_in_a_pickle_is_refused_and_never_runs(pair, tmp_path):
    _, ref = pair("odd")
    sentinel = tmp_path / "pwned"
    sd = state_dict(ref)
    sd["transformer.h.0.attn.bias"] = _Payload(str(sentinel))
    save_bin(tmp_path / "model", ref, sd)
    for path in (tmp_path / "model", tmp_path / "model" / "pytorch_model.bin"):
        with pytest.raises(CheckpointError, match=r"refused to unpickle (posix|nt)\.system") as e:
            npgpt.load(path)
        assert "\n" not in str(e.value)
    assert not sentinel.exists()
    # the payload is real: an unrestricted unpickler runs it
    torch.load(tmp_path / "model" / "pytorch_model.bin", weights_only=False)
    assert sentinel.read_text().strip() == "pwned"


def test_setting_state_on_anything_but_an_ordered_dict_is_refused(tmp_path):
    """BUILD on one of the reader's own functions would change it for the whole process."""
    # GLOBAL _rebuild_tensor_v2, state (None, {"__defaults__": ()}), BUILD
    pkl = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__)s\x86b."
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as z:
        z.writestr("evil/data.pkl", pkl)
    with pytest.raises(CheckpointError, match="refused to set the state of a function"):
        torch_pickle.load(tmp_path / "evil.pt")
    assert torch_pickle._rebuild_tensor_v2.__defaults__ == (False, None, None)


@pytest.mark.parametrize(
    "pkl, error",
    [
        (b"\x80\x02\x82\x01.", "refused an extension-code global"),  # EXT1: copyreg's registry, not find_class
        (b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.", "refused to unpickle builtins.eval"),
        (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(K\x01K\x00))tR.", "a tensor's storage is int, not a storage"),
        (b"\x80\x02X\x01\x00\x00\x00xQ.", "unknown persistent id"),
        # bytearray(2**28): a number of bytes to allocate, not its items; set(5): one line, not a TypeError
        (b"\x80\x02c__builtin__\nbytearray\nJ\x00\x00\x00\x10\x85R.", "bytearray in the pickle is built from a number"),
        (b"\x80\x02c__builtin__\nset\nX\x01\x00\x00\x00x]\x86R.", "set in the pickle cannot be built"),
        (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x03\x00\x00\x00hex\x86R.", "not text in Latin-1 or UTF-8"),
        (b"\x80\x02\xff", r"not a readable PyTorch checkpoint \(invalid load key"),  # not "(UnpicklingError: invalid"
    ],
)
def test_hand_made_pickles_are_refused_with_the_file_named(tmp_path, pkl, error):
    with zipfile.ZipFile(tmp_path / "x.pt", "w") as z:
        z.writestr("x/data.pkl", pkl)
    with pytest.raises(CheckpointError, match=error) as e:
        torch_pickle.load(tmp_path / "x.pt")
    assert str(e.value).startswith(str(tmp_path / "x.pt")) and "\n" not in str(e.value)
    assert "Error" not in str(e.value)  # Python's type names say nothing to the user


def test_not_a_torch_file(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"\x80\x02K\x01.")  # a pickle of 1, without torch's magic number
    with pytest.raises(CheckpointError, match="not one torch.save wrote"):
        load_checkpoint(tmp_path / "x.pt")
    (tmp_path / "y.pt").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(CheckpointError, match="a zip archive without its end; the file is cut short"):
        load_checkpoint(tmp_path / "y.pt")


def test_sharded_pytorch_model_bin(pair, tmp_path):
    """pytorch_model.bin.index.json + shards, split by huggingface_hub as transformers 4 did."""
    from huggingface_hub import split_torch_state_dict_into_shards

    _, ref = pair("odd")
    sd = state_dict(ref)
    split = split_torch_state_dict_into_shards(sd, filename_pattern="pytorch_model{suffix}.bin", max_shard_size="200KB")
    assert split.is_sharded
    ref.config.save_pretrained(tmp_path)
    for file, names in split.filename_to_tensors.items():
        torch.save({n: sd[n] for n in names}, tmp_path / file)
    (tmp_path / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": split.metadata, "weight_map": split.tensor_to_filename})
    )
    assert detect(tmp_path) == "hf-bin"
    assert close_to_hf(tmp_path, ref) <= 1e-4


# --- the reader against torch.load itself -----------------------------------------------------

_DTYPES = ["float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8", "bool"]


def test_reader_equals_torch_load_on_random_views(tmp_path):
    """Any dtype, shape, stride and offset, storages shared between tensors, both file layouts:
    what the reader returns equals torch.load(weights_only=True), element for element."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @st.composite
    def views(draw):
        base = torch.randn(draw(st.integers(1, 64))) * 100
        dtype = getattr(torch, draw(st.sampled_from(_DTYPES)))
        base = base.to(dtype)
        shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3))
        stride = [draw(st.integers(0, 5)) for _ in shape]
        extent = sum((n - 1) * s for n, s in zip(shape, stride, strict=True)) if all(shape) else 0
        if extent >= base.numel():
            stride, extent = [0] * len(shape), 0
        offset = draw(st.integers(0, base.numel() - 1 - extent))
        return base, base.as_strided(shape, stride, offset)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(views(), min_size=1, max_size=4), st.booleans())
    def check(pairs, zip_format):
        obj = {f"t{i}": v for i, (_, v) in enumerate(pairs)}
        obj["shared"] = [pairs[0][0], pairs[0][1]]  # the storage itself and a view of it, saved once
        path = tmp_path / "x.pt"
        torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
        theirs = torch.load(path, weights_only=True)
        if any(v.numel() > base.numel() for base, v in pairs):  # an expanded view, possibly huge: refused
            with pytest.raises(CheckpointError, match="an expanded view"):
                torch_pickle.load(path)
            return
        ours = torch_pickle.load(path)
        flat = [(ours[k], theirs[k]) for k in obj if k != "shared"] + list(
            zip(ours["shared"], theirs["shared"], strict=True)
        )
        for a, b in flat:
            expected = b.float().numpy() if b.dtype == torch.bfloat16 else b.numpy()
            assert a.shape == expected.shape and a.dtype == expected.dtype
            assert np.array_equal(a, expected)

    check()


def test_the_weights_file_named_is_the_one_read(pair, tmp_path):
    """A directory holding three sets of weights for one config: the file the user names is read, not
    the one transformers picks first (a pytorch_model.bin path loaded the model.safetensors beside it)."""
    import shutil

    from transformers import GPT2LMHeadModel

    _, ref = pair("tiny")
    ref.save_pretrained(tmp_path)  # config.json + model.safetensors: what the directory loads as
    changed = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(ref.config).eval()
        model.load_state_dict(
            {k: v + torch.randn_like(v) if k.endswith("c_fc.weight") else v for k, v in state_dict(ref).items()}
        )
        changed.append(model)
    torch.save(state_dict(changed[0]), tmp_path / "pytorch_model.bin")
    changed[1].save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    for f in (tmp_path / "sharded").glob("model*.safetensors*"):
        shutil.copy(f, tmp_path / f.name)
    assert close_to_hf(tmp_path, ref) <= 1e-4
    assert close_to_hf(tmp_path / "pytorch_model.bin", changed[0]) <= 1e-4  # was the model.safetensors beside it
    assert close_to_hf(tmp_path / "model.safetensors", ref) <= 1e-4  # was refused: "pass the directory"
    assert close_to_hf(tmp_path / "model.safetensors.index.json", changed[1]) <= 1e-4


def test_a_pickle_shard_path_names_its_directory(pair, tmp_path):
    """A path to one shard of pytorch_model.bin's index was told to save a config.json beside it, which was there."""
    _, ref = pair("tiny")
    save_bin(tmp_path, ref)
    (tmp_path / "pytorch_model.bin").rename(tmp_path / "pytorch_model-00001-of-00001.bin")
    weight_map = {k: "pytorch_model-00001-of-00001.bin" for k in state_dict(ref)}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert close_to_hf(tmp_path, ref) <= 1e-4
    with pytest.raises(CheckpointError, match=r"one shard of the Hugging Face model in .*; pass that directory"):
        load_checkpoint(tmp_path / "pytorch_model-00001-of-00001.bin")


def test_what_torch_load_reads_beside_the_weights_is_read(pair, tmp_path):
    """A training script's notes that torch.load(weights_only=True) reads (bytes, a set, torch.Size, a
    device, a dtype) were refused: "refused to unpickle _codecs.encode" (every bytes under protocol 2)."""
    import collections

    from checkpoint_writers import nanogpt_checkpoint

    _, ref = pair("tiny")
    ckpt = nanogpt_checkpoint(ref, vocab=50257)
    ckpt["notes"] = {
        "tokenizer": b"\x00\xffbytes",
        "tags": {"gpt2", "run-3"},
        "shape": torch.Size([2, 3]),
        "device": torch.device("cpu"),
        "dtype": torch.bfloat16,
        "counts": collections.Counter("aab"),
        "z": 1 + 2j,
    }
    torch.save(ckpt, tmp_path / "ckpt.pt")
    torch.load(tmp_path / "ckpt.pt", weights_only=True)  # torch's safe reader takes it
    notes = torch_pickle.load(tmp_path / "ckpt.pt")["notes"]
    assert notes["tokenizer"] == b"\x00\xffbytes" and notes["tags"] == {"gpt2", "run-3"} and notes["shape"] == (2, 3)
    assert close_to_hf(tmp_path, ref) <= 1e-4


def test_state_dicts_of_pytorchs_wrappers_load_and_other_prefixes_are_named(pair, tmp_path):
    """torch.compile's ``_orig_mod.`` and DistributedDataParallel's ``module.`` before GPT-2's names (a state
    dict saved from the wrapper) load as the model inside; a prefix of a model that holds GPT-2 (a
    Lightning module's ``model.``) is named with the fix. Both were "the config says n_layer=5 but the
    weights hold 0 blocks; the config does not belong to these weights"."""
    from safetensors.torch import save_file

    model, ref = pair("odd")
    # DistributedDataParallel(torch.compile(model)).state_dict()'s names (torch.compile costs seconds to import)
    wrapped = {"module._orig_mod." + k: v for k, v in state_dict(ref).items()}
    save_bin(tmp_path / "ddp", ref, sd=wrapped)
    assert close_to_hf(tmp_path / "ddp", ref) < 1e-4
    ref.save_pretrained(tmp_path / "lightning")
    save_file(
        {"model." + k: v.contiguous() for k, v in state_dict(ref).items()}, tmp_path / "lightning" / "model.safetensors"
    )
    with pytest.raises(CheckpointError, match=r"'model\.' before GPT-2's name .* save the GPT-2 model itself"):
        load_checkpoint(tmp_path / "lightning")


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model"])
def test_a_training_checkpoint_saved_as_pytorch_model_bin_names_where_its_weights_are(pair, tmp_path, key):
    """A training script's dict ({'state_dict': sd, 'epoch': 3}, as PyTorch Lightning and many scripts save it)
    under pytorch_model.bin was 'not a state dict: 'state_dict' is a dict, not a tensor; the file is corrupt or not
    a model's weights: re-download it': no download is wrong. transformers' from_pretrained does not unwrap it
    either; the refusal names the entry and the one line that saves it alone, which then loads."""
    _, ref = pair("odd")
    save_bin(tmp_path, ref, sd={key: state_dict(ref), "epoch": 3, "optimizer": {"lr": 1e-3}})
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path)
    said = str(e.value)
    assert f"a training checkpoint whose '{key}' holds the state dict" in said and "re-download" not in said
    assert f"torch.save(torch.load(FILE)['{key}'], FILE)" in said
    torch.save(torch.load(tmp_path / "pytorch_model.bin")[key], tmp_path / "pytorch_model.bin")
    assert close_to_hf(tmp_path, ref) <= 1e-4


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("kept", [0.5, 0.999])
def test_a_pickle_cut_short_is_told_to_be_downloaded_again(tmp_path, zip_format, kept):
    """A torch.save file whose download stopped part way: the zip one was "not a readable PyTorch checkpoint
    (BadZipFile: File is not a zip file)", and both were told to re-save it with torch.save."""
    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.randn(64, 64), "b": torch.zeros(64)}, whole, _use_new_zipfile_serialization=zip_format)
    cut = tmp_path / "ckpt.pt"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * kept)])
    with pytest.raises(CheckpointError, match=r"ckpt\.pt: .*cut short .*: re-download it"):
        torch_pickle.load(cut)


def test_a_tensor_name_without_a_dot_is_named_not_an_internal_error(pair, tmp_path):
    """A state dict with a tensor of no dotted name beside GPT-2's (a wrapper's ``logit_scale``, saved with
    torch.save or safetensors) ended in "internal error: list index out of range" (exit 1 with no word of the
    file): it is now refused as any unexpected tensor is, by name."""
    from safetensors.torch import save_file

    _, ref = pair("odd")
    sd = {**state_dict(ref), "logit_scale": torch.ones(())}
    save_bin(tmp_path / "bin", ref, sd=sd)
    ref.config.save_pretrained(tmp_path / "safetensors")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "safetensors" / "model.safetensors")
    for folder in ("bin", "safetensors"):
        with pytest.raises(CheckpointError, match=r"unexpected tensor 'logit_scale' for a GPT-2 model$"):
            load_checkpoint(tmp_path / folder)
