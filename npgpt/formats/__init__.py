"""Checkpoint formats: detect what a path holds, load it to (config, params), convert between them.

| format     | what is on disk                                                          | module          |
|------------|--------------------------------------------------------------------------|-----------------|
| npgpt      | one ``.safetensors`` file, config in its metadata (memory-mapped)        | npgpt_format    |
| hf         | ``model.safetensors`` + ``config.json`` (Hugging Face)                   | hf              |
| hf-sharded | ``model.safetensors.index.json`` + shards + ``config.json``              | hf, hf_files    |
| hf-bin     | ``pytorch_model.bin`` + ``config.json`` (read only)                      | hf, torch_pickle |
| nanogpt    | nanoGPT's ``ckpt.pt`` (read only)                                        | nanogpt         |
| openai     | ``hparams.json`` + ``model.ckpt.index``/``.data-*`` (TF bundle)          | openai_tf       |
| llmc       | llm.c's ``gpt2_124M.bin`` / ``_bf16.bin`` (header + flat dump)            | llmc            |
| gguf       | a ``.gguf`` file of llama.cpp / Ollama, architecture ``gpt2``            | gguf_format     |

PyTorch pickles are read by a restricted unpickler that rebuilds only tensors and plain
containers: a pickle that would run code on load is refused (see ``torch_pickle``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..config import GPT2Config
from ..errors import CheckpointError, dtype_hint, shown
from ..files import broken_link, cannot_write, check_writable, refuse_special_files, web_page
from ..params import dequantized, dtype_name
from .compat import check_float16_range
from .npgpt_format import MODEL_FILE

FORMATS = ("npgpt", "hf", "hf-sharded", "openai", "llmc", "gguf")  # the formats npgpt writes
READ_ONLY = ("hf-bin", "nanogpt")
# Storage dtypes each format can write (the first is the default); ``npgpt convert --dtype``.
DTYPES = {
    "npgpt": ("float32", "float16"),
    "hf": ("float32",),
    "hf-sharded": ("float32",),
    "openai": ("float32",),
    "llmc": ("float32", "bfloat16"),
    "gguf": ("float32", "float16", "bfloat16", "q8_0"),
}
DEFAULT_SHARD_SIZE = "2GB"  # hf-sharded's largest shard unless told otherwise
# The formats with a place for a model's chat template (save_checkpoint's ``chat_template``); llm.c's and OpenAI's
# files have none, so converting to them leaves it behind (npgpt convert says so)
CARRY_CHAT_TEMPLATE = ("npgpt", "hf", "hf-sharded", "gguf")
_PICKLES = (".bin", ".pt", ".pth", ".ckpt")
_WEIGHT_SUFFIXES = (".safetensors", ".gguf", *_PICKLES)


def detect(path: str | Path) -> str:
    """Which format ``path`` holds (a name in FORMATS or READ_ONLY); CheckpointError if none, or if a PEFT
    adapter lies beside the model (see :func:`_adapter_beside`)."""
    path = Path(path)
    fmt = _detect(path)
    folder = path if path.is_dir() else path.parent if fmt in ("hf", "hf-bin", "hf-sharded") else None
    if folder is not None and (folder / ADAPTER_CONFIG).is_file():
        raise _adapter_beside(folder)
    return fmt


# The files a reader may open in a model's folder (weights, configs, tokenizer files; OpenAI's checkpoint,
# model.ckpt.* and vocab.bpe): a FIFO among them is refused, anything else there (a log pipe, a socket) is no
# model's and left alone.
_MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt", ".txt", ".bpe", ".index")


def _may_open(entry: Path) -> bool:
    name = entry.name
    return not name.startswith(".") and (
        entry.suffix in _MODEL_FILE_SUFFIXES or name == "checkpoint" or name.startswith("model.ckpt")
    )


def _detect(path: Path) -> str:
    from .gguf_format import is_gguf_file
    from .hf_files import VARIANT_WEIGHTS, indexes_naming, is_index, layout, variant_weights
    from .llmc import is_llmc_file
    from .npgpt_format import is_npgpt_file
    from .torch_pickle import is_torch_file

    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise broken_link(path)
        raise CheckpointError(f"{path}: no such file or directory; pass a checkpoint path or a model name")
    refuse_special_files(path, _may_open)  # before anything is opened: opening a FIFO blocks until a writer comes
    if path.is_file():
        if path.name == ADAPTER_CONFIG or path.name.startswith("adapter_model."):
            raise _adapter(path)
        if path.stat().st_size == 0:  # an interrupted copy or download, whatever its name says
            raise CheckpointError(f"{path}: an empty file (0 bytes); re-download or re-convert it")
        # Read from the file's own first bytes, never its name: llm.c's .bin is not a pickle.
        if is_gguf_file(path):
            return "gguf"
        if is_llmc_file(path):
            return "llmc"
        if path.suffix in _PICKLES and is_torch_file(path):
            # HF's pytorch_model.bin beside its config.json, else a file that carries its own config
            if (index := indexes_naming(path)) is not None:
                raise _a_shard(path, index)
            # (a variant's pytorch_model.fp16.bin too, whose folder names it to be passed)
            hf_name = path.name == "pytorch_model.bin" or VARIANT_WEIGHTS.match(path.name) is not None
            hf_bin = hf_name and (path.parent / "config.json").is_file()
            return "hf-bin" if hf_bin else "nanogpt"
        if path.suffix == ".safetensors":
            if is_npgpt_file(path):
                return "npgpt"
            if (index := indexes_naming(path)) is not None:
                raise _a_shard(path, index)
            if not (path.parent / "config.json").is_file():
                raise CheckpointError(
                    f"{path}: a safetensors file without npgpt's config, and no config.json beside it; "
                    "add the model's Hugging Face config.json"
                )
            # Hugging Face weights under another name than model.safetensors, given by their path: the file named
            # is read with the config.json beside it (vLLM reads a folder's every *.safetensors likewise)
            return "hf"
        if is_index(path.name) and (path.parent / "config.json").is_file():  # a variant's too (its path is given)
            return "hf-sharded" if path.name.startswith("model.") else "hf-bin"
        if path.name.endswith(".index") or path.name == "hparams.json":
            return "openai"
        if _is_npgpt_named_otherwise(path):  # `npgpt convert SRC gpt2-0.5` wrote it there
            return "npgpt"
        if path.name in _OTHER_FRAMEWORKS:
            raise _other_framework(path)
        raise _not_a_model_file(path)
    weights = path / MODEL_FILE
    if weights.exists():  # its header errors (truncated, corrupt) are the real diagnosis: let them out
        if is_npgpt_file(weights):
            return "npgpt"
        if (path / "config.json").exists():
            return "hf"
        _refuse_broken_links(path)
        raise CheckpointError(
            f"{weights}: a safetensors file without npgpt's config, and no config.json beside it; "
            "add the model's Hugging Face config.json"
        )
    hf_layout = layout(path)
    if hf_layout:
        return hf_layout
    if (path / "hparams.json").exists() or (path / "model.ckpt.index").exists():
        return "openai"
    from .nanogpt import CKPT_FILE

    if (path / CKPT_FILE).is_file():
        return "nanogpt"
    single = _single_file(path)
    if single is not None:
        return detect(single)
    _refuse_broken_links(path)
    if (path / ADAPTER_CONFIG).is_file():
        raise _adapter(path)
    for name in _OTHER_FRAMEWORKS:
        if (path / name).is_file():
            raise _other_framework(path / name)
    variants = variant_weights(path) if (path / "config.json").is_file() else []
    if variants:
        raise CheckpointError(
            f"{path}: holds Hugging Face weights saved as a variant (save_pretrained(..., variant=...): "
            f"{', '.join(p.name for p in variants)}), which transformers reads only when told the variant; "
            f"pass the weights' path: {variants[0]}"
        )
    named = [  # not a shard whose index is missing: no one file of those is the model
        p for p in sorted(path.glob("*.safetensors")) if p.is_file() and not re.search(r"-\d{5}-of-\d{5}\.", p.name)
    ]
    named = named if (path / "config.json").is_file() else []
    if named:  # save_model(model, 'gpt2.safetensors') beside its config.json: read given its path, as vLLM reads it
        raise CheckpointError(
            f"{path}: holds config.json and weights under another name than {MODEL_FILE} "
            f"({', '.join(p.name for p in named[:4])}), which transformers does not look for; "
            f"pass the weights' path: {named[0]}"
        )
    snapshot = _hub_snapshot(path)
    if snapshot is not None:
        raise CheckpointError(
            f"{path}: a Hugging Face cache folder (the Hub's models--ORG--NAME), whose model is in a snapshot; "
            f"pass that folder: {snapshot}"
        )
    for legacy in sorted(path.glob("*.bin")):  # ggml's ggml-model-f16.bin, alone in its folder
        if legacy.is_file() and _ggml_kind(legacy) is not None:
            raise _not_a_model_file(legacy)
    raise CheckpointError(
        f"{path}: no model found ({_listing(path)}); expected {MODEL_FILE} (npgpt, or Hugging Face with config.json), "
        "Hugging Face shards or pytorch_model.bin with config.json, nanoGPT's ckpt.pt (or a ckpt_NNNN.pt), "
        "OpenAI's hparams.json + model.ckpt.index, a .gguf file or an llm.c .bin"
    )


def _listing(directory: Path) -> str:
    """What ``directory`` holds, for the user to see why no model was found there: 'it holds a.txt, b/ and
    3 more', or 'it is empty'."""
    try:
        entries = sorted(p.name + "/" * p.is_dir() for p in directory.iterdir() if not p.name.startswith("."))
    except OSError as e:
        return f"it cannot be listed: {e.strerror or e}"
    if not entries:
        return "it is empty"
    more = f" and {len(entries) - 6} more" if len(entries) > 6 else ""
    return f"it holds {', '.join(entries[:6])}{more}"


