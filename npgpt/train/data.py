"""Training data: text tokenised once into a uint16 token file, then random contiguous windows.

The token file is a flat array of GPT-2 token ids, or of a :class:`~npgpt.char_tokenizer.CharTokenizer`'s
(every id < 65536, so two bytes each) read
through a memory map: a batch touches only the pages its windows fall in, so corpora larger
than memory work. Documents (files of a folder) are separated by ``<|endoftext|>``.

Batches are drawn from an explicit ``np.random.Generator``; its state is saved with each
checkpoint so a resumed run sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..char_tokenizer import CharTokenizer
from ..errors import NpgptError, NpgptWarning, shown
from ..files import atomic_path, parse_json, read_regular, special_kind
from ..formats import model_file_kind
from ..formats.llmc import TOKENS_MAGIC as LLMC_TOKENS_MAGIC
from ..formats.npgpt_format import MODEL_FILE
from ..tokenizer import Tokenizer

TOKENS_DTYPE = np.uint16
TOKENS_FILE = "tokens.bin"  # the run's tokenised text, in its folder
_CHUNK_CHARS = 1 << 20  # tokenise in ~1 MB pieces so a large file never holds a huge id list


# The files a run writes into its folder (loop.py's list): the model, the resume state, the loss plot, the tokens
RUN_FILES = (MODEL_FILE, "train_state.safetensors", "loss.png", TOKENS_FILE, TOKENS_FILE + ".json")


def text_files(source: str | Path, out: str | Path | None = None) -> list[Path]:
    """The file itself, or every non-hidden file under a folder, in sorted (reproducible) order.

    A run folder ``out`` inside the folder is left out: its model, state and plot are the run's
    output, not text (``npgpt train data --out data/run`` resumed into "data/run/loss.png: not UTF-8");
    so are the run's own files (:data:`RUN_FILES`) where ``out`` is the folder itself (``npgpt train data
    --out data`` resumed into "data/tokens.bin is a token file, not text").
    """
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        # /dev/zero, a pipe: it is there, so "no such file" sent the user looking for a typo
        what = (
            "not a regular file or folder (a device, a pipe or a socket)"
            if source.exists()
            else "no such file or folder"
        )
        raise NpgptError(f"{source}: {what}; pass a text file, a folder of them, or a .bin token file")
    inside = None if out is None else Path(out).resolve()
    own = None  # the run folder that is the text folder itself: its files but the run's own are text
    if inside is not None and inside == source.resolve():
        own, inside = inside, None
    if inside is not None and not inside.is_relative_to(source.resolve()):
        inside = None
    files = sorted(
        p
        for p in source.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(source).parts)
        and not (inside is not None and p.resolve().is_relative_to(inside))
        and not (own is not None and p.name in RUN_FILES and p.parent.resolve() == own)
    )
    if not files:
        raise NpgptError(f"{source}: folder has no files to train on")
    token_file = next((p for p in files if p.suffix == ".bin" and not is_text(p)), None)
    if token_file is not None:  # read as text it was "binary ...; convert it to UTF-8 (e.g. iconv)"
        raise NpgptError(_token_file_in_folder(source, token_file), keywords=["tokenizer"])
    return files


def _token_file_in_folder(folder: Path, found: Path) -> str:
    """Why a folder holding a token file (nanoGPT's data/NAME/ with its train.bin) is not trained on, and the way."""
    text = folder / "input.txt"  # nanoGPT's prepare.py keeps the text it read there
    if (folder / "meta.pkl").is_file() and text.is_file():  # its character-level data: ids of its own characters
        return (
            f"{folder}: nanoGPT's character-level data ({found.name}, meta.pkl), and a folder's files are read as "
            f"text; {_char_text_way(text)}"
        )
    return (
        f"{folder}: {found} is a token file, not text, and a folder's files are read as text; pass the token "
        "file itself as the data (one .bin: nanoGPT's train.bin), or move it out of the folder"
    )


def _chunks(text: str, size: int = _CHUNK_CHARS) -> list[str]:
    """Split ``text`` into pieces of about ``size`` characters that tokenise to exactly the ids
    of the whole.

    A lone newline between two non-space characters is a pre-token of its own under GPT-2's
    regex, so cutting right after it does not change the ids. (After a longer whitespace run it
    would: before a word the run's last character goes with the word, so the run splits.)
    """
    pieces, start = [], 0
    while len(text) - start > size:
        cut = _safe_cut(text, start + size)
        pieces.append(text[start:cut])
        start = cut
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _safe_cut(text: str, at: int) -> int:
    """The first position >= ``at`` right after a lone newline (non-space on both sides), or the end."""
    i = max(at - 1, 1)
    while (i := text.find("\n", i)) != -1 and i + 1 < len(text):
        if not text[i - 1].isspace() and not text[i + 1].isspace():
            return i + 1
        i += 1
    return len(text)


def _fingerprint(files: list[Path], tokenizer_spec: dict | None = None) -> str:
    """What a token file is reused by: the files (path, size, time) and the tokenizer, and the version of how
    their text is read (v2: an empty file is no document, a UTF-16 one refused; a v1 file is tokenised again)."""
    h = hashlib.sha256(b"npgpt-tokens-v2")
    if tokenizer_spec is not None:  # GPT-2's BPE adds nothing, as before tokenizers were hashed
        h.update(json.dumps(tokenizer_spec, sort_keys=True).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


_WHOLE_HASH_TOKENS = 1 << 25  # 64 MiB of uint16 ids: hashed whole; more is hashed in 1024 evenly spaced samples


def tokens_fingerprint(tokens: np.ndarray) -> str:
    """What a run's training tokens are, to tell a resume on other data from one on the same: their
    count and a hash of their content (every id, or for a corpus past 2**25 tokens 1024 evenly spaced
    runs of 4096 ids and the last run, so a resume never reads gigabytes to check). Content, not paths:
    the same text moved or copied elsewhere is the same data."""
    h = hashlib.sha256(b"npgpt-train-tokens-v1")
    h.update(str(len(tokens)).encode())
    if len(tokens) <= _WHOLE_HASH_TOKENS:
        h.update(np.ascontiguousarray(tokens, dtype=TOKENS_DTYPE).tobytes())
    else:
        run = 4096
        for start in [*np.linspace(0, len(tokens) - run, 1024, dtype=np.int64).tolist(), len(tokens) - run]:
            h.update(np.ascontiguousarray(tokens[start : start + run], dtype=TOKENS_DTYPE).tobytes())
    return h.hexdigest()[:16]


def read_text(f: Path) -> str:
    """``f``'s UTF-8 text; NpgptError naming the file and the fix for one that cannot be read, is binary or
    UTF-16 (its NUL bytes are valid UTF-8: it was trained on as text), or is in another encoding."""
    fix = "convert it to UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or remove it from the training data"
    try:
        data = f.read_bytes()
    except OSError as e:
        raise NpgptError(f"{f}: cannot be read ({e.strerror}); fix it or remove it from the training data") from None
    if b"\0" in data:
        if (model := model_file_kind(f)) is not None:  # "convert it to UTF-8 (e.g. iconv ...)" was the advice
            raise _a_model(f, model, "text")
        raise NpgptError(f"{f}: binary or UTF-16, not UTF-8 text (it holds a NUL byte at byte {data.index(0)}); {fix}")
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark is not text: dropped
    except UnicodeDecodeError as e:
        raise NpgptError(f"{f}: not UTF-8 text (byte {e.start} is 0x{data[e.start]:02x}); {fix}") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as open() reads text


def _a_model(path: Path, kind: str, what: str) -> NpgptError:
    """A model file given as the data: the way to train from it."""
    return NpgptError(
        f"{path}: {kind}, not {what} to train on; start from it with init=, and train on text", keywords=["init"]
    )


def char_tokenizer(source: str | Path, out: str | Path | None = None) -> CharTokenizer:
    """The character vocabulary of a text file or folder (see :mod:`npgpt.char_tokenizer`), but the
    run folder ``out`` in it (:func:`text_files`)."""
    if Path(source).suffix == ".bin" and Path(source).is_file():
        raise NpgptError(
            f"{source}: a token file has no characters to build tokenizer='char' from; pass the text itself",
            keywords=["tokenizer"],
        )
    tok = CharTokenizer.from_text((read_text(f) for f in text_files(source, out)), source=str(source))
    if tok.n_vocab > np.iinfo(TOKENS_DTYPE).max + 1:
        raise NpgptError(f"{source}: {tok.n_vocab} distinct characters, more than a uint16 token file holds")
    return tok


@contextlib.contextmanager
def kept_on_error(folder: Path, names: tuple[str, ...] = (TOKENS_FILE, TOKENS_FILE + ".json")) -> Iterator[None]:
    """``folder``'s ``names`` as they were, should the block fail: a resume refused for other text tokenises
    that text into the run's tokens.bin first, and the run's own tokens (hours to make again for a large
    corpus) are put back. Kept by hard links, which the atomic rename of a new file leaves to the old one;
    where the file system has none, nothing is kept."""
    kept: list[tuple[Path, Path]] = []
    try:
        for name in names:
            if (folder / name).is_file():
                link = folder / f".{name}.kept"
                link.unlink(missing_ok=True)
                os.link(folder / name, link)
                kept.append((link, folder / name))
    except OSError:  # no hard links here
        for link, _ in kept:
            link.unlink(missing_ok=True)
        kept = []
    try:
        yield
    except BaseException:
        for link, f in kept:
            os.replace(link, f)
        raise
    finally:
        for link, _ in kept:
            link.unlink(missing_ok=True)


def tokenize_to_file(source: str | Path, dest: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """Tokenise a text file or folder into ``dest`` (uint16 ids), once, with GPT-2's BPE or
    ``tokenizer``.

    A JSON sidecar records the sources' paths, sizes and mtimes (and the tokenizer); when they
    are unchanged the existing file is reused. Written to a temporary file and renamed, so a
    kill leaves no half-written token file behind.
    """
    dest = Path(dest)
    files = text_files(source, dest.parent)  # the run folder it is written into is no text
    sidecar = dest.with_suffix(dest.suffix + ".json")
    fingerprint = _fingerprint(files, None if tokenizer is None else tokenizer.to_spec())
    if dest.exists() and not dest.is_file():  # a FIFO vouched for by its sidecar was read as the tokens: no such file
        raise NpgptError(
            f"{dest}: {special_kind(dest)}, not a regular file, where the tokenised text is kept; "
            "remove it and run again"
        )
    if dest.exists() and sidecar.exists():
        try:
            recorded = parse_json(read_regular(sidecar))  # a FIFO in its place: no wait for a writer
        except (OSError, ValueError):  # an unreadable sidecar: tokenise again
            recorded = None
        if isinstance(recorded, dict) and recorded.get("fingerprint") == fingerprint:  # a list or null: again
            return dest
    tok = Tokenizer() if tokenizer is None else tokenizer
    n_tokens = 0
    # The old sidecar goes first: one left beside new tokens (its write failed) would vouch for them as the old text's
    with contextlib.suppress(OSError):  # a folder in its place is not read as a sidecar either
        sidecar.unlink(missing_ok=True)
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out:
            for f in files:
                text = read_text(f)
                if not text:  # an empty file is no document: no <|endoftext|> of its own (two in a row, or a lone one)
                    continue
                ids = [tok.eot_id] if n_tokens else []  # <|endoftext|> between documents, as in WebText
                for piece in _chunks(text):
                    ids.extend(tok.encode(piece))
                np.asarray(ids, dtype=TOKENS_DTYPE).tofile(out)
                n_tokens += len(ids)
        if n_tokens == 0:
            raise NpgptError(f"{source}: no text to train on")
    try:
        with atomic_path(sidecar) as tmp:  # a half-written sidecar would break the next run's json.loads
            Path(tmp).write_text(
                json.dumps(
                    {"fingerprint": fingerprint, "n_tokens": n_tokens, "sources": [str(f) for f in files]}, indent=1
                )
            )
    except NpgptError as e:  # only lets the next run reuse the tokens: not worth stopping this one for
        warnings.warn(f"{e}; the text will be tokenised again next time", NpgptWarning, stacklevel=2)
    return dest


# llm.c's token shards (its dev/data/data_common.py): 256 int32 of header, [0] this magic, [1] the version (1: uint16
# ids, GPT-2's; 2: uint32, llama's), [2] the number of ids that follow. Read by the header, never as ids.
_LLMC_HEADER_BYTES = 256 * 4


def open_tokens(path: str | Path) -> np.ndarray:
    """A read-only memory map of a uint16 token file (npgpt's or nanoGPT's ``train.bin``, or llm.c's shard)."""
    path = Path(path)
    if not path.is_file():  # a FIFO would be waited on for ever, /dev/zero never ends: refused before a read
        what = f"{special_kind(path)}, not a regular file" if path.exists() else "no such token file"
        raise NpgptError(f"{path}: {what}; pass a uint16 token file")
    size = path.stat().st_size
    if (model := model_file_kind(path)) is not None:  # read as ids, a model was "token id 65535 ... vocabulary"
        raise _a_model(path, model, "tokens")
    head = np.fromfile(path, dtype="<i4", count=3) if size >= _LLMC_HEADER_BYTES else None
    if head is not None and head[0] == LLMC_TOKENS_MAGIC:
        version, count = int(head[1]), int(head[2])
        if version != 1:
            raise NpgptError(
                f"{path}: an llm.c token shard of version {version} (uint32 ids, for other models than GPT-2); "
                "npgpt reads version 1's uint16 GPT-2 ids: make it with llm.c's GPT-2 tokenizer"
            )
        held = (size - _LLMC_HEADER_BYTES) // 2
        if count < 1 or held < count:
            raise NpgptError(
                f"{path}: an llm.c token shard cut short: it holds {held} of its {count} tokens; "
                "re-download or re-make it"
            )
        return np.memmap(path, dtype=TOKENS_DTYPE, mode="r", offset=_LLMC_HEADER_BYTES, shape=(count,))
    if size < 2 or size % 2:
        raise NpgptError(f"{path}: not a uint16 token file (size {size} bytes)")
    if is_text(path):
        raise NpgptError(
            f"{path}: text, not a uint16 token file (a .bin is read as token ids); give a text file another name "
            "(e.g. .txt) to train on it, or download the token file again if this is an error page"
        )
    return np.memmap(path, dtype=TOKENS_DTYPE, mode="r")


def is_text(path: Path) -> bool:
    """Whether a file's first bytes are printable UTF-8 text. 256 ids are not: GPT-2's common ids are below 8192,
    whose high byte is a control character (a NUL for "," and ".", \\x01 for " the", 262)."""
    import codecs

    with open(path, "rb") as f:
        head = f.read(512)
    if len(head) < 16:  # a few ids could spell anything
        return False
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a character cut at the end
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\n\r" for c in text)


def _refuse_nanogpt_char_ids(path: Path) -> None:
    """NpgptError for nanoGPT's character-level token file: its prepare.py (shakespeare_char) writes the ids of
    the text's own characters to train.bin and their table to meta.pkl beside it, which nanoGPT's train.py reads
    for its vocabulary. Read as GPT-2's ids, they are all in the vocabulary (ids 0-64 are GPT-2's punctuation and
    letters), and the run trained a model whose every generation decodes to other characters, unsaid."""
    if (path.parent / "meta.pkl").is_file():
        text = path.parent / "input.txt"  # where nanoGPT's prepare.py keeps the text it read
        named = text if text.is_file() else "the text prepare.py read"
        raise NpgptError(
            f"{path}: nanoGPT's meta.pkl beside it says these are ids of the text's own characters "
            f"(nanoGPT's character-level data), not GPT-2's tokens; {_char_text_way(named)}",
            keywords=["tokenizer"],
        )


def _char_text_way(text: Path | str) -> str:
    """The way to nanoGPT's character-level ids from its text, which both refusals of its data give."""
    return f"train on that text with tokenizer='char', whose ids are nanoGPT's (the sorted characters): {text}"


_WIDTH_SAMPLE = 1 << 16  # uint16 values read to judge a token file's width: its first 128 KiB


def check_width(tokens: np.ndarray, path: Path) -> np.ndarray:
    """``tokens``, or NpgptError for a file whose ids were written wider than uint16 (``np.array(ids).tofile``
    writes NumPy's default int64): read as uint16, every second value of a little-endian int32 file is 0 (and
    three in four of an int64 file's), each id followed by its zero high half, and the ids, all in the
    vocabulary, were trained on with a "!" (GPT-2's id 0) between each two, unsaid. Text has no such pattern:
    64 values, every second one 0, are no tokens of a text."""
    head = np.asarray(tokens[:_WIDTH_SAMPLE])
    if len(head) < 64 or head[1::2].any() or not head[0::2].any():
        return tokens
    width = "int64" if not head[2::4].any() else "int32"
    raise NpgptError(
        f"{path}: token ids written as {width}, not uint16 (every second 2-byte value in it is 0, an id's high "
        "half); write them as uint16, as nanoGPT's prepare.py does: np.array(ids, dtype=np.uint16).tofile(path)"
    )


def load_tokens(source: str | Path, cache_dir: str | Path, tokenizer: Tokenizer | None = None) -> np.ndarray:
    """Token ids of ``source``: a ``.bin`` token file as is (GPT-2's ids; for nanoGPT's data folder its
    ``train.bin``), text tokenised into ``cache_dir`` (with GPT-2's BPE, or ``tokenizer``)."""
    source = nanogpt_train_file(source) or Path(source)
    if source.suffix == ".bin" and source.is_file():
        if isinstance(tokenizer, CharTokenizer):
            raise NpgptError(f"{source}: a token file cannot be read with a character tokenizer; pass the text")
        return read_token_file(source)
    return open_tokens(tokenize_to_file(source, Path(cache_dir) / TOKENS_FILE, tokenizer))


def read_token_file(path: Path) -> np.ndarray:
    """The uint16 ids of a token file given as data (``train.bin``, ``val.bin``), every check of one made."""
    _refuse_nanogpt_char_ids(path)
    return check_width(open_tokens(path), path)


def nanogpt_train_file(source: str | Path) -> Path | None:
    """``train.bin`` of nanoGPT's data folder (``data/openwebtext/``: its prepare.py writes ``train.bin`` and
    ``val.bin`` there) given as the data, or None for any other ``source``. A folder of character-level data
    (meta.pkl) is not one: :func:`text_files` names its way."""
    folder = Path(source)
    if folder.is_dir() and (folder / "train.bin").is_file() and os.path.lexists(folder / "val.bin"):
        if not (folder / "meta.pkl").exists():
            return folder / "train.bin"
    return None


def held_out_file(source: str | Path) -> Path | None:
    """The held-out token file that comes with the data ``source``, or None: nanoGPT's ``val.bin`` beside its
    ``train.bin`` (the file given, or in the data folder given), llm.c's ``NAME_val.bin`` beside ``NAME_train.bin``
    (its dev/data scripts' names). Found by name, so any kind of file in its place (a FIFO, a folder) is returned
    for :func:`read_token_file` to refuse, not passed over in silence."""
    train = nanogpt_train_file(source) or Path(source)
    if train.name == "train.bin":
        val = train.with_name("val.bin")
    elif train.name.endswith("_train.bin"):
        val = train.with_name(train.name.removesuffix("_train.bin") + "_val.bin")
    else:
        return None
    return val if train.is_file() and os.path.lexists(val) else None


def split(tokens: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, val): the last ``val_fraction`` of the tokens are held out (views, no copy)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {shown(val_fraction)}")
    n_train = len(tokens) - int(len(tokens) * val_fraction)
    return tokens[:n_train], tokens[n_train:]


def random_batch(
    tokens: np.ndarray, shape: tuple[int, ...], seq_len: int, rng: np.random.Generator
) -> np.ndarray:  # -> [*shape, seq_len + 1] int32
    """Windows of ``seq_len + 1`` consecutive tokens at uniformly random offsets.

    Each row is a model input and its targets at once: the loss reads ``row[:-1]`` and predicts
    ``row[1:]``.
    """
    n_windows = len(tokens) - seq_len
    if n_windows < 1:
        raise NpgptError(
            f"the training text has {len(tokens)} tokens, too few for seq_len={seq_len}; "
            f"use seq_len={max(1, len(tokens) - 1)} or less, or more text",
            keywords=["seq_len"],
        )
    starts = rng.integers(0, n_windows, size=shape)
    # One gather, not a Python loop over rows: a batch too large for memory (--batch-size x
    # --grad-accum of 10**8) is a MemoryError at once rather than minutes of looping first.
    return np.asarray(tokens[starts[..., None] + np.arange(seq_len + 1)], dtype=np.int32)  # -> [*shape, seq_len + 1]


def eval_windows(tokens: np.ndarray, batch_size: int, seq_len: int, n_batches: int) -> HeldOutWindows:
    """Fixed held-out batches ``[n, batch_size, seq_len + 1]``: evenly spaced, no RNG, so every
    evaluation (and every resumed run) scores the same windows. ``n`` may be less than asked.

    Only their starts are laid out here; each batch is gathered when it is scored (:class:`HeldOutWindows`), so
    the held-out text costs one batch of memory, as a step does, and no time before the first step."""
    n_windows = len(tokens) - seq_len
    if n_windows < 1:
        return HeldOutWindows(tokens, np.zeros((0, batch_size), np.int64), seq_len)
    count = min(n_batches * batch_size, n_windows)
    count -= count % batch_size
    if count == 0:  # fewer windows than one batch: repeat them to fill it
        count = batch_size
    starts = np.linspace(0, n_windows - 1, count).astype(np.int64)
    return HeldOutWindows(tokens, starts.reshape(-1, batch_size), seq_len)


@dataclass(frozen=True)
class HeldOutWindows:
    """The held-out batches of :func:`eval_windows`, each ``[batch_size, seq_len + 1]`` int32 gathered from
    ``tokens`` (a memory map) in one step when it is asked for. Laid out at once in a Python loop, a batch that
    fits memory but is huge (``batch_size=250000``) took seconds before the first step, and the eight batches
    (``eval_batches``) together eight times a step's memory."""

    tokens: np.ndarray
    starts: np.ndarray  # [n, batch_size] int64
    seq_len: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (*self.starts.shape, self.seq_len + 1)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> np.ndarray:  # -> [batch_size, seq_len + 1] int32
        return np.asarray(self.tokens[self.starts[i][:, None] + np.arange(self.seq_len + 1)], dtype=np.int32)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:  # every batch: for tests and small text
        whole = np.asarray([*self], dtype=np.int32).reshape(self.shape)
        return whole if dtype is None else whole.astype(dtype)
