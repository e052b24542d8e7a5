"""``npgpt train``: a thin typer command over :func:`npgpt.train.loop.train` and its ``TrainSettings``.

Imports nothing heavy at module level, so registering the command costs the CLI nothing; JAX
loads when the command runs. On a terminal the run shows a progress bar; otherwise (``nohup``, a
batch scheduler, ``> log``) it prints a plain line every ``--log-interval`` steps and at each
held-out check, as nanoGPT does. SIGINT (Ctrl-C) and SIGTERM end the run after the current step,
checkpointed, so ``--resume`` continues from the step reached; a second signal stops at once, and so does the
first one before the first step (while the text is tokenised: there is no step to keep).
``--config run.toml`` reads the options from a TOML file (keys are the option names); options
given on the command line override it.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import NpgptError
from .flags import as_flags_in
from .options import PATH, PROMPT_LIMIT, Interrupted, check_out_dir, model_value, path_value, read_text

_MODEL = "Model"
_RUN = "Optimisation"
_LOG = "Monitoring"
_SCALE = "Devices and hosts"
_NOT_IN_CONFIG = ("ctx", "config")


def train_command(
    ctx: typer.Context,
    data: Annotated[
        Path | None,
        typer.Argument(
            parser=path_value,
            help="Text file, folder of text files, or uint16 .bin token file: nanoGPT's train.bin, or its data "
            "folder, holds out its val.bin (or `data` in --config).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            parser=path_value,
            metavar=PATH,
            help="Run folder: model.safetensors, train_state.safetensors, loss.png (required).",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            parser=path_value,
            metavar=PATH,
            help="TOML file of options (keys: the option names, e.g. n_layer = 2, lr = 1e-3); "
            "options on the command line win.",
            show_default=False,
        ),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            callback=model_value,
            help="Start from this model: a name (e.g. gpt2) or an npgpt/Hugging Face path.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    n_layer: Annotated[
        int | None, typer.Option(help="From scratch: layers (default 6).", rich_help_panel=_MODEL, show_default=False)
    ] = None,
    n_embd: Annotated[
        int | None, typer.Option(help="From scratch: width (default 384).", rich_help_panel=_MODEL, show_default=False)
    ] = None,
    n_head: Annotated[
        int | None,
        typer.Option(help="From scratch: attention heads (default 6).", rich_help_panel=_MODEL, show_default=False),
    ] = None,
    n_ctx: Annotated[
        int | None,
        typer.Option(help="From scratch: context length (default 256).", rich_help_panel=_MODEL, show_default=False),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="From scratch: gpt2 (GPT-2's 50,257 tokens, default) or char (one token per character of "
            "the text; saved with the model).",
            rich_help_panel=_MODEL,
            show_default=False,
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            help="Optimiser steps in total (default 1000; with --resume: the run's).",
            rich_help_panel=_RUN,
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Windows per micro-batch (default 8).", rich_help_panel=_RUN, show_default=False)
    ] = None,
    seq_len: Annotated[
        int | None,
        typer.Option(help="Tokens per window (default min(256, n_ctx)).", rich_help_panel=_RUN, show_default=False),
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate (default 3e-4).", rich_help_panel=_RUN, show_default=False)
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of the init and the batches (default 0).", rich_help_panel=_RUN, show_default=False),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(help="Continue the run in --out exactly where its last checkpoint left it.", rich_help_panel=_RUN),
    ] = False,
    grad_accum: Annotated[
        int | None, typer.Option(help="Micro-batches per step (default 1).", rich_help_panel=_RUN, show_default=False)
    ] = None,
    warmup: Annotated[
        int | None,
        typer.Option(help="Warm-up steps (default min(100, steps/10)).", rich_help_panel=_RUN, show_default=False),
    ] = None,
    eval_interval: Annotated[
        int | None,
        typer.Option(
            help="Held-out loss and checkpoint every N steps (default 100).", rich_help_panel=_RUN, show_default=False
        ),
    ] = None,
    eval_batches: Annotated[
        int | None,
        typer.Option(
            help="Batches of --batch-size windows per held-out loss (default 8; nanoGPT's eval_iters).",
            rich_help_panel=_RUN,
            show_default=False,
        ),
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(
            help="Hold out the last part of the tokens for the held-out loss (default 0.1; with nanoGPT's "
            "train.bin and val.bin beside it, val.bin is the held-out text instead).",
            rich_help_panel=_RUN,
            show_default=False,
        ),
    ] = None,
    weight_decay: Annotated[
        float | None,
        typer.Option(
            help="AdamW weight decay of the matrices (default 0.1).", rich_help_panel=_RUN, show_default=False
        ),
    ] = None,
    clip: Annotated[
        float | None,
        typer.Option(
            help="Clip the gradient's global norm to this (default 1.0).", rich_help_panel=_RUN, show_default=False
        ),
    ] = None,
    checkpoint_interval: Annotated[
        int | None,
        typer.Option(
            help="Checkpoint every N steps (default: --eval-interval).", rich_help_panel=_LOG, show_default=False
        ),
    ] = None,
    log_interval: Annotated[
        int | None,
        typer.Option(
            help="Off a terminal: a log line every N steps (default 10).", rich_help_panel=_LOG, show_default=False
        ),
    ] = None,
    model_parallel: Annotated[
        int,
        typer.Option(
            help="Devices per model replica (tensor parallel); the rest split the batch.", rich_help_panel=_SCALE
        ),
    ] = 1,
    distributed: Annotated[
        bool,
        typer.Option(
            help="Multi-host: join the cluster JAX detects (SLURM, Open MPI, Kubernetes, TPU).", rich_help_panel=_SCALE
        ),
    ] = False,
    coordinator: Annotated[
        str | None, typer.Option(help="Multi-host: HOST:PORT of process 0.", rich_help_panel=_SCALE)
    ] = None,
    num_processes: Annotated[
        int | None, typer.Option(help="Multi-host: number of processes.", rich_help_panel=_SCALE)
    ] = None,
    process_id: Annotated[
        int | None, typer.Option(help="Multi-host: this process's rank.", rich_help_panel=_SCALE)
    ] = None,
) -> None:
    """Train or fine-tune GPT-2 on your text, with JAX (CPU, GPU or TPU).

    Example (fine-tune GPT-2 small on a book for 500 steps):
    `npgpt train book.txt --out runs/book --init gpt2 --steps 500 --lr 1e-4`

    From scratch: --n-layer 6 --n-embd 384 --n-head 6 --n-ctx 256 instead of --init;
    add --tokenizer char for a character-level model. Options can come from --config run.toml.
    Interrupted (Ctrl-C, SIGTERM)? The step reached is saved: run the same command with --resume.
    """
    given = {k: v for k, v in locals().items() if k not in _NOT_IN_CONFIG}
    if config is not None:
        given = _with_config(ctx, config, given)
    if given["data"] is not None:  # nanoGPT's `train.py config/x.py`: said before asking for --out, which it lacks
        _refuse_python_config(Path(given["data"]))
    missing = [what for key, what in (("data", "the training text"), ("out", "--out")) if given[key] is None]
    if missing:  # named alone: "give the training text and --out" for a run missing only --out read as both
        keys = "/".join(k for k in ("data", "out") if given[k] is None)
        raise NpgptError(f"give {' and '.join(missing)} (on the command line or as {keys} in --config)")
    check_out_dir(Path(given["out"]))
    from ..train.settings import TrainSettings

    settings = TrainSettings(
        **{
            k: given[k]
            for k in (
                "init",
                "n_layer",
                "n_embd",
                "n_head",
                "n_ctx",
                "tokenizer",
                "steps",
                "batch_size",
                "seq_len",
                "lr",
                "seed",
                "grad_accum",
                "warmup",
                "eval_interval",
                "eval_batches",
                "val_fraction",
                "weight_decay",
                "clip",
                "checkpoint_interval",
                "log_interval",
            )
        }
    )  # every option checked here, before JAX loads
    _run(Path(given["data"]), Path(given["out"]), settings, given)


def _run(data: Path, out: Path, settings: Any, given: dict[str, Any]) -> None:
    try:
        import jax
        import optax  # noqa: F401
    except ImportError:
        raise NpgptError("npgpt train needs JAX and optax: pip install 'npgpt[train]'") from None
    from ..train import sharding

    if (
        given["distributed"]
        or given["coordinator"]
        or given["num_processes"] is not None
        or given["process_id"] is not None
    ):
        sharding.init_distributed(given["coordinator"], given["num_processes"], given["process_id"])
    from ..train.checkpoint import STATE_FILE, state_step
    from ..train.loop import train
    from ..train.settings import KEYWORDS

    lead = jax.process_index() == 0
    report = _ProgressBar(show=lead) if sys.stdout.isatty() else _LogLines(show=lead)
    resumed = given["resume"] and (out / STATE_FILE).is_file()

    def progress(p: Any) -> None:
        stop.started = True  # a step done: a signal now waits for its checkpoint
        report.update(p)

    with report, _StopOnSignal() as stop:
        try:
            result = train(
                data,
                out,
                settings,
                resume=given["resume"],
                model_parallel=given["model_parallel"],
                progress=progress,
                should_stop=stop.requested,
            )
        except KeyboardInterrupt:  # a second signal, or one before the first step: stopped at once
            # exit 128 + the signal that ended it: 143 for SIGTERM (a scheduler's, `kill`'s), 130 for Ctrl-C
            signum = stop.signum or signal.SIGINT
            how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
            if resumed and not stop.started:  # the run's checkpoint is its own, untouched
                raise Interrupted(
                    f"{how} before the first step; the checkpoint in {out} is as it was; "
                    "run the same command to continue",
                    signum,
                ) from None
            # the folder's own state, not this process's count: a resumed run's checkpoint, or one written just now
            at = state_step(Path(out)) or 0
            saved = f"the last checkpoint is step {at}" if at else "no checkpoint was written yet"
            raise Interrupted(
                f"{how} at step {max(report.step, at)}; {saved}; run the same command with --resume to continue", signum
            ) from None
    if result.stopped:
        if lead:
            typer.echo(
                f"stopped by {stop.name} at step {result.step}; checkpoint saved in {out}; "
                "run the same command with --resume to continue",
                err=True,
            )
        raise typer.Exit(128 + stop.signum)
    if lead and not result.tokens_per_s:  # --resume of a run that had reached its --steps
        typer.echo(
            f"the run in {out} already reached step {result.step} of {result.step}; nothing to do "
            "(give --steps above that with --resume to train on); model in "
            f"{out / 'model.safetensors'}"
        )
    elif lead:
        val = result.history["val_loss"]
        tail = (
            f", held-out loss {val[-1]:.4f} on {result.held_out}"
            if val
            else (f" ({as_flags_in(result.no_held_out_loss, KEYWORDS)})" if result.no_held_out_loss else "")
        )
        typer.echo(
            f"step {result.step}: loss {result.history['loss'][-1]:.4f}{tail}, "
            f"{result.tokens_per_s:,.0f} tokens/s; model in {out / 'model.safetensors'}"
        )


def _refuse_python_config(data: Path) -> None:
    """A nanoGPT config (``python train.py config/train_shakespeare_char.py``: a .py file of nothing but
    assignments) given as the training text is refused, not trained on."""
    import re

    if data.suffix != ".py" or not data.is_file():
        return
    try:
        lines = [line for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return  # reading it as training text names the problem
    code = [line for line in lines if not line.lstrip().startswith("#")]
    if code and all(re.match(r"([A-Za-z_]\w*\s*=[^=]|(import|from)\s)", line) for line in code):
        raise NpgptError(
            f"{data} is a Python config file (nanoGPT's), not text to train on; give the text as DATA and the "
            "settings as options (--n-layer 6 --lr 1e-3) or in a TOML file with --config"
        )


def _with_config(ctx: typer.Context, path: Path, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` with each option not typed on the command line taken from the TOML file ``path``.

    Raises NpgptError naming an unreadable file, an unknown key or a value of the wrong type.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    # read as text files are: /dev/zero is refused, not read forever
    text = read_text(path, "--config options", limit=PROMPT_LIMIT, fix="a config file is a few lines of options")
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise NpgptError(f"--config {path}: not valid TOML ({e})") from None
    kinds = _option_types()
    merged = dict(given)
    spelled: dict[str, str] = {}  # option name -> the key that set it
    for key, value in table.items():
        name = _config_name(key, path, given)
        if name in spelled:  # n-layer and n_layer: TOML's two keys, one option (the last one silently won)
            raise NpgptError(f"--config {path}: {spelled[name]!r} and {key!r} are the same option; keep one of them")
        spelled[name] = key
        kind = str if kinds[name] is Path else kinds[name]
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            option = "DATA, the training text" if name == "data" else f"--{name.replace('_', '-')}"  # no --data
            raise NpgptError(
                f"--config {path}: {key} = {value!r} has the wrong type for {option} "
                f"(expected {'text' if kind is str else kind.__name__})"
            )
        if kinds[name] is Path and not value:  # Path("") is ".": the current folder, read or written in its place
            raise NpgptError(f"--config {path}: {key} is an empty path; give a path")
        if kinds[name] is Path:  # no shell reads the file: "~/runs/x" made a folder named "~" (as transformers does)
            value = Path(value).expanduser()
        source = ctx.get_parameter_source(name)
        if source is None or source.name != "COMMANDLINE":  # typed on the command line: it wins
            merged[name] = float(value) if kind is float else value
    return merged


def _config_name(key: str, path: Path, given: dict[str, Any]) -> str:
    """The option a --config key sets: its name (``n_layer``, ``n-layer``), or the one it is on the command line as
    another tool's (nanoGPT's ``max_iters``, ``learning_rate``: --max_iters is --steps there, so here too). NpgptError
    for any other key, naming npgpt's where another tool's means something else (``block_size``: seq_len)."""
    from .names import ACCEPTED, OPTIONS

    name = key.replace("-", "_")
    if name in given:
        return name
    theirs = "--" + name
    known = OPTIONS.get(theirs, ())
    names = [o[2:].replace("-", "_") for o in ((known,) if isinstance(known, str) else known)]
    ours = next((n for n in names if n in given and n not in _NOT_IN_CONFIG), None)
    if ours is not None:
        if theirs in ACCEPTED:
            return ours
        raise NpgptError(f"--config {path}: unknown key {key!r}; npgpt train's is {ours}")
    raise NpgptError(
        f"--config {path}: unknown key {key!r}; use the option names of npgpt train (e.g. n_layer, lr, steps)"
    )


def _option_types() -> dict[str, type]:
    """Each option's value type (``int`` for ``int | None``), from the signature."""
    import typing

    kinds = {}
    for name, hint in typing.get_type_hints(train_command).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        kinds[name] = args[0]
    return kinds