def _not_a_model_file(path: Path) -> CheckpointError:
    """A file :func:`detect` found no format in: one its name promises (a .gguf, a .pt) is said to be damaged,
    and a web page is named as one (:func:`~npgpt.files.web_page`)."""
    page = web_page(path)
    if page is not None:
        return page
    other = _llmc_other_file(path)
    if other is not None:
        return CheckpointError(
            f"{path}: {other}, not a model; pass llm.c's model file (gpt2_124M.bin, model_NNNNNNNN.bin)"
        )
    legacy = _ggml_kind(path)
    if legacy is not None:
        return CheckpointError(
            f"{path}: a {legacy} file (ggml's and llama.cpp's format before GGUF, August 2023), which npgpt does "
            "not read and llama.cpp no longer reads; convert the model it was made from with llama.cpp's "
            "convert_hf_to_gguf.py, or load that original"
        )
    if path.suffix == ".gguf":
        return CheckpointError(f"{path}: not a GGUF file (it does not start with 'GGUF'); re-download or re-convert it")
    if path.suffix in _PICKLES:
        what = "neither llm.c's .bin nor a PyTorch checkpoint" if path.suffix == ".bin" else "not a PyTorch checkpoint"
        return CheckpointError(
            f"{path}: {what} (it starts as neither a zip archive nor a pickle); "
            "re-download it or re-save it with torch.save"
        )
    return CheckpointError(
        f"{path}: not a model file npgpt knows (expected .safetensors, .gguf, llm.c's .bin, "
        "a PyTorch checkpoint or a model directory)"
    )


def _a_shard(path: Path, index: Path) -> CheckpointError:
    return CheckpointError(
        f"{path}: one shard of the Hugging Face model in {path.parent} ({index.name} names its shards); "
        f"pass {'that directory' if index.name in _STANDARD_INDEXES else f'the index: {index}'}"
    )


_STANDARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _hub_snapshot(path: Path) -> Path | None:
    """For a repository's folder in the Hugging Face cache (``models--ORG--NAME``: ``blobs/``, ``refs/main``,
    ``snapshots/HASH/``), the snapshot ``refs/main`` names (huggingface_hub's revision of a plain download), else
    its one snapshot, else ``snapshots/`` itself; None for any other folder."""
    snapshots = path / "snapshots"
    if not snapshots.is_dir():
        return None
    try:
        main = (path / "refs" / "main").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        main = ""
    if main and (snapshots / main).is_dir():
        return snapshots / main
    found = [p for p in snapshots.iterdir() if p.is_dir()]
    return found[0] if len(found) == 1 else snapshots


# The magics of GGUF's predecessors, as a little-endian uint32 spells them on disk (llama.cpp's
# convert_llama_ggml_to_gguf.py reads the same bytes): ggml's examples (its GPT-2's ggml-model-*.bin) wrote GGML.
_GGML_MAGICS = {b"lmgg": "GGML", b"fmgg": "GGMF", b"tjgg": "GGJT"}


# The files llm.c writes beside its models, by the magic of their 256-int32 header (its model files': 20240326).
_LLMC_OTHER_FILES = {
    20240327: "llm.c's debug state (train_gpt2.py's gpt2_124M_debug_state.bin: a batch with its logits and gradients)",
    20240328: "llm.c's tokenizer file (train_gpt2.py's gpt2_tokenizer.bin)",
    20240520: "llm.c's training tokens (a data shard, e.g. tiny_shakespeare_val.bin)",
    20240527: "llm.c's training state (train_gpt2.cu's state_NNNNNNNN_NNNNN.bin: the optimizer's, beside the model)",
}


def _magic(path: Path) -> bytes:
    """The first 4 bytes of ``path`` (fewer for a shorter file; none where it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError:
        return b""


def _llmc_other_file(path: Path) -> str | None:
    """What llm.c file ``path`` is, if it is one of llm.c's other files (:data:`_LLMC_OTHER_FILES`), else None."""
    head = _magic(path)
    return _LLMC_OTHER_FILES.get(int.from_bytes(head, "little")) if len(head) == 4 else None


def _ggml_kind(path: Path) -> str | None:
    """'GGML', 'GGMF' or 'GGJT' for a file of GGUF's predecessors, else None."""
    return _GGML_MAGICS.get(_magic(path))


def model_file_kind(path: str | Path) -> str | None:
    """What model file ``path`` is, read from its first bytes ("a GGUF model file", "an llm.c model file", ...), or
    None for any other file. For the commands that read a text or token ids, which read a model's bytes as either:
    ``npgpt train model.safetensors`` said to convert it to UTF-8 with iconv, ``npgpt eval model.bin`` that the
    "text" had a token id outside the vocabulary. llm.c's token shards are token ids, not a model: None."""
    from .llmc import MAGIC, TOKENS_MAGIC
    from .npgpt_format import read_header

    try:
        with open(path, "rb") as f:
            start = f.read(16)  # every magic below is in the first 16 bytes: one read
    except OSError:
        return None
    head = start[:4]
    magic = int.from_bytes(head, "little") if len(head) == 4 else None
    if head == b"GGUF":
        return "a GGUF model file"
    if (ggml := _GGML_MAGICS.get(head)) is not None:
        return f"a {ggml} model file (GGUF's predecessor)"
    if magic == MAGIC:
        return "an llm.c model file"
    if magic in _LLMC_OTHER_FILES and magic != TOKENS_MAGIC:
        return _LLMC_OTHER_FILES[magic]
    try:
        # torch.save's zip holding its data.pkl (any other zip is an archive), or its legacy pickle, whose first
        # object is torch's magic number (two bytes alone are a token file's first id, 640)
        if (head == b"PK\x03\x04" and _zip_holds_a_pickle(path)) or start.startswith(_TORCH_LEGACY_START):
            return "a PyTorch checkpoint (torch.save)"
        if start[8:10] == b'{"' and read_header(path):  # the whole header read as JSON: no text or token ids start so
            return "a safetensors model file"
    except (OSError, CheckpointError):
        pass
    return None


# pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2): how torch.save's legacy (non-zip) files begin
_TORCH_LEGACY_START = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def _zip_holds_a_pickle(path: str | Path) -> bool:
    """Whether a zip file holds torch.save's ``<archive>/data.pkl``."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/data.pkl") and n.count("/") == 1 for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


ADAPTER_CONFIG = "adapter_config.json"  # what PEFT's save_pretrained writes beside adapter_model.safetensors


def _adapter(path: Path) -> CheckpointError:
    """A PEFT adapter (LoRA and the like) holds a few low-rank matrices to add to a base model's weights, not
    a model; npgpt runs whole models, which PEFT itself makes of the two."""
    return CheckpointError(
        f"{path}: a PEFT adapter ({ADAPTER_CONFIG}), not a whole model; merge it into its base model with "
        "PeftModel.from_pretrained(base, adapter).merge_and_unload().save_pretrained(DIR) and load DIR"
    )


def _adapter_beside(folder: Path) -> CheckpointError:
    """A model saved with a PEFT adapter beside it: transformers, with PEFT installed, loads the model and applies
    the adapter on top (``from_pretrained`` of a local model with an adapter_config.json); without PEFT it loads
    the model alone. npgpt applies no adapters, so it neither runs the model without the adapter unasked nor
    guesses at the adapter's settings (target modules, rank, alpha, rsLoRA, DoRA): the user chooses."""
    return CheckpointError(
        f"{folder}: a PEFT adapter ({ADAPTER_CONFIG}) beside the model, which transformers applies on top and npgpt "
        "does not; merge it (PeftModel.from_pretrained(model, adapter).merge_and_unload().save_pretrained(DIR)) "
        f"and load DIR, or move {ADAPTER_CONFIG} out to load the model without it"
    )


# The weights of transformers' TensorFlow and Flax models, as the Hub holds them (older GPT-2 uploads have only
# these): framework, and the from_pretrained flag that converts them. transformers 5 reads neither.
_OTHER_FRAMEWORKS = {
    "tf_model.h5": ("TensorFlow", "from_tf", "tensorflow"),
    "tf_model.h5.index.json": ("TensorFlow", "from_tf", "tensorflow"),
    "flax_model.msgpack": ("Flax", "from_flax", "flax"),
    "flax_model.msgpack.index.json": ("Flax", "from_flax", "flax"),
}


