"""Per-neuron attribution on a cache: TransformerLens's ``get_neuron_results``, ``stack_neuron_results`` and
``get_full_resid_decomposition`` (every head, every neuron, the embeddings and the biases).

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

    def get_full_resid_decomposition(
        self,
        layer: int | None = None,
        mlp_input: bool = False,
        expand_neurons: bool = True,
        apply_ln: bool = False,
        pos_slice: Any = None,
        return_labels: bool = False,
        project_output_onto: Any = None,
    ) -> Any:
        """The residual stream entering block ``layer`` (None, -1 or n_layer: the unembed) as the sum of every part
        that wrote it [components, B, T, C] (TransformerLens's ``get_full_resid_decomposition``), in its order: each
        head's result (``L{i}H{h}``, block ``layer``'s too with ``mlp_input``), each neuron's (``L{i}N{n}``; with
        ``expand_neurons=False`` each block's ``{i}_mlp_out``, its bias in it), ``embed``, ``pos_embed`` and ``bias``,
        the sum of the output biases the heads' and neurons' results leave out. ``apply_ln`` and ``pos_slice`` as
        :meth:`decompose_resid`'s, ``project_output_onto`` as :meth:`stack_neuron_results`'."""
        layer = self._layer(layer)  # type: ignore[attr-defined]
        if mlp_input:
            self._mlp_input_block("get_full_resid_decomposition", layer)  # type: ignore[attr-defined]
        heads, labels = self.stack_head_results(  # type: ignore[attr-defined]
            layer + 1 if mlp_input else layer, pos_slice=pos_slice, return_labels=True
        )
        xp = array_namespace(heads)
        parts = [heads]
        if layer > 0 and expand_neurons:
            neurons, neuron_labels = self.stack_neuron_results(layer, pos_slice=pos_slice, return_labels=True)
            parts.append(neurons)
            labels += neuron_labels
        elif layer > 0:
            mlps, mlp_labels = self.decompose_resid(  # type: ignore[attr-defined]
                layer, pos_slice=pos_slice, incl_embeds=False, mode="mlp", return_labels=True
            )
            parts.append(mlps)
            labels += mlp_labels
        positions = pos_index(pos_slice, self._n_positions())  # type: ignore[attr-defined]
        for name, label in (("hook_embed", "embed"), ("hook_pos_embed", "pos_embed")):
            if name in self:  # type: ignore[operator]  # as TransformerLens's: where the run's names_filter kept it
                parts.append(self[name][..., positions, :][None])  # type: ignore[index]
                labels.append(label)
        bias = xp.zeros(heads.shape[1:], dtype=heads.dtype)
        for i in range(layer + 1 if mlp_input else layer):
            block = self.model.params["blocks"][i]
            written = [block["attn"]["c_proj"]] + ([block["mlp"]["c_proj"]] if expand_neurons and i < layer else [])
            for proj in written:
                if proj.get("b") is not None:  # nanoGPT's bias=False: none
                    bias = bias + self._float32(proj["b"], heads)  # type: ignore[attr-defined]
        parts.append(bias[None])
        labels.append("bias")
        stack = xp.concat(parts, axis=0)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice)  # type: ignore[attr-defined]
        if project_output_onto is not None:
            stack = stack @ self._onto(project_output_onto, stack)
        return (stack, labels) if return_labels else stack
