"""PyTorch's ``torch.save`` files (``pytorch_model.bin``, nanoGPT's ``ckpt.pt``) read without running code.

Why hand-written: ``torch.load(weights_only=True)`` is the safe reader, but it needs torch, an
optional extra of npgpt; this reader lets the base install (NumPy only) open the GPT-2 fine-tunes
that were published as pickles. It is a :class:`pickle.Unpickler` whose ``find_class`` hands out
only the few globals torch's own pickles use, each replaced by a function of ours that builds a
placeholder (:class:`_Storage`, :class:`_Tensor`) and never touches the data or imports torch;
every other global (``os.system``, ``builtins.eval``, a model class, ...) is refused with a
:class:`~npgpt.errors.CheckpointError` before anything is called, so a malicious ``__reduce__``
payload never runs. After unpickling, the placeholders become NumPy arrays: read-only
``np.memmap`` views of the file with torch's offset, size and stride (so nothing is read until
used), bfloat16 widened to float32.

The two layouts ``torch.save`` writes (see torch/serialization.py, ``_save`` and ``_legacy_save``):

- zip (torch >= 1.6): ``<archive>/data.pkl`` is the pickle, ``<archive>/data/<key>`` the raw bytes
  of each storage, stored uncompressed, so each entry is memory-mapped at its offset in the file;
  ``<archive>/byteorder`` says ``little`` or ``big``.
- legacy (``_use_new_zipfile_serialization=False``, and older torch): pickles of the magic
  number, the protocol version (1001) and system info, then the object's pickle, then a pickled
  list of storage keys, then for each key an int64 element count and the storage's bytes.

Inside the pickle a tensor is ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size,
stride, requires_grad, backward_hooks[, metadata])`` and a storage is the persistent id
``("storage", torch.FloatStorage, key, location, numel[, view_metadata])``; offset and strides
count elements, not bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, reason, shown
from ..files import web_page

_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION
# torch's typed storage classes -> the NumPy dtype of their bytes (bfloat16 kept as its raw uint16).
_STORAGES = {
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,
    "DoubleStorage": np.float64,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_FIX = "re-save it with torch.save, or use a safetensors copy of the model"
_CUT = "the file is cut short (an interrupted download or copy): re-download it or re-save it with torch.save"
_UNSAFE = "nothing in it was run; use a safetensors copy of the model, or do not use this file"


# torch.dtype names (``torch.float32`` is pickled as the global ``torch.float32``).
_DTYPES = frozenset(
    "float32 float float64 double float16 half bfloat16 complex64 complex128 uint8 int8 int16 short int32 int "
    "int64 long bool float8_e4m3fn float8_e5m2 uint16 uint32 uint64".split()
)


class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co.: only its dtype matters."""

    def __init__(self, name: str):
        self.name, self.dtype = name, np.dtype(_STORAGES[name])


class _Storage:
    """A storage named in the pickle; its bytes are found after unpickling (``key`` in the file)."""

    def __init__(self, kind: _StorageType, key: str, numel: int, view: tuple[int, int] | None = None):
        self.kind, self.key, self.numel, self.view = kind, key, numel, view


