"""npgpt's flat tensor names, the expected shape of each, and random initialisation.

The params pytree is ``{"wte", "wpe", "blocks": [block, ...], "ln_f"}``, plus ``"lm_head"`` [V, C]
when the output head is not tied to ``wte``, and without the biases (``b``) of a ``bias=False``
model; flattened names join the path with dots (``blocks.3.attn.c_attn.w``). Every format
module maps its own names to these, and :func:`unflatten` checks every tensor against the
config before the model ever sees it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import GPT2Config
from ..errors import CheckpointError


def expected_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Every tensor npgpt needs for ``config``, by flat name, with its shape."""
    C, V, F = config.n_embd, config.n_vocab, config.d_mlp
    shapes: dict[str, tuple[int, ...]] = {"wte": (V, C), "wpe": (config.n_ctx, C)}
    for i in range(config.n_layer):
        p = f"blocks.{i}."
        shapes.update({
            p + "ln_1.g": (C,), p + "ln_1.b": (C,),
            p + "attn.c_attn.w": (C, 3 * C), p + "attn.c_attn.b": (3 * C,),
            p + "attn.c_proj.w": (C, C), p + "attn.c_proj.b": (C,),
            p + "ln_2.g": (C,), p + "ln_2.b": (C,),
            p + "mlp.c_fc.w": (C, F), p + "mlp.c_fc.b": (F,),
            p + "mlp.c_proj.w": (F, C), p + "mlp.c_proj.b": (C,),
        })
    shapes.update({"ln_f.g": (C,), "ln_f.b": (C,)})
    if not config.tie_word_embeddings:
        shapes["lm_head"] = (V, C)  # the output head, laid out like wte (HF's and nanoGPT's lm_head.weight)
    if not config.bias:
        shapes = {k: v for k, v in shapes.items() if not k.endswith(".b")}
    return shapes


def flatten(params: dict[str, Any]) -> dict[str, Any]:
    """Nested params -> ``{"blocks.0.ln_1.g": array, ...}``."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f"{prefix}{i}.")
        else:
            flat[prefix[:-1]] = node

    walk(params, "")
    return flat


def unflatten(flat: dict[str, Any], config: GPT2Config, source: str = "checkpoint") -> dict[str, Any]:
    """Flat names -> nested params, checking that every tensor is present with the right shape."""
    expected = expected_shapes(config)
    missing = [k for k in expected if k not in flat]
    if missing:
        raise CheckpointError(
            f"{source}: {len(missing)} tensor(s) missing, e.g. {missing[0]!r}; "
            "the file is incomplete or was written for another model"
        )
    extra = [k for k in flat if k not in expected]
    if extra:
        raise CheckpointError(f"{source}: unexpected tensor {extra[0]!r} for a GPT-2 model")
    for name, shape in expected.items():
        if tuple(flat[name].shape) != shape:
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {tuple(flat[name].shape)}, expected {shape} "
                f"for config {config}"
            )
    params: dict[str, Any] = {"blocks": [{} for _ in range(config.n_layer)]}
    for name, value in flat.items():
        parts = name.split(".")
        node: Any = params
        if parts[0] == "blocks":
            node, parts = params["blocks"][int(parts[1])], parts[2:]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return params


def init_params(config: GPT2Config, seed: int = 0, std: float = 0.02) -> dict[str, Any]:
    """Random float32 weights of GPT-2's shape (normal(0, std) matrices, unit gains, zero biases).

    Residual projections are scaled by 1/sqrt(2 * n_layer), as in GPT-2's paper.
    """
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in expected_shapes(config).items():
        if name.endswith(".g"):
            flat[name] = np.ones(shape, np.float32)
        elif name.endswith(".b"):
            flat[name] = np.zeros(shape, np.float32)
        else:
            scale = std / np.sqrt(2 * config.n_layer) if name.endswith("c_proj.w") else std
            flat[name] = (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale))
    return unflatten(flat, config)
