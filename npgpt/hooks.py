"""Looking inside the model: TransformerLens's ``run_with_cache`` and ``run_with_hooks`` for npgpt.

``model.gpt2`` calls an optional ``hook(name, x)`` at each named point of the forward pass, with
TransformerLens's hook names and shapes (listed by :func:`hook_names`). This module turns that one
mechanism into TransformerLens's interface: caching activations by name, and forward hooks
``fn(activation, hook_name)`` that may return a replacement (ablation, patching, steering).

The hooked forward runs the uncompiled ``model.gpt2`` on the backend's arrays, so it works on every
backend; with ``host=False`` on JAX the activations stay traceable, and :func:`activation_grads`
takes the gradient of a metric with respect to every cached activation in one ``jax.grad``.
Differences from TransformerLens: attention scores a query may not see hold about ``-1e9``
(``model.MASKED``) rather than ``-inf``, and in a left-padded batch the activations at padding
positions are meaningless (they are in TransformerLens too, and differ).
"""

from __future__ import annotations

import copy
import functools
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from array_api_compat import array_namespace, is_array_api_obj, is_writeable_array

from .backends import float32_products
from .engine import as_engine, positions_and_mask
from .errors import NpgptError, is_integer, shown
from .model import gpt2, layer_norm

if TYPE_CHECKING:
    from .backends import Backend
    from .engine import Engine, HasEngine

Array = Any
HookFn = Callable[[Array, str], Array | None]  # fn(activation, hook_name) -> replacement, or None to keep it
NamesFilter = str | Iterable[str] | Callable[[str], bool] | None

# Each block's hook points in the order the forward pass reaches them (TransformerLens's names).
BLOCK_HOOKS = (
    "hook_resid_pre",
    "ln1.hook_scale",
    "ln1.hook_normalized",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "hook_attn_out",
    "hook_resid_mid",
    "ln2.hook_scale",
    "ln2.hook_normalized",
    "mlp.hook_pre",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)


# TransformerLens's hook points that it fills only when asked (use_attn_result, use_split_qkv_input,
# use_attn_in, use_hook_mlp_in): npgpt has none of them, and says where the same numbers are.
OPTIONAL_IN_TL = {
    "attn.hook_result": "blocks.{i}.attn.hook_z times each head's rows of attn.c_proj.w",
    "hook_attn_in": "blocks.{i}.hook_resid_pre",
    "hook_q_input": "blocks.{i}.hook_resid_pre",
    "hook_k_input": "blocks.{i}.hook_resid_pre",
    "hook_v_input": "blocks.{i}.hook_resid_pre",
    "hook_mlp_in": "blocks.{i}.hook_resid_mid",
}


def hook_names(n_layer: int) -> list[str]:
    """Every hook point of an ``n_layer`` model, in forward order.

    Shapes (B batch, T tokens, C n_embd, H heads, D head dim): ``hook_embed``, ``hook_pos_embed``,
    ``hook_resid_*``, ``hook_attn_out``, ``hook_mlp_out``, ``*.hook_normalized`` [B, T, C];
    ``*.hook_scale`` [B, T, 1]; ``attn.hook_q/k/v/z`` [B, T, H, D]; ``attn.hook_attn_scores`` and
    ``attn.hook_pattern`` [B, H, T, T] (query, key); ``mlp.hook_pre/post`` [B, T, 4C].
    """
    blocks = [f"blocks.{i}.{n}" for i in range(n_layer) for n in BLOCK_HOOKS]
    return ["hook_embed", "hook_pos_embed", *blocks, "ln_final.hook_scale", "ln_final.hook_normalized"]


def name_filter(names_filter: NamesFilter, n_layer: int) -> Callable[[str], bool]:
    """A predicate over hook names from TransformerLens's ``names_filter`` forms: None (every hook),
    a name, a list of names, or a callable. Unknown names raise :class:`NpgptError`."""
    if names_filter is None:
        return lambda name: True
    if callable(names_filter):
        return names_filter
    names = [names_filter] if isinstance(names_filter, str) else None
    if names is None and isinstance(names_filter, Iterable):
        names = list(names_filter)  # checked before the set: a list inside ([["a"]]) cannot be hashed
    if names is None or not all(isinstance(n, str) for n in names):
        raise NpgptError(
            f"names_filter must be a hook name, a list of names or a function of a name, got {names_filter!r}"
        )
    wanted = set(names)
    unknown = sorted(wanted - set(hook_names(n_layer)))
    if unknown:
        optional = [
            f"{n} is not computed (TransformerLens's optional hook): use {where.format(i=n.split('.')[1])}"
            for n in unknown
            for end, where in OPTIONAL_IN_TL.items()
            if n.startswith("blocks.") and n.endswith("." + end)
        ]
        raise NpgptError(
            f"unknown hook name(s) {', '.join(map(repr, unknown))}; the names are those of "
            f"npgpt.hooks.hook_names({n_layer}), e.g. 'blocks.0.attn.hook_pattern'"
            + "".join(f"; {o}" for o in optional)
        )
    return wanted.__contains__


