"""TransformerLens's optional input hook points, made outside the model where a hook or ``names_filter`` names them.

TransformerLens fills them only with a flag on: ``blocks.{i}.hook_attn_in`` (``use_attn_in``) and
``hook_q_input``/``hook_k_input``/``hook_v_input`` (``use_split_qkv_input``), the stream entering block i
copied per head [B, T, H, C], each head's query, key or value computed from its own copy through ``ln1``; and
``blocks.{i}.hook_mlp_in`` (``use_hook_mlp_in``), the MLP's input [B, T, C] before ``ln2``, which leaves the
residual stream as it is. ``model.gpt2`` has none of them (it projects q, k and v of all heads at once), so
:func:`with_inputs` calls the hook at each one named, right after ``hook_resid_pre`` (``hook_resid_mid``), and
only where a hook changed one recomputes what reads it, as TransformerLens computes it: that head's q, k or v,
``ln2.hook_scale`` and ``ln2.hook_normalized``. A hook that only reads them changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from array_api_compat import array_namespace, is_writeable_array

from .config import GPT2Config
from .hook_points import INPUT_HOOKS
from .model import layer_norm, linear

Array = Any
Hook = Callable[[str, Array], Array]


def call_edited(hook: Hook, name: str, x: Array) -> tuple[Array, bool]:
    """``hook(name, x)``, and whether it changed x: returned another array, or wrote in place."""
    xp = array_namespace(x)
    before = xp.asarray(x, copy=True) if is_writeable_array(x) else None  # to see an edit in place
    after = hook(name, x)
    return after, after is not x or (before is not None and not bool(xp.all(after == before)))


def per_head(x: Array, n_head: int) -> Array:
    """The stream [B, T, C] copied for each head, [B, T, H, C] (TransformerLens's ``repeat_along_head_dimension``)."""
    xp = array_namespace(x)
    return xp.asarray(xp.broadcast_to(x[..., None, :], (*x.shape[:-1], n_head, x.shape[-1])), copy=True)


def head_projection(inputs: Array, which: int, ln_1: dict[str, Any], c_attn: dict[str, Any], eps: float) -> Array:
    """Each head's query (``which`` 0), key (1) or value (2) [B, T, H, D] from its own input [B, T, H, C]: head h's
    ``ln1`` of input h times its columns of ``c_attn`` (the model's product, so 16-bit and int8 weights too; it
    costs H times the block's q, k and v, paid only for an input a hook changed)."""
    xp = array_namespace(inputs)
    B, T, H, C = inputs.shape
    qkv = linear(layer_norm(inputs, **ln_1, eps=eps), **c_attn)  # [B, T, H, C] -> [B, T, H, 3*C]
    own = xp.reshape(qkv, (B, T, H, 3, H, C // H))[:, :, :, which]  # -> [B, T, H (input), H (head), D]
    return xp.sum(own * xp.eye(H, dtype=own.dtype)[:, :, None], axis=-2)  # head h of input h -> [B, T, H, D]


def with_inputs(hook: Hook, named: Callable[[str], bool], weights: dict[str, Any], config: GPT2Config) -> Hook:
    """``hook``, also called at the optional input hook points ``named`` names (see the module's docstring);
    ``weights``: the model's params as held."""
    eps = config.layer_norm_epsilon
    changed: dict[str, Array] = {}  # 'q', 'k', 'v' or 'mlp' -> the changed input, until what reads it
    mlp_scale: list[Array] = []

    def hooked(name: str, x: Array) -> Array:
        if not name.startswith("blocks."):
            return hook(name, x)
        layer = int(name.split(".")[1])
        block, point = f"blocks.{layer}.", name.split(".", 2)[2]
        xp = array_namespace(x)
        if point in ("attn.hook_q", "attn.hook_k", "attn.hook_v") and point[-1] in changed:
            weight = weights["blocks"][layer]
            x = head_projection(
                changed.pop(point[-1]), "qkv".index(point[-1]), weight["ln_1"], weight["attn"]["c_attn"], eps
            )
        elif point == "ln2.hook_scale" and "mlp" in changed:  # ln2 reads hook_mlp_in, as TransformerLens's
            centered = changed["mlp"] - xp.mean(changed["mlp"], axis=-1, keepdims=True)
            x = xp.sqrt(xp.mean(centered * centered, axis=-1, keepdims=True) + eps)
        elif point == "ln2.hook_normalized" and "mlp" in changed:
            mlp_in = changed.pop("mlp")
            x = (mlp_in - xp.mean(mlp_in, axis=-1, keepdims=True)) / mlp_scale.pop()
        x = hook(name, x)
        if point == "ln2.hook_scale" and "mlp" in changed:
            mlp_scale.append(x)  # as the hook left it, as ln2's normalized reads it
        if point == "hook_resid_pre" and any(named(block + n) for n in INPUT_HOOKS[:4]):
            attn_in, edited = per_head(x, config.n_head), False
            if named(block + "hook_attn_in"):
                attn_in, edited = call_edited(hook, block + "hook_attn_in", attn_in)
            for j in "qkv":
                own, edited_j = attn_in, edited
                if named(f"{block}hook_{j}_input"):
                    own, now = call_edited(hook, f"{block}hook_{j}_input", xp.asarray(attn_in, copy=True))
                    edited_j = edited_j or now
                if edited_j:
                    changed[j] = own
        if point == "hook_resid_mid" and named(block + "hook_mlp_in"):
            mlp_in, edited = call_edited(hook, block + "hook_mlp_in", xp.asarray(x, copy=True))
            if edited:
                changed["mlp"] = mlp_in
        return x

    return hooked
