"""``dtype="auto"``: the weight storage this host makes pay, from a short measurement cached per machine.

Which storage decodes fastest depends on the CPU's instruction sets and the libraries' kernels: on an
AVX2-only host PyTorch's 16-bit products are slower than NumPy's float32, on an AVX-512 BF16/AMX one
much faster (docs/benchmarks.md). So rather than guess from flags, :func:`choose_dtype` times one
decode step's matrix products in every storage the backend declares (``Backend.dtypes``) and keeps
the answer in ``registry.home() / "autotune.json"``, keyed by what decides it (CPU, instruction sets,
core count and thread limits, backend, library versions, the model's widths and the rows decoded at
once). The measurement is as good as the moment it was taken: a machine busy with other work then
can make a multi-threaded kernel look many times slower (int8 once came out "29.2x float32" at load 4.2
on 2 cores). So a measurement that cannot be trusted is not used (:func:`doubt`): taken
at a load average of at least the core count, with rounds that disagree (a storage's step time in its
median round over SPREAD times its best), or with a gain past what the storage's bytes allow
(MAX_GAIN); float32 is kept. That outcome is cached too, but only for DOUBT_S seconds, and one doubted
for the load only until the load falls below the core count: a host that is always busy does not pay the
measurement on every start, and one that calms down measures again soon. Delete the file to measure again.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Backend
from .config import GPT2Config
from .errors import NpgptError, shown
from .files import parse_json, read_regular

CACHE_FILE = "autotune.json"
CACHE_VERSION = 1  # the file's layout; a file of another layout (a newer npgpt's) is not read, only replaced
HEAD_COLUMNS = 8192  # the head's columns timed (of n_vocab): its time is scaled up to the whole head
ROUNDS = 12  # rounds at most; each candidate's best per product is kept
BUDGET_S = 0.5  # seconds of timing after which no new round starts (at least two run)
# float32 stays unless another storage is at least this much faster per step: the same product timed
# twice on a shared machine differs by a few percent, and float32 gives the same numbers on every host.
MARGIN = 1.10
# A measurement is noisy when a storage's median round takes this many times its best round.
SPREAD = 1.5
# The most a storage can plausibly gain over float32 in one decode step: twice what its bytes per weight
# save (a decode step reads every weight once). More says float32's kernel was slowed, not int8 fast.
MAX_GAIN = {"float16": 4.0, "bfloat16": 4.0, "int8": 8.0}
# How long a doubted measurement's outcome (float32 kept) is reused before measuring again (one per hour
# at most on a host that is always busy); one doubted for the load alone is measured again once it falls.
DOUBT_S = 3600.0
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # part of the cache key where set


@dataclass(frozen=True)
class Choice:
    """The storage picked for a backend on this host.

    ``seconds``: per candidate, one decode step's weight products (every block's four and the head)
    at ``rows`` rows, in seconds; ``skipped``: candidates whose library is missing, with the reason;
    ``measured``: False when read from the cache; ``key``: the cache key; ``cache``: the file read or
    written, None when it could not be written; ``load``: the 1-minute load average when measured (None
    where the OS has none), since other work on the machine then can make a multi-threaded kernel look slow.
    """

    dtype: str
    seconds: dict[str, float]
    measured: bool
    key: str
    rows: int = 1
    skipped: dict[str, str] = field(default_factory=dict)
    cache: Path | None = None
    load: float | None = None
    doubt: str | None = None  # why the measurement was not trusted (float32 kept), or None
    retry_at: float | None = None  # with a doubt: when (``time.time()``) the cached outcome expires

    def describe(self) -> str:
        """One line for the CLI, e.g. ``int8 (1.9x float32 at 1 row on this host; measured now)``."""
        base = self.seconds.get("float32")
        rows = f"{self.rows} row{'s' if self.rows != 1 else ''}"
        if self.dtype != "float32" and base:
            speed = f"{base / self.seconds[self.dtype]:.1f}x float32 at {rows} on this host"
        else:  # float32 kept: say how far the others were
            others = [f"{d} {base / t:.2f}x" for d, t in self.seconds.items() if d != "float32" and base and t]
            speed = f"{', '.join(others) or 'no other storage'} vs float32 at {rows} on this host"
        where = "measured now" if self.measured else "cached"
        if self.doubt is not None:
            if self.cache is None or self.retry_at is None:
                return f"{self.dtype} (float32 kept: {self.doubt}; measured now, not cached: measured again next load)"
            until = time.strftime("%H:%M", time.localtime(self.retry_at))
            when = "measured now" if self.measured else f"measured earlier, cached in {self.cache}"
            return f"{self.dtype} (float32 kept: {self.doubt}; {when}; measured again after {until} or once idle)"
        if self.cache is not None:
            where += f"; cached in {self.cache}" if self.measured else f" in {self.cache}"
        cores = os.cpu_count() or 1
        if busy(self.load, cores):  # a measurement the user may want to redo when idle
            where += f"; measured at load {self.load:.1f} on {cores} cores"
        return f"{self.dtype} ({speed}; {where})"


@dataclass(frozen=True)
class Product:
    """One weight product of a decode step in one storage: ``run()`` computes it (and waits for it)."""

    dtype: str
    name: str  # c_attn, attn.c_proj, c_fc, mlp.c_proj, head
    count: float  # times a decode step runs it (n_layer for a block's, V / HEAD_COLUMNS for the head slice)
    run: Callable[[], Any]


def time_product(product: Product) -> float:
    """Wall-clock seconds of one ``product.run()`` (``time.perf_counter``)."""
    start = time.perf_counter()
    product.run()
    return time.perf_counter() - start


def cache_key(backend: Backend, config: GPT2Config, rows: int) -> str:
    """What decides the choice: CPU model and instruction sets, cores, backend and library versions, widths, rows."""
    from .hostinfo import cpu_name, instruction_sets

    # The backend's array library and device, found from its arrays (torch, jaxlib, cupy), never from its
    # name: the torch backend runs on a GPU where PyTorch sees one, and a GPU's choice is not the CPU's.
    probe = backend.asarray(np.zeros(1, np.float32))
    library = type(probe).__module__.split(".")[0]
    device = str(getattr(probe, "device", "cpu"))
    # npgpt's own version too: its kernels and weight layouts (put_params, the int8 and Q8_0 paths) decide
    # the speeds as much as the libraries do, so a choice measured under another npgpt is not read back.
    # Read from the loaded package, as the libraries' are: importing it here would be an import cycle.
    package = __name__.partition(".")[0]
    versions = {
        package: getattr(sys.modules.get(package), "__version__", "?"),
        "numpy": np.__version__,
        library: getattr(sys.modules.get(library), "__version__", "?"),
    }
    if "int8" in backend.dtypes:  # NumPy's int8 product is ONNX Runtime's (npgpt/q8_0.py)
        from importlib import metadata  # ~60 ms to import: only when a key is made

        try:
            versions["onnxruntime"] = metadata.version("onnxruntime")
        except metadata.PackageNotFoundError:
            versions["onnxruntime"] = "none"
    libs = " ".join(f"{k}={v}" for k, v in sorted(versions.items()))
    # Thread limits change which kernel wins (a 2-thread BLAS on a busy machine can be slower than 1 thread).
    threads = "".join(f" {v}={os.environ[v]}" for v in THREAD_VARS if os.environ.get(v))
    return (
        f"{cpu_name()} [{', '.join(instruction_sets()) or 'unknown'}] cores={os.cpu_count()}{threads} "
        f"backend={backend.name} device={device} {libs} n_embd={config.n_embd} "
        f"n_inner={config.n_inner or 4 * config.n_embd} n_vocab={config.n_vocab} rows={rows}"
    )


def random_weights(config: GPT2Config, seed: int = 0) -> dict[str, Any]:
    """Host float32 weights of one block and the head's first ``HEAD_COLUMNS`` columns, as a params tree
    (``wte`` [V', C], ``blocks[0]``'s four ``w``); the values do not matter, only the shapes."""
    C, F = config.n_embd, config.n_inner or 4 * config.n_embd
    rng = np.random.default_rng(seed)

    def w(n_in: int, n_out: int) -> np.ndarray:
        return rng.standard_normal((n_in, n_out), dtype=np.float32) * np.float32(0.02)

    block = {
        "attn": {"c_attn": {"w": w(C, 3 * C)}, "c_proj": {"w": w(C, C)}},
        "mlp": {"c_fc": {"w": w(C, F)}, "c_proj": {"w": w(F, C)}},
    }
    return {"wte": w(min(config.n_vocab, HEAD_COLUMNS), C), "blocks": [block]}


def products(backend: Backend, config: GPT2Config, dtype: str, rows: int, weights: dict[str, Any]) -> list[Product]:
    """A decode step's weight products in ``dtype`` at ``rows`` rows: ``weights`` (:func:`random_weights`)
    converted by ``backend.put_params`` exactly as loading converts them (layout included).

    Raises NpgptError where the storage's library is missing (e.g. onnxruntime for NumPy's int8).
    """
    from array_api_compat import array_namespace

    from .model import matmul

    C, F = config.n_embd, config.n_inner or 4 * config.n_embd
    params = backend.put_params(weights, dtype)
    if rows >= 2 and backend.batched is not None:  # as the engine runs a step of several sequences
        params = backend.batched(params) or params
    head = array_namespace(params["wte"]).matrix_transpose(params["wte"])  # [C, V'], as model.gpt2 uses it
    b = params["blocks"][0]
    shapes = [
        ("c_attn", b["attn"]["c_attn"]["w"], C, config.n_layer),
        ("attn.c_proj", b["attn"]["c_proj"]["w"], C, config.n_layer),
        ("c_fc", b["mlp"]["c_fc"]["w"], C, config.n_layer),
        ("mlp.c_proj", b["mlp"]["c_proj"]["w"], F, config.n_layer),
        ("head", head, C, config.n_vocab / head.shape[1]),
    ]
    rng = np.random.default_rng(1)
    xs = {n: backend.asarray(rng.standard_normal((rows, n), dtype=np.float32)) for n in (C, F)}  # [rows, in]

    def product(x: Any, weight: Any) -> Callable[[], np.ndarray]:  # to_numpy: waits for an asynchronous library
        return lambda: backend.to_numpy(matmul(x, weight))

    return [Product(dtype, name, count, product(xs[n_in], weight)) for name, weight, n_in, count in shapes]


def measure(
    backend: Backend, config: GPT2Config, rows: int
) -> tuple[dict[str, float], dict[str, str], dict[str, float]]:
    """Seconds of one decode step's weight products per storage in ``backend.dtypes``, the skipped ones, and
    each storage's spread (its median round's step time over its best round's).

    Candidates are interleaved in rounds (load on a shared machine hits them alike); each product keeps
    its best time, and a step is their sum weighted by how often a step runs each.
    """
    candidates: list[list[Product]] = []
    skipped: dict[str, str] = {}
    weights = random_weights(config)
    for dtype in backend.dtypes:
        try:
            candidates.append(products(backend, config, dtype, rows, weights))
        except NpgptError as e:  # e.g. onnxruntime missing: that storage cannot be loaded here either
            skipped[dtype] = str(e)
    for step in candidates:  # warm-up: first calls build kernels, sessions and caches
        for p in step:
            p.run()
    best: dict[tuple[str, str], float] = {}
    rounds: dict[str, list[float]] = {step[0].dtype: [] for step in candidates}  # each round's step time
    start = time.perf_counter()
    for i in range(ROUNDS):
        if i >= 2 and time.perf_counter() - start > BUDGET_S:
            break
        for step in candidates:
            total = 0.0
            for p in step:
                t = time_product(p)
                best[p.dtype, p.name] = min(t, best.get((p.dtype, p.name), t))
                total += p.count * t
            rounds[step[0].dtype].append(total)
    seconds = {step[0].dtype: sum(p.count * best[p.dtype, p.name] for p in step) for step in candidates}
    spread = {d: float(np.median(ts) / min(ts)) if min(ts) > 0 else 1.0 for d, ts in rounds.items()}
    return seconds, skipped, spread


def doubt(seconds: dict[str, float], spread: dict[str, float], load: float | None, cores: int) -> str | None:
    """Why a measurement cannot be trusted as this machine's speeds, or None: a busy machine (1-minute load
    average at least ``cores``), rounds that disagree (``SPREAD``), or a gain over float32 past ``MAX_GAIN``."""
    if busy(load, cores):
        return f"measured at load {load:.1f} on {cores} cores"
    noisy = {d: s for d, s in spread.items() if s > SPREAD}
    if noisy:
        d, s = max(noisy.items(), key=lambda kv: kv[1])
        return f"the timings were noisy ({d}'s median round {s:.1f}x its best)"
    base = seconds.get("float32")
    for d, t in seconds.items():
        if base and t > 0 and d in MAX_GAIN and base / t > MAX_GAIN[d]:
            return f"{d} timed {base / t:.1f}x float32, more than its bytes allow ({MAX_GAIN[d]:.0f}x at most)"
    return None


def busy(load: float | None, cores: int) -> bool:
    """Whether a 1-minute load average of ``load`` on ``cores`` cores makes a measurement doubtful (the first of
    :func:`doubt`'s reasons; a cache entry doubted for it carries ``"busy": true``, read back as that flag)."""
    return load is not None and load >= cores


def pick(seconds: dict[str, float]) -> str:
    """The fastest storage; float32 unless the fastest is at least ``MARGIN`` times faster than it."""
    fastest = min(seconds, key=seconds.__getitem__)
    if "float32" in seconds and seconds[fastest] * MARGIN > seconds["float32"]:
        return "float32"
    return fastest


def _read(path: Path) -> dict[str, Any]:
    """The cache's entries; empty when the file is missing, unreadable, of another layout (``CACHE_VERSION``)
    or not what this module writes."""
    try:
        data = parse_json(read_regular(path).decode("utf-8"))  # a FIFO in its place: no wait for a writer
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def choose_dtype(backend: Backend, config: GPT2Config, rows: int = 1, cache: Path | None = None) -> Choice:
    """The weight storage among ``backend.dtypes`` that decodes ``config``'s shapes fastest at ``rows`` rows.

    Read from ``cache`` (default ``registry.home() / "autotune.json"``) when this host, backend and
    model shape were measured before; else measured (about a second for GPT-2 124M's widths) and
    written there atomically. A corrupt cache is measured again and rewritten; an unwritable one
    still gives the choice (``Choice.cache`` is then None). Raises ValueError if ``rows`` < 1.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {shown(rows)}")
    if cache is None:
        from .registry import home

        cache = home() / CACHE_FILE
    key = cache_key(backend, config, rows)
    entries = _read(cache)
    hit = entries.get(key)
    cores = os.cpu_count() or 1
    kept = _doubted(hit, backend, cores)
    if kept is not None:  # a recent measurement that was not trusted: float32 again, without paying for it
        return replace(kept, key=key, rows=rows, cache=cache)
    if isinstance(hit, dict) and hit.get("dtype") in backend.dtypes and isinstance(hit.get("seconds"), dict):
        # Only positive, finite times: describe() divides by the chosen one (a hand-edited entry without
        # it, or with 0, was an internal KeyError/ZeroDivisionError); such an entry is measured again.
        seconds = {
            str(k): float(v)
            for k, v in hit["seconds"].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf")
        }
        load = hit.get("load") if isinstance(hit.get("load"), (int, float)) else None
        # an entry an older npgpt cached from a busy machine or an implausible gain is measured again
        if "doubt" not in hit and hit["dtype"] in seconds and doubt(seconds, {}, load, cores) is None:
            return Choice(hit["dtype"], seconds, False, key, rows, cache=cache, load=load)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    seconds, skipped, spread = measure(backend, config, rows)
    if hasattr(os, "getloadavg"):  # the busier of the start and the end
        load = max(load or 0.0, os.getloadavg()[0])
    why = doubt(seconds, spread, load, cores)
    retry_at = None
    if why is not None and "float32" in seconds:  # not this machine's truth: float32, cached for a while only
        choice, retry_at = "float32", time.time() + DOUBT_S
        entry = {"dtype": choice, "seconds": seconds, "load": load, "doubt": why, "retry_at": retry_at}
        entry["busy"] = busy(load, cores)  # the reason as a flag: the text is for people
    else:
        why, choice = None, pick(seconds)
        entry = {"dtype": choice, "seconds": seconds, "load": load}
    # Read again: another process (a second server, a test run) may have written its own entry while this
    # one measured, and writing the copy read before would drop it. The window left is the write itself.
    # A doubted outcome does not replace a trusted measurement written meanwhile (from a calmer moment): this
    # process keeps float32 for itself, uncached, and the next start reads the trusted one.
    fresh = _read(cache)
    other = fresh.get(key)
    if retry_at is not None and isinstance(other, dict) and "doubt" not in other and "dtype" in other:
        return Choice(choice, seconds, True, key, rows, skipped, None, load, why, None)
    entries = {**fresh, key: entry}
    written: Path | None = cache
    try:
        from .files import atomic_path

        with atomic_path(cache) as tmp:
            Path(tmp).write_text(json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=1), encoding="utf-8")
    except NpgptError:  # a read-only or missing home: the choice stands, only the cache is lost
        written = None
    return Choice(choice, seconds, True, key, rows, skipped, written, load, why, retry_at if written else None)


def _doubted(hit: Any, backend: Backend, cores: int) -> Choice | None:
    """The cached outcome of a measurement that was not trusted, while it holds: before its ``retry_at``
    (at most ``DOUBT_S`` from now: a clock set back does not keep it for ever) and, for one doubted for the
    machine's load, while the load is still at least ``cores``. None otherwise (measure again)."""
    if not (isinstance(hit, dict) and isinstance(hit.get("doubt"), str) and "float32" in backend.dtypes):
        return None
    retry_at, load = hit.get("retry_at"), hit.get("load")
    if not isinstance(retry_at, (int, float)) or isinstance(retry_at, bool):
        return None
    now = time.time()
    if not now < retry_at <= now + DOUBT_S:
        return None
    if hit.get("busy") is True and hasattr(os, "getloadavg") and not busy(os.getloadavg()[0], cores):
        return None  # the machine calmed down: this is the moment to measure
    seconds = hit.get("seconds")
    seconds = {
        str(k): float(v)
        for k, v in (seconds.items() if isinstance(seconds, dict) else ())
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf")
    }
    load = float(load) if isinstance(load, (int, float)) and not isinstance(load, bool) else None
    return Choice("float32", seconds, False, "", load=load, doubt=hit["doubt"], retry_at=float(retry_at))