def _other_framework(path: Path) -> CheckpointError:
    framework, flag, package = _OTHER_FRAMEWORKS[path.name]
    return CheckpointError(
        f"{path}: {framework} weights, which npgpt does not read; convert them with transformers 4 "
        f"(pip install 'transformers<5' {package}): GPT2LMHeadModel.from_pretrained(DIR, {flag}=True)"
        ".save_pretrained(DIR), then load DIR"
    )


def _refuse_broken_links(directory: Path) -> None:
    """CheckpointError for the first broken symbolic link in ``directory`` named like a model's file (an
    interrupted download's snapshot links to blobs never fetched): the reason no model was found there."""
    from .hf_files import BIN, BIN_INDEX, SAFETENSORS_INDEX
    from .nanogpt import CKPT_FILE

    names = {MODEL_FILE, SAFETENSORS_INDEX, BIN, BIN_INDEX, "config.json", "hparams.json", "checkpoint", CKPT_FILE}
    try:
        entries = sorted(directory.iterdir())
    except OSError:  # a folder that cannot be listed: the caller's message stands
        return
    for p in entries:
        model_like = p.name in names or p.name.startswith("model.ckpt.") or p.suffix in _WEIGHT_SUFFIXES
        if model_like and p.is_symlink() and not p.exists():
            raise broken_link(p)


def _is_npgpt_named_otherwise(path: Path) -> bool:
    """Whether a file whose name does not end in .safetensors is an npgpt model file all the same."""
    from .npgpt_format import is_npgpt_file

    try:
        return is_npgpt_file(path)
    except CheckpointError:  # not a safetensors file at all: the caller says what was expected
        return False


def model_files(path: str | Path) -> list[Path]:
    """The files that make up the model at ``path`` (a file or a directory), as :func:`detect` reads it.

    A directory may hold more than the model (a training run's optimizer state and token file, a
    Hugging Face repo's other weights): only the files the loader reads are listed. Raises CheckpointError.
    """
    path = Path(path)
    fmt = detect(path)
    if path.is_file():
        if fmt == "openai":
            path = path.parent
        elif fmt != "gguf":
            return [path]
    if fmt == "npgpt":
        from .npgpt_format import model_file_in

        return [model_file_in(path) or path / MODEL_FILE]
    if fmt in ("hf", "hf-sharded", "hf-bin"):
        from .hf_files import BIN, BIN_INDEX, SAFETENSORS, SAFETENSORS_INDEX, shard_map

        if fmt != "hf-sharded" and (path / (SAFETENSORS if fmt == "hf" else BIN)).is_file():
            weights = [path / (SAFETENSORS if fmt == "hf" else BIN)]
        else:
            index = path / (SAFETENSORS_INDEX if fmt == "hf-sharded" else BIN_INDEX)
            weights = [index, *(path / shard for shard in sorted(shard_map(index)))]
        return [*weights, path / "config.json"]
    if fmt == "nanogpt":
        from .nanogpt import CKPT_FILE

        return [path / CKPT_FILE if (path / CKPT_FILE).is_file() else _single_file(path) or path / CKPT_FILE]
    if fmt == "gguf":
        from .gguf_format import split_parts

        return split_parts(_single_file(path) or path)  # a split GGUF: every part
    if fmt == "llmc":
        return [_single_file(path) or path]
    return sorted(
        p
        for p in path.iterdir()
        if p.name in ("hparams.json", "checkpoint")  # checkpoint: names the bundle
        or (p.name.startswith("model.ckpt.") and not p.name.endswith(".meta"))
    )


def _single_file(directory: Path) -> Path | None:
    """The one file of a single-file format in ``directory``: a ``.gguf`` (what ``save_checkpoint`` writes there
    is ``model.gguf``; of a split GGUF's parts, the first), an llm.c file (any ``.bin`` with its header), or an
    npgpt file (``npgpt_format.model_file_in``); None if there is none. CheckpointError naming them when there
    are several (two GGUFs, a GGUF beside llm.c's file, a run's llm.c checkpoints): which one is meant is
    unknowable, so the file's own path must be given, as llama.cpp's ``-m`` and transformers' ``gguf_file=`` take
    it. A ``.gguf`` that is no GGUF is returned all the same: reading it says what is wrong."""
    from .gguf_format import split_parts
    from .llmc import is_llmc_file
    from .npgpt_format import model_file_in

    found = [p for p in sorted(directory.glob("*.gguf")) if not p.name.startswith(".") and p.is_file()]
    for first in [p for p in found if len(split_parts(p)) > 1]:  # a split GGUF's parts: one model, its first part
        found = [p for p in found if p == first or p not in split_parts(first)]
    # llm.c's files by their header, whatever their name: model.bin (npgpt's), gpt2_124M.bin (train_gpt2.py's),
    # model_00005000.bin (train_gpt2.cu's checkpoints in its -o folder)
    found += [p for p in sorted(directory.glob("*.bin")) if not p.name.startswith(".") and is_llmc_file(p)]
    # PyTorch checkpoints other than nanoGPT's ckpt.pt (found before this is asked): a run that keeps several
    # (ckpt_1000.pt, ckpt_2000.pt, as forks of nanoGPT's train.py save them), or one under another name
    found += _torch_checkpoints(directory)
    npgpt_file = model_file_in(directory)
    if npgpt_file is not None and npgpt_file not in found:
        found.append(npgpt_file)
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        # a run's checkpoints, one name numbered by step (ckpt_1000.pt, ckpt_2000.pt): the newest is the likely
        # choice, but only the user knows which they mean (nanoGPT's sample.py reads only its ckpt.pt)
        run = len({re.sub(r"\d+(?=\D*$)", "#", p.name) for p in found}) == 1 and all(map(_step, found))
        example = f"e.g. the newest, {max(found, key=lambda p: _step(p) or 0)}" if run else f"e.g. {found[0]}"
        raise CheckpointError(
            f"{directory}: holds several model files ({names}); pass the path of the one to load, {example}"
        )
    return found[0] if found else None


