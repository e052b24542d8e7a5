"""GGUF, the format of llama.cpp and Ollama: GPT-2 models (architecture ``gpt2``), read and written.

Parsing, dequantization and writing are the ``gguf`` package's (llama.cpp publishes it): ``GGUFReader``
memory-maps the file, ``gguf.quants`` dequantizes, ``GGUFWriter`` writes. This module only maps names and
checks what it is given. (Named ``gguf_format`` so that it does not shadow the ``gguf`` package.) This module
holds the names and the reading; ``gguf_tokenizer`` the metadata and the tokenizer the file carries,
``gguf_write`` the writing.

Names follow llama.cpp's ``convert_hf_to_gguf.py`` (class ``GPT2Model``) and gguf's ``TENSOR_NAMES``:

| GGUF                     | npgpt                 | GGUF                   | npgpt               |
|--------------------------|-----------------------|------------------------|---------------------|
| token_embd.weight        | wte                   | blk.N.ffn_norm.*       | blocks.N.ln_2.g/b   |
| position_embd.weight     | wpe                   | blk.N.ffn_up.*         | blocks.N.mlp.c_fc   |
| blk.N.attn_norm.*        | blocks.N.ln_1.g/b     | blk.N.ffn_down.*       | blocks.N.mlp.c_proj |
| blk.N.attn_qkv.*         | blocks.N.attn.c_attn  | output_norm.*          | ln_f.g/b            |
| blk.N.attn_output.*      | blocks.N.attn.c_proj  | output.weight          | the head (tied: absent) |

ggml's shapes list the fastest-varying dimension first: a matrix of ``ne = [in, out]`` is a NumPy
``[out, in]`` array (``nn.Linear``'s layout), which is why the converter transposes GPT-2's Conv1D
``[in, out]`` weights and why this module transposes them back. Metadata keys are gguf's
``Keys.LLM``/``Keys.Attention`` with ``{arch}`` = ``gpt2``: ``block_count``, ``context_length``,
``embedding_length``, ``feed_forward_length``, ``attention.head_count``, ``attention.layer_norm_epsilon``.

Reading: F32 tensors stay memory-mapped (transposed views); F16, BF16 and Q8_0 (and any other type
``gguf.quants`` dequantizes) are dequantized to float32 on load, except Q8_0 matrices loaded for a
backend that multiplies Q8_0 blocks as they are (``load(..., q8_0_blocks=True)``). A GGUF split into parts
(llama.cpp's gguf-split, ``NAME-00001-of-00003.gguf``) is read across its parts given the first. The tokenizer
must be GPT-2's: llama.cpp model ``gpt2`` with GPT-2's 50257 tokens in GPT-2's order (other BPE
models, e.g. Llama 3, also say ``gpt2``), and one token per embedding row; generation ends where llama.cpp
ends it: at the file's eos, eot, eom and FIM pad/repo/separator tokens, and at any token spelled as llama.cpp's
end tokens (``<|endoftext|>``, ``<|im_end|>``, ``<|eot_id|>``, ... :data:`EOG_SPELLINGS`). Writing: F32, F16, BF16
or Q8_0 weight matrices (1-D tensors and ``position_embd`` stay F32, matrices whose rows do not
split into Q8_0's 32-value blocks fall back to F16, both as the converter does), with GPT-2's
tokenizer from npgpt's assets (a fine-tune's added tokens at their ids, its own end tokens as the
file's eos, eot and eom ids), so llama.cpp loads the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import GPT2Config
from ..errors import CheckpointError
from ..params import Q8_0Blocks, unflatten
from .compat import make_config
from .gguf_tokenizer import _check_tokenizer, _field, _tokenizer

ARCH = "gpt2"
DTYPES = ("float32", "float16", "bfloat16", "q8_0")  # what save() writes; ``npgpt convert --dtype``
# The fix for a tensor type npgpt cannot read: llama.cpp's converter writes one it can.
_CONVERT_AS = "llama.cpp's convert_hf_to_gguf.py --outtype f16 (or q8_0, bf16, f32)"
_MATRICES = ("attn.c_attn.w", "attn.c_proj.w", "mlp.c_fc.w", "mlp.c_proj.w")  # Conv1D [in, out] in npgpt


def _gguf() -> Any:
    """The ``gguf`` package (the ``npgpt[gguf]`` extra), or a one-line error naming that extra."""
    try:
        import gguf
    except ImportError as e:
        if e.name == "gguf":
            raise CheckpointError("GGUF files need the gguf package: pip install 'npgpt[gguf]'") from None
        raise CheckpointError(f"the gguf package does not import ({e}); pip install -U 'gguf>=0.16'") from None
    if not hasattr(gguf.ReaderField, "contents"):  # added in 0.16; reading fields goes through it
        raise CheckpointError("the installed gguf package is older than 0.16: pip install -U 'gguf>=0.16'")
    return gguf


def _name_table(n_layer: int) -> dict[str, str]:
    """GGUF tensor name -> npgpt flat name, built from gguf's own TENSOR_NAMES."""
    import gguf

    T, N = gguf.MODEL_TENSOR, gguf.TENSOR_NAMES
    table = {
        f"{N[T.TOKEN_EMBD]}.weight": "wte",
        f"{N[T.POS_EMBD]}.weight": "wpe",
        f"{N[T.OUTPUT_NORM]}.weight": "ln_f.g",
        f"{N[T.OUTPUT_NORM]}.bias": "ln_f.b",
    }
    per_block = {
        T.ATTN_NORM: "ln_1",
        T.ATTN_QKV: "attn.c_attn",
        T.ATTN_OUT: "attn.c_proj",
        T.FFN_NORM: "ln_2",
        T.FFN_UP: "mlp.c_fc",
        T.FFN_DOWN: "mlp.c_proj",
    }
    for i in range(n_layer):
        for tensor, ours in per_block.items():
            gguf_name = N[tensor].format(bid=i)
            weight = "g" if ours.startswith("ln_") else "w"
            table[f"{gguf_name}.weight"] = f"blocks.{i}.{ours}.{weight}"
            table[f"{gguf_name}.bias"] = f"blocks.{i}.{ours}.b"
    return table


