"""Hostile checkpoint files: every structural fault is one line and exit 1, before any compute.

Each case starts from a valid tiny model file and breaks one thing, the way a truncated download,
a bit flip, a buggy writer or a malicious upload would. The same faults are tried in npgpt's own
format (config in the metadata) and in a Hugging Face directory (config.json beside the weights).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, random_params, run_cli

from npgpt.config import GPT2Config
from npgpt.errors import CheckpointError
from npgpt.formats import hf, load_checkpoint, npgpt_format, save_checkpoint

CONFIG = CONFIGS["tiny"]


def _split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join(path: Path, header: dict, data: bytes) -> None:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def _first(header: dict) -> str:
    return next(k for k in header if k != "__metadata__")


def offsets_into_header(h: dict, d: bytes) -> tuple[dict, bytes]:
    k = _first(h)
    a, b = h[k]["data_offsets"]
    h[k]["data_offsets"] = [a - 64, b - 64]
    return h, d


def shifted_one_byte(h: dict, d: bytes) -> tuple[dict, bytes]:
    k = _first(h)
    a, b = h[k]["data_offsets"]
    h[k]["data_offsets"] = [a + 1, b + 1]
    return h, d + b"\0"


def two_tensors_one_range(h: dict, d: bytes) -> tuple[dict, bytes]:
    names = [k for k in h if k != "__metadata__" and h[k]["shape"] == [CONFIG.n_embd]]
    h[names[1]]["data_offsets"] = list(h[names[0]]["data_offsets"])
    return h, d


def shape_does_not_match_bytes(h: dict, d: bytes) -> tuple[dict, bytes]:
    name = next(k for k in h if k.endswith("ln_f.g") or k.endswith("ln_f.weight"))
    h[name]["shape"] = [CONFIG.n_embd // 2]
    return h, d


def int32_weights(h: dict, d: bytes) -> tuple[dict, bytes]:
    name = next(k for k in h if k.endswith("ln_f.g") or k.endswith("ln_f.weight"))
    h[name]["dtype"] = "I32"
    return h, d


def dtype_not_a_string(h: dict, d: bytes) -> tuple[dict, bytes]:
    h[_first(h)]["dtype"] = 7
    return h, d


def shape_not_a_list(h: dict, d: bytes) -> tuple[dict, bytes]:
    h[_first(h)]["shape"] = "big"
    return h, d


def offsets_not_ints(h: dict, d: bytes) -> tuple[dict, bytes]:
    h[_first(h)]["data_offsets"] = {"begin": 0}
    return h, d


def truncated(h: dict, d: bytes) -> tuple[dict, bytes]:
    return h, d[: len(d) // 2]


def header_not_an_object(h: dict, d: bytes) -> tuple[dict, bytes]:
    return [1, 2, 3], d  # type: ignore[return-value]


STRUCTURAL = [
    offsets_into_header,
    shifted_one_byte,
    two_tensors_one_range,
    shape_does_not_match_bytes,
    int32_weights,
    dtype_not_a_string,
    shape_not_a_list,
    offsets_not_ints,
    truncated,
    header_not_an_object,
]


def _poisoned(value: float):
    def poison(params: dict) -> dict:
        params["blocks"][1]["mlp"]["c_fc"]["w"][3, 5] = value
        return params

    poison.__name__ = f"weight_{value}"
    return poison


@pytest.fixture(params=["npgpt", "hf"])
def fmt(request) -> str:
    return request.param


def _write(fmt: str, root: Path, params: dict | None = None) -> tuple[Path, Path]:
    """A valid model of format ``fmt``: (path to pass to npgpt, the safetensors file inside it)."""
    params = params if params is not None else random_params(CONFIG)
    if fmt == "npgpt":
        path = root / "model.safetensors"
        npgpt_format.save(path, CONFIG, params)
        return path, path
    hf.save(root / "hf", CONFIG, params)
    return root / "hf", root / "hf" / "model.safetensors"


def _assert_one_line_exit_1(path: Path, *words: str) -> None:
    r = run_cli("info", str(path))
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize("fault", STRUCTURAL, ids=lambda f: f.__name__)
def test_structural_faults_are_refused(fault, fmt, tmp_path):
    path, file = _write(fmt, tmp_path)
    _join(file, *fault(*_split(file)))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert "\n" not in message and str(file) in message
    if fault is truncated:  # the precise diagnosis, not "some other format"
        assert "truncated" in message and "re-download" in message


@pytest.mark.parametrize("fault", [truncated, shifted_one_byte, int32_weights], ids=lambda f: f.__name__)
def test_structural_faults_from_the_cli(fault, fmt, tmp_path):
    path, file = _write(fmt, tmp_path)
    _join(file, *fault(*_split(file)))
    _assert_one_line_exit_1(path, str(file))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused(value, fmt, tmp_path):
    path, _ = _write(fmt, tmp_path, _poisoned(value)(random_params(CONFIG)))
    with pytest.raises(CheckpointError, match="blocks.1.mlp.c_fc.w.*NaN or infinite"):
        load_checkpoint(path)
    _assert_one_line_exit_1(path, "NaN or infinite")


@pytest.mark.parametrize("where", ["first", "chunk edge", "last"])
def test_the_finiteness_check_reads_a_large_tensor_in_parts_and_misses_none(where, tmp_path, monkeypatch):
    """check_finite reads a tensor a chunk at a time (so a large one's mask and pages are never held
    whole): a NaN in its first value, at a chunk's edge and in its last value is still found."""
    import npgpt.formats as formats

    monkeypatch.setattr(formats, "CHECK_CHUNK", 7)  # small parts: the tiny config's tensors span many
    params = random_params(CONFIG)
    w = params["blocks"][1]["mlp"]["c_fc"]["w"]
    w.reshape(-1)[{"first": 0, "chunk edge": 7 * 5, "last": w.size - 1}[where]] = np.nan
    npgpt_format.save(tmp_path / "m.safetensors", CONFIG, params)
    with pytest.raises(CheckpointError, match="blocks.1.mlp.c_fc.w.*NaN or infinite"):
        load_checkpoint(tmp_path / "m.safetensors")
    (tmp_path / "ok").mkdir()
    load_checkpoint(_write("npgpt", tmp_path / "ok")[0])  # and a finite one passes, in parts too


