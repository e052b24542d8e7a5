"""TransformerLens's ``ActivationCache`` for npgpt: the dict of activations a hooked run returns,
read by TransformerLens's keys (``cache["pattern", 0]``) and answering its stacking helpers
(``accumulated_resid``, ``decompose_resid``, ``stack_activation``, ``apply_ln_to_stack``; ``stack_head_results``
and ``logit_attrs`` from :mod:`~npgpt.head_attribution`).
"""

from __future__ import annotations

import copy
import functools
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from array_api_compat import array_namespace

from .errors import NpgptError, is_integer, shown
from .head_attribution import HeadAttribution
from .head_attribution import pos_index as _positions
from .hook_points import INPUT_SWITCHES, RESULT, act_name, hook_names, unknown_name_hint
from .model import layer_norm
from .neuron_attribution import NeuronAttribution

if TYPE_CHECKING:
    from .engine import Engine, HasEngine


# TransformerLens's ActivationCache methods npgpt's has not -> npgpt's way to the same numbers
_CACHE_METHODS_NOT_HERE = {
    "logit_lens": "npgpt.lens.logit_lens(model, ids), or accumulated_resid(apply_ln=True) @ model.W_U",
    "apply_slice_to_batch_dim": "index the arrays on their first axis",
    "toggle_autodiff": "npgpt.hooks.activation_grads gives a metric's gradient at every activation (JAX)",
    "cache_dict": "the cache is itself the dict (dict(cache) for a plain one)",
}


def _switch_of(name: str) -> str:
    """TransformerLens's switch of an input hook point's name: 'blocks.0.hook_q_input' -> 'use_split_qkv_input'."""
    return next(flag for flag, points in INPUT_SWITCHES.items() if name.endswith(points))


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
        return list(cache.values()), (tuple(cache), cache.model, cache.has_batch_dim, cache.stopped_at)

    def unflatten(aux: tuple[Any, ...], children: Iterable[Any]) -> ActivationCache:
        names, model, has_batch_dim, stopped_at = aux
        return ActivationCache(dict(zip(names, children, strict=True)), model, has_batch_dim, stopped_at)

    jax.tree_util.register_pytree_node(ActivationCache, flatten, unflatten)


