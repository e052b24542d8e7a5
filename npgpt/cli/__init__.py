"""The ``npgpt`` command line: thin typer commands over the library.

Every user error is one line on stderr and a non-zero exit code, never a traceback
(set NPGPT_DEBUG=1 to see one). The command modules import only typer and rich at module level;
each command imports the library it needs when it runs, so ``npgpt --help`` stays fast.

- :mod:`.options`  shared options (model, backend, dtype), consoles, model loading, error printing
- :mod:`.generate` ``generate``, ``next``, ``tokenize``
- :mod:`.chat`     ``chat``
- :mod:`.models`   ``download``, ``convert``, ``info``, ``list``, ``rm``
- :mod:`.train`    ``train``
- :mod:`.bench`    ``bench``
- :mod:`.evaluate` ``eval``, ``score``
- :mod:`.serve`    ``serve``
- :mod:`.inspect`  ``lens``, ``attention``: looking inside the model
- :mod:`.names`    what llama.cpp, Ollama and nanoGPT call npgpt's commands and options, and npgpt's for them
- :mod:`.parsing`  the click command and group that read a command line with them: one-line usage errors
- :mod:`.flags`    the library's messages in the CLI's words (``max_new_tokens`` -> ``--max-new-tokens``)
- :mod:`.commands` the app (every command registered) and the run behind :func:`main`

This module imports nothing but the standard library: a Ctrl-C during the second of imports that follow
(typer, rich, NumPy) is :func:`main`'s to turn into exit 130, and a program importing ``npgpt.cli`` gets its
KeyboardInterrupt as any import gives it.
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> None:
    """Entry point of ``npgpt`` (``python -m npgpt``, ``python -m npgpt.cli``): run the app, turning user errors
    into one line and an exit code."""
    _threads_from_llama_cpp()
    try:  # a second of imports (typer, rich, NumPy) that only the entry point can catch
        from .commands import main as run
    except KeyboardInterrupt:  # Ctrl-C as npgpt starts: a traceback through NumPy's import; silent, as run's own
        sys.exit(130)
    run()


def _threads_from_llama_cpp() -> None:
    """llama.cpp's LLAMA_ARG_THREADS (its -t, read by every llama.cpp tool) as npgpt's way to set its threads,
    OMP_NUM_THREADS, where that is not set: it was ignored, and npgpt ran on every core of a machine the user had
    given 4. Set here, before NumPy is imported, since OpenBLAS reads it when it loads (ONNX Runtime's pool when it
    is made); process-wide, so only the entry point does it. -1 (or empty) is llama.cpp's default: every core. A
    value that is no number of threads: one line, exit 1, as llama.cpp refuses it."""
    import os
    import re

    value = os.environ.get("LLAMA_ARG_THREADS", "").strip()
    if not value or value == "-1" or os.environ.get("OMP_NUM_THREADS", "").strip():
        return
    # ASCII digits only: str.isdigit() also holds for "²", which int() refuses (a traceback), and int() reads other
    # scripts' digits ("٣"), which OpenBLAS would not
    if not re.fullmatch(r"[0-9]+", value) or int(value) == 0:
        shown = re.sub(r"[\x00-\x1f\x7f-\x9f]", lambda m: repr(m[0])[1:-1], value)  # one line, as print_error's
        sys.stderr.write(
            f"error: LLAMA_ARG_THREADS={shown} is not a number of threads; give one >= 1 (or -1: every core)\n"
        )
        sys.exit(1)
    os.environ["OMP_NUM_THREADS"] = str(int(value))


def __getattr__(name: str) -> Any:
    """``npgpt.cli.app``, the typer app, imported when first asked for."""
    if name == "app":
        from .commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
