"""The ``npgpt`` command line: thin typer commands over the library.

Every user error is one line on stderr and a non-zero exit code, never a traceback
(set NPGPT_DEBUG=1 to see one).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import NpgptError

app = typer.Typer(
    help="GPT-2 in readable NumPy: generate, inspect, download, convert, train, serve.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Checkpoint path or downloaded name (124M…); default: a downloaded GPT-2, else the bundled model.")]  # noqa: E501
BackendOpt = Annotated[str, typer.Option("--backend", help="numpy, jax, torch, cupy or cupynumeric.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Weight storage: float32, float16/bfloat16 (half the memory) or int8 (a quarter); fast with --backend torch.")]  # noqa: E501


def _console(stderr: bool = False):  # noqa: ANN202
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _load(model: str | None, backend: str = "numpy", dtype: str = "float32"):  # noqa: ANN202
    from .api import load

    m = load(model, backend=backend, dtype=dtype)
    if m.notice:
        _console(stderr=True).print(f"[dim]{m.notice}[/dim]", soft_wrap=True)
    return m


@app.command()
def generate(
    prompt: Annotated[str | None, typer.Argument(help="The text to continue.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read prompts from a file, one per line; run as one batch.")] = None,  # noqa: E501
    model: ModelOpt = None,
    backend: BackendOpt = "numpy",
    dtype: DtypeOpt = "float32",
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per prompt.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 = greedy; higher = more random.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample among the k most likely tokens (0 = off).")] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass in (0, 1] (1 = off).")] = 1.0,
    min_p: Annotated[float, typer.Option(help="Drop tokens below min_p × the top probability.")] = 0.0,
    repetition_penalty: Annotated[float, typer.Option(help="> 1 discourages repeats (1 = off).")] = 1.0,
    presence_penalty: Annotated[float, typer.Option(help="OpenAI-style, in [-2, 2].")] = 0.0,
    frequency_penalty: Annotated[float, typer.Option(help="OpenAI-style, in [-2, 2].")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop at this text (repeatable).")] = None,
    n: Annotated[int, typer.Option("-n", help="Completions per prompt.")] = 1,
    stream: Annotated[bool, typer.Option("--stream", help="Print text as it is generated.")] = False,
    echo: Annotated[bool, typer.Option(help="Print the prompt before the completion.")] = True,
) -> None:
    """Continue a prompt.

    Example: `npgpt generate "And God said" --max-new-tokens 40 --temperature 0.8 --seed 1`
    """
    prompts = _prompts(prompt, file)
    if n < 1:
        raise NpgptError(f"-n must be >= 1, got {n}")
    rows = [p for p in prompts for _ in range(n)]
    sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                    min_p=min_p, repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                    frequency_penalty=frequency_penalty, seed=seed, stop=tuple(stop or ()))
    from .sampling import SamplingParams

    SamplingParams(**sampling)  # validate before the (slow) load
    m = _load(model, backend, dtype)
    out = sys.stdout
    if len(rows) == 1 and stream:
        if echo:
            out.write(rows[0])
        for delta in m.stream(rows[0], **sampling):
            out.write(delta)
            out.flush()
        out.write("\n")
        return
    # A batch: with --stream each completion is printed as soon as its row finishes.
    texts = [""] * len(rows)
    for ev in m.events(rows, **sampling):
        texts[ev.row] += ev.text
        if stream and ev.finish_reason:
            _print_completion(ev.row, rows, texts, echo)
    if not stream:
        for i in range(len(rows)):
            _print_completion(i, rows, texts, echo)


def _print_completion(i: int, rows: list[str], texts: list[str], echo: bool) -> None:
    if len(rows) > 1:
        sys.stdout.write(f"--- {i} ---\n")
    sys.stdout.write((rows[i] if echo else "") + texts[i] + "\n")
    sys.stdout.flush()


def _prompts(prompt: str | None, file: Path | None) -> list[str]:
    if (prompt is None) == (file is None):
        raise NpgptError("give a PROMPT or --file FILE (one prompt per line), not both or neither")
    if file is not None:
        try:
            lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as e:
            raise NpgptError(f"cannot read prompts from {file}: {e.strerror}") from None
        if not lines:
            raise NpgptError(f"{file} has no prompts; put one prompt per line")
        return lines
    if not prompt:
        raise NpgptError("the prompt is empty; give some text to continue")
    return [prompt]


@app.command()
def download(
    name: Annotated[str | None, typer.Argument(help="124M, 355M, 774M or 1558M (OpenAI's files).")] = None,
    hf: Annotated[str | None, typer.Option("--hf", help="A Hugging Face repo id, e.g. openai-community/gpt2.")] = None,  # noqa: E501
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit of the --hf repo.")] = None,
) -> None:
    """Download GPT-2 weights into the cache (`$NPGPT_HOME`, default ~/.cache/npgpt) and convert them once.

    Example: `npgpt download 124M`  or  `npgpt download --hf openai-community/gpt2`
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from . import download as dl

    if (name is None) == (hf is None):
        raise NpgptError("give a model NAME (124M, 355M, 774M, 1558M) or --hf REPO, not both or neither")
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=_console(stderr=True), transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(filename: str, done: int, total: int | None) -> None:
            if filename not in tasks:
                tasks[filename] = bar.add_task(filename, total=total)
            bar.update(tasks[filename], completed=done, total=total)

        if hf:
            from huggingface_hub.utils import logging as hf_logging

            hf_logging.set_verbosity_error()  # its retry warnings would bury our one-line error
            path = dl.download_hf(hf, revision=revision, progress=progress)
        else:
            path = dl.download_openai(name, progress=progress)
    _console().print(f"saved {path}")


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="Any checkpoint: npgpt file, HF directory, OpenAI directory.")],
    dst: Annotated[Path, typer.Argument(help="Output file (npgpt) or directory (hf, openai).")],
    to: Annotated[str, typer.Option(help="npgpt, hf or openai.")] = "npgpt",
    dtype: Annotated[str, typer.Option(help="float32 or float16 storage (npgpt format only).")] = "float32",
) -> None:
    """Convert a checkpoint between formats.

    Example: `npgpt convert ~/models/gpt2-hf gpt2.safetensors --to npgpt`
    """
    from .formats import convert as _convert

    _console().print(f"wrote {_convert(src, dst, fmt=to, dtype=dtype)}")