class ActivationCache(HeadAttribution, NeuronAttribution, dict):
    """What :func:`run_with_cache` returns: a dict of activations keyed by hook name that also reads
    TransformerLens's keys and answers its ``ActivationCache`` helpers.

    ``cache["blocks.0.attn.hook_pattern"]``, ``cache["pattern", 0]``, ``cache["pattern0"]`` and
    ``cache["attn", -3]`` (a negative layer counts from the end) are one array; ``accumulated_resid``,
    ``decompose_resid``, ``stack_activation``, ``apply_ln_to_stack``, ``stack_head_results`` and
    ``logit_attrs`` (:mod:`~npgpt.head_attribution`) compute what TransformerLens's
    do (checked against it in tests/test_hooks.py). A key naming no cached activation raises
    :class:`CacheKeyError` (a KeyError) saying why. Iteration, ``in``, ``get`` and ``dict(cache)`` see the
    full names only, as a dict's. It is a JAX pytree of its arrays, as a dict is; pickled, it is the
    plain dict of its arrays (the model it refers to is not saved).
    """

    def __init__(
        self,
        activations: dict[str, Any],
        model: Engine | HasEngine,
        has_batch_dim: bool = True,
        stopped_at: int | None = None,
    ) -> None:
        super().__init__(activations)
        self.model = model  # as TransformerLens's cache.model: its final layer norm, for apply_ln at the unembed
        self.n_layer = model.config.n_layer
        self.has_batch_dim = has_batch_dim  # TransformerLens's: False after remove_batch_dim()
        self.stopped_at = stopped_at  # the blocks a stop_at_layer run ran (None: all): later hooks never ran
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
        return ActivationCache(dict(self), self.model, self.has_batch_dim, self.stopped_at)

    def __deepcopy__(self, memo: dict[int, Any]) -> ActivationCache:  # the arrays copied, the model shared
        return ActivationCache(copy.deepcopy(dict(self), memo), self.model, self.has_batch_dim, self.stopped_at)

    def __reduce__(self) -> tuple[Any, ...]:  # pickled as the dict of its arrays: a model is no file's to hold
        return dict, (dict(self),)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str) and dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        name = self._name(key)
        if dict.__contains__(self, name):
            return dict.__getitem__(self, name)
        raise self._missing(key, name)

    def to(self, device: Any, move_model: bool = False) -> ActivationCache:
        """TransformerLens's ``cache.to(device)``: to the CPU, a cache of NumPy arrays (run_with_cache's default,
        host=True) is already there and is returned as it is; anything else is refused in one line, npgpt's cache
        moving no array (host=False keeps the backend's arrays on its device)."""
        if str(device) == "cpu" and all(isinstance(a, np.ndarray) for a in self.values()):
            return self
        raise NpgptError(
            f"npgpt's cache moves no arrays (cache.to({shown(device)})): run_with_cache(host=True), the default, "
            "gives NumPy arrays on the CPU; host=False keeps the backend's on its device, chosen at load (backend=)",
            param="device",
        )

    def remove_batch_dim(self, batch_size: int | None = None) -> ActivationCache:
        """TransformerLens's ``remove_batch_dim``: the cache of a one-row run with each array's batch axis
        taken away ([B=1, T, C] -> [T, C]), in place; the cache itself is returned. The helpers then stack
        arrays without it. A cache of more rows is refused (index the rows, ``cache[name][i]``), and so is a
        ``batch_size`` (TransformerLens 4's: the rows, where the caller knows them) other than 1."""
        if batch_size is not None and not (is_integer(batch_size) and batch_size == 1):
            raise NpgptError(
                f"remove_batch_dim removes the batch axis of a run of one row; batch_size={shown(batch_size)} says "
                "more: index a row, cache[name][i]",
                param="batch_size",
            )
        if self.has_batch_dim:
            rows = {int(a.shape[0]) for a in self.values()}
            if rows - {1}:
                raise NpgptError(
                    f"remove_batch_dim needs a run of one row, and this cache's arrays have {max(rows)}; "
                    "index a row, cache[name][i]"
                )
            for name, array in self.items():
                self[name] = array[0]
            self.has_batch_dim = False
        return self

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
        block = re.match(r"blocks\.(\d+)\.", name)
        if self.stopped_at is not None and (
            block is not None and int(block.group(1)) >= self.stopped_at or name.startswith("ln_final.")
        ):
            return CacheKeyError(
                f"{shown_key}{read} is not in this cache: the run that made it stopped after {self.stopped_at} "
                "of the blocks (stop_at_layer), before this hook; run it with a later stop_at_layer (or none)"
            )
        if name.endswith(RESULT) and getattr(self.model, "use_attn_result", True) is False:
            return CacheKeyError(
                f"{shown_key}{read} is not in this cache: model.set_use_attn_result(False) keeps names_filter None "
                f"and functions from it; run with names_filter=[{name!r}, ...], or model.set_use_attn_result(True)"
            )
        if name in hook_names(self.n_layer):
            return CacheKeyError(
                f"{shown_key}{read} is not in this cache: the names_filter of the run that made it left it out"
            )
        if name in hook_names(self.n_layer, inputs=True):
            return CacheKeyError(
                f"{shown_key}{read} is not in this cache: it is one of TransformerLens's optional input hooks, "
                f"computed only where named; run with names_filter=[{name!r}, ...] (or, as in TransformerLens, "
                f"switch it on for names_filter None and functions: model.set_{_switch_of(name)}(True))"
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
        close = unknown_name_hint(name, self.n_layer)
        if close.startswith("did you mean"):
            return CacheKeyError(f"unknown activation {shown_key}{read}; {close}")
        return CacheKeyError(
            f"unknown activation {shown_key}{read}; TransformerLens's names are embed, pos_embed, scale and "
            "normalized (of ln_final), and with a layer: resid_pre, resid_mid, resid_post, attn_out, mlp_out, "
            "q, k, v, z, result, attn_scores, pattern, pre, post, and scale or normalized with 'ln1' or 'ln2' "
            "(e.g. cache['pattern', 0], cache['scale', 0, 'ln1']); or a hook name of hooks.hook_names(n_layer)"
        )

    def _n_positions(self) -> int | None:
        """The positions of the cached run (the residual stream's axis -2, batch axis or not), or None where no
        stream or layer norm scale is cached."""
        ends = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_embed", "hook_pos_embed", "hook_scale")
        return next((int(x.shape[-2]) for name, x in self.items() if name.endswith(ends)), None)

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

    def _mlp_input_block(self, method: str, layer: int) -> None:
        """NpgptError for ``mlp_input=True`` at the unembed (``layer`` n_layer): no block's MLP reads there, and the
        cache key it would read (block n_layer's) said only that the model's layers end before it."""
        if layer == self.n_layer:
            raise NpgptError(
                f"{method}(mlp_input=True) decomposes the input of block layer's MLP, and layer {layer} (or None, -1) "
                f"is the unembed, past the last block; give a block's layer, in [0, {self.n_layer - 1}]",
                param="layer",
            )

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
        positions = _positions(pos_slice, self._n_positions())
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
        if mlp_input and mode != "mlp":  # block layer's attn_out
            self._mlp_input_block("decompose_resid", layer)
        if mode not in ("all", "mlp", "attn"):
            raise NpgptError(f"mode must be 'all', 'mlp' or 'attn', got {shown(mode)}", param="mode")
        positions = _positions(pos_slice, self._n_positions())
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
        ``recompute_ln`` at the unembed, the final layer norm itself (its own statistics, g and b) on each.
        ``batch_slice`` picks the rows of the stack and of the scale; with ``has_batch_dim=False`` the stack has no
        batch axis (one row, already taken), and ``batch_slice`` picks that row's scale, as TransformerLens's."""
        layer = self._layer(layer)
        rows = len(self[next(iter(self))]) if self.has_batch_dim and len(self) else None
        batch = _positions(batch_slice, rows, name="batch_slice", unit="row")  # the same forms index the batch axis
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
        scale = self[name][..., _positions(pos_slice, self._n_positions()), :]
        if batch_slice is not None and self.has_batch_dim:  # the cache's rows, whether the stack has them or not
            scale = scale[batch]
        _check_stack(residual_stack, scale)
        return residual_stack / scale


def _check_stack(residual_stack: Any, scale: Any) -> None:
    """NpgptError unless ``residual_stack`` [components, ..., C] holds the rows and positions of ``scale`` [..., 1],
    the layer norm scale it is divided by: a stack sliced at a position with no ``pos_slice`` given broadcast
    against every position's scale, [components, 1, C] / [1, T, 1], to [components, T, C] of wrong numbers."""
    want, got = tuple(scale.shape[:-1]), tuple(residual_stack.shape)
    if len(got) < len(want) + 1 or got[len(got) - 1 - len(want) : -1] != want:
        rows = "".join(f"{n}, " for n in want)
        raise NpgptError(
            f"residual_stack has shape {got}, and the cached layer norm scale it is divided by covers rows and "
            f"positions {want} (after pos_slice and batch_slice): a stack [components, {rows}C]; pass the pos_slice "
            "and batch_slice the stack was sliced with"
        )
