"""Perplexity of a text under a model, by Hugging Face's sliding-window method, and ``npgpt eval``.

A text longer than the context is scored in windows of ``window`` tokens whose starts are
``stride`` apart (the loop of Hugging Face's "Perplexity of fixed-length models" guide). Each
window scores only the tokens the previous one did not, so with ``stride < window`` every token
after the first is scored exactly once, with ``window - stride`` tokens of context or more
(except in the first window). A smaller stride gives each token more context: a lower, slower
perplexity. With ``stride == window`` the windows are disjoint and, as in HF, each window's
first token (which has no context in it) is not scored. The last window starts on the stride
grid and simply ends with the text, as in HF's loop.

Unlike the guide, which weights each window's mean loss by an approximate token count, the
negative log-likelihoods are summed per token, so the result is the exact mean over the
scored tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from .errors import NpgptError

if TYPE_CHECKING:
    from .api import GPT2


def windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, first_scored)`` for each window over ``n_tokens`` tokens, in HF's order.

    The window covers ``ids[begin:end]`` and scores the targets ``ids[first_scored:end]``
    (position t's logits predict token t + 1, so the first window scores from token 1).
    """
    out, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        out.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n_tokens:
            break
    return out


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:  # [N, V], [N] -> [N]
    """``-log softmax(logits)[target]`` per row, in float64 for the sum that follows."""
    logits = logits.astype(np.float64)
    m = logits.max(axis=-1)  # subtract the max so exp() cannot overflow
    lse = np.log(np.exp(logits - m[:, None]).sum(axis=-1)) + m
    return lse - logits[np.arange(len(targets)), targets]


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
    n_ctx = model.config.n_ctx
    window = n_ctx if window is None else window
    if not 2 <= window <= n_ctx:
        raise NpgptError(f"--window must be between 2 and the model's context of {n_ctx} tokens, got {window}")
    stride = max(1, window // 2) if stride is None else stride
    if not 1 <= stride <= window:
        raise NpgptError(f"--stride must be between 1 and the window ({window}), got {stride}")
    if batch_size < 1:
        raise NpgptError(f"--batch-size must be at least 1, got {batch_size}")
    ids = np.asarray(model.tokenizer.encode(text) if isinstance(text, str) else text, dtype=np.int64)
    if len(ids) < 2:
        raise NpgptError(f"the text has {len(ids)} token(s); perplexity needs at least 2")

    spans = windows(len(ids), window, stride)
    total_nll, n_scored = 0.0, 0
    for i in range(0, len(spans), batch_size):
        group = spans[i : i + batch_size]
        # Right-pad a short (last) window with token 0: attention is causal, so tokens placed
        # after the real ones cannot change the real ones' logits, and they are never scored.
        width = max(end - begin for begin, end, _ in group)
        batch = np.zeros((len(group), width), np.int64)
        for row, (begin, end, _) in enumerate(group):
            batch[row, : end - begin] = ids[begin:end]
        logits = model.logits(batch)  # [b, width] -> [b, width, V]
        for row, (begin, end, first) in enumerate(group):
            # Targets ids[first:end] are predicted at positions first-1 .. end-2 of the window.
            nll = token_nll(logits[row, first - 1 - begin : end - 1 - begin], ids[first:end])
            total_nll += float(nll.sum())
            n_scored += end - first
        if progress is not None:
            progress(min(i + batch_size, len(spans)), len(spans))

    cross_entropy = total_nll / n_scored
    return {"tokens": n_scored, "cross_entropy": cross_entropy, "perplexity": float(np.exp(cross_entropy))}


def eval_command(
    data: Annotated[Path, typer.Option("--data", "-d", help="A UTF-8 text file to score.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Checkpoint path or downloaded name; default: a downloaded GPT-2, else the bundled model.")] = None,  # noqa: E501
    window: Annotated[int | None, typer.Option(help="Tokens per window (default: the model's context).")] = None,
    stride: Annotated[int | None, typer.Option(help="Tokens between window starts (default: window // 2).")] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    backend: Annotated[str, typer.Option(help="numpy, jax, torch or cupy.")] = "numpy",
    dtype: Annotated[str, typer.Option(help="Weight storage: float32, float16, bfloat16 or int8 (not numpy).")] = "float32",  # noqa: E501
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
