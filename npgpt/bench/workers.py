"""One measurement per fresh interpreter: ``python -m npgpt.bench --worker SPEC`` prints one JSON line.

A fresh process measures start-up from scratch and gives each engine a peak memory of its own, not
that of whichever engine ran before it. :func:`spawn` runs a worker; :func:`best_of` merges rounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

from ..errors import NpgptError
from .engines import HFEngine, NpgptEngine
from .measure import measure_engine, measure_nocache, measure_precision, measure_train_hf, measure_train_npgpt
from .settings import BenchSettings
from .system import memory_bandwidth, other_cpu_meter, peak_rss_mb


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement named by ``spec["job"]``; what ``python -m npgpt.bench --worker`` prints."""
    given: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["settings"].items()}
    s = BenchSettings(**given)  # the parent's own settings, sent as JSON (lists back to tuples)
    job = spec["job"]
    if job == "bandwidth":
        return {"bytes_per_s": memory_bandwidth(s.bandwidth_mib), "rss_peak_mb": peak_rss_mb()}
    if job == "npgpt":
        from ..backends import collapse_huge_pages, get_backend
        from ..onnx_session import share_thread_pool
        from ..q8_0 import cap_blas_for

        t = time.perf_counter()
        if get_backend(spec["backend"]).onnx_sessions:
            share_thread_pool()  # as the CLI and `npgpt serve` do
        engine: Any = NpgptEngine(spec["path"], spec["backend"], spec.get("dtype", "float32"))
        cap_blas_for([engine.model.params])
        collapse_huge_pages()  # as `npgpt serve` and `npgpt chat` do once loaded; counted in the startup
        startup = time.perf_counter() - t
        return {"startup_s": startup, "model_bytes": engine.weight_bytes(), **measure_engine(engine, s)}
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
    """Run ``worker`` in a fresh interpreter; its JSON result, or ``{"error": ...}`` if it failed.

    The BLAS thread counts are set in the child's environment only (``settings.threads``), and
    ``other_cpu`` is the share of all cores other processes used meanwhile (Linux).
    """
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(settings.threads)
    arg = json.dumps({"job": job, "settings": asdict(settings), **spec})
    other_cpu = other_cpu_meter()
    proc = subprocess.run(
        [sys.executable, "-m", "npgpt.bench", "--worker", arg], capture_output=True, text=True, env=env, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"{job} worker failed ({proc.returncode}): {tail}"}
    result = json.loads(lines[-1])
    share = other_cpu()
    if share is not None:
        result["other_cpu"] = share
    return result


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


def main(argv: list[str]) -> int:
    """``--worker SPEC``: run it and print its JSON line (exit 0); anything else is a usage error (2)."""
    if len(argv) != 2 or argv[0] != "--worker":
        sys.stderr.write("usage: python -m npgpt.bench --worker SPEC (the bench's own subprocesses)\n")
        return 2
    from ..backends import tune_allocator

    tune_allocator()  # as the CLI and server do, so the figures are those users get
    try:
        result = worker(json.loads(argv[1]))
    except NpgptError as e:  # its one line, for spawn's error entry (a traceback's last line named the class too)
        sys.stderr.write(f"{e}\n")
        return 1
    sys.stdout.write(json.dumps(result) + "\n")
    return 0
