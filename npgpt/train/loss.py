"""The language-model loss: mean cross-entropy of each next token, through ``npgpt.model.gpt2``.

Array-API code like the model, so it runs on NumPy for evaluation and under ``jax.grad`` for
training. The convention matches Hugging Face's ``GPT2LMHeadModel(ids, labels=ids).loss``:
position t predicts token t+1, averaged over all B*(T-1) predictions, the softmax over the model's
full output (a padded vocabulary's rows too, as nanoGPT's train.py and estimate_loss): the same
definition as ``npgpt eval`` and ``model.score`` (npgpt/score.py), so the held-out loss a run reports
is what ``npgpt eval`` gives on the same windows.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, is_jax_array, is_torch_array

from ..config import GPT2Config
from ..model import gpt2

Array = Any


def _constant(x: Array) -> Array:
    """``x`` with no gradient. The max subtracted before exp() cancels out of the loss; letting
    autodiff through it costs an extra pass over the [B, T, V] logits for a zero result."""
    if is_jax_array(x):
        import jax

        return jax.lax.stop_gradient(x)
    return x.detach() if is_torch_array(x) else x


def cross_entropy(logits: Array, targets: Array) -> Array:  # [B, T, V], [B, T] -> []
    """Mean of ``-log softmax(logits)[target]``; integer ``targets`` (int64 on PyTorch)."""
    xp = array_namespace(logits)
    m = _constant(xp.max(logits, axis=-1, keepdims=True))  # subtracted so exp() cannot overflow
    lse = xp.log(xp.sum(xp.exp(logits - m), axis=-1)) + m[..., 0]  # -> [B, T]
    picked = xp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]  # -> [B, T]
    return xp.mean(lse - picked)


def loss(params: dict[str, Any], ids: Array, config: GPT2Config) -> Array:  # [B, T+1] -> []
    """Next-token loss of windows ``ids``: inputs ``ids[:, :-1]``, targets ``ids[:, 1:]``.

    Equal to HF's loss on the whole window: attention is causal, so the last token's own
    logits (which HF computes and discards) change nothing else.
    """
    logits, _ = gpt2(ids[:, :-1], params, config)  # [B, T] -> [B, T, V]
    return cross_entropy(logits, ids[:, 1:])
