"""A training run's files: the resume state, the model, the loss plot, and the model to start from.

``train_state.safetensors`` holds everything a resume needs in one file, written atomically
(temp file + rename), so a kill at any moment leaves the previous complete checkpoint: params
(``params.<npgpt name>``), the AdamW state's leaves (``opt.<i>``) and, as JSON metadata, the step,
the batch RNG's state, the run's settings, the tokenizer and the loss history; and the CRC-32 of every
tensor and of that JSON, checked on resume (a flipped bit that leaves a value finite is refused, not trained on).

A checkpoint is one unit although it is two files: the state is written first, then
``model.safetensors``, whose metadata carries the ``step`` it holds. A kill between the two leaves
a model one checkpoint behind the state; :func:`repair_model` (run on every resume) sees the step
differ and rewrites the model from the state, so a resumed run never names a stale model as its
result. A checkpoint whose weights are not finite (a diverged run) is never written.
"""

from __future__ import annotations

import json
import warnings
import zlib
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..char_tokenizer import tokenizer_from_spec
from ..config import GPT2Config
from ..errors import CheckpointError, NpgptError, NpgptWarning
from ..files import atomic_path, parse_json, save_safetensors
from ..formats import npgpt_format
from ..params import flatten, unflatten
from ..tokenizer import Tokenizer
from . import sharding as S
from .plot import plot_losses

Params = dict[str, Any]
STATE_FILE, PLOT_FILE = "train_state.safetensors", "loss.png"
STATE_FORMAT = "npgpt-train-state-v1"
# CRC-32 (zlib's) of each tensor's bytes and of the "meta" JSON, as JSON in the state's metadata; a state
# without it (written before npgpt stored it) is read unchecked. About 1.6 s a side for 124M's 1.5 GB state
# (0.9 GB/s, on 2 busy cores), where writing it took 4-8 s and reading it back 3 s.
CHECKSUM_KEY, META_CHECKSUM = "crc32", "__meta__"
HISTORY_KEYS = ("step", "loss", "val_step", "val_loss")
GPT2_TOKENS = 50257  # GPT-2's own vocabulary; ids from here on are tokens a fine-tune added
RESTORE = "restore it from a backup or start a new run (another out=)"  # with keywords=["out"]


def load_init(init: str | Path) -> tuple[GPT2Config, Params]:
    """Config and params to start from: any checkpoint path npgpt reads (npgpt file or folder,
    such as a training ``--out``; Hugging Face folder; OpenAI TF folder) or a downloaded model
    name (``gpt2``, ``124M``, ...)."""
    from ..formats import load_checkpoint
    from ..registry import resolve

    path, _ = resolve(str(init))
    return load_checkpoint(path)


def init_tokenizer(init: str | Path) -> Tokenizer | None:
    """The tokenizer an ``init`` model was trained with, kept with the fine-tune's model: its character
    vocabulary, GPT-2's ending generations at other tokens (``eos_token_id``: its text trains the same, and
    the saved model must still stop where the init did), or None for GPT-2's own.

    NpgptError for a model whose tokenizer has tokens added to GPT-2's (a chat fine-tune's ``<|im_end|>``):
    training reads its text with GPT-2's BPE, so the run would silently learn the markers as BPE pieces."""
    from ..formats import tokenizer_spec
    from ..registry import resolve

    path, _ = resolve(str(init))
    spec = tokenizer_spec(path)
    if spec is None:
        return None
    added = [t["content"] for t in spec.get("added_tokens", []) if t["id"] >= GPT2_TOKENS]
    if added:
        raise NpgptError(
            f"{path}: its tokenizer has tokens added to GPT-2's ({', '.join(map(repr, added[:3]))}), which npgpt's "
            "training does not carry; fine-tune this model with transformers, or init= a model without them",
            keywords=["init"],
        )
    return tokenizer_from_spec(spec)


def save_state(path: Path, params: Params, opt_leaves: list[np.ndarray], meta: dict) -> None:
    """One safetensors file: ``params.<npgpt name>``, ``opt.<i>`` leaves, ``meta`` as JSON."""
    # np.require, not np.ascontiguousarray: that turns the optimiser's 0-d step counters into [1].
    tensors = {f"params.{k}": np.require(v, requirements="C") for k, v in flatten(params).items()}
    tensors.update({f"opt.{i:05d}": np.require(v, requirements="C") for i, v in enumerate(opt_leaves)})
    metadata = {"format": STATE_FORMAT, "meta": json.dumps(meta)}
    metadata[CHECKSUM_KEY] = json.dumps(_checksums(tensors, metadata["meta"]))
    with atomic_path(path) as tmp:
        save_safetensors(tensors, tmp, metadata=metadata)


