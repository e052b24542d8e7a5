"""The training driver: ``train(data, out, ...)`` fine-tunes or trains GPT-2 from scratch.

What lands in ``out``:

- ``model.safetensors``: the weights in npgpt's format (``npgpt_format.load`` reads it);
- ``train_state.safetensors``: everything a resume needs in one file, written atomically
  (temp file + rename), so a kill at any moment leaves the previous complete checkpoint:
  params, AdamW state, step, the batch RNG's state, the run's settings and the loss history;
- ``loss.png``: the training and held-out loss curves;
- ``tokens.bin`` (+ ``.json``): the tokenised text, reused while the text is unchanged.

A resumed run draws the same batches and computes the same steps as one never interrupted:
its weights are bit-identical on the same machine.

The library never prints: pass ``progress`` to receive a :class:`Progress` after every step.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..config import GPT2Config
from ..errors import CheckpointError, NpgptError
from ..files import atomic_path
from ..formats import npgpt_format
from ..formats.names import flatten, init_params, unflatten
from . import data as D
from . import sharding as S
from .step import make_eval_loss, make_train_step, optimizer, schedule

Params = dict[str, Any]
STATE_FILE, MODEL_FILE, PLOT_FILE = "train_state.safetensors", "model.safetensors", "loss.png"
STATE_FORMAT = "npgpt-train-state-v1"
SCRATCH = {"n_layer": 6, "n_embd": 384, "n_head": 6, "n_ctx": 256}  # from-scratch default, ~30M
# Run settings. A resumed run must share them with the run it continues, or it would not be
# the same run.
DEFAULT_STEPS = 1000
DEFAULTS: dict[str, Any] = {
    "batch_size": 8, "seq_len": None, "grad_accum": 1, "lr": 3e-4, "warmup": None,
    "weight_decay": 0.1, "clip": 1.0, "seed": 0, "val_fraction": 0.1,
}  # seq_len None: min(256, n_ctx); warmup None: min(100, steps // 10)
# How a run is watched, not what it computes: a resumed run keeps them unless told otherwise.
MONITORING: dict[str, Any] = {"eval_interval": 100, "eval_batches": 8, "checkpoint_interval": None}


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


@dataclass
class TrainResult:
    config: GPT2Config
    params: Params  # NumPy float32
    step: int
    history: dict[str, list] = field(default_factory=dict)
    tokens_per_s: float = 0.0  # median over the steps after the first (which compiles)
    out: Path | None = None


def load_init(init: str | Path) -> tuple[GPT2Config, Params]:
    """Config and params to start from: any checkpoint path npgpt reads (npgpt file or folder,
    such as a training ``--out``; Hugging Face folder; OpenAI TF folder) or a downloaded model
    name (``gpt2``, ``124M``, ...)."""
    from ..download import resolve
    from ..formats import load_checkpoint

    path, _ = resolve(str(init))
    return load_checkpoint(path)


def model_config(init, n_layer, n_embd, n_head, n_ctx) -> tuple[GPT2Config, Params | None]:
    """The model to train: loaded from ``init``, or a from-scratch config (params None)."""
    shape = {"n_layer": n_layer, "n_embd": n_embd, "n_head": n_head, "n_ctx": n_ctx}
    given = {k: v for k, v in shape.items() if v is not None}
    if init is not None:
        if given:
            raise NpgptError(f"pass --init or a model shape ({', '.join(given)}), not both")
        return load_init(init)
    try:
        return GPT2Config(**{**SCRATCH, **given}), None
    except ValueError as e:
        raise NpgptError(str(e)) from None


# --- checkpoints ---------------------------------------------------------------------------

def save_state(path: Path, params: Params, opt_leaves: list[np.ndarray], meta: dict) -> None:
    """One safetensors file: ``params.<npgpt name>``, ``opt.<i>`` leaves, ``meta`` as JSON."""
    from safetensors.numpy import save_file

    # np.require, not np.ascontiguousarray: that turns the optimiser's 0-d step counters into [1].
    tensors = {f"params.{k}": np.require(v, requirements="C") for k, v in flatten(params).items()}
    tensors.update({f"opt.{i:05d}": np.require(v, requirements="C") for i, v in enumerate(opt_leaves)})
    metadata = {"format": STATE_FORMAT, "meta": json.dumps(meta)}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def load_state(path: Path) -> tuple[GPT2Config, Params, list[np.ndarray], dict]:
    """Inverse of :func:`save_state` (arrays copied out of the memory map)."""
    tensors, metadata = npgpt_format.read_safetensors(path)
    if metadata.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not an npgpt training state; delete it or use another --out")
    meta = json.loads(metadata["meta"])
    config = GPT2Config.from_dict(meta["config"])
    flat = {k.removeprefix("params."): np.array(v) for k, v in tensors.items() if k.startswith("params.")}
    opt_names = sorted(k for k in tensors if k.startswith("opt."))
    return config, unflatten(flat, config, str(path)), [np.array(tensors[k]) for k in opt_names], meta


def plot_losses(history: dict[str, list], path: Path) -> None:
    """Training loss per step and held-out loss per evaluation, as a PNG (no pyplot: a library
    must not switch the caller's matplotlib backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(history["step"], history["loss"], lw=0.8, label="train")
    if history["val_step"]:
        ax.plot(history["val_step"], history["val_loss"], "o-", ms=3, label="held-out")
    ax.set(xlabel="step", ylabel="loss (nats/token)", title="npgpt training")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.getvalue())


