"""PNG pictures of what the model computes: the logit lens and an attention pattern.

Matplotlib's object API (``Figure`` + ``FigureCanvasAgg``), never pyplot: a library must not
switch its caller's matplotlib backend or leave figures in pyplot's global state. Matplotlib is in
the ``train`` extra; without it these raise :class:`NpgptError` naming the fix.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import NpgptError
from .files import atomic_path, check_writable

NO_MATPLOTLIB = "PNG output needs matplotlib: pip install matplotlib (or 'npgpt[train]')"


def check_can_write_png(path: str | Path) -> None:
    """Refuse, before any compute, a PNG that could not be written: matplotlib missing, ``path`` a
    place :func:`~npgpt.files.atomic_path` cannot write (:func:`~npgpt.files.check_writable`), or a
    name not ending in ``.png`` (any case; PNG data under ``x.jpg`` misleads every viewer). NpgptError."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise NpgptError(NO_MATPLOTLIB)
    check_writable(path)
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise NpgptError(f"{path} is not a .png name, and the picture is written as PNG: name it {path.stem}.png")


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise NpgptError(NO_MATPLOTLIB) from None
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def lens_figure(final_probs: np.ndarray, tokens: Sequence[str], predictions: Sequence[str]) -> Any:
    """A heat map of the logit lens: ``final_probs`` [L+1, T] (rows: blocks done, columns: input
    ``tokens``), the probability that each depth gives the model's final prediction (``predictions``,
    one per position, on the top axis)."""
    L1, T = final_probs.shape
    fig = _figure(max(5.0, 0.6 * T + 2), max(3.0, 0.35 * L1 + 1.5))
    ax = fig.add_subplot()
    image = ax.imshow(final_probs, origin="lower", aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(T), list(tokens), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(L1), ["embed"] + [str(i + 1) for i in range(L1 - 1)], fontsize=8)
    ax.set_ylabel("blocks applied")
    top = ax.secondary_xaxis("top")
    top.set_xticks(range(T), list(predictions), rotation=60, ha="left", fontsize=8)
    ax.set_title("logit lens: probability of the final prediction (top) after each block", fontsize=9)
    fig.colorbar(image, ax=ax, label="probability")
    return fig


def attention_figure(pattern: np.ndarray, tokens: Sequence[str], layer: int, head: int) -> Any:
    """An attention pattern [T query, T key] as an image, with the tokens on both axes."""
    T = len(tokens)
    size = max(4.0, 0.35 * T + 2)
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    image = ax.imshow(pattern, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(T), list(tokens), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(T), list(tokens), fontsize=8)
    ax.set(
        xlabel="key (attended to)", ylabel="query (attending)", title=f"attention pattern, block {layer}, head {head}"
    )
    fig.colorbar(image, ax=ax, label="attention weight")
    return fig


def save_png(fig: Any, path: str | Path) -> None:
    """Write ``fig`` as a PNG at ``path`` whole or not at all."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.getvalue())
