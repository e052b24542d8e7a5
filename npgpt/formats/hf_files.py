"""The weight files of a Hugging Face model directory, in each layout ``transformers`` reads.

| layout      | files                                                             |
|-------------|-------------------------------------------------------------------|
| hf          | ``model.safetensors``                                             |
| hf-sharded  | ``model.safetensors.index.json`` + ``model-0000N-of-0000M.safetensors`` |
| hf-bin      | ``pytorch_model.bin`` (or ``pytorch_model.bin.index.json`` + shards) |

Safetensors shards are memory-mapped one by one; PyTorch pickles go through
:mod:`npgpt.formats.torch_pickle`, which runs no code from the file. Names stay Hugging Face's;
:mod:`npgpt.formats.hf` maps them to npgpt's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, json_kind, reason, shown
from ..files import broken_link, parse_json
from .npgpt_format import read_safetensors

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
# Checked in this order, as transformers does: safetensors first, pickles last.
LAYOUTS = {"hf": SAFETENSORS, "hf-sharded": SAFETENSORS_INDEX, "hf-bin": BIN}
GPT2_ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")
HUB_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")  # huggingface_hub's model{suffix}.safetensors
# save_pretrained(DIR, variant="fp16")'s names: model.fp16.safetensors, model.safetensors.index.fp16.json (and
# its shards model.fp16-00001-of-00002.safetensors), pytorch_model.fp16.bin, pytorch_model.bin.index.fp16.json;
# transformers reads them only when from_pretrained is told the variant.
VARIANT_WEIGHTS = re.compile(r"^(?:model\.[^.]+\.safetensors|pytorch_model\.[^.]+\.bin)$")
_SHARD = re.compile(r"-\d{5}-of-\d{5}\.(?:safetensors|bin)$")
VARIANT_INDEX = re.compile(r"^(?:model\.safetensors|pytorch_model\.bin)\.index\.(?P<variant>[^.]+)\.json$")


def is_index(name: str) -> bool:
    """Whether ``name`` is a shard index's (model.safetensors.index.json, pytorch_model.bin.index.json, a variant's)."""
    return name in (SAFETENSORS_INDEX, BIN_INDEX) or VARIANT_INDEX.match(name) is not None


def indexes_naming(path: Path) -> Path | None:
    """The shard index beside ``path`` (a variant's too) whose weight_map names it, else None."""
    for index in sorted(path.parent.glob("*.index*.json")):
        if is_index(index.name) and index.is_file() and path.name in shard_map(index):
            return index
    return None


def variant_weights(directory: Path) -> list[Path]:
    """The weights of every variant save_pretrained wrote in ``directory``: its single file or its index."""
    return sorted(
        p
        for p in directory.iterdir()
        if (VARIANT_WEIGHTS.match(p.name) and not _SHARD.search(p.name) or VARIANT_INDEX.match(p.name)) and p.is_file()
    )


def check_gpt2(config: Any, source: str) -> None:
    """CheckpointError unless a ``config.json`` describes GPT-2 (``model_type`` gpt2, or a GPT-2 architecture).

    A config with neither key (hand-written) passes: the tensors' names and shapes decide.
    """
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{source}: not a JSON object but {json_kind(config)}; re-download or re-convert the model"
        )
    model_type, archs = config.get("model_type"), config.get("architectures") or []
    ok = model_type == "gpt2" if model_type is not None else (not archs or any(a in GPT2_ARCHITECTURES for a in archs))
    if not ok:
        field, value = ("model_type", model_type) if model_type is not None else ("architectures", archs)
        raise CheckpointError(f"{source}: {field} is {value!r}, not GPT-2; npgpt runs GPT-2 ('gpt2') models only")
    # A model of its own code under GPT-2's model_type (bigcode/santacoder: GPT2LMHeadCustomModel, multi-query
    # attention), which transformers runs with trust_remote_code=True: its weights are no GPT-2's
    auto_map = config.get("auto_map")
    custom = (
        sorted(str(v) for k, v in auto_map.items() if str(k).startswith("AutoModel"))
        if isinstance(auto_map, dict)
        else []
    )
    if custom:
        raise CheckpointError(
            f"{source}: auto_map names the model's own code ({custom[0]}), which transformers runs with "
            "trust_remote_code=True in place of GPT-2's; npgpt runs GPT-2 as transformers' GPT2LMHeadModel computes it"
        )


