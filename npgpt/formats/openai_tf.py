"""OpenAI's original GPT-2 checkpoints: ``hparams.json`` + a TensorFlow tensor bundle.

Read and written in plain Python and NumPy: no TensorFlow, no protobuf. A bundle is

- ``model.ckpt.data-00000-of-00001``: the raw tensor bytes, back to back (more shards are
  ``data-00001-of-00003`` and so on);
- ``model.ckpt.index``: a LevelDB table (SSTable) from each tensor's name to a serialized
  ``BundleEntryProto`` (dtype, shape, shard, offset, size, crc32c). The empty key holds the
  ``BundleHeaderProto`` (shard count, endianness, format version).

Every index block and every tensor carries a masked crc32c, and both are checked, so a damaged
download is an error, never wrong numbers. References: LevelDB's ``doc/table_format.md`` and
TensorFlow's ``tensor_bundle.proto`` / ``tensor_bundle.cc``.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import google_crc32c
import numpy as np

from ..config import GPT2Config
from ..errors import CheckpointError
from ..files import parse_json, write_together
from ..params import expected_shapes, flatten, unflatten
from .npgpt_format import widen_bfloat16

_FIX = "the checkpoint is damaged or incomplete; re-download it (e.g. `npgpt download 124M`)"

# TensorFlow's DataType enum (types.proto) for the dtypes a checkpoint of weights can hold.
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    14: np.dtype("<u2"),
    19: np.dtype("<f2"),
}
_DT_BFLOAT16 = 14  # NumPy has no bfloat16: read as uint16 and widened to float32
_DTYPE_NAMES = {7: "DT_STRING", 8: "DT_COMPLEX64", 18: "DT_COMPLEX128", 20: "DT_RESOURCE", 21: "DT_VARIANT"}
_BUNDLE_VERSION = 1  # TensorFlow's kTensorBundleVersion, the version this reader implements

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48  # metaindex and index block handles (varints, zero-padded to 40 bytes) + magic
_TRAILER = 5  # after each block: compression type byte + masked crc32c of block and type
_BLOCK_SIZE = 256 * 1024  # TensorFlow's default; the index of even GPT-2 XL fits one block
_RESTART_INTERVAL = 16  # LevelDB's: every 16th key in a block is stored whole


class _Corrupt(Exception):
    """Raised by the byte-level parsers; :func:`read_bundle` adds the file name."""


# --- crc32c -------------------------------------------------------------------------------------


def _mask(crc: int) -> int:
    # LevelDB/TF store crcs rotated and offset, so a crc of data that itself holds crcs is not
    # trivially related to them.
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _unmask(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _crc(data: Any) -> int:
    """crc32c of bytes or of a contiguous uint8 array (memmap slices are not copied)."""
    return google_crc32c.value(data)


# --- protobuf wire format -----------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The base-128 varint at ``pos``, and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Corrupt("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _signed(value: int) -> int:
    """int64 fields are two's complement in 64 bits on the wire."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(msg: bytes) -> Iterator[tuple[int, Any]]:  # value: int or bytes, by wire type
    """(field number, value) of each field of a serialized message: ints, or bytes for
    length-delimited fields (strings, sub-messages, packed repeated fields)."""
    pos = 0
    while pos < len(msg):
        key, pos = _varint(msg, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(msg, pos)
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            value, pos = int.from_bytes(msg[pos : pos + n], "little"), pos + n
        elif wire == 2:
            n, pos = _varint(msg, pos)
            value, pos = msg[pos : pos + n], pos + n
        else:
            raise _Corrupt(f"unexpected protobuf wire type {wire}")
        if pos > len(msg):
            raise _Corrupt("truncated protobuf message")
        yield number, value


def _ints(value: int | bytes) -> list[int]:
    """A repeated int field: one varint, or a packed run of them."""
    if isinstance(value, int):
        return [value]
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
    return out


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _pb_int(number: int, value: int) -> bytes:
    # proto3 leaves fields holding the default (0) off the wire; TensorFlow's bytes do too.
    return _pb_varint(number << 3) + _pb_varint(value) if value else b""


def _pb_bytes(number: int, payload: bytes) -> bytes:
    return _pb_varint(number << 3 | 2) + _pb_varint(len(payload)) + payload


def _pb_fixed32(number: int, value: int) -> bytes:
    return _pb_varint(number << 3 | 5) + value.to_bytes(4, "little")


# --- bundle protos ------------------------------------------------------------------------------


class _Entry(NamedTuple):
    """A BundleEntryProto: where one tensor's bytes are and what they hold."""

    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked
    sliced: bool  # a partitioned variable, stored as slices under other keys


def _parse_shape(msg: bytes) -> tuple[int, ...]:
    """TensorShapeProto: repeated ``dim`` (field 2) of ``Dim{size: 1}``; unknown_rank (3)."""
    dims = []
    for number, value in _fields(msg):
        if number == 2:
            sizes = [v for n, v in _fields(value) if n == 1]
            dims.append(_signed(sizes[-1]) if sizes else 0)
        elif number == 3 and value:
            raise _Corrupt("tensor shape of unknown rank")
    if any(d < 0 for d in dims):
        raise _Corrupt(f"negative dimension in shape {tuple(dims)}")
    return tuple(dims)


def _parse_entry(msg: bytes) -> _Entry:
    f: dict[int, Any] = {1: 0, 2: b"", 3: 0, 4: 0, 5: 0, 6: 0}
    for number, value in _fields(msg):
        f[number] = value
    if not all(isinstance(f[n], int) for n in (1, 3, 4, 5, 6)) or isinstance(f[2], int):
        raise _Corrupt("malformed tensor entry")
    return _Entry(f[1], _parse_shape(f[2]), f[3], _signed(f[4]), _signed(f[5]), f[6], 7 in f)


def _encode_entry(dtype: int, shape: tuple[int, ...], offset: int, size: int, crc: int) -> bytes:
    # TensorFlow always sets the shape message, so a scalar's empty shape is still written.
    shape_msg = b"".join(_pb_bytes(2, _pb_int(1, d)) for d in shape)
    return (
        _pb_int(1, dtype) + _pb_bytes(2, shape_msg) + _pb_int(4, offset) + _pb_int(5, size) + _pb_fixed32(6, _mask(crc))
    )


def _parse_header(msg: bytes) -> tuple[int, bool]:
    """BundleHeaderProto -> (number of shards, big-endian?); checks the format version."""
    num_shards, endianness, version = 0, 0, b""
    for number, value in _fields(msg):
        if number == 1:
            num_shards = value
        elif number == 2:
            endianness = value
        elif number == 3:
            version = value
    min_consumer, bad = 0, []
    for number, value in _fields(version):  # VersionDef{producer 1, min_consumer 2, bad 3}
        if number == 2:
            min_consumer = value
        elif number == 3:
            bad += _ints(value)
    if min_consumer > _BUNDLE_VERSION or _BUNDLE_VERSION in bad:
        raise _Corrupt(
            f"bundle needs reader version >= {min_consumer}; npgpt reads version "
            f"{_BUNDLE_VERSION} (re-save it with an older TensorFlow)"
        )
    if endianness not in (0, 1) or not 0 < num_shards < 1 << 20:
        raise _Corrupt(f"bad bundle header (endianness {endianness}, {num_shards} shards)")
    return num_shards, endianness == 1


_HEADER = (
    _pb_int(1, 1)  # one shard; endianness LITTLE is the default 0, so left off the wire
    + _pb_bytes(3, _pb_int(1, _BUNDLE_VERSION))
)  # VersionDef{producer: 1}


# --- LevelDB table ------------------------------------------------------------------------------


def _read_block(table: bytes, handle: bytes) -> bytes:
    """The contents of the block that ``handle`` (offset and size varints) points at, checked."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    end = offset + size
    if end + _TRAILER > len(table):
        raise _Corrupt(f"block at byte {offset} runs past the end of the file")
    kind, stored = table[end], int.from_bytes(table[end + 1 : end + _TRAILER], "little")
    if _unmask(stored) != _crc(table[offset : end + 1]):  # the crc covers the type byte too
        raise _Corrupt(f"crc32c mismatch in the block at byte {offset}")
    if kind != 0:  # TensorFlow always writes bundle indexes uncompressed
        raise _Corrupt(f"block at byte {offset} is compressed (type {kind})")
    return table[offset:end]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of a block. Each key stores only what differs from the previous one:
    (shared prefix length, unshared length, value length, unshared key bytes, value)."""
    if len(block) < 4:
        raise _Corrupt("block too short")
    n_restarts = int.from_bytes(block[-4:], "little")
    # The restart offsets (for binary search; a scan does not need them) end the block.
    end = len(block) - 4 - 4 * n_restarts
    if end < 0:
        raise _Corrupt("bad restart count in block")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        n_value, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + n_value > end:
            raise _Corrupt("block entry out of bounds")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + n_value]
        pos += n_value


