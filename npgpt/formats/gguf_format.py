"""GGUF, the format of llama.cpp and Ollama: GPT-2 models (architecture ``gpt2``), read and written.

Parsing, dequantization and writing are the ``gguf`` package's (llama.cpp publishes it): ``GGUFReader``
memory-maps the file, ``gguf.quants`` dequantizes, ``GGUFWriter`` writes. This module only maps names and
checks what it is given. (Named ``gguf_format`` so that it does not shadow the ``gguf`` package.)

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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import GPT2Config
from ..errors import CheckpointError, CheckpointWarning
from ..files import atomic_path
from ..params import Q8_0Blocks, flatten, unflatten
from .compat import FLOAT16_OVERFLOW, check_float16_range, make_config, require_writable, with_zero_biases

ARCH = "gpt2"
GPT2_TOKENS = 50257
EOT = "<|endoftext|>"
EOT_ID = 50256  # <|endoftext|>: llama.cpp's bos and eos for GPT-2
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
        raise CheckpointError(
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


def _field(reader: Any, path: Path, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise CheckpointError(f"{path}: GGUF metadata {key!r} is missing; the file was not written for GPT-2")
        return default
    return field.contents()


def _check_tokenizer(reader: Any, path: Path, n_rows: int) -> dict[str, Any] | None:
    """GPT-2's tokenizer, or CheckpointError: npgpt encodes text with GPT-2's BPE, not the file's. Returns the
    tokens a fine-tune added to it (:func:`_added_tokens`), None where it has none."""
    import gguf

    from ..tokenizer import gpt2_tokens

    K = gguf.Keys.Tokenizer
    if K.MODEL not in reader.fields:  # llama.cpp refuses such a file too
        raise CheckpointError(
            f"{path}: no tokenizer in its metadata ({K.MODEL} is missing); convert the model again with "
            "llama.cpp's convert_hf_to_gguf.py from a directory holding GPT-2's tokenizer files"
        )
    model = _field(reader, path, K.MODEL)
    if model != "gpt2":
        raise CheckpointError(
            f"{path}: tokenizer {model!r}, not GPT-2's byte-level BPE "
            "(tokenizer.ggml.model 'gpt2'); npgpt runs GPT-2 models with GPT-2's tokenizer"
        )
    tokens_field = reader.fields.get(K.LIST)
    tokens = [] if tokens_field is None else [bytes(tokens_field.parts[i]) for i in tokens_field.data]
    gpt2 = [t.encode("utf-8") for t in gpt2_tokens()]
    if tokens[:GPT2_TOKENS] != gpt2:
        raise CheckpointError(
            f"{path}: its {len(tokens)} tokens are not GPT-2's 50257 (a different BPE vocabulary, "
            "e.g. Llama 3's); npgpt only runs GPT-2's tokenizer"
        )
    if len(tokens) != n_rows:
        raise CheckpointError(f"{path}: {len(tokens)} tokens but {n_rows} embedding rows; the file is inconsistent")
    if (twice := _spelled_twice(tokens)) is not None:
        raise CheckpointError(f"{path}: {twice}; the file is corrupt: re-convert it")
    _check_tokenizer_settings(reader, path)
    return _tokenizer(reader, path, tokens)


def check_writable_tokenizer(tokenizer: dict[str, Any] | None) -> None:
    """CheckpointError for a tokenizer whose GGUF vocabulary llama.cpp cannot load (two tokens of one spelling),
    from the tokenizer alone: convert() refuses it before a large source's weights are read, as save() would after."""
    if tokenizer is None or not tokenizer.get("added_tokens"):
        return
    n_tokens = max(GPT2_TOKENS, 1 + max(t["id"] for t in tokenizer["added_tokens"]))
    if (twice := _spelled_twice(_gpt2_vocab(n_tokens, tokenizer)[0])) is not None:
        raise CheckpointError(f"cannot write a GGUF: {twice}")


def _spelled_twice(tokens: list[bytes] | list[str]) -> str | None:
    """What is wrong where two tokens have one spelling (llama.cpp maps each spelling to one id and aborts on
    such a vocabulary; an empty token it names ``[EMPTY_{id}]``), None where none has."""
    first: dict[Any, int] = {}
    for i, token in enumerate(tokens):
        empty = f"[EMPTY_{i}]"
        j = first.setdefault(token or (empty.encode() if isinstance(token, bytes) else empty), i)
        if j != i:
            return f"tokens {j} and {i} are both {token[:40]!r}, which llama.cpp cannot load (one id per spelling)"
    return None