# What transformers' Trainer saves beside the model in a checkpoint-NNNN folder: torch files, none a model
_TRAINER_STATE = re.compile(r"(optimizer|scheduler|scaler|rng_state.*|training_args)\.(pt|pth|bin)")


def _torch_checkpoints(directory: Path) -> list[Path]:
    """The PyTorch checkpoints (``.pt``, ``.pth``, ``.ckpt`` files that start like ``torch.save``'s) in
    ``directory``, in the order of their step numbers (``ckpt_900.pt`` before ``ckpt_1000.pt``)."""
    from .torch_pickle import is_torch_file

    found = [
        p
        for suffix in (".pt", ".pth", ".ckpt")
        for p in directory.glob(f"*{suffix}")
        if not p.name.startswith(".") and not _TRAINER_STATE.fullmatch(p.name) and p.is_file() and is_torch_file(p)
    ]
    return sorted(found, key=lambda p: (_step(p) or 0, p.name))


def _step(path: Path) -> int | None:
    """The training step a checkpoint's name carries (its last number: 5000 for ``ckpt_5000.pt`` and
    ``model_00005000.bin``), or None."""
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


CHECK_CHUNK = 1 << 20  # values checked at a time by check_finite


def tokenizer_spec(path: str | Path) -> dict[str, Any] | None:
    """The tokenizer a checkpoint keeps with its weights (see :func:`npgpt.char_tokenizer.tokenizer_from_spec`):
    an npgpt file's metadata (a character-level vocabulary, or GPT-2's with added tokens), a Hugging Face
    directory's tokenizer files (GPT-2's with the tokens a fine-tune added); None for GPT-2's own."""
    from . import hf_files, npgpt_format

    path = Path(path)
    fmt = detect(path)
    if fmt == "npgpt":
        return npgpt_format.tokenizer_spec(path)
    if fmt in ("hf", "hf-sharded", "hf-bin"):
        return hf_files.tokenizer_spec(path if path.is_dir() else path.parent)
    if fmt == "gguf":
        from . import gguf_format

        return gguf_format.tokenizer_spec(_single_file(path) or path if path.is_dir() else path)
    return None


def chat_template(path: str | Path) -> tuple[str, str] | None:
    """The chat template the model at ``path`` carries with its tokenizer (a Jinja template, as transformers'
    ``apply_chat_template`` and llama.cpp render it), and where: Hugging Face's chat_template.jinja or
    tokenizer_config.json's ``chat_template``, a GGUF's ``tokenizer.chat_template``; None for any other format, or
    where there is none; an npgpt file's metadata ``chat_template``, where it was converted from one that carried it.
    npgpt's chat writes its own transcript (:mod:`npgpt.chat`), so a caller can say so."""
    path = Path(path)
    fmt = detect(path)
    if fmt == "npgpt":
        from .npgpt_format import CHAT_TEMPLATE
        from .npgpt_format import chat_template as npgpt_template

        template = npgpt_template(path)
        return None if template is None else (f"its metadata's {CHAT_TEMPLATE}", template)
    if fmt in ("hf", "hf-sharded", "hf-bin"):
        from .hf_files import chat_template as hf_template

        found = hf_template(path if path.is_dir() else path.parent)
        return None if found is None else (f"{found[0].name}'s chat_template", found[1])
    if fmt == "gguf":
        from .gguf_header import CHAT_TEMPLATE
        from .gguf_header import chat_template as gguf_template

        template = gguf_template(_single_file(path) or path if path.is_dir() else path)
        return None if template is None else (f"its GGUF metadata's {CHAT_TEMPLATE}", template)
    return None


def load_with_tokenizer(
    path: str | Path, q8_0_blocks: bool = False
) -> tuple[GPT2Config, dict[str, Any], dict[str, Any] | None]:
    """:func:`load_checkpoint` and :func:`tokenizer_spec` together; a GGUF is parsed once for both."""
    path = Path(path)
    if detect(path) != "gguf":
        config, params = load_checkpoint(path, q8_0_blocks)
        return config, params, tokenizer_spec(path)
    from . import gguf_format

    config, params, spec = gguf_format.load_with_tokenizer(
        _single_file(path) or path if path.is_dir() else path, q8_0_blocks
    )
    check_finite(params, str(path))
    return config, params, spec


def load_checkpoint(path: str | Path, q8_0_blocks: bool = False) -> tuple[GPT2Config, dict[str, Any]]:
    """Config and float32 NumPy params from any supported checkpoint path.

    Every tensor is checked to be finite: a NaN or infinite weight (a diverged run, a corrupt
    download) would make every output silently garbage. Raises CheckpointError. ``q8_0_blocks``: a
    GGUF's Q8_0 matrices stay :class:`~npgpt.params.Q8_0Blocks` (see ``gguf_format.load``); other
    formats have none.
    """
    config, params = _load(Path(path), q8_0_blocks)
    check_finite(params, str(path))
    return config, params


def check_finite(params: dict[str, Any], source: str) -> None:
    """CheckpointError naming the first tensor that holds a NaN or an infinity.

    Reading every weight faults the whole memory-mapped file in; each tensor's pages are dropped
    again once checked (they come back from the page cache when used), so loading with narrower
    weights never holds the float32 file and its conversion in memory at once. A large tensor is
    checked a million values at a time, its pages dropped as it goes: checking GPT-2 124M's
    ``wte`` whole held its 154 MB and a 38 MB mask at once (the peak of an int8 load, 255 MB).
    """
    from ..files import release_mapped
    from ..params import Q8_0Blocks, flatten

    for name, arr in flatten(params).items():
        # Q8_0 blocks: the codes are integers, always finite, so the scales are checked; reading
        # them reads every page of the blocks, which are let go after.
        values, whole = (arr.scales, arr.raw) if isinstance(arr, Q8_0Blocks) else (arr, arr)
        flat = values.reshape(-1) if isinstance(values, np.ndarray) and values.flags.c_contiguous else None
        parts = [values] if flat is None else [flat[i : i + CHECK_CHUNK] for i in range(0, flat.size, CHECK_CHUNK)]
        for part in parts:
            if not np.isfinite(part).all():
                raise CheckpointError(
                    f"{source}: tensor {name!r} holds NaN or infinite values; the checkpoint is "
                    "corrupt or from a diverged run (re-download it or use an earlier checkpoint)"
                )
            if flat is not None:
                release_mapped(part)
        if isinstance(whole, np.ndarray):
            release_mapped(whole)  # all of it, and the pages the parts share at their edges