# TransformerLens's shorthand for hook names (utils.get_act_name), ported rule for rule so that a
# key reads as there: 'pattern0' and ('pattern', 0) are blocks.0.attn.hook_pattern, 'scale' alone
# is ln_final.hook_scale, ('scale', 1, 'ln1') is blocks.1.ln1.hook_scale.
_ACT_ALIAS = {
    "attn": "pattern",
    "attn_logits": "attn_scores",
    "key": "k",
    "query": "q",
    "value": "v",
    "mlp_pre": "pre",
    "mlp_mid": "mid",
    "mlp_post": "post",
}
_LAYER_TYPE_ALIAS = {"a": "attn", "m": "mlp", "b": "", "block": "", "blocks": "", "attention": "attn"}
_ATTN_NAMES = ("k", "v", "q", "z", "rot_k", "rot_q", "result", "pattern", "attn_scores")
_MLP_NAMES = ("pre", "post", "mid", "pre_linear")


def act_name(name: str, layer: int | str | None = None, layer_type: str | None = None) -> str:
    """The hook name TransformerLens's ``utils.get_act_name`` makes of a shorthand: ``act_name('k', 6)``
    and ``act_name('k6')`` are ``'blocks.6.attn.hook_k'``; a full name is returned as it is."""
    if ("." in name or name.startswith("hook_")) and layer is None and layer_type is None:
        return name
    match = re.match(r"([a-z]+)(\d+)([a-z]?.*)", name)
    if match is not None:  # 'k6' -> ('k', '6', ''), 'scale4ln1' -> ('scale', '4', 'ln1')
        name, layer, layer_type = match.groups()
    name = _ACT_ALIAS.get(name, name)
    if name in _ATTN_NAMES:
        layer_type = "attn"
    elif name in _MLP_NAMES:
        layer_type = "mlp"
    elif layer_type in _LAYER_TYPE_ALIAS:
        layer_type = _LAYER_TYPE_ALIAS[layer_type]
    full = (f"blocks.{layer}." if layer is not None else "") + (f"{layer_type}." if layer_type else "") + f"hook_{name}"
    return f"ln_final.{full}" if name in ("scale", "normalized") and layer is None else full


# TransformerLens's ActivationCache methods npgpt's has not -> npgpt's way to the same numbers
_CACHE_METHODS_NOT_HERE = {
    "remove_batch_dim": "npgpt's arrays keep the batch axis; index them with [0] (cache['pattern', 0][0])",
    "logit_attrs": "apply_ln_to_stack(stack) @ the tokens' unembedding rows, model.params['wte'][tokens].T",
    "logit_lens": "npgpt.lens.logit_lens(model, ids), or accumulated_resid(apply_ln=True) @ model.params['wte'].T",
    "stack_head_results": "npgpt caches no attn.hook_result: each head's blocks.{i}.attn.hook_z times its rows "
    "of attn.c_proj.w",
    "compute_head_results": "npgpt caches no attn.hook_result: each head's blocks.{i}.attn.hook_z times its rows "
    "of attn.c_proj.w",
    "get_full_resid_decomposition": "decompose_resid() gives it per layer; per head, multiply "
    "blocks.{i}.attn.hook_z by each head's rows of attn.c_proj.w",
    "stack_neuron_results": "blocks.{i}.mlp.hook_post[..., n, None] times row n of mlp.c_proj.w",
    "get_neuron_results": "blocks.{i}.mlp.hook_post[..., n, None] times row n of mlp.c_proj.w",
    "apply_slice_to_batch_dim": "index the arrays on their first axis",
    "to": "the arrays are NumPy (run_with_cache's host=False keeps the backend's)",
    "toggle_autodiff": "npgpt.hooks.activation_grads gives a metric's gradient at every activation (JAX)",
    "cache_dict": "the cache is itself the dict (dict(cache) for a plain one)",
}


class CacheAttributeError(NpgptError, AttributeError):
    """A TransformerLens ActivationCache method npgpt's cache has not, with npgpt's way to the same numbers."""


class CacheKeyError(NpgptError, KeyError):
    """A cache key that names no cached activation: a KeyError (as TransformerLens's), with a message."""

    __str__ = Exception.__str__  # KeyError's own would quote the message