# The pre-tokenizers llama.cpp runs as GPT-2's (src/llama-vocab.cpp: LLAMA_VOCAB_PRE_TYPE_GPT2, nothing else set).
GPT2_PRE = frozenset(
    {"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum", "modern-bert"}
)


def _check_tokenizer_settings(reader: Any, path: Path) -> None:
    """CheckpointError for tokenizer metadata with which llama.cpp turns a text into other ids than GPT-2's BPE
    (npgpt's): another pre-tokenizer (how text is split before the merges), other merges, or a token put around
    each prompt (``add_bos_token`` true, as the converter writes a tokenizer_config.json's; a Hugging Face
    directory with it is refused too) or a space before it. A pre-tokenizer llama.cpp runs as GPT-2's
    (:data:`GPT2_PRE`) is GPT-2's. A file without ``tokenizer.ggml.pre`` (converted before llama.cpp wrote it, in
    2024) is read with GPT-2's, as it was meant and as transformers reads it (``from_pretrained(gguf_file=...)``),
    with a :class:`~npgpt.errors.CheckpointWarning`: llama.cpp splits its text with its 'default' pre-tokenizer
    instead (other ids wherever digits or punctuation run together) and warns that generation is degraded."""
    import gguf

    from ..merge_order import misordered_merges
    from ..tokenizer import gpt2_merges

    K = gguf.Keys.Tokenizer
    pre = _field(reader, path, K.PRE, "")
    if pre == "":  # llama.cpp: "missing pre-tokenizer type, using: 'default'"
        warnings.warn(
            f"{path}: no pre-tokenizer in its metadata ({K.PRE}); read with GPT-2's, which its tokens and merges "
            "are, but llama.cpp splits its text with its 'default' one (other ids for runs of digits or punctuation): "
            "convert the model again with llama.cpp's convert_hf_to_gguf.py, which writes 'gpt-2'",
            CheckpointWarning,
            stacklevel=2,
        )
    elif pre not in GPT2_PRE:
        raise CheckpointError(
            f"{path}: pre-tokenizer {pre!r} ({K.PRE}), not GPT-2's 'gpt-2': llama.cpp splits its text another way; "
            "npgpt only runs GPT-2's tokenizer"
        )
    for key, what in ((K.ADD_BOS, "before"), (K.ADD_EOS, "after"), (K.ADD_SEP, "after"), (K.ADD_PREFIX, "before")):
        if _field(reader, path, key, False) is not False:
            put, yourself = (
                ("a space", "begin the prompts with a space")
                if key == K.ADD_PREFIX
                else ("a special token", "put <|endoftext|> in the prompts")
            )
            raise CheckpointError(
                f"{path}: {key} is {_field(reader, path, key)!r}: llama.cpp puts {put} {what} every prompt, which "
                f"npgpt does not; convert the model again with it false (tokenizer_config.json) and {yourself} yourself"
            )
    field = reader.fields.get(K.MERGES)
    if field is None:  # llama.cpp: "cannot find tokenizer merges in model file"
        raise CheckpointError(
            f"{path}: no BPE merges in its metadata ({K.MERGES} is missing), which llama.cpp refuses too; convert the "
            "model again with llama.cpp's convert_hf_to_gguf.py from a directory holding GPT-2's tokenizer files"
        )
    merges = [bytes(field.parts[i]) for i in field.data]
    gpt2 = [m.encode("utf-8") for m in gpt2_merges()]
    if merges != gpt2:
        try:  # GPT-2's in another order: harmless unless two merges that meet trade places
            swapped = misordered_merges([m.decode("utf-8") for m in merges])
        except (ValueError, UnicodeDecodeError):
            pass
        else:
            if swapped is None:
                return
            raise CheckpointError(
                f"{path}: GPT-2's BPE merges, but {swapped[0]!r} before {swapped[1]!r}: llama.cpp would split text "
                "into other tokens; npgpt only runs GPT-2's tokenizer"
            )
        first = next(
            (i for i, (a, b) in enumerate(zip(merges, gpt2, strict=False)) if a != b), min(len(merges), len(gpt2))
        )
        raise CheckpointError(
            f"{path}: its {len(merges)} BPE merges are not GPT-2's {len(gpt2)} (merge {first} differs): llama.cpp "
            "would split text into other tokens; npgpt only runs GPT-2's tokenizer"
        )