@pytest.mark.timeout(60)  # a bound on a hang (building 10**9 layers' shapes), not a speed threshold
def test_a_config_claiming_a_billion_layers_is_refused_at_once(fmt, tmp_path):
    path, file = _write(fmt, tmp_path)
    if fmt == "npgpt":
        h, d = _split(file)
        config = json.loads(h["__metadata__"]["config"])
        config["n_layer"] = 10**9
        h["__metadata__"]["config"] = json.dumps(config)
        _join(file, h, d)
    else:
        config = json.loads((path / "config.json").read_text())
        config["n_layer"] = 10**9
        (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="n_layer=1000000000"):
        load_checkpoint(path)
    _assert_one_line_exit_1(path, "n_layer")


def test_a_truncated_npgpt_file_in_a_model_directory_is_named_truncated(tmp_path):
    path = tmp_path / "model.safetensors"
    npgpt_format.save(path, CONFIG, random_params(CONFIG))
    path.write_bytes(path.read_bytes()[:-100])
    for where in (path, tmp_path):
        with pytest.raises(CheckpointError, match="truncated"):
            load_checkpoint(where)


@pytest.mark.parametrize("fmt", ["npgpt", "hf", "hf-sharded"])
@pytest.mark.parametrize("keep", [10, 200])
def test_a_file_cut_inside_its_header_is_named_truncated(tmp_path, fmt, keep):
    """A download cut within a safetensors file's first kilobytes (inside its JSON header) was "not a safetensors
    file (bad header length)"; the safetensors library calls it an incomplete buffer. It is named truncated."""
    path = save_checkpoint(tmp_path / ("m.safetensors" if fmt == "npgpt" else "m"), CONFIG, random_params(CONFIG), fmt)
    file = path if fmt == "npgpt" else sorted(path.glob("model*.safetensors"))[-1]
    file.write_bytes(file.read_bytes()[:keep])
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(file))}: truncated \(its header alone is \d+ bytes"):
        load_checkpoint(path)
    _assert_one_line_exit_1(path, "truncated", "re-download")


@pytest.mark.parametrize("name", ["model.safetensors", "model.gguf", "hparams.json", "ckpt.pt"])
def test_a_broken_symlink_to_a_model_file_is_named_with_its_target(tmp_path, name):
    """A dangling model.safetensors (a snapshot whose blob was never downloaded) said only "no model found"."""
    link = tmp_path / name
    link.symlink_to("../blobs/0123abcd")
    for where in (tmp_path, link):
        with pytest.raises(CheckpointError, match=re.escape(f"{link}: a broken symbolic link to ../blobs/0123abcd")):
            load_checkpoint(where)
    for where in (tmp_path, link):
        _assert_one_line_exit_1(where, name, "broken symbolic link to ../blobs/0123abcd")


@pytest.mark.timeout(120)  # a bound on a hang (opening a FIFO that no one writes), not a speed threshold
@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "generation_config.json", "model.gguf"])
def test_a_fifo_named_as_a_model_file_is_refused_not_opened(tmp_path, name):
    """``mkfifo d/config.json``: opening it blocks until a writer comes, so loading hung for ever; a FIFO (or a
    device, a socket) is refused in one line before anything is opened, in a folder or given itself."""
    import os

    path, _ = _write("hf", tmp_path)
    (path / name).unlink(missing_ok=True)
    os.mkfifo(path / name)
    message = f"{path / name}: a FIFO (named pipe), not a regular file"
    for where in (path, path / name):
        with pytest.raises(CheckpointError, match=re.escape(message)):
            load_checkpoint(where)
        _assert_one_line_exit_1(where, message)
    with pytest.raises(CheckpointError, match="/dev/zero: a character device, not a regular file"):
        load_checkpoint("/dev/zero")