@functools.cache
def _register_with_jax() -> None:
    """Make ActivationCache a JAX pytree, as the plain dict it extends is: JAX takes a dict subclass for
    one leaf, so jax.tree_util.tree_map(f, cache) and a jitted function returning a cache would fail.
    The activations are the children, in key order; the model is aux data (compared by identity)."""
    import jax

    def flatten(cache: ActivationCache) -> tuple[list[Any], tuple[Any, ...]]:
        return list(cache.values()), (tuple(cache), cache.model)

    def unflatten(aux: tuple[Any, ...], children: Iterable[Any]) -> ActivationCache:
        names, model = aux
        return ActivationCache(dict(zip(names, children, strict=True)), model)

    jax.tree_util.register_pytree_node(ActivationCache, flatten, unflatten)


def _positions(pos_slice: Any) -> Any:
    """TransformerLens's ``pos_slice`` as an index of the position axis: an int (the axis goes),
    a tuple (``slice(*t)``), a slice, a list or array of positions, or None (all)."""
    if is_integer(pos_slice):
        return int(pos_slice)
    if pos_slice is None:
        return slice(None)
    if isinstance(pos_slice, tuple):
        return slice(*pos_slice)
    if isinstance(pos_slice, slice):
        return pos_slice
    if isinstance(pos_slice, (list, np.ndarray)):
        return np.asarray(pos_slice)
    raise NpgptError(
        f"pos_slice must be a position, a (stop,)/(start, stop[, step]) tuple, a slice or a list of positions, "
        f"got {shown(pos_slice)}",
        param="pos_slice",
    )