def _tokenizer(reader: Any, path: Path, tokens: list[bytes]) -> dict[str, Any] | None:
    """The tokenizer spec of a GGUF (``tokenizer_from_spec``'s): the tokens a fine-tune added
    (:func:`_added_tokens`) and the tokens that end a generation (:func:`_eos_token_ids`); None for GPT-2's own.
    CheckpointError, naming the file, for one npgpt cannot build (an eos on a padding row)."""
    from ..char_tokenizer import tokenizer_from_spec

    types = _token_types(reader, path, tokens)
    spec = _added_tokens(path, tokens, types, _eog_spellings(reader))
    eos = _eos_token_ids(reader, path, tokens, types)
    if eos is None:
        return spec
    gpt2_own = [{"content": EOT, "id": EOT_ID, "special": True, "normalized": False}]
    spec = {**(spec or {"type": "gpt2", "added_tokens": gpt2_own}), "eos_token_id": eos}
    try:
        tokenizer_from_spec(spec)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return spec


def own_eos_ids(tokenizer: dict[str, Any] | None) -> list[int] | None:
    """The tokens besides ``<|endoftext|>`` that end a generation (the tokenizer spec's ``eos_token_id``), in the
    order the file's eos, eot and eom ids take them (:func:`_eos_token_ids` reads them back); [] for GPT-2's own,
    None for ids a GGUF cannot carry. GGUF names end tokens by id in those three keys only (llama.cpp's
    ``special_eog_ids``; gguf has no list of eos ids), and llama.cpp ends a generation at a token spelled as one of
    its end tokens (:data:`EOG_SPELLINGS`, the FIM spellings) whatever the keys say: so any number of such tokens,
    and at most three others. None also without ``<|endoftext|>``, at which llama.cpp ends a GPT-2 whatever the
    file says."""
    eos = None if tokenizer is None else tokenizer.get("eos_token_id")
    if eos is None:
        return []
    own = [i for i in eos if i != EOT_ID]
    spellings = EOG_SPELLINGS.union(*(spelled for _, spelled in _FIM_SPELLINGS))
    by_spelling = {t["id"] for t in (tokenizer or {}).get("added_tokens", []) if t["content"] in spellings}
    named = [i for i in own if i not in by_spelling]
    if EOT_ID not in eos or len(named) > 3:
        return None
    return own if len(own) <= 3 else named + [i for i in own if i in by_spelling]