class _StopOnSignal:
    """SIGINT and SIGTERM ask the run to stop after its current step (a second one interrupts at
    once); the previous handlers come back on exit. Outside the main thread (where Python allows no
    handler) nothing is installed.

    Until ``started`` (set once a step is done), a first signal interrupts at once too: there is no step to
    checkpoint yet, and waiting for one kept a Ctrl-C during the tokenisation of a large text waiting until it had
    all been tokenised, JAX had compiled the step and the step had run. What the preparation wrote is its writers'
    to undo (``files.atomic_path``; ``train`` removes a run folder it made)."""

    def __init__(self) -> None:
        self.signum = 0
        self.started = False
        self._asked = False  # a first signal after a step asked for a stop; a second interrupts
        self._old: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def requested(self) -> bool:
        return self.signum != 0

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum  # the latest: the one that ends the run names it and sets its exit code
        if not self.started or self._asked:
            raise KeyboardInterrupt
        self._asked = True

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class _LogLines:
    """Off a terminal: one plain line per logged step (nanoGPT's), flushed at once for ``tail -f``."""

    def __init__(self, show: bool) -> None:
        self.show, self.step, self.saved = show, 0, 0

    def __enter__(self) -> _LogLines:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def update(self, p) -> None:  # p: npgpt.train.loop.Progress
        self.step = p.step
        if p.checkpoint:
            self.saved = p.step
        if not (self.show and p.log):
            return
        line = f"step {p.step}/{p.steps}: loss {p.loss:.4f}, lr {p.lr:.2e}, {p.tokens_per_s:,.0f} tokens/s"
        if p.val_loss is not None:
            line += f", held-out loss {p.val_loss:.4f}"
        if p.checkpoint:
            line += ", checkpoint saved"
        print(line, flush=True)


class _ProgressBar:
    """A rich progress bar fed by ``train``'s progress callback: step, loss, tokens/s."""

    def __init__(self, show: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.step, self.saved, self.val = 0, 0, None
        self._bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[val]}"),
            TextColumn("{task.fields[rate]} tok/s"),
            TimeRemainingColumn(),
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
            self._task,
            completed=p.step,
            total=p.steps,
            loss=f"{p.loss:.4f}",
            val="" if self.val is None else f"held-out {self.val:.4f}",
            rate=f"{p.tokens_per_s:,.0f}",
        )
