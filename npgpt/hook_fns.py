"""Forward hooks as TransformerLens writes them, ``fn(activation, hook)``: the name they receive
(:class:`HookName`, answering ``hook.name`` and ``hook.layer()``), ``fwd_hooks`` composed into the model's one
``hook(name, x)`` (:func:`compose`), and what a hook returns made the activation it replaces (:func:`replacement`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from array_api_compat import array_namespace, is_array_api_obj

from .errors import NpgptError, is_integer, shown
from .hook_points import act_name, hook_names, name_filter, named, switched_on

if TYPE_CHECKING:
    from .backends import Backend
    from .engine import Engine, HasEngine

Array = Any
HookFn = Callable[[Array, str], Array | None]  # fn(activation, hook_name) -> replacement, or None to keep it


class HookAttributeError(NpgptError, AttributeError):
    """A TransformerLens HookPoint attribute npgpt's hook name has not, with npgpt's way to the same end."""


_KEEP_STATE = "keep state in a dict of your own, read by the hook function (a closure or functools.partial)"
# TransformerLens's HookPoint attributes -> npgpt's way (a hook is a name and a function for one call)
_HOOK_POINT_ATTRIBUTES_NOT_HERE = {
    "ctx": _KEEP_STATE,
    "add_hook": "add a hook to the model, model.add_hook(name, fn), or pass it as run_with_hooks' fwd_hooks",
    "remove_hooks": "model.reset_hooks() removes the hooks added to the model",
    "clear_context": _KEEP_STATE,
}


class HookName(str):
    """A hook point's name as ``fn(activation, hook_name)`` receives it: a str that also answers
    TransformerLens's ``hook.name`` and ``hook.layer()``, so a hook written ``fn(x, hook)`` for
    TransformerLens runs unchanged."""

    @property
    def name(self) -> str:
        return str(self)

    def __getattr__(self, name: str) -> Any:  # only for attributes str and the class have not
        if name in _HOOK_POINT_ATTRIBUTES_NOT_HERE:
            raise HookAttributeError(
                f"npgpt's hook has no {name} (TransformerLens's HookPoint.{name}); "
                + _HOOK_POINT_ATTRIBUTES_NOT_HERE[name]
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def layer(self) -> int:
        """The block the hook point is in (TransformerLens's ``HookPoint.layer``)."""
        if not self.startswith("blocks."):
            raise NpgptError(f"{self!r} is in no block; layer() is for the names blocks.{{i}}.*")
        return int(self.split(".")[1])


def _caller(fn: Callable[..., Any], name: Any) -> Callable[[Array, HookName], Any]:
    """How to call ``fn`` (``fwd_hooks``' hook for ``name``): TransformerLens calls its hooks ``fn(activation,
    hook=hook_point)``, so a hook with a parameter named ``hook`` (keyword-only too) or ``**kwargs`` and one positional
    parameter gets the name by keyword, as there; any other (npgpt's ``fn(activation, hook_name)``, a lambda
    ``(x, name)``) by position. One that can be called neither way is refused here, before the run."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read (a builtin): by position
        return fn
    kinds = {p.name: p.kind for p in signature.parameters.values()}
    positional = [
        k for k in kinds.values() if k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    by_keyword = kinds.get("hook") in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY) or (
        inspect.Parameter.VAR_KEYWORD in kinds.values()
        and len(positional) < 2
        and inspect.Parameter.VAR_POSITIONAL not in kinds.values()
    )
    try:
        signature.bind(None, hook=None) if by_keyword else signature.bind(None, None)
    except TypeError as e:
        what = repr(name) if isinstance(name, str) else "the names its function picks"
        raise NpgptError(
            f"fwd_hooks' hook for {what} cannot be called as fn(activation, hook): {e}; a hook takes the "
            "activation and the hook point (def fn(activation, hook)), other arguments bound first "
            "(functools.partial(fn, head=1))"
        ) from None
    return (lambda x, hook: fn(x, hook=hook)) if by_keyword else fn


def _hook_points(i: int, name: Any, n_layer: int) -> Callable[[str], bool]:
    """Which hook points ``fwd_hooks``' item ``i`` is for: ``name`` a hook name, a list of them or a function of a
    name (:func:`~npgpt.hook_points.name_filter`); anything else refused as that item's, never as names_filter."""
    if isinstance(name, str) or callable(name):
        return name_filter(name, n_layer, f"fwd_hooks' item {i}'s name")
    if isinstance(name, (list, tuple, set, frozenset)) and name and all(isinstance(n, str) for n in name):
        return name_filter(name, n_layer)
    give = "a hook name such as 'blocks.0.attn.hook_pattern', a list of them or a function of a name"
    if isinstance(name, tuple) and 2 <= len(name) <= 3 and isinstance(name[0], str) and is_integer(name[1]):
        # a cache's shorthand key, cache["pattern", 0]: the hook point's name is act_name's
        layer = int(name[1]) if name[1] >= 0 else n_layer + int(name[1])
        try:
            full = act_name(name[0], layer, *name[2:])
        except (TypeError, ValueError):
            full = ""
        if full in hook_names(n_layer, inputs=True):
            args = ", ".join(map(repr, (name[0], int(name[1]), *name[2:])))
            give = f"{full!r} (npgpt.hooks.act_name({args}))"
    raise NpgptError(f"fwd_hooks' item {i} names its hook point by {shown(name)}; give {give}")


def added_hooks(model: object) -> list[tuple[Any, Any]]:
    """``(name, fn)`` of the hooks added to ``model`` that outlast one call (a GPT2's ``add_hook`` and ``hooks(...)``,
    :mod:`~npgpt.added_hooks`; an Engine has none)."""
    added = getattr(model, "_added_hooks", None)
    return added.pairs() if added is not None else []


def compose(
    fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]],
    model: Engine | HasEngine,
    then: Callable[[str, Array], Array] | None = None,
) -> tuple[Callable[[str, Array], Array], Callable[[str], bool], Callable[[str], bool]]:
    """One ``hook(name, x)`` running each matching ``fn(x, name)`` (or ``fn(x, hook=name)``: :func:`_caller`) in
    order, then ``then``; whether any of ``fwd_hooks`` is for a name, and whether one reaches it as an optional input
    hook (by name, or as a function of names with the model's switch for it on: :func:`~npgpt.hook_points.named`):
    the optional hook points are computed only for those asked for."""
    if not isinstance(fwd_hooks, Iterable) or isinstance(fwd_hooks, (str, bytes)):
        raise NpgptError(f"fwd_hooks must be a list of (name, fn) pairs, got {shown(fwd_hooks)}")
    fwd_hooks = list(fwd_hooks)  # read once: a generator is checked and then run, not used up by the check
    for i, pair in enumerate(fwd_hooks):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and callable(pair[1])):
            raise NpgptError(
                f"fwd_hooks must be a list of (name, fn) pairs, and item {i} is {pair!r}; "
                "one hook is fwd_hooks=[(name, fn)]"
            )
    hooks = [(_hook_points(i, name, model.config.n_layer), _caller(fn, name)) for i, (name, fn) in enumerate(fwd_hooks)]
    added = added_hooks(model)  # model.add_hook's and model.hooks(...)'s, checked when added: they run first
    hooks = [
        (_hook_points(i, name, model.config.n_layer), _caller(fn, name)) for i, (name, fn) in enumerate(added)
    ] + hooks

    def hook(name: str, x: Array) -> Array:
        for wanted, fn in hooks:
            if wanted(name):
                new = fn(x, HookName(name))
                if new is not None:
                    x = replacement(name, x, new, model.backend)
        return x if then is None else then(name, x)

    switched = switched_on(model)
    reach = [named(name, switched) for name, _ in [*added, *fwd_hooks]]
    return hook, lambda name: any(wanted(name) for wanted, _ in hooks), lambda name: any(r(name) for r in reach)


def replacement(name: str, x: Array, new: Any, backend: Backend) -> Array:
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