def check_not_quantized(config: dict[str, Any], source: str) -> None:
    """CheckpointError for a ``config.json`` with ``quantization_config``: transformers runs such weights
    through that method's kernels (GPTQ's packed int32 ``qweight``, bitsandbytes' int8 matrices and their
    scales), which npgpt does not; they are no GPT-2 float weights, and ``model.float()`` cannot make them so."""
    quantization = config.get("quantization_config")
    if quantization is None:
        return
    method = quantization.get("quant_method") if isinstance(quantization, dict) else quantization
    raise CheckpointError(
        f"{source}: the weights are quantized with {shown(method)} (quantization_config); npgpt reads float "
        "weights: load the model with transformers, call model.dequantize() and save_pretrained(DIR), or use "
        "the unquantized original"
    )


# A tokenizer's files as transformers saves them: the byte-level BPE's vocabulary (tokenizer.json,
# vocab.json) and the files of tokenizers that are no BPE at all (WordPiece's vocab.txt, SentencePiece's model).
BPE_VOCABS = ("tokenizer.json", "vocab.json")
OTHER_VOCABS = ("vocab.txt", "spiece.model", "tokenizer.model", "sentencepiece.bpe.model")


def check_tokenizer(directory: Path, n_rows: int | None = None) -> None:
    """CheckpointError if the tokenizer saved beside the model is not GPT-2's, or not one npgpt reads as
    transformers does (:func:`tokenizer_spec`), or if it has a token with no embedding row: ``n_rows``,
    the weights' vocabulary size (rows past the tokenizer's tokens are padding, nanoGPT's 50304)."""
    spec = tokenizer_spec(directory)
    if spec is None or n_rows is None:
        return
    n_tokens = 1 + max(t["id"] for t in spec["added_tokens"])
    if n_tokens > n_rows:
        token = next(t["content"] for t in spec["added_tokens"] if t["id"] == n_tokens - 1)
        raise CheckpointError(
            f"{directory}: the tokenizer's added token {token!r} is id {n_tokens - 1}, but the weights have "
            f"{n_rows} token rows; save the model after model.resize_token_embeddings(len(tokenizer))"
        )


def tokenizer_spec(directory: Path) -> dict[str, Any] | None:
    """The tokenizer saved beside the model, for :func:`npgpt.char_tokenizer.tokenizer_from_spec`: None for
    GPT-2's own (or none saved), else GPT-2's with the tokens a fine-tune added (``{"type": "gpt2",
    "added_tokens": [...]}``: tokenizer.json's ``added_tokens``; without it, tokenizer_config.json's
    ``added_tokens_decoder`` or added_tokens.json, as a slow tokenizer saves them).

    CheckpointError if it is not GPT-2's (npgpt encodes text with GPT-2's BPE, so a model trained on another
    vocabulary would read wrong tokens and write gibberish; GGUF's tokenizer metadata is checked the same
    way), or if a setting changes the ids in a way npgpt does not follow (``add_prefix_space``,
    ``add_bos_token``, a normalizer, an added token's ``lstrip``/``rstrip``/``single_word``).
    """
    from ..tokenizer import EOT, EOT_ID, GPT2_ADDED, gpt2_tokens

    files = {name: _tokenizer_file(directory / name) for name in (*BPE_VOCABS, *SETTINGS)}
    for name in BPE_VOCABS:
        data = files[name]
        if data is None:
            continue
        path = directory / name
        kind: Any = "BPE"  # vocab.json: the BPE's vocabulary itself
        vocab = data
        if name == "tokenizer.json":
            model = data.get("model") if isinstance(data, dict) else None
            kind, vocab = (model.get("type"), model.get("vocab")) if isinstance(model, dict) else (None, None)
        if kind != "BPE":
            raise _not_gpt2_tokenizer(path, f"a {kind or 'unknown'} tokenizer, not GPT-2's byte-level BPE")
        if not isinstance(vocab, dict):
            raise _not_gpt2_tokenizer(path, "no vocabulary")
        wrong = next(((t, i) for i, t in enumerate(gpt2_tokens()) if vocab.get(t) != i), None)
        if wrong is not None:
            t, i = wrong
            here = vocab.get(t)
            raise _not_gpt2_tokenizer(
                path, f"a vocabulary of {len(vocab)} tokens, not GPT-2's (GPT-2's {t!r}, id {i}, is {here!r} here)"
            )
    _check_merges(directory, files)
    if not any(files[name] is not None for name in BPE_VOCABS):  # no BPE's files: another kind's?
        for name in OTHER_VOCABS:
            if (directory / name).is_file():
                raise _not_gpt2_tokenizer(directory / name, "the vocabulary of a tokenizer that is not GPT-2's BPE")
    _check_settings(directory, files)
    where, added = _added_tokens(directory, files) or (directory, {})
    if files["tokenizer.json"] is None:  # a slow tokenizer, or none: GPT-2's <|endoftext|> is there unless renamed
        added = {**{t.id: vars(t) for t in GPT2_ADDED}, **added}
    entries = sorted(added.values(), key=lambda t: t["id"])
    eos_where, eos = _eos_token_ids(directory)
    if all(t["id"] == EOT_ID and t["content"] == EOT for t in entries) and eos in (None, [EOT_ID]):
        return None  # GPT-2's own
    spec: dict[str, Any] = {"type": "gpt2", "added_tokens": entries}
    from ..char_tokenizer import tokenizer_from_spec

    # refused here, at load, naming the file: gaps in the ids, a token on another's id, an eos that is no token
    for file, checked in ((where, spec), (eos_where, {**spec, "eos_token_id": eos})):
        try:
            tokenizer_from_spec(checked)
        except CheckpointError as e:
            raise CheckpointError(f"{file}: {e}") from None
    return {**spec, "eos_token_id": eos}


