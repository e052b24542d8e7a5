"""What a hooked run reads and returns, as TransformerLens's: text as token ids (``to_tokens``, ``prepend_bos``,
``padding_side``) and ``return_type`` ("logits", "loss", "both" or None, with :func:`lm_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .engine import as_engine
from .errors import NpgptError, is_integer, shown
from .sampling import log_softmax
from .token_ids import as_ids

if TYPE_CHECKING:
    from .engine import Engine, HasEngine


def is_text(x: Any) -> bool:
    """A text or a non-empty list of texts: what TransformerLens tokenizes where it takes tokens."""
    return isinstance(x, str) or (isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(t, str) for t in x))


def to_tokens(
    model: Engine | HasEngine,
    text: str | Sequence[str],
    prepend_bos: bool | None = True,
    padding_side: str | None = "right",
    truncate: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """TransformerLens's ``to_tokens`` for GPT-2: ids [B, T] of a text (B = 1) or a list of texts, and the
    attention mask [B, T] where rows are padded on the left (None otherwise).

    ``truncate`` (TransformerLens's default): each row cut to its first ``n_ctx`` tokens, ``<|endoftext|>``
    included, so that it runs; with ``prepend_bos=False`` to ``n_ctx - 1``, as there (it cuts
    ``<|endoftext|>`` + text, then takes the ``<|endoftext|>`` away).

    ``prepend_bos`` (TransformerLens's default for GPT-2, and npgpt's here): ``<|endoftext|>`` first,
    as GPT-2 saw at the start of each document. Rows of unequal length are padded with
    ``<|endoftext|>`` (GPT-2's pad token there) on ``padding_side``: on the right, as TransformerLens,
    with no mask (causal attention keeps the real tokens' activations as unpadded); on the left with
    the mask, so that each row's activations are its unpadded run's. A literal ``<|endoftext|>`` in the
    text is the special token, as Hugging Face's tokenizer reads it. None for either is its default, as there.
    """
    prepend_bos = True if prepend_bos is None else prepend_bos
    padding_side = padding_side or "right"
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:  # an Engine: weights and no tokenizer
        raise NpgptError("text needs the model's tokenizer: pass token ids, or use the model npgpt.load returns")
    if not isinstance(prepend_bos, (bool, np.bool_)):
        raise NpgptError(f"prepend_bos must be True or False, got {shown(prepend_bos)}", param="prepend_bos")
    if padding_side not in ("left", "right"):
        raise NpgptError(f"padding_side must be 'left' or 'right', got {shown(padding_side)}", param="padding_side")
    if not isinstance(truncate, (bool, np.bool_)):
        raise NpgptError(f"truncate must be True or False, got {shown(truncate)}", param="truncate")
    if not is_text(text):
        raise NpgptError(f"text must be a str or a non-empty list of str, got {shown(text)}")
    texts = [text] if isinstance(text, str) else list(text)
    bos = [tokenizer.eot_id] if prepend_bos else []
    limit = model.config.n_ctx - (not prepend_bos) if truncate else None
    rows = [(bos + tokenizer.encode(t, allow_special=True))[:limit] for t in texts]
    T = max(map(len, rows))
    if T == 0:
        raise NpgptError("the text is empty and prepend_bos=False: there is no token to run")
    ids = np.full((len(rows), T), tokenizer.eot_id, np.int64)
    mask = np.zeros((len(rows), T), np.int64)
    for i, row in enumerate(rows):
        at = slice(T - len(row), T) if padding_side == "left" else slice(0, len(row))
        ids[i, at], mask[i, at] = row, 1
    return ids, (mask if padding_side == "left" and not mask.all() else None)


def to_single_token(model: Any, text: Any) -> int:
    """TransformerLens's ``to_single_token``: the id of a text that is one token (with no ``<|endoftext|>`` first)."""
    if not isinstance(text, str):
        raise NpgptError(f"to_single_token takes a text that is one token, such as ' cat', got {shown(text)}")
    ids = to_tokens(model, text, prepend_bos=False, truncate=False)[0][0] if text else np.zeros(0, np.int64)
    if ids.size != 1:
        pieces = [model.tokenizer.decode([int(t)]) for t in ids[:8]] + (["..."] if ids.size > 8 else [])
        raise NpgptError(
            f"{text!r} is {ids.size} tokens {pieces}, not one: to_single_token takes a text that is one token "
            "(mind the leading space: ' cat'); model.to_tokens(text, prepend_bos=False) gives the ids of any text"
        )
    return int(ids[0])


def get_token_position(
    model: Any,
    single_token: Any,
    input: Any,
    mode: str = "first",
    prepend_bos: bool | None = None,
    padding_side: str | None = None,
) -> int:
    """TransformerLens's ``get_token_position``: the position of ``single_token`` (a one-token text or an id) in
    ``input``, a text (``<|endoftext|>`` first with ``prepend_bos``, as :func:`to_tokens`) or token ids [T] or
    [1, T]; its first occurrence, or with ``mode`` "last" its last."""
    if mode not in ("first", "last"):
        raise NpgptError(f"mode must be 'first' or 'last', got {shown(mode)}", param="mode")
    if isinstance(input, str):
        ids = to_tokens(model, input, prepend_bos, padding_side)[0][0]
    else:
        ids = as_ids(input, "get_token_position's input", "a text or token ids [T] or [1, T]")
        if ids.ndim == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.ndim != 1:
            raise NpgptError(f"get_token_position's input must be a text or token ids [T] or [1, T], got {ids.shape}")
    token = to_single_token(model, single_token) if isinstance(single_token, str) else single_token
    if hasattr(token, "item") and not is_integer(token):  # a one-element NumPy array or torch tensor
        try:
            token = token.item()
        except (ValueError, RuntimeError):  # more than one element
            pass
    if not is_integer(token):
        raise NpgptError(f"single_token must be a one-token text or a token id, got {shown(single_token)}")
    found = np.flatnonzero(ids == int(token))
    if found.size == 0:
        shown_token = shown(single_token)
        raise NpgptError(f"the token {shown_token} does not occur in the input ({ids.size} tokens)")
    return int(found[0] if mode == "first" else found[-1])


def read_input(
    model: Engine | HasEngine, ids: Any, attention_mask: Any, prepend_bos: bool | None, padding_side: str | None
) -> tuple[Any, Any]:
    """``(ids, attention_mask)`` of what a hooked run was given: token ids as they are (``prepend_bos``
    and ``padding_side`` are for text, as in TransformerLens), a text or list of texts by :func:`to_tokens`."""
    if not is_text(ids):
        return ids, attention_mask
    if attention_mask is not None:
        raise NpgptError(
            "attention_mask is for token ids; text is padded, and masked, by padding_side ('left' or 'right')",
            param="attention_mask",
        )
    tokens, mask = to_tokens(model, ids, prepend_bos, padding_side)
    if mask is not None and not (has := mask.any(axis=1)).all():  # left-padded; right padding runs as TransformerLens's
        raise NpgptError(
            f"text {int(np.argmin(has))} is empty, and with prepend_bos=False it has no token to run; leave it out "
            "(or keep prepend_bos=True, <|endoftext|> first)",
            param="prepend_bos",
        )
    return tokens, mask


RETURN_TYPES = ("logits", "loss", "both", None)  # TransformerLens's return_type


def lm_loss(logits: Any, ids: np.ndarray, attention_mask: Any = None, per_token: bool = False) -> Any:
    """TransformerLens's loss (``lm_cross_entropy_loss``): the mean over rows and positions of the
    negative log-probability of each next token, as a float32 scalar; ``per_token``: [B, T-1] of them.
    With ``attention_mask``, the pairs with a padding token are left out (0 in ``per_token``'s)."""
    logits = np.asarray(logits, np.float64)  # float64: the mean of many small terms, as score.py's
    nll = -np.take_along_axis(log_softmax(logits[:, :-1]), ids[:, 1:, None], axis=-1)[..., 0]  # [B, T-1]
    if attention_mask is None:
        count = nll.size
    else:
        valid = np.asarray(attention_mask).astype(bool)
        pairs = valid[:, :-1] & valid[:, 1:]
        nll, count = np.where(pairs, nll, 0.0), int(pairs.sum())
    if per_token:
        return nll.astype(np.float32)
    if count == 0:
        raise NpgptError("the loss needs two tokens in a row to predict one from the other; give a longer input")
    return np.float32(nll.sum() / count)


def check_return_type(return_type: Any, loss_per_token: Any) -> None:
    if return_type not in RETURN_TYPES:
        raise NpgptError(
            f"return_type must be 'logits', 'loss', 'both' or None (TransformerLens's), got {shown(return_type)}",
            param="return_type",
        )
    if not isinstance(loss_per_token, bool):
        raise NpgptError(f"loss_per_token must be True or False, got {shown(loss_per_token)}", param="loss_per_token")


def run_output(
    model: Engine | HasEngine, logits: Any, ids: Any, attention_mask: Any, return_type: str | None, per_token: bool
) -> Any:
    """What a hooked run returns for TransformerLens's ``return_type``: the logits (as the caller gives
    them), the loss (NumPy float32), both, or None. ``ids`` and ``attention_mask`` as checked by the run."""
    if return_type in ("logits", None):
        return logits if return_type else None
    ids, valid = as_engine(model).check_ids(ids, attention_mask)
    host = logits if isinstance(logits, np.ndarray) else model.backend.to_numpy(logits)  # host=False: the backend's
    loss = lm_loss(host, ids, None if attention_mask is None else valid, per_token)
    return loss if return_type == "loss" else (logits, loss)
