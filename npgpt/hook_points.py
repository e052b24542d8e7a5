"""The model's named hook points, TransformerLens's names for them, and reading those names.

:func:`hook_names` lists every point ``model.gpt2`` calls its ``hook`` at, in forward order, with
``attn.hook_result``, which ``hooked_forward.py`` computes from ``attn.hook_z`` (:data:`RESULT`);
:func:`name_filter` reads TransformerLens's ``names_filter`` forms; :func:`act_name` reads its
shorthand (``utils.get_act_name``). Both the hooked runs (``hooks.py``) and the cache they return
(``activation_cache.py``) read names here, so this module imports neither.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any

from .errors import NpgptError

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
    "attn.hook_result",  # computed by npgpt.hooked_forward when asked for (see RESULT), never by the model
    "hook_attn_out",
    "hook_resid_mid",
    "ln2.hook_scale",
    "ln2.hook_normalized",
    "mlp.hook_pre",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)


# Each head's output [B, T, H, C] (TransformerLens's, filled there with use_attn_result): model.gpt2 has no
# such point (its c_proj multiplies the heads at once); npgpt.hooked_forward computes it from attn.hook_z and
# attn.c_proj.w when a hook or names_filter asks for it, and then sums it into hook_attn_out.
RESULT = "attn.hook_result"

# TransformerLens's hook points that it fills only with a flag on (use_attn_in, use_split_qkv_input,
# use_hook_mlp_in): the stream entering the attention [B, T, H, C] (the first four) or the MLP [B, T, C].
# npgpt.input_hooks computes each where a hook or names_filter names it; names_filter None and functions of names
# reach them only with the model's switch on (INPUT_SWITCHES), as TransformerLens's.
INPUT_HOOKS = ("hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input", "hook_mlp_in")

# TransformerLens's switches (HookedTransformer.set_use_attn_in ..., its cfg names) -> the input hook points each
# lets names_filter None and a function of names reach (a name reaches its point with every switch off)
INPUT_SWITCHES = {
    "use_attn_in": ("hook_attn_in",),
    "use_split_qkv_input": ("hook_q_input", "hook_k_input", "hook_v_input"),
    "use_hook_mlp_in": ("hook_mlp_in",),
}


def switched_on(model: object) -> frozenset[str]:
    """The optional hook points whose TransformerLens switch ``model`` has on: the input hook points
    (``model.use_attn_in`` ...; none for a model without switches, such as an Engine), and ``hook_result`` unless
    ``model.use_attn_result`` is False (npgpt's default is on, TransformerLens's off: off, only a name reaches
    ``attn.hook_result``, and a run with names_filter None keeps none of its [B, T, H, C] arrays)."""
    on = [flag for flag in INPUT_SWITCHES if getattr(model, flag, False) is True]
    inputs = (point for flag in on for point in INPUT_SWITCHES[flag])
    result = ("hook_result",) if getattr(model, "use_attn_result", True) is not False else ()
    return frozenset((*inputs, *result))


def hook_names(n_layer: int, inputs: bool = False) -> list[str]:
    """Every hook point of an ``n_layer`` model, in forward order; with ``inputs``, TransformerLens's optional
    input hook points too (:data:`INPUT_HOOKS`: ``hook_attn_in``, ``hook_q/k/v_input`` [B, T, H, C] and
    ``hook_mlp_in`` [B, T, C]), computed only where named.

    Shapes (B batch, T tokens, C n_embd, H heads, D head dim): ``hook_embed``, ``hook_pos_embed``,
    ``hook_resid_*``, ``hook_attn_out``, ``hook_mlp_out``, ``*.hook_normalized`` [B, T, C];
    ``*.hook_scale`` [B, T, 1]; ``attn.hook_q/k/v/z`` [B, T, H, D]; ``attn.hook_attn_scores`` and
    ``attn.hook_pattern`` [B, H, T, T] (query, key); ``attn.hook_result`` [B, T, H, C] (each head's output,
    computed only where asked for: see :data:`RESULT`); ``mlp.hook_pre/post`` [B, T, 4C].
    """
    points = list(BLOCK_HOOKS)
    if inputs:  # where TransformerLens's forward reaches them
        points[1:1] = INPUT_HOOKS[:4]
        points.insert(points.index("hook_resid_mid") + 1, INPUT_HOOKS[4])
    blocks = [f"blocks.{i}.{n}" for i in range(n_layer) for n in points]
    return ["hook_embed", "hook_pos_embed", *blocks, "ln_final.hook_scale", "ln_final.hook_normalized"]


def name_filter(names_filter: NamesFilter, n_layer: int, what: str = "names_filter") -> Callable[[str], bool]:
    """A predicate over hook names from TransformerLens's ``names_filter`` forms: None (every hook),
    a name, a list of names, or a callable. Unknown names raise :class:`NpgptError`, and so does a callable that
    cannot be called with one name (``what`` names it: ``names_filter``, or a ``fwd_hooks`` item's)."""
    if names_filter is None:
        return lambda name: True
    if callable(names_filter):
        _check_one_name(names_filter, what)
        return names_filter
    names = [names_filter] if isinstance(names_filter, str) else None
    if names is None and isinstance(names_filter, Iterable):
        names = list(names_filter)  # checked before the set: a list inside ([["a"]]) cannot be hashed
    if names is None or not all(isinstance(n, str) for n in names):
        raise NpgptError(
            f"names_filter must be a hook name, a list of names or a function of a name, got {names_filter!r}"
        )
    wanted = set(names)
    unknown = sorted(wanted - set(hook_names(n_layer, inputs=True)))
    if unknown:
        hints = [hint for n in unknown if (hint := unknown_name_hint(n, n_layer))]
        raise NpgptError(
            f"unknown hook name(s) {', '.join(map(repr, unknown))}; the names are those of "
            f"npgpt.hooks.hook_names({n_layer}), e.g. 'blocks.0.attn.hook_pattern'" + "".join(f"; {h}" for h in hints)
        )
    return wanted.__contains__


def _check_one_name(fn: Callable[..., Any], what: str) -> None:
    """NpgptError, before the run, for a function of names that cannot take one name (``lambda: True``, or a hook
    ``fn(activation, hook)`` given as names_filter), where Python's TypeError named neither it nor the form."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read (a builtin, str.startswith's bound method): as it is
        return
    try:
        signature.bind("blocks.0.hook_resid_pre")
    except TypeError as e:
        raise NpgptError(
            f"{what} is a function that cannot be called with one hook name ({e}); a function of names takes the "
            "name and says whether to keep it: lambda name: name.endswith('hook_pattern')",
            param="names_filter" if what == "names_filter" else "fwd_hooks",
        ) from None


def named(names_filter: NamesFilter, switched: frozenset[str] = frozenset()) -> Callable[[str], bool]:
    """Which optional hook points (:data:`INPUT_HOOKS`, :data:`RESULT`) a ``names_filter`` (or a ``fwd_hooks`` name)
    reaches: a name or a list of names, those named; None and a function of names, those whose switch is on
    (``switched``, from :func:`switched_on`; the function's matches among them), as TransformerLens's with its flags."""
    if isinstance(names_filter, str):
        return names_filter.__eq__
    if names_filter is None or callable(names_filter):
        wanted = names_filter or (lambda name: True)
        return lambda name: name.rsplit(".", 1)[-1] in switched and bool(wanted(name))
    if not isinstance(names_filter, Iterable):
        return lambda name: False
    return set(n for n in names_filter if isinstance(n, str)).__contains__


def unknown_name_hint(name: str, n_layer: int) -> str:
    """What to write for ``name``, which is no hook point of an ``n_layer`` model: where TransformerLens's
    optional hooks' numbers are, the layers there are, or the closest hook name ('' if none is close)."""
    layer = re.match(r"blocks\.(-?\d+)\.", name)
    if layer is not None and not 0 <= int(layer.group(1)) < n_layer:
        return f"{name}: this model's layers are 0 to {n_layer - 1}"
    names = hook_names(n_layer, inputs=True)
    try:
        full = act_name(name)  # TransformerLens's shorthand, e.g. 'pattern0', is no hook name
    except (TypeError, ValueError):
        full = name
    close = [full] if full != name and full in names else difflib.get_close_matches(name, names, n=1, cutoff=0.8)
    return f"did you mean {close[0]!r} (for {name!r})?" if close else ""


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
