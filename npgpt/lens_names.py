"""TransformerLens's names that npgpt's model answers in its own way, each with npgpt's way to the same end.

``HookedTransformer`` attributes the model has not (``QK``, ``cuda``: :data:`MODEL_ATTRIBUTES_NOT_HERE`,
read by ``GPT2.__getattr__``) and options of its ``run_with_cache``/``run_with_hooks`` the hooked runs do
not take (:func:`refuse_lens_options`): one line each, never a bare AttributeError or TypeError.
"""

from __future__ import annotations

from typing import Any

from .errors import NpgptError, shown


class ModelAttributeError(NpgptError, AttributeError):
    """A TransformerLens HookedTransformer attribute npgpt's model has not, with npgpt's way to the same end."""


DEVICE_AT_LOAD = (
    "npgpt picks the device at load: npgpt.load(name, backend='torch') (or 'jax', 'cupy') runs on a GPU it sees, "
    "backend='numpy' runs on the CPU"
)
_WEIGHTS = (
    "the weights are model.params, a dict by OpenAI's names (params['blocks'][0]['attn']['c_attn']['w']); "
    "TransformerLens's are model.W_Q, model.W_U, ... (read-only NumPy)"
)
_GRADS = "npgpt.hooks.activation_grads(model, ids, metric) gives a metric's gradient at every activation (JAX)"
# TransformerLens's HookedTransformer attributes -> npgpt's way to the same end ({head}: the matrix this
# model unembeds with, wte or an untied model's lm_head)
MODEL_ATTRIBUTES_NOT_HERE = {
    "hook_dict": "npgpt's hook points are names: npgpt.hooks.hook_names(model.config.n_layer)",
    "mod_dict": "npgpt's hook points are names: npgpt.hooks.hook_names(model.config.n_layer)",
    "blocks": "each block's weights are stacked in TransformerLens's shapes, model.W_Q[layer] for "
    "model.blocks[layer].attn.W_Q (the params as loaded: model.params['blocks'][layer]); the hook points are "
    "names: npgpt.hooks.hook_names(n_layer)",
    "QK": "model.W_Q @ model.W_K.transpose(0, 1, 3, 2) is each head's QK circuit [n_layers, n_heads, C, C] "
    "(TransformerLens's FactoredMatrix multiplied out)",
    "OV": "model.W_V @ model.W_O is each head's OV circuit [n_layers, n_heads, C, C] (TransformerLens's "
    "FactoredMatrix multiplied out)",
    # nn.Module's, which HookedTransformer is: a PyTorch user's first calls after loading
    "cuda": DEVICE_AT_LOAD,
    "half": "16-bit weights are chosen at load: npgpt.load(name, backend='torch', dtype='float16')",
    "device": "the device is the backend's, chosen at load: model.backend.name; " + DEVICE_AT_LOAD,
    "state_dict": _WEIGHTS,
    "parameters": _WEIGHTS,
    "named_parameters": _WEIGHTS,
    "requires_grad_": _GRADS,
    "zero_grad": _GRADS,
    "pos_embed": "model.W_pos[:T] is the position embedding of T positions (left padding: a row's positions count "
    "its tokens; model(ids, attention_mask=...) takes them so)",
    "all_head_labels": "[f'L{l}H{h}' for l in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)] "
    "(stack_head_results(return_labels=True) gives them with the stack)",
}


# TransformerLens's options of run_with_cache/run_with_hooks -> npgpt's way to the same end
LENS_OPTIONS = {
    "remove_batch_dim": "run_with_hooks' hooks see the batch axis: index it with [0] (run_with_cache takes it)",
    "bwd_hooks": "npgpt.hooks.activation_grads gives a metric's gradient at every cached activation (JAX)",
    "incl_bwd": "npgpt.hooks.activation_grads gives a metric's gradient at every cached activation (JAX)",
    "device": "the cache is NumPy on the host (host=True); host=False keeps the backend's arrays on its device",
    "pos_slice": "run_with_cache takes it; run_with_hooks' hooks see every position: index the position axis",
    "return_cache_object": "True or False (a plain dict of the activations)",
    "clear_contexts": "True or False: npgpt's hooks keep no hook.ctx between calls",
}
# ... and the values of them that ask for what npgpt does anyway (TransformerLens's defaults among them)
LENS_SAME = {
    "clear_contexts": lambda v: isinstance(v, bool),  # npgpt's hooks keep no hook.ctx between calls
    "bwd_hooks": lambda v: isinstance(v, (list, tuple)) and not v,
    "incl_bwd": lambda v: v is False,
    "remove_batch_dim": lambda v: v is False,
    "return_cache_object": lambda v: isinstance(v, bool),
    "device": lambda v: v is None,
}


