"""Scoring a text: each token's log-probability, the total log-likelihood and perplexity; ``npgpt score``.

The per-token numbers come from :func:`npgpt.evaluate.token_nlls`, the sliding-window method of
``npgpt eval``, so a text longer than the context is scored in overlapping windows and each
token is scored once. The OpenAI completions API gives the same numbers for a prompt that fits
the context as ``{"echo": true, "logprobs": 0, "max_tokens": 0}``.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from .errors import NpgptError
from .evaluate import token_nlls

if TYPE_CHECKING:
    from .api import GPT2


@dataclass(frozen=True)
class Score:
    """A text's tokens and their log-probabilities (natural log) under a model.

    ``token_logprobs[i]`` is ``log p(tokens[i] | tokens before it in its window)``; it is None for
    the first token, which nothing predicts (prepend ``<|endoftext|>`` with ``allow_special`` to
    score it), and, with ``stride == window``, for each window's first token.
    """

    tokens: list[int]
    token_logprobs: list[float | None]
    log_likelihood: float  # sum of the scored tokens' logprobs, nats (summed in float64)
    n_scored: int

    @property
    def cross_entropy(self) -> float:
        """Mean negative log-likelihood per scored token, nats."""
        return -self.log_likelihood / self.n_scored

    @property
    def perplexity(self) -> float:
        """``exp(cross_entropy)``."""
        return math.exp(self.cross_entropy)


def score(model: GPT2, text: str | list[int], window: int | None = None, stride: int | None = None,
          batch_size: int = 8, allow_special: bool = False) -> Score:
    """Score ``text`` (a string, or token ids) with ``model``; see :class:`Score`.

    ``window``/``stride``/``batch_size`` as in :func:`npgpt.evaluate.perplexity` (default: the
    whole context, half of it). ``allow_special``: a literal ``<|endoftext|>`` in the string is
    the special token. Raises NpgptError for fewer than 2 tokens, bad ids or non-finite logits.
    """
    if isinstance(text, str):
        ids = model.tokenizer.encode(text, allow_special=allow_special)
    else:
        arr = np.asarray(text)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise NpgptError(f"text must be a string or a 1-D sequence of token ids, got {arr.dtype} {arr.shape}")
        ids = [int(t) for t in arr]
        if ids and (min(ids) < 0 or max(ids) >= model.config.n_vocab):
            raise NpgptError(f"token ids must be in [0, {model.config.n_vocab}), the model's vocabulary")
    nll = token_nlls(model, np.asarray(ids, dtype=np.int64), window, stride, batch_size)
    scored = ~np.isnan(nll)
    logprobs = [None if np.isnan(x) else float(-x) for x in nll]
    return Score(ids, logprobs, float(-nll[scored].sum()), int(scored.sum()))


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
