"""The kv cache: preallocated key/value buffers, passed into the model and returned by it.

Buffers never change shape, so a JIT compiles the decode step once, and NumPy/PyTorch/CuPy
write each step's keys and values in place instead of concatenating.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import array_namespace, is_jax_array

from .config import GPT2Config


class KVCache(NamedTuple):
    """Per-layer key and value buffers, each ``[B, H, S, D]`` (S = capacity in tokens)."""

    k: tuple[Any, ...]
    v: tuple[Any, ...]

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]


def init_cache(config: GPT2Config, batch: int, length: int, like: Any) -> KVCache:
    """Zeroed buffers for ``batch`` rows of up to ``length`` tokens, on ``like``'s backend/device."""
    if length > config.n_ctx:
        raise ValueError(f"cache length {length} exceeds the model's context of {config.n_ctx} tokens")
    xp = array_namespace(like)
    shape = (batch, config.n_head, length, config.head_dim)
    device = getattr(like, "device", None)
    kw = {"device": device} if device is not None and not is_jax_array(like) else {}
    # Keys and values are activations: float32, also when the weights are stored in 16 bits.
    zeros = [xp.zeros(shape, dtype=xp.float32, **kw) for _ in range(2 * config.n_layer)]
    return KVCache(k=tuple(zeros[: config.n_layer]), v=tuple(zeros[config.n_layer :]))


def write(buf: Any, new: Any, start: Any) -> tuple[Any, Any]:
    """Write ``new`` [B, H, T, D] into ``buf`` [B, H, S, D] at slot ``start``.

    ``start`` is one int for the whole batch, or an integer array [B] when rows sit at different
    slots (continuous batching). Returns ``(keys_to_attend, updated_buf)``. JAX arrays are
    immutable, so there the buffer is replaced functionally and attention runs over the whole
    (masked) buffer; elsewhere the write is in place and attention reads only the filled prefix.
    """
    T = new.shape[2]
    if is_jax_array(buf):
        import jax  # only reached when the caller already uses JAX

        if getattr(start, "ndim", 0) == 0:
            buf = jax.lax.dynamic_update_slice(buf, new, (0, 0, start, 0))
        else:
            row = lambda b, n, s: jax.lax.dynamic_update_slice(b, n, (0, s, 0))  # noqa: E731
            buf = jax.vmap(row)(buf, new, start)
        return buf, buf
    if isinstance(start, int):
        buf[:, :, start : start + T] = new
        return buf[:, :, : start + T], buf
    starts = [int(s) for s in start]
    for b, s in enumerate(starts):
        buf[b, :, s : s + T] = new[b]
    return buf[:, :, : max(starts) + T], buf
