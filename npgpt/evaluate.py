"""Perplexity of a text under a model, by Hugging Face's sliding-window method; ``npgpt eval`` and ``npgpt score``.

The windows and the per-token scores are :mod:`npgpt.score`'s (see there); ``perplexity`` is
their mean over the scored tokens, exponentiated. ``npgpt score`` shows them per token.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from .errors import NpgptError
from .score import score, token_nll, token_nlls, windows

if TYPE_CHECKING:
    from .api import GPT2

__all__ = ["perplexity", "windows", "token_nll", "token_nlls", "eval_command", "score_command"]


def perplexity(
    model: GPT2,
    text: str | list[int],
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """``{"tokens", "cross_entropy", "perplexity"}`` of ``text`` (a string or token ids).

    ``window`` defaults to the model's context, ``stride`` to ``window // 2``; ``batch_size``
    windows run as one forward pass (memory grows with ``batch_size * window * n_vocab``).
    ``tokens`` counts the scored tokens (all but the first), ``cross_entropy`` is their mean
    negative log-likelihood in nats, ``perplexity`` its exp. ``progress(done, total)`` is
    called with the number of windows scored after each batch.
    """
    ids = np.asarray(model.tokenizer.encode(text) if isinstance(text, str) else text, dtype=np.int64)
    nll = token_nlls(model, ids, window, stride, batch_size, progress)
    scored = ~np.isnan(nll)
    cross_entropy = float(nll[scored].sum()) / int(scored.sum())
    return {"tokens": int(scored.sum()), "cross_entropy": cross_entropy, "perplexity": float(np.exp(cross_entropy))}


def eval_command(
    data: Annotated[Path, typer.Option("--data", "-d", help="A UTF-8 text file to score.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Checkpoint path or downloaded name; default: a downloaded GPT-2, else the bundled model.")] = None,  # noqa: E501
    window: Annotated[int | None, typer.Option(help="Tokens per window (default: the model's context).")] = None,
    stride: Annotated[int | None, typer.Option(help="Tokens between window starts (default: window // 2).")] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    backend: Annotated[str, typer.Option(help="numpy, jax, torch or cupy.")] = "numpy",
    dtype: Annotated[str, typer.Option(help="Weight storage: float32, float16 or bfloat16.")] = "float32",
) -> None:
    """Perplexity of a text file (Hugging Face's sliding-window method).

    Example: `npgpt eval --data tests/fixtures/kjv_heldout.txt --stride 128`
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from .cli import _console, _load

    try:
        text = data.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise NpgptError(f"cannot read {data}: {reason}") from None
    if not text.strip():
        raise NpgptError(f"{data} is empty; give a text file to score")
    m = _load(model, backend, dtype)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=_console(stderr=True), transient=True) as bar:
        task = bar.add_task("windows", total=None)
        result = perplexity(m, text, window=window, stride=stride, batch_size=batch_size,
                            progress=lambda done, total: bar.update(task, completed=done, total=total))
    console = _console()
    console.print(f"tokens         {result['tokens']:,}")
    console.print(f"cross-entropy  {result['cross_entropy']:.4f} nats/token")
    console.print(f"perplexity     {result['perplexity']:.3f}")


def score_command(
    file: Annotated[str, typer.Argument(help="A UTF-8 text file to score, or - for standard input.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Checkpoint path or downloaded name; default: a downloaded GPT-2, else the bundled model.")] = None,  # noqa: E501
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: tokens, logprobs, totals.")] = False,
    window: Annotated[int | None, typer.Option(help="Tokens per window (default: the model's context).")] = None,
    stride: Annotated[int | None, typer.Option(help="Tokens between window starts (default: window // 2).")] = None,
    backend: Annotated[str, typer.Option(help="numpy, jax, torch or cupy.")] = "numpy",
    dtype: Annotated[str, typer.Option(help="Weight storage: float32, float16 or bfloat16.")] = "float32",
) -> None:
    """Each token's log-probability and surprisal (bits) in a text, its log-likelihood and perplexity.

    Example: `echo "In the beginning God created" | npgpt score -`  or  `npgpt score notes.txt --json`
    """
    from .cli import _console, _load, _token_text

    text = _read_text(file)
    m = _load(model, backend, dtype)
    result = score(m, text, window=window, stride=stride)
    pieces = [_token_text(m.tokenizer.token_bytes(t)) for t in result.tokens]
    if as_json:
        doc: dict[str, Any] = {
            "tokens": [{"id": t, "text": p, "logprob": lp, "surprisal_bits": None if lp is None else -lp / math.log(2)}
                       for t, p, lp in zip(result.tokens, pieces, result.token_logprobs, strict=True)],
            "tokens_scored": result.n_scored, "log_likelihood": result.log_likelihood,
            "cross_entropy": result.cross_entropy, "perplexity": result.perplexity,
        }
        sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
        return
    from rich.table import Table

    table = Table("#", "id", "token", "logprob", "surprisal (bits)", box=None, pad_edge=False)
    for i, (t, p, lp) in enumerate(zip(result.tokens, pieces, result.token_logprobs, strict=True)):
        table.add_row(str(i), str(t), repr(p), "" if lp is None else f"{lp:.4f}",
                      "" if lp is None else f"{-lp / math.log(2):.3f}")
    console = _console()
    console.print(table)
    console.print(f"tokens scored   {result.n_scored:,} of {len(result.tokens):,}")
    console.print(f"log-likelihood  {result.log_likelihood:.4f} nats")
    console.print(f"perplexity      {result.perplexity:.3f}")


def _read_text(file: str) -> str:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise NpgptError(f"cannot read {file}: {reason}") from None
    if not text.strip():
        raise NpgptError(f"{'standard input' if file == '-' else file} is empty; give a text to score")
    return text
