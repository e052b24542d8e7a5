"""Probes of the machine the bench runs on: memory bandwidth, peak memory, other processes' CPU, import time.

All standard-library reads of ``/proc`` (Linux) with a fallback elsewhere; none of them changes the
process it runs in.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
    code = (
        "import time; t = time.perf_counter(); import npgpt; a = time.perf_counter() - t; npgpt.load; "
        "print(a, time.perf_counter() - t)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    try:
        plain, api = map(float, proc.stdout.split())
    except ValueError:
        return {"error": f"import npgpt failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"}
    return {"import_s": plain, "import_api_s": api}


def machine(threads: int) -> dict[str, Any]:
    """CPU model and instruction sets, core and thread counts, Python and NumPy versions, 1-minute load average."""
    import numpy as np

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    from ..hostinfo import cpu_name, instruction_sets

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_avg_1min": load,
        "instruction_sets": instruction_sets(),
        "gpus": gpus(),
    }


def gpus() -> list[str]:
    """Names and memory of the NVIDIA GPUs ``nvidia-smi`` lists ([] where there is none).

    Asked of ``nvidia-smi`` rather than a framework: importing PyTorch or CuPy here would put its
    start-up time and memory into the bench's own process. The torch, JAX and CuPy backends and
    the Hugging Face comparison run on the first GPU where their library sees one.
    """
    import shutil

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
