"""npgpt/formats/compat.py: what llm.c's and GGUF's fixed GPT-2 can hold is checked field by field."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from npgpt.config import GPT2Config
from npgpt.errors import CheckpointError
from npgpt.formats.compat import GPT2_DEFAULTS, make_config, require_writable, with_zero_biases

CARRIED = {f.name for f in dataclasses.fields(GPT2Config)}


def _config(**fields):
    """A config-like object with GPT-2's values and ``fields`` (whether or not GPT2Config carries them)."""
    return SimpleNamespace(n_vocab=300, n_ctx=8, n_embd=32, n_head=2, n_layer=1, **{**GPT2_DEFAULTS, **fields})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("activation_function", "relu"),
        ("scale_attn_weights", False),
        ("scale_attn_by_inverse_layer_idx", True),
        ("layer_norm_epsilon", 1e-3),
        ("n_inner", 100),
        ("tie_word_embeddings", False),
    ],
)
def test_llmc_holds_only_openais_gpt2(field, value):
    with pytest.raises(CheckpointError, match=f"{field}={value!r}"):
        require_writable(_config(**{field: value}), "llm.c's format")


def test_gguf_holds_its_knobs_and_refuses_the_rest():
    holds = ("n_inner", "layer_norm_epsilon", "tie_word_embeddings")
    require_writable(_config(n_inner=100, layer_norm_epsilon=1e-3, tie_word_embeddings=False), "GGUF", holds)
    # Equivalent spellings of GPT-2's own values, and nanoGPT's missing biases, are writable everywhere.
    require_writable(_config(activation_function="gelu_pytorch_tanh", n_inner=128, bias=False), "llm.c")
    with pytest.raises(CheckpointError, match="GGUF cannot hold activation_function='gelu'"):
        require_writable(_config(activation_function="gelu"), "GGUF", holds)


def test_zero_biases_fill_a_bias_free_model():
    flat = {"blocks.0.attn.c_attn.w": np.ones((4, 12)), "blocks.0.ln_1.g": np.ones(4), "wte": np.ones((9, 4))}
    out = with_zero_biases(flat, _config(bias=False))
    assert out["blocks.0.attn.c_attn.b"].shape == (12,) and out["blocks.0.ln_1.b"].shape == (4,)
    assert not out["blocks.0.attn.c_attn.b"].any() and "wte.b" not in out
    assert with_zero_biases(flat, _config()) is flat


def test_make_config_honours_or_refuses_each_field():
    shape = {"n_vocab": 300, "n_ctx": 8, "n_embd": 32, "n_head": 2, "n_layer": 1}
    assert make_config("f", **shape, n_inner=128, layer_norm_epsilon=1e-5) == GPT2Config(**shape)
    for field, value in (("layer_norm_epsilon", 1e-3), ("n_inner", 64), ("tie_word_embeddings", False)):
        if field in CARRIED:
            assert getattr(make_config("f", **shape, **{field: value}), field) == value
        else:
            with pytest.raises(CheckpointError, match=f"f: {field}={value!r}; this npgpt runs GPT-2 with"):
                make_config("f", **shape, **{field: value})
    with pytest.raises(CheckpointError, match="impossible GPT-2 hyperparameters"):
        make_config("f", **{**shape, "n_head": 5})
