"""``npgpt download``, ``npgpt convert`` and ``npgpt info``: getting, converting and inspecting checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import NpgptError
from .options import console


def download(
    name: Annotated[str | None, typer.Argument(help="124M, 355M, 774M or 1558M (OpenAI's files).")] = None,
    hf: Annotated[str | None, typer.Option("--hf", help="A Hugging Face GPT-2 repo id, e.g. openai-community/gpt2 "
                                                      "or distilbert/distilgpt2 (safetensors, shards or "
                                                      "pytorch_model.bin).")] = None,
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit of the --hf repo.")] = None,
) -> None:
    """Download GPT-2 weights into the cache (`$NPGPT_HOME`, default ~/.cache/npgpt) and convert them once.

    Example: `npgpt download 124M`  or  `npgpt download --hf openai-community/gpt2`
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from .. import download as dl

    if (name is None) == (hf is None):
        raise NpgptError("give a model NAME (124M, 355M, 774M, 1558M) or --hf REPO, not both or neither")
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=console(stderr=True), transient=True) as bar:
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
    console().print(f"saved {path}")


def convert(
    src: Annotated[str, typer.Argument(help="Any checkpoint: npgpt file; HF directory (safetensors, shards or "
                                              "pytorch_model.bin); nanoGPT ckpt.pt; OpenAI directory; llm.c .bin; "
                                              ".gguf; or a model name (bundled, 124M, a downloaded HF repo).")],
    dst: Annotated[Path, typer.Argument(help="Output file (npgpt, llmc, gguf) or directory (hf, hf-sharded, "
                                               "openai).")],
    to: Annotated[str, typer.Option(help="npgpt, hf, hf-sharded, openai, llmc or gguf.")] = "npgpt",
    dtype: Annotated[str, typer.Option(
        help="Storage: float32; float16 (npgpt, gguf), bfloat16 (llmc, gguf), q8_0 (gguf).")] = "float32",
    max_shard_size: Annotated[str | None, typer.Option(help="Largest shard for --to hf-sharded, e.g. 500MB "
                                                            "(default 2GB).")] = None,
) -> None:
    """Convert a checkpoint between formats.

    Example: `npgpt convert ~/models/gpt2-hf gpt2.safetensors --to npgpt`
    """
    from ..formats import convert as _convert
    from ..registry import resolve

    path, _ = resolve(src)  # a path as it is, or a name as --model takes it
    console().print(f"wrote {_convert(path, dst, fmt=to, dtype=dtype, max_shard_size=max_shard_size)}")


def info(model: Annotated[str | None, typer.Argument(help="Path or name; default: the default model.")] = None) -> None:
    """Show a model's config, parameter count and file.

    Example: `npgpt info 124M`
    """
    from rich.table import Table

    from ..formats import detect, load_checkpoint
    from ..registry import resolve

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
    console().print(table)
