"""Hugging Face GPT-2 checkpoints: ``config.json`` + weights (one safetensors file, shards, or a pickle).

HF's ``Conv1D`` stores weights ``[in, out]`` like OpenAI, so tensors map one to one; only the
names differ. ``GPT2LMHeadModel`` prefixes them with ``transformer.``; ``GPT2Model`` does not.
``lm_head.weight`` is the output head when ``tie_word_embeddings`` is false, else a copy of wte (one that
differs from wte is the output head all the same, as transformers reads it; one without wte beside it is wte).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..config import GPT2Config
from ..errors import CheckpointError
from ..files import make_dirs, parse_json, save_safetensors, write_together
from ..params import expected_shapes, flatten, unflatten
from .hf_files import (
    CHAT_TEMPLATE_FILE,
    SAFETENSORS_INDEX,
    TOKENIZER_FILES,
    check_gpt2,
    check_not_quantized,
    check_tokenizer,
    read_tensors,
    safetensors_set,
    shard_plan,
)
from .npgpt_format import (
    MODEL_FILE,  # Hugging Face names its weights file the same
    as_float32,
)

# HF leaf names -> npgpt leaf names (layer norms use weight/bias, OpenAI uses g/b).
_LEAF = {"weight": "w", "bias": "b"}
_LN_LEAF = {"weight": "g", "bias": "b"}
# GPT2Config fields transformers reads under the same name.
_HF_MATH = (
    "activation_function",
    "layer_norm_epsilon",
    "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx",
    "reorder_and_upcast_attn",
    "tie_word_embeddings",
)
# Buffers: not parameters; and GPT2DoubleHeadsModel's multiple-choice head, beside its language-model
# head (transformers' GPT2LMHeadModel.from_pretrained leaves it out too).
_DROP = re.compile(r"\.attn\.(masked_)?bias$|^multiple_choice_head\.")
_TOP_LEVEL = ("wte", "wpe", "blocks", "ln_f", "lm_head")  # the first part of every npgpt name
# The heads of transformers' GPT-2 classes that have no language-model head.
_TASK_HEADS = {
    "score": "GPT2ForSequenceClassification",
    "classifier": "GPT2ForTokenClassification",
    "qa_outputs": "GPT2ForQuestionAnswering",
}


# What PyTorch's wrappers put before the wrapped model's names in a state dict saved from the wrapper:
# torch.compile's ``_orig_mod.`` and DistributedDataParallel's ``module.`` (nanoGPT strips ``_orig_mod.``
# when it resumes, for the same reason). Any other prefix is a model of which GPT-2 is a part.
_WRAPPERS = re.compile(r"^(?:module\.|_orig_mod\.)+")
# A GPT-2 name with something before it (``model.transformer.h.0.ln_1.weight`` of a Lightning module).
_PREFIXED = re.compile(r"^(?P<prefix>.+?\.)(?:transformer\.)?(?:h\.\d+\.|(?:wte|wpe|ln_f)\.|lm_head\.weight$)")


def unwrapped(name: str) -> str:
    """``name`` without the prefixes :data:`_WRAPPERS` (``module._orig_mod.transformer.wte.weight``)."""
    return _WRAPPERS.sub("", name)


def hf_to_npgpt_name(name: str) -> str | None:
    """``transformer.h.3.attn.c_attn.weight`` -> ``blocks.3.attn.c_attn.w``; None for dropped tensors."""
    name = unwrapped(name).removeprefix("transformer.")
    if _DROP.search(name):
        return None
    if name == "lm_head.weight":
        return "lm_head"
    if name in ("wte.weight", "wpe.weight"):
        return name.split(".")[0]
    parts = name.split(".")
    if len(parts) < 2:  # no GPT-2 tensor's name (a wrapper's logit_scale, TensorFlow's "a/b:0"): refused as unexpected
        return name
    if parts[0] == "h":
        parts[0] = "blocks"
    leaf_map = _LN_LEAF if parts[-2].startswith("ln_") else _LEAF
    parts[-1] = leaf_map.get(parts[-1], parts[-1])
    return ".".join(parts)


def duplicate(source: str, first: str, second: str) -> CheckpointError:
    """Two of a file's names for one tensor (``transformer.`` or ``_orig_mod.`` prefixed and not): refused,
    as either choice could be the wrong weights."""
    return CheckpointError(
        f"{source}: tensors {first!r} and {second!r} are the same weight twice; the file mixes two models' "
        "names: re-save it from the model itself"
    )


def our_names(names: Iterable[str], source: str) -> Iterator[tuple[str, str]]:
    """(their name, npgpt's) for each weight among ``names``, buffers skipped; CheckpointError
    (:func:`duplicate`) for one weight under two names."""
    seen: dict[str, str] = {}
    for name in names:
        task = _TASK_HEADS.get(unwrapped(name).split(".")[0])
        if task is not None:
            raise CheckpointError(
                f"{source}: tensor {name!r} is the head of a {task}, a task model with no "
                "language-model head; npgpt generates text with GPT2LMHeadModel checkpoints"
            )
        ours = hf_to_npgpt_name(name)
        if ours is None:  # a buffer (the attn.bias mask)
            continue
        if ours.split(".")[0] not in _TOP_LEVEL and (prefixed := _PREFIXED.match(unwrapped(name))):
            raise CheckpointError(
                f"{source}: tensor {name!r} has {prefixed['prefix']!r} before GPT-2's name (the state dict of a "
                "model that holds GPT-2); save the GPT-2 model itself with save_pretrained, or remove the prefix "
                "from the names"
            )
        if ours in seen:  # transformer.wte.weight and wte.weight: which one transformers uses depends on the class
            raise duplicate(source, seen[ours], name)
        seen[ours] = name
        yield name, ours


def npgpt_to_hf_name(name: str) -> str:
    if name == "lm_head":
        return "lm_head.weight"
    if name in ("wte", "wpe"):
        return f"transformer.{name}.weight"
    parts = name.split(".")
    if parts[0] == "blocks":
        parts[0] = "h"
    inverse = {"g": "weight", "b": "bias", "w": "weight"}
    parts[-1] = inverse[parts[-1]]
    return "transformer." + ".".join(parts)


def load(directory: str | Path, weights: str | Path | None = None) -> tuple[GPT2Config, dict[str, Any]]:
    """Config and nested float32 params from a Hugging Face GPT-2 directory; ``weights``: its file the
    user named (``pytorch_model.bin`` beside a ``model.safetensors`` is that bin, not the safetensors)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise CheckpointError(f"{config_path}: missing; a Hugging Face GPT-2 directory needs config.json")
    try:
        raw = parse_json(config_path.read_text(encoding="utf-8"))
    except OSError as e:  # a folder in its place, no permission: read_text's own message is a traceback's
        raise CheckpointError(f"{config_path}: unreadable ({e.strerror}); re-download the model") from None
    except ValueError as e:
        raise CheckpointError(f"{config_path}: not JSON ({e}); re-download the model") from None
    check_gpt2(raw, str(config_path))
    check_not_quantized(raw, str(config_path))
    try:
        config = GPT2Config.from_dict(raw)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{config_path}: {e}") from None
    check_tokenizer(directory, config.n_vocab)
    tensors, weights_path = read_tensors(directory, None if weights is None else Path(weights))
    theirs = {ours: name for name, ours in our_names(tensors, weights_path)}
    if config.tie_word_embeddings and "wte" not in theirs and "lm_head" in theirs:
        # A tied pair saved under one name, the head's: safetensors' save_model keeps the first in sorted
        # order, lm_head.weight. transformers ties wte to it, so it is wte.
        theirs["wte"] = theirs.pop("lm_head")
    if config.tie_word_embeddings and {"lm_head", "wte"} <= theirs.keys():
        head, wte = tensors[theirs["lm_head"]], tensors[theirs["wte"]]
        if not same_weights(head, wte):
            # A head the file holds apart from wte, under a config that says tied: transformers keeps it
            # (and warns to set tie_word_embeddings false), so the file's head is the model's.
            config = dataclasses.replace(config, tie_word_embeddings=False)
    flat = {
        ours: as_float32(tensors[name], name, weights_path)
        for ours, name in theirs.items()
        if not (ours == "lm_head" and config.tie_word_embeddings)  # tied: a copy of wte
    }
    return config, unflatten(flat, config, source=weights_path)


def same_weights(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two tensors hold the same values: a tied weight saved twice, or once as two views of the
    same bytes (a pickle's shared storage, told without reading the data)."""
    ia, ib = a.__array_interface__, b.__array_interface__
    same_view = (ia["data"][0], a.shape, a.strides, a.dtype) == (ib["data"][0], b.shape, b.strides, b.dtype)
    return same_view or (a.shape == b.shape and bool(np.array_equal(a, b)))


GPT2_VOCAB = 50257  # GPT-2's tokens, <|endoftext|> last


def _tokenizer_writers(
    directory: Path, config: GPT2Config, text: Callable[..., Callable[[str], Any]], tokenizer: dict[str, Any] | None
) -> dict[Path, Callable[[str], Any]]:
    """GPT-2's tokenizer files, which transformers' AutoTokenizer reads from the model's folder: without them
    transformers 5 silently builds a tokenizer of no tokens (and transformers 4 refuses the folder).
    ``encoder.json`` is GPT-2's ``vocab.json`` and ``vocab.bpe`` its ``merges.txt``, byte for byte. A fine-tune's
    added tokens (``tokenizer``: :meth:`npgpt.tokenizer.Tokenizer.to_spec`) go into tokenizer_config.json's
    ``added_tokens_decoder``, as transformers saves them and reads them back (and :func:`hf_files.tokenizer_spec`)."""
    import shutil

    from ..tokenizer import EOT, EOT_ID, default_files

    encoder_json, vocab_bpe = default_files()
    settings: dict[str, Any] = {"model_max_length": config.n_ctx}
    if tokenizer is not None:
        added = {EOT_ID: {"content": EOT, "id": EOT_ID, "special": True, "normalized": False}}
        added.update({t["id"]: t for t in tokenizer["added_tokens"]})
        settings["added_tokens_decoder"] = {
            str(i): {
                "content": t["content"],
                "lstrip": False,
                "normalized": bool(t["normalized"]),
                "rstrip": False,
                "single_word": False,
                "special": bool(t["special"]),
            }
            for i, t in sorted(added.items())
        }
    return {
        directory / "vocab.json": lambda tmp: shutil.copyfile(encoder_json, tmp),
        directory / "merges.txt": lambda tmp: shutil.copyfile(vocab_bpe, tmp),
        directory / "tokenizer_config.json": text(settings),
    }


def save(
    directory: str | Path,
    config: GPT2Config,
    params: dict[str, Any],
    max_shard_size: int | str | None = None,
    tokenizer: dict[str, Any] | None = None,
    chat_template: str | None = None,
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` that ``GPT2LMHeadModel.from_pretrained`` reads, and for a
    model of GPT-2's vocabulary its tokenizer (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``).

    Every math field of the config is written under transformers' name. HF's GPT-2 always has
    biases, so a ``bias=False`` model is written with zero biases: the same function, read
    back as ``bias=True``. With ``max_shard_size`` (bytes, or e.g. ``"2GB"``) the weights are split
    into shards plus ``model.safetensors.index.json`` wherever they exceed it, as ``save_pretrained`` does.
    ``tokenizer``: GPT-2's with a fine-tune's added tokens and eos (``Tokenizer.to_spec()``), written where
    transformers reads them (tokenizer_config.json's ``added_tokens_decoder``, config.json's ``eos_token_id``).
    ``chat_template``: the model's chat template, written to chat_template.jinja as ``save_pretrained`` writes it.
    Over an earlier model the earlier safetensors weights (``model.safetensors``, or the index and
    its shards) and its tokenizer files this one does not write (``tokenizer.json``, ``generation_config.json``,
    ``chat_template.jinja``, ...) are removed once the new ones are written; other files are left alone.
    """
    directory = Path(directory)
    make_dirs(directory)
    flat_params = flatten(params)
    unflatten(flat_params, config)  # refuse to write a model that would not load
    with_biases = expected_shapes(dataclasses.replace(config, bias=True))
    flat = {
        npgpt_to_hf_name(k): np.ascontiguousarray(flat_params[k], dtype=np.float32)
        if k in flat_params
        else np.zeros(shape, np.float32)
        for k, shape in with_biases.items()
    }
    hf_config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.n_vocab,
        "n_positions": config.n_ctx,
        "n_ctx": config.n_ctx,
        "n_embd": config.n_embd,
        "n_head": config.n_head,
        "n_layer": config.n_layer,
        "n_inner": config.n_inner,
        **{k: getattr(config, k) for k in _HF_MATH},
        **({"bos_token_id": 50256, "eos_token_id": 50256} if config.n_vocab > 50256 else {}),
    }
    eos = tokenizer.get("eos_token_id") if tokenizer is not None else None
    if eos:  # a fine-tune's own end tokens: transformers' generate stops at config.json's (GenerationConfig's)
        hf_config["eos_token_id"] = eos[0] if len(eos) == 1 else list(eos)
    previous = safetensors_set(directory)
    shards, index = shard_plan(flat, max_shard_size) if max_shard_size is not None else ({MODEL_FILE: list(flat)}, None)

    def shard(names: list[str]) -> Callable[[str], None]:
        return lambda tmp: save_safetensors({n: flat[n] for n in names}, tmp, metadata={"format": "pt"})

    def text(content: dict[str, Any], **dump: Any) -> Callable[[str], Any]:
        return lambda tmp: Path(tmp).write_text(json.dumps(content, indent=2, **dump))

    writers = {directory / name: shard(names) for name, names in shards.items()}
    if index is not None:
        writers[directory / SAFETENSORS_INDEX] = text(index, sort_keys=True)
    if config.n_vocab >= GPT2_VOCAB:  # GPT-2's tokens: its tokenizer beside the weights, as openai-community/gpt2's
        writers.update(_tokenizer_writers(directory, config, text, tokenizer))
    if chat_template is not None:
        template = chat_template

        def write_template(tmp: str) -> None:
            Path(tmp).write_text(template, encoding="utf-8")

        writers[directory / CHAT_TEMPLATE_FILE] = write_template
    # An earlier model's tokenizer files that this one does not write (its tokenizer.json with added tokens, its
    # generation_config.json's eos, its chat template): transformers, and npgpt, would read them as this model's
    previous |= {name for name in TOKENIZER_FILES if (directory / name).is_file()}
    writers[directory / "config.json"] = text(hf_config)
    # One set (files.write_together): a failure leaves the old model whole; config.json is withdrawn
    # first and renamed last, so a writer killed while renaming leaves none, never new shards beside
    # old ones (the same names when resharding at the same size) or new weights under an old config.
    # The old set's other files go too: a model.safetensors would shadow new shards, and old shards
    # and index would sit beside a new model.safetensors as a second model.
    stale = [directory / name for name in sorted(previous - {path.name for path in writers})]
    write_together(writers, withdraw=[directory / "config.json", *stale])
    return directory