@app.command()
def info(model: Annotated[str | None, typer.Argument(help="Path or name; default: the default model.")] = None) -> None:  # noqa: E501
    """Show a model's config, parameter count and file.

    Example: `npgpt info 124M`
    """
    from rich.table import Table

    from .download import resolve
    from .formats import detect, load_checkpoint

    path, notice = resolve(model)
    config, _ = load_checkpoint(path)
    table = Table(show_header=False, box=None)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("model", model or ("bundled (npgpt's own, trained on the King James Bible)" if notice else str(path)))
    table.add_row("file", str(path))
    table.add_row("format", detect(path))
    size = sum(f.stat().st_size for f in ([path] if path.is_file() else path.iterdir()) if f.is_file())
    table.add_row("size on disk", f"{size / 1e6:.1f} MB")
    table.add_row("parameters", f"{config.n_params:,}")
    for k, v in config.to_dict().items():
        table.add_row(k, str(v))
    if notice:
        table.add_row("note", notice)
    _console().print(table)


@app.command()
def tokenize(text: Annotated[str, typer.Argument(help="Text to split into GPT-2 tokens.")],
             ids_only: Annotated[bool, typer.Option("--ids", help="Print only the ids.")] = False) -> None:
    """Show how GPT-2 splits text into tokens, with their ids.

    Example: `npgpt tokenize "Hello, world! 👋"`
    """
    from rich.text import Text

    from .tokenizer import Tokenizer

    tok = Tokenizer()
    ids = tok.encode(text)
    console = _console()
    if ids_only:
        console.print(" ".join(map(str, ids)))
        return
    colours = ["on dark_blue", "on dark_green", "on dark_red", "on dark_magenta", "on grey30"]
    line = Text()
    for i, t in enumerate(ids):
        line.append(_token_text(tok.token_bytes(t)), style=colours[i % len(colours)])
    console.print(line)
    console.print(" ".join(f"{t}" for t in ids))
    console.print(f"[dim]{len(ids)} tokens, {len(text)} characters[/dim]")


def _token_text(piece: bytes) -> str:
    """A token's text; a token holding part of a UTF-8 character shows its bytes (⟨f0 9f⟩)."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "⟨" + " ".join(f"{b:02x}" for b in piece) + "⟩"


@app.command("next")
def next_(
    prompt: Annotated[str, typer.Argument(help="Text whose next token to predict.")],
    k: Annotated[int, typer.Option("-k", help="How many candidates to show.")] = 10,
    model: ModelOpt = None,
    backend: BackendOpt = "numpy",
    dtype: DtypeOpt = "float32",
) -> None:
    """Show the k most likely next tokens as a bar chart: the model made visible.

    Example: `npgpt next "The capital of France is" -k 5`
    """
    if k < 1:
        raise NpgptError(f"-k must be >= 1, got {k}")
    m = _load(model, backend, dtype)
    console = _console()
    width = 40
    for _id, text, p in m.next_tokens(prompt, k=k):
        bar = "█" * max(1, round(p * width)) if p >= 0.5 / width else "▏"
        console.print(f"{text!r:>16} {_id:>6}  [cyan]{bar:<{width}}[/cyan] {p:7.2%}")


def _register_optional() -> None:
    """Commands that live beside their subsystems (their heavy imports stay inside the command)."""
    import importlib

    for module, attr, name in [("npgpt.train.cli", "train_command", "train"),
                               ("npgpt.bench", "bench_command", "bench"),
                               ("npgpt.evaluate", "eval_command", "eval"),
                               ("npgpt.server.cli", "serve_command", "serve")]:
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
        app.command(name)(fn)


_register_optional()


def main() -> None:
    """Entry point: run the app, turning user errors into one line and an exit code."""
    try:
        app()
    except NpgptError as e:
        _console(stderr=True).print(f"[red]error:[/red] {e}", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # a bug, not bad input: still one line unless debugging
        if os.environ.get("NPGPT_DEBUG"):
            raise
        _console(stderr=True).print(f"[red]internal error:[/red] {type(e).__name__}: {e} "
                                    "(set NPGPT_DEBUG=1 for a traceback)", soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