# llama.cpp (src/llama-vocab.cpp, ``special_eog_ids``) ends a generation at a token spelled one of these, whatever
# the file's eos, eot and eom ids say, and types it CONTROL (https://github.com/ggml-org/llama.cpp/issues/9606).
EOG_SPELLINGS = frozenset(
    {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
        "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
        "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
    }
)  # fmt: skip
# ... and at its FIM pad, repo and file-separator tokens: the metadata's id, else a token spelled so (a GPT-2
# fine-tune's added "[PAD]" is llama.cpp's FIM pad token, so it ends a generation there).
_FIM_SPELLINGS = (
    ("FIM_PAD_ID", ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]")),
    ("FIM_REP_ID", ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>")),
    ("FIM_SEP_ID", ("<|file_sep|>",)),
)


def _eog_spellings(reader: Any) -> frozenset[bytes]:
    """The spellings at which llama.cpp ends a generation in this file: :data:`EOG_SPELLINGS`, and the FIM
    spellings of each FIM token the metadata does not name by id."""
    import gguf

    spelled = set(EOG_SPELLINGS)
    for name, spellings in _FIM_SPELLINGS:
        if getattr(gguf.Keys.Tokenizer, name) not in reader.fields:
            spelled |= set(spellings)
    return frozenset(t.encode("utf-8") for t in spelled)


def _token_types(reader: Any, path: Path, tokens: list[bytes]) -> list[int]:
    """Each token's ``tokenizer.ggml.token_type``, read as llama.cpp reads it: optional, every token NORMAL where
    the file has none, except a padded vocabulary's rows as the converter names them (``[PAD{i}]``), which stay
    padding; CheckpointError, as llama.cpp refuses them, for types that are not int32 or fewer than the tokens."""
    import gguf

    T, key = gguf.TokenType, gguf.Keys.Tokenizer.TOKEN_TYPE
    field = reader.fields.get(key)
    if field is None:
        padding = {f"[PAD{i}]".encode(): int(T.UNUSED) for i in range(GPT2_TOKENS, len(tokens))}
        return [padding.get(t, int(T.NORMAL)) if i >= GPT2_TOKENS else int(T.NORMAL) for i, t in enumerate(tokens)]
    if field.types != [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32]:
        raise CheckpointError(
            f"{path}: GGUF metadata {key!r} is not an array of int32 token types; the file is corrupt: "
            "re-download or re-convert it"
        )
    types = [int(field.parts[i][0]) for i in field.data]
    if len(types) < len(tokens):
        raise CheckpointError(
            f"{path}: GGUF metadata {key!r} has {len(types)} token types for {len(tokens)} tokens; the file is "
            "corrupt: re-download or re-convert it"
        )
    return types


def _eos_token_ids(reader: Any, path: Path, tokens: list[bytes], types: list[int]) -> list[int] | None:
    """The ids that end a generation, as llama.cpp collects them (``special_eog_ids``): the file's eos, eot and eom
    tokens (a chat fine-tune's ``<|im_end|>``: the converter writes tokenizer_config.json's ``eos_token``), its FIM
    pad, repo and separator tokens, and every token spelled as one of :data:`EOG_SPELLINGS` (``<|endoftext|>``,
    ``<|im_end|>``, ``<|eot_id|>``, ...) whatever the metadata says. A file without an eos id ends at
    ``<|endoftext|>`` (by its spelling), not at llama.cpp's default eos for a 'gpt2' tokenizer, token 11: that
    is GPT-2's ",", so a generation would end at its first comma. A padding row (UNUSED) spelled so is left
    out: npgpt never samples one. None for ``<|endoftext|>`` alone, as in GPT-2's own file."""
    import gguf

    K = gguf.Keys.Tokenizer
    n_tokens = len(tokens)

    def token_id(key: str, default: int | None) -> int | None:
        if key not in reader.fields:
            return default
        value = _field(reader, path, key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n_tokens:
            raise CheckpointError(
                f"{path}: GGUF metadata {key!r} is {value!r}, not one of its {n_tokens} tokens; the file is corrupt: "
                "re-download or re-convert it"
            )
        return value

    named = [token_id(K.EOS_ID, None), token_id(K.EOT_ID, None), token_id(K.EOM_ID, None)]
    named += [token_id(getattr(K, name), None) for name, _ in _FIM_SPELLINGS]
    spelled, unused = _eog_spellings(reader), int(gguf.TokenType.UNUSED)
    ids = {i for i in named if i is not None}
    ids |= {i for i, t in enumerate(tokens) if t in spelled and (i < GPT2_TOKENS or types[i] != unused)}
    texts = {tokens[i] for i in ids}
    # llama.cpp's two exceptions: gpt-oss's and solar-open's <|end|>, and gemma4's and plamo's </s>, do not end one
    has_call = bool(texts & {b"<|call|>", b"<|calls|>"})
    if b"<|end|>" in texts and has_call and texts & {b"<|return|>", b"<|flush|>"}:
        ids = {i for i in ids if tokens[i] != b"<|end|>"}
    if b"</s>" in texts and texts & {b"<|tool_response>", b"<|plamo:eos|>"}:
        ids = {i for i in ids if tokens[i] != b"</s>"}
    return None if ids == {EOT_ID} else sorted(ids)


def _added_tokens(
    path: Path, tokens: list[bytes], types: list[int], eog_spellings: frozenset[bytes]
) -> dict[str, Any] | None:
    """The added tokens of a GGUF's tokenizer as a spec for ``tokenizer_from_spec`` (None: GPT-2's alone).
    llama.cpp's converter writes a fine-tune's added tokens as CONTROL (special ones: ``<|endoftext|>``,
    ``<|im_end|>``) or USER_DEFINED (``tok.add_tokens``), those on GPT-2's own ids too (``"hello"``, 31373),
    and a padded vocabulary's rows as UNUSED ``[PAD{i}]``, which stay padding. A token spelled as one that ends
    a generation (``eog_spellings``) is CONTROL whatever its type says, as llama.cpp overrides it."""
    import gguf

    T = gguf.TokenType
    added = []
    for i, kind in enumerate(types[: len(tokens)]):
        if i >= GPT2_TOKENS and kind != T.UNUSED and tokens[i] in eog_spellings:
            kind = T.CONTROL
        if kind not in (T.CONTROL, T.USER_DEFINED):
            if i >= GPT2_TOKENS and kind != T.UNUSED:
                name = T(kind).name if kind in set(T) else f"{kind} (no type llama.cpp knows)"
                raise CheckpointError(
                    f"{path}: token {i} ({tokens[i][:40]!r}) is of type {name}, a token of the BPE itself "
                    "past GPT-2's 50257; npgpt only runs GPT-2's tokenizer and the tokens a fine-tune added to it"
                )
            continue
        try:
            content = tokens[i].decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{path}: added token {i} is not UTF-8 text; the file is corrupt") from None
        special = kind == T.CONTROL
        added.append({"content": content, "id": i, "special": special, "normalized": not special})
    if all(t["id"] == EOT_ID for t in added):
        return None  # GPT-2's own
    if not any(t["id"] == EOT_ID for t in added):  # a file that typed <|endoftext|> NORMAL: still GPT-2's special
        added.insert(0, {"content": EOT, "id": EOT_ID, "special": True, "normalized": False})
    return {"type": "gpt2", "added_tokens": sorted(added, key=lambda t: t["id"])}


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


def _gpt2_vocab(n_vocab: int, tokenizer: dict[str, Any] | None = None) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges for the GGUF tokenizer, as the converter builds them for GPT-2: a
    fine-tune's added tokens (``tokenizer``, :meth:`Tokenizer.to_spec`) at their ids, CONTROL where special
    and USER_DEFINED where not, and a padded vocabulary's other rows ``[PAD{i}]``, UNUSED."""
    import gguf

    from ..tokenizer import gpt2_merges, gpt2_tokens

    tokens = list(gpt2_tokens())
    types = [int(gguf.TokenType.NORMAL)] * len(tokens)
    types[EOT_ID] = int(gguf.TokenType.CONTROL)
    # A padded vocabulary (nanoGPT's 50304): the converter names the extra rows [PAD{i}], type UNUSED.
    tokens += [f"[PAD{i}]" for i in range(len(tokens), n_vocab)]
    types += [int(gguf.TokenType.UNUSED)] * (n_vocab - len(types))
    for t in (tokenizer or {}).get("added_tokens", []):  # on GPT-2's own ids too: its spelling is the token's
        tokens[t["id"]] = t["content"]
        types[t["id"]] = int(gguf.TokenType.CONTROL if t["special"] else gguf.TokenType.USER_DEFINED)
    return tokens, types, list(gpt2_merges())


def _encode(arr: np.ndarray, dtype: str, name: str) -> tuple[np.ndarray, Any]:
    """(data, GGMLQuantizationType) for one tensor, choosing types as convert_hf_to_gguf.py does."""
    import gguf
    from gguf import quants

    Q = gguf.GGMLQuantizationType
    want = {"float32": Q.F32, "float16": Q.F16, "bfloat16": Q.BF16, "q8_0": Q.Q8_0}[dtype]
    if arr.ndim == 1 or name.startswith(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.POS_EMBD]):
        want = Q.F32
    try:
        return quants.quantize(arr, want), want
    except quants.QuantError:  # rows not a multiple of Q8_0's 32-value block
        return quants.quantize(arr, Q.F16), Q.F16


def _check_q8_0_range(flat: dict[str, Any], n_layer: int, tied: bool) -> None:
    """CheckpointError, before anything is written, for a weight that ``q8_0`` would store as infinity: in
    a matrix whose rows do not split into 32-value blocks (stored as F16, see :func:`_encode`), beyond
    float16's range; elsewhere, beyond what a block's float16 scale (its largest magnitude / 127) holds."""
    import gguf

    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]
    table = _name_table(n_layer)
    if not tied:
        table[_output_name()] = "lm_head"
    for gguf_name, ours in table.items():
        arr = np.asarray(flat[ours])
        if arr.ndim == 1 or gguf_name.startswith(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.POS_EMBD]) or not arr.size:
            continue  # stored as F32
        row = arr.shape[0] if ours.endswith(_MATRICES) else arr.shape[-1]  # GGUF's rows: Conv1D's columns
        if row % block:
            why = f" (q8_0 stores it so: its rows of {row} values do not split into {block}-value blocks)"
            check_float16_range({ours: arr}, why=why)
        elif (big := float(np.abs(arr).max())) / 127 >= FLOAT16_OVERFLOW:
            raise CheckpointError(
                f"cannot write {ours!r} as q8_0: it holds {big:g}, beyond what a block's float16 scale can hold "
                f"({127 * 65504:g}); write float32 or bfloat16"
            )