def _load(path: Path, q8_0_blocks: bool = False) -> tuple[GPT2Config, dict[str, Any]]:
    fmt = detect(path)
    if fmt == "npgpt":
        from . import npgpt_format

        return npgpt_format.load(path if path.is_file() else npgpt_format.model_file_in(path) or path / MODEL_FILE)
    if fmt in ("hf", "hf-sharded", "hf-bin"):
        from . import hf

        return hf.load(path) if path.is_dir() else hf.load(path.parent, weights=path)
    if fmt == "nanogpt":
        from . import nanogpt

        if path.is_dir() and not (path / nanogpt.CKPT_FILE).is_file():
            path = _single_file(path) or path  # a run's one numbered ckpt_NNNN.pt
        return nanogpt.load(path)
    if fmt in ("llmc", "gguf") and path.is_dir():
        path = _single_file(path) or path
    if fmt == "llmc":
        from . import llmc

        return llmc.load(path)
    if fmt == "gguf":
        from . import gguf_format

        return gguf_format.load(path, q8_0_blocks)
    from . import openai_tf

    return openai_tf.load(path if path.is_dir() else path.parent)


def save_checkpoint(
    path: str | Path,
    config: GPT2Config,
    params: dict[str, Any],
    fmt: str = "npgpt",
    dtype: Any = "float32",
    max_shard_size: int | str | None = None,
    tokenizer: dict[str, Any] | None = None,
    chat_template: str | None = None,
) -> Path:
    """Write params in ``fmt`` with storage ``dtype`` (one of ``DTYPES[fmt]``); npgpt, llmc and gguf write a
    file (a directory gets ``model.safetensors``, ``model.bin``, ``model.gguf``), hf and openai a directory.

    ``hf-sharded`` splits the weights into safetensors shards of at most ``max_shard_size`` (bytes
    or e.g. ``"500MB"``; default DEFAULT_SHARD_SIZE) plus an index, as ``save_pretrained`` does;
    a model that fits in one shard is written as one ``model.safetensors``, as there too.
    ``tokenizer``: a character-level model's vocabulary (``CharTokenizer.to_spec()``) or GPT-2's with added
    tokens (``Tokenizer.to_spec()``), which only npgpt's format carries (in its metadata, as training writes
    it), and hf and GGUF the added tokens (as transformers and llama.cpp's converter write them); CheckpointError
    for any other format. ``chat_template``: the model's chat template (a Jinja string), written where transformers
    and llama.cpp read it (Hugging Face's chat_template.jinja, GGUF's ``tokenizer.chat_template``, npgpt's metadata);
    llmc and openai have no place for one (:data:`CARRY_CHAT_TEMPLATE`).
    """
    path = Path(path)
    dtype = dtype_name(dtype)  # np.float16, torch.bfloat16: their names
    _check_save_options(fmt, dtype, max_shard_size, tokenizer)
    _check_file_name(path, fmt)
    _check_not_shadowed(path, fmt)
    _check_writable_params(params)
    if dtype == "float16":
        check_float16_range(params)
    try:
        return _write(path, config, dequantized(params), fmt, dtype, max_shard_size, tokenizer, chat_template)
    except OSError as e:  # a folder that cannot be made or written in: under a file, read-only, no permission, no space
        raise cannot_write(path, e, error=CheckpointError) from None


def _check_writable_params(params: dict[str, Any]) -> None:
    """CheckpointError, before anything is written, for weights held as 8-bit codes: a model loaded
    with ``dtype="int8"`` keeps no float weights to write (NumPy would make them one object each)."""
    from ..params import flatten

    for name, w in flatten(params).items():
        if str(getattr(w, "dtype", "")).endswith("int8"):
            raise CheckpointError(
                f"cannot write {name!r}: it is held as 8-bit weights (loaded with dtype='int8'); load the "
                "checkpoint with dtype='float32' to save it (`npgpt convert SRC out.gguf --to gguf --dtype q8_0` "
                "writes 8-bit weights)"
            )


def _write(
    path: Path,
    config: GPT2Config,
    params: dict[str, Any],
    fmt: str,
    dtype: str,
    max_shard_size: int | str | None,
    tokenizer: dict[str, Any] | None,
    chat_template: str | None,
) -> Path:
    if fmt == "npgpt":
        import json

        from . import npgpt_format

        target = path / MODEL_FILE if path.is_dir() or not path.suffix else path
        metadata = {} if tokenizer is None else {"tokenizer": json.dumps(tokenizer)}
        if chat_template is not None:
            metadata[npgpt_format.CHAT_TEMPLATE] = chat_template
        return npgpt_format.save(target, config, params, dtype=dtype, metadata=metadata or None)
    if fmt == "llmc":
        from . import llmc

        return llmc.save(path, config, params, dtype=dtype)
    if fmt == "gguf":
        from . import gguf_write

        return gguf_write.save(path, config, params, dtype=dtype, tokenizer=tokenizer, chat_template=chat_template)
    if fmt in ("hf", "hf-sharded"):
        from . import hf

        shard = (max_shard_size or DEFAULT_SHARD_SIZE) if fmt == "hf-sharded" else None
        return hf.save(path, config, params, max_shard_size=shard, tokenizer=tokenizer, chat_template=chat_template)
    from . import openai_tf

    return openai_tf.save(path, config, params)


# The keyword arguments of convert() and save_checkpoint() that their messages name as ``fmt='gguf'``: the CLI
# writes them as its flags (``npgpt convert --to gguf``; NpgptError.keywords).
_SAVE_KEYWORDS = ("fmt", "max_shard_size")


