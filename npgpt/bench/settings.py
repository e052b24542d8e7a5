"""What a bench run measures: the settings, the engines' names, and the checks on both."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

from ..errors import NpgptError

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


def engine_name(backend: str, dtype: str) -> str:
    """``npgpt-numpy`` for float32 weights, ``npgpt-torch-bfloat16`` for 16-bit ones."""
    return f"npgpt-{backend}" + ("" if dtype == "float32" else f"-{dtype}")


def npgpt_engines(s: BenchSettings) -> list[tuple[str, str]]:
    """``(backend, dtype)`` of every npgpt engine ``s`` asks for; NpgptError naming a bad setting.

    Every backend runs in each dtype it has (numpy has no 16-bit products; ``dtypes=("float16",)``
    with numpy alone is an error). A message names the settings as ``field=value`` or ``field=`` (its
    ``keywords``), which ``npgpt bench`` writes as its flags (``backends=`` is ``--backend``).
    """
    # A value given twice ran its engine twice under one name (backends numpy,numpy) or measured a batch
    # twice into one figure (batches 1,1): refused, as every other malformed list is.
    for name, values in (
        ("backends", s.backends),
        ("dtypes", s.dtypes),
        ("batches", s.batches),
        ("compare", s.compare),
    ):
        twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:
            listed = ",".join(map(str, values))
            raise NpgptError(f"{name}={listed!r} names {twice} twice; give each once", param=name, keywords=(name,))
    unknown = [b for b in s.backends if b not in ENGINES]
    if not s.backends:  # an empty list was "no backend in backends stores float32 weights"
        raise _bad(f"backends= takes a comma list of {', '.join(ENGINES)}, got none", "backends")
    if unknown:
        raise _bad(f"backends={unknown[0]!r} is unknown; choose from {', '.join(ENGINES)}", "backends")
    from ..backends import DTYPES, WEIGHT_DTYPES

    if not s.dtypes or set(s.dtypes) - set(WEIGHT_DTYPES):
        raise _bad(f"dtypes= takes a comma list of {', '.join(WEIGHT_DTYPES)}, got {','.join(s.dtypes)!r}", "dtypes")
    pairs = [(b, d) for b in s.backends for d in s.dtypes if d in DTYPES[b]]
    missing = [d for d in s.dtypes if not any(pd == d for _, pd in pairs)]
    if missing:
        raise _bad(
            f"no backend in backends={','.join(s.backends)!r} stores {missing[0]} weights; add one "
            f"that does: {', '.join(b for b in DTYPES if missing[0] in DTYPES[b])}",
            "backends",
        )
    if set(s.compare) - {"hf", "llama.cpp"}:
        raise _bad(f"compare= takes a comma list of 'hf' and 'llama.cpp', got {','.join(s.compare)!r}", "compare")
    if "llama.cpp" in s.compare and not s.llama_cpp:
        raise _bad(
            "compare='llama.cpp' needs llama_cpp= DIR (or NPGPT_LLAMA_CPP): a llama.cpp build", "compare", "llama_cpp"
        )
    missing_hf = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if "hf" in s.compare and missing_hf:  # found without importing: the check costs nothing
        verb = "is" if len(missing_hf) == 1 else "are"
        raise _bad(
            f"compare='hf' runs Hugging Face transformers on PyTorch, and {' and '.join(missing_hf)} "
            f"{verb} not installed: pip install 'npgpt[torch]' transformers (or drop compare='hf')",
            "compare",
        )
    if not s.batches or min(s.batches) < 1:
        raise _bad(f"batches= sizes must be >= 1, got {','.join(map(str, s.batches)) or 'none'}", "batches")
    # each named with its own setting and value (one message naming five of them left the user to find which)
    counts = (
        ("new_tokens", s.new_tokens, 1),
        ("short_prompt", s.short_prompt, 1),
        ("repeat", s.repeat, 1),
        ("prompt_len", s.prompt_len, 16),
        ("threads", s.threads, 1),  # below 1: else run and reported as given
        ("bandwidth_mib", s.bandwidth_mib, 1),
        ("train_batch", s.train_batch, 1),
        ("train_seq", s.train_seq, 1),
    )
    for name, value, least in counts:
        if value < least:
            raise _bad(f"{name}= must be >= {least}, got {value}", name)
    if s.baseline_tokens < 0:  # -1 was truthy: a no-cache baseline of -1 tokens was run and reported
        raise _bad(
            f"baseline_tokens= must be >= 0 (0 skips the no-cache baseline), got {s.baseline_tokens}", "baseline_tokens"
        )
    return pairs


def _bad(message: str, name: str, *others: str) -> NpgptError:
    """An NpgptError about the setting ``name`` whose message names it (and ``others``) as ``field=``."""
    return NpgptError(message, param=name, keywords=(name, *others))
