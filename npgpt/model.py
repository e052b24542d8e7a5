"""The GPT-2 forward pass: small pure functions over a params pytree, in the paper's order.

Written against the Python array API, so the same code runs on NumPy, JAX, PyTorch and CuPy
arrays. Parameters are nested dicts named as in OpenAI's checkpoint (``wte``, ``wpe``,
``blocks[i].attn.c_attn.w``, ``ln_f.g``), so ``linear(x, **c_fc)`` reads like the paper and
``jax.grad`` works on the dict with no wrapper.

Shapes: B batch, T new tokens, S attended tokens (cache + new), H heads, D head dim,
C n_embd, F MLP width (4*C in GPT-2), V n_vocab.

The ``config`` (:class:`~npgpt.config.GPT2Config`) picks what GPT-2's relatives change: the
activation, the layer norms' epsilon, the attention scale, an untied output head, no biases.

An optional ``hook(name, x)`` sees, and may replace, each named activation (TransformerLens's names
and shapes, e.g. ``blocks.3.attn.hook_pattern``; see ``hooks.py``). Without one, a point is a call returning x.

Only Python floats appear as constants: under NumPy 2 a NumPy float64 scalar (``np.sqrt(...)``)
would silently promote every float32 activation to float64. Activations are float32 throughout;
the weight matrices may be stored in 16 bits (``load(dtype="float16")``), and only the matrix
products then run in that dtype, or in 8 bits (``load(dtype="int8")``), where ``x @ w`` is the
library's int8 kernel (see :func:`matmul`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from array_api_compat import array_namespace, device

from .activations import OTHERS, TANH_GELU
from .cache import KVCache, LayerKV
from .config import GPT2Config

Array = Any
Params = dict[str, Any]
Hook = Callable[[str, Any], Any] | None

MASKED = -1e9  # added to scores of positions a query may not see; exp() of it is exactly 0
QUERY_BLOCK = 128  # longer inputs attend in blocks of this many queries (see attention)


def tap(hook: Hook, name: str, x: Array) -> Array:  # the named point ``name``: x, or the hook's replacement
    return x if hook is None else hook(name, x)


def scoped(hook: Callable[[str, Any], Any], prefix: str) -> Hook:  # the hook as a sub-layer sees it
    return lambda name, x: hook(prefix + name, x)  # called as `hook and scoped(...)`: no hook, no call


GELU_C = math.sqrt(2.0 / math.pi)


def gelu(x: Array) -> Array:  # [...] -> [...]
    xp = array_namespace(x)
    # GPT-2 uses the tanh approximation, not the exact erf form (Hendrycks & Gimpel 2016):
    #   0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    # written with the constants folded, x (0.5 + 0.5 tanh(x (c + 0.044715 c x^2))): the same
    # value within 5e-7 (1 ulp for x >= 0; for x < -2, where 1 + tanh cancels, both forms keep only
    # a few bits of the tiny result, as far from the exact value, differently rounded) in 8
    # elementwise passes instead of 10 (NumPy runs each as a pass over memory: ~20 % less GELU
    # time in a prefill). x * x, not x**2: NumPy's float32 power is slow.
    return x * (0.5 + 0.5 * xp.tanh(x * (GELU_C + (GELU_C * 0.044715) * (x * x))))


# Activations by transformers' activation_function name: GPT-2's gelu, or another (activations.py).
ACTIVATIONS = {**dict.fromkeys(TANH_GELU, gelu), **OTHERS}


def softmax(x: Array) -> Array:  # [..., N] -> [..., N]
    xp = array_namespace(x)
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))  # subtracting the max keeps exp finite
    return e * (1.0 / xp.sum(e, axis=-1, keepdims=True))  # one division per row, then a multiply per entry


def layer_norm(x: Array, g: Array, b: Array | None = None, eps: float = 1e-5,
               hook: Hook = None) -> Array:  # [..., C] -> [..., C]
    xp = array_namespace(x)
    centered = x - xp.mean(x, axis=-1, keepdims=True)
    var = xp.mean(centered * centered, axis=-1, keepdims=True)  # what xp.var computes, minus a pass
    scale = tap(hook, "hook_scale", xp.sqrt(var + eps))  # -> [..., 1]
    y = g * tap(hook, "hook_normalized", centered / scale)
    return y if b is None else y + b  # no b: nanoGPT's bias=False models


def matmul(x: Array, w: Array) -> Array:  # [..., m] @ [m, n] -> [..., n]
    # One 2-D product over all rows: NumPy runs [B, T, m] @ [m, n] as B separate BLAS calls,
    # each reading all of w from memory again (B times the traffic when decoding a batch).
    xp = array_namespace(x)
    x2 = xp.reshape(x, (-1, x.shape[-1]))  # [..., m] -> [rows, m]
    if w.dtype == x.dtype or w.dtype == xp.int8:  # int8 weights carry the library's kernel (npgpt/int8.py)
        y = x2 @ w  # -> [rows, n] float32
    else:  # 16-bit weights (load(dtype=...)): the library's 16-bit kernel, accumulating in float32
        y = xp.astype(xp.astype(x2, w.dtype) @ w, x.dtype)  # -> [rows, n], back in float32
    return xp.reshape(y, (*x.shape[:-1], w.shape[-1]))  # -> [..., n]


def linear(x: Array, w: Array, b: Array | None = None) -> Array:  # [..., m] @ [m, n] + [n] -> [..., n]
    y = matmul(x, w)
    return y if b is None else y + b  # no b: nanoGPT's bias=False models


def ffn(x: Array, c_fc: Params, c_proj: Params, act: Any = gelu, hook: Hook = None) -> Array:  # [B, T, C] -> [B, T, C]
    h = tap(hook, "hook_post", act(tap(hook, "hook_pre", linear(x, **c_fc))))  # [B, T, C] -> [B, T, F]
    return linear(h, **c_proj)  # [B, T, F] -> [B, T, C]


def attention_scale(config: GPT2Config, layer_idx: int) -> float:
    """What q is multiplied by: 1/sqrt(D) (Vaswani et al. 2017), as transformers' GPT-2 computes it.

    ``scale_attn_weights=False`` drops it; ``scale_attn_by_inverse_layer_idx`` also divides by
    ``layer_idx + 1`` (Stanford CRFM's Mistral, for stable mixed-precision training).
    """
    scale = 1.0 / math.sqrt(config.head_dim) if config.scale_attn_weights else 1.0
    return scale / (layer_idx + 1) if config.scale_attn_by_inverse_layer_idx else scale


def attention(q: Array, k: Array, v: Array, mask: Array, scale: float, hook: Hook = None) -> Array:
    # [B, H, T, D], [B, H, S, D], [B, H, S, D], [B, 1, T, S] -> [B, H, T, D]
    xp = array_namespace(q)
    T, S = q.shape[2], k.shape[2]
    if T > QUERY_BLOCK and hook is None:  # a hook sees the whole [B, H, T, S] pattern
        # Attention is causal: new token t sits at key slot S - T + t at the latest and sees no
        # later slot. So a block of queries needs only the keys up to its last query; this skips
        # the masked half of a long prompt's scores (a 512-token prefill runs ~10 % faster).
        blocks = []
        for i in range(0, T, QUERY_BLOCK):
            j = min(i + QUERY_BLOCK, T)
            end = S - T + j
            blocks.append(attention(q[:, :, i:j], k[:, :, :end], v[:, :, :end], mask[:, :, i:j, :end], scale))
        return xp.concat(blocks, axis=2)  # -> [B, H, T, D]
    q = q * scale  # scaling q [.., T, D] is cheaper than scaling the scores [.., T, S]
    scores = q @ xp.matrix_transpose(k)  # -> [B, H, T, S]
    pattern = softmax(tap(hook, "hook_attn_scores", scores + mask))  # masked scores are MASKED, not -inf
    return tap(hook, "hook_pattern", pattern) @ v  # [B, H, T, S] @ [B, H, S, D] -> [B, H, T, D]


def mha(
    x: Array, c_attn: Params, c_proj: Params, n_head: int, mask: Array, kv: LayerKV | None, start: Any,
    scale: float, last_only: bool = False, hook: Hook = None,
) -> tuple[Array, LayerKV | None]:  # [B, T, C] -> [B, T, C] ([B, 1, C] with last_only)
    xp = array_namespace(x)
    B, T, C = x.shape
    qkv = linear(x, **c_attn)  # [B, T, C] -> [B, T, 3*C]
    qkv = xp.reshape(qkv, (B, T, 3, n_head, C // n_head))  # -> [B, T, 3, H, D]
    if hook is not None:  # hook_q, hook_k, hook_v: 3 x [B, T, H, D]
        qkv = xp.stack([hook(f"hook_{n}", qkv[:, :, j]) for j, n in enumerate("qkv")], axis=2)
    qkv = xp.permute_dims(qkv, (2, 0, 3, 1, 4))  # -> [3, B, H, T, D]
    q, k, v = qkv[0], qkv[1], qkv[2]  # -> 3 x [B, H, T, D]
    if kv is not None:  # keep this step's keys/values; attend over everything cached so far
        k, v, kv = kv.write(k, v, start)  # -> [B, H, S, D] each
    if last_only:  # every token's keys and values, but only the last token's query
        q, mask, T = q[:, :, -1:], mask[:, :, -1:], 1  # -> [B, H, 1, D], [B, 1, 1, S]
    out = attention(q, k, v, mask[..., : k.shape[2]], scale, hook)  # -> [B, H, T, D]
    out = xp.reshape(tap(hook, "hook_z", xp.permute_dims(out, (0, 2, 1, 3))), (B, T, C))  # -> [B, T, H, D] -> [B, T, C]
    return linear(out, **c_proj), kv  # [B, T, C] -> [B, T, C]


def block(
    x: Array, ln_1: Params, attn: Params, ln_2: Params, mlp: Params,
    config: GPT2Config, layer_idx: int, mask: Array, kv: LayerKV | None, start: Any, last_only: bool = False,
    hook: Hook = None,
) -> tuple[Array, LayerKV | None]:  # [B, T, C] -> [B, T, C] ([B, 1, C] with last_only)
    eps = config.layer_norm_epsilon
    x = tap(hook, "hook_resid_pre", x)
    a, kv = mha(layer_norm(x, **ln_1, eps=eps, hook=hook and scoped(hook, "ln1.")), **attn, n_head=config.n_head,
                mask=mask, kv=kv, start=start, scale=attention_scale(config, layer_idx), last_only=last_only,
                hook=hook and scoped(hook, "attn."))
    if last_only:
        x = x[:, -1:, :]  # [B, T, C] -> [B, 1, C]
    x = tap(hook, "hook_resid_mid", x + tap(hook, "hook_attn_out", a))  # pre-norm: sub-layer inputs are normalised
    m = ffn(layer_norm(x, **ln_2, eps=eps, hook=hook and scoped(hook, "ln2.")), **mlp,
            act=ACTIVATIONS[config.activation_function], hook=hook and scoped(hook, "mlp."))
    return tap(hook, "hook_resid_post", x + tap(hook, "hook_mlp_out", m)), kv


def attention_mask(valid: Array, start: Any, n_new: int) -> Array:
    """Additive attention mask ``[B, 1, T, S]``: 0 where a query may look, ``MASKED`` elsewhere.

    ``valid`` [B, S] marks the key slots that hold real tokens (False for left padding). The T new
    tokens of row b sit at slots ``start[b] .. start[b]+T-1`` (``start``: an int or [B] ints);
    each sees the valid slots up to its own (causal).
    """
    xp, on = array_namespace(valid), device(valid)  # new arrays go where the inputs are (e.g. a GPU)
    B, S = valid.shape
    start = xp.reshape(xp.asarray(start, device=on), (-1, 1))  # -> [B or 1, 1]
    slots = xp.arange(S, device=on)  # [S]
    queries = xp.arange(n_new, device=on) + start  # -> [B or 1, T]
    causal = slots[None, None, :] <= queries[:, :, None]  # -> [B or 1, T, S]
    allowed = causal[:, None, :, :] & valid[:, None, None, :]  # -> [B, 1, T, S]
    return (1.0 - xp.astype(allowed, xp.float32)) * MASKED


def gpt2(
    ids: Array,
    params: Params,
    config: GPT2Config,
    positions: Array | None = None,
    mask: Array | None = None,
    cache: KVCache | None = None,
    start: Any = 0,
    last_only: bool = False,
    hook: Hook = None,
) -> tuple[Array, KVCache | None]:  # [B, T] -> [B, T, V]
    """Logits for ``ids`` under ``config``; with a ``cache``, the new tokens are written at slot ``start``.

    ``positions`` [B, T] are position ids (default ``start + arange(T)``); ``mask`` [B, 1, T, S]
    is the additive mask from :func:`attention_mask` (default: causal, nothing padded). ``last_only``
    computes logits for the last position only, which is all generation needs after a prefill.
    """
    xp = array_namespace(params["wte"])
    wte, wpe = params["wte"], params["wpe"]
    on = device(wpe)  # the arrays made here go where the weights are (e.g. a GPU)
    B, T = ids.shape
    if positions is None:
        starts = xp.reshape(xp.asarray(start, device=on), (-1, 1))  # -> [B or 1, 1]
        positions = xp.broadcast_to(xp.arange(T, device=on)[None, :] + starts, (B, T))  # -> [B, T]
    if mask is None:
        S = cache.capacity if cache is not None else T
        mask = attention_mask(xp.ones((B, S), dtype=xp.bool, device=on), start, T)

    # Indexing, not xp.take: NumPy's take first copies a non-C-contiguous table whole, and the
    # NumPy backend keeps wte as a transposed view of [C, V] for the output head (backends.py).
    x = xp.astype(wte[xp.reshape(ids, (-1,)), :], wpe.dtype, copy=False)  # [B, T] -> [B*T, C] float32
    x = tap(hook, "hook_embed", xp.reshape(x, (B, T, wte.shape[1])))  # -> [B, T, C]
    pos = xp.reshape(xp.take(wpe, xp.reshape(positions, (-1,)), axis=0), (B, T, -1))  # -> [B, T, C]
    x = x + tap(hook, "hook_pos_embed", pos)

    new_k, new_v = [], []
    n_layer = len(params["blocks"])
    for i, layer in enumerate(params["blocks"]):
        kv = cache.layer(i) if cache is not None else None
        # With last_only, the last block needs every token's keys and values, but the rest of
        # its work only for the last token (a prompt's prefill skips ~6 % of its compute).
        last = last_only and i == n_layer - 1
        x, kv = block(x, **layer, config=config, layer_idx=i, mask=mask, kv=kv, start=start, last_only=last,
                      hook=hook and scoped(hook, f"blocks.{i}."))  # -> [B, T, C]
        if kv is not None:
            new_k.append(kv.k)
            new_v.append(kv.v)

    x = layer_norm(x, **params["ln_f"], eps=config.layer_norm_epsilon,
                   hook=hook and scoped(hook, "ln_final."))  # [B, T or 1, C]
    head = params.get("lm_head", wte)  # GPT-2 ties the head to the embedding; untied models have lm_head [V, C]
    logits = matmul(x, xp.matrix_transpose(head))  # -> [B, T, V]
    return logits, (type(cache)(tuple(new_k), tuple(new_v)) if cache is not None else None)
