"""Gradients of a metric with respect to every cached activation, in one ``jax.grad`` (JAX), and attribution
patching (Nanda, 2023) on top of them: the hooked forward pass with a zero added at each hook point asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from array_api_compat import array_namespace

from .activation_cache import ActivationCache
from .added_hooks import refuse_with_added
from .engine import as_engine
from .errors import NpgptError
from .hook_io import read_input
from .hook_points import NamesFilter, name_filter, named, switched_on
from .hooked_forward import hooked_forward

if TYPE_CHECKING:
    from .engine import Engine, HasEngine

Array = Any


def jax_params(model: Engine | HasEngine) -> tuple[Any, Any, dict[str, Any]]:
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
    refuse_with_added(model, "activation_grads")
    ids, attention_mask = read_input(model, ids, attention_mask, prepend_bos, padding_side)
    jax, jnp, params = jax_params(model)
    keep = name_filter(names_filter, model.config.n_layer)
    inputs = named(names_filter, switched_on(model))  # TransformerLens's optional hook points: where asked for
    shapes: dict[str, Any] = {}

    def shape_of(name: str, x: Array) -> Array:
        if keep(name):
            shapes[name] = jax.ShapeDtypeStruct(x.shape, x.dtype)
        return x

    jax.eval_shape(
        lambda p: hooked_forward(model, ids, shape_of, attention_mask, p, results=inputs, inputs=inputs), params
    )

    def run(zeros: dict[str, Array]) -> tuple[Array, tuple[Array, dict[str, Array]]]:
        acts: dict[str, Array] = {}

        def hook(name: str, x: Array) -> Array:
            if name in zeros:
                acts[name] = x
                return x + zeros[name]
            return x

        logits = hooked_forward(model, ids, hook, attention_mask, params, results=inputs, inputs=inputs)
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
    refuse_with_added(model, "attribution_patching")
    clean_ids, clean_mask = read_input(model, clean_ids, attention_mask, prepend_bos, padding_side)
    corrupted_ids, attention_mask = read_input(model, corrupted_ids, attention_mask, prepend_bos, padding_side)
    if not np.array_equal(np.asarray(clean_mask), np.asarray(attention_mask)):  # texts left-padded unlike
        raise NpgptError("clean and corrupted texts must be of the same token lengths, row by row, to be subtracted")
    keep = name_filter(names_filter, model.config.n_layer)
    inputs = named(names_filter, switched_on(model))  # TransformerLens's optional hook points: where asked for
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

    hooked_forward(
        model, clean_ids, record, attention_mask, jax_params(model)[2], results=inputs, inputs=inputs
    )  # as the gradient's
    _, corrupted, grads = activation_grads(model, corrupted_ids, metric, names_filter, attention_mask)
    return ActivationCache({n: (clean[n] - corrupted[n]) * grads[n] for n in grads}, model)