class ActivationCache(dict):
    """What :func:`run_with_cache` returns: a dict of activations keyed by hook name that also reads
    TransformerLens's keys and answers its ``ActivationCache`` helpers.

    ``cache["blocks.0.attn.hook_pattern"]``, ``cache["pattern", 0]``, ``cache["pattern0"]`` and
    ``cache["attn", -3]`` (a negative layer counts from the end) are one array; ``accumulated_resid``,
    ``decompose_resid``, ``stack_activation`` and ``apply_ln_to_stack`` compute what TransformerLens's
    do (checked against it in tests/test_hooks.py). A key naming no cached activation raises
    :class:`CacheKeyError` (a KeyError) saying why. Iteration, ``in``, ``get`` and ``dict(cache)`` see the
    full names only, as a dict's. It is a JAX pytree of its arrays, as a dict is; pickled, it is the
    plain dict of its arrays (the model it refers to is not saved).
    """

    def __init__(self, activations: dict[str, Any], model: Engine | HasEngine) -> None:
        super().__init__(activations)
        self.model = model  # as TransformerLens's cache.model: its final layer norm, for apply_ln at the unembed
        self.n_layer = model.config.n_layer
        if "jax" in sys.modules:  # only where JAX is loaded can its tree functions meet a cache
            _register_with_jax()

    def __getattr__(self, name: str) -> Any:  # only for attributes the class has not
        if name in _CACHE_METHODS_NOT_HERE:
            raise CacheAttributeError(
                f"npgpt's cache has no {name} (TransformerLens's ActivationCache.{name}); "
                + _CACHE_METHODS_NOT_HERE[name]
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __copy__(self) -> ActivationCache:
        return ActivationCache(dict(self), self.model)

    def __deepcopy__(self, memo: dict[int, Any]) -> ActivationCache:  # the arrays copied, the model shared
        return ActivationCache(copy.deepcopy(dict(self), memo), self.model)

    def __reduce__(self) -> tuple[Any, ...]:  # pickled as the dict of its arrays: a model is no file's to hold
        return dict, (dict(self),)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str) and dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        name = self._name(key)
        if dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        raise self._missing(key, name)

    def _name(self, key: Any) -> str:
        """The hook name of a key: a name or shorthand, or (shorthand, layer[, layer_type]) as TransformerLens
        reads it, a negative layer counted from the end."""
        if isinstance(key, str):
            return act_name(key)
        if isinstance(key, tuple) and 1 <= len(key) <= 3 and isinstance(key[0], str):
            name, layer, layer_type = (*key, None, None)[:3]
            if layer is not None and not is_integer(layer):
                raise CacheKeyError(
                    f"the layer in cache[{shown(key)[1:-1]}] must be a whole number, got {shown(layer)}"
                )
            if layer is not None and layer < 0:
                layer = self.n_layer + int(layer)
            if layer_type is not None and not isinstance(layer_type, str):
                raise CacheKeyError(
                    f"the layer type in cache[{shown(key)[1:-1]}] must be a str such as 'attn' or 'ln1'"
                )
            return act_name(name, layer, layer_type)
        raise CacheKeyError(
            f"cache keys are hook names or TransformerLens's shorthand: cache['blocks.0.attn.hook_pattern'], "
            f"cache['pattern', 0], cache['scale', 0, 'ln1']; got {shown(key)}"
        )

    def _missing(self, key: Any, name: str) -> CacheKeyError:
        """Why ``key`` (read as hook name ``name``) is not here, as one line."""
        shown_key = f"cache[{shown(key)[1:-1] if isinstance(key, tuple) else shown(key)}]"
        read = "" if name == key else f" (hook name {name!r})"
        if name in hook_names(self.n_layer):
            return CacheKeyError(
                f"{shown_key}{read} is not in this cache: the names_filter of the run that made it left it out"
            )
        layer = re.match(r"blocks\.(-?\d+)\.", name)
        if layer is not None and not 0 <= int(layer.group(1)) < self.n_layer:
            return CacheKeyError(
                f"{shown_key}{read}: this model's layers are 0 to {self.n_layer - 1} "
                f"(or -{self.n_layer} to -1 from the end)"
            )
        if layer is None and f"blocks.0.{name}" in hook_names(self.n_layer):  # 'resid_post' with no layer
            short = shown(key[0] if isinstance(key, tuple) else key)
            return CacheKeyError(
                f"{shown_key}{read} is in every block: give the layer, e.g. cache[{short}, 0] "
                "or cache[..., -1] for the last"
            )
        for end, where in OPTIONAL_IN_TL.items():
            if layer is not None and name.endswith("." + end):
                return CacheKeyError(
                    f"{shown_key}{read} is not computed (TransformerLens's optional hook): use "
                    + where.format(i=layer.group(1))
                )
        return CacheKeyError(
            f"unknown activation {shown_key}{read}; TransformerLens's names are embed, pos_embed, scale and "
            "normalized (of ln_final), and with a layer: resid_pre, resid_mid, resid_post, attn_out, mlp_out, "
            "q, k, v, z, attn_scores, pattern, pre, post, and scale or normalized with 'ln1' or 'ln2' "
            "(e.g. cache['pattern', 0], cache['scale', 0, 'ln1']); or a hook name of hooks.hook_names(n_layer)"
        )

    def _layer(self, layer: Any, lowest: int = 0) -> int:
        """TransformerLens's ``layer`` of the stacking helpers: None or -1 is n_layer (up to the unembed)."""
        if layer is None or (is_integer(layer) and layer == -1):
            return self.n_layer
        if not (is_integer(layer) and lowest <= layer <= self.n_layer):
            raise NpgptError(
                f"layer must be a whole number in [{lowest}, {self.n_layer}] for this model "
                f"(-1 or None: {self.n_layer}, all of it), got {shown(layer)}",
                param="layer",
            )
        return int(layer)

    def _stack(self, arrays: list[Any], positions: Any = slice(None)) -> Any:
        """[components, ...] of arrays [..., T, C], each indexed by ``positions`` on the T axis."""
        arrays = [a[..., positions, :] for a in arrays]
        return array_namespace(*arrays).stack(arrays, axis=0)

    def _ln_final(self, like: Any) -> dict[str, Any]:
        """The model's final layer norm's g (and b) as arrays of ``like``'s library (float32 NumPy for a
        host cache of a torch or JAX model)."""
        xp = array_namespace(like)
        ln = {}
        for k, v in self.model.params["ln_f"].items():
            if v is not None and array_namespace(v) is not xp:
                v = xp.asarray(self.model.backend.to_numpy(array_namespace(v).astype(v, array_namespace(v).float32)))
            if v is not None:
                ln[k] = v
        return ln

    def accumulated_resid(
        self,
        layer: int | None = None,
        incl_mid: bool = False,
        apply_ln: bool = False,
        pos_slice: Any = None,
        mlp_input: bool = False,
        return_labels: bool = False,
    ) -> Any:
        """The residual stream entering each block up to ``layer`` [components, B, T, C] (TransformerLens's
        ``accumulated_resid``): ``resid_pre`` of blocks 0..layer, with ``layer`` None, -1 or n_layer the
        last block's ``resid_post`` as ``final_post``; ``incl_mid`` adds each earlier block's ``resid_mid``,
        ``mlp_input`` block ``layer``'s. ``apply_ln``: up to the unembed, the final layer norm applied to
        each (the logit lens); else centred and divided by block ``layer``'s cached scale. With
        ``return_labels``, ``(stack, labels)`` such as ``['0_pre', '1_pre', 'final_post']``."""
        layer = self._layer(layer)
        positions = _positions(pos_slice)
        labels, arrays = [], []
        for i in range(layer + 1):
            if i == self.n_layer:
                arrays.append(self["resid_post", self.n_layer - 1])
                labels.append("final_post")
                continue
            arrays.append(self["resid_pre", i])
            labels.append(f"{i}_pre")
            if (incl_mid and i < layer) or (mlp_input and i == layer):
                arrays.append(self["resid_mid", i])
                labels.append(f"{i}_mid")
        stack = self._stack(arrays, positions)
        if apply_ln:
            stack = self.apply_ln_to_stack(
                stack, layer, mlp_input=mlp_input, pos_slice=pos_slice, recompute_ln=layer == self.n_layer
            )
        return (stack, labels) if return_labels else stack

    def decompose_resid(
        self,
        layer: int | None = None,
        mlp_input: bool = False,
        mode: str = "all",
        apply_ln: bool = False,
        pos_slice: Any = None,
        incl_embeds: bool = True,
        return_labels: bool = False,
    ) -> Any:
        """The residual stream entering block ``layer`` as the sum of what wrote it [components, B, T, C]
        (TransformerLens's ``decompose_resid``): ``embed``, ``pos_embed`` and each earlier block's
        ``attn_out`` and ``mlp_out`` (``mode`` 'attn' or 'mlp': only those), plus block ``layer``'s
        ``attn_out`` with ``mlp_input``. ``apply_ln`` centres each and divides by block ``layer``'s
        cached scale (ln_final's at the unembed)."""
        layer = self._layer(layer)
        if mode not in ("all", "mlp", "attn"):
            raise NpgptError(f"mode must be 'all', 'mlp' or 'attn', got {shown(mode)}", param="mode")
        positions = _positions(pos_slice)
        labels, arrays = [], []
        if incl_embeds:  # as TransformerLens's: left out when run_with_cache's names_filter left them out
            for name, label in (("hook_embed", "embed"), ("hook_pos_embed", "pos_embed")):
                if name in self:
                    arrays.append(self[name])
                    labels.append(label)
        for i in range(layer):
            for kind in ("attn", "mlp"):
                if mode in ("all", kind):
                    arrays.append(self[f"{kind}_out", i])
                    labels.append(f"{i}_{kind}_out")
        if mlp_input and mode != "mlp":
            arrays.append(self["attn_out", layer])
            labels.append(f"{layer}_attn_out")
        if not arrays:
            raise NpgptError(
                f"decompose_resid(layer={layer}, mode={mode!r}, incl_embeds={incl_embeds}) has nothing to stack"
            )
        stack = self._stack(arrays, positions)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice)
        return (stack, labels) if return_labels else stack

    def stack_activation(self, activation_name: str, layer: int = -1, sublayer_type: str | None = None) -> Any:
        """``activation_name`` (shorthand, e.g. 'resid_post' or 'pattern') of blocks 0..layer-1 stacked
        [layer, ...] (TransformerLens's ``stack_activation``); ``layer`` -1 or None: every block."""
        layer = self._layer(layer, lowest=1)
        arrays = [self[activation_name, i, sublayer_type] for i in range(layer)]
        return array_namespace(*arrays).stack(arrays, axis=0)

    def apply_ln_to_stack(
        self,
        residual_stack: Any,
        layer: int | None = None,
        mlp_input: bool = False,
        pos_slice: Any = None,
        batch_slice: Any = None,
        has_batch_dim: bool = True,
        recompute_ln: bool = False,
    ) -> Any:
        """A stack [components, B, T, C] of residual-stream parts as block ``layer``'s layer norm sees them
        (TransformerLens's ``apply_ln_to_stack``): each centred and divided by that norm's cached scale
        (ln1's, ln2's with ``mlp_input``, ln_final's for ``layer`` None, -1 or n_layer). With
        ``recompute_ln`` at the unembed, the final layer norm itself (its own statistics, g and b) on each."""
        layer = self._layer(layer)
        batch = _positions(batch_slice)  # the same forms index the batch axis
        if has_batch_dim:
            residual_stack = residual_stack[:, batch]
        if recompute_ln and layer == self.n_layer:
            eps = self.model.config.layer_norm_epsilon
            return layer_norm(residual_stack, **self._ln_final(residual_stack), eps=eps)
        xp = array_namespace(residual_stack)
        residual_stack = residual_stack - xp.mean(residual_stack, axis=-1, keepdims=True)
        name = (
            "ln_final.hook_scale" if layer == self.n_layer else f"blocks.{layer}.ln{2 if mlp_input else 1}.hook_scale"
        )
        scale = self[name][..., _positions(pos_slice), :]
        if batch_slice is not None and has_batch_dim:
            scale = scale[batch]
        return residual_stack / scale