@pytest.mark.timeout(120)  # a bound on a hang, not a speed threshold
@pytest.mark.parametrize("name", ["notes.fifo", ".agent.sock", "run.log"])
def test_a_fifo_no_reader_opens_does_not_refuse_the_models_folder(tmp_path, name):
    """The refusal of a FIFO named as a model file refused any FIFO, device or socket in the folder: a model
    folder (or the current one, --model .) that also held a log pipe or a program's socket was 'not a regular
    file' and did not load, though no reader opens it. Only the files a reader may open are refused."""
    import os

    path, _ = _write("hf", tmp_path)
    os.mkfifo(path / name)
    load_checkpoint(path)


@pytest.mark.parametrize("name", ["model.gguf", "model.safetensors", "model.bin", "ckpt.pt"])
def test_an_empty_file_is_named_as_one(tmp_path, name):
    """An interrupted copy: an empty .gguf was "not a model file npgpt knows", whatever its name promised."""
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path / name}: an empty file (0 bytes); re-download")):
        load_checkpoint(tmp_path / name)


PAGE = b"\n<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"


@pytest.mark.parametrize("name", ["model.gguf", "model.safetensors", "model.bin", "ckpt.pt", "hf/pytorch_model.bin"])
def test_a_web_page_saved_as_a_model_file_is_named_as_one(tmp_path, name):
    """The error page a failed download saves in a model file's place was "not a model file npgpt knows" (a .gguf,
    a .pt: no fix said) or a bad header length: it is named as a web page, with the fix."""
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    if name.startswith("hf/"):
        hf.save(path.parent, CONFIG, random_params(CONFIG))
        (path.parent / "model.safetensors").unlink()
    path.write_bytes(PAGE)
    said = f"{path}: a web page (HTML or XML), not a model file: an error page saved in its place by a failed download"
    with pytest.raises(CheckpointError, match=re.escape(said)):
        load_checkpoint(path)
    _assert_one_line_exit_1(path, said, "download it again")


@pytest.mark.parametrize(
    "name, said",
    [
        ("model.gguf", "not a GGUF file (it does not start with 'GGUF'); re-download or re-convert it"),
        ("ckpt.pt", "not a PyTorch checkpoint (it starts as neither a zip archive nor a pickle); re-download it"),
        ("model.bin", "neither llm.c's .bin nor a PyTorch checkpoint (it starts as neither a zip archive nor a pick"),
    ],
)
def test_a_file_that_is_not_the_format_its_name_says_is_told_how_to_recover(tmp_path, name, said):
    """A .gguf or .pt holding other bytes was "not a model file npgpt knows", as a file of any other name: it
    says which format its name promised and how to get a good copy."""
    (tmp_path / name).write_bytes(b"\x00garbage, not a model" * 8)
    with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path / name}: {said}")):
        load_checkpoint(tmp_path / name)