def _check_merges(directory: Path, files: dict[str, Any]) -> None:
    """CheckpointError unless the BPE merges saved beside the model (tokenizer.json's ``model.merges``, as
    ``"a b"`` strings or, from tokenizers 0.20, ``["a", "b"]`` pairs; merges.txt, its ``#version`` line
    skipped: GPT-2's merge 1979 is ``# #``) are GPT-2's, in GPT-2's order or one that splits every text alike
    (:mod:`npgpt.merge_order`): with GPT-2's vocabulary but other merges, or GPT-2's in an order where two merges
    that meet trade places, transformers splits a text into other tokens than npgpt's GPT-2 BPE."""
    from ..merge_order import misordered_merges
    from ..tokenizer import gpt2_merges

    found: list[tuple[Path, list[Any]]] = []
    model = files["tokenizer.json"].get("model") if isinstance(files["tokenizer.json"], dict) else None
    if isinstance(model, dict) and "merges" in model:
        merges = model["merges"]
        found.append((directory / "tokenizer.json", merges if isinstance(merges, list) else [merges]))
    if (directory / "merges.txt").is_file():
        try:
            text = (directory / "merges.txt").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(
                f"{directory / 'merges.txt'}: not a readable merges file ({e}); re-download it"
            ) from None
        found.append(
            (directory / "merges.txt", [line for line in text.splitlines() if line and not line.startswith("#version")])
        )
    gpt2 = gpt2_merges()
    for path, merges in found:
        spelled = [" ".join(m) if isinstance(m, list) and all(isinstance(p, str) for p in m) else m for m in merges]
        if spelled == list(gpt2):
            continue
        try:
            swapped = misordered_merges(spelled)
        except (ValueError, TypeError):  # not GPT-2's merges in another order (TypeError: a merge that is no string)
            pass
        else:
            if swapped is None:  # GPT-2's in an order that splits every text as GPT-2's does
                continue
            raise _not_gpt2_tokenizer(
                path, f"GPT-2's BPE merges, but {swapped[0]!r} before {swapped[1]!r}, which splits text otherwise"
            )
        first = next((i for i, (a, b) in enumerate(zip(spelled, gpt2, strict=False)) if a != b), None)
        where = (
            f"merge {first} is {shown(spelled[first])}, GPT-2's {gpt2[first]!r}"
            if first is not None
            else (f"{len(spelled)} merges, GPT-2's {len(gpt2)}")
        )
        raise _not_gpt2_tokenizer(path, f"BPE merges that are not GPT-2's ({where}), which split text otherwise")