def _inputs(model: Engine | HasEngine, ids: Any, attention_mask: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ids [B, T], positions [B, T] and the additive mask [B, 1, T, T], checked and built by the Engine."""
    ids, valid = as_engine(model).check_ids(ids, attention_mask)
    if ids.shape[1] == 0:
        raise NpgptError(f"ids must hold at least one token per row, got shape {ids.shape}")
    positions, mask = positions_and_mask(valid, 0, ids.shape[1])
    return ids, positions, mask


def hooked_forward(
    model: Engine | HasEngine,
    ids: Any,
    hook: Callable[[str, Array], Array],
    attention_mask: Any = None,
    params: dict[str, Any] | None = None,
) -> Array:
    """Logits [B, T, V] (a backend array) of ``ids`` with ``hook(name, x)`` called at every hook point.

    ``params`` (default ``model.params``) lets a caller pass other arrays, e.g. JAX ones to trace;
    the inputs are then made arrays of their library. ``attention_mask`` [B, T] (1 = token,
    0 = left padding) as in ``GPT2.logits``.
    """
    ids, positions, mask = _inputs(model, ids, attention_mask)
    asarray = model.backend.asarray if params is None else array_namespace(params["wte"]).asarray
    weights = as_engine(model).params_for(*ids.shape) if params is None else params  # as GPT2.logits runs it
    with float32_products(weights["wpe"]):  # run eagerly, outside the backend's compiled pass
        logits, _ = gpt2(
            asarray(ids), weights, model.config, positions=asarray(positions), mask=asarray(mask), hook=hook
        )
    return logits


class HookName(str):
    """A hook point's name as ``fn(activation, hook_name)`` receives it: a str that also answers
    TransformerLens's ``hook.name`` and ``hook.layer()``, so a hook written ``fn(x, hook)`` for
    TransformerLens runs unchanged."""

    @property
    def name(self) -> str:
        return str(self)

    def layer(self) -> int:
        """The block the hook point is in (TransformerLens's ``HookPoint.layer``)."""
        if not self.startswith("blocks."):
            raise NpgptError(f"{self!r} is in no block; layer() is for the names blocks.{{i}}.*")
        return int(self.split(".")[1])


def _compose(
    fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]],
    model: Engine | HasEngine,
    then: Callable[[str, Array], Array] | None = None,
) -> Callable[[str, Array], Array]:
    """One ``hook(name, x)`` running each matching ``fn(x, name)`` in order, then ``then``."""
    if not isinstance(fwd_hooks, Iterable) or isinstance(fwd_hooks, (str, bytes)):
        raise NpgptError(f"fwd_hooks must be a list of (name, fn) pairs, got {shown(fwd_hooks)}")
    fwd_hooks = list(fwd_hooks)  # read once: a generator is checked and then run, not used up by the check
    for i, pair in enumerate(fwd_hooks):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and callable(pair[1])):
            raise NpgptError(
                f"fwd_hooks must be a list of (name, fn) pairs, and item {i} is {pair!r}; "
                "one hook is fwd_hooks=[(name, fn)]"
            )
    hooks = [(name_filter(name, model.config.n_layer), fn) for name, fn in fwd_hooks]

    def hook(name: str, x: Array) -> Array:
        for wanted, fn in hooks:
            if wanted(name):
                new = fn(x, HookName(name))
                if new is not None:
                    x = _replacement(name, x, new, model.backend)
        return x if then is None else then(name, x)

    return hook