def _check_tokenizer_writable(fmt: str, tokenizer: dict[str, Any] | None) -> None:
    """Refuse a tokenizer ``fmt`` cannot carry: a character-level vocabulary, tokens added to GPT-2's, or a
    fine-tune's own eos tokens (npgpt's format carries them, GGUF those llama.cpp reads)."""
    if tokenizer is not None and tokenizer.get("type") == "char" and fmt != "npgpt":
        raise CheckpointError(
            f"a character-level model cannot be written as {fmt}: only npgpt's format carries its vocabulary; "
            "use fmt='npgpt'",
            keywords=_SAVE_KEYWORDS,
        )
    from ..tokenizer import EOT_ID  # <|endoftext|>, GPT-2's eos
    from .gguf_tokenizer import check_writable_tokenizer, own_eos_ids

    eos = tokenizer.get("eos_token_id") if tokenizer is not None else None
    own_eos = eos not in (None, [EOT_ID])
    in_gguf = not own_eos or own_eos_ids(tokenizer) is not None
    if fmt == "gguf" and not in_gguf:
        raise CheckpointError(
            f"a model that ends its generations at token ids {eos} (eos_token_id) cannot be written as gguf: a GGUF "
            "GPT-2 ends them at <|endoftext|>, at most three more tokens named by id (its eos, eot and eom) and any "
            "token spelled as llama.cpp's end tokens (<|im_end|>, <|eot_id|>, ...); use fmt='npgpt'",
            keywords=_SAVE_KEYWORDS,
        )
    if fmt == "gguf":
        check_writable_tokenizer(tokenizer)  # two tokens of one spelling
    # GGUF holds them as llama.cpp's converter writes, a Hugging Face folder as transformers saves them
    if tokenizer is not None and fmt not in ("npgpt", "gguf", "hf", "hf-sharded"):
        raise CheckpointError(
            f"{_added_named(tokenizer)} cannot be written as {fmt}: "
            + (
                "only npgpt's and Hugging Face's formats carry its tokenizer; use fmt='npgpt' or fmt='hf'"
                if not in_gguf
                else "only npgpt's, Hugging Face's and GGUF's formats carry them; "
                "use fmt='npgpt', fmt='hf' or fmt='gguf'"
            ),
            keywords=_SAVE_KEYWORDS,
        )


def _check_save_options(
    fmt: str, dtype: str, max_shard_size: int | str | None, tokenizer: dict[str, Any] | None = None
) -> None:
    """Refuse a format, dtype, shard size or tokenizer that cannot be written, before any weights are read."""
    if fmt not in FORMATS:
        raise _not_writable(fmt)
    _check_tokenizer_writable(fmt, tokenizer)
    if not isinstance(dtype, str) or dtype not in DTYPES[fmt]:
        raise CheckpointError(
            f"dtype={shown(dtype)} cannot be written as {fmt}; it stores {', '.join(DTYPES[fmt])}"
            + dtype_hint(dtype, DTYPES[fmt]),
            param="dtype",
        )
    if max_shard_size is None:
        return
    if fmt != "hf-sharded":
        raise CheckpointError(f"max_shard_size= applies to fmt='hf-sharded', not fmt={fmt!r}", keywords=_SAVE_KEYWORDS)
    from huggingface_hub import split_state_dict_into_shards_factory

    try:  # the Hub's own size parser, the one the split below uses, run on no tensors
        split_state_dict_into_shards_factory(
            {}, get_storage_size=len, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_size
        )
    except (ValueError, OverflowError) as e:  # OverflowError: "infMB"
        raise CheckpointError(
            f"max_shard_size={shown(max_shard_size)}: {e} (e.g. 500MB)", keywords=_SAVE_KEYWORDS
        ) from None
    if _shard_bytes(max_shard_size) < 1:  # the Hub takes "-5MB" or "0MB" and writes one tensor per shard
        raise CheckpointError(
            f"max_shard_size={shown(max_shard_size)} is not a size; give a positive one, e.g. 500MB",
            keywords=_SAVE_KEYWORDS,
        )


def _shard_bytes(size: int | str) -> float:
    """``size`` in bytes, read as the Hub reads it (an int, or a number and KB/MB/GB/TB); NaN for a
    number that is not finite. Call only on a size the Hub's parser accepted."""
    import math

    if isinstance(size, int):
        return size
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
    text = size.strip()
    value = float(text[:-2].strip()) * units[text[-2:].upper()]
    return value if math.isfinite(value) else math.nan


_OWN_SUFFIX = {"npgpt": ".safetensors", "gguf": ".gguf", "llmc": ".bin"}  # the formats written as one file
_PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl"}  # PyTorch's (nanoGPT's ckpt.pt): npgpt reads them, writes none
_SUFFIX_FORMAT = {".safetensors": "npgpt", ".gguf": "gguf"}  # names only one format goes by (.bin: several)


def _check_file_name(path: Path, fmt: str) -> None:
    """CheckpointError for a file name that says another format (``model.gguf`` with the default
    ``--to npgpt``): other tools, which go by the name, would refuse the file npgpt wrote."""
    if path.suffix.lower() in _PICKLE_SUFFIXES and fmt in _OWN_SUFFIX and not path.is_dir():
        raise CheckpointError(  # npgpt reads PyTorch pickles but writes none: torch.load and nanoGPT refused the file
            f"{path.name} is a PyTorch checkpoint's name, and npgpt writes no PyTorch checkpoints; name it "
            f"{path.stem}{_OWN_SUFFIX[fmt]}",
            keywords=_SAVE_KEYWORDS,
        )
    named = _SUFFIX_FORMAT.get(path.suffix.lower())
    if path.is_dir() or named is None or named == fmt:
        return
    if fmt not in _OWN_SUFFIX:
        raise CheckpointError(
            f"fmt={fmt!r} writes a folder, not {path.name}; give a folder name, e.g. {path.stem}",
            keywords=_SAVE_KEYWORDS,
        )
    raise CheckpointError(
        f"{path.name} is not a name for fmt={fmt!r}; add fmt={named!r}, or name it {path.stem}{_OWN_SUFFIX[fmt]}",
        keywords=_SAVE_KEYWORDS,
    )


