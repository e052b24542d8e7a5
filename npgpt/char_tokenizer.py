"""A character-level tokenizer for models trained from scratch (nanoGPT's ``shakespeare_char``).

The vocabulary is the sorted set of characters of the training text, then ``<|endoftext|>``:
a 2-layer, 64-wide model over ~65 characters has its parameters in the layers, not in a
50,257-row embedding. It has the interface of :class:`npgpt.tokenizer.Tokenizer`, so generation,
the server and evaluation use it unchanged. Saved with the model as JSON (:meth:`to_spec`) in
the npgpt file's metadata; :func:`tokenizer_from_spec` rebuilds it at load.

Hand-written (not a library's): a character table is a dict and a string join.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .errors import CheckpointError, NpgptError, shown
from .token_ids import id_list, one_id
from .tokenizer import (
    EOT,
    AddedToken,
    StreamDecoder,
    Tokenizer,
    check_decode_options,
    check_encode_options,
    check_text,
    check_texts,
    has_surrogate,
)


class CharTokenizer(Tokenizer):
    """One id per character of ``chars`` (in that order), then ``eot_id = len(chars)``.

    Text with a character outside the vocabulary raises NpgptError naming it (a character-level
    model cannot represent it; dropping it silently would change the prompt). A subclass of
    :class:`Tokenizer` so that everything typed to take one takes this; it overrides every method
    and never builds the BPE (no ``super().__init__``).
    """

    kind = "char"

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars) or not chars:
            raise CheckpointError("a character tokenizer needs a non-empty string of distinct characters")
        if has_surrogate(chars):  # JSON can spell one ("\\ud800"), no text holds one, no output can write one
            raise CheckpointError(
                "a character tokenizer's characters must be Unicode text; it holds a lone surrogate "
                f"({shown(next(c for c in chars if has_surrogate(c)))})"
            )
        self.chars = chars
        self._ids = {c: i for i, c in enumerate(chars)}
        self.eot_id = len(chars)
        self.eos_token_ids = (self.eot_id,)
        self.n_vocab = len(chars) + 1

    @classmethod
    def from_text(cls, texts: Iterable[str], source: str | None = None) -> CharTokenizer:
        """The vocabulary of ``texts``: every character that occurs, sorted by code point. NpgptError
        (naming ``source``, where the texts came from) if they hold no character at all."""
        seen: set[str] = set()
        for t in texts:
            seen.update(t)
        if not seen:
            where = f"{source}: " if source else ""
            raise NpgptError(f"{where}no text to build a character vocabulary from; give some text to train on")
        return cls("".join(sorted(seen)))

    def to_spec(self) -> dict[str, Any]:
        """JSON-ready description, stored beside the weights."""
        return {"type": self.kind, "chars": self.chars}

    def encode(self, text: str, allow_special: bool = False, **other: Any) -> list[int]:
        """Ids of ``text``'s characters; ``<|endoftext|>`` is one id only with ``allow_special``."""
        check_encode_options(allow_special, other)
        check_text(text)
        if allow_special and EOT in text:
            parts = text.split(EOT)
            ids = self.encode(parts[0])
            for part in parts[1:]:
                ids += [self.eot_id, *self.encode(part)]
            return ids
        try:
            return [self._ids[c] for c in text]
        except KeyError as e:
            raise NpgptError(
                f"character {e.args[0]!r} is not in this character-level model's vocabulary "
                f"of {len(self.chars)} characters; use only characters of its training text"
            ) from None

    def encode_batch(self, texts: list[str], allow_special: bool = False, **other: Any) -> list[list[int]]:
        check_encode_options(allow_special, other)
        check_texts(texts)
        return [self.encode(t, allow_special) for t in texts]

    def token_bytes(self, token_id: int) -> bytes:
        """UTF-8 bytes of one token's character (``<|endoftext|>`` for ``eot_id``)."""
        token_id = one_id(token_id)
        if token_id == self.eot_id:
            return EOT.encode()
        if not 0 <= token_id < len(self.chars):
            raise NpgptError(f"token id {token_id} is not in this model's vocabulary: ids are 0 to {self.eot_id}")
        return self.chars[token_id].encode("utf-8")

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        """Each token's character (``<|endoftext|>`` for ``eot_id``)."""
        return [self.token_bytes(i).decode("utf-8") for i in id_list(ids)]

    def decode_bytes(self, ids: Iterable[int] | int) -> bytes:
        return b"".join(self.token_bytes(i) for i in id_list(ids))  # never int(i): 1.5 is no id

    def decode(self, ids: Iterable[int] | int, skip_special_tokens: bool = False, **other: Any) -> str:
        check_decode_options(skip_special_tokens, other)
        if skip_special_tokens:  # <|endoftext|>, its one special token
            ids = [i for i in id_list(ids) if i != self.eot_id]
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


def tokenizer_from_spec(spec: dict[str, Any] | None) -> Tokenizer:
    """The tokenizer a model names: a character-level one (:meth:`CharTokenizer.to_spec`), GPT-2's with the
    tokens a fine-tune added (``{"type": "gpt2", "added_tokens": [...]}``, :meth:`Tokenizer.to_spec`), or
    GPT-2's own when it names none.

    Raises CheckpointError for a spec npgpt does not know.
    """
    if spec is None:
        return Tokenizer()
    if isinstance(spec, dict) and spec.get("type") == "gpt2" and isinstance(spec.get("added_tokens"), list):
        for t in spec["added_tokens"]:  # JSON's types, strictly: "special": "yes" is no true, "id": 1.0 no id
            if isinstance(t, dict) and not _added_token_types(t):
                raise CheckpointError(f"unreadable added tokens in the tokenizer ({str(t)[:60]}): {_ADDED_TYPES}")
        try:
            return Tokenizer(
                added_tokens=[AddedToken(**t) for t in spec["added_tokens"]], eos_token_ids=spec.get("eos_token_id")
            )
        except TypeError:  # an entry that is no AddedToken's fields
            raise CheckpointError(f"unreadable added tokens in the tokenizer ({str(spec)[:60]})") from None
        except NpgptError as e:
            raise CheckpointError(str(e)) from None
    if not isinstance(spec, dict) or spec.get("type") != CharTokenizer.kind or not isinstance(spec.get("chars"), str):
        raise CheckpointError(
            f"unknown tokenizer in the model file ({str(spec)[:60]}); "
            "this npgpt reads 'char' and 'gpt2' tokenizers only, or none (GPT-2's)"
        )
    return CharTokenizer(spec["chars"])


_ADDED_TYPES = "an added token's content is text, its id an integer, its special and normalized true or false"


def _added_token_types(token: dict[str, Any]) -> bool:
    """Whether an added token's fields, those it has, are of their JSON types (a bool is no id)."""
    kinds = {"content": (str,), "id": (int,), "special": (bool,), "normalized": (bool,)}
    return all(
        isinstance(token[k], kind) and not (k == "id" and isinstance(token[k], bool))
        for k, kind in kinds.items()
        if k in token
    )