def _replacement(name: str, x: Array, new: Any, backend: Backend) -> Array:
    """What a hook returned, as the activation it replaces: an array of the backend's library, x's
    shape and x's dtype. An array of another library (a torch tensor from a TransformerLens hook on
    the NumPy backend, NumPy from a cache on JAX) is converted; numbers of another dtype are cast: a
    float64 steering vector added in NumPy (``x + np.random.randn(C)``) would otherwise make every
    activation after it, and the logits, float64."""
    if not is_array_api_obj(new):
        raise NpgptError(
            f"hook on {name!r} returned a {type(new).__name__}; return an array of the activation's shape "
            f"{tuple(x.shape)}, or None to keep it"
        )
    if array_namespace(new) is not array_namespace(x):
        try:
            new = backend.asarray(np.asarray(new))
        except (TypeError, ValueError, RuntimeError):  # e.g. a tensor on a GPU, for the NumPy backend
            raise NpgptError(
                f"hook on {name!r} returned a {type(new).__name__} the {backend.name} backend cannot read; "
                f"return an array of the activation's kind ({type(x).__name__})"
            ) from None
    if tuple(new.shape) != tuple(x.shape):
        raise NpgptError(
            f"hook on {name!r} returned shape {tuple(new.shape)}; the activation's shape is {tuple(x.shape)}"
        )
    if new.dtype != x.dtype:
        xp = array_namespace(x)
        if not xp.isdtype(new.dtype, ("real floating", "integral")):
            raise NpgptError(f"hook on {name!r} returned {new.dtype} values; return numbers, as the activation's")
        new = xp.astype(new, x.dtype)
    return new


