"""Looking inside the model: TransformerLens's ``run_with_cache`` and ``run_with_hooks`` for npgpt.

``model.gpt2`` calls an optional ``hook(name, x)`` at each named point of the forward pass, with
TransformerLens's hook names and shapes (listed by :func:`hook_names`). This module turns that one
mechanism into TransformerLens's interface: caching activations by name, and forward hooks
``fn(activation, hook_name)`` that may return a replacement (ablation, patching, steering). Some hook
points are made outside the model, only where a hook or ``names_filter`` asks for them:
``blocks.{i}.attn.hook_result``, each head's output, from ``attn.hook_z`` (:mod:`~npgpt.hooked_forward`), and
TransformerLens's optional input hooks such as ``blocks.{i}.hook_q_input`` (:mod:`~npgpt.input_hooks`).

The hooked forward runs the uncompiled ``model.gpt2`` on the backend's arrays, so it works on every
backend; with ``host=False`` on JAX the activations stay traceable, and :func:`activation_grads`
takes the gradient of a metric with respect to every cached activation in one ``jax.grad``.
Attention scores a query may not see are ``-inf`` at ``hook_attn_scores``, as in TransformerLens (the model adds
``model.MASKED``, about -1e9, and a hook's ``-inf`` goes back to it). In a left-padded batch the activations at
padding positions are meaningless (they are in TransformerLens too, and differ), but a padding query's ``hook_pattern``
row is TransformerLens's zeros (the model goes on from its own row, so the logits are ``model.logits``').
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from array_api_compat import array_namespace, is_writeable_array

from .activation_cache import ActivationCache
from .activation_grads import activation_grads, attribution_patching
from .engine import as_engine
from .errors import NpgptError, shown
from .head_attribution import pos_index
from .hook_fns import HookFn, HookName, compose
from .hook_io import check_return_type, lm_loss, read_input, run_output, to_tokens
from .hook_points import (
    BLOCK_HOOKS,
    INPUT_HOOKS,
    RESULT,
    NamesFilter,
    act_name,
    hook_names,
    name_filter,
    named,
    switched_on,
)
from .hooked_forward import check_residual, hooked_forward, start_layer, stop_layer

if TYPE_CHECKING:
    from .engine import Engine, HasEngine

# TransformerLens's interface in one place, as its users find it (hooks.hook_names, hooks.ActivationCache); the
# parts live by concern in hook_points, activation_cache, hook_io, hook_fns, hooked_forward and activation_grads.
__all__ = [
    "BLOCK_HOOKS",
    "INPUT_HOOKS",
    "RESULT",
    "ActivationCache",
    "HookName",
    "act_name",
    "activation_grads",
    "attribution_patching",
    "hook_names",
    "hooked_forward",
    "lm_loss",
    "name_filter",
    "run_with_cache",
    "run_with_hooks",
    "to_tokens",
]

Array = Any


def _read(
    model: Engine | HasEngine,
    ids: Any,
    attention_mask: Any,
    prepend_bos: bool | None,
    padding_side: str | None,
    return_type: str | None,
    start: int | None,
    stop: int | None,
) -> tuple[Any, Any]:
    """``(ids, attention_mask)`` of a hooked run's input: token ids or text (:func:`~npgpt.hook_io.read_input`), or
    with ``start_at_layer`` the residual stream entering that block (:func:`~npgpt.hooked_forward.check_residual`)."""
    if start is None:
        return read_input(model, ids, attention_mask, prepend_bos, padding_side)
    if return_type in ("loss", "both"):
        raise NpgptError(
            "with start_at_layer the input is the residual stream, not the tokens the loss predicts: run with "
            "return_type='logits' and take npgpt.hooks.lm_loss(logits, tokens)",
            param="return_type",
        )
    return check_residual(ids, model.config.n_embd, start, stop), attention_mask


def _n_positions(model: Engine | HasEngine, ids: Any, attention_mask: Any, start: int | None) -> int:
    """The positions a run reads: the checked residual's [B, T, C], or token ids as the forward takes them (a
    list, or 1-D for one row: ``ids.shape[1]`` was an AttributeError or IndexError there)."""
    if start is not None:
        return int(ids.shape[1])
    return int(as_engine(model).check_ids(ids, attention_mask)[0].shape[1])


def _cached_positions(pos_slice: Any, n_positions: int) -> Any:
    """TransformerLens's ``pos_slice`` of ``run_with_cache`` as an index of the position axis: one position keeps
    the axis (size 1), as there; the other forms as the cache helpers read them (:func:`pos_index`), TransformerLens's
    own ``Slice(position)`` too, which takes the axis away there."""
    index = pos_index(pos_slice, n_positions)
    if isinstance(index, int) and type(pos_slice).__name__ != "Slice":
        return slice(index, index + 1 or None)
    return index


def run_with_cache(
    model: Engine | HasEngine,
    ids: Any,
    names_filter: NamesFilter = None,
    attention_mask: Any = None,
    fwd_hooks: Sequence[tuple[Any, HookFn]] = (),
    host: bool = True,
    prepend_bos: bool | None = None,
    padding_side: str | None = None,
    return_type: str | None = "logits",
    loss_per_token: bool = False,
    remove_batch_dim: bool = False,
    stop_at_layer: int | None = None,
    start_at_layer: int | None = None,
    pos_slice: Any = None,
) -> tuple[Any, ActivationCache]:
    """``(logits, cache)``: logits [B, T, V] and the activations named by ``names_filter`` (all by default).

    ``cache`` (an :class:`ActivationCache`, a dict that also reads TransformerLens's shorthand keys
    and has its helpers) maps TransformerLens's hook names to float32 arrays of TransformerLens's
    shapes (see :func:`hook_names`; TransformerLens's optional input hooks, ``blocks.{i}.hook_q_input`` and
    the like, only where ``names_filter`` or a hook names them, or reaches them with TransformerLens's switch on:
    ``model.set_use_split_qkv_input(True)``), each as its hook point saw it: an activation
    changed by one of ``fwd_hooks`` is cached as changed, and a later change in place does not reach the cache. With
    ``host`` (the default) everything is a NumPy array; ``host=False`` keeps the backend's arrays
    (JAX: traceable). A 1-D ``ids`` is one row. ``ids`` may be a text or a list of texts, read as
    TransformerLens reads them, ``<|endoftext|>`` first (``prepend_bos``, ``padding_side``: :func:`to_tokens`).
    ``return_type`` as TransformerLens's: "loss" for :func:`lm_loss` (``loss_per_token``), "both" for
    ``(logits, loss)``, None for nothing, in place of the logits. ``remove_batch_dim``: a one-row run's
    cache without its batch axis (:meth:`ActivationCache.remove_batch_dim`), the logits keeping theirs.
    ``stop_at_layer``: run that many blocks (negative: all but that many) and return, in place of the logits,
    the residual stream [B, T, C] entering the next, with the activations up to there (TransformerLens's;
    for all blocks, the stream before ``ln_final``, as HookedTransformer returns it). ``start_at_layer``: ``ids`` is
    the residual stream [B, T, C] entering that block (e.g. a cached ``resid_pre``; ``attention_mask`` as for its
    tokens), run from there: the hooks and the cache see that block's ``hook_resid_pre`` on (TransformerLens's).
    ``pos_slice``: each activation is cached at those positions only (TransformerLens's: a position keeps its
    axis, of size 1; a (start, stop[, step]) tuple, a slice or a list of positions), on the query axis of
    ``attn_scores`` and ``pattern``.
    """
    check_return_type(return_type, loss_per_token)
    stop = stop_layer(stop_at_layer, model.config.n_layer)
    if not isinstance(remove_batch_dim, bool):
        raise NpgptError(f"remove_batch_dim must be True or False, got {shown(remove_batch_dim)}")
    start = start_layer(start_at_layer, model.config.n_layer)
    ids, attention_mask = _read(model, ids, attention_mask, prepend_bos, padding_side, return_type, start, stop)
    keep = name_filter(names_filter, model.config.n_layer)
    cache: dict[str, Any] = {}
    to = model.backend.to_numpy if host else (lambda x: x)
    positions = (
        None if pos_slice is None else _cached_positions(pos_slice, _n_positions(model, ids, attention_mask, start))
    )

    def record(name: str, x: Array) -> Array:
        if keep(name):
            # A copy where it could be written to: the stream leaving block i is the array entering
            # block i+1, and a hook patching blocks.{i+1}.hook_resid_pre in place changed the cached
            # blocks.{i}.hook_resid_post too (as in TransformerLens, whose cache holds that tensor).
            held = to(x)
            if positions is not None:  # the position axis: 1, or the queries' of [B, H, Tq, Tk]
                axis = 2 if name.endswith(("hook_attn_scores", "hook_pattern")) else 1
                held = held[(slice(None),) * axis + (positions,)]
            cache[name] = array_namespace(held).asarray(held, copy=True) if is_writeable_array(held) else held
        return x

    hook, _, hook_named = compose(fwd_hooks, model, record)
    filter_named = named(names_filter, switched_on(model))
    optional = lambda name: filter_named(name) or hook_named(name)  # noqa: E731
    logits = hooked_forward(
        model, ids, hook, attention_mask, stop_at_layer=stop, results=optional, inputs=optional, start_at_layer=start
    )
    activations = ActivationCache(cache, model, stopped_at=stop)
    if remove_batch_dim:
        activations.remove_batch_dim()
    if stop is not None:  # the residual stream, whatever return_type asks (as in TransformerLens)
        return to(logits), activations
    return run_output(model, to(logits), ids, attention_mask, return_type, loss_per_token), activations


def run_with_hooks(
    model: Engine | HasEngine,
    ids: Any,
    fwd_hooks: Sequence[tuple[Any, HookFn]] = (),
    attention_mask: Any = None,
    prepend_bos: bool | None = None,
    padding_side: str | None = None,
    return_type: str | None = "logits",
    loss_per_token: bool = False,
    stop_at_layer: int | None = None,
    start_at_layer: int | None = None,
) -> Any:
    """Float32 logits [B, T, V] of a forward pass in which each ``(name, fn)`` of ``fwd_hooks`` runs at
    its hook point: ``fn(activation, hook_name)`` returns a replacement of the same shape (cast to
    the activation's float32), or None to keep the activation (changed in place or not). ``name`` is
    a hook name or a predicate over names, as in TransformerLens; ``hook_name`` is a str that also
    has TransformerLens's ``hook.name`` and ``hook.layer()`` (:class:`HookName`), passed by keyword
    (``fn(activation, hook=...)``, as TransformerLens calls it) to a ``fn`` with a parameter named ``hook`` or
    ``**kwargs``, by position to any other. The activation is
    an array of the model's backend (a replacement from another library, e.g. torch on NumPy, is
    converted). Text, ``return_type``, ``loss_per_token``, ``stop_at_layer`` (the residual stream [B, T, C]
    after that many blocks, in place of the logits) and ``start_at_layer`` are read as in :func:`run_with_cache`.
    """
    check_return_type(return_type, loss_per_token)
    stop = stop_layer(stop_at_layer, model.config.n_layer)
    start = start_layer(start_at_layer, model.config.n_layer)
    ids, attention_mask = _read(model, ids, attention_mask, prepend_bos, padding_side, return_type, start, stop)
    hook, _, hook_named = compose(fwd_hooks, model)
    logits = model.backend.to_numpy(
        hooked_forward(
            model,
            ids,
            hook,
            attention_mask,
            stop_at_layer=stop,
            results=hook_named,
            inputs=hook_named,
            start_at_layer=start,
        )
    )
    if stop is not None:
        return logits  # the residual stream, whatever return_type asks (as in TransformerLens)
    return run_output(model, logits, ids, attention_mask, return_type, loss_per_token)
