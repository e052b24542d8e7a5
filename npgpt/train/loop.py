"""The training driver: ``train(data, out, settings)`` fine-tunes or trains GPT-2 from scratch.

What lands in ``out``:

- ``model.safetensors``: the weights in npgpt's format (``npgpt_format.load`` reads it), with
  the step they hold and its tokenizer in its metadata: for ``tokenizer="char"`` the character
  vocabulary, for an ``init`` model the tokenizer it came with (e.g. generations ending at another token);
- ``train_state.safetensors``: everything a resume needs (see :mod:`.checkpoint`);
- ``loss.png``: the training and held-out loss curves (:mod:`.plot`);
- ``tokens.bin`` (+ ``.json``): the tokenised text, reused while the text is unchanged.

A resumed run draws the same batches and computes the same steps as one never interrupted:
its weights are bit-identical on the same machine. What may change on resume is
:class:`~.settings.TrainSettings`' business.

The library never prints: pass ``progress`` to receive a :class:`Progress` after every step.
It installs no signal handler either: pass ``should_stop`` (checked after every step, e.g. a flag
that the caller's SIGINT handler sets) to end the run early, checkpointed at the step reached.
A step whose loss or gradient is not finite ends the run with an NpgptError and writes nothing, so
the last good checkpoint stays.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..char_tokenizer import CharTokenizer, tokenizer_from_spec
from ..config import GPT2Config
from ..errors import CheckpointError, NpgptError, is_integer, shown
from ..files import cannot_write
from ..formats.npgpt_format import MODEL_FILE
from ..params import init_params
from ..tokenizer import Tokenizer
from . import data as D
from . import sharding as S
from .checkpoint import HISTORY_KEYS, STATE_FILE, Params, init_tokenizer, load_state, repair_model, write_checkpoint
from .settings import KEYWORDS, RunSettings, TrainSettings
from .step import make_eval_loss, make_train_step, optimizer, schedule


@dataclass(frozen=True)
class Progress:
    """Reported after every optimiser step (``step`` counts from 1)."""

    step: int
    steps: int
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    val_loss: float | None = None  # set on the steps that evaluated the held-out text
    checkpoint: bool = False  # True when this step was just saved
    log: bool = False  # True every ``log_interval`` steps, at evaluations and at the last step: worth a log line


@dataclass
class TrainResult:
    config: GPT2Config
    params: Params  # NumPy float32
    step: int
    history: dict[str, list] = field(default_factory=dict)
    tokens_per_s: float = 0.0  # median over the steps after the first (which compiles); 0 if none ran
    out: Path | None = None
    stopped: bool = False  # ended early by ``should_stop``, checkpointed at ``step``
    # Why no held-out loss was computed although the run held text out (too little of it for one window)
    no_held_out_loss: str | None = None


# --- the driver ----------------------------------------------------------------------------


def train(
    data: str | Path,
    out: str | Path,
    settings: TrainSettings | None = None,
    *,
    resume: bool = False,
    model_parallel: int = 1,
    mesh: Any = None,
    progress: Callable[[Progress], None] | None = None,
    stop_after: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train on ``data`` (a text file, a folder of them, or a uint16 ``.bin`` token file) as
    ``settings`` say (default: ``TrainSettings()``, every default) and write checkpoints to ``out``.

    ``resume=True`` continues from ``out``'s checkpoint if there is one (the model and every
    setting left ``None`` then come from the checkpoint) and starts fresh otherwise, so one
    command survives restarts. ``stop_after`` ends the run, checkpointed, after that step (as a
    kill right after a checkpoint would); so does ``should_stop()`` returning True after a step
    (the result's ``stopped`` then says so). Devices: all of ``jax.devices()``, ``model_parallel`` of
    them per model replica, or an explicit ``mesh`` from :func:`npgpt.train.sharding.make_mesh`.

    Raises NpgptError without matplotlib, for a bad setting, ``out`` that is a file, a run already in ``out`` without
    ``resume``, text too short for ``seq_len``, a loss that is not finite, or a step or evaluation
    that runs out of memory; CheckpointError for an unreadable checkpoint.
    """
    try:  # each checkpoint draws the loss curve: without matplotlib the run died at its first
        import matplotlib  # noqa: F401
    except ImportError:
        raise NpgptError("npgpt train draws its loss curve with matplotlib: pip install 'npgpt[train]'") from None
    asked = TrainSettings() if settings is None else settings
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NpgptError(
            f"out={shown(str(out))} is a file; give a folder for the run (it is created if missing)", "out", KEYWORDS
        )
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
    steps, batch_size, seq_len, grad_accum, seed = run.steps, run.batch_size, run.seq_len, run.grad_accum, run.seed
    if seq_len > config.n_ctx:
        raise NpgptError(f"seq_len={seq_len} exceeds the model's context of {config.n_ctx} tokens", "seq_len", KEYWORDS)
    made = next((p for p in [*reversed(out.parents), out] if not p.exists()), None)  # the topmost made here
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # /proc/run, a read-only disk: one line naming the folder, not "internal error"
        raise cannot_write(out, e) from None
    try:
        with D.kept_on_error(out) if saved is not None else contextlib.nullcontext():  # the run's own tokens
            train_tokens, val, no_held_out_loss, trained_on = _prepare_data(data, out, config, run, tokenizer)
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
    except BaseException:  # no text, text too short, a bad mesh, no memory: a folder made for nothing is not left
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise

    lr_at = schedule(run.lr, steps, run.warmup)
    rng = np.random.default_rng([seed, 1])  # batches; init_params(seed) has its own stream
    if saved is not None:
        rng.bit_generator.state = meta["rng"]

    train_step = make_train_step(opt, config, donate=True)
    eval_loss = make_eval_loss(config)
    history, step = meta["history"], meta["step"]
    end = steps if stop_after is None else min(steps, stop_after)
    tokens_per_step = grad_accum * batch_size * seq_len
    eval_interval = run.eval_interval
    checkpoint_interval = run.checkpoint_interval or eval_interval
    saved_step = step
    rates = []
    stopped = False
    while step < end and not stopped:
        t0 = time.perf_counter()
        try:
            batch = D.random_batch(train_tokens, (grad_accum, batch_size), seq_len, rng)
            params, opt_state, metrics = train_step(params, opt_state, S.shard_batch(batch, mesh, axis=1))
            loss = float(metrics["loss"])  # waits for the step: the timing below is honest
        except (MemoryError, jax.errors.JaxRuntimeError) as e:
            raise _out_of_memory(e, step + 1, run, saved_step) from None
        rate = tokens_per_step / (time.perf_counter() - t0)
        rates.append(rate)
        step += 1
        if not (np.isfinite(loss) and np.isfinite(float(metrics["grad_norm"]))):
            raise NpgptError(
                f"the loss became {loss} at step {step}: the run diverged; {_kept(saved_step)}; {_tame(run)}",
                keywords=KEYWORDS,
            )
        history["step"].append(step)
        history["loss"].append(loss)
        val_loss = None
        if len(val) and (step % eval_interval == 0 or step == steps):
            try:
                val_loss = _mean_loss(eval_loss, params, val, mesh)
            except (MemoryError, jax.errors.JaxRuntimeError) as e:
                raise _out_of_memory(e, step, run, saved_step) from None
            history["val_step"].append(step)
            history["val_loss"].append(val_loss)
        stopped = should_stop is not None and should_stop()
        checkpoint = step % checkpoint_interval == 0 or step == end or stopped
        if checkpoint:
            state_meta = {
                "step": step,
                "history": history,
                "rng": rng.bit_generator.state,
                "settings": run.to_meta(),
                "config": config.to_dict(),
                "steps": steps,
                "tokenizer": None if tokenizer is None else tokenizer.to_spec(),
                "data": trained_on,
            }
            write_checkpoint(out, config, params, opt_state, state_meta)
            saved_step = step
        if progress is not None:
            log = step % run.log_interval == 0 or val_loss is not None or step == end or stopped
            progress(
                Progress(
                    step,
                    steps,
                    loss,
                    float(lr_at(step - 1)),
                    float(metrics["grad_norm"]),
                    rate,
                    val_loss,
                    checkpoint,
                    log,
                )
            )

    return TrainResult(
        config,
        S.to_host(params),
        step,
        history,
        float(np.median(rates[1:] or rates)) if rates else 0.0,  # one step: its own rate, compile and all
        out,
        stopped and step < end,
        no_held_out_loss,
    )


