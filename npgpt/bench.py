"""Benchmarks: how fast npgpt runs GPT-2 on this machine, next to Hugging Face + PyTorch.

Every engine (an npgpt backend, Hugging Face ``GPT2LMHeadModel``, npgpt without its kv cache)
runs in a subprocess of its own, ``python -m npgpt.bench --worker SPEC``, which prints one JSON
line. That way start-up is measured from a fresh interpreter and peak memory belongs to one
engine, not to whichever ran before it. Each engine gets the same weights
(written once to a temporary directory) and the same random prompts. npgpt's first backend
runs right before Hugging Face, so the two figures compared most are taken close in time; with
``repeat`` > 1 every engine runs that many times, interleaved, and keeps its best figures (on a
shared machine other work only ever slows a run down). ``other_cpu`` is the share of all cores that
other processes used meanwhile (Linux): how much to trust a figure.

What is measured, per engine:

- ``ttft_ms``: time to first token of a short prompt (median of 5, after a warm-up);
- ``decode_tps``: tokens/s decoding ``new_tokens`` greedy tokens per row after a short prompt,
  for each batch size;
- ``prefill_tps``: tokens/s encoding one long prompt;
- ``startup_s``: ``import`` + load, in the fresh process;
- ``rss_decode_mb`` (peak after loading and decoding at batch 1) and ``rss_peak_mb`` (at the end).

Decoding one token reads every weight once, so its speed is bounded by memory bandwidth:
``bandwidth / bytes_per_token`` tokens/s at batch 1. The bench measures this machine's read rate
with a NumPy matrix-vector product over 1 GiB and reports decode speed as a fraction of it.

``--compare llama.cpp --llama-cpp DIR`` adds llama.cpp, built by the user in ``DIR``, on the same
weights: the Hugging Face checkpoint is converted with llama.cpp's ``convert_hf_to_gguf.py`` to f32,
f16 and q8_0, and each GGUF is timed once, after the other engines, by llama.cpp's own ``llama-bench``
(prefill, batch-1 decode) and ``llama-batched-bench`` (larger batches); see :mod:`npgpt.bench_llamacpp`.
Those engines have no time to first token, start-up or memory figures; each npgpt engine gets a
``vs_llama.cpp-<type>`` ratio entry next to ``vs_hf``, and the bandwidth fraction of a llama.cpp engine
counts the bytes of its own weight type.

Only :func:`bench_command` prints; :func:`run_bench` returns one dict (what ``--json`` emits).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from .errors import NpgptError

ENGINES = ("numpy", "jax", "torch", "cupy", "cupynumeric")  # npgpt's backends (backends.BACKENDS)
GPU_ONLY = ("cupy", "cupynumeric")
HF = "hf-torch"


@dataclass(frozen=True)
class BenchSettings:
    """What to run. The defaults are the run in docs/benchmarks.md (GPT-2 124M's shape)."""

    model: str | None = None  # preset name or checkpoint path; None: 124M (random) / the default model
    random: bool = False  # random weights of the model's shape: offline, any preset size
    backends: tuple[str, ...] = ("numpy", "jax", "torch")
    dtypes: tuple[str, ...] = ("float32",)  # weight storage per backend; 16-bit where the backend has it
    batches: tuple[int, ...] = (1, 8, 32)
    prompt_len: int = 512  # prefill
    short_prompt: int = 16  # time to first token, and the prompt decoding starts from
    new_tokens: int = 128
    compare: tuple[str, ...] = ()  # "hf": Hugging Face transformers + PyTorch too; "llama.cpp": llama.cpp too
    llama_cpp: str | None = None  # a llama.cpp checkout built with cmake, for compare "llama.cpp"
    baseline_tokens: int = 256  # npgpt without a kv cache (0 = skip)
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    bandwidth_mib: int = 1024  # matrix size for the bandwidth measurement
    train: bool = False
    train_batch: int = 4
    train_seq: int = 128
    train_steps: int = 3
    precision: bool = False  # accuracy of float16 / bfloat16 / int8 weight storage (on torch)
    repeat: int = 1  # rounds of every engine, interleaved; each engine keeps its best (noisy machines)
    seed: int = 0


# -- what the numbers are measured against ----------------------------------------------------------
def bytes_per_token(config: Any) -> int:
    """Bytes of float32 weights one decode step reads: every tensor but ``wpe``, of which one row."""
    return 4 * (config.n_params - config.n_ctx * config.n_embd + config.n_embd)


def weight_bytes(params: dict[str, Any]) -> int:
    """Bytes the loaded weights take on their backend (a 16-bit matrix: 2 per number)."""
    from .formats.names import flatten

    return sum(int(a.nbytes) for a in flatten(params).values())


def memory_bandwidth(mib: int = 1024, repeats: int = 3) -> float:
    """Read rate of this machine in bytes/s: float32 matrix-vector products over ``mib`` MiB.

    The best pass over eight matrices, each read once per pass, in the layout the model's own
    weights use (``x @ w``) and transposed (``x @ w.T``); the faster one counts.
    """
    import numpy as np

    rows = max(8, mib * 2**20 // (8 * 4 * 4096))
    mats = [np.full((rows, 4096), 0.5 + i, np.float32) for i in range(8)]  # values do not matter, pages do
    x_in, x_out = np.ones((1, rows), np.float32), np.ones((1, 4096), np.float32)
    total = sum(m.nbytes for m in mats)
    best = float("inf")
    for _ in range(repeats):
        for product in (lambda m: x_in @ m, lambda m: x_out @ m.T):
            t = time.perf_counter()
            for m in mats:
                product(m)
            best = min(best, time.perf_counter() - t)
    return total / best


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (10**6 bytes).

    On Linux this is ``VmHWM``, the high-water mark of this program's own memory. ``ru_maxrss``
    would not do for a worker: Linux carries the parent's peak over into it at exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6  # kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6  # bytes on macOS, KiB elsewhere


# -- engines: one interface over npgpt and Hugging Face ----------------------------------------------
class NpgptEngine:
    """npgpt's own generation path: ``prefill`` into a preallocated cache, then ``decode_step``."""

    def __init__(self, path: str, backend: str, dtype: str = "float32") -> None:
        from .api import load

        self.model = load(path, backend=backend, dtype=dtype)
        self.n_vocab = self.model.config.n_vocab

    def prefill(self, ids: Any, capacity: int) -> tuple[Any, Any]:  # ids [B, T] -> next tokens [B], state
        from .generate import prefill

        logits, batch = prefill(self.model, ids.tolist(), capacity)
        return logits.argmax(-1), batch

    def step(self, state: Any, tokens: Any) -> tuple[Any, Any]:  # [B] -> [B]
        from .generate import decode_step

        return decode_step(self.model, state, tokens).argmax(-1), state


class HFEngine:
    """Hugging Face ``GPT2LMHeadModel`` with its kv cache: the same loop, in PyTorch."""

    def __init__(self, path: str, threads: int) -> None:
        import inspect

        import torch
        from transformers import GPT2LMHeadModel

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = GPT2LMHeadModel.from_pretrained(path).eval()
        self.n_vocab = self.model.config.vocab_size
        # transformers 5 calls the cache argument ``cache``; 4.x called it ``past_key_values``.
        self.cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _run(self, ids: Any, cache: Any) -> tuple[Any, Any]:
        kw = {self.cache_arg: cache} if cache is not None else {}
        with self.torch.inference_mode():
            out = self.model(self.torch.from_numpy(ids), use_cache=True, logits_to_keep=1, **kw)
        return out.logits[:, -1].argmax(-1).numpy(), out[self.cache_arg]

    def prefill(self, ids: Any, capacity: int) -> tuple[Any, Any]:
        return self._run(ids, None)

    def step(self, state: Any, tokens: Any) -> tuple[Any, Any]:
        return self._run(tokens[:, None], state)


def measure_engine(engine: Any, s: BenchSettings) -> dict[str, Any]:
    """TTFT, decode tokens/s per batch size, prefill tokens/s and memory of one engine (in its process)."""
    import numpy as np

    rng = np.random.default_rng(s.seed)
    out: dict[str, Any] = {"rss_load_mb": peak_rss_mb()}

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
    model, be = engine.model, engine.model.backend
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
        logits, _ = be.forward(be.asarray(seq), model.params, n_head=model.config.n_head)
        seq = np.concatenate([seq, be.to_numpy(logits)[:, -1].argmax(-1)[:, None]], axis=1)
    uncached = time.perf_counter() - t
    return {"tokens": n, "cached_s": cached, "nocache_s": uncached, "speedup": uncached / cached}


# -- training (opt-in) ------------------------------------------------------------------------------
def measure_train_npgpt(path: str, s: BenchSettings) -> dict[str, Any]:
    """Tokens/s of npgpt's jitted JAX ``train_step`` (AdamW) on ``[train_batch, train_seq]`` windows."""
    import importlib

    try:
        step_mod = importlib.import_module("npgpt.train.step")
        import jax
        import jax.numpy as jnp
    except ImportError as e:
        return {"error": f"npgpt.train.step unavailable ({e}); install npgpt[train]"}
    if not (hasattr(step_mod, "make_train_step") and hasattr(step_mod, "optimizer")):
        return {"error": "npgpt.train.step has no make_train_step/optimizer"}
    import numpy as np

    from .formats import load_checkpoint

    config, params = load_checkpoint(path)
    opt = step_mod.optimizer(lr=3e-4, steps=1000, warmup=10)
    train_step = step_mod.make_train_step(opt, n_head=config.n_head)
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
    return {"tokens_per_s": s.train_batch * s.train_seq / step_s, "step_s": step_s, "compile_s": compile_s,
            "rss_peak_mb": peak_rss_mb()}


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


# -- narrow weights: accuracy (opt-in) -----------------------------------------------------------------
def measure_precision(path: str, backend: str = "torch") -> dict[str, Any]:
    """float16, bfloat16 and int8 weights against float32: logits on ``path``, held-out text (npgpt/precision.py)."""
    from .precision import measure

    return measure(path, backend)


# -- the worker: one engine in a fresh process ---------------------------------------------------------
def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement named by ``spec["job"]``; what ``python -m npgpt.bench --worker`` prints."""
    s = BenchSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["settings"].items()})
    job = spec["job"]
    if job == "bandwidth":
        return {"bytes_per_s": memory_bandwidth(s.bandwidth_mib), "rss_peak_mb": peak_rss_mb()}
    if job == "npgpt":
        t = time.perf_counter()
        engine: Any = NpgptEngine(spec["path"], spec["backend"], spec.get("dtype", "float32"))
        startup = time.perf_counter() - t
        return {"startup_s": startup, "model_bytes": weight_bytes(engine.model.params), **measure_engine(engine, s)}
    if job == "hf":
        t = time.perf_counter()
        engine = HFEngine(spec["path"], s.threads)
        return {"startup_s": time.perf_counter() - t, **measure_engine(engine, s)}
    if job == "nocache":
        return measure_nocache(spec["path"], "numpy", s.short_prompt, s.baseline_tokens, s.seed)
    if job == "train-npgpt":
        return measure_train_npgpt(spec["path"], s)
    if job == "train-hf":
        return measure_train_hf(spec["path"], s)
    if job == "precision":
        return measure_precision(spec["path"])
    raise ValueError(f"unknown bench job {job!r}")


def spawn(job: str, settings: BenchSettings, **spec: Any) -> dict[str, Any]:
    """Run ``worker`` in a fresh interpreter; its JSON result, or ``{"error": ...}`` if it failed."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(settings.threads)
    arg = json.dumps({"job": job, "settings": asdict(settings), **spec})
    other_cpu = other_cpu_meter()
    proc = subprocess.run([sys.executable, "-m", "npgpt.bench", "--worker", arg],
                          capture_output=True, text=True, env=env, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"{job} worker failed ({proc.returncode}): {tail}"}
    result = json.loads(lines[-1])
    share = other_cpu()
    if share is not None:
        result["other_cpu"] = share
    return result


def other_cpu_meter() -> Callable[[], float | None]:
    """Start measuring; the returned function gives the share of all cores that processes other than
    this one and its children used since (it skews timings), or None where ``/proc/stat`` is missing."""
    busy, children, t = _cpu_busy_s(), _children_cpu_s(), time.perf_counter()

    def share() -> float | None:
        now = _cpu_busy_s()
        if busy is None or now is None:
            return None
        others = (now - busy) - (_children_cpu_s() - children)
        return max(0.0, others / ((time.perf_counter() - t) * (os.cpu_count() or 1)))

    return share


def _cpu_busy_s() -> float | None:
    """CPU seconds all processes have run since boot (Linux ``/proc/stat``), or None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def import_seconds() -> dict[str, Any]:
    """Seconds to ``import npgpt`` in a fresh interpreter, and to reach ``npgpt.load`` (numpy, the API)."""
    code = ("import time; t = time.perf_counter(); import npgpt; a = time.perf_counter() - t; npgpt.load; "
            "print(a, time.perf_counter() - t)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    try:
        plain, api = map(float, proc.stdout.split())
    except ValueError:
        return {"error": f"import npgpt failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"}
    return {"import_s": plain, "import_api_s": api}


# -- the whole bench ------------------------------------------------------------------------------------
def installed(backend: str) -> bool:
    import importlib.util

    if backend == "numpy":
        return True
    if importlib.util.find_spec(backend) is None:
        return False
    if backend in GPU_ONLY:  # installed is not enough: they need a GPU and its driver
        from .backends import get_backend

        try:
            get_backend(backend)
        except NpgptError:
            return False
    return True


def run_bench(s: BenchSettings, progress: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Every measurement ``s`` asks for, as one JSON-ready dict (see the module docstring)."""
    unknown = [b for b in s.backends if b not in ENGINES]
    if unknown:
        raise NpgptError(f"unknown backend {unknown[0]!r}; choose from {', '.join(ENGINES)}")
    from .backends import DTYPES, WEIGHT_DTYPES

    if not s.dtypes or set(s.dtypes) - set(WEIGHT_DTYPES):
        raise NpgptError(f"--dtype takes a comma list of {', '.join(WEIGHT_DTYPES)}, got {','.join(s.dtypes)!r}")
    # every backend in each dtype it has (numpy has no 16-bit products; --dtype float16 alone is an error)
    pairs = [(b, d) for b in s.backends for d in s.dtypes if d in DTYPES[b]]
    missing = [d for d in s.dtypes if not any(pd == d for _, pd in pairs)]
    if missing:
        raise NpgptError(f"no backend in --backend {','.join(s.backends)} stores {missing[0]} weights; add one "
                         f"that does: {', '.join(b for b in DTYPES if missing[0] in DTYPES[b])}")
    if set(s.compare) - {"hf", "llama.cpp"}:
        raise NpgptError(f"--compare takes a comma list of 'hf' and 'llama.cpp', got {','.join(s.compare)!r}")
    if "llama.cpp" in s.compare:
        if not s.llama_cpp:
            raise NpgptError("--compare llama.cpp needs --llama-cpp DIR (or NPGPT_LLAMA_CPP): a llama.cpp build")
        from .bench_llamacpp import find_tools

        find_tools(s.llama_cpp)  # a missing tool is reported now, not after the other engines' minutes
    if not s.batches or min(s.batches) < 1 or min(s.new_tokens, s.short_prompt, s.repeat) < 1 or s.prompt_len < 16:
        raise NpgptError("batch sizes, --new-tokens, --short-prompt and --repeat must be >= 1, --prompt-len >= 16")
    with tempfile.TemporaryDirectory(prefix="npgpt-bench-") as tmp:
        progress("preparing the weights")
        config, path, hf_path, source = _checkpoints(s, Path(tmp))
        if max(s.prompt_len, s.short_prompt + s.new_tokens, s.short_prompt + s.baseline_tokens) >= config.n_ctx:
            raise NpgptError(f"prompts plus new tokens must fit the context of {config.n_ctx} tokens; "
                             "lower --prompt-len, --new-tokens or --baseline-tokens")
        result: dict[str, Any] = {
            "machine": _machine(s),
            "model": {"source": source, "random": s.random, **config.to_dict(), "n_params": config.n_params,
                      "weight_mb": 4 * config.n_params / 1e6, "bytes_per_token": bytes_per_token(config)},
            "settings": asdict(s),
        }
        runs: dict[str, list[dict[str, Any]]] = {}  # engine -> its result in each round
        npgpt = [(_engine_name(b, d), "npgpt", {"path": str(path), "backend": b, "dtype": d}) for b, d in pairs]
        jobs = [*npgpt[:1], *([(HF, "hf", {"path": str(hf_path)})] if "hf" in s.compare else []), *npgpt[1:]]
        for r in range(s.repeat):
            progress(f"measuring memory bandwidth{_round(r, s)}")
            runs.setdefault("bandwidth", []).append(spawn("bandwidth", s))
            for name, job, spec in jobs:
                if job == "npgpt" and not installed(spec["backend"]):
                    runs[name] = [{"error": f"backend {spec['backend']} is not installed"}]
                    continue
                progress(f"running {name}{_round(r, s)}")
                runs.setdefault(name, []).append(spawn(job, s, **spec))
        bandwidth = best_of(runs.pop("bandwidth"))
        result["machine"]["bandwidth_gbs"] = bandwidth.get("bytes_per_s", float("nan")) / 1e9
        result["import"] = import_seconds()
        engines = {name: best_of(results) for name, results in runs.items()}
        if "llama.cpp" in s.compare and hf_path is not None and s.llama_cpp:
            from .bench_llamacpp import measure_llamacpp

            progress("running llama.cpp: converting to GGUF f32/f16/q8_0, llama-bench, llama-batched-bench")
            engines.update(measure_llamacpp(s.llama_cpp, hf_path, Path(tmp) / "llama.cpp", s))
        result["engines"] = engines
        if s.baseline_tokens:
            progress(f"running npgpt without a kv cache ({s.baseline_tokens} tokens)")
            result["nocache"] = spawn("nocache", s, path=str(path))
        if s.train:
            progress("training steps: npgpt (JAX)")
            result["train"] = {"npgpt-jax": spawn("train-npgpt", s, path=str(path))}
            if hf_path is not None:
                progress("training steps: Hugging Face + PyTorch")
                result["train"][HF] = spawn("train-hf", s, path=str(hf_path))
        if s.precision:
            progress("accuracy of 16-bit weights")
            result["precision"] = spawn("precision", s, path=str(path))
    _add_derived(result)
    return result


def _engine_name(backend: str, dtype: str) -> str:
    """``npgpt-numpy`` for float32 weights, ``npgpt-torch-bfloat16`` for 16-bit ones."""
    return f"npgpt-{backend}" + ("" if dtype == "float32" else f"-{dtype}")


def _round(r: int, s: BenchSettings) -> str:
    return f" (round {r + 1} of {s.repeat})" if s.repeat > 1 else ""


def best_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One engine's rounds merged: its best speed and start-up, its highest memory (the safe side)."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[-1]
    best: dict[str, Any] = dict(ok[0])
    for r in ok[1:]:
        for key, value in r.items():
            if key == "decode_tps":
                best[key] = {b: max(v, best[key][b]) for b, v in value.items()}
            elif key.endswith(("_tps", "bytes_per_s")):
                best[key] = max(value, best[key])
            elif key.endswith(("_ms", "startup_s")):
                best[key] = min(value, best[key])
            elif key.startswith("rss_") or key == "other_cpu":
                best[key] = max(value, best[key])
    best["rounds"] = len(ok)
    return best


def _checkpoints(s: BenchSettings, tmp: Path) -> tuple[Any, Path, Path | None, str]:
    """(config, npgpt checkpoint, HF directory or None, description) for the engines to load."""
    from .config import PRESETS
    from .download import resolve
    from .formats import detect, load_checkpoint, save_checkpoint

    need_hf = "hf" in s.compare or "llama.cpp" in s.compare or s.train  # llama.cpp converts the HF checkpoint
    if s.random:
        name = s.model or "124M"
        if name in PRESETS:
            config = PRESETS[name]
        else:
            config, _ = load_checkpoint(resolve(name)[0])
        from .formats.names import init_params

        params = init_params(config, seed=s.seed)
        path = save_checkpoint(tmp / "model.safetensors", config, params)
        source = f"random weights, {name} shape"
    else:
        path, _ = resolve(s.model)
        config, params = load_checkpoint(path)
        source = str(path)
    hf_path = None
    if need_hf:
        hf_path = path if not s.random and detect(path) == "hf" else save_checkpoint(tmp / "hf", config, params, "hf")
    return config, path, hf_path, source


def _machine(s: BenchSettings) -> dict[str, Any]:
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    from .hostinfo import instruction_sets

    return {"cpu": cpu, "cores": os.cpu_count(), "threads": s.threads, "python": platform.python_version(),
            "numpy": np.__version__, "load_avg_1min": load, "instruction_sets": instruction_sets()}


def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of npgpt's performance issue, each with the value reached (None if not measured)."""
    eng = result["engines"]
    ours, hf = eng.get("npgpt-numpy", {}), eng.get(HF, {})

    def ratio(key: str, batch: str | None = None) -> float | None:
        a, b = ours.get(key), hf.get(key)
        if batch is not None:
            a, b = (a or {}).get(batch), (b or {}).get(batch)
        return a / b if a and b else None

    weight_mb = result["model"]["weight_mb"]
    ceiling = result["machine"]["bandwidth_gbs"] * 1e9 / result["model"]["bytes_per_token"]
    b1 = (ours.get("decode_tps") or {}).get("1")
    rows = [
        ("decode batch 1 vs HF", ratio("decode_tps", "1"), ">=", 1.8),
        ("decode batch 1 / bandwidth ceiling", b1 / ceiling if b1 else None, ">=", 0.75),
        ("decode batch 8 vs HF", ratio("decode_tps", "8"), ">=", 1.6),
        ("decode batch 32 vs HF", ratio("decode_tps", "32"), ">=", 1.6),
        ("prefill vs HF", ratio("prefill_tps"), ">=", 1.0),
        ("kv cache vs no cache", (result.get("nocache") or {}).get("speedup"), ">=", 10.0),
        ("peak RSS decoding / weights", ours["rss_decode_mb"] / weight_mb if "rss_decode_mb" in ours else None,
         "<=", 1.25),
        ("import npgpt (s)", result["import"].get("import_s"), "<=", 0.3),
        ("time to first token (ms)", ours.get("ttft_ms"), "<", 100.0),
    ]
    out = []
    for name, value, op, target in rows:
        met = None if value is None else (value <= target if op == "<=" else value < target if op == "<"
                                           else value >= target)
        out.append({"goal": name, "value": value, "target": f"{op} {target:g}", "met": met})
    return out


def _add_derived(result: dict[str, Any]) -> None:
    """Bandwidth fractions per engine, ratios to HF (and npgpt's to llama.cpp), and the goal table."""
    ceiling = result["machine"]["bandwidth_gbs"] * 1e9 / result["model"]["bytes_per_token"]
    result["ceiling_tps_batch1"] = ceiling
    engines = result["engines"]
    hf = engines.get(HF, {})
    for name, e in engines.items():
        if "decode_tps" not in e:
            continue
        # 16-bit (npgpt, llama.cpp) and q8_0 weights read fewer bytes per token: the ceiling scales with them
        scale = e["model_bytes"] / (4 * result["model"]["n_params"]) if "model_bytes" in e else 1.0
        e["bandwidth_fraction"] = e["decode_tps"].get("1", float("nan")) * scale / ceiling
        if name != HF and "decode_tps" in hf:
            e["vs_hf"] = _ratios(e, hf)
        if name.startswith("npgpt-"):
            for other, o in engines.items():
                if other.startswith("llama.cpp-") and "decode_tps" in o:
                    e[f"vs_{other}"] = _ratios(e, o)
    result["goals"] = goals(result)


def _ratios(e: dict[str, Any], other: dict[str, Any]) -> dict[str, float]:
    """How many times faster ``e`` is than ``other``, for every figure both have (llama.cpp has no ttft)."""
    out = {f"decode_{b}": v / other["decode_tps"][b] for b, v in e["decode_tps"].items() if other["decode_tps"].get(b)}
    if e.get("prefill_tps") and other.get("prefill_tps"):
        out["prefill"] = e["prefill_tps"] / other["prefill_tps"]
    if e.get("ttft_ms") and other.get("ttft_ms"):
        out["ttft"] = other["ttft_ms"] / e["ttft_ms"]
    return out


# -- output --------------------------------------------------------------------------------------------
def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(engine names, rows of [metric, value per engine]) for a table of the results."""
    engines = [n for n, e in result["engines"].items() if "error" not in e]
    rows: list[list[str]] = []

    def row(label: str, get: Callable[[dict], Any], fmt: str) -> None:
        vals = [get(result["engines"][n]) for n in engines]
        rows.append([label, *[("" if v is None else format(v, fmt)) for v in vals]])

    for b in result["settings"]["batches"]:
        row(f"decode tok/s, batch {b}", lambda e, b=b: e.get("decode_tps", {}).get(str(b)), ".1f")
    row("decode batch 1 / bandwidth ceiling", lambda e: e.get("bandwidth_fraction"), ".0%")
    row(f"prefill tok/s ({result['settings']['prompt_len']} tokens)", lambda e: e.get("prefill_tps"), ".0f")
    row(f"time to first token, ms ({result['settings']['short_prompt']} tokens)", lambda e: e.get("ttft_ms"),
        ".1f")
    row("start-up (import + load), s", lambda e: e.get("startup_s"), ".2f")
    row("peak RSS decoding batch 1, MB", lambda e: e.get("rss_decode_mb"), ".0f")
    row("peak RSS overall, MB", lambda e: e.get("rss_peak_mb"), ".0f")
    # npgpt against each llama.cpp weight type: times faster (>1) or slower, in npgpt's columns
    for other in [n for n in engines if n.startswith("llama.cpp-")]:
        for b in result["settings"]["batches"]:
            row(f"decode batch {b} vs {other} (x)", lambda e, o=other, b=b: e.get(f"vs_{o}", {}).get(f"decode_{b}"),
                ".2f")
        row(f"prefill vs {other} (x)", lambda e, o=other: e.get(f"vs_{o}", {}).get("prefill"), ".2f")
    return engines, rows


def plot_decode(result: dict[str, Any], path: str | Path) -> Path:
    """PNG of decode tokens/s against batch size for every engine (ratios are in the tables)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 4.4), dpi=120)
    for name, e in result["engines"].items():
        if "decode_tps" in e:
            batches = sorted(int(b) for b in e["decode_tps"])
            style = "-" if name.startswith("npgpt-") else "--" if name == HF else ":"  # npgpt, HF, llama.cpp
            ax.plot(batches, [e["decode_tps"][str(b)] for b in batches], style, marker="o", label=name)
    ax.plot([1], [result["ceiling_tps_batch1"]], marker="_", ms=24, mew=2, color="grey", ls="none",
            label="bandwidth ceiling, batch 1, float32")
    m = result["model"]
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="decode tokens/s (all rows)",
           title=f"GPT-2 {m['n_params'] / 1e6:.0f}M on {result['machine']['cores']} CPU cores")
    ax.set_xticks(result["settings"]["batches"], [str(b) for b in result["settings"]["batches"]])
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _csv(value: str, cast: Callable[[str], Any] = str) -> tuple[Any, ...]:
    try:
        return tuple(cast(v.strip()) for v in value.split(",") if v.strip())
    except ValueError:
        raise NpgptError(f"expected a comma-separated list, got {value!r}") from None


