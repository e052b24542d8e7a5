"""npgpt's own format: one safetensors file, flat npgpt names, the config in its metadata.

Read through a memory map, so loading costs little more than the pages the model touches.
float16/bfloat16 storage is allowed (the bundled model uses it) and is widened to float32 once.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..config import GPT2Config
from ..errors import CheckpointError
from ..files import atomic_path
from .names import flatten, unflatten

FORMAT = "npgpt"
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
           "I64": np.int64, "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors of a safetensors file as read-only views of a memory map, and its metadata.

    bfloat16 tensors come back as float32 (NumPy has no bfloat16). Every offset is checked
    against the file's size, so a truncated file is an error, not garbage.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: too short to be a safetensors file; re-download or re-convert it")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100_000_000):
                raise CheckpointError(f"{path}: not a safetensors file (bad header length); re-download it")
            header = json.loads(f.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        if isinstance(e, FileNotFoundError):
            raise CheckpointError(f"{path}: no such file") from None
        raise CheckpointError(f"{path}: unreadable safetensors header ({e}); re-download or re-convert it") from None
    metadata = header.pop("__metadata__", None) or {}
    data = np.memmap(path, dtype=np.uint8, mode="r") if size > 8 + n else np.zeros(0, np.uint8)
    tensors = {}
    for name, info in header.items():
        begin, end = (8 + n + o for o in info["data_offsets"])
        if end > size:
            raise CheckpointError(
                f"{path}: truncated (tensor {name!r} ends at byte {end}, file has {size}); "
                "re-download or re-convert it"
            )
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        arr = data[begin:end].view(dtype).reshape(info["shape"])
        if info["dtype"] == "BF16":  # bfloat16 is the top half of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = arr
    return tensors, metadata


def as_float32(arr: np.ndarray) -> np.ndarray:
    """float32 as is (still memory-mapped); any other float widened once."""
    return arr if arr.dtype == np.float32 else arr.astype(np.float32)


def is_npgpt_file(path: str | Path) -> bool:
    try:
        return read_safetensors(path)[1].get("format") == FORMAT
    except CheckpointError:
        return False


def load(path: str | Path) -> tuple[GPT2Config, dict[str, Any]]:
    """Config and nested float32 params from an npgpt safetensors file."""
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != FORMAT or "config" not in metadata:
        raise CheckpointError(f"{path}: not an npgpt model file (no npgpt config in its metadata)")
    try:
        config = GPT2Config.from_dict(json.loads(metadata["config"]))
    except (ValueError, TypeError) as e:  # json's errors are ValueErrors too
        raise CheckpointError(f"{path}: {e}") from None
    flat = {k: as_float32(v) for k, v in tensors.items()}
    return config, unflatten(flat, config, source=str(path))


def save(path: str | Path, config: GPT2Config, params: dict[str, Any], dtype: str = "float32") -> Path:
    """Write params atomically (temp file + rename) as npgpt's format; ``dtype`` float32 or float16."""
    from safetensors.numpy import save_file

    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {k: np.ascontiguousarray(np.asarray(v), dtype=dtype) for k, v in flatten(params).items()}
    unflatten(flat, config)  # refuse to write a file that would not load
    meta = {"format": FORMAT, "config": json.dumps(config.to_dict())}
    with atomic_path(path) as tmp:
        save_file(flat, tmp, metadata=meta)
    return path
