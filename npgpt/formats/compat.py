"""What a fixed-architecture format (llm.c, GGUF's ``gpt2``) can hold of a GPT2Config, checked in one place.

llm.c's and llama.cpp's GPT-2 are GPT-2 as OpenAI released it, with a few knobs at most (llama.cpp reads the
layer-norm epsilon, the MLP width and an optional untied head). Writing a model whose config sets anything
else would produce a file that runs different math; reading a file that sets a knob this npgpt's
``GPT2Config`` does not carry would silently run it as plain GPT-2. Both are refused here, naming the field.

The fields are transformers' ``GPT2Config`` names. Looking them up with ``getattr`` (default: GPT-2's value)
keeps this module right whichever fields the config carries.

Also here, for every writer: :func:`check_float16_range`, the weights float16 storage would make infinite.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..config import GPT2Config
from ..errors import CheckpointError
from ..params import flatten

# GPT-2's value of every config field that changes the math (n_inner: None = 4 * n_embd).
GPT2_DEFAULTS: dict[str, Any] = {
    "n_inner": None,
    "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-5,
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
    "tie_word_embeddings": True,
    "bias": True,
}
# Two names for the same tanh approximation of GELU (transformers' NewGELU and PyTorch's tanh GELU),
# which is llm.c's and ggml's GELU.
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")
# Only changes the order of float32 operations in transformers; no format needs to record it.
_NO_MATH = ("reorder_and_upcast_attn",)


def _value(config: GPT2Config, name: str) -> Any:
    value = getattr(config, name, GPT2_DEFAULTS[name])
    if name == "n_inner" and value == 4 * config.n_embd:
        return None
    if name == "activation_function" and value in TANH_GELU:
        return "gelu_new"
    return value


def require_writable(config: GPT2Config, fmt: str, holds: tuple[str, ...] = ()) -> None:
    """CheckpointError unless every math field of ``config`` is GPT-2's or one the format ``holds``.

    A missing bias (nanoGPT's ``bias=False``) is always writable: :func:`with_zero_biases` fills it
    with zeros, which computes the same function.
    """
    for name, default in GPT2_DEFAULTS.items():
        if name in holds or name in _NO_MATH or name == "bias":
            continue
        value = _value(config, name)
        if value != default:
            raise CheckpointError(
                f"{fmt} cannot hold {name}={value!r} (its GPT-2 has {default!r} only); "
                "convert this model to npgpt's or Hugging Face's format instead"
            )


def with_zero_biases(flat: dict[str, Any], config: GPT2Config) -> dict[str, Any]:
    """``flat`` with a zero bias beside every weight that lacks one: a ``bias=False`` model as formats
    whose GPT-2 always has biases store it (same outputs)."""
    if _value(config, "bias"):
        return flat
    out = dict(flat)
    for name, arr in flat.items():
        stem, leaf = name.rsplit(".", 1) if "." in name else (name, "")
        if leaf == "w":  # Conv1D [in, out]: the bias is [out]
            out.setdefault(f"{stem}.b", np.zeros(np.shape(arr)[1], np.float32))
        elif leaf == "g":  # layer norm gain [C]: the bias is [C]
            out.setdefault(f"{stem}.b", np.zeros(np.shape(arr), np.float32))
    return out


def make_config(source: str, **fields: Any) -> GPT2Config:
    """GPT2Config from a file's values; a field this ``GPT2Config`` does not carry must hold GPT-2's value.

    ``fields`` are the five shape ints plus any of GPT2_DEFAULTS' names. Raises CheckpointError (one line).
    """
    known = {f.name for f in dataclasses.fields(GPT2Config)}
    if fields.get("n_inner") == 4 * fields["n_embd"]:
        fields["n_inner"] = None
    for name, value in list(fields.items()):
        if name in known:
            continue
        if value != GPT2_DEFAULTS.get(name, value):
            raise CheckpointError(
                f"{source}: {name}={value!r}; this npgpt runs GPT-2 with {name}={GPT2_DEFAULTS[name]!r} only"
            )
        del fields[name]
    try:
        return GPT2Config(**fields)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{source}: impossible GPT-2 hyperparameters ({e})") from None


FLOAT16_OVERFLOW = 65520.0  # the smallest magnitude that float16 rounds to infinity (its largest value: 65504)


def check_float16_range(params: dict[str, Any], why: str = "") -> None:
    """CheckpointError, before anything is written, for a weight that float16 would store as infinity
    (the file was written, then refused at load as corrupt); ``why`` says why float16, if not asked for."""
    for name, w in flatten(params).items():
        if isinstance(w, np.ndarray) and w.size and (big := float(np.abs(w).max())) >= FLOAT16_OVERFLOW:
            raise CheckpointError(
                f"cannot write {name!r} as float16{why}: it holds {big:g}, beyond float16's largest value 65504; "
                "write float32 (or bfloat16, for llmc and gguf)"
            )