class _Tensor:
    """``_rebuild_tensor_v2``'s arguments, turned into an array once the storages are mapped."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"a tensor's storage is {type(storage).__name__}, not a storage")
    if metadata:  # conjugate/negative bits: views torch materialises lazily; GPT-2 weights never have them
        raise CheckpointError(f"a tensor has metadata {metadata!r} this reader does not apply")
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride) -> _Tensor:
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None) -> _Tensor:
    return data  # an nn.Parameter is its tensor; requires_grad and hooks do not matter for inference


def _encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode``, which protocol-2 pickles (torch.save's) name for every ``bytes``, as
    ``encode(text, "latin1")``: text in Latin-1 or UTF-8 only (no codec module is looked up)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise CheckpointError(f"a bytes object in the pickle is not text in Latin-1 or UTF-8 ({encoding!r})")
    try:
        return text.encode(encoding)
    except UnicodeEncodeError as e:
        raise CheckpointError(f"a bytes object in the pickle cannot be encoded ({e})") from None


def _plain(kind: type) -> Any:
    """``builtins.set`` & co., built from plain values only: never from a number of elements to
    allocate (``bytearray(10**12)``); a bad argument is CheckpointError."""

    def build(*args: Any) -> Any:
        if kind is not complex and any(isinstance(a, (int, float)) for a in args):
            raise CheckpointError(f"a {kind.__name__} in the pickle is built from a number, not its items")
        try:
            return kind(*args)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"a {kind.__name__} in the pickle cannot be built ({e})") from None

    return build


# The only globals a pickle may name, each mapped to a function or class that runs no user code. Besides
# the tensors' own, the values torch.load(weights_only=True) reads in a checkpoint's other entries
# (bytes, sets, torch.Size, a device, a dtype: a training script's notes), kept as plain values.
_ALLOWED: dict[str, Any] = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "collections.OrderedDict": collections.OrderedDict,
    "collections.Counter": _plain(collections.Counter),
    "_codecs.encode": _encode,
    "builtins.bytearray": _plain(bytearray),
    "builtins.set": _plain(set),
    "builtins.complex": _plain(complex),
    "torch.Size": _plain(tuple),
    "torch.device": lambda *args: "device" + repr(args),
}


class _Opcodes(dict):
    """The unpickler's opcode table; a byte no opcode has is C pickle's "invalid load key" (Python's was a bare
    KeyError of the byte: 255)."""

    def __missing__(self, key: int) -> Any:
        raise pickle.UnpicklingError(f"invalid load key, {bytes([key])!r}")


class _Unpickler(pickle._Unpickler):  # the pure-Python one: its opcode table can be restricted
    """Unpickles only torch's tensor vocabulary; BUILD (``__setstate__``) only on an OrderedDict.

    Pickles here are small (the tensors' bytes live outside them), so pure Python costs nothing
    that matters, and it lets BUILD be refused on anything but the OrderedDicts of a state dict
    (whose state is torch's ``_metadata``, dropped), so a pickle cannot set attributes on the
    functions above.
    """

    dispatch = _Opcodes(pickle._Unpickler.dispatch)
    stack: list[Any]  # the pure-Python unpickler's working stack

    def __init__(self, file: Any, source: str):
        super().__init__(file)
        self.source = source
        self.storages: dict[str, _Storage] = {}

    def load_build(self) -> None:
        self.stack.pop()  # the state
        if type(self.stack[-1]) is not collections.OrderedDict:
            raise CheckpointError(
                f"{self.source}: refused to set the state of a {type(self.stack[-1]).__name__} while unpickling; "
                f"{_UNSAFE}"
            )

    dispatch[pickle.BUILD[0]] = load_build

    def load_ext(self) -> None:  # copyreg's extension codes: a process-wide cache that bypasses find_class
        raise CheckpointError(f"{self.source}: refused an extension-code global while unpickling; {_UNSAFE}")

    for _op in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_op[0]] = load_ext
    del _op

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # protocol 2 (torch.save's) names Python 2's
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        if module == "torch" and name in _DTYPES:  # a torch.dtype, pickled by name: kept as its name
            return f"torch.{name}"
        found = _ALLOWED.get(f"{module}.{name}")
        if found is None:
            raise CheckpointError(
                f"{self.source}: refused to unpickle {module}.{name} (a PyTorch checkpoint may only hold "
                f"tensors and plain containers; this one would call {name} on load); {_UNSAFE}"
            )
        return found

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] in ("storage", b"storage")):
            raise CheckpointError(f"{self.source}: unknown persistent id {str(pid)[:60]!r}; {_FIX}")
        kind, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(kind, _StorageType) or not isinstance(numel, int):
            raise CheckpointError(f"{self.source}: malformed storage reference {str(pid)[:60]!r}; {_FIX}")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(kind, key, numel)
        if view is None:
            return self.storages[key]
        view_key, offset, size = view  # old torch: a storage that is a slice of another
        return _Storage(kind, key, size, view=(int(offset), int(size)))


def is_torch_file(path: str | Path) -> bool:
    """True if ``path`` starts like a ``torch.save`` file (zip archive or legacy pickle)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head == _ZIP_MAGIC or head[:2] == b"\x80\x02"


def load(path: str | Path) -> Any:
    """The object ``torch.save`` wrote at ``path``, tensors as read-only NumPy arrays.

    Containers come back as dicts, lists and tuples; each tensor as an array of its saved shape
    and dtype (float32/float16/float64/ints/bool; bfloat16 widened to float32), a view of a
    memory map wherever the bytes allow. Raises CheckpointError (one line) for any global outside
    torch's tensor vocabulary, a compressed or truncated file, or a tensor reaching past its storage.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head == _ZIP_MAGIC:
            return _load_zip(path)
        if head[:2] == b"\x80\x02":
            return _load_legacy(path)
    except CheckpointError as e:
        if str(e).startswith(str(path)):
            raise
        raise CheckpointError(f"{path}: {e}; {_FIX}") from None  # from a rebuild function, which has no path
    except (
        OSError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        RecursionError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        struct.error,
    ) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason(e)}); {_FIX}") from None
    raise web_page(path) or CheckpointError(
        f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle); {_FIX}"
    )


def _load_zip(path: Path) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:  # it starts as a zip (the caller checked), but its directory at the end is gone
        raise CheckpointError(f"{path}: a zip archive without its end; {_CUT}") from None
    with archive as z:
        pickles = [i for i in z.infolist() if i.filename.endswith("data.pkl") and i.filename.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: a zip file without torch's <archive>/data.pkl; {_FIX}")
        prefix = pickles[0].filename[: -len("data.pkl")]
        unpickler = _Unpickler(io.BytesIO(z.read(pickles[0])), str(path))
        obj = unpickler.load()
        names = {i.filename: i for i in z.infolist()}
        order = names.get(prefix + "byteorder")
        byteorder = z.read(order).decode().strip() if order else "little"
        if byteorder not in ("little", "big"):
            raise CheckpointError(f"{path}: unknown byte order {byteorder!r}; {_FIX}")
        data = np.memmap(path, dtype=np.uint8, mode="r")
        arrays = {}
        for key, storage in unpickler.storages.items():
            info = names.get(f"{prefix}data/{key}")
            if info is None:
                raise CheckpointError(f"{path}: storage {key} is missing from the archive; {_FIX}")
            if info.compress_type != zipfile.ZIP_STORED:  # torch never compresses; a repacked file might
                raise CheckpointError(f"{path}: storage {key} is compressed; {_FIX}")
            arrays[key] = _bytes_as(data, _entry_offset(path, info), info.file_size, storage, byteorder, path)
    return _resolve(obj, arrays, path)


def _entry_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where an entry's bytes start: after its local header, whose extra field may differ from the directory's."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    if local[:4] != _ZIP_MAGIC:
        raise CheckpointError(f"{path}: damaged zip entry {info.filename}; {_FIX}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _load_legacy(path: Path) -> Any:
    with open(path, "rb") as f:
        for expected in (_LEGACY_MAGIC, _LEGACY_PROTOCOL):
            if _Unpickler(f, str(path)).load() != expected:
                raise CheckpointError(f"{path}: a pickle, but not one torch.save wrote (no torch magic number); {_FIX}")
        sys_info = _Unpickler(f, str(path)).load()
        byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else "big"
        unpickler = _Unpickler(f, str(path))
        obj = unpickler.load()
        keys = _Unpickler(f, str(path)).load()
        offset = f.tell()
    size = path.stat().st_size
    data = np.memmap(path, dtype=np.uint8, mode="r") if size > offset else np.zeros(0, np.uint8)
    arrays = {}
    for key in map(str, keys):  # each storage: int64 element count, then its bytes
        storage = unpickler.storages.get(key)
        if storage is None or offset + 8 > size:
            raise CheckpointError(f"{path}: storage {key} is missing or truncated; {_CUT}")
        (numel,) = struct.unpack("<q" if byteorder == "little" else ">q", bytes(data[offset : offset + 8]))
        nbytes = numel * storage.kind.dtype.itemsize
        arrays[key] = _bytes_as(data, offset + 8, nbytes, storage, byteorder, path)
        offset += 8 + nbytes
    return _resolve(obj, arrays, path)


def _bytes_as(data: np.ndarray, start: int, nbytes: int, storage: _Storage, byteorder: str, path: Path) -> np.ndarray:
    """A storage's bytes as a flat array of its dtype, checked against the file's size."""
    dtype = storage.kind.dtype.newbyteorder("<" if byteorder == "little" else ">")
    if nbytes < storage.numel * dtype.itemsize or start + nbytes > data.size:
        raise CheckpointError(f"{path}: storage {storage.key} is truncated; {_CUT}")
    return data[start : start + storage.numel * dtype.itemsize].view(dtype)


def _resolve(obj: Any, arrays: dict[str, np.ndarray], path: Path, done: dict[int, Any] | None = None) -> Any:
    """Replace every placeholder in ``obj`` by its array; containers rebuilt as plain dicts/lists/tuples.

    An object the pickle holds more than once (its memo's shared references) is resolved once, and stays
    shared (``done``: id -> result): a walk that resolved each reference anew took time exponential in the
    depth of a pickle that nests two references to each level in the next (60 levels: a 1 KB file)."""
    if done is None:
        done = {}
    key = id(obj)
    if key in done:
        return done[key][1]
    out: Any
    if isinstance(obj, _Tensor):
        out = _tensor(obj, arrays, path)
    elif isinstance(obj, _Storage):
        out = _storage(obj, arrays)
    elif isinstance(obj, dict):
        out = {k: _resolve(v, arrays, path, done) for k, v in obj.items()}
    elif isinstance(obj, list):
        out = [_resolve(v, arrays, path, done) for v in obj]
    elif isinstance(obj, tuple):
        out = tuple(_resolve(v, arrays, path, done) for v in obj)
    elif isinstance(obj, (set, frozenset)):  # of hashable plain values only: nothing to resolve in them
        out = obj
    elif obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, bytearray)):
        out = obj
    else:
        raise CheckpointError(f"{path}: unexpected {type(obj).__name__} object in the pickle; {_FIX}")
    done[key] = (obj, out)  # obj kept: its id is not reused while the walk lasts
    return out


def not_a_state_dict(state: dict) -> str | None:
    """What makes ``state`` no state dict (a mapping of names to tensors), naming its first such entry in a few
    words; None if it is one. Readers refuse such a file before they look a name up or a tensor over (a key that
    is a number, a value that is a list, were internal errors)."""
    for key, value in state.items():
        if not isinstance(key, str):
            return f"a key that is {_a(type(key).__name__)}, not a name"
        if not isinstance(value, np.ndarray):
            return f"{shown(key)} is {_a(type(value).__name__)}, not a tensor"
    return None


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _storage(storage: _Storage, arrays: dict[str, np.ndarray]) -> np.ndarray:
    flat = arrays[storage.key]
    if storage.view is not None:
        offset, size = storage.view
        flat = flat[offset : offset + size]
    return flat


def _tensor(t: _Tensor, arrays: dict[str, np.ndarray], path: Path) -> np.ndarray:
    """``storage.as_strided(size, stride, offset)`` in NumPy, refusing any element past the storage."""
    flat = _storage(t.storage, arrays)
    if any(s < 0 for s in t.size) or any(s < 0 for s in t.stride) or t.offset < 0 or len(t.size) != len(t.stride):
        raise CheckpointError(f"{path}: a tensor has a negative size, stride or offset; {_FIX}")
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride, strict=True)) if all(t.size) else t.offset - 1
    if last >= flat.size:
        raise CheckpointError(
            f"{path}: a tensor of shape {t.size} reaches element {last} of a storage of {flat.size}; {_FIX}"
        )
    numel = int(np.prod(t.size, dtype=object))
    if numel > flat.size:  # a stride-0 (expanded) view: legal in torch, never a weight, and unbounded in size
        raise CheckpointError(
            f"{path}: a tensor of {numel} elements views a storage of {flat.size} (an expanded view); {_FIX}"
        )
    item = flat.dtype.itemsize
    arr = np.lib.stride_tricks.as_strided(
        flat[t.offset :] if all(t.size) else flat[:0],
        shape=t.size,
        strides=[s * item for s in t.stride],
        writeable=False,
    )
    if t.storage.kind.name == "BFloat16Storage":  # bfloat16 is the top half of a float32
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr
