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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..config import GPT2Config
from ..errors import NpgptError, shown
from ..files import locked_folder
from . import data as D
from . import sharding as S
from .checkpoint import Params, write_checkpoint
from .settings import KEYWORDS, RunSettings, TrainSettings
from .start import Start, start_run
from .step import make_eval_loss, make_train_step, schedule


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
    # What the held-out loss is measured on: the held-out token file (nanoGPT's val.bin) or "the last 10% of the
    # tokens"; None where nothing is held out
    held_out: str | None = None


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

    Raises NpgptError without matplotlib, for a bad setting, ``out`` that is a file, a run already in
    ``out`` without ``resume``, another run writing to ``out`` now (a run holds a lock on its folder),
    text too short for ``seq_len``, a loss that is not finite, or a step or evaluation that runs out of
    memory; CheckpointError for an unreadable checkpoint.
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
    made = next((p for p in [*reversed(out.parents), out] if not p.exists()), None)  # the topmost made here
    with contextlib.ExitStack() as held:
        if jax.process_index() == 0:  # the process that writes the run's files holds its folder's lock
            busy = f"another training run is writing to {out}; wait for it to end, or choose another out="
            try:
                held.enter_context(locked_folder(out, busy))
            except NpgptError as e:  # that, or a folder that cannot be made: named as the CLI's flags
                raise NpgptError(str(e), "out", KEYWORDS) from None
        s = start_run(data, out, asked, resume=resume, model_parallel=model_parallel, mesh=mesh, made=made)
        return _run_steps(s, out, progress, stop_after, should_stop)


def _run_steps(
    s: Start,
    out: Path,
    progress: Callable[[Progress], None] | None,
    stop_after: int | None,
    should_stop: Callable[[], bool] | None,
) -> TrainResult:
    """The optimiser steps from ``s`` on, checkpointed into ``out``; the rest as :func:`train`."""
    config, params, opt_state, run, meta = s.config, s.params, s.opt_state, s.run, s.meta
    train_tokens, val, mesh = s.train_tokens, s.val, s.mesh
    steps, batch_size, seq_len, grad_accum, seed = run.steps, run.batch_size, run.seq_len, run.grad_accum, run.seed

    lr_at = schedule(run.lr, steps, run.warmup)
    rng = np.random.default_rng([seed, 1])  # batches; init_params(seed) has its own stream
    if s.resumed:
        rng.bit_generator.state = meta["rng"]

    train_step = make_train_step(s.opt, config, donate=True)
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
                "tokenizer": None if s.tokenizer is None else s.tokenizer.to_spec(),
                "data": s.trained_on,
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
        s.no_held_out_loss,
        s.held_out,
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


def _mean_loss(eval_loss, params: Params, windows: D.HeldOutWindows, mesh: Any) -> float:
    return float(np.mean([float(eval_loss(params, S.shard_batch(b, mesh))) for b in windows]))
