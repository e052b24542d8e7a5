"""The loss curves of a run as a PNG, drawn on a ``Figure`` of its own: no pyplot state, and no
switch of the caller's matplotlib backend (a library must never make one)."""

from __future__ import annotations

import io
from pathlib import Path

from ..files import atomic_path


def plot_losses(history: dict[str, list], path: Path) -> None:
    """Training loss per step and held-out loss per evaluation, written atomically to ``path``.

    ``history`` has the lists ``step``, ``loss``, ``val_step``, ``val_loss`` (nats/token).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(history["step"], history["loss"], lw=0.8, label="train")
    if history["val_step"]:
        ax.plot(history["val_step"], history["val_loss"], "o-", ms=3, label="held-out")
    ax.set(xlabel="step", ylabel="loss (nats/token)", title="npgpt training")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.getvalue())
