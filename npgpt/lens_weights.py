"""TransformerLens's weight names on npgpt's model: ``model.W_Q``, ``model.W_U``, ``model.b_O`` ... as HookedTransformer
has them, stacked over the blocks in its shapes, so circuit code written for it (``model.W_E @ model.W_U``,
``model.W_V[l, h] @ model.W_O[l, h]``, ``model.tokens_to_residual_directions(answers)``) runs unchanged.

Each is a read-only float32 NumPy array made from ``model.params`` (OpenAI's layout: Conv1D ``w`` [in, out], the
heads side by side) when read: where the params are float32 NumPy already a view of them, no copy (``W_E``,
``W_pos``, ``W_U``: GPT-2 124M's head is 154 MB), else a copy (the stacked block weights, 16-bit weights, another
backend's). Read-only either way, so writing to one raises NumPy's "assignment destination is read-only" rather than
silently changing nothing, or changing ``model.params`` behind copies the engine made of them (TransformerLens's
``W_U`` is its Parameter, and a write changes the model; its stacked ``W_Q`` is a copy, and a write changes
nothing). They are the weights as loaded, with none of TransformerLens's processing (no folded layer norms, no
centring): those of ``from_pretrained_no_processing``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import array_namespace

from .errors import NpgptError, shown
from .lens_names import ModelAttributeError
from .params import head_name

# TransformerLens's names -> their shapes (B blocks, H heads, C d_model, D d_head, M d_mlp, V d_vocab, N n_ctx)
WEIGHT_SHAPES = {
    "W_E": "[V, C]",
    "W_pos": "[N, C]",
    "W_E_pos": "[V + N, C]",
    "W_U": "[C, V]",
    "b_U": "[V]",
    "W_Q": "[B, H, C, D]",
    "W_K": "[B, H, C, D]",
    "W_V": "[B, H, C, D]",
    "b_Q": "[B, H, D]",
    "b_K": "[B, H, D]",
    "b_V": "[B, H, D]",
    "W_O": "[B, H, D, C]",
    "b_O": "[B, C]",
    "W_in": "[B, C, M]",
    "b_in": "[B, M]",
    "W_out": "[B, M, C]",
    "b_out": "[B, C]",
}

# Where each is in model.params (OpenAI's layout), for the way to change one
_PARAM_OF = {
    "W_E": "'wte'",
    "W_pos": "'wpe'",
    "W_E_pos": "'wte' and 'wpe'",
    "W_U": "the head, 'wte' (an untied model's 'lm_head'), transposed",
    "b_U": "none: GPT-2's unembedding has no bias",
    "W_Q": "a third of each block's attn.c_attn.w",
    "W_K": "a third of each block's attn.c_attn.w",
    "W_V": "a third of each block's attn.c_attn.w",
    "b_Q": "a third of each block's attn.c_attn.b",
    "b_K": "a third of each block's attn.c_attn.b",
    "b_V": "a third of each block's attn.c_attn.b",
    "W_O": "each block's attn.c_proj.w",
    "b_O": "each block's attn.c_proj.b",
    "W_in": "each block's mlp.c_fc.w",
    "b_in": "each block's mlp.c_fc.b",
    "W_out": "each block's mlp.c_proj.w",
    "b_out": "each block's mlp.c_proj.b",
}

# Conv1D layers' [in, out] weight (and bias) of each of TransformerLens's block weights: (sublayer, layer, part of
# c_attn's three, or None for the whole)
_BLOCK = {
    "Q": ("attn", "c_attn", 0),
    "K": ("attn", "c_attn", 1),
    "V": ("attn", "c_attn", 2),
    "O": ("attn", "c_proj", None),
    "in": ("mlp", "c_fc", None),
    "out": ("mlp", "c_proj", None),
}


def _host(model: Any, a: Any, name: str) -> np.ndarray:
    """A param as float32 NumPy (16-bit weights widened), a view where it is float32 NumPy already; 8-bit codes
    are refused, naming the float load."""
    dtype = str(getattr(a, "dtype", ""))
    if "float" not in dtype:
        raise NpgptError(
            f"model.{name} needs the float weights, and this model holds them as {shown(model.dtype)} "
            "codes: load it with dtype='float32' to read TransformerLens's weights"
        )
    if isinstance(a, np.ndarray) and a.dtype == np.float32:
        return a
    xp = array_namespace(a)
    return np.asarray(model.backend.to_numpy(xp.astype(a, xp.float32)), np.float32)


def _read_only(a: np.ndarray) -> np.ndarray:
    """``a`` as a view that refuses writes (the params it may view stay writable to their owner)."""
    view = a.view()
    view.flags.writeable = False
    return view


def _block_weight(model: Any, name: str) -> np.ndarray:
    """``W_Q`` ... ``b_out``: each block's, in TransformerLens's shape, stacked [n_layer, ...]."""
    config = model.config
    C, H, D = config.n_embd, config.n_head, config.head_dim
    kind, which = name[0], name[2:]
    sublayer, layer, part = _BLOCK[which]
    out: np.ndarray | None = None  # [n_layer, ...], filled block by block: one copy, no stacked temporaries
    for i, block in enumerate(model.params["blocks"]):
        params = block[sublayer][layer]
        if kind == "b" and params.get("b") is None:  # a bias=False model: TransformerLens's zeros
            width = 3 * C if part is not None else config.d_mlp if which == "in" else C
            a: np.ndarray = np.zeros(width, np.float32)
        else:
            a = _host(model, params[kind.lower()], name)
        if part is not None:  # c_attn's q, k or v: [C, 3C] -> [C, C] -> [H, C, D]; [3C] -> [C] -> [H, D]
            a = a[..., part * C : (part + 1) * C]
            a = a.reshape(C, H, D).transpose(1, 0, 2) if kind == "W" else a.reshape(H, D)
        elif which == "O" and kind == "W":  # c_proj [H*D, C] -> [H, D, C]: rows h*D:(h+1)*D are head h's
            a = a.reshape(H, D, C)
        if out is None:
            out = np.empty((config.n_layer, *a.shape), np.float32)
        out[i] = a
    assert out is not None  # a config has at least one block
    return out


def lens_weight(model: Any, name: str) -> np.ndarray:
    """TransformerLens's ``model.{name}`` (a key of :data:`WEIGHT_SHAPES`) as a read-only float32 NumPy array of its
    shape: a view of the params where they are float32 NumPy, else a copy."""
    params = model.params
    if name == "W_E":
        a = _host(model, params["wte"], name)
    elif name == "W_pos":
        a = _host(model, params["wpe"], name)
    elif name == "W_E_pos":
        a = np.concatenate([lens_weight(model, "W_E"), lens_weight(model, "W_pos")])
    elif name == "W_U":  # the head's [V, C] transposed: on NumPy a view of the [C, V] the output product reads
        a = _host(model, params[head_name(params)], name).T
    elif name == "b_U":  # GPT-2's unembedding has no bias: TransformerLens's zeros
        a = np.zeros(model.config.n_vocab, np.float32)
    else:
        a = _block_weight(model, name)
    return _read_only(a)


def weight_write_error(name: str) -> ModelAttributeError:
    """The one-line refusal of ``model.{name} = ...``, which would hide the weight behind an array the model never
    reads (TransformerLens's ``W_Q`` ... are properties without a setter, too)."""
    return ModelAttributeError(
        f"model.{name} is TransformerLens's weight, read-only, made from model.params when read "
        f"({_PARAM_OF[name]}); to run other weights, change a copy of the params and load it: "
        "GPT2(model.config, params, model.tokenizer)"
    )


def tokens_to_residual_directions(model: Any, tokens: Any) -> np.ndarray:
    """TransformerLens's ``tokens_to_residual_directions``: each token's unembedding direction, ``W_U[:, token]``,
    [..., C] for tokens of any shape (a one-token text, an id, or an array of ids)."""
    if isinstance(tokens, str):
        tokens = model.to_single_token(tokens)
    try:
        ids = np.asarray(tokens.detach().cpu() if hasattr(tokens, "detach") else tokens)
    except (TypeError, ValueError):
        ids = np.asarray(None)
    if ids.dtype.kind not in "iu" or ids.size == 0 or ((ids < 0) | (ids >= model.config.n_vocab)).any():
        raise NpgptError(
            f"tokens must be a one-token text, a token id or an array of ids in [0, {model.config.n_vocab}), "
            f"got {shown(tokens)}"
        )
    head = _host(model, model.params[head_name(model.params)], "tokens_to_residual_directions")
    return head[ids]  # the rows of [V, C] are W_U's columns: [..., C]
