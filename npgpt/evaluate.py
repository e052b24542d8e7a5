"""Perplexity of a text under a model, by Hugging Face's sliding-window method (``npgpt eval`` runs it).

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
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import NpgptError
from .sampling import log_softmax

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
    return -log_softmax(logits.astype(np.float64))[np.arange(len(targets)), targets]


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
