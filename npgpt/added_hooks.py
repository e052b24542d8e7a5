"""TransformerLens's hooks that outlast one call: ``model.add_hook(name, fn)`` and ``with model.hooks(fwd_hooks):``.

An added hook runs in every hooked run of its model (``model(...)``, ``run_with_hooks``, ``run_with_cache``, the logit
lens), before the run's own ``fwd_hooks`` at each hook point, as TransformerLens runs them, until
``model.reset_hooks()`` (or the end of the ``with`` block that added it). The model's own fast paths (``logits``,
``generate``, ``score`` ...) and the JAX gradients run no hook, so while one is added they refuse in one line rather
than give the numbers of a model the hooks would have changed (:func:`refuse_with_added`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .errors import NpgptError, shown
from .hook_fns import added_hooks, compose

_BACKWARD = (
    "npgpt's backward hooks are JAX's gradients: npgpt.hooks.activation_grads(model, ids, metric) gives the metric's "
    "gradient at every activation (grads[name]), in one jax.grad"
)


class AddedHooks:
    """The hooks added to one model: ``(name, fn, permanent, level)`` in the order they run."""

    def __init__(self) -> None:
        self._hooks: list[tuple[Any, Any, bool, int | None]] = []
        self._level = 0  # the depth of nested hooks() blocks, as TransformerLens's context_level

    def __copy__(self) -> AddedHooks:  # a copied model's hooks are its own: adding to one leaves the other
        copied = AddedHooks()
        copied._hooks, copied._level = list(self._hooks), self._level
        return copied

    def __len__(self) -> int:
        return len(self._hooks)

    @property
    def permanent(self) -> bool:
        """Whether a permanent hook (``add_perma_hook``) is among them, which only
        ``reset_hooks(including_permanent=True)`` removes."""
        return any(permanent for _, _, permanent, _ in self._hooks)

    def pairs(self) -> list[tuple[Any, Any]]:
        """``(name, fn)`` of each added hook, in the order they run (before a run's own fwd_hooks)."""
        return [(name, fn) for name, fn, _, _ in self._hooks]

    def add(
        self,
        model: Any,
        name: Any,
        hook: Any,
        dir: Any = "fwd",
        is_permanent: bool = False,
        level: int | None = None,
        prepend: bool = False,
    ) -> None:
        """TransformerLens's ``add_hook``: ``hook`` runs at ``name`` (a hook name, a list of them or a function of
        names) in every hooked run until removed; checked now, as a run checks its fwd_hooks."""
        if dir == "bwd":
            raise NpgptError(f"add_hook(dir='bwd'): {_BACKWARD}", param="dir")
        if dir != "fwd":
            raise NpgptError(f"add_hook's dir must be 'fwd' (or 'bwd'), got {shown(dir)}", param="dir")
        compose([(name, hook)], model)  # the name and the function, refused in one line before any run
        entry = (name, hook, bool(is_permanent), level)
        self._hooks.insert(0, entry) if prepend else self._hooks.append(entry)

    def reset(self, including_permanent: bool = False, level: int | None = None) -> None:
        """TransformerLens's ``reset_hooks``: every hook (of ``level``, where given) removed, the permanent ones only
        with ``including_permanent``."""
        self._hooks = [
            h for h in self._hooks if not ((including_permanent or not h[2]) and (level is None or h[3] == level))
        ]

    @contextmanager
    def context(self, model: Any, fwd_hooks: Any, bwd_hooks: Any, reset_hooks_end: bool) -> Iterator[Any]:
        """TransformerLens's ``with model.hooks(fwd_hooks):``: the hooks added for the block, then removed (with
        ``reset_hooks_end``, its default); those ``add_hook`` added within it stay, as there."""
        if bwd_hooks:
            raise NpgptError(f"hooks(bwd_hooks=...): {_BACKWARD}", param="bwd_hooks")
        if isinstance(fwd_hooks, Iterable) and not isinstance(fwd_hooks, (str, bytes)):
            fwd_hooks = list(fwd_hooks)  # read once: a generator is checked, then added
        compose(fwd_hooks, model)  # every item checked, as run_with_hooks' fwd_hooks are
        self._level += 1
        level = self._level
        try:
            for name, fn in fwd_hooks:
                self._hooks.append((name, fn, False, level))
            yield model
        finally:
            if reset_hooks_end:
                self.reset(level=level)
            self._level -= 1


def refuse_with_added(model: Any, method: str) -> None:
    """NpgptError where ``method``, which runs no hook, is called on a model with hooks added; the reset it names
    removes them all (a permanent one only goes with ``including_permanent=True``)."""
    if added_hooks(model):
        permanent = model._added_hooks.permanent
        reset = "model.reset_hooks(including_permanent=True)" if permanent else "model.reset_hooks()"
        raise NpgptError(
            f"{method} runs the model without hooks, and this model has {len(added_hooks(model))} added "
            "(model.add_hook or a model.hooks(...) block); run model(input) or model.run_with_cache(input) for the "
            f"hooked pass, or call {reset} first"
        )