def _output_name() -> str:
    import gguf

    return f"{gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.OUTPUT]}.weight"


def is_gguf_file(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def _open_one(path: Path) -> Any:
    """One GGUF file's GGUFReader, its tensors' offsets checked (:func:`_check_layout`)."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (ValueError, IndexError, KeyError, TypeError, OSError) as e:
        if isinstance(e, ValueError) and "GGMLQuantizationType" in str(e):  # how GGUFReader names a type it lacks
            raise CheckpointError(
                f"{path}: a tensor type the installed gguf package does not know ({e}); pip install -U gguf, "
                f"or convert the model again with {_CONVERT_AS}"
            ) from None
        raise _cut_short(path) or CheckpointError(
            f"{path}: not a readable GGUF file ({e}); the file is truncated or corrupt: re-download or re-convert it"
        ) from None
    if reader.byte_order == "S":  # the file's byte order is not this machine's (llama.cpp's --bigendian, for s390x)
        raise CheckpointError(
            f"{path}: a GGUF in the other byte order than this machine's (written with llama.cpp's "
            "`convert_hf_to_gguf.py --bigendian`); llama.cpp refuses it here too: convert the model again without that "
            "option"
        )
    _check_layout(reader, path)
    return reader


def _cut_short(path: Path) -> CheckpointError | None:
    """The precise error for a GGUF that ends before its header says it does (an interrupted download or copy),
    else None (the caller's stands)."""
    from .gguf_header import gguf_size

    size, need = path.stat().st_size, gguf_size(path)
    if need is None or (need[1] and size >= need[0]):  # (0, 0): its header is cut short
        return None
    where = (
        f"its tensors' data ends at byte {need[0]}, the file has {size}"
        if need[1]
        else f"at byte {size}, inside its header"
    )
    return CheckpointError(f"{path}: truncated ({where}); re-download or re-convert it")


@dataclass(frozen=True)
class _Parts:
    """A GGUF split into parts read as one file: the first part's metadata, every part's tensors in order."""

    fields: dict[str, Any]
    tensors: list[Any]


_PART_NAME = re.compile(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$")  # llama.cpp's "%s-%05d-of-%05d.gguf" (llama_split_path)


def _part_path(path: Path, count: int, part: int) -> Path | None:
    """Part ``part`` (0 first) of the ``count`` beside ``path``, named as gguf-split names them; None where
    ``path`` is not named so."""
    m = _PART_NAME.match(path.name)
    if m is None or int(m[3]) != count:
        return None
    return path.with_name(f"{m[1]}-{part + 1:05d}-of-{count:05d}.gguf")


def split_parts(path: str | Path) -> list[Path]:
    """The files of the GGUF at ``path``: ``[path]``, or all its parts where ``path`` is the first part of a GGUF
    split by llama.cpp's gguf-split (``NAME-00001-of-00003.gguf``), found by name beside it as llama.cpp finds them."""
    path = Path(path)
    m = _PART_NAME.match(path.name)
    if m is None or int(m[2]) != 1:
        return [path]
    count = int(m[3])
    return [p for i in range(count) if (p := _part_path(path, count, i)) is not None]


def _split_key(reader: Any, path: Path, key: str) -> int | None:
    """A split key's value (llama.cpp reads them as uint16), None where absent; CheckpointError for another type."""
    field = reader.fields.get(key)
    if field is None:
        return None
    value = field.contents()
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(
            f"{path}: GGUF metadata {key!r} is {value!r}, not a part count or number; the file is corrupt: "
            "re-download it"
        )
    return value


def _open(path: Path) -> Any:
    """The GGUF at ``path`` as one reader (``fields``, ``tensors``). A GGUF split into parts (llama.cpp's gguf-split,
    the converter's ``--split-max-tensors``) is read across its parts given the first, as llama.cpp reads it: the
    others are found beside it by name (``NAME-0000K-of-0000N.gguf``), each checked to be the part its name says, and
    together to hold the ``split.tensors.count`` tensors the first part names, none twice."""
    import gguf

    S = gguf.Keys.Split
    reader = _open_one(path)
    count = _split_key(reader, path, S.LLM_KV_SPLIT_COUNT)
    if count is None or count <= 1:
        return reader
    number = _split_key(reader, path, S.LLM_KV_SPLIT_NO) or 0
    if number != 0:  # llama.cpp: "model must be loaded with the first split"
        first = _part_path(path, count, 0)
        raise CheckpointError(
            f"{path}: part {number + 1} of a GGUF split into {count} files (llama.cpp's gguf-split); load its first "
            f"part{f' {first.name}' if first is not None else ''}, which reads the others beside it"
        )
    parts = split_parts(path)
    if len(parts) != count:  # llama.cpp: "invalid split file name"
        raise CheckpointError(
            f"{path}: the first of {count} parts of a split GGUF, but not named as llama.cpp's gguf-split names them "
            f"(NAME-00001-of-{count:05d}.gguf), by which the others are found; rename the parts so"
        )
    tensors = list(reader.tensors)
    for i, part in enumerate(parts[1:], 1):
        if not part.is_file():
            raise CheckpointError(
                f"{path}: part {i + 1} of {count} of this split GGUF, {part.name}, is not beside it; download every "
                "part"
            )
        other = _open_one(part)
        if _split_key(other, part, S.LLM_KV_SPLIT_NO) != i:
            raise CheckpointError(
                f"{part}: its {S.LLM_KV_SPLIT_NO} is {_split_key(other, part, S.LLM_KV_SPLIT_NO)}, not {i}: it is not "
                f"part {i + 1} of {path.name}'s model; download the parts again"
            )
        tensors += other.tensors
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise CheckpointError(f"{path}: tensor {twice!r} is in two parts of this split GGUF; download the parts again")
    expected = _split_key(reader, path, S.LLM_KV_SPLIT_TENSORS_COUNT)
    if expected is not None and expected != len(tensors):  # llama.cpp: "corrupted model: N tensors expected"
        raise CheckpointError(
            f"{path}: {S.LLM_KV_SPLIT_TENSORS_COUNT} is {expected} but its {count} parts hold {len(tensors)} tensors; "
            "download the parts again"
        )
    return _Parts(reader.fields, tensors)


def _check_types(reader: Any, path: Path) -> None:
    """CheckpointError, before any tensor is read, naming a tensor whose type gguf cannot dequantize (Q8_1, an
    integer or F64 type: llama.cpp's converter writes none of them for a model's weights)."""
    import gguf
    from gguf import quants

    readable: dict[Any, bool] = {}
    for tensor in reader.tensors:
        qtype = tensor.tensor_type
        if qtype not in readable:
            try:  # one block of zero bytes: cheap, and the same dispatch as the real tensor's
                quants.dequantize(np.zeros((1, gguf.GGML_QUANT_SIZES[qtype][1]), np.uint8), qtype)
                readable[qtype] = True
            except NotImplementedError:
                readable[qtype] = False
        if not readable[qtype]:
            raise CheckpointError(
                f"{path}: tensor {tensor.name!r} is {qtype.name}, a type npgpt cannot read (gguf does not "
                f"dequantize it); convert the model again with {_CONVERT_AS}"
            )


def _check_layout(reader: Any, path: Path) -> None:
    """CheckpointError unless each tensor's data starts where llama.cpp requires: right after the one before,
    padded to the file's alignment. GGUFReader views whatever bytes an offset names, so a misaligned or
    overlapping offset would otherwise be read as another tensor's bytes (silently wrong weights)."""
    expected = 0
    for tensor in reader.tensors:
        offset = int(tensor.data_offset) - int(reader.data_offset)
        if offset != expected:
            raise CheckpointError(
                f"{path}: tensor {tensor.name!r} has data offset {offset}, expected {expected} (each tensor "
                f"follows the one before, aligned to {reader.alignment} bytes); the file is corrupt: "
                "re-download or re-convert it"
            )
        expected += -(-int(tensor.n_bytes) // int(reader.alignment)) * int(reader.alignment)


def tokenizer_spec(path: str | Path) -> dict[str, Any] | None:
    """The tokens a fine-tune added to GPT-2's in a GGUF's tokenizer and the tokens that end its generations
    (see :func:`_tokenizer`), or None."""
    import gguf

    path = Path(path)
    reader = _open(path)
    field = reader.fields.get(gguf.Keys.Tokenizer.LIST)
    tokens = [] if field is None else [bytes(field.parts[i]) for i in field.data]
    return _tokenizer(reader, path, tokens)


def _to_float32(tensor: Any, path: Path) -> np.ndarray:
    """A ReaderTensor's data as float32 in NumPy order ``[..., ne0]``; F32 stays a view of the map."""
    from gguf import quants

    arr = quants.dequantize(tensor.data, tensor.tensor_type)  # a type it cannot: refused by _check_types
    if not np.may_share_memory(arr, tensor.data):  # a dequantized copy: the file's pages are read, let them go
        from ..files import release_mapped

        release_mapped(np.asarray(tensor.data))
    shape = tuple(int(n) for n in reversed(tensor.shape))
    return arr.reshape(shape) if arr.shape != shape else arr


def _blocks(tensor: Any, transposed: bool) -> Q8_0Blocks:
    """A Q8_0 ReaderTensor [rows, cols] as its codes and scales, views of the file's map (no copy)."""
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0]  # 32 values in 34 bytes
    raw = np.asarray(tensor.data).reshape(int(tensor.shape[-1]), -1, size)  # ggml ne = [cols, rows]
    scales = raw[..., :2].view(np.float16)[..., 0]  # each block: its float16 d, then 32 int8 q
    return Q8_0Blocks(raw[..., 2 : 2 + block].view(np.int8), scales, transposed, raw)


def load(path: str | Path, q8_0_blocks: bool = False) -> tuple[GPT2Config, dict[str, Any]]:
    """Config and float32 params from a GPT-2 GGUF file; see :func:`load_with_tokenizer`."""
    return load_with_tokenizer(path, q8_0_blocks)[:2]


def load_with_tokenizer(
    path: str | Path, q8_0_blocks: bool = False
) -> tuple[GPT2Config, dict[str, Any], dict[str, Any] | None]:
    """Config, float32 params and added tokens (:func:`tokenizer_spec`) from a GPT-2 GGUF file (F32, F16,
    BF16, Q8_0, ...), parsed once: GGUFReader takes seconds over GPT-2's 100k tokenizer strings.

    ``q8_0_blocks``: a Q8_0 weight matrix (``wte`` and each block's four) stays in the file's own
    blocks, a :class:`~npgpt.params.Q8_0Blocks` over the memory map, not dequantized: for a backend
    that multiplies Q8_0 as it is (``load(dtype="int8")`` on NumPy), so loading holds no float32 copy.

    The layer-norm epsilon, the MLP width (``feed_forward_length``) and an untied ``output.weight`` (npgpt's
    ``lm_head``) go into the config, or are refused by :func:`compat.make_config` if this GPT2Config cannot
    carry them. Raises CheckpointError, before any compute, for: a corrupt file, another architecture, a
    tokenizer that is not GPT-2's, grouped KV heads, and any tensor missing, extra or of the wrong shape.
    """
    gguf = _gguf()

    path = Path(path)
    reader = _open(path)
    _check_types(reader, path)
    arch = _field(reader, path, gguf.Keys.General.ARCHITECTURE)
    if arch != ARCH:
        raise CheckpointError(f"{path}: a GGUF of architecture {arch!r}; npgpt runs GPT-2 ({ARCH!r}) models only")
    L, A = gguf.Keys.LLM, gguf.Keys.Attention

    def hparam(key: str, default: Any = None, kind: type = int) -> Any:
        """An integer (or, ``kind=float``, any number) from the metadata: llama.cpp refuses other types too."""
        value = _field(reader, path, key.format(arch=ARCH), default)
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
            raise CheckpointError(
                f"{path}: GGUF metadata {key.format(arch=ARCH)!r} is {value!r}, not "
                f"{'a number' if kind is float else 'an integer'}; the file is corrupt: re-download or re-convert it"
            )
        return value

    n_layer = hparam(L.BLOCK_COUNT)

    def per_layer(key: str, default: Any = None) -> Any:
        """A hyperparameter llama.cpp also reads as one value per layer (``get_key_or_arr``): an array of
        ``block_count`` integers, read as their one value when all are equal."""
        name, value = key.format(arch=ARCH), _field(reader, path, key.format(arch=ARCH), default)
        if not isinstance(value, list):
            return hparam(key, default)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise CheckpointError(
                f"{path}: GGUF metadata {name!r} is {str(value)[:60]}, not integers; the file is corrupt: "
                "re-download or re-convert it"
            )
        if len(value) != n_layer:  # llama.cpp: "key ... has wrong array length"
            raise CheckpointError(
                f"{path}: GGUF metadata {name!r} has {len(value)} values, one per layer, but "
                f"{L.BLOCK_COUNT.format(arch=ARCH)} is {n_layer}; the file is corrupt: re-download or re-convert it"
            )
        if len(set(value)) > 1:
            raise CheckpointError(
                f"{path}: GGUF metadata {name!r} differs per layer ({str(value)[:60]}); npgpt's GPT-2 has one "
                "value for every layer"
            )
        return value[0] if value else default

    causal = _field(reader, path, A.CAUSAL.format(arch=ARCH), True)
    if causal is not True:  # llama.cpp reads it for every architecture: False lets a token see the ones after it
        raise CheckpointError(
            f"{path}: GGUF metadata {A.CAUSAL.format(arch=ARCH)!r} is {causal!r}: llama.cpp would let each token "
            "attend to the ones after it; GPT-2 attends only to those before, the one attention npgpt runs"
        )
    n_embd, n_head = hparam(L.EMBEDDING_LENGTH), per_layer(A.HEAD_COUNT)
    n_head_kv = per_layer(A.HEAD_COUNT_KV, n_head)
    if n_head_kv != n_head:
        raise CheckpointError(
            f"{path}: head_count_kv {n_head_kv} != head_count {n_head}; GPT-2 has no grouped KV heads"
        )
    for key in (A.KEY_LENGTH, A.VALUE_LENGTH):  # llama.cpp's head size; n_embd / n_head where absent
        head_size = hparam(key, 0)
        if key.format(arch=ARCH) in reader.fields and head_size * n_head != n_embd:
            raise CheckpointError(
                f"{path}: GGUF metadata {key.format(arch=ARCH)!r} is {head_size}, but "
                f"{L.EMBEDDING_LENGTH.format(arch=ARCH)} / {A.HEAD_COUNT.format(arch=ARCH)} is {n_embd} / {n_head}: "
                "GPT-2's heads are n_embd / n_head wide, the one attention npgpt runs"
            )
    tensors = {t.name: t for t in reader.tensors}
    wte_name = next(k for k, v in _name_table(0).items() if v == "wte")
    if not tensors:  # convert_hf_to_gguf.py --vocab-only, llama.cpp's models/ggml-vocab-gpt-2.gguf
        raise CheckpointError(
            f"{path}: a vocabulary-only GGUF (the tokenizer and hyperparameters, no weights: what llama.cpp's "
            "`convert_hf_to_gguf.py --vocab-only` writes), not a model; convert the model again without that option"
        )
    if wte_name not in tensors:
        raise CheckpointError(f"{path}: no {wte_name} tensor; the file is incomplete")
    if len(tensors[wte_name].shape) != 2:
        raise CheckpointError(
            f"{path}: {wte_name} is not a matrix (ggml shape {[int(n) for n in tensors[wte_name].shape]})"
        )
    n_vocab = int(tensors[wte_name].shape[1])  # ggml ne = [n_embd, n_vocab]
    # The converter writes output.weight only for an untied head; one equal to token_embd is tied all the same.
    head = _to_float32(tensors[_output_name()], path) if _output_name() in tensors else None
    tied = head is None or (
        head.shape == (n_vocab, n_embd) and np.array_equal(head, _to_float32(tensors[wte_name], path))
    )
    config = make_config(
        str(path),
        n_vocab=n_vocab,
        n_ctx=hparam(L.CONTEXT_LENGTH),
        n_embd=n_embd,
        n_head=n_head,
        n_layer=n_layer,
        n_inner=per_layer(L.FEED_FORWARD_LENGTH, 4 * n_embd),
        layer_norm_epsilon=_shortest(float(hparam(A.LAYERNORM_EPS, kind=float))),  # llama.cpp requires it too
        tie_word_embeddings=tied,
    )
    if config.n_layer > len(tensors):  # a corrupt block_count must not build a table of a billion names
        raise CheckpointError(
            f"{path}: block_count {config.n_layer} but only {len(tensors)} tensors; the file is incomplete or corrupt"
        )
    table = _name_table(config.n_layer)
    _check_against_metadata(path, tensors, table, config)
    tokenizer = _check_tokenizer(reader, path, n_vocab)

    flat: dict[str, Any] = {}
    for name, tensor in tensors.items():
        if name == _output_name():
            continue
        ours = table.get(name)
        if ours is None:
            raise CheckpointError(f"{path}: unexpected tensor {name!r} for a GPT-2 model")
        is_matrix = ours == "wte" or ours.endswith(_MATRICES)  # the products' weights (wpe: a table only)
        if q8_0_blocks and is_matrix and tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0:
            flat[ours] = _blocks(tensor, transposed=ours != "wte")
            continue
        arr = _to_float32(tensor, path)
        flat[ours] = arr.T if ours.endswith(_MATRICES) else arr  # [out, in] -> Conv1D [in, out]
    if head is not None and not tied:  # untied implies a head was read
        flat["lm_head"] = head  # ggml [n_embd, n_vocab] = NumPy [V, C], npgpt's lm_head layout
    return config, unflatten(flat, config, source=str(path)), tokenizer


def _check_against_metadata(path: Path, tensors: dict[str, Any], table: dict[str, str], config: GPT2Config) -> None:
    """CheckpointError naming the GGUF key and tensor when the metadata and the tensors disagree (llama.cpp
    refuses such a file too): blocks present against ``block_count``, every tensor of each block, and the
    rows and widths that ``context_length``, ``embedding_length`` and ``feed_forward_length`` give."""
    import gguf

    N, T, L = gguf.TENSOR_NAMES, gguf.MODEL_TENSOR, gguf.Keys.LLM
    fix = "the metadata and the tensors disagree: re-convert the model with llama.cpp's convert_hf_to_gguf.py"
    block_count = L.BLOCK_COUNT.format(arch=ARCH)
    blk = N[T.ATTN_NORM].split("{bid}")[0]  # "blk."
    present = {int(name[len(blk) :].split(".")[0]) for name in tensors if name.startswith(blk)}
    beyond = sorted(i for i in present if i >= config.n_layer)
    if beyond:
        raise CheckpointError(
            f"{path}: {block_count} is {config.n_layer} but the file holds tensors of {blk}{beyond[0]} "
            f"({len(present)} blocks); {fix}"
        )
    missing = [name for name in table if name not in tensors]
    if missing:
        raise CheckpointError(
            f"{path}: no tensor {missing[0]!r} ({block_count} {config.n_layer}, {len(present)} blocks present); {fix}"
        )
    # ggml ne lists the fastest-varying dimension first: ne = [n_embd, rows].
    for name, index, key, want in (
        (f"{N[T.TOKEN_EMBD]}.weight", 0, L.EMBEDDING_LENGTH, config.n_embd),
        (f"{N[T.POS_EMBD]}.weight", 1, L.CONTEXT_LENGTH, config.n_ctx),
        (f"{N[T.FFN_UP].format(bid=0)}.weight", 1, L.FEED_FORWARD_LENGTH, config.d_mlp),
    ):
        shape = [int(n) for n in tensors[name].shape]
        if len(shape) != 2 or shape[index] != want:
            # convert_hf_to_gguf.py writes 4 * n_embd for a GPT-2 whatever its n_inner: converting again would not do
            converter = key == L.FEED_FORWARD_LENGTH and want == 4 * config.n_embd and len(shape) == 2
            why = (
                "llama.cpp's convert_hf_to_gguf.py writes 4 * n_embd for a GPT-2 whatever its n_inner (llama.cpp "
                "refuses its output too): write this model's GGUF with npgpt's converter, which writes its n_inner"
                if converter
                else fix
            )
            raise CheckpointError(
                f"{path}: {key.format(arch=ARCH)} is {want} but {name} has ggml shape {shape} "
                f"(expected {want} in place {index}); {why}"
            )


def _shortest(value: float) -> float:
    """A float32 read from metadata as the shortest decimal that rounds to it (1e-05, not 9.99999974e-06)."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))