def run_with_cache(
    model: Engine | HasEngine,
    ids: Any,
    names_filter: NamesFilter = None,
    attention_mask: Any = None,
    fwd_hooks: Sequence[tuple[Any, HookFn]] = (),
    host: bool = True,
) -> tuple[Any, ActivationCache]:
    """``(logits, cache)``: logits [B, T, V] and the activations named by ``names_filter`` (all by default).

    ``cache`` (an :class:`ActivationCache`, a dict that also reads TransformerLens's shorthand keys
    and has its helpers) maps TransformerLens's hook names to float32 arrays of TransformerLens's
    shapes (see :func:`hook_names`), each as its hook point saw it: an activation changed by one of ``fwd_hooks``
    is cached as changed, and a later change in place does not reach the cache. With
    ``host`` (the default) everything is a NumPy array; ``host=False`` keeps the backend's arrays
    (JAX: traceable). A 1-D ``ids`` is one row.
    """
    keep = name_filter(names_filter, model.config.n_layer)
    cache: dict[str, Any] = {}
    to = model.backend.to_numpy if host else (lambda x: x)

    def record(name: str, x: Array) -> Array:
        if keep(name):
            # A copy where it could be written to: the stream leaving block i is the array entering
            # block i+1, and a hook patching blocks.{i+1}.hook_resid_pre in place changed the cached
            # blocks.{i}.hook_resid_post too (as in TransformerLens, whose cache holds that tensor).
            held = to(x)
            cache[name] = array_namespace(held).asarray(held, copy=True) if is_writeable_array(held) else held
        return x

    logits = hooked_forward(model, ids, _compose(fwd_hooks, model, record), attention_mask)
    return to(logits), ActivationCache(cache, model)


def run_with_hooks(
    model: Engine | HasEngine, ids: Any, fwd_hooks: Sequence[tuple[Any, HookFn]] = (), attention_mask: Any = None
) -> np.ndarray:
    """Float32 logits [B, T, V] of a forward pass in which each ``(name, fn)`` of ``fwd_hooks`` runs at
    its hook point: ``fn(activation, hook_name)`` returns a replacement of the same shape (cast to
    the activation's float32), or None to keep the activation (changed in place or not). ``name`` is
    a hook name or a predicate over names, as in TransformerLens; ``hook_name`` is a str that also
    has TransformerLens's ``hook.name`` and ``hook.layer()`` (:class:`HookName`). The activation is
    an array of the model's backend (a replacement from another library, e.g. torch on NumPy, is
    converted).
    """
    logits = hooked_forward(model, ids, _compose(fwd_hooks, model), attention_mask)
    return model.backend.to_numpy(logits)


