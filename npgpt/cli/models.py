"""``npgpt download``, ``convert``, ``info``, ``list`` and ``rm``: getting, converting, inspecting and removing
checkpoints. What is in the cache and how to remove it is :mod:`npgpt.registry`'s to know; this only prints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from ..errors import NpgptError
from .options import (
    MODEL_ENV,
    Interrupted,
    JsonOpt,
    Terminated,
    console,
    dtype_value,
    model_value,
    name_value,
    path_value,
    print_json,
    print_notice,
    print_table,
    progress_bar,
    repo_value,
    revision_value,
)


def download(
    name: Annotated[
        str | None, typer.Argument(callback=name_value, help="124M, 355M, 774M or 1558M (OpenAI's files).")
    ] = None,
    hf: Annotated[
        str | None,
        typer.Option(
            "--hf",
            callback=repo_value,
            help="A Hugging Face GPT-2 repo id, e.g. openai-community/gpt2 "
            "or distilbert/distilgpt2 (safetensors, shards or "
            "pytorch_model.bin).",
        ),
    ] = None,
    revision: Annotated[
        str | None, typer.Option(callback=revision_value, help="Branch, tag or commit of the --hf repo.")
    ] = None,
) -> None:
    """Download GPT-2 weights into the cache and convert them once.

    The cache: `$NPGPT_HOME`; unset or empty: $XDG_CACHE_HOME/npgpt, else ~/.cache/npgpt.

    Example: npgpt download 124M  or  npgpt download --hf openai-community/gpt2
    """
    from rich.progress import BarColumn, DownloadColumn, TaskID, TransferSpeedColumn

    from .. import download as dl

    if (name is None) == (hf is None):
        raise NpgptError("give a model NAME (124M, 355M, 774M, 1558M) or --hf REPO, not both or neither")
    if revision is not None and hf is None:  # it was ignored: OpenAI's files have no revisions
        raise NpgptError(f"--revision {revision} is for a --hf repo; OpenAI's {name} has one version: drop --revision")
    with progress_bar(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn()
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(filename: str, done: int, total: int | None) -> None:
            if filename not in tasks:
                tasks[filename] = bar.add_task(filename, total=total)
            bar.update(tasks[filename], completed=done, total=total)

        try:
            if hf is not None:
                from huggingface_hub.utils import logging as hf_logging

                hf_logging.set_verbosity_error()  # its retry warnings would bury our one-line error
                path = dl.download_hf(hf, revision=revision, progress=progress)
            elif name is not None:  # one of the two, checked above
                path = dl.download_openai(name, progress=progress)
        except KeyboardInterrupt as e:  # what arrived is kept (npgpt's .part files, the Hub's .incomplete ones)
            how, signum = ("stopped by SIGTERM", e.signum) if isinstance(e, Terminated) else ("interrupted (Ctrl-C)", 2)
            raise Interrupted(f"download {how}; run the same command again to resume it", signum) from None
    console().print(Text(f"saved {path}"))


def convert(
    src: Annotated[
        str,
        typer.Argument(
            callback=model_value,
            help="Any checkpoint: npgpt file; HF directory (safetensors, shards or "
            "pytorch_model.bin); nanoGPT ckpt.pt; OpenAI directory; llm.c .bin; "
            ".gguf; or a model name (bundled, 124M, a downloaded HF repo).",
        ),
    ],
    dst: Annotated[
        Path,
        typer.Argument(
            parser=path_value, help="Output file (npgpt, llmc, gguf) or directory (hf, hf-sharded, openai)."
        ),
    ],
    to: Annotated[str, typer.Option(help="npgpt, hf, hf-sharded, openai, llmc or gguf.")] = "npgpt",
    dtype: Annotated[
        str,
        typer.Option(
            callback=dtype_value,
            help="Storage: float32; float16 (npgpt, gguf), bfloat16 (llmc, gguf), q8_0 (gguf); llama.cpp's f16, bf16 "
            "too.",
        ),
    ] = "float32",
    max_shard_size: Annotated[
        str | None, typer.Option(help="Largest shard for --to hf-sharded, e.g. 500MB (default 2GB).")
    ] = None,
) -> None:
    """Convert a checkpoint between formats.

    Example: npgpt convert ~/models/gpt2-hf gpt2.safetensors --to npgpt
    """
    from ..formats import CARRY_CHAT_TEMPLATE, chat_template
    from ..formats import convert as _convert
    from ..registry import resolve

    if dst.exists() and not dst.is_file() and not dst.is_dir():  # /dev/full, a FIFO: never written through
        raise NpgptError(f"cannot write {dst}: it is not a regular file; give the path of a file or folder to write")
    path, _ = resolve(src)  # a path as it is, or a name as --model takes it
    wrote = _convert(path, dst, fmt=to, dtype=dtype, max_shard_size=max_shard_size)
    if to not in CARRY_CHAT_TEMPLATE and (template := chat_template(path)) is not None:
        print_notice(
            f"{path}: the model's chat template ({template[0]}) is not in {wrote}: {to} files have no place for one; "
            f"--to {', '.join(CARRY_CHAT_TEMPLATE)} carry it"
        )
    console().print(Text(f"wrote {wrote}"))


def info(
    model: Annotated[
        str | None,
        typer.Argument(
            callback=model_value, envvar=MODEL_ENV, help="Path or name (or -m); default: the default model."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a model's config, parameter count, format, and the file it is read from with its size.

    Example: npgpt info 124M
    """
    from rich.table import Table

    from ..formats import detect, load_checkpoint, model_files
    from ..registry import resolve

    path, notice = resolve(model)
    config, _ = load_checkpoint(path)
    files = model_files(path)  # a training run's folder also holds its optimizer state: not the model
    size = sum(f.stat().st_size for f in files)
    # the name --model takes (a script reads it); the table adds what the bundled model is
    name = model or ("bundled" if notice else str(path))
    if as_json:
        print_json(
            {
                "model": name,
                "file": str(files[0]),
                "files": [str(f) for f in files],
                "format": detect(path),
                "size_bytes": size,
                "n_params": config.n_params,
                "config": config.to_dict(),
                "notice": notice,
            }
        )
        return
    table = Table(show_header=False, box=None)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    about = " (npgpt's own, trained on the King James Bible)" if notice and not model else ""
    table.add_row("model", Text(name + about))
    table.add_row("file" if len(files) == 1 else "files", Text("\n".join(map(str, files))))
    table.add_row("format", detect(path))
    table.add_row("size on disk", f"{size / 1e6:.1f} MB ({size:,} bytes)")
    table.add_row("parameters", f"{config.n_params:,}")
    for k, v in config.to_dict().items():
        table.add_row(k, Text(str(v)))
    if notice:
        table.add_row("note", Text(notice))
    print_table(table)


