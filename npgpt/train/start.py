"""A training run's start: the model, settings, data, devices and optimiser state it begins from, read
from ``out``'s checkpoint on a resume or made fresh, every check done before the first step.

A folder made for the run is removed again when the start fails (no text, text too short, a bad mesh,
no memory): nothing is left behind for a run that never began.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..char_tokenizer import CharTokenizer, tokenizer_from_spec
from ..config import GPT2Config
from ..errors import CheckpointError, NpgptError, is_integer, shown
from ..files import cannot_write, check_writable, make_dirs
from ..formats.npgpt_format import MODEL_FILE
from ..params import init_params
from ..tokenizer import Tokenizer
from . import data as D
from . import sharding as S
from .checkpoint import HISTORY_KEYS, STATE_FILE, Params, init_tokenizer, load_state, repair_model
from .settings import KEYWORDS, RunSettings, TrainSettings
from .step import optimizer


@dataclass
class Start:
    """What :func:`start_run` gives the loop."""

    config: GPT2Config
    params: Params  # on the mesh
    opt: Any  # the optax optimiser
    opt_state: Any  # on the mesh: the checkpoint's, or zeros
    run: RunSettings
    meta: dict[str, Any]  # the checkpoint's metadata ("step", "history", "rng", ...) or a new run's step 0
    resumed: bool
    tokenizer: Tokenizer | None
    train_tokens: np.ndarray
    val: D.HeldOutWindows  # the fixed held-out windows, gathered a batch at a time
    no_held_out_loss: str | None
    trained_on: dict[str, Any]  # with "held_out": the held-out file's path, or None for the split's tokens
    mesh: Any
    held_out: str | None = None  # what the held-out loss is measured on, in words; None: nothing held out


def start_run(
    data: str | Path,
    out: Path,
    asked: TrainSettings,
    *,
    resume: bool,
    model_parallel: int,
    mesh: Any,
    made: Path | None = None,
) -> Start:
    """The run :func:`~.loop.train` begins: from ``out``'s checkpoint when ``resume`` and there is one, else
    fresh as ``asked``; errors as :func:`~.loop.train` lists them. ``made``: the topmost folder of ``out``'s
    path that the caller made for the run (to lock it), removed with ``out`` if the start fails."""
    try:
        return _start(data, out, asked, resume, model_parallel, mesh)
    except BaseException:  # a bad setting, no text, text too short, a bad mesh, no memory: no folder made for nothing
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise


def _start(data: str | Path, out: Path, asked: TrainSettings, resume: bool, model_parallel: int, mesh: Any) -> Start:
    state_path = out / STATE_FILE
    if state_path.exists() and not resume:
        raise NpgptError(
            f"{out} already holds a training run; pass resume=True to continue it or choose another out=",
            keywords=KEYWORDS,
        )
    if not state_path.exists() and (out / MODEL_FILE).exists():  # a converted or downloaded model, not a run's
        raise NpgptError(
            f"{out} holds a model ({MODEL_FILE}) that no training run wrote, and the run would overwrite it; "
            f"choose another out= (the run can start from that model: init={shown(str(out))})",
            keywords=KEYWORDS,
        )
    if resume and not state_path.exists() and (other := _other_trainers_checkpoint(out)) is not None:
        # nanoGPT's habit (init_from='resume': out_dir's ckpt.pt): a fresh model was trained beside it, unsaid
        raise NpgptError(
            f"{out} holds {other}, not an npgpt training state, so there is no npgpt run to resume; npgpt does not "
            f"resume another trainer's run (its optimiser state, its place in the data); train on from its weights "
            f"as a new run: init={shown(str(out))} with another out=",
            keywords=KEYWORDS,
        )
    saved = load_state(state_path) if resume and state_path.exists() else None
    if saved is not None:
        config, params, opt_leaves, meta = saved
        run = asked.for_resume(meta["settings"], meta["steps"], config)
        if run.steps < meta["step"]:  # the loop would not run, and nothing would say so
            raise NpgptError(
                f"the run in {out} is already at step {meta['step']}; give steps= above that to train on",
                keywords=KEYWORDS,
            )
        tokenizer = None if meta.get("tokenizer") is None else tokenizer_from_spec(meta["tokenizer"])
        repair_model(out, config, params, meta)  # a kill between the state and the model left it behind
    else:
        if asked.init is not None:
            config, params = asked.model()
            tokenizer = init_tokenizer(asked.init)  # fine-tuning keeps the model's own tokenizer
        else:
            tokenizer = D.char_tokenizer(data, out) if asked.tokenizer == "char" else None
            config, params = asked.model(None if tokenizer is None else tokenizer.n_vocab)
        run = asked.for_new_run(config)
        if isinstance(tokenizer, CharTokenizer):
            run = replace(run, tokenizer="char")
        if params is None:
            try:
                params = init_params(config, run.seed)
            except MemoryError as e:  # a shape too large for the host: "internal error: out of memory" was all
                raise _model_too_large(e, config, run) from None
        opt_leaves, meta = None, {"step": 0, "history": {k: [] for k in HISTORY_KEYS}}
    steps, batch_size, seq_len = run.steps, run.batch_size, run.seq_len
    if seq_len > config.n_ctx:
        raise NpgptError(f"seq_len={seq_len} exceeds the model's context of {config.n_ctx} tokens", "seq_len", KEYWORDS)
    try:
        make_dirs(out)  # made already where this process holds its lock
    except OSError as e:  # /proc/run, a read-only disk: one line naming the folder, not "internal error"
        raise cannot_write(out, e) from None
    if jax.process_index() == 0:  # a resume in a read-only folder trained until its first checkpoint failed
        elsewhere = "copy the run to a folder you can write to" if saved else "choose a folder you can write to"
        check_writable(out / STATE_FILE, elsewhere=elsewhere)
    held_out = _held_out_file(data, asked, meta.get("data", {}) if saved is not None else None, out)
    if held_out is not None:  # none of the training tokens are held out: the checkpoint says so
        run = replace(run, val_fraction=0.0)
    with D.kept_on_error(out) if saved is not None else contextlib.nullcontext():  # the run's own tokens
        train_tokens, val, no_held_out_loss, trained_on = _prepare_data(data, out, config, run, tokenizer, held_out)
        if saved is not None:
            _check_same_data(meta.get("data"), trained_on, out)
    mesh = _check_mesh(mesh if mesh is not None else _make_mesh(model_parallel), config, batch_size)
    opt = optimizer(run.lr, steps, run.warmup, weight_decay=run.weight_decay, clip=run.clip)
    try:
        params = S.shard_params(params, mesh)
        template = opt.init(params)  # zeros laid out like the params they track
        opt_state = _place_opt_state(opt_leaves, template, mesh)
    except (MemoryError, jax.errors.JaxRuntimeError) as e:  # the weights and AdamW's moments, on the devices
        raise _model_too_large(e, config, run) from None
    return Start(
        config,
        params,
        opt,
        opt_state,
        run,
        meta,
        saved is not None,
        tokenizer,
        train_tokens,
        val,
        no_held_out_loss,
        trained_on,
        mesh,
        str(held_out) if held_out is not None else _split_words(run.val_fraction),
    )


_TRAINERS = {"nanogpt": "nanoGPT's checkpoint", "llmc": "llm.c's model", "openai": "OpenAI's TensorFlow checkpoint"}


def _other_trainers_checkpoint(out: Path) -> str | None:
    """The model in ``out`` that no npgpt run wrote, in words ("nanoGPT's checkpoint (ckpt.pt)"), or None where
    there is none (an empty folder, a run killed before its first checkpoint)."""
    from ..formats import detect, model_files

    if not out.is_dir():
        return None
    try:
        fmt = detect(out)
        first = model_files(out)[0]
    except (CheckpointError, IndexError):
        return None
    kind = _TRAINERS.get(fmt, "a GGUF model" if fmt == "gguf" else "a Hugging Face model")
    return f"{kind} ({first.name})"


def _split_words(val_fraction: float) -> str | None:
    return f"the last {100 * val_fraction:.3g}% of the tokens" if val_fraction > 0 else None


def _held_out_file(data: str | Path, asked: TrainSettings, saved: Any, out: Path) -> Path | None:
    """The token file the held-out loss is measured on, or None for the last ``val_fraction`` of the data.

    A new run takes nanoGPT's ``val.bin`` that comes with its ``train.bin`` (:func:`~.data.held_out_file`), as
    nanoGPT's train.py does, unless ``val_fraction`` is given: then the split, as asked. A resumed run takes what its
    checkpoint recorded (``saved``, its "data"; None for a new run): runs saved before the held-out file was
    recorded used the split."""
    found = D.held_out_file(data)
    if saved is not None:
        if not isinstance(saved, dict) or saved.get("held_out") is None:
            return None
        if found is None:
            raise NpgptError(
                f"the run in {out} measured its held-out loss on {saved['held_out']}, and there is no such file beside "
                f"{data} now; pass the same data, with its held-out file",
                keywords=KEYWORDS,
            )
        return found
    return found if asked.val_fraction is None else None


def _prepare_data(
    data: str | Path,
    out: Path,
    config: GPT2Config,
    run: RunSettings,
    tokenizer: Tokenizer | None,
    held_out: Path | None,
) -> tuple[np.ndarray, D.HeldOutWindows, str | None, dict[str, Any]]:
    """Training tokens (memory-mapped), the fixed held-out windows (from ``held_out``, a token file, or else the
    last ``val_fraction`` of the tokens), why there are none where text was held out that is shorter than one window
    (or None), and what the data is (``{"source", "n_tokens", "fingerprint", "held_out"}``, kept in the checkpoint
    for :func:`_check_same_data` and a resume's :func:`_held_out_file`)."""
    tokens = D.load_tokens(data, out, tokenizer)
    trained_on = {
        "source": str(data),
        "n_tokens": len(tokens),
        "fingerprint": D.tokens_fingerprint(tokens),
        "held_out": None if held_out is None else str(held_out),
    }
    if held_out is not None:
        train_tokens, val_tokens = tokens, D.read_token_file(held_out)
    else:
        try:
            train_tokens, val_tokens = D.split(tokens, run.val_fraction)
        except ValueError as e:
            raise NpgptError(str(e)) from None
    for ids, name in ((tokens, data), (val_tokens, held_out)):
        if len(ids) and int(ids.max()) >= config.n_vocab:  # out-of-range ids would silently gather garbage
            raise NpgptError(f"{name}: token id {int(ids.max())} is outside the model's vocabulary of {config.n_vocab}")
    seq_len = run.seq_len
    if len(train_tokens) <= seq_len:
        raise NpgptError(
            f"{data}: {len(train_tokens)} training tokens, too few for seq_len={seq_len}; "
            "use a shorter seq_len= or more text",
            keywords=KEYWORDS,
        )
    windows = D.eval_windows(val_tokens, run.batch_size, seq_len, run.eval_batches)
    short = None
    if held_out is not None and not len(windows):
        short = (
            f"no held-out loss: the held-out file {held_out} holds {len(val_tokens)} tokens, fewer than one window "
            f"of seq_len={seq_len} + 1; lower seq_len= or give a longer held-out file"
        )
    elif run.val_fraction > 0 and not len(windows):  # held out, yet never scored: said, not silent
        short = (
            f"no held-out loss: the held-out {len(val_tokens)} tokens (val_fraction={run.val_fraction}) are fewer "
            f"than one window of seq_len={seq_len} + 1; raise val_fraction= or lower seq_len="
        )
    return train_tokens, windows, short, trained_on


def _check_same_data(saved: Any, now: dict[str, Any], out: Path) -> None:
    """Refuse to resume on other tokens than the run was trained on: the run would go on, silently, as
    a fine-tune on the new text under the old run's name, and its checkpoints could no longer be
    reproduced. Runs saved before the data was recorded (no "data") are resumed as before."""
    if not isinstance(saved, dict) or saved.get("fingerprint") in (None, now["fingerprint"]):
        return
    was = f"{shown(saved.get('source'))} ({saved.get('n_tokens')} tokens)"
    raise NpgptError(
        f"cannot resume on {shown(now['source'])} ({now['n_tokens']} tokens): the run in {out} was trained "
        f"on {was}, other tokens; pass the same data, or train on this data as a new run from this one's model "
        f"(another out=, init={shown(str(out))})",
        keywords=KEYWORDS,
    )


def _model_too_large(e: Exception, config: GPT2Config, run: RunSettings) -> NpgptError:
    """The one-line error for a model whose weights (or AdamW's two moments beside them) do not fit in memory;
    any other runtime error from XLA is raised again as it is."""
    if isinstance(e, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" not in str(e):
        raise e
    detail = (str(e).splitlines() or [""])[0].removeprefix("RESOURCE_EXHAUSTED: ").rstrip(".") or "MemoryError"
    gib = 4 * config.n_params / 2**30
    fix = "start from a smaller init= model" if run.init is not None else "lower n_embd= or n_layer="
    return NpgptError(
        f"out of memory for the model ({detail}): {config.n_params:,} parameters are {gib:.1f} GiB of float32 "
        f"weights, and training needs three times as much again (gradients, AdamW's two moments); {fix}",
        keywords=KEYWORDS,
    )


def _make_mesh(model_parallel: int) -> Any:
    """The mesh of every device, ``model_parallel`` per model replica; NpgptError (not make_mesh's ValueError,
    an internal error to the CLI) for a size that is not a whole number dividing the device count."""
    n = len(jax.devices())
    if not (is_integer(model_parallel) and model_parallel >= 1 and n % model_parallel == 0):
        raise NpgptError(
            f"model_parallel={shown(model_parallel)} must be a whole number that divides the {n} devices "
            f"JAX sees ({jax.default_backend()}); use 1 or another divisor of {n}",
            keywords=KEYWORDS,
        )
    return S.make_mesh(model=int(model_parallel))


def _check_mesh(mesh: Any, config: GPT2Config, batch_size: int) -> Any:
    try:
        S.check_divisible(config.n_head, config.n_embd, mesh)
        if batch_size % mesh.shape["data"]:
            raise ValueError(
                f"batch_size={batch_size} must be a multiple of the {mesh.shape['data']} data-parallel devices"
            )
    except ValueError as e:
        raise NpgptError(str(e), keywords=KEYWORDS) from None
    return mesh


def _place_opt_state(leaves: list[np.ndarray] | None, template: Any, mesh: Any) -> Any:
    """Optimiser state on the mesh: moments sharded like their params, counters replicated.

    ``leaves`` (from a checkpoint) replace the template's zeros, after a shape check.
    """
    ref, treedef = jax.tree.flatten(template)
    if leaves is None:
        leaves = [np.asarray(x) for x in ref]
    if len(leaves) != len(ref) or any(a.shape != b.shape for a, b in zip(leaves, ref, strict=False)):
        raise CheckpointError(
            "the optimiser state in the checkpoint does not match this optimiser; start a new run (another out=)",
            keywords=KEYWORDS,
        )
    replicated = S.NamedSharding(mesh, S.P())

    def place(x, r):
        sharding = r.sharding if isinstance(r.sharding, S.NamedSharding) else replicated
        return S.put(np.asarray(x, dtype=r.dtype), sharding)

    return jax.tree.unflatten(treedef, [place(x, r) for x, r in zip(leaves, ref, strict=True)])