# What a Hugging Face tokenizer saves beside its vocabulary: its settings and its added tokens.
SETTINGS = ("tokenizer_config.json", "added_tokens.json", "special_tokens_map.json")
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers' save_pretrained writes the template since 4.50
# Every file tokenizer_spec and chat_template read, so a download fetches them (generation_config.json: the eos; the
# others: whose vocabulary, merges and settings; a vocabulary of another kind of tokenizer, which is refused)
TOKENIZER_FILES = (*BPE_VOCABS, "merges.txt", *SETTINGS, CHAT_TEMPLATE_FILE, "generation_config.json", *OTHER_VOCABS)


def _eos_token_ids(directory: Path) -> tuple[Path, list[int] | None]:
    """The ids that end a generation in transformers (``generation_config.eos_token_id``: generation_config.json's,
    else config.json's, as ``GenerationConfig.from_model_config`` takes it), and the file; None where neither
    names one (npgpt then ends at ``<|endoftext|>``)."""
    for name in ("generation_config.json", "config.json"):
        data = _tokenizer_file(directory / name)
        if isinstance(data, dict):
            eos = data.get("eos_token_id")
            if eos is None:
                return directory / name, None
            eos = eos if isinstance(eos, list) else [eos]
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in eos):
                raise CheckpointError(f"{directory / name}: eos_token_id {shown(eos)} is not token ids; re-save it")
            return directory / name, eos
    return directory, None


def chat_template(directory: Path) -> tuple[Path, str] | None:
    """The chat template a Hugging Face model's tokenizer carries, and the file it is in: chat_template.jinja (what
    save_pretrained writes now), else tokenizer_config.json's ``chat_template`` (a string, or a list of named
    templates, of which transformers applies the one named ``default``); None where there is none."""
    jinja = directory / CHAT_TEMPLATE_FILE
    if jinja.is_file():
        try:
            return jinja, jinja.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
    try:
        settings = _tokenizer_file(directory / "tokenizer_config.json")
    except CheckpointError:  # loading says what is wrong with it
        return None
    template = settings.get("chat_template") if isinstance(settings, dict) else None
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return (directory / "tokenizer_config.json", template) if isinstance(template, str) and template else None


def _tokenizer_file(path: Path) -> Any:
    """A tokenizer file's JSON, None where there is none; CheckpointError for one that cannot be read."""
    if not path.is_file():
        return None
    try:
        return parse_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable tokenizer file ({e}); re-download it") from None


def _check_settings(directory: Path, files: dict[str, Any]) -> None:
    """CheckpointError for a tokenizer setting that changes the ids and npgpt does not follow. transformers 5
    takes ``add_prefix_space`` from tokenizer_config.json over tokenizer.json's pre-tokenizer, and
    ``add_bos_token`` from tokenizer.json's post-processor (transformers 4 from tokenizer_config.json)."""
    config = files["tokenizer_config.json"] if isinstance(files["tokenizer_config.json"], dict) else {}
    fast = files["tokenizer.json"] if isinstance(files["tokenizer.json"], dict) else {}
    pre, post = fast.get("pre_tokenizer") or {}, fast.get("post_processor") or {}
    prefix_space = config["add_prefix_space"] if "add_prefix_space" in config else pre.get("add_prefix_space")
    if prefix_space:
        raise CheckpointError(
            f"{directory}: the tokenizer has add_prefix_space=True (a space before each text: ' Hello', not "
            "'Hello'), which npgpt does not add; save it with add_prefix_space=False and begin prompts with a space"
        )
    template = post.get("single") if post.get("type") == "TemplateProcessing" else None
    adds = post.get("type") not in (None, "ByteLevel", "TemplateProcessing") or any(
        "Sequence" not in piece for piece in template or ()
    )
    setting = next((k for k in ("add_bos_token", "add_eos_token") if config.get(k)), "add_bos_token" if adds else None)
    if setting is not None:
        raise CheckpointError(
            f"{directory}: the tokenizer has {setting}=True (special tokens around each text, from tokenizer.json's "
            "post_processor or tokenizer_config.json), which npgpt does not add; save it with "
            f"{setting}=False and put <|endoftext|> in the prompts yourself"
        )
    if (
        fast.get("normalizer") is not None
        or pre.get("type", "ByteLevel") != "ByteLevel"
        or not pre.get("use_regex", True)
    ):
        raise _not_gpt2_tokenizer(directory / "tokenizer.json", "a normalizer or pre-tokenizer unlike GPT-2's")


