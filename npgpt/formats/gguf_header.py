"""A GGUF file's header read by hand, for two facts that need no GGUFReader: the chat template its metadata carries
and the size its header says the file has.

GGUFReader builds every metadata field, seconds over GPT-2's 100k tokenizer strings, and on a file cut short it fails
with NumPy's words. Walking the header (magic, version, tensor count, key count, the keys, the tensors' infos; gguf's
``GGUFReader`` reads the same layout, versions 2 and 3) takes a tenth of a second and reads no tensor data.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = "tokenizer.chat_template"  # gguf's Keys.Tokenizer.CHAT_TEMPLATE: the model's own, in Jinja
# bytes of each scalar GGUF value type (gguf's GGUFValueType: 0-7 and 10-12); 8 is a string, 9 an array
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def chat_template(path: str | Path) -> str | None:
    """The chat template a GGUF file carries (``tokenizer.chat_template``, which llama.cpp's converter copies from
    tokenizer_config.json), None where it has none or the metadata cannot be read (loading says why).

    Read by walking the metadata's keys alone, stopping at the template: GGUFReader builds every field, seconds
    over GPT-2's 100k tokenizer strings, to be spent a second time for one string.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(24)  # magic, version, tensor count, key count
            if data[:4] != b"GGUF" or struct.unpack_from("<I", data, 4)[0] < 2:
                return None
            n_kv = struct.unpack_from("<Q", data, 16)[0]
            for _ in range(min(n_kv, 1 << 16)):
                key = _gguf_string(f)
                kind = struct.unpack("<I", _exactly(f, 4))[0]
                if key == CHAT_TEMPLATE and kind == 8:
                    return _gguf_string(f)
                _skip_value(f, kind)
    except (OSError, EOFError, struct.error, UnicodeDecodeError, ValueError, OverflowError):
        return None
    return None


def gguf_size(path: str | Path) -> tuple[int, int] | None:
    """How many bytes a GGUF file's own header says it takes, and how many of those are its header: the end of
    its last tensor's data (at ``general.alignment``, 32 unless said); None where the header itself cannot be
    read to the end (``(0, 0)`` when it ends before its header does). For a one-line diagnosis of a file cut
    short, where GGUFReader fails on a view past the end of the file with NumPy's words."""
    import gguf

    try:
        with open(path, "rb") as f:
            data = f.read(24)  # magic, version, tensor count, key count
            if data[:4] != b"GGUF" or struct.unpack_from("<I", data, 4)[0] < 2:
                return None
            n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
            f.seek(24)
            alignment = 32
            for _ in range(n_kv):
                key = _gguf_string(f)
                (kind,) = struct.unpack("<I", _exactly(f, 4))
                if key == "general.alignment" and kind == 4:
                    (alignment,) = struct.unpack("<I", _exactly(f, 4))
                else:
                    _skip_value(f, kind)
            end = 0
            for _ in range(n_tensors):
                _gguf_string(f)
                (n_dims,) = struct.unpack("<I", _exactly(f, 4))
                dims = struct.unpack(f"<{n_dims}Q", _exactly(f, 8 * n_dims))
                kind, offset = struct.unpack("<IQ", _exactly(f, 12))
                block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
                count = 1
                for n in dims:
                    count *= n
                end = max(end, offset + count // block * size)
            start = -(-f.tell() // max(alignment, 1)) * max(alignment, 1)
            return start + end, f.tell()
    except EOFError:
        return 0, 0
    except (OSError, struct.error, UnicodeDecodeError, ValueError, OverflowError, KeyError, MemoryError):
        return None


def _exactly(f: Any, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError
    return data


def _gguf_string(f: Any) -> str:
    (n,) = struct.unpack("<Q", _exactly(f, 8))
    return _exactly(f, n).decode("utf-8")


def _skip_value(f: Any, kind: int) -> None:
    if kind == 8:
        f.seek(struct.unpack("<Q", _exactly(f, 8))[0], 1)
    elif kind == 9:
        item, count = struct.unpack("<IQ", _exactly(f, 12))
        if item in _SCALAR_SIZES:
            f.seek(_SCALAR_SIZES[item] * count, 1)
        else:
            for _ in range(count):
                _skip_value(f, item)
    elif kind in _SCALAR_SIZES:
        f.seek(_SCALAR_SIZES[kind], 1)
    else:
        raise ValueError(f"GGUF value type {kind}")
