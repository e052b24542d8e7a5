"""Benchmarks: how fast npgpt runs GPT-2 on this machine, next to Hugging Face + PyTorch.

Every engine (an npgpt backend, Hugging Face ``GPT2LMHeadModel``, npgpt without its kv cache)
runs in a subprocess of its own, ``python -m npgpt.bench --worker SPEC`` (:mod:`.workers`), which prints one JSON
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
(prefill, batch-1 decode) and ``llama-batched-bench`` (larger batches); see :mod:`.llamacpp`.
Those engines have no time to first token, start-up or memory figures; each npgpt engine gets a
``vs_llama.cpp-<type>`` ratio entry next to ``vs_hf``, and the bandwidth fraction of a llama.cpp engine
counts the bytes of its own weight type.

The library never prints: :func:`run_bench` returns one dict (what ``--json`` emits), and
``npgpt bench`` (``npgpt/cli/bench.py``) prints it. The project's performance targets are in
docs/benchmarks.md.

Modules: ``settings`` (what to run), ``system`` (bandwidth, memory, CPU probes), ``engines`` (npgpt
and Hugging Face behind one interface), ``measure`` (the timings), ``workers`` (one measurement per
process), ``report`` (derived ratios, table, plot), ``llamacpp`` (the llama.cpp comparison), ``run``
(the whole bench).
"""

from .report import add_derived, plot_decode, table_rows
from .run import run_bench
from .settings import BenchSettings
from .workers import best_of

__all__ = ["BenchSettings", "add_derived", "best_of", "plot_decode", "run_bench", "table_rows"]