# --- the driver ----------------------------------------------------------------------------

def train(
    data: str | Path,
    out: str | Path,
    *,
    init: str | Path | None = None,
    n_layer: int | None = None,
    n_embd: int | None = None,
    n_head: int | None = None,
    n_ctx: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    seq_len: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    resume: bool = False,
    eval_interval: int | None = None,
    eval_batches: int | None = None,
    checkpoint_interval: int | None = None,
    grad_accum: int | None = None,
    warmup: int | None = None,
    weight_decay: float | None = None,
    clip: float | None = None,
    val_fraction: float | None = None,
    model_parallel: int = 1,
    mesh: Any = None,
    progress: Callable[[Progress], None] | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train on ``data`` (a text file, a folder of them, or a uint16 ``.bin`` token file) and
    write checkpoints to ``out``.

    The model comes from ``init`` (see :func:`load_init`) or is a fresh one of the given shape
    (defaults: ``SCRATCH``, with GPT-2's vocabulary). One step is one AdamW update on
    ``grad_accum * batch_size`` windows of ``seq_len`` tokens (default ``min(256, n_ctx)``);
    the learning rate warms up over ``warmup`` steps (default ``min(100, steps // 10)``) then
    decays along a cosine to ``lr / 10``. Settings left ``None`` take ``DEFAULTS`` (or, when
    resuming, the checkpoint's values; an explicit different value is refused, except a larger
    ``steps``, which extends the run and stretches the cosine to the new end).

    Every ``eval_interval`` steps the loss on the held-out last ``val_fraction`` of the tokens
    is measured; every ``checkpoint_interval`` steps (default:
    ``eval_interval``) and at the end ``out`` is updated.

    ``resume=True`` continues from ``out``'s checkpoint if there is one (the model then comes
    from the checkpoint) and starts fresh otherwise, so one command survives restarts.
    ``stop_after`` ends the run, checkpointed, after that step (as a kill right after a
    checkpoint would). Devices: all of ``jax.devices()``, ``model_parallel`` of them per model
    replica, or an explicit ``mesh`` from :func:`npgpt.train.sharding.make_mesh`.
    """
    out = Path(out)
    state_path = out / STATE_FILE
    if state_path.exists() and not resume:
        raise NpgptError(f"{out} already holds a training run; pass --resume to continue it "
                         "or choose another --out")
    given = {"batch_size": batch_size, "seq_len": seq_len, "grad_accum": grad_accum, "lr": lr,
             "warmup": warmup, "weight_decay": weight_decay, "clip": clip, "seed": seed,
             "val_fraction": val_fraction, "eval_interval": eval_interval, "eval_batches": eval_batches,
             "checkpoint_interval": checkpoint_interval}
    for name, value in {"steps": steps, "batch_size": batch_size, "grad_accum": grad_accum, "seq_len": seq_len,
                        "eval_interval": eval_interval, "checkpoint_interval": checkpoint_interval}.items():
        if value is not None and value < 1:
            raise NpgptError(f"{name} must be at least 1, got {value}")

    saved = load_state(state_path) if resume and state_path.exists() else None
    if saved is not None:
        config, params, opt_leaves, meta = saved
        settings = _resumed_settings(meta["settings"], given)
        steps = meta["steps"] if steps is None else steps
    else:
        steps = DEFAULT_STEPS if steps is None else steps
        config, params = model_config(init, n_layer, n_embd, n_head, n_ctx)
        settings = _new_settings(given, config, steps)
        params = init_params(config, settings["seed"]) if params is None else params
        opt_leaves, meta = None, {"step": 0, "history": {"step": [], "loss": [], "val_step": [], "val_loss": []}}
    batch_size, seq_len, grad_accum, seed = (settings[k] for k in ("batch_size", "seq_len", "grad_accum", "seed"))
    if seq_len > config.n_ctx:
        raise NpgptError(f"--seq-len {seq_len} exceeds the model's context of {config.n_ctx} tokens")
    out.mkdir(parents=True, exist_ok=True)
    train_tokens, val = _prepare_data(data, out, config, settings)
    mesh = _check_mesh(mesh if mesh is not None else S.make_mesh(model=model_parallel), config, batch_size)

    opt = optimizer(settings["lr"], steps, settings["warmup"],
                    weight_decay=settings["weight_decay"], clip=settings["clip"])
    lr_at = schedule(settings["lr"], steps, settings["warmup"])
    params = S.shard_params(params, mesh)
    template = opt.init(params)  # zeros laid out like the params they track
    opt_state = _place_opt_state(opt_leaves, template, mesh)
    rng = np.random.default_rng([seed, 1])  # batches; init_params(seed) has its own stream
    if saved is not None:
        rng.bit_generator.state = meta["rng"]

    train_step = make_train_step(opt, config, donate=True)
    eval_loss = make_eval_loss(config)
    history, step = meta["history"], meta["step"]
    end = steps if stop_after is None else min(steps, stop_after)
    tokens_per_step = grad_accum * batch_size * seq_len
    eval_interval = settings["eval_interval"]
    checkpoint_interval = settings["checkpoint_interval"] or eval_interval
    rates = []
    while step < end:
        t0 = time.perf_counter()
        batch = D.random_batch(train_tokens, (grad_accum, batch_size), seq_len, rng)
        params, opt_state, metrics = train_step(params, opt_state, S.shard_batch(batch, mesh, axis=1))
        loss = float(metrics["loss"])  # waits for the step: the timing below is honest
        rate = tokens_per_step / (time.perf_counter() - t0)
        rates.append(rate)
        step += 1
        history["step"].append(step)
        history["loss"].append(loss)
        val_loss = None
        if len(val) and (step % eval_interval == 0 or step == steps):
            val_loss = _mean_loss(eval_loss, params, val, mesh)
            history["val_step"].append(step)
            history["val_loss"].append(val_loss)
        checkpoint = step % checkpoint_interval == 0 or step == end
        if checkpoint:
            state_meta = {"step": step, "history": history, "rng": rng.bit_generator.state,
                          "settings": settings, "config": config.to_dict(), "steps": steps}
            _checkpoint(out, config, params, opt_state, state_meta)
        if progress is not None:
            progress(Progress(step, steps, loss, float(lr_at(step - 1)),
                              float(metrics["grad_norm"]), rate, val_loss, checkpoint))

    return TrainResult(config, S.to_host(params), step, history,
                       float(np.median(rates[1:])) if len(rates) > 1 else 0.0, out)


def _new_settings(given: dict, config: GPT2Config, steps: int) -> dict:
    settings = {k: {**DEFAULTS, **MONITORING}[k] if v is None else v for k, v in given.items()}
    settings["seq_len"] = given["seq_len"] or min(256, config.n_ctx)
    settings["warmup"] = min(100, steps // 10) if given["warmup"] is None else given["warmup"]
    return settings


def _prepare_data(data: str | Path, out: Path, config: GPT2Config, settings: dict) -> tuple[np.ndarray, np.ndarray]:
    """Training tokens (memory-mapped) and the fixed held-out windows."""
    tokens = D.load_tokens(data, out)
    if int(tokens.max()) >= config.n_vocab:  # out-of-range ids would silently gather garbage
        raise NpgptError(f"{data}: token id {int(tokens.max())} is outside the model's vocabulary "
                         f"of {config.n_vocab}")
    try:
        train_tokens, val_tokens = D.split(tokens, settings["val_fraction"])
    except ValueError as e:
        raise NpgptError(str(e)) from None
    seq_len = settings["seq_len"]
    if len(train_tokens) <= seq_len:
        raise NpgptError(f"{data}: {len(train_tokens)} training tokens, too few for --seq-len {seq_len}; "
                         "use a shorter --seq-len or more text")
    return train_tokens, D.eval_windows(val_tokens, settings["batch_size"], seq_len, settings["eval_batches"])


def _check_mesh(mesh: Any, config: GPT2Config, batch_size: int) -> Any:
    try:
        S.check_divisible(config.n_head, config.n_embd, mesh)
        if batch_size % mesh.shape["data"]:
            raise ValueError(f"--batch-size {batch_size} must be a multiple of the "
                             f"{mesh.shape['data']} data-parallel devices")
    except ValueError as e:
        raise NpgptError(str(e)) from None
    return mesh


def _resumed_settings(saved: dict, given: dict) -> dict:
    """The checkpoint's settings; an explicit different value is an error, not silently used
    (monitoring settings may change)."""
    for key in DEFAULTS:
        if given[key] is not None and given[key] != saved[key]:
            raise NpgptError(
                f"cannot resume with {key}={given[key]}: the run in --out used {saved[key]}; "
                "pass the same value or start a new --out"
            )
    return {**MONITORING, **saved, **{k: given[k] for k in MONITORING if given[k] is not None}}


def _place_opt_state(leaves: list[np.ndarray] | None, template: Any, mesh: Any) -> Any:
    """Optimiser state on the mesh: moments sharded like their params, counters replicated.

    ``leaves`` (from a checkpoint) replace the template's zeros, after a shape check.
    """
    ref, treedef = jax.tree.flatten(template)
    if leaves is None:
        leaves = [np.asarray(x) for x in ref]
    if len(leaves) != len(ref) or any(a.shape != b.shape for a, b in zip(leaves, ref, strict=False)):
        raise CheckpointError("the optimiser state in the checkpoint does not match this "
                              "optimiser; start a new --out")
    replicated = S.NamedSharding(mesh, S.P())

    def place(x, r):
        sharding = r.sharding if isinstance(r.sharding, S.NamedSharding) else replicated
        return S.put(np.asarray(x, dtype=r.dtype), sharding)

    return jax.tree.unflatten(treedef, [place(x, r) for x, r in zip(leaves, ref, strict=True)])


def _mean_loss(eval_loss, params: Params, windows: np.ndarray, mesh: Any) -> float:
    return float(np.mean([float(eval_loss(params, S.shard_batch(b, mesh))) for b in windows]))


def _checkpoint(out: Path, config: GPT2Config, params: Params, opt_state: Any, meta: dict) -> None:
    host_params = S.to_host(params)  # on several hosts: a collective, so every process joins
    host_opt = S.to_host(jax.tree.leaves(opt_state))
    if jax.process_index() != 0:
        return
    save_state(out / STATE_FILE, host_params, host_opt, meta)  # the resume point, first
    npgpt_format.save(out / MODEL_FILE, config, host_params)
    plot_losses(meta["history"], out / PLOT_FILE)
