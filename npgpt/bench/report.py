"""What a bench result means: the figures derived from the measurements, a table and a plot of them.

The derived figures are the bandwidth fraction of every engine (decode tokens/s at batch 1 over
``bandwidth / bytes_per_token``) and how many times faster npgpt's engines are than Hugging Face
and each llama.cpp weight type. The project's own targets for these figures are in
docs/benchmarks.md, not in the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .settings import HF


def add_derived(result: dict[str, Any]) -> None:
    """Bandwidth fractions per engine and ratios to HF (and npgpt's to llama.cpp), added in place."""
    ceiling = result["machine"]["bandwidth_gbs"] * 1e9 / result["model"]["bytes_per_token"]
    result["ceiling_tps_batch1"] = ceiling
    engines = result["engines"]
    hf = engines.get(HF, {})
    for name, e in engines.items():
        if "decode_tps" not in e:
            continue
        # 16-bit (npgpt, llama.cpp) and q8_0 weights read fewer bytes per token: the ceiling scales with them
        scale = e["model_bytes"] / (4 * result["model"]["n_params"]) if "model_bytes" in e else 1.0
        if e.get("device", "cpu") == "cpu":  # the CPU's bandwidth says nothing of an engine on a GPU
            e["bandwidth_fraction"] = e["decode_tps"].get("1", float("nan")) * scale / ceiling
        if name != HF and "decode_tps" in hf:
            e["vs_hf"] = ratios(e, hf)
        if name.startswith("npgpt-"):
            for other, o in engines.items():
                if other.startswith("llama.cpp-") and "decode_tps" in o:
                    e[f"vs_{other}"] = ratios(e, o)


def ratios(e: dict[str, Any], other: dict[str, Any]) -> dict[str, float]:
    """How many times faster ``e`` is than ``other``, for every figure both have (llama.cpp has no ttft)."""
    out = {f"decode_{b}": v / other["decode_tps"][b] for b, v in e["decode_tps"].items() if other["decode_tps"].get(b)}
    if e.get("prefill_tps") and other.get("prefill_tps"):
        out["prefill"] = e["prefill_tps"] / other["prefill_tps"]
    if e.get("ttft_ms") and other.get("ttft_ms"):
        out["ttft"] = other["ttft_ms"] / e["ttft_ms"]
    return out


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(engine names, rows of [metric, value per engine]) for a table of the results."""
    engines = [n for n, e in result["engines"].items() if "error" not in e]
    rows: list[list[str]] = []

    def row(label: str, path: tuple[str, ...], fmt: str) -> None:
        """One row: the value at ``path`` (keys into nested dicts) in each engine's results, blank if absent."""
        vals = [_dig(result["engines"][n], path) for n in engines]
        rows.append([label, *[("" if v is None else format(v, fmt)) for v in vals]])

    for b in result["settings"]["batches"]:
        row(f"decode tok/s, batch {b}", ("decode_tps", str(b)), ".1f")
    row("decode batch 1 / bandwidth ceiling", ("bandwidth_fraction",), ".0%")
    row(f"prefill tok/s ({result['settings']['prompt_len']} tokens)", ("prefill_tps",), ".0f")
    row(f"time to first token, ms ({result['settings']['short_prompt']} tokens)", ("ttft_ms",), ".1f")
    row("start-up (import + load), s", ("startup_s",), ".2f")
    row("peak RSS decoding batch 1, MB", ("rss_decode_mb",), ".0f")
    row("peak RSS overall, MB", ("rss_peak_mb",), ".0f")
    # npgpt against each llama.cpp weight type: times faster (>1) or slower, in npgpt's columns
    for other in [n for n in engines if n.startswith("llama.cpp-")]:
        for b in result["settings"]["batches"]:
            row(f"decode batch {b} vs {other} (x)", (f"vs_{other}", f"decode_{b}"), ".2f")
        row(f"prefill vs {other} (x)", (f"vs_{other}", "prefill"), ".2f")
    return engines, rows


def _dig(results: dict[str, Any], path: tuple[str, ...]) -> Any:
    """``results[path[0]][path[1]]...``, or None where a key is missing (a missing inner dict is empty)."""
    inner = results
    for key in path[:-1]:
        inner = inner.get(key, {})
    return inner.get(path[-1])


def plot_decode(result: dict[str, Any], path: str | Path) -> Path:
    """PNG of decode tokens/s against batch size for every engine (ratios are in the tables).

    A ``Figure`` drawn on its own Agg canvas: no pyplot state, no process-wide backend switch.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, e in result["engines"].items():
        if "decode_tps" in e:
            batches = sorted(int(b) for b in e["decode_tps"])
            style = "-" if name.startswith("npgpt-") else "--" if name == HF else ":"  # npgpt, HF, llama.cpp
            ax.plot(batches, [e["decode_tps"][str(b)] for b in batches], style, marker="o", label=name)
    ax.plot(
        [1],
        [result["ceiling_tps_batch1"]],
        marker="_",
        ms=24,
        mew=2,
        color="grey",
        ls="none",
        label="bandwidth ceiling, batch 1, float32",
    )
    m = result["model"]
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="batch size",
        ylabel="decode tokens/s (all rows)",
        title=f"GPT-2 {m['n_params'] / 1e6:.0f}M on {result['machine']['cores']} CPU cores",
    )
    ax.set_xticks(result["settings"]["batches"], [str(b) for b in result["settings"]["batches"]])
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.tight_layout()
    from ..figures import save_png

    save_png(fig, path)  # whole or not at all; a failed write is one line, not an OSError
    return Path(path)