def _table_entries(table: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of a LevelDB table, in key order, with every block's crc checked."""
    if len(table) < _FOOTER:
        raise _Corrupt(f"{len(table)} bytes is too short for a table")
    footer = table[-_FOOTER:]
    if int.from_bytes(footer[-8:], "little") != _TABLE_MAGIC:
        raise _Corrupt("bad magic number (not a TensorFlow checkpoint index)")
    _, pos = _varint(footer, 0)
    _, pos = _varint(footer, pos)
    # The metaindex block lists filter blocks, which bundles do not have; it is read only so
    # that its checksum catches damage there too.
    _read_block(table, footer[:pos])
    for _, handle in _block_entries(_read_block(table, footer[pos:])):
        yield from _block_entries(_read_block(table, handle))


def _shared_prefix(a: bytes, b: bytes) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _encode_block(entries: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            shared = _shared_prefix(prev, key)
        out += _pb_varint(shared) + _pb_varint(len(key) - shared) + _pb_varint(len(value))
        out += key[shared:] + value
        prev = key
    restarts = restarts or [0]  # LevelDB's empty block still lists one restart point
    return bytes(out) + struct.pack(f"<{len(restarts) + 1}I", *restarts, len(restarts))


def _split_blocks(entries: list[tuple[bytes, bytes]], block_size: int) -> list[list[tuple[bytes, bytes]]]:
    """Group entries as LevelDB's builder does: a block ends once its size reaches block_size."""
    blocks: list[list[tuple[bytes, bytes]]] = [[]]
    size = 4
    for key, value in entries:
        block = blocks[-1]
        n = len(block)
        shared = _shared_prefix(block[-1][0], key) if n % _RESTART_INTERVAL else 0
        size += (
            len(_pb_varint(shared))
            + len(_pb_varint(len(key) - shared))
            + len(_pb_varint(len(value)))
            + len(key)
            - shared
            + len(value)
            + (0 if n % _RESTART_INTERVAL else 4)
        )
        block.append((key, value))
        if size >= block_size:
            blocks.append([])
            size = 4
    return [b for b in blocks if b]


def _separator(last: bytes, following: bytes | None) -> bytes:
    """A short key >= ``last`` and < ``following`` for the index, as LevelDB's bytewise
    comparator picks it (so our tables match TensorFlow's byte for byte)."""
    if following is None:  # after the last block: the shortest key >= last
        for i, byte in enumerate(last):
            if byte != 0xFF:
                return last[:i] + bytes([byte + 1])
        return last
    n = _shared_prefix(last, following)
    if n < min(len(last), len(following)) and last[n] < 0xFF and last[n] + 1 < following[n]:
        return last[:n] + bytes([last[n] + 1])
    return last


def _encode_table(entries: list[tuple[bytes, bytes]], block_size: int) -> bytes:
    out, index = bytearray(), []

    def put(block: bytes) -> bytes:
        handle = _pb_varint(len(out)) + _pb_varint(len(block))
        out.extend(block + b"\0")
        out.extend(_mask(_crc(block + b"\0")).to_bytes(4, "little"))
        return handle

    blocks = _split_blocks(entries, block_size)
    for i, block in enumerate(blocks):
        following = blocks[i + 1][0][0] if i + 1 < len(blocks) else None
        index.append((_separator(block[-1][0], following), put(_encode_block(block, _RESTART_INTERVAL))))
    meta = put(_encode_block([], _RESTART_INTERVAL))
    top = put(_encode_block(index, 1))  # LevelDB stores every index key whole
    return bytes(out) + (meta + top).ljust(_FOOTER - 8, b"\0") + _TABLE_MAGIC.to_bytes(8, "little")


# --- bundles ------------------------------------------------------------------------------------


def _data_path(prefix: str, shard: int, num_shards: int) -> Path:
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


def _parse_index(raw: bytes) -> tuple[int, bool, dict[str, _Entry]]:
    header: tuple[int, bool] | None = None
    entries: dict[str, _Entry] = {}
    prev: bytes | None = None
    for key, value in _table_entries(raw):
        if prev is not None and key <= prev:
            raise _Corrupt("keys out of order")
        prev = key
        if key == b"":
            header = _parse_header(value)
        else:
            entries[key.decode("utf-8")] = _parse_entry(value)
    if header is None:
        raise _Corrupt("no bundle header")
    return *header, entries


def _map(path: Path) -> np.ndarray:
    if path.stat().st_size == 0:  # np.memmap refuses empty files
        return np.zeros(0, np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r")


def read_bundle(prefix: str | Path, names: Callable[[str], bool] | None = None) -> dict[str, np.ndarray]:
    """Tensors of the TensorFlow bundle ``<prefix>.index`` + ``<prefix>.data-*``, by name.

    Arrays are read-only views of a memory map of the data shards, in the dtype stored
    (bfloat16 comes back as float32). Each tensor's crc32c is checked before it is returned.
    ``names``, if given, picks the tensors to read; the others are neither checked nor mapped.
    """
    prefix = str(prefix)
    index_path = Path(prefix + ".index")
    try:
        raw = index_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{index_path}: missing; {_FIX}") from None
    except OSError as e:
        raise CheckpointError(f"{index_path}: unreadable ({e.strerror})") from None
    try:
        num_shards, big_endian, entries = _parse_index(raw)
    except (_Corrupt, UnicodeDecodeError, TypeError, IndexError) as e:
        raise CheckpointError(f"{index_path}: corrupt index ({e}); {_FIX}") from None

    shards: dict[int, np.ndarray] = {}
    tensors = {}
    for name, entry in entries.items():
        if names is not None and not names(name):
            continue
        tensors[name] = _read_tensor(name, entry, index_path, prefix, num_shards, big_endian, shards)
    return tensors


def _read_tensor(
    name: str,
    entry: _Entry,
    index_path: Path,
    prefix: str,
    num_shards: int,
    big_endian: bool,
    shards: dict[int, np.ndarray],
) -> np.ndarray:
    if entry.sliced:
        raise CheckpointError(
            f"{index_path}: tensor {name!r} is a partitioned variable, which "
            "npgpt does not read; re-save it unpartitioned"
        )
    dtype = _DTYPES.get(entry.dtype)
    if dtype is None:
        kind = _DTYPE_NAMES.get(entry.dtype, f"enum {entry.dtype}")
        raise CheckpointError(
            f"{index_path}: tensor {name!r} has unsupported dtype {kind}; "
            "npgpt reads float, half, bfloat16, double and integer tensors"
        )
    if big_endian:
        dtype = dtype.newbyteorder(">")
    n_bytes = math.prod(entry.shape) * dtype.itemsize
    if entry.size != n_bytes or entry.offset < 0 or not 0 <= entry.shard_id < num_shards:
        raise CheckpointError(
            f"{index_path}: corrupt entry for tensor {name!r} ({entry.size} "
            f"bytes for shape {entry.shape}, shard {entry.shard_id}); {_FIX}"
        )
    path = _data_path(prefix, entry.shard_id, num_shards)
    if entry.shard_id not in shards:
        try:
            shards[entry.shard_id] = _map(path)
        except FileNotFoundError:
            raise CheckpointError(
                f"{path}: missing (data shard {entry.shard_id + 1} of {num_shards}); {_FIX}"
            ) from None
    data = shards[entry.shard_id]
    end = entry.offset + entry.size
    if end > data.size:
        raise CheckpointError(
            f"{path}: truncated (tensor {name!r} ends at byte {end}, the file has {data.size}); {_FIX}"
        )
    raw = data[entry.offset : end]
    if _unmask(entry.crc32c) != _crc(raw):
        raise CheckpointError(f"{path}: crc32c mismatch in tensor {name!r}; {_FIX}")
    arr = raw.view(dtype).reshape(entry.shape)
    if entry.dtype == _DT_BFLOAT16:
        arr = widen_bfloat16(arr)
    return arr


def _dtype_enum(dtype: np.dtype) -> int:
    for enum, ours in _DTYPES.items():
        if enum != _DT_BFLOAT16 and ours == dtype.newbyteorder("<"):
            return enum
    raise ValueError(
        f"cannot write dtype {dtype} to a TensorFlow bundle; use float16/32/64, int8/16/32/64, uint8 or bool"
    )


def write_bundle(prefix: str | Path, tensors: Mapping[str, Any], block_size: int = _BLOCK_SIZE) -> None:
    """Write ``tensors`` as the one-shard bundle ``<prefix>.index`` + ``<prefix>.data-00000-of-00001``
    that ``tf.train.load_checkpoint`` and ``Saver.restore`` read. Both files are written in full
    before either is renamed into place, the index last."""
    write_together(_file_writers(_bundle_writers(prefix, tensors, block_size)))


def _file_writers(writers: Mapping[Path, Callable[[BinaryIO], Any]]) -> dict[Path, Callable[[str], Any]]:
    """Writers of an open binary file -> writers of a path (:func:`~npgpt.files.write_together`'s)."""

    def opened(write: Callable[[BinaryIO], Any]) -> Callable[[str], Any]:
        def to(path: str) -> None:
            with open(path, "wb") as f:
                write(f)

        return to

    return {path: opened(write) for path, write in writers.items()}


def _bundle_writers(
    prefix: str | Path, tensors: Mapping[str, Any], block_size: int = _BLOCK_SIZE
) -> dict[Path, Callable[[BinaryIO], Any]]:
    """The data file's writer and the index's, in the order they must run (the index needs the offsets)."""
    prefix = str(prefix)
    names = sorted(tensors, key=lambda n: n.encode("utf-8"))  # the table's bytewise key order
    arrays = {n: np.asarray(tensors[n]) for n in names}
    entries = [(b"", _HEADER)]  # the tensors' entries are added by write_data, which runs first

    def write_data(f: BinaryIO) -> None:
        offset = 0
        for name in names:
            arr = arrays[name]
            dtype = _dtype_enum(arr.dtype)
            # C-order little-endian bytes; flattened first, as np.ascontiguousarray makes a
            # scalar 1-d (the entry keeps arr.shape).
            le = arr.dtype.newbyteorder("<")
            raw = np.ascontiguousarray(arr.reshape(-1), dtype=le).view(np.uint8)
            f.write(raw.data)
            entries.append((name.encode("utf-8"), _encode_entry(dtype, arr.shape, offset, raw.size, _crc(raw))))
            offset += raw.size

    return {
        _data_path(prefix, 0, 1): write_data,
        Path(prefix + ".index"): lambda f: f.write(_encode_table(entries, block_size)),
    }


# --- GPT-2 --------------------------------------------------------------------------------------


def name_table(config: GPT2Config) -> dict[str, str]:
    """OpenAI's checkpoint name -> npgpt's, for every tensor of ``config``:
    ``model/h3/attn/c_attn/w`` -> ``blocks.3.attn.c_attn.w``, ``model/ln_f/g`` -> ``ln_f.g``."""
    table = {}
    for ours in expected_shapes(config):
        layer = re.match(r"blocks\.(\d+)\.(.*)", ours)
        path = f"h{layer[1]}/{layer[2]}" if layer else ours
        table["model/" + path.replace(".", "/")] = ours
    return table


def _npgpt_name(openai_name: str) -> str:
    """A block's tensor :func:`name_table` lacks (a block beyond hparams.json's n_layer) in npgpt's form all the
    same (``model/h5/ln_1/g`` -> ``blocks.5.ln_1.g``), so that it is refused as a layer count that disagrees,
    not as a stray tensor; any other name stays the file's, to be named as unexpected."""
    block = re.fullmatch(r"model/h(\d+)/(.+)", openai_name)
    return f"blocks.{block[1]}.{block[2].replace('/', '.')}" if block else openai_name


def _is_conv1d_weight(openai_name: str) -> bool:
    # OpenAI's conv1d stores weights as [1, nx, nf] (a width-1 convolution); npgpt keeps [nx, nf].
    return openai_name.startswith("model/h") and openai_name.endswith("/w")


def _checkpoint_prefix(directory: Path) -> Path:
    """The bundle the ``checkpoint`` file names (``model_checkpoint_path: "model.ckpt"``),
    else ``model.ckpt``."""
    state = directory / "checkpoint"
    if state.exists():
        try:
            text = state.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not text"
            raise CheckpointError(f"{state}: unreadable ({reason}); {_FIX}") from None
        found = re.search(r'^model_checkpoint_path:\s*"(.*)"', text, re.MULTILINE)
        if found:
            path = Path(found[1])
            if not path.is_absolute():
                return directory / path
            # An absolute path from the machine that saved it; look next to this file instead.
            return path if Path(f"{path}.index").exists() else directory / path.name
    return directory / "model.ckpt"


def load(directory: str | Path) -> tuple[GPT2Config, dict[str, Any]]:
    """Config and nested float32 params from an OpenAI GPT-2 directory (``hparams.json``,
    ``checkpoint``, ``model.ckpt.index``, ``model.ckpt.data-*``)."""
    directory = Path(directory)
    hparams = directory / "hparams.json"
    try:
        config = GPT2Config.from_dict(parse_json(hparams.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise CheckpointError(
            f"{hparams}: missing; an OpenAI GPT-2 directory needs hparams.json next to model.ckpt.index"
        ) from None
    except OSError as e:  # a folder in its place, no permission
        raise CheckpointError(f"{hparams}: unreadable ({e.strerror}); {_FIX}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{hparams}: not JSON ({e}); {_FIX}") from None
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{hparams}: {e}") from None
    table = name_table(config)

    def wanted(name: str) -> bool:
        # Fine-tuning scripts also save optimizer slots (model/wte/Adam) and counters
        # (global_step); they are not weights. Unknown names under model/ still reach unflatten,
        # which refuses them: they mean the checkpoint is for another model.
        return name in table or (name.startswith("model/") and name.rsplit("/", 1)[0] not in table)

    prefix = _checkpoint_prefix(directory)
    flat = {}
    for name, arr in read_bundle(prefix, names=wanted).items():
        if _is_conv1d_weight(name) and arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        value = arr if arr.dtype == np.float32 else arr.astype(np.float32)
        flat[table.get(name) or _npgpt_name(name)] = value
    return config, unflatten(flat, config, source=f"{prefix}.index")


def save(directory: str | Path, config: GPT2Config, params: dict[str, Any]) -> Path:
    """Write ``params`` in OpenAI's layout (float32, conv1d weights as [1, nx, nf]), readable by
    :func:`load`, TensorFlow and OpenAI's own ``gpt-2`` code (with GPT-2's ``encoder.json`` and ``vocab.bpe``
    beside it, for a model of GPT-2's vocabulary, as OpenAI's downloads have them).

    Over an existing folder the four files are replaced as one set as far as a folder allows: all
    are written in full first (a failure there leaves the old set whole), then the old
    ``hparams.json`` is deleted, the bundle and ``checkpoint`` renamed into place, and the new
    ``hparams.json`` renamed last. So a reader sees the old set, the new set, or, during those few
    renames (or after a writer killed between them), no ``hparams.json``, which :func:`load`
    refuses: never new weights with old hparams. A reader that read ``hparams.json`` before the
    renames and the bundle after them could still mix the two; their shapes are checked against
    each other.
    """
    directory = Path(directory)
    flat = {k: np.asarray(v, dtype=np.float32) for k, v in flatten(params).items()}
    unflatten(flat, config)  # refuse to write a checkpoint that would not load
    tensors = {}
    for theirs, ours in name_table(config).items():
        tensors[theirs] = flat[ours][None] if _is_conv1d_weight(theirs) else flat[ours]
    hparams = directory / "hparams.json"
    write_together(
        _file_writers(
            {
                **(_encoder_writers(directory) if config.n_vocab >= GPT2_VOCAB else {}),
                **_bundle_writers(directory / "model.ckpt", tensors),
                directory / "checkpoint": lambda f: f.write(
                    b'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
                ),
                hparams: lambda f: f.write((json.dumps(_hparams(config), indent=2) + "\n").encode()),
            }
        ),
        withdraw=[hparams],
    )
    return directory


GPT2_VOCAB = 50257  # GPT-2's tokens, <|endoftext|> last


def _encoder_writers(directory: Path) -> dict[Path, Callable[[BinaryIO], Any]]:
    """GPT-2's ``encoder.json`` and ``vocab.bpe``, which OpenAI's downloads hold beside the checkpoint and its
    code (``src/encoder.py``'s ``get_encoder``) and picoGPT read from the model's folder."""
    from ..tokenizer import default_files

    def copy(source: Path) -> Callable[[BinaryIO], Any]:
        return lambda f: f.write(source.read_bytes())

    encoder_json, vocab_bpe = default_files()
    return {directory / "encoder.json": copy(encoder_json), directory / "vocab.bpe": copy(vocab_bpe)}


def _hparams(config: GPT2Config) -> dict[str, Any]:
    """OpenAI's five shape keys, plus only the math fields that differ from GPT-2's: npgpt reads them
    back, and OpenAI's code (whose HParams refuses unknown keys) fails rather than run another model."""
    default = GPT2Config().to_dict()
    shape = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")
    return {k: v for k, v in config.to_dict().items() if k in shape or v != default[k]}