def _jax_params(model: Engine | HasEngine) -> tuple[Any, Any, dict[str, Any]]:
    """jax, jax.numpy, and the model's weights as float32 JAX arrays, whatever the backend and dtype
    (a JAX model's float16/bfloat16 weights are widened too, so the gradient is computed in float32)."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as e:
        raise NpgptError("activation gradients need JAX: pip install 'npgpt[jax]'") from e
    if as_engine(model).dtype == "int8":  # its matrices are codes for a kernel, never widened whole
        raise NpgptError(
            "activation gradients need float weights, and this model's are int8; "
            "load it with dtype='float32' (or float16/bfloat16)"
        )

    def to_jax(a: Any) -> Any:  # 16-bit weights (torch bfloat16 has no NumPy dtype) are widened first
        xp = array_namespace(a)
        return jnp.asarray(model.backend.to_numpy(xp.astype(a, xp.float32, copy=False)))

    def widened(a: Any) -> Any:
        if not isinstance(a, jax.Array):
            return to_jax(a)
        return a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) and a.dtype != jnp.float32 else a

    params = jax.tree_util.tree_map(widened, model.params)
    return jax, jnp, params


def _metric_value(jax: Any, metric: Callable[[Array], Array], logits: Array) -> Array:
    """``metric(logits)`` under ``jax.grad``, checked: one float computed with JAX (NpgptError otherwise,
    where JAX's own errors come from deep inside its tracing)."""
    traced = (
        jax.errors.TracerArrayConversionError,  # np.exp(logits), np.asarray(logits)
        jax.errors.ConcretizationTypeError,  # float(logits[...]), if logits[...] > 0
        jax.errors.TracerIntegerConversionError,
    )
    try:
        value = metric(logits)
    except traced:
        raise NpgptError(
            "metric must compute with jax.numpy (jnp) on the logits it is given, not NumPy, float() or if: "
            "jax.grad differentiates it"
        ) from None
    is_jax = isinstance(value, jax.Array)
    if not is_jax or value.shape != () or not jax.numpy.issubdtype(value.dtype, jax.numpy.floating):
        got = f"shape {tuple(value.shape)} {value.dtype}" if is_jax else f"a {type(value).__name__}"
        raise NpgptError(
            f"metric must return one JAX float computed from the logits [B, T, V], got {got}; "
            "e.g. logits[0, -1, a] - logits[0, -1, b], or .sum() over rows"
        )
    return value


def activation_grads(
    model: Engine | HasEngine,
    ids: Any,
    metric: Callable[[Array], Array],
    names_filter: NamesFilter = None,
    attention_mask: Any = None,
) -> tuple[float, ActivationCache, ActivationCache]:
    """``(value, cache, grads)``: ``metric(logits)`` (a JAX scalar of the logits [B, T, V]), the
    activations named by ``names_filter`` and the gradient of the metric with respect to each (each an
    :class:`ActivationCache`: ``grads["resid_pre", 0]`` reads as in TransformerLens), all from one
    ``jax.grad`` (a zero added at every hook point is what is differentiated). Needs JAX; the weights
    are read as float32 from any backend.
    """
    jax, jnp, params = _jax_params(model)
    keep = name_filter(names_filter, model.config.n_layer)
    shapes: dict[str, Any] = {}

    def shape_of(name: str, x: Array) -> Array:
        if keep(name):
            shapes[name] = jax.ShapeDtypeStruct(x.shape, x.dtype)
        return x

    jax.eval_shape(lambda p: hooked_forward(model, ids, shape_of, attention_mask, p), params)  # no compute

    def run(zeros: dict[str, Array]) -> tuple[Array, tuple[Array, dict[str, Array]]]:
        acts: dict[str, Array] = {}

        def hook(name: str, x: Array) -> Array:
            if name in zeros:
                acts[name] = x
                return x + zeros[name]
            return x

        value = _metric_value(jax, metric, hooked_forward(model, ids, hook, attention_mask, params))
        return value, (value, acts)  # jax.grad's (what to differentiate, what else to return)

    zeros = {n: jnp.zeros(s.shape, s.dtype) for n, s in shapes.items()}
    grads, (value, acts) = jax.grad(run, has_aux=True)(zeros)  # float32 products: hooked_forward sees to it
    return (
        float(value),
        ActivationCache({n: np.asarray(a) for n, a in acts.items()}, model),
        ActivationCache({n: np.asarray(g) for n, g in grads.items()}, model),
    )


def attribution_patching(
    model: Engine | HasEngine,
    clean_ids: Any,
    corrupted_ids: Any,
    metric: Callable[[Array], Array],
    names_filter: NamesFilter = None,
    attention_mask: Any = None,
) -> ActivationCache:
    """Attribution patching (Nanda, 2023): for each activation, ``(clean - corrupted) * d metric / d act``
    at the corrupted run, a first-order estimate of how much patching the clean activation into the
    corrupted run moves ``metric(logits)``. Arrays of the activations' shapes, keyed as a cache
    (``attr["resid_pre", 3]``); sum over the axes you do not care about. One forward pass for the
    clean run, one ``jax.grad`` for the corrupted.
    """
    keep = name_filter(names_filter, model.config.n_layer)
    shapes = [as_engine(model).check_ids(ids, attention_mask)[0].shape for ids in (clean_ids, corrupted_ids)]
    if shapes[0] != shapes[1]:  # checked before either run: the two runs' activations are subtracted
        raise NpgptError(
            f"clean and corrupted inputs must have the same shape [batch, seq], got {shapes[0]} and {shapes[1]}; "
            "pad the shorter (and pass attention_mask) or cut both to one length"
        )
    clean: dict[str, np.ndarray] = {}

    def record(name: str, x: Array) -> Array:
        if keep(name):
            clean[name] = np.asarray(x)
        return x

    hooked_forward(model, clean_ids, record, attention_mask, _jax_params(model)[2])  # as the gradient's run computes
    _, corrupted, grads = activation_grads(model, corrupted_ids, metric, names_filter, attention_mask)
    return ActivationCache({n: (clean[n] - corrupted[n]) * grads[n] for n in grads}, model)
