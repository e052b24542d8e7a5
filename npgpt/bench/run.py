"""The whole bench: every engine in its own worker, in rounds, merged into one JSON-ready dict."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import NpgptError
from .measure import bytes_per_token
from .report import add_derived
from .settings import GPU_ONLY, HF, BenchSettings, engine_name, npgpt_engines
from .system import import_seconds, machine
from .workers import best_of, spawn


def unavailable(backend: str) -> str | None:
    """Why npgpt's ``backend`` cannot run here, in its own one-line error naming what to install; None if it can.
    A backend that is not installed, or (GPU_ONLY) lacks its device and driver, fails to load at once, so
    only those are loaded here: the others' imports (torch: seconds) are left to the worker that runs them."""
    import importlib.util

    if backend == "numpy" or (importlib.util.find_spec(backend) is not None and backend not in GPU_ONLY):
        return None
    from ..backends import get_backend

    try:
        get_backend(backend)
    except NpgptError as e:
        return str(e)
    return None


def run_bench(s: BenchSettings, progress: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Every measurement ``s`` asks for, as one JSON-ready dict (see :mod:`npgpt.bench`).

    Raises NpgptError for bad settings or missing llama.cpp tools, before any engine runs.
    """
    pairs = npgpt_engines(s)
    if "llama.cpp" in s.compare and s.llama_cpp:
        from .llamacpp import find_tools

        find_tools(s.llama_cpp)  # a missing tool is reported now, not after the other engines' minutes
    with tempfile.TemporaryDirectory(prefix="npgpt-bench-") as tmp:
        progress("preparing the weights")
        config, path, hf_path, source = _checkpoints(s, Path(tmp))
        result: dict[str, Any] = {
            "machine": machine(s.threads),
            "model": {
                "source": source,
                "random": s.random,
                **config.to_dict(),
                "n_params": config.n_params,
                "weight_mb": 4 * config.n_params / 1e6,
                "bytes_per_token": bytes_per_token(config),
            },
            "settings": asdict(s),
        }
        runs: dict[str, list[dict[str, Any]]] = {}  # engine -> its result in each round
        npgpt = [(engine_name(b, d), "npgpt", {"path": str(path), "backend": b, "dtype": d}) for b, d in pairs]
        # npgpt's first engine runs right before HF, so the two figures compared most are taken close in time
        jobs = [*npgpt[:1], *([(HF, "hf", {"path": str(hf_path)})] if "hf" in s.compare else []), *npgpt[1:]]
        for r in range(s.repeat):
            progress(f"measuring memory bandwidth{_round(r, s)}")
            runs.setdefault("bandwidth", []).append(spawn("bandwidth", s))
            for name, job, spec in jobs:
                why = unavailable(spec["backend"]) if job == "npgpt" else None
                if why is not None:
                    runs[name] = [{"error": why}]
                    continue
                progress(f"running {name}{_round(r, s)}")
                runs.setdefault(name, []).append(spawn(job, s, **spec))
        bandwidth = best_of(runs.pop("bandwidth"))
        result["machine"]["bandwidth_gbs"] = bandwidth.get("bytes_per_s", float("nan")) / 1e9
        result["import"] = import_seconds()
        engines = {name: best_of(results) for name, results in runs.items()}
        if "llama.cpp" in s.compare and hf_path is not None and s.llama_cpp:
            from .llamacpp import measure_llamacpp

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
    add_derived(result)
    return result


def _round(r: int, s: BenchSettings) -> str:
    return f" (round {r + 1} of {s.repeat})" if s.repeat > 1 else ""


def _checkpoints(s: BenchSettings, tmp: Path) -> tuple[Any, Path, Path | None, str]:
    """(config, npgpt checkpoint, HF directory or None, description) for the engines to load."""
    from ..config import PRESETS
    from ..formats import detect, load_checkpoint, save_checkpoint
    from ..formats.npgpt_format import MODEL_FILE
    from ..params import init_params
    from ..registry import resolve

    need_hf = "hf" in s.compare or "llama.cpp" in s.compare or s.train  # llama.cpp converts the HF checkpoint
    if s.random:
        name = s.model or "124M"
        config = PRESETS[name] if name in PRESETS else load_checkpoint(resolve(name)[0])[0]
        _check_fits(s, config)  # before the random weights: 1558M's take a minute and 6 GB to make and write
        params = init_params(config, seed=s.seed)
        path = save_checkpoint(tmp / MODEL_FILE, config, params)
        source = f"random weights, {name} shape"
    else:
        path, notice = resolve(s.model)
        if notice is not None:  # no GPT-2 downloaded: the small bundled model would be timed in its place
            raise NpgptError(
                "no GPT-2 is downloaded to measure; add random=True (random weights of 124M's shape), "
                "run `npgpt download 124M`, or pass model='bundled'",
                keywords=("random", "model"),
            )
        config, params = load_checkpoint(path)
        _check_fits(s, config)
        source = str(path)
    hf_path = None
    if need_hf:
        hf_path = path if not s.random and detect(path) == "hf" else save_checkpoint(tmp / "hf", config, params, "hf")
    return config, path, hf_path, source


def _check_fits(s: BenchSettings, config: Any) -> None:
    """NpgptError unless every prompt plus its new tokens, and the training window, fits ``config``'s context."""
    # Each named with its own settings and values: a prompt_len of 256 on a 256-token model was told that "prompts
    # plus new tokens must fit the context of 256 tokens" (it does; the cache also holds the next token) and which
    # of three settings to lower was the user's to find.
    for names, values in (
        (("prompt_len",), (s.prompt_len,)),
        (("short_prompt", "new_tokens"), (s.short_prompt, s.new_tokens)),
        (("short_prompt", "baseline_tokens"), (s.short_prompt, s.baseline_tokens)),
    ):
        if sum(values) >= config.n_ctx:
            got = " + ".join(map(str, values)) + (f" = {sum(values)}" if len(values) > 1 else "")
            named = [f"{n}=" for n in names]
            raise NpgptError(
                f"{' + '.join(named)} must be below the model's context of {config.n_ctx} tokens (its cache also "
                f"holds the next token), got {got}; lower {' or '.join(named)}",
                param=names[-1],
                keywords=names,
            )
    _check_batch_fits(s, config)
    if s.train and s.train_seq > config.n_ctx:  # JAX reads positions past wpe as NaN: a figure of NaN steps
        raise NpgptError(
            f"train_seq={s.train_seq} is longer than the context of {config.n_ctx} tokens; "
            f"give train_seq={config.n_ctx} or less",
            param="train_seq",
            keywords=("train_seq",),
        )


def _check_batch_fits(s: BenchSettings, config: Any) -> None:
    """NpgptError for a decode batch whose kv cache and logits alone outgrow this machine's memory.

    A batch of 100000 on 124M needs ~20 GB of logits and ~880 GB of cache: the worker ran into swap for minutes
    (or the OOM killer), and then the bench printed an empty table and exited 0. Counted (float32): the cache,
    ``2 * n_layer * B * (short prompt + new tokens + 1) * n_embd`` values, and one step's logits, ``B * n_vocab``.
    """
    from ..score import physical_memory

    memory = physical_memory()
    batch = max(s.batches, default=0)
    slots = s.short_prompt + s.new_tokens + 1
    need = 4 * batch * (2 * config.n_layer * slots * config.n_embd + config.n_vocab)
    if memory is not None and need > memory:
        raise NpgptError(
            f"batches={batch} needs {need / 2**30:,.0f} GiB for its kv cache and logits alone, more than this "
            f"machine's {memory / 2**30:,.0f} GiB of memory; lower batches= (or new_tokens=)",
            param="batches",
            keywords=("batches", "new_tokens"),
        )