_FILE_IN_FOLDER = {"npgpt": MODEL_FILE, "llmc": "model.bin", "gguf": "model.gguf"}  # a folder given as the file
_FOLDER_FIRST = {"hf": "config.json", "hf-sharded": "config.json", "openai": "hparams.json"}


def _first_written(path: Path, fmt: str) -> Path:
    """A file that writing ``fmt`` at ``path`` creates: the file itself, or one in the folder it writes
    (a single-file format given a folder, or a name without a suffix, writes its usual name there)."""
    if fmt in _FOLDER_FIRST:
        return path / _FOLDER_FIRST[fmt]
    return path / _FILE_IN_FOLDER[fmt] if path.is_dir() or not path.suffix else path


def _family(fmt: str) -> str:
    """Formats that replace each other in a folder: hf.save withdraws a folder's shards, index and bin, and
    npgpt's file is Hugging Face's model.safetensors, the first thing :func:`detect` reads there."""
    return "hf" if fmt in ("npgpt", "hf", "hf-sharded", "hf-bin") else fmt


def _check_not_shadowed(path: Path, fmt: str) -> None:
    """CheckpointError for a folder that already holds a model of another format: the new files would be
    written beside it and :func:`detect`, which looks for some formats before others, would go on reading
    the old model in their place (an hf folder converted into with --to openai still loaded the hf one)."""
    if not path.is_dir():  # a new folder, or a file: nothing else is read from it
        return
    try:
        held = detect(path)
    except CheckpointError:  # no model there (or none readable): nothing to be read in the new one's place
        return
    if _family(held) != _family(fmt):
        raise CheckpointError(
            f"{path} already holds a model in {held} format, which would still be read in place of the {fmt} one "
            "written beside it; write into an empty folder, or remove the old model first"
        )


def _same(a: Path, b: Path) -> bool:
    import os

    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing (or unreadable): not one file
        return False


def _check_not_overwriting(src: Path, dst: Path, fmt: str) -> None:
    """CheckpointError where converting would replace what is not this format's own output: the model being
    converted (``convert m.gguf m.gguf`` with a lossy dtype would leave no original), or a file that is no model
    of the format (``convert bundled notes.txt`` wrote the model over the notes). A model of the same format is
    replaced, as transformers' save_pretrained and llama.cpp's converters replace their own outputs."""
    target = _first_written(dst, fmt)
    source = _same(src, dst) or _same(src, target)
    if not source and src.exists():
        try:  # one of the source's files, or its folder, given as the output
            files = model_files(src)
            source = any(_same(f, target) for f in files) or (
                dst.is_dir() and _family(detect(src)) == _family(fmt) and any(_same(f.parent, dst) for f in files)
            )
        except CheckpointError:
            source = False
    if source:
        raise CheckpointError(
            f"{dst} is the model being converted: writing there would replace it while it is read; write to another "
            "path (and move the result over the original if that is what you want)"
        )
    if not target.is_file():
        return
    try:
        held = detect(dst if fmt in _FOLDER_FIRST else target)
    except CheckpointError:
        raise CheckpointError(
            f"{target} exists and is not a model: converting would overwrite it; give another path, or remove it first"
        ) from None
    if _family(held) != _family(fmt):
        raise CheckpointError(
            f"{target} holds a model in {held} format, which writing {fmt} would overwrite; give another path, "
            "or remove it first"
        )


def _added_named(tokenizer: dict[str, Any]) -> str:
    """'a model with tokens added to GPT-2's ('[PAD]', '<|im_start|>', ...)', for an error message."""
    from ..tokenizer import EOT_ID  # GPT-2's last token

    added = [t.get("content") for t in tokenizer.get("added_tokens", []) if t.get("id", 0) > EOT_ID]
    if not added:
        return f"a model that ends its generations at token ids {tokenizer.get('eos_token_id')} (eos_token_id)"
    listed = ", ".join(repr(t) for t in added[:3]) + (", ..." if len(added) > 3 else "")
    return f"a model with tokens added to GPT-2's ({listed})"


def _not_writable(fmt: str) -> CheckpointError:
    if fmt in READ_ONLY:
        return CheckpointError(f"npgpt reads {fmt} but does not write it; choose one of {', '.join(FORMATS)}")
    return CheckpointError(f"fmt={fmt!r} is unknown; choose one of {', '.join(FORMATS)}", keywords=_SAVE_KEYWORDS)


def convert(
    src: str | Path,
    dst: str | Path,
    fmt: str = "npgpt",
    dtype: Any = "float32",
    max_shard_size: int | str | None = None,
) -> Path:
    """Read any supported checkpoint at ``src`` and write it as ``fmt`` at ``dst`` (a character-level
    model's vocabulary too, npgpt's format only; the tokens a fine-tune added to GPT-2's, npgpt's and GGUF; the chat
    template it carries, every format but llmc and openai, which have no place for one: :data:`CARRY_CHAT_TEMPLATE`)."""
    dtype = dtype_name(dtype)  # np.float16, torch.bfloat16: their names
    _check_save_options(fmt, dtype, max_shard_size)  # refused before the source is read at all,
    _check_file_name(Path(dst), fmt)
    _check_not_shadowed(Path(dst), fmt)
    _check_not_overwriting(Path(src), Path(dst), fmt)
    check_writable(_first_written(Path(dst), fmt), error=CheckpointError)  # as is a place it cannot be written
    tokenizer = tokenizer_spec(src)  # from the header or the tokenizer files only,
    _check_tokenizer_writable(fmt, tokenizer)  # so refused before a large source's weights are read
    template = chat_template(src)
    config, params = load_checkpoint(src)
    return save_checkpoint(
        dst,
        config,
        params,
        fmt=fmt,
        dtype=dtype,
        max_shard_size=max_shard_size,
        tokenizer=tokenizer,
        chat_template=None if template is None else template[1],
    )
