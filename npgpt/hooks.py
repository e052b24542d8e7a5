"""Looking inside the model: TransformerLens's ``run_with_cache`` and ``run_with_hooks`` for npgpt.

``model.gpt2`` calls an optional ``hook(name, x)`` at each named point of the forward pass, with
TransformerLens's hook names and shapes (listed by :func:`hook_names`). This module turns that one
mechanism into TransformerLens's interface: caching activations by name, and forward hooks
``fn(activation, hook_name)`` that may return a replacement (ablation, patching, steering). One hook
point is made here, not in the model: ``blocks.{i}.attn.hook_result``, each head's output, computed
from ``attn.hook_z`` only where a hook or ``names_filter`` asks for it (:func:`_with_head_results`).

The hooked forward runs the uncompiled ``model.gpt2`` on the backend's arrays, so it works on every
backend; with ``host=False`` on JAX the activations stay traceable, and :func:`activation_grads`
takes the gradient of a metric with respect to every cached activation in one ``jax.grad``.
Differences from TransformerLens: attention scores a query may not see hold about ``-1e9``
(``model.MASKED``) rather than ``-inf``, and in a left-padded batch the activations at padding
positions are meaningless (they are in TransformerLens too, and differ).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from array_api_compat import array_namespace, is_array_api_obj, is_writeable_array

from .activation_cache import ActivationCache
from .backends import float32_products
from .engine import as_engine, positions_and_mask
from .errors import NpgptError, is_integer, shown
from .head_attribution import head_results
from .hook_points import BLOCK_HOOKS, OPTIONAL_IN_TL, RESULT, NamesFilter, act_name, hook_names, name_filter
from .model import gpt2
from .sampling import log_softmax

if TYPE_CHECKING:
    from .backends import Backend
    from .engine import Engine, HasEngine

# The names, and the cache type, of TransformerLens's interface live in their own modules; they are
# read here as hooks.hook_names, hooks.ActivationCache, as TransformerLens users find them.
__all__ = [
    "BLOCK_HOOKS",
    "OPTIONAL_IN_TL",
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
HookFn = Callable[[Array, str], Array | None]  # fn(activation, hook_name) -> replacement, or None to keep it


def is_text(x: Any) -> bool:
    """A text or a non-empty list of texts: what TransformerLens tokenizes where it takes tokens."""
    return isinstance(x, str) or (isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(t, str) for t in x))


def to_tokens(
    model: Engine | HasEngine,
    text: str | Sequence[str],
    prepend_bos: bool | None = True,
    padding_side: str | None = "right",
) -> tuple[np.ndarray, np.ndarray | None]:
    """TransformerLens's ``to_tokens`` for GPT-2: ids [B, T] of a text (B = 1) or a list of texts, and the
    attention mask [B, T] where rows are padded on the left (None otherwise).

    ``prepend_bos`` (TransformerLens's default for GPT-2, and npgpt's here): ``<|endoftext|>`` first,
    as GPT-2 saw at the start of each document. Rows of unequal length are padded with
    ``<|endoftext|>`` (GPT-2's pad token there) on ``padding_side``: on the right, as TransformerLens,
    with no mask (causal attention keeps the real tokens' activations as unpadded); on the left with
    the mask, so that each row's activations are its unpadded run's. A literal ``<|endoftext|>`` in the
    text is the special token, as Hugging Face's tokenizer reads it. None for either is its default, as there.
    """
    prepend_bos = True if prepend_bos is None else prepend_bos
    padding_side = padding_side or "right"
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:  # an Engine: weights and no tokenizer
        raise NpgptError("text needs the model's tokenizer: pass token ids, or use the model npgpt.load returns")
    if not isinstance(prepend_bos, bool):
        raise NpgptError(f"prepend_bos must be True or False, got {shown(prepend_bos)}", param="prepend_bos")
    if padding_side not in ("left", "right"):
        raise NpgptError(f"padding_side must be 'left' or 'right', got {shown(padding_side)}", param="padding_side")
    if not is_text(text):
        raise NpgptError(f"text must be a str or a non-empty list of str, got {shown(text)}")
    texts = [text] if isinstance(text, str) else list(text)
    bos = [tokenizer.eot_id] if prepend_bos else []
    rows = [bos + tokenizer.encode(t, allow_special=True) for t in texts]
    T = max(map(len, rows))
    if T == 0:
        raise NpgptError("the text is empty and prepend_bos=False: there is no token to run")
    ids = np.full((len(rows), T), tokenizer.eot_id, np.int64)
    mask = np.zeros((len(rows), T), np.int64)
    for i, row in enumerate(rows):
        at = slice(T - len(row), T) if padding_side == "left" else slice(0, len(row))
        ids[i, at], mask[i, at] = row, 1
    return ids, (mask if padding_side == "left" and not mask.all() else None)


def _read_input(
    model: Engine | HasEngine, ids: Any, attention_mask: Any, prepend_bos: bool | None, padding_side: str | None
) -> tuple[Any, Any]:
    """``(ids, attention_mask)`` of what a hooked run was given: token ids as they are (``prepend_bos``
    and ``padding_side`` are for text, as in TransformerLens), a text or list of texts by :func:`to_tokens`."""
    if not is_text(ids):
        return ids, attention_mask
    if attention_mask is not None:
        raise NpgptError(
            "attention_mask is for token ids; text is padded, and masked, by padding_side ('left' or 'right')",
            param="attention_mask",
        )
    return to_tokens(model, ids, prepend_bos, padding_side)


RETURN_TYPES = ("logits", "loss", "both", None)  # TransformerLens's return_type


def lm_loss(logits: Any, ids: np.ndarray, attention_mask: Any = None, per_token: bool = False) -> Any:
    """TransformerLens's loss (``lm_cross_entropy_loss``): the mean over rows and positions of the
    negative log-probability of each next token, as a float32 scalar; ``per_token``: [B, T-1] of them.
    With ``attention_mask``, the pairs with a padding token are left out (0 in ``per_token``'s)."""
    logits = np.asarray(logits, np.float64)  # float64: the mean of many small terms, as score.py's
    nll = -np.take_along_axis(log_softmax(logits[:, :-1]), ids[:, 1:, None], axis=-1)[..., 0]  # [B, T-1]
    if attention_mask is None:
        count = nll.size
    else:
        valid = np.asarray(attention_mask).astype(bool)
        pairs = valid[:, :-1] & valid[:, 1:]
        nll, count = np.where(pairs, nll, 0.0), int(pairs.sum())
    if per_token:
        return nll.astype(np.float32)
    if count == 0:
        raise NpgptError("the loss needs two tokens in a row to predict one from the other; give a longer input")
    return np.float32(nll.sum() / count)


def _check_return_type(return_type: Any, loss_per_token: Any) -> None:
    if return_type not in RETURN_TYPES:
        raise NpgptError(
            f"return_type must be 'logits', 'loss', 'both' or None (TransformerLens's), got {shown(return_type)}",
            param="return_type",
        )
    if not isinstance(loss_per_token, bool):
        raise NpgptError(f"loss_per_token must be True or False, got {shown(loss_per_token)}", param="loss_per_token")


def _output(
    model: Engine | HasEngine, logits: Any, ids: Any, attention_mask: Any, return_type: str | None, per_token: bool
) -> Any:
    """What a hooked run returns for TransformerLens's ``return_type``: the logits (as the caller gives
    them), the loss (NumPy float32), both, or None. ``ids`` and ``attention_mask`` as checked by the run."""
    if return_type in ("logits", None):
        return logits if return_type else None
    ids, valid = as_engine(model).check_ids(ids, attention_mask)
    host = logits if isinstance(logits, np.ndarray) else model.backend.to_numpy(logits)  # host=False: the backend's
    loss = lm_loss(host, ids, None if attention_mask is None else valid, per_token)
    return loss if return_type == "loss" else (logits, loss)


def _inputs(model: Engine | HasEngine, ids: Any, attention_mask: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ids [B, T], positions [B, T] and the additive mask [B, 1, T, T], checked and built by the Engine."""
    ids, valid = as_engine(model).check_ids(ids, attention_mask)
    if ids.shape[1] == 0:
        raise NpgptError(f"ids must hold at least one token per row, got shape {ids.shape}")
    positions, mask = positions_and_mask(valid, 0, ids.shape[1])
    return ids, positions, mask


class _Stopped(Exception):  # not an error: how stop_at_layer leaves the forward pass
    """Raised where ``stop_at_layer`` ends the forward pass, carrying the residual stream there."""

    def __init__(self, residual: Array) -> None:
        super().__init__("stop_at_layer")
        self.residual = residual


def stop_layer(stop_at_layer: Any, n_layer: int) -> int | None:
    """TransformerLens's ``stop_at_layer`` as the number of blocks to run (0..n_layer; a negative one counts
    from the end, as a slice's stop does), or None: every block, then the logits."""
    if stop_at_layer is None:
        return None
    if not (is_integer(stop_at_layer) and -n_layer <= stop_at_layer <= n_layer):
        raise NpgptError(
            f"stop_at_layer must be None or a whole number of blocks to run in [-{n_layer}, {n_layer}] "
            f"(negative: counted from the end), got {shown(stop_at_layer)}",
            param="stop_at_layer",
        )
    return int(stop_at_layer) if stop_at_layer >= 0 else n_layer + int(stop_at_layer)


def _stopping(hook: Callable[[str, Array], Array], layer: int) -> Callable[[str, Array], Array]:
    """``hook``, then the end of the forward pass where the residual stream enters block ``layer`` (leaves
    the last block for ``layer`` = n_layer), as TransformerLens's ``stop_at_layer`` ends it: no later hook runs."""
    embed: list[Array] = []

    def stopping(name: str, x: Array) -> Array:
        x = hook(name, x)
        if layer == 0 and name == "hook_embed":
            embed.append(x)
        elif layer == 0 and name == "hook_pos_embed":
            raise _Stopped(embed[0] + x)  # the stream entering block 0, as model.gpt2 adds it
        elif name == f"blocks.{layer - 1}.hook_resid_post":
            raise _Stopped(x)
        return x

    return stopping


def _with_head_results(
    hook: Callable[[str, Array], Array], wanted: Callable[[str], bool], weights: dict[str, Any], backend: Backend
) -> Callable[[str, Array], Array]:
    """``hook``, also called at ``blocks.{i}.attn.hook_result`` where ``wanted`` names it, right after the block's
    ``attn.hook_z``, as TransformerLens does with ``use_attn_result``: with each head's output, the
    :func:`~npgpt.head_attribution.head_results` of the z the hook left. Where the hook changed them (returned a
    replacement, or wrote in place), the block's ``hook_attn_out`` is their sum over heads plus ``c_proj.b``, as
    TransformerLens computes it; else the model's own, so a hook that only reads them changes nothing."""
    edited: dict[int, Array] = {}  # block -> its changed results, until its hook_attn_out

    def hooked(name: str, x: Array) -> Array:
        layer = int(name.split(".")[1]) if name.startswith("blocks.") else -1
        if name.endswith(".hook_attn_out") and layer in edited:
            results, b = edited.pop(layer), weights["blocks"][layer]["attn"]["c_proj"].get("b")
            x = array_namespace(results).sum(results, axis=-2)  # [B, T, H, C] -> [B, T, C]
            x = x if b is None else x + b
        x = hook(name, x)
        if name.endswith(".attn.hook_z") and wanted(f"blocks.{layer}.{RESULT}"):
            results = head_results(x, weights["blocks"][layer]["attn"]["c_proj"]["w"], backend)
            xp = array_namespace(results)
            before = xp.asarray(results, copy=True) if is_writeable_array(results) else None  # to see an edit in place
            after = hook(f"blocks.{layer}.{RESULT}", results)
            if after is not results or (before is not None and not bool(xp.all(after == before))):
                edited[layer] = after
        return x

    return hooked


def hooked_forward(
    model: Engine | HasEngine,
    ids: Any,
    hook: Callable[[str, Array], Array],
    attention_mask: Any = None,
    params: dict[str, Any] | None = None,
    stop_at_layer: int | None = None,
    results: Callable[[str], bool] | None = None,
) -> Array:
    """Logits [B, T, V] (a backend array) of ``ids`` with ``hook(name, x)`` called at every hook point.

    ``params`` (default ``model.params``) lets a caller pass other arrays, e.g. JAX ones to trace;
    the inputs are then made arrays of their library. ``attention_mask`` [B, T] (1 = token,
    0 = left padding) as in ``GPT2.logits``. ``stop_at_layer`` (0..n_layer, from :func:`stop_layer`): run
    only that many blocks and return the residual stream [B, T, C] there (TransformerLens's). ``results``:
    the names ``blocks.{i}.attn.hook_result`` at which ``hook`` is called too (none by default; each costs
    [B, T, H, C] floats and a product the size of c_proj's), see :func:`_with_head_results`.
    """
    ids, positions, mask = _inputs(model, ids, attention_mask)
    asarray = model.backend.asarray if params is None else array_namespace(params["wte"]).asarray
    weights = as_engine(model).params_for(*ids.shape) if params is None else params  # as GPT2.logits runs it
    if stop_at_layer is not None:
        hook = _stopping(hook, stop_at_layer)
    if results is not None:  # on the weights as held (a decode step's batched form is for its kernel alone)
        hook = _with_head_results(hook, results, model.params if params is None else params, model.backend)
    with float32_products(weights["wpe"]):  # run eagerly, outside the backend's compiled pass
        try:
            logits, _ = gpt2(
                asarray(ids), weights, model.config, positions=asarray(positions), mask=asarray(mask), hook=hook
            )
        except _Stopped as stopped:
            return stopped.residual
    return logits


class HookAttributeError(NpgptError, AttributeError):
    """A TransformerLens HookPoint attribute npgpt's hook name has not, with npgpt's way to the same end."""


_KEEP_STATE = "keep state in a dict of your own, read by the hook function (a closure or functools.partial)"
# TransformerLens's HookPoint attributes -> npgpt's way (a hook is a name and a function for one call)
_HOOK_POINT_ATTRIBUTES_NOT_HERE = {
    "ctx": _KEEP_STATE,
    "add_hook": "npgpt's hooks last for one call: pass them as run_with_hooks' fwd_hooks",
    "remove_hooks": "npgpt's hooks last for one call, so there are none to remove",
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


def _compose(
    fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]],
    model: Engine | HasEngine,
    then: Callable[[str, Array], Array] | None = None,
) -> tuple[Callable[[str, Array], Array], Callable[[str], bool]]:
    """One ``hook(name, x)`` running each matching ``fn(x, name)`` in order, then ``then``; and whether any of
    ``fwd_hooks`` is for a name (the optional hook points are computed only for those asked for)."""
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

    return hook, lambda name: any(wanted(name) for wanted, _ in hooks)


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
    prepend_bos: bool | None = None,
    padding_side: str | None = None,
    return_type: str | None = "logits",
    loss_per_token: bool = False,
    remove_batch_dim: bool = False,
    stop_at_layer: int | None = None,
) -> tuple[Any, ActivationCache]:
    """``(logits, cache)``: logits [B, T, V] and the activations named by ``names_filter`` (all by default).

    ``cache`` (an :class:`ActivationCache`, a dict that also reads TransformerLens's shorthand keys
    and has its helpers) maps TransformerLens's hook names to float32 arrays of TransformerLens's
    shapes (see :func:`hook_names`), each as its hook point saw it: an activation changed by one of ``fwd_hooks``
    is cached as changed, and a later change in place does not reach the cache. With
    ``host`` (the default) everything is a NumPy array; ``host=False`` keeps the backend's arrays
    (JAX: traceable). A 1-D ``ids`` is one row. ``ids`` may be a text or a list of texts, read as
    TransformerLens reads them, ``<|endoftext|>`` first (``prepend_bos``, ``padding_side``: :func:`to_tokens`).
    ``return_type`` as TransformerLens's: "loss" for :func:`lm_loss` (``loss_per_token``), "both" for
    ``(logits, loss)``, None for nothing, in place of the logits. ``remove_batch_dim``: a one-row run's
    cache without its batch axis (:meth:`ActivationCache.remove_batch_dim`), the logits keeping theirs.
    ``stop_at_layer``: run that many blocks (negative: all but that many) and return, in place of the logits,
    the residual stream [B, T, C] entering the next, with the activations up to there (TransformerLens's;
    for all blocks, the stream before ``ln_final``, as HookedTransformer returns it).
    """
    _check_return_type(return_type, loss_per_token)
    stop = stop_layer(stop_at_layer, model.config.n_layer)
    if not isinstance(remove_batch_dim, bool):
        raise NpgptError(f"remove_batch_dim must be True or False, got {shown(remove_batch_dim)}")
    ids, attention_mask = _read_input(model, ids, attention_mask, prepend_bos, padding_side)
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

    hook, hooked = _compose(fwd_hooks, model, record)
    wanted = lambda name: keep(name) or hooked(name)  # noqa: E731
    logits = hooked_forward(model, ids, hook, attention_mask, stop_at_layer=stop, results=wanted)
    activations = ActivationCache(cache, model, stopped_at=stop)
    if remove_batch_dim:
        activations.remove_batch_dim()
    if stop is not None:  # the residual stream, whatever return_type asks (as in TransformerLens)
        return to(logits), activations
    return _output(model, to(logits), ids, attention_mask, return_type, loss_per_token), activations


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
) -> Any:
    """Float32 logits [B, T, V] of a forward pass in which each ``(name, fn)`` of ``fwd_hooks`` runs at
    its hook point: ``fn(activation, hook_name)`` returns a replacement of the same shape (cast to
    the activation's float32), or None to keep the activation (changed in place or not). ``name`` is
    a hook name or a predicate over names, as in TransformerLens; ``hook_name`` is a str that also
    has TransformerLens's ``hook.name`` and ``hook.layer()`` (:class:`HookName`). The activation is
    an array of the model's backend (a replacement from another library, e.g. torch on NumPy, is
    converted). Text, ``return_type``, ``loss_per_token`` and ``stop_at_layer`` (the residual stream [B, T, C]
    after that many blocks, in place of the logits) are read as in :func:`run_with_cache`.
    """
    _check_return_type(return_type, loss_per_token)
    stop = stop_layer(stop_at_layer, model.config.n_layer)
    ids, attention_mask = _read_input(model, ids, attention_mask, prepend_bos, padding_side)
    hook, hooked = _compose(fwd_hooks, model)
    logits = model.backend.to_numpy(
        hooked_forward(model, ids, hook, attention_mask, stop_at_layer=stop, results=hooked)
    )
    if stop is not None:
        return logits  # the residual stream, whatever return_type asks (as in TransformerLens)
    return _output(model, logits, ids, attention_mask, return_type, loss_per_token)


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
    prepend_bos: bool | None = None,
    padding_side: str | None = None,
) -> tuple[float, ActivationCache, ActivationCache]:
    """``(value, cache, grads)``: ``metric(logits)`` (a JAX scalar of the logits [B, T, V]), the
    activations named by ``names_filter`` and the gradient of the metric with respect to each (each an
    :class:`ActivationCache`: ``grads["resid_pre", 0]`` reads as in TransformerLens), all from one
    ``jax.grad`` (a zero added at every hook point is what is differentiated). Needs JAX; the weights
    are read as float32 from any backend. Text is read as in :func:`run_with_cache`.
    """
    ids, attention_mask = _read_input(model, ids, attention_mask, prepend_bos, padding_side)
    jax, jnp, params = _jax_params(model)
    keep = name_filter(names_filter, model.config.n_layer)
    shapes: dict[str, Any] = {}

    def shape_of(name: str, x: Array) -> Array:
        if keep(name):
            shapes[name] = jax.ShapeDtypeStruct(x.shape, x.dtype)
        return x

    jax.eval_shape(lambda p: hooked_forward(model, ids, shape_of, attention_mask, p, results=keep), params)

    def run(zeros: dict[str, Array]) -> tuple[Array, tuple[Array, dict[str, Array]]]:
        acts: dict[str, Array] = {}

        def hook(name: str, x: Array) -> Array:
            if name in zeros:
                acts[name] = x
                return x + zeros[name]
            return x

        logits = hooked_forward(model, ids, hook, attention_mask, params, results=keep)
        value = _metric_value(jax, metric, logits)
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
    prepend_bos: bool | None = None,
    padding_side: str | None = None,
) -> ActivationCache:
    """Attribution patching (Nanda, 2023): for each activation, ``(clean - corrupted) * d metric / d act``
    at the corrupted run, a first-order estimate of how much patching the clean activation into the
    corrupted run moves ``metric(logits)``. Arrays of the activations' shapes, keyed as a cache
    (``attr["resid_pre", 3]``); sum over the axes you do not care about. One forward pass for the
    clean run, one ``jax.grad`` for the corrupted. Texts are read as in :func:`run_with_cache`.
    """
    clean_ids, clean_mask = _read_input(model, clean_ids, attention_mask, prepend_bos, padding_side)
    corrupted_ids, attention_mask = _read_input(model, corrupted_ids, attention_mask, prepend_bos, padding_side)
    if not np.array_equal(np.asarray(clean_mask), np.asarray(attention_mask)):  # texts left-padded unlike
        raise NpgptError("clean and corrupted texts must be of the same token lengths, row by row, to be subtracted")
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

    hooked_forward(model, clean_ids, record, attention_mask, _jax_params(model)[2], results=keep)  # as the gradient's
    _, corrupted, grads = activation_grads(model, corrupted_ids, metric, names_filter, attention_mask)
    return ActivationCache({n: (clean[n] - corrupted[n]) * grads[n] for n in grads}, model)
