"""Perplexity of a text under a model, by Hugging Face's sliding-window method (``npgpt eval`` runs it).

The windows and the per-token negative log-likelihoods are :mod:`npgpt.score`'s (its docstring
describes the method); the perplexity is the exp of their mean over the scored tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .score import LanguageModel, exp_loss, token_ids, token_nll, token_nlls, windows

__all__ = ["perplexity", "token_nll", "token_nlls", "windows"]


def perplexity(
    model: LanguageModel,
    text: str | Sequence[int] | np.ndarray,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    allow_special: bool = False,
) -> dict[str, Any]:
    """``{"tokens", "cross_entropy", "perplexity"}`` of ``text`` (a string or token ids).

    ``window`` defaults to the model's context, ``stride`` to ``window // 2``; ``batch_size``
    windows run as one forward pass (memory grows with ``batch_size * window * n_vocab``).
    ``tokens`` counts the scored tokens (all but the first), ``cross_entropy`` is their mean
    negative log-likelihood in nats, ``perplexity`` its exp. ``progress(done, total)`` is
    called with the number of windows scored after each batch. ``allow_special``: a literal
    ``<|endoftext|>`` in the string is the special token (as :func:`~npgpt.score.score` reads it).
    Raises NpgptError as :func:`~npgpt.score.token_nlls` does.
    """
    nll = token_nlls(model, token_ids(model, text, allow_special), window, stride, batch_size, progress)
    scored = ~np.isnan(nll)
    cross_entropy = float(nll[scored].sum()) / int(scored.sum())
    return {"tokens": int(scored.sum()), "cross_entropy": cross_entropy, "perplexity": exp_loss(cross_entropy)}