def _prepare_data(
    data: str | Path, out: Path, config: GPT2Config, run: RunSettings, tokenizer: Tokenizer | None
) -> tuple[np.ndarray, np.ndarray, str | None, dict[str, Any]]:
    """Training tokens (memory-mapped), the fixed held-out windows, why there are none where
    ``val_fraction`` held text out that is shorter than one window (or None), and what the data is
    (``{"source", "n_tokens", "fingerprint"}``, kept in the checkpoint for :func:`_check_same_data`)."""
    tokens = D.load_tokens(data, out, tokenizer)
    trained_on = {"source": str(data), "n_tokens": len(tokens), "fingerprint": D.tokens_fingerprint(tokens)}
    if int(tokens.max()) >= config.n_vocab:  # out-of-range ids would silently gather garbage
        raise NpgptError(f"{data}: token id {int(tokens.max())} is outside the model's vocabulary of {config.n_vocab}")
    try:
        train_tokens, val_tokens = D.split(tokens, run.val_fraction)
    except ValueError as e:
        raise NpgptError(str(e)) from None
    seq_len = run.seq_len
    if len(train_tokens) <= seq_len:
        raise NpgptError(
            f"{data}: {len(train_tokens)} training tokens, too few for seq_len={seq_len}; "
            "use a shorter seq_len= or more text",
            keywords=KEYWORDS,
        )
    windows = D.eval_windows(val_tokens, run.batch_size, seq_len, run.eval_batches)
    short = None
    if run.val_fraction > 0 and not len(windows):  # held out, yet never scored: said, not silent
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


