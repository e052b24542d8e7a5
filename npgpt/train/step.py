"""One optimisation step: AdamW, linear warm-up then cosine decay, global-norm clipping,
gradient accumulation, all inside one ``jax.jit``.

``train_step(params, opt_state, batch) -> params, opt_state, metrics`` takes a batch
``[A, B, T+1]``: A micro-batches of B windows. Their gradients are averaged in a
``lax.scan`` (so only one micro-batch of activations is alive at a time) and applied once.
Every micro-batch has the same number of tokens, so the average equals the gradient of the
whole batch: accumulating trades memory for time without changing the maths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ..config import GPT2Config
from .loss import loss

Params = dict[str, Any]
# Float32 products, as inference has (backends.py): on a GPU XLA's default for float32 is
# TensorFloat-32 (inputs rounded to a 10-bit mantissa), which would make the gradients differ from
# Hugging Face's float32 ones by ~1e-4 relative. Set while tracing, so it is part of the program.
FLOAT32 = "highest"


def schedule(lr: float, steps: int, warmup: int, min_lr_ratio: float = 0.1) -> optax.Schedule:
    """Learning rate of optimiser step ``count`` (0-based): linear warm-up to ``lr`` over the
    first ``warmup`` steps (starting at ``lr / (warmup + 1)``, not 0, so step 0 already learns),
    then a cosine down to ``min_lr_ratio * lr`` at ``steps`` (nanoGPT's and GPT-3's recipe)."""
    lr_min = lr * min_lr_ratio
    # Floats, not ints: a Python int of 2**31 or more reaches XLA as an int32 and overflows (--steps 3000000000).
    warmup_f, span = float(warmup), float(max(steps - warmup, 1))

    def lr_at(count):
        count = jnp.asarray(count, jnp.float32)
        warm = lr * (count + 1.0) / (warmup_f + 1.0)
        progress = jnp.clip((count - warmup_f) / span, 0.0, 1.0)
        cosine = lr_min + 0.5 * (1.0 + jnp.cos(jnp.pi * progress)) * (lr - lr_min)
        return jnp.where(count < warmup_f, warm, cosine)

    return lr_at


def decay_mask(params: Params) -> Params:
    """Weight decay on matrices only (embeddings and linear weights), not on gains and biases."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def optimizer(
    lr: float, steps: int, warmup: int, weight_decay: float = 0.1, clip: float = 1.0, b1: float = 0.9, b2: float = 0.95
) -> optax.GradientTransformation:
    """Clip the gradient's global norm to ``clip``, then AdamW on the warm-up/cosine schedule."""
    return optax.chain(
        optax.clip_by_global_norm(clip),
        optax.adamw(schedule(lr, steps, warmup), b1=b1, b2=b2, eps=1e-8, weight_decay=weight_decay, mask=decay_mask),
    )


def global_norm(tree: Params) -> jax.Array:
    """sqrt of the sum of squares of every entry (what ``clip_by_global_norm`` clips)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(tree)))


def accumulated_grads(params: Params, batch: jax.Array, config: GPT2Config) -> tuple[jax.Array, Params]:
    """Mean loss and mean gradient over the micro-batches of ``batch`` [A, B, T+1], from float32 products."""
    with jax.default_matmul_precision(FLOAT32):
        return _accumulated_grads(params, batch, config)


def _accumulated_grads(params: Params, batch: jax.Array, config: GPT2Config) -> tuple[jax.Array, Params]:
    grad_fn = jax.value_and_grad(loss)
    if batch.shape[0] == 1:
        return grad_fn(params, batch[0], config)

    def add(carry, micro):  # one micro-batch [B, T+1]
        total_loss, total_grads = carry
        value, grads = grad_fn(params, micro, config)
        return (total_loss + value, jax.tree.map(jnp.add, total_grads, grads)), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    (total_loss, total_grads), _ = jax.lax.scan(add, (jnp.zeros((), jnp.float32), zeros), batch)
    n = batch.shape[0]
    return total_loss / n, jax.tree.map(lambda g: g / n, total_grads)


def make_train_step(
    opt: optax.GradientTransformation, config: GPT2Config, donate: bool = False
) -> Callable[[Params, Any, jax.Array], tuple[Params, Any, dict[str, jax.Array]]]:
    """The jit-compiled ``train_step(params, opt_state, batch) -> params, opt_state, metrics``.

    ``metrics`` holds the batch's mean ``loss`` and the gradient's global ``grad_norm`` (before
    clipping; the learning rate is ``schedule(...)(step)``). With ``donate`` the new params and
    optimiser state are written into the old ones' buffers (one copy of each fewer in memory; the
    caller must not touch the arrays it passed in).

    The step is sharding-agnostic: give it params and a batch placed on a mesh
    (:mod:`npgpt.train.sharding`) and XLA partitions it, inserting the all-reduces itself.
    """

    def train_step(params: Params, opt_state: Any, batch: jax.Array):
        value, grads = accumulated_grads(params, batch, config)
        metrics = {"loss": value, "grad_norm": global_norm(grads)}
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    return jax.jit(train_step, donate_argnums=(0, 1) if donate else ())


def make_eval_loss(config: GPT2Config) -> Callable[[Params, jax.Array], jax.Array]:
    """Jit-compiled mean loss of one batch ``[B, T+1]``."""

    def eval_loss(params: Params, ids: jax.Array) -> jax.Array:
        with jax.default_matmul_precision(FLOAT32):
            return loss(params, ids, config)

    return jax.jit(eval_loss)