@pytest.mark.parametrize("value", ["[1, 2]", "null", '"gpt2"'])
@pytest.mark.parametrize("where", ["hf", "openai", "npgpt"])
def test_a_config_that_is_json_but_not_an_object_says_how_to_recover(tmp_path, where, value):
    """A config.json, hparams.json or npgpt metadata config that was valid JSON but a list was named ("config.json
    is not a JSON object") with no fix: each says to re-download or re-convert the model."""
    from npgpt.formats import save_checkpoint

    path = save_checkpoint(tmp_path / "m", CONFIG, random_params(CONFIG), fmt=where)
    if where == "hf":
        (path / "config.json").write_text(value)
    elif where == "openai":
        (path / "hparams.json").write_text(value)
    else:
        header, data = _split(path)
        header["__metadata__"]["config"] = value
        _join(path, header, data)
    with pytest.raises(CheckpointError, match=r"not a JSON object.*; re-download or re-convert the model$"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "index, said",
    [("[1, 2]", "but a list"), ("{}", "but it has no weight_map"), ('{"weight_map": [1]}', "weight_map is a list")],
)
def test_a_shard_index_that_is_json_but_not_an_index_is_said_in_jsons_words(tmp_path, index, said):
    """A model.safetensors.index.json holding a list was "not a shard index (TypeError: list indices must be
    integers or slices, not str)": Python's words for a JSON fault. It says what the file holds instead."""
    from npgpt.formats import save_checkpoint

    path = save_checkpoint(tmp_path / "m", CONFIG, random_params(CONFIG), fmt="hf-sharded", max_shard_size="20KB")
    (path / "model.safetensors.index.json").write_text(index)
    with pytest.raises(CheckpointError, match=f"index.json: not a shard index .*{said}; re-download it$") as e:
        load_checkpoint(path)
    assert "Error" not in str(e.value)


def test_a_loop_of_links_is_named_as_one(tmp_path):
    """A loop was described as a link to a file "which does not exist", though that link does exist."""
    (tmp_path / "model.safetensors").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("model.safetensors")
    with pytest.raises(CheckpointError, match="a broken symbolic link to loop2, which is a loop of links"):
        load_checkpoint(tmp_path)
    (tmp_path / "x.gguf").symlink_to("missing.gguf")
    with pytest.raises(CheckpointError, match="a broken symbolic link to missing.gguf, which does not exist"):
        load_checkpoint(tmp_path / "x.gguf")


def test_a_broken_symlink_to_a_shard_is_named_with_its_target(tmp_path):
    hf.save(tmp_path, CONFIG, random_params(CONFIG), max_shard_size="60KB")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[1]
    shard.unlink()
    shard.symlink_to("../blobs/0123abcd")
    with pytest.raises(CheckpointError, match=re.escape(f"{shard}: a broken symbolic link to ../blobs/0123abcd")):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("fmt", ["npgpt", "hf", "hf-sharded", "openai", "llmc", "gguf"])
def test_non_finite_weights_are_refused_in_every_written_format(fmt, tmp_path):
    """The finiteness check is in the one load path every format goes through; a NaN written by each
    format's own writer is refused at load (GGUF on GPT-2's vocabulary, the only one it holds)."""
    from npgpt.formats import save_checkpoint

    if fmt == "gguf":
        pytest.importorskip("gguf")
    config = CONFIGS["tiny"]
    path = save_checkpoint(
        tmp_path / ("model.gguf" if fmt == "gguf" else "out"),
        config,
        _poisoned(np.nan)(random_params(config)),
        fmt=fmt,
        max_shard_size="1MB" if fmt == "hf-sharded" else None,
    )
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_checkpoint(path)


def _torch_zip(path: Path, obj: object) -> None:
    """A file laid out as torch.save's zip, holding ``obj``'s pickle (plain containers only: no torch needed)."""
    import pickle
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        z.writestr("archive/byteorder", "little")


def _laughs(levels: int) -> list:
    """Lists nesting two references to each level in the next: 2**levels paths in a pickle of ~10 bytes a level."""
    nested: list = []
    for _ in range(levels):
        nested = [nested, nested]
    return nested


