"""Writing a GPT-2 GGUF that llama.cpp loads: F32, F16, BF16 or Q8_0 weight matrices (1-D tensors and
``position_embd`` stay F32, matrices whose rows do not split into Q8_0's 32-value blocks fall back to F16, both
as llama.cpp's converter does), with GPT-2's tokenizer from npgpt's assets. Names and layout: ``gguf_format``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import GPT2Config
from ..errors import CheckpointError
from ..files import atomic_path
from ..params import flatten, unflatten
from .compat import FLOAT16_OVERFLOW, check_float16_range, require_writable, with_zero_biases
from .gguf_format import _MATRICES, ARCH, DTYPES, _gguf, _name_table, _output_name
from .gguf_tokenizer import EOT_ID, GPT2_TOKENS, _gpt2_vocab, _spelled_twice, own_eos_ids


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
    chat_template: str | None = None,
) -> Path:
    """Write a GPT-2 GGUF that llama.cpp loads; ``dtype`` "float32", "float16", "bfloat16" or "q8_0".

    The tokenizer is GPT-2's (npgpt's assets), so the model's vocabulary must have at least its 50257 rows;
    the tokens a fine-tune added (``tokenizer``, :meth:`~npgpt.tokenizer.Tokenizer.to_spec`) go at their ids,
    other extra rows get ``[PAD{i}]`` tokens. The epsilon, MLP width and an untied head are written as llama.cpp
    reads them, a bias-free model with zero biases; any other non-GPT-2 setting is refused
    (:func:`compat.require_writable`). ``chat_template`` goes into ``tokenizer.chat_template``, as llama.cpp's
    converter copies a model's. A directory (or a path without suffix) gets ``model.gguf``.
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
        if chat_template is not None:
            w.add_chat_template(chat_template)
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
