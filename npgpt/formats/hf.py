"""Hugging Face GPT-2 checkpoints: ``model.safetensors`` + ``config.json``.

HF's ``Conv1D`` stores weights ``[in, out]`` like OpenAI, so tensors map one to one; only the
names differ. ``GPT2LMHeadModel`` prefixes them with ``transformer.``; ``GPT2Model`` does not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..config import GPT2Config
from ..errors import CheckpointError
from ..files import atomic_path
from ..params import flatten, unflatten
from .npgpt_format import (
    MODEL_FILE,  # Hugging Face names its weights file the same
    as_float32,
    read_safetensors,
)

# HF leaf names -> npgpt leaf names (layer norms use weight/bias, OpenAI uses g/b).
_LEAF = {"weight": "w", "bias": "b"}
_LN_LEAF = {"weight": "g", "bias": "b"}
# Buffers and the tied head: not parameters npgpt keeps.
_DROP = re.compile(r"(^lm_head\.weight$)|(\.attn\.(masked_)?bias$)")


def hf_to_npgpt_name(name: str) -> str | None:
    """``transformer.h.3.attn.c_attn.weight`` -> ``blocks.3.attn.c_attn.w``; None for dropped tensors."""
    name = name.removeprefix("transformer.")
    if _DROP.search(name):
        return None
    if name in ("wte.weight", "wpe.weight"):
        return name.split(".")[0]
    parts = name.split(".")
    if parts[0] == "h":
        parts[0] = "blocks"
    leaf_map = _LN_LEAF if parts[-2].startswith("ln_") else _LEAF
    parts[-1] = leaf_map.get(parts[-1], parts[-1])
    return ".".join(parts)


def npgpt_to_hf_name(name: str) -> str:
    if name in ("wte", "wpe"):
        return f"transformer.{name}.weight"
    parts = name.split(".")
    if parts[0] == "blocks":
        parts[0] = "h"
    inverse = {"g": "weight", "b": "bias", "w": "weight"}
    parts[-1] = inverse[parts[-1]]
    return "transformer." + ".".join(parts)


def load(directory: str | Path) -> tuple[GPT2Config, dict[str, Any]]:
    """Config and nested float32 params from a Hugging Face GPT-2 directory."""
    directory = Path(directory)
    config_path, weights_path = directory / "config.json", directory / MODEL_FILE
    if not config_path.exists():
        raise CheckpointError(f"{config_path}: missing; a Hugging Face GPT-2 directory needs config.json")
    try:
        config = GPT2Config.from_dict(json.loads(config_path.read_text()))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{config_path}: {e}") from None
    tensors, _ = read_safetensors(weights_path)
    flat = {}
    for name, arr in tensors.items():
        ours = hf_to_npgpt_name(name)
        if ours is not None:
            flat[ours] = as_float32(arr, name, str(weights_path))
    return config, unflatten(flat, config, source=str(weights_path))


def save(directory: str | Path, config: GPT2Config, params: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` + ``config.json`` that ``GPT2LMHeadModel.from_pretrained`` reads."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    flat = {npgpt_to_hf_name(k): np.ascontiguousarray(v, dtype=np.float32) for k, v in flatten(params).items()}
    hf_config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.n_vocab, "n_positions": config.n_ctx, "n_ctx": config.n_ctx,
        "n_embd": config.n_embd, "n_head": config.n_head, "n_layer": config.n_layer,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True,
        **({"bos_token_id": 50256, "eos_token_id": 50256} if config.n_vocab > 50256 else {}),
    }
    unflatten({hf_to_npgpt_name(k) or k: v for k, v in flat.items()}, config)
    with atomic_path(directory / MODEL_FILE) as tmp:
        save_file(flat, tmp, metadata={"format": "pt"})
    with atomic_path(directory / "config.json") as tmp:
        Path(tmp).write_text(json.dumps(hf_config, indent=2))
    return directory