def bench_command(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Preset (124M…) with --random, or a checkpoint path/name; default 124M.")] = None,  # noqa: E501
    random: Annotated[bool, typer.Option("--random", help="Random weights of the model's shape (offline).")] = False,
    backend: Annotated[str, typer.Option("--backend", help="npgpt backends to run, comma-separated.")] = "numpy,jax,torch",  # noqa: E501
    dtype: Annotated[str, typer.Option("--dtype", help="Weight storage per backend, comma-separated: float32, float16, bfloat16 (16-bit: torch, jax, cupy), int8 (torch).")] = "float32",  # noqa: E501
    batch: Annotated[str, typer.Option("--batch", help="Decode batch sizes, comma-separated.")] = "1,8,32",
    prompt_len: Annotated[int, typer.Option(help="Prompt tokens for the prefill measurement.")] = 512,
    short_prompt: Annotated[int, typer.Option(help="Prompt tokens for time to first token and decoding.")] = 16,
    new_tokens: Annotated[int, typer.Option(help="Tokens decoded per row.")] = 128,
    compare: Annotated[str | None, typer.Option("--compare", help="Comma list: 'hf' (Hugging Face transformers + PyTorch), 'llama.cpp' (needs --llama-cpp).")] = None,  # noqa: E501
    llama_cpp: Annotated[str | None, typer.Option("--llama-cpp", envvar="NPGPT_LLAMA_CPP", metavar="DIR", help="llama.cpp checkout built with cmake (build/bin/llama-bench…), for --compare llama.cpp.")] = None,  # noqa: E501
    baseline_tokens: Annotated[int, typer.Option(help="Tokens for npgpt's no-cache baseline (0 = skip).")] = 256,
    threads: Annotated[int, typer.Option(help="BLAS / PyTorch threads.")] = os.cpu_count() or 1,
    bandwidth_mib: Annotated[int, typer.Option(help="MiB read to measure memory bandwidth.")] = 1024,
    train: Annotated[bool, typer.Option("--train", help="Also time training steps: npgpt (JAX) vs HF + PyTorch.")] = False,  # noqa: E501
    train_batch: Annotated[int, typer.Option(help="Training batch size.")] = 4,
    train_seq: Annotated[int, typer.Option(help="Training window length.")] = 128,
    precision: Annotated[bool, typer.Option("--precision", help="Accuracy of float16/bfloat16/int8 weights (torch backend) vs float32: logits, held-out text, greedy output.")] = False,  # noqa: E501
    repeat: Annotated[int, typer.Option(help="Rounds of every engine, interleaved; each keeps its best figures.")] = 1,  # noqa: E501
    as_json: Annotated[bool, typer.Option("--json", help="Print every field as one JSON object.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of decode tokens/s against batch size.")] = None,
) -> None:
    """Measure decode/prefill speed, time to first token, start-up and memory, per backend.

    Example: `npgpt bench --model 124M --random --backend numpy --compare hf`
    """
    s = BenchSettings(
        model=model, random=random, backends=_csv(backend), dtypes=_csv(dtype), batches=_csv(batch, int),
        prompt_len=prompt_len, short_prompt=short_prompt, new_tokens=new_tokens, compare=_csv(compare or ""),
        llama_cpp=llama_cpp,
        baseline_tokens=baseline_tokens, threads=threads, bandwidth_mib=bandwidth_mib, train=train,
        train_batch=train_batch, train_seq=train_seq, precision=precision, repeat=repeat,
    )
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    result = run_bench(s, progress=lambda msg: err.print(f"[dim]{msg}…[/dim]"))
    if plot is not None:
        plot_decode(result, plot)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    _print(result, Console(highlight=False))