def _added_tokens(directory: Path, files: dict[str, Any]) -> tuple[Path, dict[int, dict[str, Any]]] | None:
    """The first file that lists added tokens, as transformers reads them, and its id -> added token (AddedToken's
    fields); None where none does."""
    fast, config = files["tokenizer.json"], files["tokenizer_config.json"]
    if isinstance(fast, dict) and "added_tokens" in fast:
        where, entries = directory / "tokenizer.json", fast["added_tokens"]
        listed = [(e.get("id"), e) for e in entries] if isinstance(entries, list) else None
    elif isinstance(config, dict) and "added_tokens_decoder" in config:
        where, entries = directory / "tokenizer_config.json", config["added_tokens_decoder"]
        listed = [(_int(k), e) for k, e in entries.items()] if isinstance(entries, dict) else None
    elif isinstance(files["added_tokens.json"], dict):
        where = directory / "added_tokens.json"
        specials = _special_tokens(files["special_tokens_map.json"])
        listed = [
            (i, {"content": c, "special": c in specials, "normalized": c not in specials})
            for c, i in files["added_tokens.json"].items()
        ]
    else:
        return None
    if listed is None:
        raise CheckpointError(f"{where}: its added tokens are not a list of tokens; re-save the tokenizer")
    added: dict[int, dict[str, Any]] = {}
    for i, entry in listed:
        content = entry.get("content") if isinstance(entry, dict) else None
        if not (isinstance(i, int) and not isinstance(i, bool) and isinstance(content, str)):
            raise CheckpointError(f"{where}: added token {shown(entry)} has no integer id and text; re-save it")
        flags = [f for f in ("lstrip", "rstrip", "single_word") if entry.get(f)]
        if flags:
            raise CheckpointError(
                f"{where}: added token {content!r} has {flags[0]}=True, which changes how it is matched and npgpt "
                "does not follow; re-add it with AddedToken(..., lstrip=False, rstrip=False, single_word=False)"
            )
        special = bool(entry.get("special", False))
        normalized = bool(entry.get("normalized", not special))  # transformers' default: special ones are not
        added[i] = {"content": content, "id": i, "special": special, "normalized": normalized}
    return where, added


def _int(key: str) -> int | None:
    return int(key) if key.isdigit() else None


def _special_tokens(special_map: Any) -> set[str]:
    """The tokens special_tokens_map.json names (pad_token, additional_special_tokens, ...), each a string or
    an AddedToken's dict."""
    found: set[str] = set()
    for value in (special_map or {}).values() if isinstance(special_map, dict) else ():
        for v in value if isinstance(value, list) else [value]:
            content = v.get("content") if isinstance(v, dict) else v
            if isinstance(content, str):
                found.add(content)
    return found


def _not_gpt2_tokenizer(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: {what}; npgpt encodes text with GPT-2's tokenizer only, so this model would read wrong "
        "tokens: run it with its own tokenizer in transformers"
    )


def layout(directory: Path) -> str | None:
    """'hf', 'hf-sharded' or 'hf-bin' for a directory with config.json and weights; else None."""
    if not (directory / "config.json").is_file():
        return None
    for name, file in LAYOUTS.items():
        if (directory / file).is_file():
            return name
    return "hf-bin" if (directory / BIN_INDEX).is_file() else None


