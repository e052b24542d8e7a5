"""The forward pass with a hook at every named point: ``model.gpt2``'s own ``hook(name, x)``, run eagerly on the
backend's arrays, plus what TransformerLens has and the model file leaves out: ``stop_at_layer`` (the pass ends
where the residual stream enters a block), ``start_at_layer`` (it starts there, from a given stream) and
``blocks.{i}.attn.hook_result`` (each head's output, computed from ``attn.hook_z`` only where asked for,
:func:`_with_head_results`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from array_api_compat import array_namespace

from .backends import float32_products
from .engine import as_engine, first_line, positions_and_mask
from .errors import NpgptError, counted_index, is_integer, shown
from .head_attribution import head_results
from .hook_points import RESULT
from .input_hooks import call_edited, with_inputs
from .model import MASKED, gpt2

if TYPE_CHECKING:
    from .backends import Backend
    from .engine import Engine, HasEngine

Array = Any


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


def start_layer(start_at_layer: Any, n_layer: int) -> int | None:
    """TransformerLens's ``start_at_layer``: the block (0..n_layer-1, a negative one counted from the end) whose
    ``hook_resid_pre`` the input is, or None (the input is token ids)."""
    if start_at_layer is None:
        return None
    return counted_index(start_at_layer, n_layer, "start_at_layer", what="None or a block")


def check_residual(residual: Any, n_embd: int, start: int, stop: int | None) -> np.ndarray:
    """The input of a ``start_at_layer`` run as float32 [B, T, C] NumPy (any library's array of numbers)."""
    try:
        host = np.asarray(residual.detach().cpu() if hasattr(residual, "detach") else residual)  # torch: its values
    except (TypeError, ValueError, RuntimeError):
        host = np.asarray(None)
    if host.ndim != 3 or host.shape[-1] != n_embd or host.shape[1] == 0 or host.dtype.kind not in "fiu":
        raise NpgptError(
            f"with start_at_layer the input is the residual stream entering that block, [batch, pos, {n_embd}] "
            f"floats (e.g. cache['resid_pre', {start}]), got {shown(residual)}",
            param="start_at_layer",
        )
    if stop is not None and stop <= start:
        raise NpgptError(
            f"stop_at_layer ({stop}) must come after start_at_layer ({start}): the blocks run are [start, stop)",
            param="stop_at_layer",
        )
    return host.astype(np.float32)


def _starting(hook: Callable[[str, Array], Array], layer: int, residual: Array) -> Callable[[str, Array], Array]:
    """``hook`` from block ``layer`` on, where ``residual`` replaces the stream entering it, as TransformerLens's
    ``start_at_layer`` starts there: the embeddings and earlier blocks run on placeholder ids, unhooked and unseen."""

    def starting(name: str, x: Array) -> Array:
        if name == f"blocks.{layer}.hook_resid_pre":
            x = residual
        elif not (name.startswith("ln_final.") or name.startswith("blocks.") and int(name.split(".")[1]) >= layer):
            return x
        return hook(name, x)

    return starting


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


def _scores_as_transformer_lens(hook: Callable[[str, Array], Array]) -> Callable[[str, Array], Array]:
    """``hook``, seeing at ``attn.hook_attn_scores`` [B, H, T, S] what TransformerLens holds there: ``-inf`` where a
    query may not look.

    The model adds ``MASKED`` (about -1e9) so that a row that sees nothing (a left-padded row's padding queries)
    stays finite; what the hook leaves goes back the same way, so a score a hook sets to ``-inf``, as TransformerLens
    users ablate one, is masked as the model masks (never a NaN row). A real query whose every key the hook masks
    gets the pattern row TransformerLens gives it, zeros (its softmax's NaN set to 0), so its z is 0 as there. A
    query the model itself lets see no key (a left-padded row's padding) is shown TransformerLens's zeros at
    ``attn.hook_pattern`` too, but the model goes on from its own row wherever the hook leaves it 0: the logits stay
    ``model.logits``' at every position (the activations at padding positions after the pattern are the model's).
    """
    blinded: dict[str, Array] = {}  # "blocks.{i}.attn." -> [B, H, T, 1]: queries the hook left no key to look at
    padding: dict[str, Array] = {}  # "blocks.{i}.attn." -> [B, H, T, 1]: queries the model lets see no key

    def scores(name: str, x: Array) -> Array:
        if name.endswith(".attn.hook_attn_scores"):
            xp = array_namespace(x)
            masked = x <= MASKED / 2
            nowhere = xp.all(masked, axis=-1, keepdims=True)  # the model's own: padding queries
            y = hook(name, xp.where(masked, -math.inf, x))  # Python floats: no float64 promotion
            y = xp.where(y == -math.inf, MASKED, y)
            # (kept whether or not there is one: a traced array has no truth value)
            blinded[name.removesuffix("hook_attn_scores")] = xp.all(y <= MASKED / 2, axis=-1, keepdims=True) & ~nowhere
            padding[name.removesuffix("hook_attn_scores")] = nowhere
            return y
        if (
            name.endswith(".attn.hook_pattern")
            and (nowhere := padding.pop(name.removesuffix("hook_pattern"), None)) is not None
        ):
            xp = array_namespace(x)
            rows = blinded.pop(name.removesuffix("hook_pattern"))
            # TransformerLens's zeros in both kinds of row; what the hook leaves 0 in a padding query's row is the
            # model's own again (uniform: it stays finite), so a run's logits are model.logits' everywhere
            y = hook(name, xp.where(rows | nowhere, 0.0, x))
            return xp.where(nowhere & (y == 0.0), x, y)
        return hook(name, x)

    return scores


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
            after, changed = call_edited(hook, f"blocks.{layer}.{RESULT}", results)
            if changed:
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
    inputs: Callable[[str], bool] | None = None,
    start_at_layer: int | None = None,
) -> Array:
    """Logits [B, T, V] (a backend array) of ``ids`` with ``hook(name, x)`` called at every hook point.

    ``params`` (default ``model.params``) lets a caller pass other arrays, e.g. JAX ones to trace;
    the inputs are then made arrays of their library. ``attention_mask`` [B, T] (1 = token,
    0 = left padding) as in ``GPT2.logits``. ``stop_at_layer`` (0..n_layer, from :func:`stop_layer`): run
    only that many blocks and return the residual stream [B, T, C] there (TransformerLens's). ``results``:
    the names ``blocks.{i}.attn.hook_result`` at which ``hook`` is called too (none by default; each costs
    [B, T, H, C] floats and a product the size of c_proj's), see :func:`_with_head_results`. ``inputs``: the names
    of TransformerLens's optional input hooks (``blocks.{i}.hook_q_input``, ...) at which it is called too
    (:func:`~npgpt.input_hooks.with_inputs`). ``start_at_layer`` (from :func:`start_layer`): ``ids`` is the
    residual stream [B, T, C] entering that block (from :func:`check_residual`), TransformerLens's.
    """
    residual: Any = None
    if start_at_layer is not None:
        residual, ids = ids, np.zeros(ids.shape[:2], np.int64)  # placeholder ids: the blocks before are not seen
    ids, positions, mask = _inputs(model, ids, attention_mask)
    if stop_at_layer is None:  # the logits [B, T, V] come out whole: refused before any compute if they cannot
        as_engine(model).check_logits_fit(*ids.shape)
    asarray = model.backend.asarray if params is None else array_namespace(params["wte"]).asarray
    weights = as_engine(model).params_for(*ids.shape) if params is None else params  # as GPT2.logits runs it
    hook = _scores_as_transformer_lens(hook)
    if start_at_layer is not None:
        hook = _starting(hook, start_at_layer, asarray(residual))
    if stop_at_layer is not None:
        hook = _stopping(hook, stop_at_layer)
    if results is not None:  # on the weights as held (a decode step's batched form is for its kernel alone)
        hook = _with_head_results(hook, results, model.params if params is None else params, model.backend)
    if inputs is not None:
        hook = with_inputs(hook, inputs, model.params if params is None else params, model.config)
    with float32_products(weights["wpe"]):  # run eagerly, outside the backend's compiled pass
        try:
            logits, _ = gpt2(
                asarray(ids), weights, model.config, positions=asarray(positions), mask=asarray(mask), hook=hook
            )
        except _Stopped as stopped:
            return stopped.residual
        except Exception as e:  # NumPy's MemoryError, PyTorch's and JAX's own (Backend.out_of_memory)
            if not model.backend.out_of_memory(e):
                raise
            raise NpgptError(
                f"out of memory running {ids.shape[0]} rows x {ids.shape[1]} tokens with hooks ({first_line(e)}); "
                "run fewer rows at once, or keep fewer activations (names_filter)"
            ) from None
    return logits
