"""The measurements, each run inside one worker process: decoding speed, the no-cache baseline,
training steps and the accuracy of 16-bit weights. Timings use ``time.perf_counter``."""

from __future__ import annotations

import time
from typing import Any

from .engines import NpgptEngine
from .settings import BenchSettings
from .system import peak_rss_mb


def bytes_per_token(config: Any) -> int:
    """Bytes of float32 weights one decode step reads: every tensor but ``wpe``, of which one row."""
    return 4 * (config.n_params - config.n_ctx * config.n_embd + config.n_embd)


def measure_engine(engine: Any, s: BenchSettings) -> dict[str, Any]:
    """TTFT, decode tokens/s per batch size, prefill tokens/s and memory of one engine (in its process)."""
    import numpy as np

    rng = np.random.default_rng(s.seed)
    out: dict[str, Any] = {"rss_load_mb": peak_rss_mb(), "device": engine.device}

    short = rng.integers(0, engine.n_vocab, (1, s.short_prompt))
    engine.prefill(short, s.short_prompt + s.new_tokens)  # warm-up (JAX compiles here)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        engine.prefill(short, s.short_prompt + s.new_tokens)
        times.append(time.perf_counter() - t)
    out["ttft_ms"] = 1e3 * float(np.median(times))

    out["decode_tps"] = {}
    for B in sorted(s.batches):
        ids = rng.integers(0, engine.n_vocab, (B, s.short_prompt))
        out["decode_tps"][str(B)] = B * s.new_tokens / _decode_seconds(engine, ids, s.new_tokens)
        if B == 1:
            out["rss_decode_mb"] = peak_rss_mb()
    out.setdefault("rss_decode_mb", peak_rss_mb())

    long = rng.integers(0, engine.n_vocab, (1, s.prompt_len))
    best = float("inf")
    for _ in range(3):  # the first is a warm-up (JAX compiles for this length), hence best of all
        t = time.perf_counter()
        engine.prefill(long, s.prompt_len + 1)
        best = min(best, time.perf_counter() - t)
    out["prefill_tps"] = s.prompt_len / best
    out["rss_peak_mb"] = peak_rss_mb()
    return out


def _decode_seconds(engine: Any, ids: Any, n: int) -> float:
    """Seconds for ``n`` greedy decode steps after prefilling ``ids`` (one untimed warm-up run first)."""
    capacity = ids.shape[1] + n + 1
    for steps in (min(n, 4), n):
        tokens, state = engine.prefill(ids, capacity)
        t = time.perf_counter()
        for _ in range(steps):
            tokens, state = engine.step(state, tokens)
        elapsed = time.perf_counter() - t
    return elapsed


def measure_nocache(path: str, backend: str, prompt: int, n: int, seed: int = 0) -> dict[str, Any]:
    """Seconds to generate ``n`` greedy tokens with the kv cache and without it.

    Without it is picoGPT's loop: the whole sequence through ``model.gpt2`` at every step, logits
    for every position, the last one's argmax appended."""
    import numpy as np

    engine = NpgptEngine(path, backend)
    ids = np.random.default_rng(seed).integers(0, engine.n_vocab, (1, prompt))
    tokens, state = engine.prefill(ids, prompt + 2)  # warm-up
    engine.step(state, tokens)

    t = time.perf_counter()
    tokens, state = engine.prefill(ids, prompt + n)
    for _ in range(n - 1):
        tokens, state = engine.step(state, tokens)
    cached = time.perf_counter() - t

    seq = ids
    t = time.perf_counter()
    for _ in range(n):
        seq = np.concatenate([seq, engine.full_logits(seq)[:, -1].argmax(-1)[:, None]], axis=1)
    uncached = time.perf_counter() - t
    return {"tokens": n, "cached_s": cached, "nocache_s": uncached, "speedup": uncached / cached}


def measure_train_npgpt(path: str, s: BenchSettings) -> dict[str, Any]:
    """Tokens/s of npgpt's jitted JAX ``train_step`` (AdamW) on ``[train_batch, train_seq]`` windows."""
    try:
        import jax
        import jax.numpy as jnp

        from ..train.step import make_train_step, optimizer
    except ImportError as e:
        return {"error": f"npgpt.train.step unavailable ({e}); install npgpt[train]"}
    import numpy as np

    from ..formats import load_checkpoint

    config, params = load_checkpoint(path)
    opt = optimizer(lr=3e-4, steps=1000, warmup=10)
    train_step = make_train_step(opt, config=config)
    params = jax.tree.map(jnp.asarray, params)
    opt_state = opt.init(params)
    rng = np.random.default_rng(s.seed)
    batch = jnp.asarray(rng.integers(0, config.n_vocab, (1, s.train_batch, s.train_seq + 1)), jnp.int32)
    t = time.perf_counter()
    params, opt_state, metrics = train_step(params, opt_state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(s.train_steps):
        params, opt_state, metrics = train_step(params, opt_state, batch)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - t) / s.train_steps
    return {
        "tokens_per_s": s.train_batch * s.train_seq / step_s,
        "step_s": step_s,
        "compile_s": compile_s,
        "rss_peak_mb": peak_rss_mb(),
    }


def measure_train_hf(hf_path: str, s: BenchSettings) -> dict[str, Any]:
    """Tokens/s of the same step in PyTorch: HF loss, backward, clip to 1.0, ``torch.optim.AdamW``."""
    import numpy as np
    import torch
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(s.threads)
    model = GPT2LMHeadModel.from_pretrained(hf_path, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    rng = np.random.default_rng(s.seed)
    ids = torch.from_numpy(rng.integers(0, model.config.vocab_size, (s.train_batch, s.train_seq)))

    def step() -> None:
        loss = model(ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    t = time.perf_counter()
    for _ in range(s.train_steps):
        step()
    step_s = (time.perf_counter() - t) / s.train_steps
    return {"tokens_per_s": s.train_batch * s.train_seq / step_s, "step_s": step_s, "rss_peak_mb": peak_rss_mb()}


def measure_precision(path: str, backend: str = "torch") -> dict[str, Any]:
    """float16, bfloat16 and int8 weights on ``backend`` against float32, and int8 on NumPy (Q8_0 blocks through
    ONNX Runtime): logits on ``path``, held-out text (npgpt/precision.py). A backend whose library is missing
    gives ``{"error": ...}`` in its place."""
    from ..errors import NpgptError
    from ..precision import measure

    out = measure(path, backend)
    try:
        out["numpy"] = measure(path, "numpy", ("int8",))
    except NpgptError as e:
        out["numpy"] = {"error": str(e)}
    return out