def load_state(path: Path) -> tuple[GPT2Config, Params, list[np.ndarray], dict]:
    """Inverse of :func:`save_state` (arrays copied out of the memory map); CheckpointError if
    ``path`` is not a training state, or is one truncated, with a NaN or infinite value, with bytes other
    than those written (its checksums), or with metadata a resume cannot use."""
    try:
        tensors, metadata = npgpt_format.read_safetensors(path)
    except CheckpointError as e:  # truncated, corrupt or a FIFO: nothing to download again, but a run to restore
        said = str(e).replace("re-download or re-convert it", RESTORE)
        fifo_fix = "npgpt reads a model only from regular files: copy the model's files into a folder"
        said = said.replace(fifo_fix, RESTORE)
        raise CheckpointError(said, keywords=["out"]) from None
    written = metadata.get("format")
    if (
        isinstance(written, str)
        and written.startswith(STATE_FORMAT.rsplit("-", 1)[0] + "-")
        and written != STATE_FORMAT
    ):
        # a sound state of another version of npgpt: deleting it would lose the run
        raise CheckpointError(
            f"{path}: a training state of format {written!r}, which this npgpt ({STATE_FORMAT}) does not read; resume "
            "it with the npgpt that wrote it (pip install -U npgpt), or use another out=",
            keywords=["out"],
        )
    if written != STATE_FORMAT:
        raise CheckpointError(
            f"{path}: not an npgpt training state; move it away or use another out=", keywords=["out"]
        )
    meta = _checked_meta(path, metadata.get("meta"))
    try:
        config = GPT2Config.from_dict(meta["config"])
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}; the training state is damaged: {RESTORE}", keywords=["out"]) from None
    for name, value in tensors.items():  # a flipped bit or a damaged disk: a resume would call it a divergence
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise CheckpointError(
                f"{path}: tensor {name!r} holds NaN or infinite values, which no checkpoint is written with; "
                f"the training state is damaged: {RESTORE}",
                keywords=["out"],
            )
    _verify_checksums(path, tensors, metadata)
    flat = {k.removeprefix("params."): np.array(v) for k, v in tensors.items() if k.startswith("params.")}
    opt_names = sorted(k for k in tensors if k.startswith("opt."))
    return config, unflatten(flat, config, str(path)), [np.array(tensors[k]) for k in opt_names], meta


def _checksums(tensors: dict[str, np.ndarray], meta_text: str) -> dict[str, int]:
    """CRC-32 of every tensor's bytes as written, and of the metadata's JSON (``META_CHECKSUM``)."""
    sums = {}
    for name, value in tensors.items():  # a view of the bytes (a memory map's, on resume): nothing copied
        sums[name] = zlib.crc32(np.ascontiguousarray(value).reshape(-1).view(np.uint8).data)
    sums[META_CHECKSUM] = zlib.crc32(meta_text.encode())
    return sums


