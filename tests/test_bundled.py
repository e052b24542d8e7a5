"""The model bundled with npgpt: small, memory-mapped, and as good as docs/bundled-model.md says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

import npgpt
from npgpt.config import GPT2Config
from npgpt.evaluate import perplexity
from npgpt.formats.npgpt_format import read_safetensors
from npgpt.registry import BUNDLED_NOTICE, bundled_path

FIXTURE = Path(__file__).parent / "fixtures" / "kjv_heldout.txt"  # written by scripts/prepare_corpus.py
# Perplexity of the bundled model on FIXTURE with npgpt eval's defaults (window 256, stride 128),
# as recorded in docs/bundled-model.md ("Held-out perplexity"). Retraining must not make it worse.
REFERENCE_PERPLEXITY = 32.634
CONFIG = GPT2Config(n_vocab=50257, n_ctx=256, n_embd=160, n_head=4, n_layer=4)
PROMPT = "And God said"


@pytest.fixture(scope="module")
def model():
    return npgpt.load(bundled_path())


def test_file_is_small_float16_and_memory_mapped() -> None:
    path = bundled_path()
    assert path.stat().st_size <= 20_000_000
    tensors, metadata = read_safetensors(path)
    assert metadata["format"] == "npgpt"
    assert {t.dtype for t in tensors.values()} == {np.dtype(np.float16)}
    assert all(isinstance(t.base, np.memmap) or isinstance(t, np.memmap) for t in tensors.values())


def test_loads_with_the_documented_shape(model) -> None:
    assert model.config == CONFIG
    assert model.params["wte"].dtype == np.float32  # float16 storage is widened once at load
    assert npgpt.load("bundled").config == CONFIG


def test_heldout_perplexity(model) -> None:
    result = perplexity(model, FIXTURE.read_text(encoding="utf-8"))
    assert result["tokens"] > 5000
    assert result["perplexity"] <= REFERENCE_PERPLEXITY * 1.02, result


def test_greedy_text_is_readable(model) -> None:
    ids = model.completions([PROMPT], max_new_tokens=40, temperature=0)[0].tokens
    assert len(ids) == 40
    assert len(set(ids)) / len(ids) >= 0.3, model.tokenizer.decode(ids)
    longest_run = max(len(run) for run in np.split(ids, np.flatnonzero(np.diff(ids)) + 1))
    assert longest_run <= 3, model.tokenizer.decode(ids)
    text = model.tokenizer.decode(ids)
    assert sum(c.isalpha() for c in text) >= len(text) // 2, text  # words, not punctuation


def test_cli_generate_uses_the_bundled_model(model, tmp_path: Path) -> None:
    # An empty model cache, so the default is the bundled model even where GPT-2 is downloaded.
    result = run_cli(
        "generate",
        PROMPT,
        "--max-new-tokens",
        "20",
        "--temperature",
        "0",
        env={"NPGPT_HOME": str(tmp_path)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert BUNDLED_NOTICE in " ".join(result.stderr.split())
    assert result.stdout == PROMPT + model.generate(PROMPT, max_new_tokens=20, temperature=0) + "\n"
