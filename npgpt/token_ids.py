"""Reading the token ids a user passes, for every method that takes them (logits, the hooks, generate,
next_tokens, score), so that none refuses what another takes.

Ids come as a list or tuple of ints (nested for rows), a NumPy array of any integer type, or another
library's array (a PyTorch tensor, a JAX array) read through NumPy's ``__array__``. Never cast: floats
and bools are refused (``int(1.5)`` would silently be id 1), and so are text and bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import NpgptError, is_integer, shown


def is_array_like(x: Any) -> bool:
    """A list, tuple or array of some library (one with NumPy's ``__array__``); never text or bytes."""
    if isinstance(x, (str, bytes, bytearray)):
        return False
    return isinstance(x, (Sequence, np.ndarray)) or hasattr(x, "__array__")


def as_ids(x: Any, what: str, expected: str, param: str | None = None, ragged: str = "") -> np.ndarray:
    """``x`` as int64 token ids of its own shape (the caller checks the shape), or NpgptError
    "``what`` must be ``expected``, got ..." naming what came, with the way forward where there is one.

    ``ragged``: what to add when ``x`` holds rows of different lengths (the caller knows the fix).
    """
    if not is_array_like(x):
        hint = ""
        if isinstance(x, str):
            hint = "; encode the text first: model.tokenizer.encode(text)"
        elif isinstance(x, (bytes, bytearray)):
            hint = "; decode the bytes first"
        elif isinstance(x, Iterator):  # a generator or map of ids: read once, and no shape to check before reading
            hint = "; pass them as a list: list(ids)"
        elif isinstance(x, Mapping) and "input_ids" in x:  # Hugging Face's BatchEncoding, tokenizer(text)
            hint = (
                ", a tokenizer's output: pass the text itself, or its ['input_ids'] "
                "(and to logits or the hooks attention_mask=its ['attention_mask'])"
            )
        raise NpgptError(f"{what} must be {expected}, got {type(x).__name__}{hint}", param)
    try:
        arr = np.asarray(x)
    except ValueError:  # NumPy's "inhomogeneous shape"
        raise NpgptError(f"{what} must be {expected}, got rows of different lengths{ragged}", param) from None
    except TypeError:  # an array that will not leave its device implicitly (CuPy's)
        unread = f"a {type(x).__name__} NumPy cannot read; pass a list or NumPy array"
        raise NpgptError(f"{what} must be {expected}, got {unread}", param) from None
    if arr.size == 0:  # [] reads as float64
        return arr.astype(np.int64)
    if arr.dtype.kind in "US":  # a list of texts (or of texts and ids): NumPy reads every item as text
        raise NpgptError(
            f"{what} must be {expected}, got text (shape {arr.shape}); encode each text first: "
            "model.tokenizer.encode(text)",
            param,
        )
    if np.issubdtype(arr.dtype, np.integer) and (flag := _first_bool(x)) is not None:
        # NumPy reads [1, True] as int64 [1, 1]: the bool would silently be id 1
        raise NpgptError(f"{what} must be {expected}, got {shown(flag)} among the ids, which is no token id", param)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        # Python ints past int64 (2**70) made NumPy's object array, or with smaller ones its float64: "got float64"
        if (big := _past_int64(x)) is not None:
            raise NpgptError(f"{what} must be {expected}, got id {shown(big)}, past any vocabulary", param)
        raise NpgptError(f"{what} must be {expected}, got {arr.dtype} {arr.shape}", param)
    if arr.dtype == np.uint64 and arr.max() >= 2**63:  # int64 would wrap it round to a negative id
        raise NpgptError(f"{what} must be {expected}, got id {int(arr.max())}, past any vocabulary", param)
    # int64 whatever integers came: torch indexes only with int64/int32 (uint8 as a mask), and JAX
    # cannot compare int8/int16 ids with the vocabulary's size.
    return arr.astype(np.int64, copy=False)


def count_tokens(n_vocab: int, tokenizer: Any) -> int:
    """How many ids are tokens: ``[0, count)``. A padded vocabulary's rows past the tokenizer's last id
    (nanoGPT's and llm.c's 50304 over GPT-2's 50257) are no token: no text encodes to them or decodes from
    them, training never saw them, and generation never chooses them. So every method that takes the ids of
    a text (a prompt, a text to score, logit_bias) takes these only; the model's forward (logits, the hooks)
    takes any row of its embedding, ``[0, n_vocab)``, as transformers' and TransformerLens's do."""
    return min(n_vocab, tokenizer.n_vocab)


def padding_note(n_vocab: int, n_tokens: int) -> str:
    """What to add to "ids must be in [0, n_tokens)" when the model's vocabulary is padded past its tokens."""
    if n_vocab <= n_tokens:
        return ""
    return f"; ids {n_tokens} to {n_vocab - 1} are the model's padded vocabulary, no token: no text has them"


def check_token_ids(
    ids: Sequence[Any] | np.ndarray, n_vocab: int, n_tokens: int, what: str, param: str = "prompt"
) -> None:
    """Refuse an id of ``ids`` (a prompt's, or a text's to score: a list or an integer array) that is no token:
    outside ``[0, n_tokens)`` (see :func:`count_tokens`), or no integer at all (``True`` would be read as id 1,
    ``1.5`` as 1). NpgptError "``what`` has token id X, outside [0, n_tokens)" (with :func:`padding_note`), or
    "... not an integer". The one check of a text's ids for generate, next_tokens, score and the server's
    completions."""
    if isinstance(ids, np.ndarray) and np.issubdtype(ids.dtype, np.integer):
        if not ids.size or (ids.min() >= 0 and ids.max() < n_tokens):
            return
        ids = ids.tolist()
    if all(type(t) is int for t in ids) and (not ids or (min(ids) >= 0 and max(ids) < n_tokens)):
        return  # the usual case, at C speed; else find the first id at fault
    for t in ids:
        if not is_integer(t):
            raise NpgptError(f"{what} has token id {shown(t)}, not an integer; token ids must be integers", param)
        if not 0 <= t < n_tokens:
            raise NpgptError(
                f"{what} has token id {shown(t)}, outside the vocabulary [0, {n_tokens})"
                + padding_note(n_vocab, n_tokens),
                param,
            )


def _first_bool(x: Any) -> Any:
    """The first bool (Python's or NumPy's) in nested lists and tuples of ``x`` (or an object array's), or None."""
    if isinstance(x, np.ndarray):
        if x.dtype != object:
            return None
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        for item in x:
            if isinstance(item, (bool, np.bool_)):
                return item
            if isinstance(item, (list, tuple, np.ndarray)) and (found := _first_bool(item)) is not None:
                return found
    return None


def _past_int64(x: Any) -> int | None:
    """The first integer past int64 in nested lists and tuples of ``x`` (or an object array's), or None."""
    if isinstance(x, np.ndarray) and x.dtype == object:
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        return next((big for item in x if (big := _past_int64(item)) is not None), None)
    return x if is_integer(x) and not -(2**63) <= x < 2**63 else None


def id_list(ids: Any) -> list[int]:
    """Token ids [T] to decode, as a list of ints: a list, an array of any library, an iterator, or one id (as
    transformers' decode takes it). NpgptError (param "ids") for anything else, naming the fix."""
    if is_integer(ids):
        return [ids]
    if isinstance(ids, Iterator):
        ids = list(ids)
    if isinstance(ids, (list, tuple)) and all(is_integer(i) for i in ids):
        return list(ids)  # as given: an id past int64 is then named by the vocabulary's check, not as "object"
    arr = as_ids(ids, "ids", "integer token ids [T]", "ids")
    if arr.ndim > 1:  # generated rows [B, T], a tokenizer's return_tensors="pt" [1, T]
        raise NpgptError(
            f"ids must be integer token ids [T], got shape {arr.shape}; decode each row: "
            "[tokenizer.decode(row) for row in ids]",
            "ids",
        )
    return arr.reshape(-1).tolist()


def one_id(token_id: Any) -> int:
    """One token id to look up (``token_bytes``, a stream decoder's ``push``) as an int, or NpgptError (param
    "ids"): a bool or float is no id (``True`` read as id 1, 5.0 was tiktoken's TypeError)."""
    if not is_integer(token_id):
        raise NpgptError(f"a token id must be an integer, got {type(token_id).__name__} {shown(token_id)}", "ids")
    return int(token_id)


def as_mask(x: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``attention_mask`` for ids of ``shape`` [B, T] as bool [B, T] (True = token), or NpgptError (param
    "attention_mask"). Its values are 1 and 0 as booleans, integers or floats (transformers' are int64), in
    any library's array; [T] beside ids [T]. Anything else is refused, never cast: 2, 0.5, NaN or "a" would
    read as a token and None as padding."""
    expected = "1 (token) or 0 (padding) for each id"
    try:
        arr = np.asarray(x)
    except ValueError:  # NumPy's "inhomogeneous shape"
        raise NpgptError(
            f"attention_mask must be {expected}, got rows of different lengths", "attention_mask"
        ) from None
    except TypeError:  # an array that will not leave its device implicitly (CuPy's)
        unread = f"a {type(x).__name__} NumPy cannot read; pass a list or NumPy array"
        raise NpgptError(f"attention_mask must be {expected}, got {unread}", "attention_mask") from None
    if arr.dtype != bool:
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise NpgptError(f"attention_mask must be {expected}, got {arr.dtype} {arr.shape}", "attention_mask")
        bad = (arr != 0) & (arr != 1)  # NaN too
        if bad.any():
            raise NpgptError(f"attention_mask must be {expected}, got {shown(arr[bad][0].item())}", "attention_mask")
    given = arr.shape
    if arr.ndim == 1 and len(shape) == 2 and shape[0] == 1:
        arr = arr[None, :]  # as ids [T] are one row
    if arr.shape != shape:
        raise NpgptError(f"attention_mask must be [B, T], the shape of ids {shape}, got {given}", "attention_mask")
    return arr.astype(bool)
