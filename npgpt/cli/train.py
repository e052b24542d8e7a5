"""``npgpt train``: a thin typer command over :func:`npgpt.train.loop.train` and its ``TrainSettings``.

Imports nothing heavy at module level, so registering the command costs the CLI nothing; JAX
loads when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import NpgptError

_MODEL = "Model"
_RUN = "Optimisation"
_SCALE = "Devices and hosts"


def train_command(
    data: Annotated[Path, typer.Argument(
        help="Text file, folder of text files, or uint16 .bin token file.", show_default=False)],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Run folder: model.safetensors, train_state.safetensors, loss.png.",
        show_default=False)],
    init: Annotated[str | None, typer.Option(
        help="Start from this model: a name (e.g. gpt2) or an npgpt/Hugging Face path.",
        rich_help_panel=_MODEL)] = None,
    n_layer: Annotated[int | None, typer.Option(
        help="From scratch: layers (default 6).", rich_help_panel=_MODEL, show_default=False)] = None,
    n_embd: Annotated[int | None, typer.Option(
        help="From scratch: width (default 384).", rich_help_panel=_MODEL, show_default=False)] = None,
    n_head: Annotated[int | None, typer.Option(
        help="From scratch: attention heads (default 6).", rich_help_panel=_MODEL, show_default=False)] = None,
    n_ctx: Annotated[int | None, typer.Option(
        help="From scratch: context length (default 256).", rich_help_panel=_MODEL, show_default=False)] = None,
    steps: Annotated[int | None, typer.Option(
        help="Optimiser steps in total (default 1000; with --resume: the run's).", rich_help_panel=_RUN,
        show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Windows per micro-batch (default 8).", rich_help_panel=_RUN, show_default=False)] = None,
    seq_len: Annotated[int | None, typer.Option(
        help="Tokens per window (default min(256, n_ctx)).", rich_help_panel=_RUN, show_default=False)] = None,
    lr: Annotated[float | None, typer.Option(
        help="Peak learning rate (default 3e-4).", rich_help_panel=_RUN, show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed of the init and the batches (default 0).", rich_help_panel=_RUN, show_default=False)] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue the run in --out exactly where its last checkpoint left it.", rich_help_panel=_RUN)] = False,
    grad_accum: Annotated[int | None, typer.Option(
        help="Micro-batches per step (default 1).", rich_help_panel=_RUN, show_default=False)] = None,
    warmup: Annotated[int | None, typer.Option(
        help="Warm-up steps (default min(100, steps/10)).", rich_help_panel=_RUN, show_default=False)] = None,
    eval_interval: Annotated[int | None, typer.Option(
        help="Held-out loss and checkpoint every N steps (default 100).", rich_help_panel=_RUN,
        show_default=False)] = None,
    val_fraction: Annotated[float | None, typer.Option(
        help="Hold out the last part of the tokens for the held-out loss (default 0.1).", rich_help_panel=_RUN,
        show_default=False)] = None,
    model_parallel: Annotated[int, typer.Option(
        help="Devices per model replica (tensor parallel); the rest split the batch.",
        rich_help_panel=_SCALE)] = 1,
    distributed: Annotated[bool, typer.Option(
        help="Multi-host: join the cluster JAX detects (SLURM, Open MPI, Kubernetes, TPU).",
        rich_help_panel=_SCALE)] = False,
    coordinator: Annotated[str | None, typer.Option(
        help="Multi-host: HOST:PORT of process 0.", rich_help_panel=_SCALE)] = None,
    num_processes: Annotated[int | None, typer.Option(
        help="Multi-host: number of processes.", rich_help_panel=_SCALE)] = None,
    process_id: Annotated[int | None, typer.Option(
        help="Multi-host: this process's rank.", rich_help_panel=_SCALE)] = None,
) -> None:
    """Train or fine-tune GPT-2 on your text, with JAX (CPU, GPU or TPU).

    Example (fine-tune GPT-2 small on a book for 500 steps):
    `npgpt train book.txt --out runs/book --init gpt2 --steps 500 --lr 1e-4`

    From scratch: --n-layer 6 --n-embd 384 --n-head 6 --n-ctx 256 instead of --init.
    Interrupted? Run the same command with --resume.
    """
    try:
        import jax
        import optax  # noqa: F401
    except ImportError:
        raise NpgptError("npgpt train needs JAX and optax: pip install 'npgpt[train]'") from None
    from ..train import sharding

    if distributed or coordinator or num_processes is not None or process_id is not None:
        sharding.init_distributed(coordinator, num_processes, process_id)
    from ..train.loop import train
    from ..train.settings import TrainSettings

    settings = TrainSettings(
        init=init, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_ctx=n_ctx, steps=steps,
        batch_size=batch_size, seq_len=seq_len, lr=lr, seed=seed, grad_accum=grad_accum, warmup=warmup,
        eval_interval=eval_interval, val_fraction=val_fraction,
    )
    with _ProgressBar(show=jax.process_index() == 0) as bar:
        try:
            result = train(data, out, settings, resume=resume, model_parallel=model_parallel, progress=bar.update)
        except KeyboardInterrupt:
            saved = f"the last checkpoint is step {bar.saved}" if bar.saved else "no checkpoint was written yet"
            raise NpgptError(f"interrupted at step {bar.step}; {saved}; "
                             "run the same command with --resume to continue") from None
    if jax.process_index() == 0:
        val = result.history["val_loss"]
        tail = f", held-out loss {val[-1]:.4f}" if val else ""
        typer.echo(f"step {result.step}: loss {result.history['loss'][-1]:.4f}{tail}, "
                   f"{result.tokens_per_s:,.0f} tokens/s; model in {out / 'model.safetensors'}")


class _ProgressBar:
    """A rich progress bar fed by ``train``'s progress callback: step, loss, tokens/s."""

    def __init__(self, show: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.step, self.saved, self.val = 0, 0, None
        self._bar = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[val]}"),
            TextColumn("{task.fields[rate]} tok/s"), TimeRemainingColumn(),
            disable=not show,
        )
        self._task = self._bar.add_task("train", total=None, loss="-", val="", rate="-")

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        if self._bar.live.is_started:
            self._bar.stop()

    def update(self, p) -> None:  # p: npgpt.train.loop.Progress
        if not self._bar.live.is_started:  # shown from the first step, not over setup errors
            self._bar.start()
        self.step = p.step
        if p.checkpoint:
            self.saved = p.step
        if p.val_loss is not None:
            self.val = p.val_loss
        self._bar.update(
            self._task, completed=p.step, total=p.steps, loss=f"{p.loss:.4f}",
            val="" if self.val is None else f"held-out {self.val:.4f}", rate=f"{p.tokens_per_s:,.0f}",
        )