def _kept(saved_step: int) -> str:
    return f"the checkpoint of step {saved_step} is kept" if saved_step else "no checkpoint was written"


def _tame(run: RunSettings) -> str:
    """What to change after a diverged run. AdamW's decay multiplies every weight by ``1 - lr *
    weight_decay`` each step (Loshchilov & Hutter 2019): from a product of 1 on, it flips and grows the
    weights, whatever the learning rate does to the gradient's part."""
    shrink = run.lr * run.weight_decay
    if shrink >= 1:
        return (
            f"lower weight_decay= or lr=: with weight_decay={run.weight_decay} and lr={run.lr} the decay "
            f"multiplies every weight by {1 - shrink:.3g} each step (keep their product well below 1), and start again"
        )
    return "lower lr= (or warmup= more steps) and start again"


def _out_of_memory(e: Exception, step: int, run: RunSettings, saved_step: int) -> NpgptError:
    """The one-line error for a step that ran out of host or device memory; any other runtime error
    from XLA is raised again as it is."""
    if isinstance(e, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" not in str(e):
        raise e
    detail = (str(e).splitlines() or [""])[0].removeprefix("RESOURCE_EXHAUSTED: ").rstrip(".") or "MemoryError"
    if run.grad_accum > 1:  # every micro-batch of a step is held at once on the host: all three count
        sizes = f"batch_size={run.batch_size}, grad_accum={run.grad_accum} and seq_len={run.seq_len}"
        fix = "lower batch_size=, grad_accum= or seq_len="
    else:
        sizes = f"batch_size={run.batch_size} and seq_len={run.seq_len}"
        fix = "lower batch_size= (raising grad_accum= keeps the tokens per step) or seq_len="
    message = f"out of memory at step {step} ({detail}) with {sizes}; {_kept(saved_step)}; {fix}"
    return NpgptError(message, keywords=KEYWORDS)


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


def _mean_loss(eval_loss, params: Params, windows: np.ndarray, mesh: Any) -> float:
    return float(np.mean([float(eval_loss(params, S.shard_batch(b, mesh))) for b in windows]))