# What each hooked run takes by name (its input aside), for the one-line refusal of anything else
TAKES = {
    "run_with_cache": (
        "names_filter", "attention_mask", "fwd_hooks", "host", "prepend_bos", "padding_side", "return_type",
        "loss_per_token", "remove_batch_dim", "stop_at_layer", "start_at_layer", "pos_slice", "reset_hooks_end",
    ),
    "run_with_hooks": (
        "fwd_hooks", "attention_mask", "prepend_bos", "padding_side", "return_type", "loss_per_token",
        "stop_at_layer", "start_at_layer", "reset_hooks_end",
    ),
    "model": (
        "return_type", "loss_per_token", "prepend_bos", "padding_side", "attention_mask", "stop_at_layer",
        "start_at_layer",
    ),
}  # fmt: skip
# ... and where an option of one of them asked of another is; and transformers' forward options
# (GPT2LMHeadModel(input_ids, output_hidden_states=True)), which ask for activations, not for generated text
_INSIDE = (
    "model.run_with_cache(input) gives every activation by TransformerLens's names (transformers' hidden_states[i] "
    "is blocks.{i}.hook_resid_pre, the last model.ln_final(cache['resid_post', -1]); its attentions[i] "
    "blocks.{i}.attn.hook_pattern)"
)
ELSEWHERE = {
    "names_filter": "run_with_cache takes it: model.run_with_cache(input, names_filter=...)",
    "host": "run_with_cache takes it: model.run_with_cache(input, host=False)",
    "fwd_hooks": "run_with_hooks takes them: model.run_with_hooks(input, fwd_hooks=[(name, fn)])",
    "output_hidden_states": _INSIDE,
    "output_attentions": _INSIDE,
    "use_cache": "the forward pass keeps no kv cache to return; model.generate decodes with one by itself",
}


def refuse_lens_options(other: dict[str, Any], method: str = "run_with_cache") -> None:
    """A keyword ``method`` (a key of :data:`TAKES`) does not take: NpgptError naming npgpt's way for
    TransformerLens's, the method that takes it, or the option meant (a misspelling), not a TypeError; one with the
    value that asks for what npgpt does anyway (TransformerLens's default) is accepted."""
    import difflib

    takes = TAKES[method]
    for name, value in other.items():
        if name in takes or (name in LENS_SAME and LENS_SAME[name](value)):
            continue
        what = f"{name}={shown(value)} is not npgpt's" if name in LENS_SAME else f"unknown option {name!r}"
        if name in LENS_OPTIONS:
            hint = LENS_OPTIONS[name]
        elif name in ELSEWHERE:
            what, hint = (
                f"{'model(input)' if method == 'model' else f'model.{method}'} takes no {name}",
                ELSEWHERE[name],
            )
        else:
            close = difflib.get_close_matches(name, takes, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(takes)}"
        raise NpgptError(f"{what}; {hint}", param=name)


def check_reset_hooks(method: str, direction: Any, **flags: Any) -> None:
    """NpgptError for arguments TransformerLens's ``reset_hooks`` / ``remove_all_hook_fns`` would refuse (they do
    remove only what model.add_hook added), so a typo is not taken silently."""
    if direction not in ("fwd", "bwd", "both"):
        raise NpgptError(f"{method}'s direction must be 'fwd', 'bwd' or 'both', got {shown(direction)}", "direction")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise NpgptError(f"{method}'s {name} must be True or False, got {shown(value)}", name)
