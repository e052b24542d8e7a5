"""Per-head and per-token attribution on a cache: TransformerLens's ``stack_head_results`` and ``logit_attrs``.

Mixed into :class:`~npgpt.activation_cache.ActivationCache`, whose stacking helpers (``_layer``,
``apply_ln_to_stack``) and keys they read. A head's result (``attn.hook_result``, which npgpt's model itself
never computes) is computed by :func:`head_results`, as TransformerLens's ``compute_head_results`` does: the
head's ``hook_z`` times its rows of ``attn.c_proj.w``, no bias. ``npgpt.hooked_forward`` makes the hook point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from array_api_compat import array_namespace

from .errors import NpgptError, is_integer, shown
from .model import matmul
from .params import head_name

if TYPE_CHECKING:
    from .backends import Backend


def float32_like(weight: Any, like: Any, backend: Backend) -> Any:
    """``weight`` (a float array of ``backend``'s, any float dtype) as float32 in ``like``'s library."""
    src, xp = array_namespace(weight), array_namespace(like)
    if src is xp:
        return weight if weight.dtype == xp.float32 else xp.astype(weight, xp.float32)
    return xp.asarray(backend.to_numpy(src.astype(weight, src.float32)))


def head_results(z: Any, w: Any, backend: Backend) -> Any:
    """Each head's share of a block's attention output before c_proj's bias, [..., T, H, C] float32
    (TransformerLens's ``attn.hook_result``): head h's ``z`` [..., T, H, D] times rows h*D:(h+1)*D of
    ``w`` = ``attn.c_proj.w`` [H*D, C] as ``backend`` holds it. Float weights (16-bit ones widened) are split
    per head; int8 weights, codes only their kernel reads, multiply each head's z alone, the other heads' D
    columns zero ([..., T, H, H*D], H times c_proj's work). Their sum plus the bias is ``hook_attn_out``."""
    xp = array_namespace(z)
    H, D = z.shape[-2], z.shape[-1]
    if str(w.dtype).rsplit(".", 1)[-1] == "int8":  # np.int8 or torch.int8 (npgpt/int8.py, npgpt/q8_0.py)
        on = z if str(w.dtype) == str(xp.int8) else backend.asarray(np.asarray(z))  # a host cache of a torch model
        own = array_namespace(on)
        alone = own.reshape(on[..., :, None, :] * own.eye(H, dtype=on.dtype)[:, :, None], (*z.shape[:-1], H * D))
        out = matmul(alone, w)  # [..., T, H, H*D] @ [H*D, C] -> [..., T, H, C]
        return out if on is z else xp.asarray(backend.to_numpy(out))
    w = xp.reshape(float32_like(w, z, backend), (H, D, -1))  # [H*D, C] -> [H, D, C]
    return (z[..., None, :] @ w)[..., 0, :]  # [..., T, H, 1, D] @ [H, D, C] -> [..., T, H, 1, C]


def _integers(positions: list[Any] | np.ndarray) -> np.ndarray | None:
    """``positions`` as a NumPy array of integers ([] as an empty one), or None where they are no integers (floats,
    ragged lists: NumPy's IndexError or ValueError later)."""
    try:
        index = np.asarray(positions)
    except ValueError:
        return None
    if index.size == 0:
        return index.astype(np.int64)
    return index if index.dtype.kind in "iu" else None


def pos_index(pos_slice: Any, n_positions: int | None = None, name: str = "pos_slice", unit: str = "position") -> Any:
    """TransformerLens's ``pos_slice`` as an index of the position axis: an int (the axis goes),
    a tuple (``slice(*t)``), a slice, a list or array of positions, or None (all). With ``n_positions``, a
    position outside ``[-n_positions, n_positions)`` raises :class:`NpgptError` naming it (NumPy's IndexError, or
    an empty cache where one position was sliced; TransformerLens raises too); a slice is cut to them, as Python's.
    The same forms index other axes: ``name`` and ``unit`` name the argument in errors (``batch_slice``, a row).
    TransformerLens's own ``Slice`` of any of them is read as what it holds, and positions in a torch or JAX array as
    in a NumPy one, as there."""
    if type(pos_slice).__name__ == "Slice" and hasattr(pos_slice, "mode"):  # TransformerLens's: what it holds
        pos_slice = pos_slice.slice
    if hasattr(pos_slice, "tolist") and not isinstance(pos_slice, np.ndarray):  # torch's, JAX's, a NumPy scalar
        pos_slice = pos_slice.tolist()
    index: Any = None
    if is_integer(pos_slice):
        index = int(pos_slice)
    elif pos_slice is None:
        return slice(None)
    elif isinstance(pos_slice, tuple):
        return slice(*pos_slice)
    elif isinstance(pos_slice, slice):
        return pos_slice
    elif isinstance(pos_slice, (list, np.ndarray)):
        index = _integers(pos_slice)
    if index is None:
        raise NpgptError(
            f"{name} must be a {unit}, a (stop,)/(start, stop[, step]) tuple, a slice or a list of {unit}s, "
            f"got {shown(pos_slice)}",
            param=name,
        )
    if n_positions is not None:
        outside = [int(p) for p in np.ravel(index) if not -n_positions <= p < n_positions]
        if outside:
            raise NpgptError(
                f"{name} has {unit} {outside[0]}, outside this input's {n_positions} {unit}s "
                f"[-{n_positions}, {n_positions - 1}]",
                param=name,
            )
    return index


class HeadAttribution:
    """``stack_head_results`` and ``logit_attrs`` for a cache of activations (see the module's docstring)."""

    model: Any
    n_layer: int

    def _float32(self, weight: Any, like: Any) -> Any:
        """``weight`` (the model's array, any backend) as float32 in ``like``'s library; refused for int8
        weights, which are codes for a kernel, not the matrix."""
        if getattr(self.model, "dtype", "float32") == "int8":
            raise NpgptError(
                "logit attributions need float weights, and this model's are int8; "
                "load it with dtype='float32' (or float16/bfloat16)"
            )
        return float32_like(weight, like, self.model.backend)

    def head_results(self, layer: int) -> Any:
        """Block ``layer``'s heads' outputs [..., T, H, C] (TransformerLens's ``attn.hook_result``): the cached
        ``blocks.{layer}.attn.hook_result``, or :func:`head_results` of its cached ``hook_z``."""
        name = f"blocks.{layer}.attn.hook_result"
        if name in self:  # type: ignore[operator]  # a dict: the full names only
            return self[name]  # type: ignore[index]
        z = self["z", layer]  # type: ignore[index]
        return head_results(z, self.model.params["blocks"][layer]["attn"]["c_proj"]["w"], self.model.backend)

    def compute_head_results(self) -> None:
        """TransformerLens's ``compute_head_results``: every block's ``blocks.{i}.attn.hook_result`` added to the
        cache, as a run with ``use_attn_result`` caches them (each from the cached ``hook_z``); those cached
        already are kept. Then ``cache["result", i]`` reads them."""
        for layer in range(self.n_layer):
            name = f"blocks.{layer}.attn.hook_result"
            if name not in self:  # type: ignore[operator]  # a dict: the full names only
                self[name] = self.head_results(layer)  # type: ignore[index]

    def stack_head_results(
        self,
        layer: int | None = -1,
        return_labels: bool = False,
        incl_remainder: bool = False,
        pos_slice: Any = None,
        apply_ln: bool = False,
    ) -> Any:
        """Every head's result in blocks 0..layer-1 stacked [layer * H, B, T, C] (TransformerLens's
        ``stack_head_results``), labelled ``L{block}H{head}``; ``incl_remainder`` adds the rest of the stream
        leaving block layer-1 (``remainder``); ``layer`` 0 stacks no head, [0, B, T, C] (with ``incl_remainder`` the
        last block's ``resid_post``), as TransformerLens's; ``apply_ln`` divides by the scale of the layer norm that
        reads it (ln_final's for ``layer`` None, -1 or n_layer), as :meth:`apply_ln_to_stack`."""
        layer = self._layer(layer)  # type: ignore[attr-defined]
        positions = pos_index(pos_slice, self._n_positions())  # type: ignore[attr-defined]
        arrays, labels = [], []
        for i in range(layer):
            results = self.head_results(i)[..., positions, :, :]  # [..., T, H, C]
            arrays += [results[..., h, :] for h in range(results.shape[-2])]
            labels += [f"L{i}H{h}" for h in range(results.shape[-2])]
        if incl_remainder:  # layer 0: the last block's resid_post, all of it, as TransformerLens's
            target = self["resid_post", layer - 1][..., positions, :]  # type: ignore[index]
            arrays.append(target - sum(arrays[1:], arrays[0]) if arrays else target)
            labels.append("remainder")
        if arrays:
            stack = array_namespace(*arrays).stack(arrays, axis=0)
        else:  # no head and no remainder: an empty stack [0, ..., T, C]
            like = self["resid_pre", 0][..., positions, :]  # type: ignore[index]
            stack = array_namespace(like).zeros((0, *like.shape), dtype=like.dtype)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=pos_slice)  # type: ignore[attr-defined]
        return (stack, labels) if return_labels else stack

    def _directions(self, tokens: Any, like: Any) -> Any:
        """The unembedding rows of ``tokens`` [..., C] (TransformerLens's ``tokens_to_residual_directions``):
        a token id, a text of one token, or an array of ids."""
        if isinstance(tokens, str):
            tokenizer = getattr(self.model, "tokenizer", None)
            if tokenizer is None:  # an Engine's cache: weights and no tokenizer
                raise NpgptError(f"tokens={tokens!r} is text, and the model has no tokenizer; give the token's id")
            ids = tokenizer.encode(tokens)
            if len(ids) != 1:
                raise NpgptError(
                    f"tokens={tokens!r} must be one token of the model's tokenizer (it is {len(ids)}); give its id"
                )
            tokens = ids[0]
        index = np.asarray(tokens.tolist() if hasattr(tokens, "tolist") else tokens)
        n_vocab = self.model.config.n_vocab
        if index.dtype.kind not in "iu" or (index.size and not (0 <= index.min() and index.max() < n_vocab)):
            raise NpgptError(
                f"tokens must be token ids in [0, {n_vocab}) (an id, an array of ids, or a text of one token), "
                f"got {shown(tokens)}",
                param="tokens",
            )
        head = self.model.params[head_name(self.model.params)]  # [V, C]: wte, or an untied model's lm_head
        return self._float32(head[index], like)

    def logit_attrs(
        self,
        residual_stack: Any,
        tokens: Any,
        incorrect_tokens: Any = None,
        pos_slice: Any = None,
        batch_slice: Any = None,
        has_batch_dim: bool = True,
    ) -> Any:
        """How much each component of ``residual_stack`` [components, B, T, C] adds to the logit of ``tokens``
        (minus that of ``incorrect_tokens``), through the final layer norm's cached scale: TransformerLens's
        ``logit_attrs``, [components, B, T]. ``tokens``: an id, a text of one token, [B] ids (one per row) or
        [B, T] ids (one per row and position); ``pos_slice``/``batch_slice`` as the stack was sliced."""
        directions = self._directions(tokens, residual_stack)
        if incorrect_tokens is not None:
            wrong = self._directions(incorrect_tokens, residual_stack)
            if wrong.shape != directions.shape:
                raise NpgptError(
                    f"tokens and incorrect_tokens must have one shape, got {tuple(directions.shape[:-1])} and "
                    f"{tuple(wrong.shape[:-1])}",
                    param="incorrect_tokens",
                )
            directions = directions - wrong
        scaled = self.apply_ln_to_stack(  # type: ignore[attr-defined]
            residual_stack, None, pos_slice=pos_slice, batch_slice=batch_slice, has_batch_dim=has_batch_dim
        )
        xp = array_namespace(scaled)
        if has_batch_dim and not is_integer(batch_slice) and scaled.ndim == 4 and directions.ndim == 2:
            if directions.shape[0] == scaled.shape[1]:  # one token per row: the same at every position
                directions = directions[:, None, :]
        try:  # NumPy's "operands could not be broadcast", or a stack grown by the tokens' axes: refused
            fits = np.broadcast_shapes(tuple(scaled.shape), tuple(directions.shape)) == tuple(scaled.shape)
        except ValueError:
            fits = False
        if not fits:
            raise NpgptError(
                f"tokens of shape {tuple(directions.shape[:-1])} do not fit the stack's rows and positions "
                f"{tuple(scaled.shape[1:-1])}: give one id, one per row [B] or one per row and position [B, T], of "
                "the rows and positions the stack holds (after batch_slice and pos_slice)",
                param="tokens",
            )
        return xp.sum(scaled * directions, axis=-1)