def read_tensors(directory: Path, weights: Path | None = None) -> tuple[dict[str, np.ndarray], str]:
    """Every tensor of the directory's weights by Hugging Face name, and the file(s) they came from.

    ``weights``: the file the user named (``model.safetensors``, ``pytorch_model.bin`` or an index),
    read whatever else the directory holds; without it, the first layout in :data:`LAYOUTS` order.
    """
    if weights is not None and is_index(weights.name):
        return _read_shards(
            directory, weights.name, read_safetensors_tensors if weights.name.startswith("model.") else _state_dict
        )
    if weights is not None and weights.suffix == ".safetensors":
        return read_safetensors_tensors(weights), str(weights)
    if weights is not None:
        return _state_dict(weights), str(weights)
    kind = layout(directory)
    if kind == "hf":
        return read_safetensors_tensors(directory / SAFETENSORS), str(directory / SAFETENSORS)
    if kind == "hf-sharded":
        return _read_shards(directory, SAFETENSORS_INDEX, read_safetensors_tensors)
    if kind == "hf-bin" and (directory / BIN).is_file():
        return _state_dict(directory / BIN), str(directory / BIN)
    if kind == "hf-bin":
        return _read_shards(directory, BIN_INDEX, _state_dict)
    raise CheckpointError(
        f"{directory}: no Hugging Face weights; expected config.json and one of {SAFETENSORS}, "
        f"{SAFETENSORS_INDEX} (sharded) or {BIN}"
    )


# safetensors files other frameworks' GPT-2 writes (the ``format`` of their metadata), whose names and layouts are
# not PyTorch's: transformers' TFGPT2 and FlaxGPT2 (Flax's Conv1D kernels [out, in], transposed), mlx-lm's
# (nn.Linear [out, in] under ``model.``). transformers 4 converted the first two on load (from_tf, from_flax) and read
# an "mlx" file as PyTorch's: so does npgpt where its names are GPT2LMHeadModel's.
_OTHER_FORMATS = {
    "tf": "TensorFlow's (transformers' TFGPT2LMHeadModel), with its names",
    "flax": "Flax's (transformers' FlaxGPT2LMHeadModel), with its names and its [out, in] kernels",
    "mlx": "MLX's (mlx-lm's), with its names and nn.Linear's [out, in] weights",
}
_FROM_OTHER = {
    "tf": "convert it with transformers 4 (pip install 'transformers<5' tensorflow): "
    "GPT2LMHeadModel.from_pretrained(DIR, from_tf=True).save_pretrained(DIR), then load DIR",
    "flax": "convert it with transformers 4 (pip install 'transformers<5' flax): "
    "GPT2LMHeadModel.from_pretrained(DIR, from_flax=True).save_pretrained(DIR), then load DIR",
    "mlx": "load the Hugging Face model it was converted from",
}


def read_safetensors_tensors(path: Path) -> dict[str, np.ndarray]:
    """A Hugging Face safetensors file's tensors; CheckpointError for one that another framework wrote (its
    metadata's ``format``: tf, flax, mlx), whose weights are not laid out as PyTorch's GPT-2."""
    tensors, metadata = read_safetensors(path)
    framework = metadata.get("format")
    if framework == "mlx" and not any(name.startswith("model.") for name in tensors):
        return tensors  # PyTorch's names, which transformers 4 reads from an "mlx" file as PyTorch's weights too
    if framework in _OTHER_FORMATS:
        raise CheckpointError(
            f"{path}: safetensors metadata format is {framework!r}: {_OTHER_FORMATS[framework]}, not PyTorch's, "
            f"which npgpt reads; {_FROM_OTHER[framework]}"
        )
    return tensors