def _print(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    m, mach = result["model"], result["machine"]
    console.print(f"[bold]{m['source']}[/bold]: {m['n_params'] / 1e6:.1f}M parameters, "
                  f"{m['weight_mb']:.0f} MB float32; {mach['cpu']}, {mach['threads']} threads; "
                  f"bandwidth {mach['bandwidth_gbs']:.1f} GB/s -> ceiling {result['ceiling_tps_batch1']:.1f} "
                  f"tok/s at batch 1")
    console.print(f"instruction sets: {', '.join(mach.get('instruction_sets') or ['unknown'])}")
    names, rows = table_rows(result)
    table = Table("", *names)
    for r in rows:
        table.add_row(*r)
    console.print(table)
    for name, e in result["engines"].items():
        if "error" in e:
            console.print(f"[yellow]{name}: {e['error']}[/yellow]")
        elif name.startswith("llama.cpp-"):  # what the llama.cpp figures are of: they have no start-up/memory rows
            console.print(f"{name}: llama.cpp {e.get('version')}, {e.get('weight_type')} weights "
                          f"({e.get('gguf_mb', 0):.0f} MB GGUF), KV cache {e.get('kv_cache_type')}, "
                          f"{e.get('threads')} threads")
    if "nocache" in result:
        nc = result["nocache"]
        console.print(("no-cache baseline: " + nc["error"]) if "error" in nc else
                      f"{nc['tokens']} tokens: {nc['cached_s']:.1f} s with the kv cache, {nc['nocache_s']:.1f} s "
                      f"without ({nc['speedup']:.1f}x)")
    imp = result["import"]
    if "import_s" in imp:
        console.print(f"import npgpt {imp['import_s'] * 1e3:.0f} ms; with the API {imp['import_api_s'] * 1e3:.0f} ms")
    for name, t in (result.get("train") or {}).items():
        console.print(f"train {name}: " + (t["error"] if "error" in t else
                                           f"{t['tokens_per_s']:.0f} tokens/s ({t['step_s']:.2f} s/step)"))
    if result.get("precision"):
        from .precision import summary_lines

        for line in summary_lines(result["precision"]):
            console.print(line)
    goal_table = Table("goal", "value", "target", "met")
    for g in result["goals"]:
        value = "" if g["value"] is None else f"{g['value']:.3g}"
        met = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "-"}[g["met"]]
        goal_table.add_row(g["goal"], value, g["target"], met)
    console.print(goal_table)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    sys.stdout.write(json.dumps(worker(json.loads(sys.argv[2]))) + "\n")