def list_command(as_json: JsonOpt = False) -> None:
    """List the downloaded models in the cache (`$NPGPT_HOME`; unset or empty: $XDG_CACHE_HOME/npgpt, else
    ~/.cache/npgpt).

    Example: npgpt list, then npgpt rm 355M to free its disk space
    """
    from rich.table import Table

    from ..registry import cached_models, home, home_is_no_folder

    if (why := home_is_no_folder()) is not None:  # listed as empty, as if nothing had been downloaded yet
        raise NpgptError(why)
    models = cached_models()
    if as_json:
        print_json(
            {
                "home": str(home()),
                "models": [
                    {"name": c.name, "source": c.source, "format": c.format, "size_bytes": c.size, "path": str(c.path)}
                    for c in models
                ],
            }
        )
        return
    if not models:
        console().print(
            Text(f"no models downloaded in {home()}; run `npgpt download 124M` (the bundled model is always available)")
        )
        return
    table = Table("name", "source", "format", "size", box=None)
    table.add_column("path", overflow="fold")
    for c in models:
        table.add_row(Text(c.name), c.source, Text(c.format), f"{c.size / 1e6:,.1f} MB", Text(str(c.path)))
    print_table(table)


def rm_command(
    names: Annotated[
        list[str],
        typer.Argument(
            callback=name_value,
            metavar="name",
            help="Names from `npgpt list`: 124M, ORG/NAME… (several: all of them, or none if one is not there).",
            show_default=False,
        ),
    ],
) -> None:
    """Remove downloaded models from the cache.

    Example: npgpt rm 355M  or  npgpt rm 355M openai-community/gpt2
    """
    from ..registry import cached_folders, remove_folders

    # Every name is checked before anything is deleted: `npgpt rm 355M nope` removed 355M, then stopped at nope, a
    # cache half emptied by a typo (Ollama's rm does so). A name given twice, or two names of one model (gpt2, 124M),
    # are removed once.
    folders: dict[Path, None] = {}
    for name in dict.fromkeys(names):
        try:
            folders.update(dict.fromkeys(cached_folders(name)))
        except NpgptError as e:
            raise NpgptError(f"{e}; nothing was removed" if len(names) > 1 else str(e)) from None
    for folder in remove_folders(list(folders)):
        console().print(Text(f"removed {folder}"))
