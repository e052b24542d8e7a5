"""The ``npgpt`` app: its commands registered, and the run that turns user errors into one line and an exit
code (the package's ``main`` imports this module and calls :func:`main`)."""

from __future__ import annotations

import codecs
import errno
import io
import os
import re
import signal
import sys
import warnings
from typing import Annotated

import typer

from ..errors import NpgptError, NpgptWarning, cut, reason
from . import bench, chat, evaluate, generate, inspect, models, serve, train
from .flags import as_flags
from .options import Interrupted, OutputClosed, Terminated, print_error, raise_terminated
from .parsing import ClickException, Command, Group, UsageError, _output_closed

# Help is rendered with rich markup ("rich"), not Markdown, so a help string shows as written
# ("> 1" is not a block quote); help strings hold no [tags].
app = typer.Typer(
    cls=Group,
    help="GPT-2 in readable NumPy: generate, chat, look inside (lens, attention), download, convert, train, serve.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},  # -h as llama.cpp, Ollama and argparse take it
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        sys.stdout.write(f"npgpt {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print npgpt's version and exit.")
    ] = None,
) -> None:
    """GPT-2 in readable NumPy: generate, chat, look inside (lens, attention), download, convert, train, serve."""


def run_command(
    model: Annotated[
        str, typer.Argument(metavar="model", help="A path or a downloaded name, as -m takes it.", show_default=False)
    ],
    prompt: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="prompt",
            help="Text to continue, its words joined as Ollama joins them; none: a chat.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Ollama's `ollama run MODEL [PROMPT]`: npgpt generate PROMPT -m MODEL, or npgpt chat -m MODEL.

    With a prompt, generate's options go anywhere after run (npgpt generate's help lists them); without, chat's.

    Example: npgpt run 124M "Why is the sky blue?"  or  npgpt run 124M
    """
    # The group writes `run MODEL ...` as generate's or chat's arguments before click sees it (names._ollama_run_args):
    # this command is there for its help and its usage errors, and runs only if that was skipped.
    from .names import _ollama_run

    raise NpgptError(f"npgpt's run is {_ollama_run([model, *(prompt or [])])}")


app.command(cls=Command)(generate.generate)
app.command("chat", cls=Command)(chat.chat_command)
app.command("run", cls=Command)(run_command)
app.command(cls=Command)(models.download)
app.command(cls=Command)(models.convert)
app.command(cls=Command)(models.info)
app.command("list", cls=Command)(models.list_command)
app.command("rm", cls=Command)(models.rm_command)
app.command(cls=Command)(generate.tokenize)
app.command("next", cls=Command)(generate.next_)
app.command("train", cls=Command)(train.train_command)
app.command("bench", cls=Command)(bench.bench_command)
app.command("eval", cls=Command)(evaluate.eval_command)
app.command("score", cls=Command)(evaluate.score_command)
app.command("serve", cls=Command)(serve.serve_command)
app.command("lens", cls=Command)(inspect.lens_command)
app.command("attention", cls=Command)(inspect.attention_command)


_OUTPUT_ERRORS = {errno.ENOSPC, errno.EPIPE, errno.EBADF, errno.EIO, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _escape_unencodable(stream: object) -> None:
    """An output whose encoding lacks some of the text's characters (a latin-1 locale, a Windows pipe in
    cp1252) writes them as escapes (``\\U0001f44b``), as Python writes stderr, instead of failing mid-run
    with UnicodeEncodeError. UTF-8 output, the usual case, is left as it is."""
    if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
        if codecs.lookup(stream.encoding).name != "utf-8":
            stream.reconfigure(errors="backslashreplace")


def main() -> None:
    """Run the app, turning user errors into one line and an exit code (``npgpt.cli.main`` imports this module
    and calls it)."""
    if sys.stdout is None:  # started with stdout closed (`npgpt ... >&-`): nowhere to put results
        print_error("standard output is closed; redirect it to a file (or /dev/null)")
        sys.exit(1)
    from ..backends import tune_allocator

    tune_allocator()  # process-wide, so only entry points call it, never the library
    _escape_unencodable(sys.stdout)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # one a parent set to be ignored (nohup's way) stays so
        signal.signal(signal.SIGTERM, raise_terminated)  # ended as Ctrl-C ends a command: its writes undone, exit 143
    piped = _is_pipe(1)
    try:
        try:
            with warnings.catch_warnings():  # the entry point's, restored on return
                warnings.showwarning = _show_warning
                # standalone_mode=False: click raises its usage errors instead of printing them in a box
                code = app(standalone_mode=False)
        finally:
            sys.stdout.flush()  # a full device reports itself here, not at interpreter exit
    except ClickException as e:  # a command line that does not parse: one line too, with click's exit code (2)
        if not e.format_message().strip():  # `npgpt` alone: the help, already printed, says it all
            sys.exit(e.exit_code)
        message, hint = e.format_message(), ""
        if isinstance(e, UsageError):  # the one pointer to help, however the message ends (a hint names none)
            path = getattr(e, "help_path", None) or (e.ctx.command_path if e.ctx is not None else "npgpt")
            # click's "Missing argument 'src'." loses its full stop before the pointer, a hint's "npgpt X ..." not
            message, hint = re.sub(r"(?<!\.)\.$", "", message), f" (see `{path} --help`)"
        print_error(message + hint)
        sys.exit(e.exit_code)
    except Interrupted as e:
        print_error(str(e))
        sys.exit(e.exit_code)
    except OutputClosed:
        _reader_gone()
    except SystemExit as e:  # help written by typer's own rich console, or by click, to a reader that left
        if e.code == 1 and piped and (_output_closed() or _is_devnull(1)):  # rich points stdout at /dev/null first
            _reader_gone()
        raise
    except NpgptError as e:
        print_error(as_flags(e))
        sys.exit(1)
    except KeyboardInterrupt as e:  # outside a command's run (parsing.Command.invoke says it in one line)
        sys.exit(128 + (e.signum if isinstance(e, Terminated) else signal.SIGINT))
    except typer.Abort:  # click's, for an end of input it was reading: as click, exit 1
        sys.exit(1)
    except OSError as e:  # writing the results failed: stdout on a full disk, a closed pipe or descriptor
        if e.errno == errno.ENAMETOOLONG and e.filename is not None:  # a path typed (text pasted where one goes)
            print_error(f"{cut(os.fsdecode(e.filename))}: the name is too long for a file ({e.strerror})")
            sys.exit(1)
        if e.errno not in _OUTPUT_ERRORS or e.filename is not None:  # a named file is the library's to report
            _internal(e)
        if e.errno == errno.EPIPE:  # the last of the output, written at the flush above, found no reader
            _reader_gone()
        _drop_stdout()
        print_error(f"cannot write the output: {e.strerror or e}")
        sys.exit(1)
    except Exception as e:  # a bug, not bad input: still one line unless debugging
        _internal(e)
    if isinstance(code, int) and code:  # typer.Exit(code), which click returns instead of exiting with it
        sys.exit(code)


def _show_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    """An NpgptWarning as one line, ``warning: ...`` (a checkpoint that loads but that llama.cpp reads
    otherwise, a loss plot that could not be written); other warnings as Python shows them."""
    if issubclass(category, NpgptWarning):
        print_error(str(message), label="warning")
    else:
        _python_showwarning(message, category, *args, **kwargs)  # type: ignore[arg-type]


_python_showwarning = warnings.showwarning


def _internal(e: BaseException) -> None:
    if os.environ.get("NPGPT_DEBUG"):
        raise e
    print_error(f"{reason(e)} (set NPGPT_DEBUG=1 for a traceback)", label="internal error")
    sys.exit(1)  # an error, as Python's own exit for an uncaught exception: 2 is a command line that does not parse


def _is_pipe(fd: int) -> bool:
    import stat

    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def _is_devnull(fd: int) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(os.devnull))
    except OSError:
        return False


def _reader_gone() -> None:
    """End as a program killed by SIGPIPE ends in the shell, exit status 141 and nothing said, as llama-cli, Ollama
    and cat do when what reads their output leaves (``npgpt generate ... | head -n 1``). click exited 1, which a
    script under ``set -o pipefail`` could not tell from a failure; Python's own default is a traceback. Exited rather
    than killed, so that exit handlers still run."""
    _drop_stdout()
    sys.exit(128 + getattr(signal, "SIGPIPE", 13))


def _drop_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
