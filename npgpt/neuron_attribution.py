"""Per-neuron attribution on a cache: TransformerLens's ``get_neuron_results`` and ``stack_neuron_results``.

Mixed into :class:`~npgpt.activation_cache.ActivationCache`, as :mod:`~npgpt.head_attribution` is. A neuron's
result is what it writes to the residual stream: its ``mlp.hook_post`` activation times its row of
``mlp.c_proj.w`` (TransformerLens's ``W_out``), no bias; a block's neurons' results sum to its ``hook_mlp_out``
less ``c_proj.b``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import array_namespace

from .errors import NpgptError, is_integer, shown
from .head_attribution import pos_index


class NeuronAttribution:
    """``get_neuron_results`` and ``stack_neuron_results`` for a cache of activations (see the module's docstring)."""

    model: Any
    n_layer: int

    def _neurons(self, neuron_slice: Any) -> Any:
        """TransformerLens's ``neuron_slice`` as an index of the MLP's neurons, checked against their count."""
        d_mlp = self.model.config.d_mlp
        neurons = pos_index(neuron_slice, name="neuron_slice", unit="neuron")
        try:
            np.arange(d_mlp)[neurons]
        except IndexError:
            raise NpgptError(
                f"neuron_slice {shown(neuron_slice)} is outside this model's {d_mlp} neurons [0, {d_mlp - 1}]",
                param="neuron_slice",
            ) from None
        return neurons

    def _onto(self, project_output_onto: Any, like: Any) -> Any:
        """``project_output_onto``, a direction [C] or directions [C, k] of the residual stream, as float32 in
        ``like``'s library; anything else refused in one line (NumPy's matmul error named its gufunc signature)."""
        C = self.model.config.n_embd
        try:
            onto = np.asarray(
                project_output_onto.detach().cpu() if hasattr(project_output_onto, "detach") else project_output_onto
            )
        except (TypeError, ValueError):
            onto = np.asarray(None)
        if onto.dtype.kind not in "iuf" or onto.ndim not in (1, 2) or onto.shape[0] != C:
            shape = f"shape {onto.shape}" if onto.dtype.kind in "iuf" else shown(project_output_onto)
            raise NpgptError(
                f"project_output_onto must be a direction [{C}] or directions [{C}, k] of the residual stream, "
                f"got {shape}",
                param="project_output_onto",
            )
        return array_namespace(like).asarray(onto.astype(np.float32))

    def get_neuron_results(
        self, layer: int, neuron_slice: Any = None, pos_slice: Any = None, project_output_onto: Any = None
    ) -> Any:
        """Block ``layer``'s neurons' results [..., T, neurons, C] (TransformerLens's ``get_neuron_results``):
        each neuron's cached ``mlp.hook_post`` times its row of ``mlp.c_proj.w``. ``neuron_slice`` and ``pos_slice``
        in TransformerLens's forms (an int takes its axis away); ``project_output_onto`` a direction [C] (or
        directions [C, k]) each result is projected onto, in place of the C axis (a [C] one takes it away)."""
        acts = self["post", layer]  # type: ignore[index]  # [..., T, M]
        acts = acts[..., pos_index(pos_slice, self._n_positions()), :]  # type: ignore[attr-defined]
        neurons = self._neurons(neuron_slice)
        w_out = self._float32(self.model.params["blocks"][layer]["mlp"]["c_proj"]["w"], acts)  # type: ignore[attr-defined]
        acts, w_out = acts[..., neurons], w_out[neurons]  # [..., T, n], [n, C]
        if project_output_onto is None:
            return acts[..., None] * w_out
        projected = w_out @ self._onto(project_output_onto, acts)  # [n, k] or [n]
        return acts * projected if projected.ndim == 1 else acts[..., None] * projected

    def stack_neuron_results(
        self,
        layer: int | None,
        pos_slice: Any = None,
        neuron_slice: Any = None,
        return_labels: bool = False,
        incl_remainder: bool = False,
        apply_ln: bool = False,
        mlp_input: bool = False,
        project_output_onto: Any = None,
    ) -> Any:
        """Every neuron's result in blocks 0..layer-1 stacked [layer * neurons, ..., T, C] (TransformerLens's
        ``stack_neuron_results``), labelled ``L{block}N{neuron}``; ``incl_remainder`` adds the rest of the stream
        the stack is part of (``remainder``: ``resid_post`` of block layer-1, or with ``mlp_input`` block layer's
        ``resid_mid``; for ``layer`` 0 the last block's ``resid_post``, as TransformerLens's); ``apply_ln`` divides by
        the scale of the layer norm that reads it, as :meth:`apply_ln_to_stack`; ``project_output_onto`` a direction
        [C] (or directions [C, k]) each component is projected onto, in place of its C axis, as TransformerLens's."""
        layer = self._layer(layer)  # type: ignore[attr-defined]
        neurons = self._neurons(neuron_slice)
        if is_integer(neurons):  # the layers' neurons are stacked on that axis: it stays
            neurons = [neurons]
        labels = [f"L{i}N{n}" for i in range(layer) for n in np.arange(self.model.config.d_mlp)[neurons].tolist()]
        positions = pos_index(pos_slice, self._n_positions())  # type: ignore[attr-defined]
        like = self["resid_pre", 0][..., positions, :]  # type: ignore[index]
        xp = array_namespace(like)
        arrays = [self.get_neuron_results(i, neurons, pos_slice) for i in range(layer)]  # [..., T, n, C] each
        if arrays:
            stack = xp.moveaxis(xp.concat(arrays, axis=-2), -2, 0)  # -> [layer * n, ..., T, C]
        else:
            stack = xp.zeros((0, *like.shape), dtype=like.dtype)
        if incl_remainder:
            if mlp_input:  # the remainder up to block layer's resid_mid
                self._mlp_input_block("stack_neuron_results", layer)  # type: ignore[attr-defined]
            target = self["resid_mid", layer] if mlp_input else self["resid_post", layer - 1]  # type: ignore[index]
            rest = target[..., positions, :] - xp.sum(stack, axis=0)
            stack = xp.concat([stack, rest[None]], axis=0)
            labels.append("remainder")
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice)  # type: ignore[attr-defined]
        if project_output_onto is not None:
            stack = stack @ self._onto(project_output_onto, stack)  # [components, ..., C] -> [..., k] or [...]
        return (stack, labels) if return_labels else stack
