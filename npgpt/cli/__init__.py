"""The ``npgpt`` command line: thin typer commands over the library.

Every user error is one line on stderr and a non-zero exit code, never a traceback
(set NPGPT_DEBUG=1 to see one). The command modules import only typer and rich at module level;
each command imports the library it needs when it runs, so ``npgpt --help`` stays fast.

- :mod:`.options`  shared options (model, backend, dtype), consoles, model loading
- :mod:`.generate` ``generate``, ``next``, ``tokenize``
- :mod:`.models`   ``download``, ``convert``, ``info``
- :mod:`.train`    ``train``
- :mod:`.bench`    ``bench``
- :mod:`.evaluate` ``eval``
- :mod:`.serve`    ``serve``
- :mod:`.inspect`  ``lens``, ``attention``: looking inside the model
"""

from __future__ import annotations

import os
import sys

import typer

from ..errors import NpgptError
from . import bench, evaluate, generate, inspect, models, serve, train
from .options import console

app = typer.Typer(
    help="GPT-2 in readable NumPy: generate, inspect, download, convert, train, serve.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.command()(generate.generate)
app.command()(models.download)
app.command()(models.convert)
app.command()(models.info)
app.command()(generate.tokenize)
app.command("next")(generate.next_)
app.command("train")(train.train_command)
app.command("bench")(bench.bench_command)
app.command("eval")(evaluate.eval_command)
app.command("serve")(serve.serve_command)
app.command("lens")(inspect.lens_command)
app.command("attention")(inspect.attention_command)


def main() -> None:
    """Entry point: run the app, turning user errors into one line and an exit code."""
    from ..backends import tune_allocator

    tune_allocator()  # process-wide, so only entry points call it, never the library
    try:
        app()
    except NpgptError as e:
        console(stderr=True).print(f"[red]error:[/red] {e}", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # a bug, not bad input: still one line unless debugging
        if os.environ.get("NPGPT_DEBUG"):
            raise
        console(stderr=True).print(f"[red]internal error:[/red] {type(e).__name__}: {e} "
                                   "(set NPGPT_DEBUG=1 for a traceback)", soft_wrap=True)
        sys.exit(2)