def _verify_checksums(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """CheckpointError naming the first tensor (or the metadata) whose bytes are not those the state was written
    with: a flipped bit that leaves a value finite loads as a number, and the run would go on from it. A state
    written before npgpt stored checksums has none to check."""
    if CHECKSUM_KEY not in metadata:
        return
    try:
        written = parse_json(metadata[CHECKSUM_KEY])
    except ValueError:
        written = None
    expected = {*tensors, META_CHECKSUM}
    if not (
        isinstance(written, dict)
        and set(written) == expected
        and all(type(v) is int and 0 <= v < 2**32 for v in written.values())
    ):
        raise CheckpointError(
            f"{path}: its checksums ({CHECKSUM_KEY!r}) are damaged or do not name its tensors; "
            f"the training state is damaged: {RESTORE}",
            keywords=["out"],
        )
    for name, crc in _checksums(tensors, metadata["meta"]).items():
        if crc != written[name]:
            what = "its metadata" if name == META_CHECKSUM else f"tensor {name!r}"
            raise CheckpointError(
                f"{path}: {what} does not match the checksum it was written with (a flipped bit or a damaged disk); "
                f"the training state is damaged: {RESTORE}",
                keywords=["out"],
            )


def _checked_meta(path: Path, text: str | None) -> dict:
    """The state's JSON metadata, every entry a resume reads checked first: a hand-edited or damaged
    one is a CheckpointError naming the entry, not a KeyError. (The settings' values are
    :meth:`~.settings.TrainSettings.for_resume`'s to check.)"""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: {what}; the training state is damaged: {RESTORE}", keywords=["out"])

    try:
        meta = parse_json(text) if isinstance(text, str) else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise bad("its metadata is missing or not a JSON object")
    for key, kind in (("step", int), ("steps", int), ("settings", dict), ("config", dict), ("rng", dict)):
        if not isinstance(meta.get(key), kind) or isinstance(meta[key], bool):
            raise bad(f"'{key}' is missing or not {'a whole number' if kind is int else 'an object'}")
    if not 0 <= meta["step"] <= meta["steps"]:
        raise bad(f"step {meta['step']} is not between 0 and its steps ({meta['steps']})")
    history = meta.get("history")
    if not (isinstance(history, dict) and all(isinstance(history.get(k), list) for k in HISTORY_KEYS)):
        raise bad(f"'history' is missing or lacks one of {', '.join(HISTORY_KEYS)}")
    try:  # the batch RNG's state as the loop restores it (a PCG64's)
        np.random.default_rng(0).bit_generator.state = meta["rng"]
    except (TypeError, ValueError, KeyError):
        raise bad("'rng' is not the state of the batch random generator") from None
    if meta.get("tokenizer") is not None:  # a character vocabulary, or GPT-2's ending elsewhere
        try:
            tokenizer_from_spec(meta["tokenizer"])
        except CheckpointError:
            raise bad("'tokenizer' is neither null nor a tokenizer npgpt reads") from None
    return meta


def write_checkpoint(out: Path, config: GPT2Config, params: Params, opt_state: Any, meta: dict) -> None:
    """The resume state, then the model and the loss plot, into ``out`` (by process 0 only). A loss plot that
    cannot be written is an :class:`~npgpt.errors.NpgptWarning`, not an error: the run goes on.

    Every process must call it: gathering sharded arrays to the host is a collective. Raises
    NpgptError, writing nothing, if a weight or the optimiser's state is NaN or infinite (the files of the previous
    checkpoint stay as they were).
    """
    host_params = S.to_host(params)
    for name, value in flatten(host_params).items():
        if not np.isfinite(value).all():
            raise NpgptError(
                f"the weights became NaN or infinite at step {meta['step']} (first in {name}): "
                f"the run diverged; the last good checkpoint in {out} is kept; lower lr=",
                keywords=["lr"],
            )
    host_opt = S.to_host(jax.tree.leaves(opt_state))
    if not all(np.isfinite(leaf).all() for leaf in host_opt if np.asarray(leaf).dtype.kind == "f"):
        raise NpgptError(  # AdamW's second moment is the gradient squared: it overflows before the gradient does
            f"the optimiser state became NaN or infinite at step {meta['step']}: the run diverged; the last good "
            f"checkpoint in {out} is kept; lower lr=",
            keywords=["lr"],
        )
    if jax.process_index() != 0:
        return
    save_state(out / STATE_FILE, host_params, host_opt, meta)  # the resume point, first
    save_model(out, config, host_params, meta)
    try:  # a picture of the losses, which the state holds: not worth stopping a run for
        plot_losses(meta["history"], out / PLOT_FILE)
    except NpgptError as e:  # a full disk, a loss.png that is a folder: said in one line by atomic_path
        warnings.warn(f"{e}; the loss plot is not updated, the run goes on", NpgptWarning, stacklevel=2)


def save_model(out: Path, config: GPT2Config, params: Params, meta: dict) -> None:
    """``model.safetensors`` of the checkpoint ``meta`` describes: its step and tokenizer in the metadata."""
    extra = {"step": str(meta["step"])}
    if meta.get("tokenizer") is not None:
        extra["tokenizer"] = json.dumps(meta["tokenizer"])
    npgpt_format.save(out / npgpt_format.MODEL_FILE, config, params, metadata=extra)


def state_step(out: Path) -> int | None:
    """The step ``out``'s training state holds, read from its header alone (no tensor is read); None if there
    is none or it cannot be read."""
    try:
        header = npgpt_format.read_header(out / STATE_FILE)[0]
        step = parse_json((header.get("__metadata__") or {})["meta"])["step"]
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def model_step(out: Path) -> int | None:
    """The step ``out``'s model file says it holds; None if it is missing, unreadable, truncated or otherwise
    malformed (its structure checked, not its values: no tensor is read), or says nothing."""
    try:
        _, metadata = npgpt_format.read_safetensors(out / npgpt_format.MODEL_FILE)
        return int(metadata["step"])
    except (CheckpointError, KeyError, ValueError):
        return None


def repair_model(out: Path, config: GPT2Config, params: Params, meta: dict) -> bool:
    """Rewrite ``out``'s model from the resume state (``params``, ``meta``) unless it already holds
    that step, whole: a kill between the state and the model left it behind, or the file was damaged
    since (a resume that had nothing to train named a model that no longer loads). True if it was rewritten."""
    if model_step(out) == meta["step"] or jax.process_index() != 0:
        return False
    save_model(out, config, params, meta)
    return True
