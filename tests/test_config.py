"""npgpt/config.py: presets have GPT-2's published sizes; bad configs are refused."""

import pytest

from npgpt.config import PRESETS, GPT2Config


@pytest.mark.parametrize(
    "name, n_params", [("124M", 124_439_808), ("355M", 354_823_168), ("774M", 774_030_080), ("1558M", 1_557_611_200)]
)
def test_preset_parameter_counts_match_gpt2(name, n_params):
    assert PRESETS[name].n_params == n_params  # the counts Hugging Face reports for gpt2*


def test_config_is_frozen_and_validated():
    config = GPT2Config()
    with pytest.raises(AttributeError):
        config.n_layer = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="divisible"):
        GPT2Config(n_embd=50, n_head=3)
    with pytest.raises(ValueError, match="positive"):
        GPT2Config(n_layer=0)


def test_from_dict_reads_openai_and_hf_names():
    openai = {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12}
    hf = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12, "model_type": "gpt2"}
    assert GPT2Config.from_dict(openai) == GPT2Config.from_dict(hf) == PRESETS["124M"]
    with pytest.raises(ValueError, match="missing"):
        GPT2Config.from_dict({"n_embd": 8})
