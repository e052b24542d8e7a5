"""nanoGPT's ``ckpt.pt``: the dict its ``train.py`` passes to ``torch.save``.

``{"model": state_dict, "optimizer": ..., "model_args": {n_layer, n_head, n_embd, block_size,
bias, vocab_size, dropout}, "iter_num": int, "best_val_loss": tensor, "config": {...}}``, read
with :mod:`npgpt.formats.torch_pickle` (no code from the file runs; the optimizer state is read
as plain containers and ignored). What differs from Hugging Face's naming:

- ``torch.compile`` wraps the model, so a compiled run's names start with ``_orig_mod.``;
- ``nn.Linear`` stores weights ``[out, in]``; npgpt (like OpenAI and HF's Conv1D) uses
  ``[in, out]``, so the four matrices of each block are transposed (a view, no copy);
- ``lm_head.weight`` is the same tensor as ``transformer.wte.weight`` (nanoGPT ties them);
- ``vocab_size`` is usually 50304, GPT-2's 50257 padded to a multiple of 64: kept as the model's
  width (the extra rows are never a real token);
- ``attn.bias`` is the causal-mask buffer of torch < 2 runs, not a parameter;
- its MLP's GELU is PyTorch's exact ``nn.GELU()`` (erf), transformers' ``"gelu"``, not GPT-2's tanh
  approximation (``"gelu_new"``): nanoGPT's model.py since 2023-05-17 (commit 594068e, "Use nn.GELU"), which is
  what its ``sample.py`` runs any checkpoint with. Its earlier ``new_gelu`` was the tanh form, and a checkpoint
  does not say which trained it (the two differ by at most 5e-4 per activation), except one of nanoGPT's first
  versions, whose ``model_args`` lack ``bias`` or ``vocab_size`` (before 2023-01-27): those trained and sampled
  with the tanh form, and run with it (``"gelu_new"``).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..config import GPT2Config
from ..errors import CheckpointError, CheckpointWarning
from ..params import unflatten
from .hf import duplicate, our_names, same_weights, unwrapped
from .npgpt_format import as_float32

CKPT_FILE = "ckpt.pt"  # what nanoGPT's train.py writes in its out_dir
_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size")
_IGNORED_ARGS = ("dropout",)  # training only: no effect on inference
# Keys nanoGPT's first versions did not save (``vocab_size`` before 2023-01-14, ``bias`` before
# 2023-01-27): their GPT had GPT-2's vocabulary and biases everywhere, and the weights say which
# (:func:`_early_args`).
_LINEAR = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def load(path: str | Path) -> tuple[GPT2Config, dict[str, Any]]:
    """Config and float32 params from a nanoGPT ``ckpt.pt`` (or the directory holding it).

    ``bias=False`` models load as such (GPT2Config's ``bias``); an ``lm_head.weight`` that differs
    from ``wte`` (a fork that unties them) is kept as the output head. Raises CheckpointError for
    a pickle that is not nanoGPT's checkpoint dict, a ``model_args`` key nanoGPT's GPT does not
    have (a fork's change to the math), or weights that do not fit ``model_args``.
    """
    from .torch_pickle import load as load_pickle
    from .torch_pickle import not_a_state_dict

    path = Path(path)
    if path.is_dir():
        path = path / CKPT_FILE
    ckpt = load_pickle(path)
    if (
        not isinstance(ckpt, dict)
        or not isinstance(ckpt.get("model"), dict)
        or not isinstance(ckpt.get("model_args"), dict)
    ):
        raise CheckpointError(
            f"{path}: not a nanoGPT checkpoint (no 'model' and 'model_args'); a bare PyTorch state dict "
            "needs its Hugging Face config.json beside it, saved as pytorch_model.bin"
        )
    why = not_a_state_dict(ckpt["model"])
    if why is not None:
        raise CheckpointError(
            f"{path}: its 'model' is not a state dict (a mapping of names to tensors): {why}; the file is corrupt or "
            "not a nanoGPT checkpoint"
        )
    state: dict[str, Any] = {}
    their_names: dict[str, str] = {}
    for key, value in ckpt["model"].items():
        name = unwrapped(key)  # a compiled run's _orig_mod.
        if name in state:
            raise duplicate(str(path), their_names[name], key)
        state[name], their_names[name] = value, key
    config = _config({**_early_args(state), **ckpt["model_args"]}, str(path))
    if config.n_vocab < GPT2_VOCAB:
        warnings.warn(_character_level(path, config.n_vocab, ckpt.get("config")), CheckpointWarning, stacklevel=2)
    if not {"bias", "vocab_size"} <= ckpt["model_args"].keys():  # before 2023-01-27: new_gelu, the tanh form
        config = dataclasses.replace(config, activation_function="gelu_new")
    flat = _params(state, str(path))
    if "lm_head" in flat:
        config = dataclasses.replace(config, tie_word_embeddings=False)
    return config, unflatten(flat, config, source=str(path))


GPT2_VOCAB = 50257  # GPT-2's tokens: a model of fewer rows cannot take GPT-2's ids


def _character_level(path: Path, n_vocab: int, settings: Any) -> str:
    """A nanoGPT model of fewer rows than GPT-2's tokens: trained on other ids, as nanoGPT's shakespeare_char (the
    quick start of its README: 65 characters, their table in data/shakespeare_char/meta.pkl, which its sample.py
    reads). Its logits of ids below its rows are its own; text, encoded with GPT-2's tokenizer, gives ids past
    them, refused at the first prompt with no word of why. npgpt's character-level tokenizer adds an end-of-text
    id such a model has no row for, so meta.pkl is not read: the load says so."""
    dataset = settings.get("dataset") if isinstance(settings, dict) else None
    where = f"data/{dataset}/meta.pkl" if isinstance(dataset, str) and dataset else "its data's meta.pkl"
    return (
        f"{path}: a model of {n_vocab} tokens (model_args vocab_size), not GPT-2's {GPT2_VOCAB}: trained on its own "
        f"vocabulary (a character-level model's is in {where}), which npgpt does not read, so text encoded with "
        f"GPT-2's tokenizer will be refused (only ids below {n_vocab} fit); sample it with nanoGPT's sample.py, or "
        "train a character-level model with npgpt (tokenizer='char')"
    )


def _early_args(state: dict[str, Any]) -> dict[str, Any]:
    """``bias`` and ``vocab_size`` as the weights show them, for a checkpoint of nanoGPT's first
    versions, whose ``model_args`` lack them (``model_args`` has the last word where it has them)."""
    wte = state.get("transformer.wte.weight")
    args: dict[str, Any] = {"bias": "transformer.ln_f.bias" in state}
    if isinstance(wte, np.ndarray) and wte.ndim == 2:
        args["vocab_size"] = int(wte.shape[0])
    return args


def _config(args: dict[str, Any], source: str) -> GPT2Config:
    unknown = sorted(set(args) - set(_ARGS) - set(_IGNORED_ARGS))
    if unknown:
        raise CheckpointError(
            f"{source}: model_args has {unknown[0]}={args[unknown[0]]!r}, which nanoGPT's GPT does not; "
            "npgpt cannot tell how it changes the model"
        )
    missing = [k for k in _ARGS if args.get(k) is None]
    if missing:
        raise CheckpointError(f"{source}: model_args lacks {missing[0]!r}; not a complete nanoGPT checkpoint")
    kw: dict[str, Any] = {
        "activation_function": "gelu",  # nn.GELU(): exact, not GPT-2's tanh form (see the module's docstring)
        "n_vocab": args["vocab_size"],
        "n_ctx": args["block_size"],
        "n_embd": args["n_embd"],
        "n_head": args["n_head"],
        "n_layer": args["n_layer"],
    }
    if not args["bias"]:  # nanoGPT's option: no bias in any linear layer or layer norm
        kw["bias"] = False
    try:
        return GPT2Config(**kw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: model_args do not make a GPT-2 config ({e})") from None


def _params(state: dict[str, np.ndarray], source: str) -> dict[str, Any]:
    """nanoGPT names -> npgpt's flat names; nn.Linear weights transposed to [in, out]."""
    head, wte = state.pop("lm_head.weight", None), state.get("transformer.wte.weight")
    flat: dict[str, np.ndarray] = {}
    for name, ours in our_names(state, source):  # the same module names as Hugging Face's GPT2LMHeadModel
        arr = state[name]
        if name.endswith(_LINEAR):
            arr = arr.T  # [out, in] -> [in, out]
        flat[ours] = as_float32(arr, name, source)
    if head is not None and wte is not None and not same_weights(head, wte):
        flat["lm_head"] = as_float32(head, "lm_head.weight", source)  # a fork that unties the head: honoured
    return flat