@pytest.mark.timeout(60)  # a bound on a hang (a walk exponential in the depth), not a speed threshold
@pytest.mark.parametrize("name", ["ckpt.pt", "model.pt", "hf/pytorch_model.bin"])
def test_a_pickle_of_shared_references_nested_deep_is_read_at_once(tmp_path, name):
    """A 1 KB pickle nesting two references to each level in the next (pickle's memo shares them, as XML's
    "billion laughs" does entities) made ``npgpt info`` run for ever: the reader walked every path through the
    shared objects, 2**60 of them. Each shared object is resolved once; the file is then refused in one line."""
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    if name.startswith("hf/"):
        (path.parent / "config.json").write_text(
            json.dumps(
                {"model_type": "gpt2", "n_layer": 1, "n_embd": 8, "n_head": 2, "n_positions": 8, "vocab_size": 50257}
            )
        )
    _torch_zip(path, {"model": {"transformer.wte.weight": _laughs(60)}, "model_args": {}})
    assert path.stat().st_size < 2000
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path.parent if name.startswith("hf/") else path)
    assert "\n" not in str(e.value)
    done = run_cli("info", str(path), timeout=50)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize(
    ("name", "state", "said"),
    [
        ("ckpt.pt", {"transformer.wte.weight": [1, 2]}, "'transformer.wte.weight' is a list, not a tensor"),
        ("ckpt.pt", {"transformer.wte.weight": None}, "'transformer.wte.weight' is a NoneType, not a tensor"),
        ("ckpt.pt", {5: []}, "a key that is an int, not a name"),
        ("hf/pytorch_model.bin", {5: []}, "a key that is an int, not a name"),
        ("hf/pytorch_model.bin", {("a",): []}, "a key that is a tuple, not a name"),
    ],
)
def test_a_state_dict_entry_that_is_no_named_tensor_is_named(tmp_path, name, state, said):
    """A nanoGPT checkpoint whose state dict maps a name to a list, None or a dict, or one whose key is a number,
    and a pytorch_model.bin whose key is not a name, were internal errors ("'list' object has no attribute
    'dtype'", "expected string or bytes-like object, got 'int'"); each is one line naming the entry."""
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    if name.startswith("hf/"):
        config = {"model_type": "gpt2", "n_layer": 1, "n_embd": 8, "n_head": 2, "n_positions": 8, "vocab_size": 96}
        (path.parent / "config.json").write_text(json.dumps(config))
        obj: object = state
    else:
        args = {"n_layer": 1, "n_head": 2, "n_embd": 8, "block_size": 8, "vocab_size": 96, "bias": True}
        obj = {"model": state, "model_args": args}
    _torch_zip(path, obj)
    with pytest.raises(CheckpointError, match="not a state dict") as e:
        load_checkpoint(path.parent if name.startswith("hf/") else path)
    assert said in str(e.value) and "\n" not in str(e.value)
    done = run_cli("info", str(path.parent if name.startswith("hf/") else path))
    assert done.returncode == 1 and said in done.stderr and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize(
    ("spec", "n_vocab", "said"),
    [
        ({"type": "char", "chars": "a\ud800b"}, 4, "holds a lone surrogate ('\\ud800')"),
        ({"type": "gpt2", "added_tokens": [{"content": "<\ud800>", "id": 50257}]}, 50258, "'<\\ud800>', which holds"),
    ],
    ids=["char", "added-token"],
)
def test_a_tokenizer_holding_a_lone_surrogate_is_refused_at_load(tmp_path, spec, n_vocab, said):
    """JSON can spell a lone UTF-16 surrogate ("\\ud800"), which is no Unicode text: a character tokenizer holding
    one loaded, and generating it ended as an internal error ("'utf-8' codec can't encode character '\\ud800'");
    an added token holding one was an internal error at load. Each is refused at load in one line (the tokenizers
    library refuses such a tokenizer.json too)."""
    import npgpt

    config = GPT2Config(n_vocab=n_vocab, n_ctx=16, n_embd=8, n_head=2, n_layer=1)
    path = tmp_path / "model.safetensors"
    npgpt_format.save(path, config, random_params(config), metadata={"tokenizer": json.dumps(spec)})
    with pytest.raises(CheckpointError) as e:
        npgpt.load(str(path))
    assert said in str(e.value) and "\n" not in str(e.value)
    done = run_cli("generate", "-m", str(path), "a", "--max-new-tokens", "8", "--seed", "2")
    assert done.returncode == 1 and said in done.stderr and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize(
    "token",
    [
        {"content": "<x>", "id": 50257, "special": "yes"},
        {"content": "<x>", "id": 50257, "normalized": 1},
        {"content": "<x>", "id": 50257.0},
        {"content": ["<x>"], "id": 50257},
    ],
    ids=["special-text", "normalized-number", "id-float", "content-list"],
)
def test_an_added_token_of_the_wrong_json_types_is_refused_at_load(tmp_path, token):
    """An added token whose "special" was the text "yes" loaded as special (any non-empty text is truthy), and
    other fields of the wrong JSON type were read as Python reads them; the tokenizers library refuses such a
    token. Each is refused at load in one line naming the types."""
    import npgpt

    config = GPT2Config(n_vocab=50258, n_ctx=16, n_embd=8, n_head=2, n_layer=1)
    path = tmp_path / "model.safetensors"
    spec = {"type": "gpt2", "added_tokens": [token]}
    npgpt_format.save(path, config, random_params(config), metadata={"tokenizer": json.dumps(spec)})
    with pytest.raises(CheckpointError, match="unreadable added tokens.*its id an integer") as e:
        npgpt.load(str(path))
    assert "\n" not in str(e.value)
