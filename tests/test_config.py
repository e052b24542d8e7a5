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
    # A config.json is told the key it lacks by its own (Hugging Face's) name, not npgpt's n_ctx.
    with pytest.raises(ValueError, match=r"missing n_positions; expected keys n_embd, n_head, n_layer, n_positions,"):
        GPT2Config.from_dict({k: v for k, v in hf.items() if k != "n_positions"})


def test_numpy_numbers_are_accepted_and_kept_as_pythons():
    """GPT2Config(n_embd=np.int64(768)) was refused ("must be a positive int"); NumPy's integers now pass, are
    stored as Python's ints (the config stays JSON-serializable and hashable) and give the same config."""
    import json

    import numpy as np

    shape = dict(n_vocab=64, n_ctx=16, n_embd=48, n_head=3, n_layer=2, n_inner=96)
    config = GPT2Config(**{k: np.int64(v) for k, v in shape.items()}, layer_norm_epsilon=np.float32(1e-5))
    plain = GPT2Config(**shape, layer_norm_epsilon=float(np.float32(1e-5)))
    assert config == plain and hash(config) == hash(plain)
    assert all(type(getattr(config, k)) is int for k in shape) and type(config.layer_norm_epsilon) is float
    assert json.loads(json.dumps(config.to_dict())) == plain.to_dict()
    for bad in (np.True_, True, np.int64(0)):
        with pytest.raises(ValueError, match="n_embd must be a positive int"):
            GPT2Config(n_embd=bad)
