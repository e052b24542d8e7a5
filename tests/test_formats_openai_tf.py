"""OpenAI's TensorFlow checkpoints, read and written without TensorFlow.

The fixture in tests/fixtures/openai_tiny/ was written by real TensorFlow
(scripts/make_tf_fixture.py), with reference.npz holding the tensors TensorFlow reads back.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npgpt.config import GPT2Config
from npgpt.errors import CheckpointError, NpgptError
from npgpt.formats import openai_tf
from npgpt.model import gpt2
from npgpt.params import flatten, init_params

FIXTURE = Path(__file__).parent / "fixtures" / "openai_tiny"
DATA = "model.ckpt.data-00000-of-00001"
INDEX = "model.ckpt.index"


@pytest.fixture
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "reference.npz") as npz:
        return {name: npz[name] for name in npz.files}


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A writable copy of the fixture, to damage."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "openai_tiny"))


def test_read_bundle_gives_exactly_what_tensorflow_wrote(reference):
    tensors = openai_tf.read_bundle(FIXTURE / "model.ckpt")
    assert tensors.keys() == reference.keys()
    for name, expected in reference.items():
        assert tensors[name].dtype == expected.dtype and tensors[name].shape == expected.shape
        assert np.array_equal(tensors[name], expected), name


def test_load_maps_every_name_and_squeezes_conv1d_weights(reference):
    config, params = openai_tf.load(FIXTURE)
    assert config == GPT2Config(n_vocab=300, n_ctx=32, n_embd=32, n_head=2, n_layer=2)
    flat = flatten(params)
    table = openai_tf.name_table(config)
    assert sorted(table) == sorted(reference)
    for theirs, ours in table.items():
        expected = reference[theirs][0] if theirs.endswith("/w") and "/h" in theirs else reference[theirs]
        assert flat[ours].dtype == np.float32 and np.array_equal(flat[ours], expected), theirs


def test_logits_match_hugging_face(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from npgpt.formats import hf

    config, params = openai_tf.load(FIXTURE)
    hf.save(tmp_path, config, params)
    model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = np.random.default_rng(0).integers(0, config.n_vocab, size=(2, config.n_ctx))
    with torch.no_grad():
        expected = model(torch.from_numpy(ids)).logits.numpy()
    logits, _ = gpt2(ids, params, config=config)
    assert np.abs(logits - expected).max() <= 1e-4


def test_save_writes_the_same_bytes_as_tensorflow(tmp_path):
    openai_tf.save(tmp_path, *openai_tf.load(FIXTURE))
    for name in (INDEX, DATA, "checkpoint", "hparams.json"):
        assert (tmp_path / name).read_bytes() == (FIXTURE / name).read_bytes(), name


def test_a_saved_gpt2_vocabulary_model_carries_the_encoder_files_openais_code_reads(tmp_path):
    """`npgpt convert SRC DIR --to openai` wrote the checkpoint and hparams.json only, but OpenAI's gpt-2 code
    (src/encoder.py's get_encoder) and picoGPT read encoder.json and vocab.bpe from the same folder, as
    OpenAI's downloads hold them: both failed with FileNotFoundError. Now GPT-2's two files are written too."""
    import json

    from npgpt.tokenizer import default_files

    config = GPT2Config(n_ctx=16, n_embd=16, n_head=2, n_layer=1)  # GPT-2's vocabulary
    params = init_params(config, seed=1)
    openai_tf.save(tmp_path, config, params)
    for name, vendored in zip(("encoder.json", "vocab.bpe"), default_files(), strict=True):
        assert (tmp_path / name).read_bytes() == vendored.read_bytes(), name
    encoder = json.loads((tmp_path / "encoder.json").read_text(encoding="utf-8"))  # as get_encoder reads them
    merges = [tuple(m.split()) for m in (tmp_path / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:-1]]
    assert len(encoder) == 50257 and encoder["Hello"] == 15496 and len(merges) == 50000
    loaded_config, loaded = openai_tf.load(tmp_path)
    assert loaded_config == config and np.array_equal(flatten(loaded)["wte"], flatten(params)["wte"])


def test_save_then_load_round_trips_an_odd_config(tmp_path):
    config = GPT2Config(n_vocab=77, n_ctx=16, n_embd=48, n_head=3, n_layer=5)
    params = init_params(config, seed=1)
    openai_tf.save(tmp_path / "model", config, params)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(
        ["checkpoint", "hparams.json", INDEX, DATA]
    )  # no temp files left behind
    assert openai_tf.read_bundle(tmp_path / "model" / "model.ckpt")["model/h4/mlp/c_fc/w"].shape == (1, 48, 192)
    loaded_config, loaded = openai_tf.load(tmp_path / "model")
    assert loaded_config == config
    want, got = flatten(params), flatten(loaded)
    assert want.keys() == got.keys()
    for name in want:
        assert np.array_equal(got[name], want[name]), name


def test_bundle_round_trips_dtypes_shapes_and_many_index_blocks(tmp_path):
    tensors = {
        "scalar": np.array(2.5, np.float64),
        "empty": np.ones((2, 0), np.float32),
        "half": np.linspace(-1, 1, 7, dtype=np.float16),
        "i32": np.arange(-6, 6, dtype=np.int32).reshape(3, 4),
        "i64": np.array([-(2**40), 3], np.int64),
        "flags": np.array([True, False]),
        "strided": np.arange(20, dtype=np.float32).reshape(4, 5).T,  # not C-contiguous
        **{f"layer/{i:03d}": np.full(i % 5, i, np.float32) for i in range(60)},
    }
    openai_tf.write_bundle(tmp_path / "b", tensors, block_size=64)  # ~30 data blocks
    got = openai_tf.read_bundle(tmp_path / "b")
    assert got.keys() == tensors.keys()
    for name, want in tensors.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        assert np.array_equal(got[name], want), name


# --- damage: always a CheckpointError naming the file, never wrong numbers ----------------------


def test_truncated_data_file_is_an_error(copy):
    data = copy / DATA
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"{DATA}: truncated.*re-download"):
        openai_tf.load(copy)


@pytest.mark.parametrize("position", [0, 1000, 77777, -1])
def test_flipped_data_byte_is_a_crc_error(copy, position):
    data = copy / DATA
    raw = bytearray(data.read_bytes())
    raw[position] ^= 0x10
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=rf"{DATA}: crc32c mismatch in tensor"):
        openai_tf.load(copy)


def test_missing_index_is_an_error(copy):
    (copy / INDEX).unlink()
    with pytest.raises(CheckpointError, match=rf"{INDEX}: missing.*npgpt download"):
        openai_tf.load(copy)


def test_missing_data_shard_is_an_error(copy):
    (copy / DATA).unlink()
    with pytest.raises(CheckpointError, match=rf"{DATA}: missing \(data shard 1 of 1\)"):
        openai_tf.load(copy)


def test_corrupt_index_byte_is_an_error(copy):
    index = copy / INDEX
    raw = bytearray(index.read_bytes())
    raw[20] ^= 0x01  # inside the first data block: its crc no longer matches
    index.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=rf"{INDEX}: corrupt index \(crc32c mismatch"):
        openai_tf.load(copy)


def test_every_flipped_index_byte_is_an_error_or_harmless(copy, reference):
    # Only the footer's zero padding may change unnoticed; then the tensors must still be right.
    index = copy / INDEX
    original = index.read_bytes()
    harmless = []
    for position in range(len(original)):
        raw = bytearray(original)
        raw[position] ^= 0x41
        index.write_bytes(bytes(raw))
        try:
            openai_tf.read_bundle(copy / "model.ckpt", names=lambda n: False)  # the index alone
            tensors = openai_tf.read_bundle(copy / "model.ckpt")
        except CheckpointError as e:
            assert INDEX in str(e) or DATA in str(e)
            continue
        harmless.append(position)
        assert all(np.array_equal(tensors[n], reference[n]) for n in reference), position
    footer = range(len(original) - 48, len(original) - 8)  # block handles, then zero padding
    assert harmless and all(p in footer and original[p] == 0 for p in harmless), harmless


def test_unsupported_dtype_and_bfloat16(tmp_path):
    bf16 = np.array([1.0, -2.5, 3.140625], np.float32).view(np.uint32) >> 16
    payload = bf16.astype("<u2").tobytes() + b"hi"
    entries = [
        (b"", openai_tf._HEADER),
        (b"bf16", openai_tf._encode_entry(14, (3,), 0, 6, openai_tf._crc(payload[:6]))),
        (b"text", openai_tf._encode_entry(7, (), 6, 2, openai_tf._crc(payload[6:]))),
    ]
    (tmp_path / DATA).write_bytes(payload)
    (tmp_path / INDEX).write_bytes(openai_tf._encode_table(entries, block_size=1 << 18))
    got = openai_tf.read_bundle(tmp_path / "model.ckpt", names=lambda n: n == "bf16")
    assert got["bf16"].dtype == np.float32 and got["bf16"].tolist() == [1.0, -2.5, 3.140625]
    with pytest.raises(CheckpointError, match=r"'text' has unsupported dtype DT_STRING"):
        openai_tf.read_bundle(tmp_path / "model.ckpt")


def test_reads_several_shards(tmp_path):
    a, b = np.arange(4, dtype=np.float32), np.arange(6, dtype=np.int64).reshape(2, 3)
    header = openai_tf._pb_int(1, 2) + openai_tf._pb_bytes(3, openai_tf._pb_int(1, 1))
    entry_b = openai_tf._encode_entry(9, (2, 3), 0, 48, openai_tf._crc(b.tobytes()))
    entry_b = entry_b[:2] + openai_tf._pb_int(3, 1) + entry_b[2:]  # shard_id 1, after dtype
    entries = [
        (b"", header),
        (b"a", openai_tf._encode_entry(1, (4,), 0, 16, openai_tf._crc(a.tobytes()))),
        (b"b", entry_b),
    ]
    (tmp_path / "m.index").write_bytes(openai_tf._encode_table(entries, block_size=1 << 18))
    (tmp_path / "m.data-00000-of-00002").write_bytes(a.tobytes())
    (tmp_path / "m.data-00001-of-00002").write_bytes(b.tobytes())
    got = openai_tf.read_bundle(tmp_path / "m")
    assert np.array_equal(got["a"], a) and np.array_equal(got["b"], b)
    (tmp_path / "m.data-00001-of-00002").unlink()
    with pytest.raises(CheckpointError, match=r"m.data-00001-of-00002: missing \(data shard 2 of 2\)"):
        openai_tf.read_bundle(tmp_path / "m")


# --- the directory around the bundle --------------------------------------------------------------


def test_checkpoint_file_names_the_bundle(copy):
    for suffix in (INDEX, DATA):
        (copy / suffix).rename(copy / suffix.replace("model.ckpt", "model-1000"))
    (copy / "checkpoint").write_text('model_checkpoint_path: "model-1000"\n')
    assert openai_tf.load(copy)[0].n_vocab == 300
    # An absolute path from the machine that saved it: the bundle is looked for alongside.
    (copy / "checkpoint").write_text('model_checkpoint_path: "/home/someone/run1/model-1000"\n')
    assert openai_tf.load(copy)[0].n_vocab == 300


def test_optimizer_slots_are_skipped_but_foreign_tensors_are_refused(copy):
    tensors = {k: np.array(v) for k, v in openai_tf.read_bundle(copy / "model.ckpt").items()}
    slots = {"model/wte/Adam": np.zeros((300, 32), np.float32), "global_step": np.array(7, np.int64)}
    openai_tf.write_bundle(copy / "model.ckpt", {**tensors, **slots})
    assert openai_tf.load(copy)[0].n_layer == 2
    openai_tf.write_bundle(copy / "model.ckpt", {**tensors, "model/rotary/inv_freq": np.ones(32, np.float32)})
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'model/rotary/inv_freq'"):
        openai_tf.load(copy)
    # A block beyond hparams.json's n_layer is a layer count that disagrees (see the test below)
    openai_tf.write_bundle(copy / "model.ckpt", {**tensors, "model/h2/ln_1/g": np.ones(32, np.float32)})
    with pytest.raises(CheckpointError, match=r"says n_layer=2 but the weights hold 3 blocks"):
        openai_tf.load(copy)


def test_missing_hparams_is_an_error(copy):
    (copy / "hparams.json").unlink()
    with pytest.raises(CheckpointError, match=r"hparams.json: missing"):
        openai_tf.load(copy)


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("hparams.json", "folder", r"hparams.json: unreadable \(Is a directory\); the checkpoint is damaged"),
        ("hparams.json", b"{", r"hparams.json: not JSON \(.*\); the checkpoint is damaged"),
        ("hparams.json", b"\xff\xfe", r"hparams.json: not JSON \(.*\); the checkpoint is damaged"),
        ("checkpoint", "folder", r"checkpoint: unreadable \(Is a directory\); the checkpoint is damaged"),
        ("checkpoint", b"\xff\xfe", r"checkpoint: unreadable \(not text\); the checkpoint is damaged"),
    ],
)
def test_an_unreadable_hparams_or_checkpoint_file_is_one_line(copy, name, damage, message):
    """A folder in the file's place, or bytes that are not text: was an internal IsADirectoryError or
    UnicodeDecodeError."""
    (copy / name).unlink()
    if damage == "folder":
        (copy / name).mkdir()
    else:
        (copy / name).write_bytes(damage)
    with pytest.raises(CheckpointError, match=message) as e:
        openai_tf.load(copy)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("n_layer", [1, 3])
def test_hparams_n_layer_that_disagrees_with_the_blocks_is_named(copy, n_layer):
    """hparams.json saying fewer layers than the bundle holds was refused as "unexpected tensor
    'model/h1/attn/c_attn/b'"; now, as for more layers, it is named as the layer count that disagrees."""
    text = (copy / "hparams.json").read_text().replace('"n_layer": 2', f'"n_layer": {n_layer}')
    (copy / "hparams.json").write_text(text)
    with pytest.raises(CheckpointError, match=f"says n_layer={n_layer} but the weights hold 2 blocks"):
        openai_tf.load(copy)


OLD = GPT2Config(n_vocab=77, n_ctx=16, n_embd=48, n_head=3, n_layer=2)
NEW = dataclasses.replace(OLD, layer_norm_epsilon=1e-3)  # same shapes: only the math differs


def _assert_loads(directory: Path, config: GPT2Config, params: dict) -> None:
    loaded_config, loaded = openai_tf.load(directory)
    assert loaded_config == config
    want, got = flatten(params), flatten(loaded)
    assert all(np.array_equal(got[name], want[name]) for name in want)


def test_a_failed_save_over_an_existing_folder_keeps_the_old_set(tmp_path, monkeypatch):
    """The bundle was renamed into place before hparams.json was even written: a failure there (a
    full disk) left the new weights with the old hparams."""
    old = init_params(OLD, seed=1)
    openai_tf.save(tmp_path, OLD, old)

    def full(config):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(openai_tf, "_hparams", full)
    with pytest.raises(NpgptError, match="hparams.json: No space left on device; free some space"):
        openai_tf.save(tmp_path, NEW, init_params(NEW, seed=2))
    assert sorted(os.listdir(tmp_path)) == sorted(["checkpoint", "hparams.json", INDEX, DATA])
    _assert_loads(tmp_path, OLD, old)


def test_a_writer_killed_between_its_renames_leaves_no_mixed_set_and_its_temps_are_cleaned(tmp_path):
    """Killed after renaming the new bundle into place, it left new weights beside the old hparams.json
    (which loaded, silently wrong), and temp files of a naming that no later write removed."""
    openai_tf.save(tmp_path, OLD, init_params(OLD, seed=1))
    code = (
        "import os, signal, sys\n"
        "from npgpt.config import GPT2Config\nfrom npgpt.formats import openai_tf\n"
        "from npgpt import files\nfrom npgpt.params import init_params\n"
        "real = files.publish\n"
        "def publish(tmp, path):\n"
        "    if os.path.basename(path) == 'checkpoint':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    real(tmp, path)\n"
        "files.publish = publish\n"
        f"config = GPT2Config(**{dataclasses.asdict(NEW)!r})\n"
        "openai_tf.save(sys.argv[1], config, init_params(config, seed=2))\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    leftovers = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert sorted(n.split(".")[1] for n in leftovers) == ["checkpoint", "hparams"]  # .NAME.PID.XXXX.tmp
    with pytest.raises(CheckpointError, match="hparams.json: missing"):  # not new weights with old hparams
        openai_tf.load(tmp_path)
    new = init_params(NEW, seed=3)
    openai_tf.save(tmp_path, NEW, new)
    assert sorted(os.listdir(tmp_path)) == sorted(["checkpoint", "hparams.json", INDEX, DATA])
    _assert_loads(tmp_path, NEW, new)
