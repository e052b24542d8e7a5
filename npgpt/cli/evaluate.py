"""``npgpt eval``: perplexity of a text file (the library part is :mod:`npgpt.evaluate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import NpgptError
from .options import BackendOpt, DtypeOpt, ModelOpt, console, load_model


def eval_command(
    data: Annotated[Path, typer.Option("--data", "-d", help="A UTF-8 text file to score.")],
    model: ModelOpt = None,
    window: Annotated[int | None, typer.Option(help="Tokens per window (default: the model's context).")] = None,
    stride: Annotated[int | None, typer.Option(help="Tokens between window starts (default: window // 2).")] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    backend: BackendOpt = "numpy",
    dtype: DtypeOpt = "float32",
) -> None:
    """Perplexity of a text file (Hugging Face's sliding-window method).

    Example: `npgpt eval --data tests/fixtures/kjv_heldout.txt --stride 128`
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from ..evaluate import perplexity

    try:
        text = data.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise NpgptError(f"cannot read {data}: {reason}") from None
    if not text.strip():
        raise NpgptError(f"{data} is empty; give a text file to score")
    m = load_model(model, backend, dtype)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console(stderr=True), transient=True) as bar:
        task = bar.add_task("windows", total=None)
        result = perplexity(m, text, window=window, stride=stride, batch_size=batch_size,
                            progress=lambda done, total: bar.update(task, completed=done, total=total))
    screen = console()
    screen.print(f"tokens         {result['tokens']:,}")
    screen.print(f"cross-entropy  {result['cross_entropy']:.4f} nats/token")
    screen.print(f"perplexity     {result['perplexity']:.3f}")
