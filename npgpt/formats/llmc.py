"""llm.c's model files (``gpt2_124M.bin``, ``gpt2_124M_bf16.bin``): a 256-int32 header, then every parameter.

The layout is the one llm.c's ``train_gpt2.py`` writes (``write_model`` / ``write_tensors``) and its
``train_gpt2.c``/``.cu`` read (``gpt2_build_from_checkpoint``). Hand-written because llm.c publishes no
reader library; the format is a flat little-endian dump, so NumPy reads it memory-mapped.

Header (int32 little-endian): ``[0]`` magic 20240326, ``[1]`` version (3: every tensor float32,
5: every tensor bfloat16), ``[2]`` max_seq_len, ``[3]`` vocab_size, ``[4]`` num_layers,
``[5]`` num_heads, ``[6]`` channels, ``[7]`` padded_vocab_size; the rest is zero.

Parameters follow, each group stacked over layers ``L`` (``(L, 3C, C)`` is every layer's ``c_attn``):
``wte (Vp, C)``, ``wpe (T, C)``, ``ln_1.w/b (L, C)``, ``c_attn.w (L, 3C, C)``, ``c_attn.b (L, 3C)``,
``attn.c_proj.w (L, C, C)``, ``attn.c_proj.b (L, C)``, ``ln_2.w/b (L, C)``, ``c_fc.w (L, 4C, C)``,
``c_fc.b (L, 4C)``, ``mlp.c_proj.w (L, C, 4C)``, ``mlp.c_proj.b (L, C)``, ``ln_f.w/b (C,)``.
llm.c's model uses ``nn.Linear``, whose weights are ``[out, in]``: npgpt (like OpenAI's Conv1D) keeps
``[in, out]``, so each matrix is transposed (a view, not a copy).

Padded vocabulary: llm.c pads ``wte`` from ``vocab_size`` rows to ``padded_vocab_size`` (a multiple of
128, 50257 -> 50304) only so its GPU matmuls are aligned; the extra rows are written as zeros and llm.c
never reads their logits (its softmax, loss and sampling all stop at ``vocab_size``). The loader
therefore drops them: the model npgpt gets is exactly the one llm.c evaluates, with ``n_vocab =
vocab_size``; the writer pads again with zeros.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import GPT2Config
from ..errors import CheckpointError
from ..files import atomic_path, make_dirs
from ..params import flatten, unflatten
from .compat import require_writable, with_zero_biases

MAGIC = 20240326
TOKENS_MAGIC = 20240520  # llm.c's token shards' (its dev/data/data_common.py): token ids, not a model
HEADER_INTS = 256
VERSIONS = {3: "float32", 5: "bfloat16"}  # llm.c's checkpoint versions with a padded vocabulary
_ITEMSIZE = {"float32": 4, "bfloat16": 2}
PAD_MULTIPLE = 128  # train_gpt2.py's pad_vocab(multiple=128)


def _groups(config: GPT2Config, padded_vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """``(npgpt name template, llm.c shape of one layer's slice)`` in file order; ``{i}`` marks per-layer."""
    C = config.n_embd
    return [
        ("wte", (padded_vocab, C)),
        ("wpe", (config.n_ctx, C)),
        ("blocks.{i}.ln_1.g", (C,)),
        ("blocks.{i}.ln_1.b", (C,)),
        ("blocks.{i}.attn.c_attn.w", (3 * C, C)),
        ("blocks.{i}.attn.c_attn.b", (3 * C,)),
        ("blocks.{i}.attn.c_proj.w", (C, C)),
        ("blocks.{i}.attn.c_proj.b", (C,)),
        ("blocks.{i}.ln_2.g", (C,)),
        ("blocks.{i}.ln_2.b", (C,)),
        ("blocks.{i}.mlp.c_fc.w", (4 * C, C)),
        ("blocks.{i}.mlp.c_fc.b", (4 * C,)),
        ("blocks.{i}.mlp.c_proj.w", (C, 4 * C)),
        ("blocks.{i}.mlp.c_proj.b", (C,)),
        ("ln_f.g", (C,)),
        ("ln_f.b", (C,)),
    ]


def _n_values(config: GPT2Config, padded_vocab: int) -> int:
    total = 0
    for name, shape in _groups(config, padded_vocab):
        total += int(np.prod(shape)) * (config.n_layer if "{i}" in name else 1)
    return total


def read_header(path: str | Path) -> np.ndarray:
    """The 256 int32s at the start of ``path``; CheckpointError if it is not an llm.c model file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_INTS * 4)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    if len(raw) < HEADER_INTS * 4:
        raise CheckpointError(
            f"{path}: too short for llm.c's 1024-byte header; re-export it with llm.c's train_gpt2.py"
        )
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != MAGIC:
        raise CheckpointError(
            f"{path}: bad magic {int(header[0])} (llm.c model files start with {MAGIC}); "
            "is this a data shard or tokenizer .bin? pass the model .bin"
        )
    return header


def is_llmc_file(path: str | Path) -> bool:
    try:
        read_header(path)
    except CheckpointError:
        return False
    return True


def load(path: str | Path) -> tuple[GPT2Config, dict[str, Any]]:
    """Config and float32 params from an llm.c model file.

    float32 files (version 3) stay memory-mapped: each weight is a read-only, transposed view of the
    file. bfloat16 files (version 5) are widened to float32 once. The padded vocabulary rows are
    dropped (see the module docstring). Raises CheckpointError for a bad magic, an unknown version,
    impossible sizes, or a file whose length does not match its header — all before any compute.
    """
    path = Path(path)
    header = read_header(path)
    version = int(header[1])
    if version not in VERSIONS:
        raise CheckpointError(
            f"{path}: llm.c checkpoint version {version} is not supported (expected 3 = float32 or 5 = bfloat16, "
            "the padded-vocabulary files of current llm.c); re-export it with llm.c's train_gpt2.py"
        )
    dtype = VERSIONS[version]
    max_t, vocab, n_layer, n_head, channels, padded = (int(v) for v in header[2:8])
    try:
        config = GPT2Config(n_vocab=vocab, n_ctx=max_t, n_embd=channels, n_head=n_head, n_layer=n_layer)
    except ValueError as e:
        raise CheckpointError(f"{path}: impossible llm.c header ({e})") from None
    if padded == 0:  # llm.c's first versions (1-3 before the padded vocabulary) left header[7] zero
        raise CheckpointError(
            f"{path}: an llm.c file from before the padded vocabulary (header[7] is 0); "
            "re-export it with current llm.c's train_gpt2.py (versions 3 and 5)"
        )
    if padded < vocab:
        raise CheckpointError(
            f"{path}: padded_vocab_size {padded} is smaller than vocab_size {vocab}; the header is corrupt"
        )
    expected = HEADER_INTS * 4 + _n_values(config, padded) * _ITEMSIZE[dtype]
    size = path.stat().st_size
    if size != expected:
        raise CheckpointError(
            f"{path}: {size} bytes, but its header (maxT={max_t}, V={vocab}, Vp={padded}, L={n_layer}, C={channels}, "
            f"{dtype}) needs {expected}; "
            "the file is truncated or corrupt: re-download or re-export it"
        )
    raw = np.memmap(path, dtype="<f4" if dtype == "float32" else "<u2", mode="r", offset=HEADER_INTS * 4)
    flat: dict[str, np.ndarray] = {}
    offset = 0
    for name, shape in _groups(config, padded):
        layers = range(config.n_layer) if "{i}" in name else [None]
        stacked_shape = (len(layers), *shape)
        n = int(np.prod(stacked_shape))
        stacked = _as_float32(raw[offset : offset + n]).reshape(stacked_shape)
        offset += n
        for j, i in enumerate(layers):
            arr = stacked[j]
            flat[name.format(i=i)] = arr.T if arr.ndim == 2 and name.startswith("blocks") else arr
    flat["wte"] = flat["wte"][:vocab]
    return config, unflatten(flat, config, source=str(path))


def _as_float32(arr: np.ndarray) -> np.ndarray:
    """float32 data as is (a view of the map); bfloat16 (stored as uint16) widened: it is a float32's top half."""
    if arr.dtype.kind == "f":
        return arr
    return (arr.astype(np.uint32) << 16).view(np.float32)


def _to_bfloat16(arr: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounded to nearest even, as ``torch.Tensor.to(torch.bfloat16)`` does."""
    bits = np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def save(path: str | Path, config: GPT2Config, params: dict[str, Any], dtype: str = "float32") -> Path:
    """Write an llm.c model file that llm.c's ``gpt2_build_from_checkpoint`` loads.

    ``dtype`` "float32" (version 3) or "bfloat16" (version 5). The vocabulary is padded with zero rows
    to a multiple of 128, as ``train_gpt2.py``'s ``pad_vocab`` does; a bias-free model gets zero biases.
    A config llm.c's GPT-2 cannot run (untied head, other epsilon, MLP width or activation) is refused
    with CheckpointError. Written atomically.
    """
    if dtype not in _ITEMSIZE:
        raise CheckpointError(f"llm.c files hold float32 or bfloat16 weights, not {dtype!r}")
    require_writable(config, "llm.c's format")  # its GPT-2 is OpenAI's: tied head, eps 1e-5, 4C, tanh GELU
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / "model.bin"
    make_dirs(path.parent)
    flat = flatten(params)
    unflatten(dict(flat), config)  # refuse to write a file that would not load
    flat = with_zero_biases(flat, config)  # llm.c's GPT-2 always has biases
    padded = -(-config.n_vocab // PAD_MULTIPLE) * PAD_MULTIPLE
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:8] = [
        MAGIC,
        {v: k for k, v in VERSIONS.items()}[dtype],
        config.n_ctx,
        config.n_vocab,
        config.n_layer,
        config.n_head,
        config.n_embd,
        padded,
    ]
    encode = _to_bfloat16 if dtype == "bfloat16" else (lambda a: np.ascontiguousarray(a, dtype="<f4"))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header.tobytes())
        for name, _ in _groups(config, padded):
            layers = range(config.n_layer) if "{i}" in name else [None]
            for i in layers:
                arr = np.asarray(flat[name.format(i=i)], dtype=np.float32)
                if name == "wte":
                    arr = np.concatenate([arr, np.zeros((padded - config.n_vocab, config.n_embd), np.float32)])
                elif arr.ndim == 2 and name.startswith("blocks"):
                    arr = arr.T  # npgpt [in, out] -> nn.Linear [out, in]
                f.write(encode(arr).tobytes())
    return path
