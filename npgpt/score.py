"""Scoring a text: each token's log-probability given the tokens before it, in sliding windows.

A text longer than the context is scored in windows of ``window`` tokens whose starts are
``stride`` apart (the loop of Hugging Face's "Perplexity of fixed-length models" guide). Each
window scores only the tokens the previous one did not, so with ``stride < window`` every token
after the first is scored exactly once, with ``window - stride`` tokens of context or more
(except in the first window). A smaller stride gives each token more context: a lower, slower
perplexity. With ``stride == window`` the windows are disjoint and, as in HF, each window's
first token (which has no context in it) is not scored. The last window starts on the stride
grid and simply ends with the text, as in HF's loop.

Unlike the guide, which weights each window's mean loss by an approximate token count, the
negative log-likelihoods are kept per token (and summed in float64), so a perplexity from them
is the exact mean over the scored tokens. ``npgpt eval`` and ``GPT2.score`` both use these; the
OpenAI completions API gives the same numbers for a prompt that fits the context as
``{"echo": true, "logprobs": 0, "max_tokens": 0}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import numpy as np

from .config import GPT2Config
from .errors import NpgptError, is_integer, shown
from .hostinfo import physical_memory
from .sampling import check_finite, log_softmax
from .token_ids import as_ids, check_token_ids, count_tokens, is_array_like
from .tokenizer import TextOffsets, Tokenizer


class LanguageModel(Protocol):
    """What scoring needs of a model (``npgpt.api.GPT2`` has it): its config, tokenizer and logits."""

    @property
    def config(self) -> GPT2Config: ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    def logits(self, ids: Any, attention_mask: Any = None) -> np.ndarray: ...


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


def token_rank(logits: np.ndarray, targets: np.ndarray, n_tokens: int) -> np.ndarray:  # [N, V], [N] -> [N]
    """Each target's rank among the tokens ``[0, n_tokens)`` the model could predict (1 + how many it finds
    likelier; vLLM's prompt logprobs' ``rank``): 1 where greedy decoding would pick it (or one tied with it)."""
    chosen = logits[np.arange(len(targets)), targets]
    return (logits[:, :n_tokens] > chosen[:, None]).sum(axis=1) + 1


def token_nlls(
    model: LanguageModel,
    ids: np.ndarray,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:  # [N] int ids -> [N] float64
    """Each token's negative log-likelihood in nats given the tokens before it in its window, float64 [N];
    see :func:`token_scores`."""
    return token_scores(model, ids, window, stride, batch_size, progress, ranked=False)[0]


def token_scores(
    model: LanguageModel,
    ids: np.ndarray,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    ranked: bool = True,
) -> tuple[np.ndarray, np.ndarray]:  # [N] int ids -> [N] float64, [N] int64
    """Each token's negative log-likelihood in nats given the tokens before it in its window, float64 [N], and its
    rank there (:func:`token_rank`; 0 where not scored, and everywhere unless ``ranked``), int64 [N].

    NaN where a token is not scored: the first token (nothing predicts it) and, with ``stride ==
    window``, each window's first token. ``window`` defaults to the model's context, ``stride`` to
    ``window // 2``; ``batch_size`` windows run as one forward pass (memory grows with
    ``batch_size * window * n_vocab``); ``progress(done, total)`` is called with the number of
    windows scored after each batch. Raises NpgptError for a bad window, stride or batch size,
    fewer than 2 tokens, or logits that are not finite.
    """
    n_ctx = model.config.n_ctx
    window = n_ctx if window is None else window
    if not (is_integer(window) and 2 <= window <= n_ctx):
        raise NpgptError(
            f"window must be a whole number between 2 and the model's context of {n_ctx} tokens, got {shown(window)}",
            "window",
        )
    stride = max(1, window // 2) if stride is None else stride
    if not (is_integer(stride) and 1 <= stride <= window):
        raise NpgptError(
            f"stride must be a whole number between 1 and the window ({shown(window)}), got {shown(stride)}", "stride"
        )
    if not (is_integer(batch_size) and batch_size >= 1):
        raise NpgptError(f"batch_size must be a whole number, at least 1, got {shown(batch_size)}", "batch_size")
    if len(ids) < 2:
        raise NpgptError(
            f"the text has {len(ids)} token(s); scoring needs at least 2, as nothing predicts the first: to score "
            f"it, put <|endoftext|> (id {model.tokenizer.eot_id}; in a text, with allow_special=True) before it, "
            "as GPT-2 saw at the start of each document",
            keywords=("allow_special",),  # the CLI's --special-tokens
        )

    spans = windows(len(ids), window, stride)
    # the logits are the model's full output, a padded vocabulary's rows too (see below)
    _check_logits_fit(min(batch_size, len(spans)), min(window, len(ids)), model.config.n_vocab)
    out = np.full(len(ids), np.nan)
    ranks = np.zeros(len(ids), np.int64)
    n_tokens = count_tokens(model.config.n_vocab, model.tokenizer)
    for i in range(0, len(spans), batch_size):
        group = spans[i : i + batch_size]
        # Right-pad a short (last) window with token 0: attention is causal, so tokens placed
        # after the real ones cannot change the real ones' logits, and they are never scored.
        width = max(end - begin for begin, end, _ in group)
        batch = np.zeros((len(group), width), np.int64)
        for row, (begin, end, _) in enumerate(group):
            batch[row, : end - begin] = ids[begin:end]
        # [b, width] -> [b, width, V]: the softmax over the model's full output, a padded vocabulary's
        # rows too (nanoGPT's 50304), so a text's loss here is the one npgpt train minimises and reports
        # (train/loss.py), as nanoGPT's estimate_loss and transformers' loss compute it; only sampling,
        # which never picks a padded id, leaves those rows out
        logits = model.logits(batch)
        check_finite(logits)
        for row, (begin, end, first) in enumerate(group):
            # Targets ids[first:end] are predicted at positions first-1 .. end-2 of the window.
            predicting = logits[row, first - 1 - begin : end - 1 - begin]
            out[first:end] = token_nll(predicting, ids[first:end])
            if ranked:
                ranks[first:end] = token_rank(predicting, ids[first:end], n_tokens)
        if progress is not None:
            progress(min(i + batch_size, len(spans)), len(spans))
    return out, ranks


def _check_logits_fit(rows: int, width: int, n_vocab: int) -> None:
    """NpgptError for a batch whose float32 logits alone outgrow the machine's memory: ``batch_size=2048`` (llama.cpp's
    ``-b 2048`` counts tokens; npgpt's counts windows) asked for 400 GB at once and ended in MemoryError or the OOM
    killer instead of a line saying so."""
    need, memory = rows * width * n_vocab * 4, physical_memory()
    if memory is not None and need > memory:
        raise NpgptError(
            f"{rows} windows of {width} tokens in one pass (batch_size) need {need / 2**30:,.0f} GiB of logits, "
            f"more than this machine's {memory / 2**30:,.0f} GiB of memory; lower batch_size (it counts windows, "
            "not tokens)",
            "batch_size",
        )


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
    # each scored token's rank among the tokens (1 + how many the model found likelier; vLLM's prompt logprobs'
    # rank): 1 where greedy decoding would pick it. None where token_logprobs is None
    ranks: list[int | None] = field(default_factory=list)
    # each token's character offset in the text (OpenAI's logprobs.text_offset): the text given, or the ids' decoded
    text_offset: list[int] = field(default_factory=list)

    def loglikelihood(self, start: int) -> tuple[float, bool]:
        """lm-evaluation-harness's ``(log-likelihood, is_greedy)`` of the continuation ``tokens[start:]`` after a
        context of ``start`` tokens: the sum of its logprobs, and whether greedy decoding would give every one of its
        tokens (each of rank 1). For a text's context of ``k`` characters the continuation starts at the first token
        whose ``text_offset`` is ``k`` or more. Raises NpgptError for a ``start`` outside ``[1, len(tokens) - 1]``
        (nothing predicts the first token) or over a token not scored."""
        if not (is_integer(start) and 1 <= start < len(self.tokens)):
            raise NpgptError(
                f"start must be the continuation's first token, in [1, {len(self.tokens) - 1}] (the first token has no "
                f"logprob: put <|endoftext|> before a context that is empty), got {shown(start)}",
                "start",
            )
        logprobs, ranks = self.token_logprobs[start:], self.ranks[start:]
        if any(lp is None for lp in logprobs):
            raise NpgptError(
                "the continuation holds a token that was not scored (a window's first, with stride == window); "
                "score with a stride below the window",
                "start",
            )
        return float(math.fsum(cast(list[float], logprobs))), all(r == 1 for r in ranks)

    @property
    def cross_entropy(self) -> float:
        """Mean negative log-likelihood per scored token, nats."""
        return -self.log_likelihood / self.n_scored

    @property
    def perplexity(self) -> float:
        """``exp(cross_entropy)``; see :func:`exp_loss`."""
        return exp_loss(self.cross_entropy)


def exp_loss(cross_entropy: float) -> float:
    """The perplexity of a mean loss in nats, ``exp(cross_entropy)``: inf past a float's range (over 709 nats,
    a model sure of other tokens), as torch.exp gives, where math.exp raised OverflowError."""
    try:
        return math.exp(cross_entropy)
    except OverflowError:
        return math.inf


def score(
    model: LanguageModel,
    text: str | Sequence[int] | np.ndarray,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    allow_special: bool = False,
) -> Score:
    """Score ``text`` (a string, or token ids) with ``model``; see :class:`Score`.

    ``window``/``stride``/``batch_size`` as in :func:`token_nlls` (default: the
    whole context, half of it). ``allow_special``: a literal ``<|endoftext|>`` in the string is
    the special token. Raises NpgptError for fewer than 2 tokens, bad ids or non-finite logits.
    """
    ids = token_ids(model, text, allow_special)
    nll, ranks = token_scores(model, ids, window, stride, batch_size)
    scored = ~np.isnan(nll)
    logprobs = [None if np.isnan(x) else float(-x) for x in nll]
    offsets = TextOffsets(model.tokenizer)
    return Score(
        [int(t) for t in ids],
        logprobs,
        float(-nll[scored].sum()),
        int(scored.sum()),
        [int(r) if ok else None for r, ok in zip(ranks, scored, strict=True)],
        [offsets.push(int(t)) for t in ids],
    )


def token_ids(model: LanguageModel, text: Any, allow_special: bool = False) -> np.ndarray:  # -> [N] int64
    """The ids to score: ``text`` encoded, or given as token ids (a list, tuple or 1-D integer array, NumPy's
    or another library's).

    Raises NpgptError for anything else (bytes, a number, floats, a 2-D array: never cast or read as
    ids) and for an id outside the tokenizer's vocabulary: a padded vocabulary's ids past it (nanoGPT's
    50304) are no token, so they have no probability to score.
    """
    if isinstance(text, str):
        return np.asarray(model.tokenizer.encode(text, allow_special=allow_special), dtype=np.int64)
    several = "score takes one text (a string or its token ids); for several, score each: [model.score(t) for t in "
    several += "texts]"
    # a batch (lm-evaluation-harness's requests, vLLM's list of prompts) was told to encode each text, and then that
    # the rows were of different lengths
    if isinstance(text, np.ndarray) and text.dtype.kind in "US" and text.ndim == 1:
        given = "an array of texts"
        raise NpgptError(f"text must be a string or a 1-D sequence of token ids, got {given}; {several}", "text")
    if isinstance(text, (list, tuple)) and all(isinstance(t, str) or is_array_like(t) for t in text):
        if any(isinstance(t, str) for t in text) or len(text) > 1:
            given = f"a {type(text).__name__} of {len(text)} texts or rows of ids"
            raise NpgptError(f"text must be a string or a 1-D sequence of token ids, got {given}; {several}", "text")
    arr = as_ids(text, "text", "a string or a 1-D sequence of token ids", "text")
    if arr.ndim == 2 and len(arr) > 1:
        given = f"rows of ids {arr.shape}"
        raise NpgptError(f"text must be a string or a 1-D sequence of token ids, got {given}; {several}", "text")
    if arr.ndim != 1:
        # a tokenizer's return_tensors="pt" is a batch of one [1, T]
        one = "; for a batch of one [1, T] pass its row, ids[0]" if arr.ndim == 2 and len(arr) == 1 else ""
        raise NpgptError(
            f"text must be a string or a 1-D sequence of token ids, got {arr.dtype} {arr.shape}{one}", "text"
        )
    check_token_ids(arr, model.config.n_vocab, count_tokens(model.config.n_vocab, model.tokenizer), "text", "text")
    return arr
