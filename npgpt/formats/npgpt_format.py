"""npgpt's own format: one safetensors file, flat npgpt names, the config in its metadata.

Read through a memory map, so loading costs little more than the pages the model touches.
float16/bfloat16 storage is allowed (the bundled model uses it) and is widened to float32 once.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..config import GPT2Config
from ..errors import CheckpointError, reason
from ..files import atomic_path, make_dirs, parse_json, refuse_special_files, save_safetensors, web_page
from ..params import flatten, unflatten

FORMAT = "npgpt"
MODEL_FILE = "model.safetensors"  # npgpt's file in a model directory (the cache, a training run), as in HF's
_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,
    "F64": np.float64,
    "I64": np.int64,
    "I32": np.int32,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_header(path: str | Path) -> tuple[dict[str, Any], int, int]:
    """A safetensors file's JSON header, its length in bytes and the file's size; cheap (no data read).

    Raises CheckpointError for a missing file or a header that is not a safetensors header.
    """
    path = Path(path)
    with _opened(path) as f:
        return _header_of(f, path)


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[BinaryIO]:
    # a FIFO's open waits for a writer, and the signal that should end the wait (Ctrl-C, SIGTERM) does not
    refuse_special_files(path, lambda _: False)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: unreadable safetensors header ({e}); re-download or re-convert it") from None
    with f:
        yield f


def _header_of(f: BinaryIO, path: Path) -> tuple[dict[str, Any], int, int]:
    """:func:`read_header` of the open file ``f`` (named ``path`` in errors)."""
    try:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: too short to be a safetensors file; re-download or re-convert it")
        (n,) = struct.unpack("<Q", head)
        if size - 8 < n <= 100_000_000 and f.read(2) in (b"{", b'{"'):  # a header cut short: a download cut
            raise CheckpointError(  # within its first kilobytes (safetensors: "MetadataIncompleteBuffer")
                f"{path}: truncated (its header alone is {8 + n} bytes, the file has {size}); "
                "re-download or re-convert it"
            )
        if n > min(size - 8, 100_000_000):
            raise web_page(path) or CheckpointError(
                f"{path}: not a safetensors file (bad header length); re-download it"
            )
        header = parse_json(f.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable safetensors header ({e}); re-download or re-convert it") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__") or {}, dict):
        raise CheckpointError(f"{path}: malformed safetensors header (not a JSON object); re-download or re-convert it")
    return header, n, size


_REREADS = 5  # a file replaced (renamed over) while read is read again: a training run checkpointing into it


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors of a safetensors file as read-only views of a memory map, and its metadata.

    bfloat16 tensors come back as float32 (NumPy has no bfloat16). A truncated file is named as
    such; every other structural fault (offsets into the header, overlapping or shifted byte
    ranges, a shape whose size does not match its bytes, wrong JSON types) is refused by the
    ``safetensors`` library's own validation, which runs before any tensor is viewed.

    The header and the data come from one open file: a file renamed over ``path`` while it is read (a training
    run's checkpoint, a download finishing) is read again from the start, never the header of one and the
    data of the other (whose offsets differ when its header's length does).
    """
    path = Path(path)
    for _ in range(_REREADS):
        with _opened(path) as f:
            header, n, size = _header_of(f, path)
            _check_ends(path, header, n, size)
            opened = f"/proc/self/fd/{f.fileno()}"  # Linux: the open file itself, whatever the path names now
            if os.path.exists(opened):
                _validate(path, opened)
            else:  # validated by name: it must still name the file opened
                _validate(path)
                try:
                    same = os.path.samestat(os.fstat(f.fileno()), os.stat(path))
                except OSError:  # removed meanwhile (npgpt rm): what was opened is whole
                    same = True
                if not same:
                    continue
            data = np.memmap(f, dtype=np.uint8, mode="r") if size > 8 + n else np.zeros(0, np.uint8)
        return _tensors(path, header, n, data)
    raise CheckpointError(f"{path}: replaced by another file {_REREADS} times while being read; load it again")


def _check_ends(path: Path, header: dict[str, Any], n: int, size: int) -> None:
    offsets = [
        info.get("data_offsets") for name, info in header.items() if name != "__metadata__" and isinstance(info, dict)
    ]
    ends = [o[1] for o in offsets if isinstance(o, list) and len(o) == 2 and all(type(x) is int for x in o)]
    if ends and 8 + n + max(ends) > size:
        raise CheckpointError(
            f"{path}: truncated (data ends at byte {8 + n + max(ends)}, file has {size}); re-download or re-convert it"
        )


