"""TransformerLens's model parts as functions of npgpt's weights, for the lines its users write by hand:
``model.unembed(model.ln_final(cache["resid_post", -1]))`` (the logit lens of one stream), ``model.embed(tokens)``,
``model.accumulated_bias(layer)`` (the output biases summed up to a block, for direct logit attribution) and
``model.loss_fn(logits, tokens)``.

Each takes any library's array (a torch tensor from TransformerLens code, a cached NumPy one) and returns float32
NumPy, computed as the model computes it, on the weights as loaded (TransformerLens's with no weight processing;
with its default processing, ``unembed(ln_final(x))`` is the same product).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import NpgptError, shown
from .hook_io import lm_loss
from .lens_weights import lens_weight
from .model import layer_norm


def _host(x: Any) -> np.ndarray:
    """Any library's array as NumPy (a torch tensor's values; None for what is no array of numbers)."""
    try:
        a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    except (TypeError, ValueError, RuntimeError):
        return np.asarray(None)
    return a


def _stream(model: Any, x: Any, method: str) -> np.ndarray:
    """``x`` as float32 [..., C], the residual stream's width, or NpgptError naming ``method``."""
    a, C = _host(x), model.config.n_embd
    if a.dtype.kind not in "fiu" or a.ndim == 0 or a.shape[-1] != C:
        raise NpgptError(f"{method} takes the residual stream, an array [..., {C}], got {shown(x)}")
    return a.astype(np.float32)


def embed(model: Any, tokens: Any) -> np.ndarray:
    """TransformerLens's ``model.embed(tokens)``: each token's row of ``W_E``, [..., C]."""
    ids = _host(tokens)
    if ids.dtype.kind not in "iu" or ids.size == 0 or ((ids < 0) | (ids >= model.config.n_vocab)).any():
        raise NpgptError(f"embed takes token ids in [0, {model.config.n_vocab}), got {shown(tokens)}", param="tokens")
    return lens_weight(model, "W_E")[ids]


def ln_final(model: Any, x: Any) -> np.ndarray:
    """TransformerLens's ``model.ln_final(x)``: the final layer norm (its g and b) on each position of ``x``."""
    g, b = (model.params["ln_f"].get(k) for k in ("g", "b"))  # no b: nanoGPT's bias=False
    g, b = (None if v is None else np.asarray(model.backend.to_numpy(v), np.float32) for v in (g, b))
    return layer_norm(_stream(model, x, "ln_final"), g, b, eps=model.config.layer_norm_epsilon)


def unembed(model: Any, x: Any) -> np.ndarray:
    """TransformerLens's ``model.unembed(x)``: ``x @ W_U`` (GPT-2's ``b_U`` is zeros), the logits [..., V]."""
    return _stream(model, x, "unembed") @ lens_weight(model, "W_U")


LENS_MODULES = {"embed": embed, "ln_final": ln_final, "unembed": unembed}


def accumulated_bias(model: Any, layer: Any, mlp_input: Any = False, include_mlp_biases: Any = True) -> np.ndarray:
    """TransformerLens's ``model.accumulated_bias(layer)``: the output biases (``b_O``, and ``b_out`` with
    ``include_mlp_biases``) of blocks 0..layer-1 summed, [C]; with ``mlp_input`` block ``layer``'s ``b_O`` too."""
    n = model.config.n_layer
    if not (isinstance(layer, (int, np.integer)) and not isinstance(layer, bool) and 0 <= layer <= n):
        raise NpgptError(f"accumulated_bias' layer must be a block in [0, {n}] (n_layer: all of them), got {layer!r}")
    if mlp_input and layer == n:
        raise NpgptError(f"accumulated_bias(layer={n}, mlp_input=True): there is no block {n}, whose MLP input it is")
    b_O, b_out = lens_weight(model, "b_O"), lens_weight(model, "b_out")
    total = b_O[:layer].sum(axis=0) + (b_out[:layer].sum(axis=0) if include_mlp_biases else 0.0)
    return (total + b_O[layer] if mlp_input else total).astype(np.float32)


def loss_fn(model: Any, logits: Any, tokens: Any, attention_mask: Any = None, per_token: bool = False) -> Any:
    """TransformerLens's ``model.loss_fn(logits, tokens)``: the mean next-token loss of ``tokens`` [B, T] under
    ``logits`` [B, T, V] (``per_token``: [B, T-1]), as ``model(tokens, return_type='loss')`` computes it."""
    host, ids = _host(logits), _host(tokens)
    if ids.ndim == 1:
        ids = ids[None]
    if host.ndim == 2:
        host = host[None]
    if host.dtype.kind != "f" or ids.dtype.kind not in "iu" or host.shape[:-1] != ids.shape:
        raise NpgptError(
            f"loss_fn takes logits [B, T, V] and the token ids [B, T] they were computed from, got "
            f"{shown(logits)} and {shown(tokens)}"
        )
    mask = None if attention_mask is None else _host(attention_mask).reshape(ids.shape)
    return lm_loss(host, ids, mask, per_token)
