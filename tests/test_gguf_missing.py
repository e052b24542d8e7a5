"""Without the optional ``gguf`` package (a plain ``pip install npgpt``), GGUF files get a one-line error
naming the ``npgpt[gguf]`` extra, never an "internal error"; the other formats do not need it."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import random_params, run_cli

from npgpt.config import GPT2Config
from npgpt.errors import CheckpointError
from npgpt.formats import gguf_format, load_checkpoint, save_checkpoint

CFG = GPT2Config(n_vocab=50257, n_ctx=16, n_embd=48, n_head=3, n_layer=2)


@pytest.fixture
def no_gguf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` now raises ModuleNotFoundError(name="gguf")
    monkeypatch.setitem(sys.modules, "gguf.quants", None)


def test_reading_a_gguf_without_the_package_names_the_extra(tmp_path, no_gguf) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(CheckpointError, match=r"pip install 'npgpt\[gguf\]'"):
        load_checkpoint(path)


def test_writing_a_gguf_without_the_package_names_the_extra(tmp_path, no_gguf) -> None:
    with pytest.raises(CheckpointError, match=r"pip install 'npgpt\[gguf\]'"):
        save_checkpoint(tmp_path / "model.gguf", CFG, random_params(CFG), fmt="gguf")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_gguf_package_that_fails_to_import_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_import(name, *args, **kwargs):
        if name == "gguf":
            raise ModuleNotFoundError("No module named 'sentencepiece'", name="sentencepiece")
        return real_import(name, *args, **kwargs)

    real_import = __builtins__["__import__"] if isinstance(__builtins__, dict) else __builtins__.__import__
    monkeypatch.setattr("builtins.__import__", broken_import)
    with pytest.raises(CheckpointError, match=r"sentencepiece.*gguf>=0\.16"):
        gguf_format._gguf()


def test_cli_convert_to_gguf_without_the_package_is_one_line(tmp_path) -> None:
    shadow = tmp_path / "shadow" / "gguf"  # a `gguf` that imports as if it were not installed
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'gguf'\", name='gguf')\n")
    src = save_checkpoint(tmp_path / "m.safetensors", CFG, random_params(CFG))
    env = {"PYTHONPATH": os.pathsep.join([str(shadow.parent), *sys.path])}
    r = run_cli("convert", str(src), str(tmp_path / "out.gguf"), "--to", "gguf", env=env)
    assert r.returncode == 1, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "gguf" in lines[0] and "internal error" not in lines[0], r.stderr
    assert not (tmp_path / "out.gguf").exists()