def _tensors(
    path: Path, header: dict[str, Any], n: int, data: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    header = dict(header)
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise CheckpointError(
                f"{path}: tensor {name!r} has unsupported dtype {info['dtype']} (npgpt reads F32, F16, BF16 and "
                "F64 weights); save the model as float32 or float16 first, e.g. transformers' "
                "model.float().save_pretrained(DIR)"
            )
        begin, end = (8 + n + o for o in info["data_offsets"])
        arr = data[begin:end].view(dtype).reshape(info["shape"])
        if info["dtype"] == "BF16":
            arr = widen_bfloat16(arr)
        tensors[name] = arr
    return tensors, metadata


def _validate(path: Path, source: str | None = None) -> None:
    """The safetensors library's structural checks (it parses the header; no tensor is read) of ``path``, read
    from ``source`` where given (the open file's name in ``/proc/self/fd``)."""
    from safetensors import safe_open

    try:
        with safe_open(source or str(path), framework="numpy"):
            pass
    except Exception as e:  # SafetensorError, or a ValueError/OSError for the same malformed file
        why = reason(e)
        raise CheckpointError(f"{path}: malformed safetensors file ({why}); re-download or re-convert it") from None


def widen_bfloat16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values, stored as their uint16 bits (NumPy has no bfloat16) -> float32, exactly.

    A bfloat16 is the top half of a float32, so shifting its bits up 16 places is the float32.
    """
    return (bits.astype(np.uint32) << 16).view(np.float32)


def as_float32(arr: np.ndarray, name: str = "a tensor", source: str = "checkpoint") -> np.ndarray:
    """float32 as is (still memory-mapped); any other float widened once; integer or boolean
    data refused (read as weights it would be garbage)."""
    if not np.issubdtype(arr.dtype, np.floating):
        raise CheckpointError(
            f"{source}: tensor {name!r} holds {arr.dtype} data, not floating-point weights; "
            "the file is corrupt or not a GPT-2 checkpoint"
        )
    return arr if arr.dtype == np.float32 else arr.astype(np.float32)


def is_npgpt_file(path: str | Path) -> bool:
    """Whether a safetensors file carries npgpt's config; CheckpointError if it is not readable at all
    (detection must not turn a truncated or corrupt file into "some other format")."""
    header, _, _ = read_header(path)
    return (header.get("__metadata__") or {}).get("format") == FORMAT


def model_file_in(directory: Path) -> Path | None:
    """The npgpt file in ``directory``: its ``model.safetensors`` if there is one (whatever it holds: the
    caller's detection judges it), else one of npgpt's files under another name, as ``npgpt convert SRC
    DIR/model.bin`` writes or a user renames: ``model.bin`` or a ``.safetensors`` file that is npgpt's.
    None if there is none; CheckpointError naming them if there are several (which one is meant is unknowable).
    """
    if (directory / MODEL_FILE).exists():
        return directory / MODEL_FILE
    found = [p for p in [directory / "model.bin", *sorted(directory.glob("*.safetensors"))] if _is_npgpt(p)]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise CheckpointError(
            f"{directory}: holds several npgpt model files ({names}); pass the path of the one to load"
        )
    return found[0] if found else None


def _is_npgpt(path: Path) -> bool:
    """Whether ``path`` is a readable npgpt model file (not another format's file, nor a broken one)."""
    try:
        return path.is_file() and is_npgpt_file(path)
    except CheckpointError:
        return False


def load(path: str | Path) -> tuple[GPT2Config, dict[str, Any]]:
    """Config and nested float32 params from an npgpt safetensors file."""
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != FORMAT or "config" not in metadata:
        raise CheckpointError(f"{path}: not an npgpt model file (no npgpt config in its metadata)")
    try:
        config = GPT2Config.from_dict(parse_json(metadata["config"]))
    except (ValueError, TypeError) as e:  # json's errors are ValueErrors too
        raise CheckpointError(f"{path}: {e}") from None
    flat = {k: as_float32(v, k, str(path)) for k, v in tensors.items()}
    return config, unflatten(flat, config, source=str(path))


def save(
    path: str | Path,
    config: GPT2Config,
    params: dict[str, Any],
    dtype: str = "float32",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write params atomically (temp file + rename) as npgpt's format; ``dtype`` float32 or float16.

    ``metadata`` adds string entries to the file's header: a training run's ``step``, a
    character-level ``tokenizer`` (JSON, read back by :func:`tokenizer_spec`), the ``chat_template`` of the
    model it was converted from (read back by :func:`chat_template`)."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    path = Path(path)
    make_dirs(path.parent)
    flat = {k: np.ascontiguousarray(np.asarray(v), dtype=dtype) for k, v in flatten(params).items()}
    unflatten(flat, config)  # refuse to write a file that would not load
    meta = {**(metadata or {}), "format": FORMAT, "config": json.dumps(config.to_dict())}
    with atomic_path(path) as tmp:
        save_safetensors(flat, tmp, metadata=meta)
    return path


def tokenizer_spec(path: str | Path) -> dict[str, Any] | None:
    """The tokenizer an npgpt model file (or a folder holding one, :func:`model_file_in`) names in its
    metadata, or None: GPT-2's (also for any other format). Reads only the header."""
    path = Path(path)
    file = model_file_in(path) if path.is_dir() else path
    if file is None or not file.is_file():
        return None
    try:
        metadata = read_header(file)[0].get("__metadata__") or {}
    except CheckpointError:  # not a safetensors file (another format's, which names no tokenizer)
        if file.suffix == ".safetensors":
            raise
        return None
    if metadata.get("format") != FORMAT or "tokenizer" not in metadata:
        return None
    try:
        spec = parse_json(metadata["tokenizer"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{file}: unreadable tokenizer in its metadata; re-train or re-convert it") from None
    if spec is not None:  # checked here, naming the file, for every reader: load, convert (which copies it), --init
        from ..char_tokenizer import tokenizer_from_spec

        try:
            tokenizer_from_spec(spec)
        except CheckpointError as e:
            raise CheckpointError(f"{file}: {e}; re-train or re-convert it") from None
    return spec


CHAT_TEMPLATE = "chat_template"  # the metadata key: tokenizer_config.json's name for it


def chat_template(path: str | Path) -> str | None:
    """The chat template an npgpt model file (or a folder holding one) carries in its metadata, as converted from
    a Hugging Face folder's or a GGUF's (a Jinja string), or None. Reads only the header."""
    path = Path(path)
    file = model_file_in(path) if path.is_dir() else path
    if file is None or not file.is_file():
        return None
    template = (read_header(file)[0].get("__metadata__") or {}).get(CHAT_TEMPLATE)
    return template if isinstance(template, str) and template else None