def shard_map(index_path: Path) -> dict[str, list[str]]:
    """Shard file -> the tensor names it holds, from an index's ``weight_map``; each a plain file name."""
    try:
        index = parse_json(index_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{index_path}: not a shard index ({reason(e)}); re-download it") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):  # said in JSON's words, not as Python's TypeError on a list
        what = json_kind(index)
        if isinstance(index, dict):
            what = f"its weight_map is {json_kind(weight_map)}" if "weight_map" in index else "it has no weight_map"
        raise CheckpointError(
            f"{index_path}: not a shard index (a JSON object with a weight_map object), but {what}; re-download it"
        )
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
            raise CheckpointError(f"{index_path}: shard {shard!r} of {name!r} is not a file name beside the index")
        shards.setdefault(shard, []).append(name)
    return shards


def _read_shards(directory: Path, index_name: str, read: Any) -> tuple[dict[str, np.ndarray], str]:
    """Every tensor of the shards an index's ``weight_map`` names, each shard read once (memory-mapped where it can
    be), as transformers and vLLM read them: the weight_map says which files, each file's own header what is in it
    (a tensor the weight_map leaves out, or places in another of its shards, is read all the same). CheckpointError
    for a tensor in two shards (which one transformers keeps depends on the order it reads them), or one the
    weight_map names that no shard holds."""
    tensors: dict[str, np.ndarray] = {}
    where: dict[str, str] = {}
    shards = shard_map(directory / index_name)
    for shard in shards:
        if (directory / shard).is_symlink() and not (directory / shard).exists():
            raise broken_link(directory / shard)
        if not (directory / shard).is_file():
            raise CheckpointError(f"{directory / shard}: missing shard (named in {index_name}); re-download the model")
        for name, tensor in read(directory / shard).items():
            if name in where:
                raise CheckpointError(
                    f"{directory}: tensor {name!r} is in two shards, {where[name]} and {shard}, with nothing to say "
                    f"which one {index_name} means; re-download the model"
                )
            tensors[name], where[name] = tensor, shard
    for shard, names in shards.items():
        for name in names:
            if name not in tensors:
                raise CheckpointError(f"{directory / shard}: has no tensor {name!r} although {index_name} says so")
    return tensors, str(directory / index_name)


# Where training scripts keep the weights in the dict they save (PyTorch Lightning's and many scripts' state_dict,
# nanoGPT's and others' model, EMA runs' model_ema/ema)
_WRAPPERS = ("state_dict", "model", "model_state_dict", "module", "model_ema", "ema")


def _state_dict(path: Path) -> dict[str, np.ndarray]:
    from .torch_pickle import load, not_a_state_dict

    obj = load(path)
    why = not_a_state_dict(obj) if isinstance(obj, dict) else f"it holds an object of type {type(obj).__name__}"
    inner = next((k for k in _WRAPPERS if isinstance(obj, dict) and isinstance(obj.get(k), dict)), None)
    if why is not None and inner is not None and not_a_state_dict(obj[inner]) is None:
        # a training script's checkpoint with the weights one level down: transformers' from_pretrained
        # does not unwrap it either, and which entry holds the model to run is the user's to say
        raise CheckpointError(
            f"{path}: a training checkpoint whose {inner!r} holds the state dict, not a state dict itself; "
            f"save that alone: torch.save(torch.load(FILE)[{inner!r}], FILE)"
        )
    if why is not None:
        raise CheckpointError(
            f"{path}: not a state dict (a mapping of names to tensors): {why}; the file is corrupt or not a model's "
            "weights: re-download it"
        )
    return obj


def safetensors_set(directory: Path) -> set[str]:
    """The safetensors weight files in ``directory`` by name: ``model.safetensors``, the index and the
    shards it names, and any file of the Hub's shard naming (``model-00001-of-00003.safetensors``)."""
    names = {p.name for p in directory.glob("model-*-of-*.safetensors") if HUB_SHARD.match(p.name)}
    names |= {n for n in (SAFETENSORS, SAFETENSORS_INDEX) if (directory / n).is_file()}
    if SAFETENSORS_INDEX in names:
        try:
            names |= {shard for shard in shard_map(directory / SAFETENSORS_INDEX) if shard.endswith(".safetensors")}
        except CheckpointError:  # a damaged index names nothing for certain
            pass
    return names


def shard_plan(
    tensors: dict[str, np.ndarray], max_shard_size: int | str
) -> tuple[dict[str, list[str]], dict[str, Any] | None]:
    """How ``save_pretrained`` would split ``tensors``: shard file name -> its tensor names, and the
    ``model.safetensors.index.json`` content (None where all fit one ``model.safetensors``).

    The split is huggingface_hub's (``split_state_dict_into_shards_factory``), so shard names and the
    index follow the Hub's convention.
    """
    from huggingface_hub import split_state_dict_into_shards_factory

    split = split_state_dict_into_shards_factory(
        tensors,
        get_storage_size=lambda a: a.nbytes,
        filename_pattern="model{suffix}.safetensors",
        max_shard_size=max_shard_size,
    )
    if not split.is_sharded:
        return {SAFETENSORS: list(tensors)}, None
    index = {
        "metadata": {**split.metadata, "total_size": sum(a.nbytes for a in tensors.values())},
        "weight_map": split.tensor_to_filename,
    }
    return dict(split.filename_to_tensors), index