def save(
    path: str | Path,
    config: GPT2Config,
    params: dict[str, Any],
    dtype: str = "float32",
    tokenizer: dict[str, Any] | None = None,
) -> Path:
    """Write a GPT-2 GGUF that llama.cpp loads; ``dtype`` "float32", "float16", "bfloat16" or "q8_0".

    The tokenizer is GPT-2's (npgpt's assets), so the model's vocabulary must have at least its 50257 rows;
    the tokens a fine-tune added (``tokenizer``, :meth:`~npgpt.tokenizer.Tokenizer.to_spec`) go at their ids,
    other extra rows get ``[PAD{i}]`` tokens. The epsilon, MLP width and an untied head are written as llama.cpp
    reads them, a bias-free model with zero biases; any other non-GPT-2 setting is refused
    (:func:`compat.require_writable`). A directory (or a path without suffix) gets ``model.gguf``.
    Written atomically.
    """
    gguf = _gguf()

    if dtype not in DTYPES:
        raise CheckpointError(f"GGUF weights are written as {', '.join(DTYPES)}, not {dtype!r}")
    if config.n_vocab < GPT2_TOKENS:
        raise CheckpointError(
            f"GGUF carries GPT-2's tokenizer, one token per embedding row: this model has "
            f"{config.n_vocab} rows, GPT-2's tokenizer {GPT2_TOKENS} tokens"
        )
    require_writable(config, "GGUF", holds=("n_inner", "layer_norm_epsilon", "tie_word_embeddings"))
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / "model.gguf"
    flat = flatten(params)
    unflatten(dict(flat), config)  # refuse to write a file that would not load
    flat = with_zero_biases(flat, config)  # llama.cpp's GPT-2 requires every bias
    tied = getattr(config, "tie_word_embeddings", True)
    ftype = {
        "float32": gguf.LlamaFileType.ALL_F32,
        "float16": gguf.LlamaFileType.MOSTLY_F16,
        "bfloat16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[dtype]
    if tokenizer is not None and max(t["id"] for t in tokenizer["added_tokens"]) >= config.n_vocab:
        raise CheckpointError(f"the tokenizer has more tokens than the model's {config.n_vocab} embedding rows")
    eos = None if tokenizer is None else tokenizer.get("eos_token_id")
    if own_eos_ids(tokenizer) is None:
        raise CheckpointError(
            f"a GGUF GPT-2 ends its generations at <|endoftext|>, at most three more tokens named by id (its eos, eot "
            f"and eom) and any token spelled as llama.cpp's end tokens, not at token ids {eos}"
        )
    tokens, types, merges = _gpt2_vocab(config.n_vocab, tokenizer)
    if (twice := _spelled_twice(tokens)) is not None:
        raise CheckpointError(f"cannot write a GGUF: {twice}")
    if dtype == "q8_0":
        _check_q8_0_range(flat, config.n_layer, tied)
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(tmp, ARCH)
        w.add_name("GPT-2 (npgpt)")
        w.add_block_count(config.n_layer)
        w.add_context_length(config.n_ctx)
        w.add_embedding_length(config.n_embd)
        w.add_feed_forward_length(getattr(config, "d_mlp", 4 * config.n_embd))
        w.add_head_count(config.n_head)
        w.add_layer_norm_eps(getattr(config, "layer_norm_epsilon", 1e-5))
        w.add_file_type(ftype)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)  # the converter writes it for every type
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(EOT_ID)
        # As the reader (and llama.cpp) reads them back: eos, eot and eom; <|endoftext|> where there is no other
        # (past three, the others are spelled as llama.cpp's end tokens: it ends there by their spelling)
        ends = (own_eos_ids(tokenizer) or [EOT_ID])[:3]
        adds = (w.add_eos_token_id, w.add_eot_token_id, w.add_eom_token_id)
        for add, token_id in zip(adds[: len(ends)], ends, strict=True):
            add(token_id)
        for gguf_name, ours in _name_table(config.n_layer).items():
            arr = np.asarray(flat[ours], dtype=np.float32)
            arr = np.ascontiguousarray(arr.T if ours.endswith(_MATRICES) else arr)  # Conv1D [in, out] -> [out, in]
            data, qtype = _encode(arr, dtype, gguf_name)
            w.add_tensor(gguf_name, data, raw_dtype=qtype)
        if not tied:
            data, qtype = _encode(np.asarray(flat["lm_head"], dtype=np.float32), dtype, _output_name())
            w.add_tensor(_output_name(), data, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path
