"""The kv cache: preallocated key/value buffers, passed into the model and returned by it.

A buffer never changes shape while it is in use, so a JIT compiles the decode step once, and
NumPy/PyTorch/CuPy write each step's keys and values in place instead of concatenating. Making
room for more tokens (:func:`grow`) is a new, larger cache with the old one copied in.

How a buffer is updated is a capability the backend declares (``Backend.functional_updates``),
carried here by the cache's type: :class:`KVCache` writes in place, :class:`FunctionalKVCache`
(immutable arrays, JAX) returns updated buffers. Nothing here looks at an array's library.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import array_namespace

from .config import GPT2Config


class LayerKV(NamedTuple):
    """One layer's key and value buffers, ``[B, H, S, D]`` each, updated in place."""

    k: Any
    v: Any

    def write(self, k: Any, v: Any, start: Any) -> tuple[Any, Any, LayerKV]:
        """Store new keys/values [B, H, T, D] at slot ``start``; (keys, values) to attend, and the buffers.

        ``start`` is one int for the whole batch, or an integer array [B] when rows sit at
        different slots (continuous batching). Attention reads only the filled prefix [B, H, <=S, D].
        """
        T = k.shape[2]
        if isinstance(start, int):
            self.k[:, :, start : start + T] = k
            self.v[:, :, start : start + T] = v
            end = start + T
        else:
            starts = [int(s) for s in start]
            for b, s in enumerate(starts):
                self.k[b, :, s : s + T] = k[b]
                self.v[b, :, s : s + T] = v[b]
            end = max(starts) + T
        return self.k[:, :, :end], self.v[:, :, :end], self


class FunctionalLayerKV(LayerKV):
    """One layer's buffers on a backend whose arrays are immutable (JAX): writes return new buffers.

    Attention then runs over the whole (masked) buffer, which keeps every shape fixed for the JIT.
    """

    __slots__ = ()

    def write(self, k: Any, v: Any, start: Any) -> tuple[Any, Any, LayerKV]:
        import jax  # only a JAX backend declares functional updates

        if getattr(start, "ndim", 0) == 0:
            k_buf = jax.lax.dynamic_update_slice(self.k, k, (0, 0, start, 0))
            v_buf = jax.lax.dynamic_update_slice(self.v, v, (0, 0, start, 0))
        else:

            def row(buf: Any, new: Any, s: Any) -> Any:
                return jax.lax.dynamic_update_slice(buf, new, (0, s, 0))

            k_buf = jax.vmap(row)(self.k, k, start)
            v_buf = jax.vmap(row)(self.v, v, start)
        return k_buf, v_buf, FunctionalLayerKV(k_buf, v_buf)


class KVCache(NamedTuple):
    """Per-layer key and value buffers, each ``[B, H, S, D]`` float32 (S = capacity in tokens)."""

    k: tuple[Any, ...]
    v: tuple[Any, ...]

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    def layer(self, i: int) -> LayerKV:
        return LayerKV(self.k[i], self.v[i])

    def put(self, buf: Any, index: Any, value: Any) -> Any:
        """``buf[index] = value`` in place; returns ``buf``."""
        buf[index] = value
        return buf


class FunctionalKVCache(KVCache):
    """A :class:`KVCache` of immutable arrays (a backend with ``functional_updates``, i.e. JAX)."""

    __slots__ = ()

    def layer(self, i: int) -> LayerKV:
        return FunctionalLayerKV(self.k[i], self.v[i])

    def put(self, buf: Any, index: Any, value: Any) -> Any:
        """``buf`` with ``buf[index] = value``, as a new array."""
        return buf.at[index].set(value)


def init_cache(config: GPT2Config, batch: int, length: int, like: Any, functional: bool = False) -> KVCache:
    """Zeroed buffers for ``batch`` rows of up to ``length`` tokens, on ``like``'s backend/device.

    ``functional``: the backend's arrays are immutable (``Backend.functional_updates``).
    Raises ValueError when ``length`` exceeds the model's context.
    """
    if length > config.n_ctx:
        raise ValueError(f"cache length {length} exceeds the model's context of {config.n_ctx} tokens")
    xp = array_namespace(like)
    shape = (batch, config.n_head, length, config.head_dim)
    device = getattr(like, "device", None)
    kw = {"device": device} if device is not None else {}
    # Keys and values are activations: float32, also when the weights are stored in 16 bits.
    zeros = [xp.zeros(shape, dtype=xp.float32, **kw) for _ in range(2 * config.n_layer)]
    cls = FunctionalKVCache if functional else KVCache
    return cls(k=tuple(zeros[: config.n_layer]), v=tuple(zeros[config.n_layer :]))


def copy_rows(dst: KVCache, dst_index: Any, src: KVCache, src_index: Any) -> KVCache:
    """``dst[dst_index] = src[src_index]`` for every layer's keys and values (an index into [B, H, S, D])."""
    return type(dst)(
        tuple(dst.put(d, dst_index, s[src_index]) for d, s in zip(dst.k, src.k, strict=True)),
        tuple(dst.put(d, dst_index, s[src_index]) for d, s in zip(dst.v, src.v, strict=True)),
    )


def rows(cache: KVCache, n: int) -> KVCache:
    """The first ``n`` rows; on an in-place cache a view, so writes through it land in ``cache``."""
    return type(cache)(tuple(k[:n] for k in cache.k), tuple(v[:n] for v in cache.v))


def grow(cache: KVCache, config: GPT2Config, capacity: int, n_rows: int | None = None) -> KVCache:
    """A new cache of ``capacity`` slots with the first ``n_rows`` rows (default all) of ``cache`` copied in."""
    B, S = cache.k[0].shape[0], cache.capacity
    out = init_cache(config, B, capacity, cache.k[0], functional=isinstance(cache, FunctionalKVCache))
    n = B if n_rows is None else n_rows
    return copy_rows(out, (slice(0, n), slice(None), slice(0, S)), cache, (slice(0, n), slice(None), slice(0, S)))


def grown_capacity(current: int, need: int, n_ctx: int, step: int = 64) -> int:
    """The capacity to grow to for ``need`` slots: a multiple of ``step``, at least doubling, at most ``n_ctx``."""
    return min(n_ctx, max(-(-need // step) * step, 2 * current))


def padded_sizes(prompt_len: int, capacity: int, n_ctx: int, bucket: Any) -> tuple[int, int]:
    """(padded prompt width, cache capacity) for a prefill of ``prompt_len`` tokens needing ``capacity`` slots.

    A compiling backend declares ``bucket`` (a length -> the larger length to pad it to), so it
    compiles a handful of programs in all rather than one per request; more left padding, same
    tokens. With ``bucket=int`` (no compiling) both sizes are returned unchanged.
    """
    T = prompt_len
    width = max(T, min(bucket(T), n_ctx - (capacity - T)))
    capacity = max(capacity - T + width, min(bucket(capacity - T + width), n_ctx))
    return width, capacity
