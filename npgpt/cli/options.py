"""What the commands share: the model, backend and dtype options, the consoles, model loading, and the
functions that print errors and notices.

Text that comes from a message, a path or a prompt never goes through rich's markup: ``[serve]`` in
``pip install 'npgpt[serve]'`` is text, not a style tag, and a path holding ``[/x]`` is a path.
"""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import NpgptError

if TYPE_CHECKING:
    from rich.console import Console

    from ..api import GPT2


def not_empty(what: str, fix: str) -> Any:
    """A ``callback=`` refusing an empty value of a model or name option or argument (one value or a list), as
    :func:`path_value` refuses an empty path: ``-m "$MODEL"`` with MODEL unset said "'' is not a file or a known
    model", as if the user had typed a wrong name."""

    def check(value: Any) -> Any:
        for v in value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, str) and not v.strip():
                raise typer.BadParameter(f"the {what} is empty (an unset shell variable?); give {fix}")
        return value

    return check


model_value = not_empty("model", "a path or a name")
name_value = not_empty("name", "a name")
repo_value = not_empty("repo id", "ORG/NAME")
revision_value = not_empty("revision", "a branch, tag or commit (or leave --revision out for main)")

# llama.cpp reads LLAMA_ARG_MODEL in every tool that takes -m (llama-cli, llama-server, llama-perplexity, ...): so does
# every npgpt command that runs a model (generate, chat, next, eval, score, lens, attention; serve, info, and tokenize
# for the model's tokenizer, read it too). The command line wins over it, as in llama.cpp. Not read by train (--init:
# a model to fine-tune, never a default), bench (llama-bench reads no variables; a benchmark names what it
# measures) or convert (a source is given).
MODEL_ENV = "LLAMA_ARG_MODEL"
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        callback=model_value,
        envvar=MODEL_ENV,
        help="Checkpoint path or downloaded name (124M…); default: a downloaded GPT-2, else the bundled model.",
    ),
]


def dtype_value(value: str) -> str:
    """A ``--dtype``'s ``callback=``: other tools' names of npgpt's dtypes (llama.cpp's ``--outtype f16``, ``bf16``,
    ``f32``; PyTorch's ``half``; ``Q8_0``) taken as npgpt's, one at a time in a comma-separated list (bench's)."""
    from ..errors import other_dtype_name

    return ",".join(other_dtype_name(v) for v in value.split(","))


BackendOpt = Annotated[str, typer.Option("--backend", help="numpy, jax, torch, cupy or cupynumeric.")]
DtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        callback=dtype_value,
        help="Weight storage: float32 (the default: the same numbers on every host), float16/bfloat16 "
        "(half the memory) or int8 (a quarter); auto = the fastest of the backend's on this host "
        "(measured once, cached).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout (for scripts).")]


def path_value(text: str) -> Path:
    """A path typed on the command line (``parser=`` of every path option and argument). An empty one, as an
    unset shell variable gives (``--prompt-file "$F"``), is refused: ``Path("")`` is ``.``, and the current
    folder was read as the file, or written into, in its place."""
    if not text:
        raise typer.BadParameter("the path is empty (an unset shell variable?); give a path")
    path = Path(text)
    # The shell leaves a ~ unexpanded after `=` (`--prompt-file=~/p.txt`, nanoGPT's `--start=FILE:~/p.txt`) or in
    # quotes: it was read as a folder named ~ in the current one (a prompt "not found", a converted model written into
    # ./~/). It is the home folder, as the shell would have it, unless a file of that very name is here.
    if text.startswith("~") and not path.exists():
        try:
            return path.expanduser()
        except RuntimeError:  # ~nosuchuser: no home to expand to; the path as typed
            return path
    return path


PATH = "<path>"  # the metavar typer shows for a Path option, kept where path_value parses it


# The sampling options npgpt generate and npgpt chat share (each command sets its own defaults).
TemperatureOpt = Annotated[float, typer.Option(help="0 = greedy; higher = more random.")]


def _top_k_value(value: int) -> int:
    """llama.cpp's and vLLM's ``--top-k -1``: off, which npgpt (as transformers) spells 0."""
    return 0 if value == -1 else value


TopKOpt = Annotated[
    int, typer.Option(callback=_top_k_value, help="Sample among the k most likely tokens (0 or -1 = off).")
]
TopPOpt = Annotated[float, typer.Option(help="Nucleus sampling mass in [0, 1] (1 = off, 0 = greedy).")]
MinPOpt = Annotated[float, typer.Option(help="Drop tokens below min_p × the top probability.")]
RepetitionPenaltyOpt = Annotated[float, typer.Option(help="> 1 discourages repeats (1 = off).")]
PresencePenaltyOpt = Annotated[float, typer.Option(help="OpenAI-style, in [-2, 2].")]
FrequencyPenaltyOpt = Annotated[float, typer.Option(help="OpenAI-style, in [-2, 2].")]


IgnoreEosOpt = Annotated[
    bool,
    typer.Option(
        "--ignore-eos",
        help="Go on past <|endoftext|> (llama.cpp's --ignore-eos, the server's ignore_eos), to the token limit or a "
        "--stop.",
    ),
]


LogitBiasOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--logit-bias",
        "-l",
        help="Add BIAS to a token's logit, as llama.cpp writes it: TOKEN_ID+BIAS or TOKEN_ID-BIAS, -inf (or -100) "
        "bans it: -l 50256-inf (repeatable; npgpt tokenize shows ids).",
        show_default=False,
    ),
]


def logit_bias_value(values: list[str] | None) -> dict[int, float]:
    """llama.cpp's ``--logit-bias TOKEN_ID(+|-)BIAS`` values as the API's ``logit_bias`` ({id: bias}): ``50256-inf``
    bans <|endoftext|> (the API's -100), ``15043+1.5`` favours id 15043. NpgptError for a value written otherwise, a
    bias outside [-100, 100] or a token given twice."""
    import math

    bias: dict[int, float] = {}
    for value in values or []:
        m = re.fullmatch(r"\s*(\d{1,18})\s*([+-])\s*(inf|\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+)\s*", value, re.IGNORECASE)
        if m is None:
            raise NpgptError(
                f"--logit-bias {value!r} is not TOKEN_ID+BIAS or TOKEN_ID-BIAS; write it as llama.cpp does: "
                "--logit-bias 50256-inf bans <|endoftext|>, 15043+2 favours token 15043"
            )
        token, number = int(m[1]), float(m[3]) * (-1 if m[2] == "-" else 1)
        number = math.copysign(100.0, number) if math.isinf(number) else number  # llama.cpp's -inf: the API's ban
        if not -100 <= number <= 100:
            raise NpgptError(f"--logit-bias {value}: a bias is in [-100, 100] (-100 or -inf bans the token)")
        if token in bias:
            raise NpgptError(f"--logit-bias gives token {token} a bias twice; give each token one")
        bias[token] = number
    return bias


def random_seed(value: int | None) -> int | None:
    """``--seed``'s ``callback=``: llama.cpp's ``--seed -1`` (its default) is a random seed, as npgpt's server reads a
    request's ``seed: -1``: no seed, as leaving ``--seed`` out. Any other number goes on as given (a negative one is
    a seed as the library reads it: its two's complement)."""
    return None if value == -1 else value


# llama.cpp's --n-predict -1 (its default: "infinity") and -2 ("until the context is filled"): npgpt shifts no context,
# so both stop at end of text or when the context is full, as a chat request without max_tokens does on the server.
UNTIL_FULL = (-1, -2)


def until_full(value: int | None) -> bool:
    """Whether ``--max-new-tokens`` is llama.cpp's -1 or -2 (:data:`UNTIL_FULL`); NpgptError for another value < 1."""
    if value is None or value >= 1:
        return False
    if value in UNTIL_FULL:
        return True
    raise NpgptError(
        f"--max-new-tokens must be >= 1, or -1 to generate until end of text or the context is full, got {value}",
        param="max_new_tokens",
    )


_UNWRAPPED = 1_000_000  # columns of a console that is not a terminal: no line is that long


def console(stderr: bool = False) -> Console:
    """A rich console on stdout (results) or stderr (progress, notices, errors) that prints strings as
    they are: no markup (style with ``rich.text.Text``), no auto-highlighting."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich's own exits 1, as if the command had failed
            self.quiet = True
            raise OutputClosed()

    screen = _Console(stderr=stderr, highlight=False, markup=False)
    if not screen.is_terminal:
        # A pipe or a file has no width: rich would break lines at 80 columns (or at an exported COLUMNS, which
        # describes the terminal, not the pipe), splitting a path or a list of ids, and squeezing a table's
        # columns, for the script that reads them. Each line is kept whole, however long.
        screen.soft_wrap = True
        screen.width = _UNWRAPPED
    return screen


def print_table(table: Any, screen: Console | None = None) -> None:
    """A rich table on ``screen`` (default: stdout's :func:`console`), each line without trailing whitespace: rich
    pads every cell to its column's width, so a pipe (``npgpt info | cat -A``, a script comparing lines, ``diff``)
    got the last column padded with spaces to the widest cell of all rows. Every command prints its tables here."""
    from rich.segment import Segment

    screen = screen or console()

    class _Stripped:
        def __rich_console__(self, con: Any, options: Any) -> Any:
            for line in con.render_lines(table, options, pad=False):
                while line and not line[-1].control and not line[-1].text.rstrip():
                    line.pop()  # a cell's padding, or a whole empty cell at the end
                if line and not line[-1].control:
                    last = line.pop()
                    line.append(Segment(last.text.rstrip(), last.style))
                yield from line
                yield Segment.line()

    screen.print(_Stripped())


def progress_bar(*columns: Any) -> Any:
    """A transient rich progress bar of ``columns`` on stderr, drawn only on a terminal (in a log or a
    pipe it left an empty line)."""
    from rich.progress import Progress

    err = console(stderr=True)
    return Progress(*columns, console=err, transient=True, disable=not err.is_terminal)


class Interrupted(NpgptError):
    """A command stopped by Ctrl-C (KeyboardInterrupt) or another signal ``signum`` it handles (npgpt train's
    SIGTERM), saying what it left and how to go on: printed as one line, exit code 128 + the signal's number, as a
    shell reports a command a signal ended (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message: str, signum: int = 2) -> None:  # 2: SIGINT (the signal module is not imported here)
        super().__init__(message)
        self.exit_code = 128 + signum


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a service manager, a batch scheduler) raised as Ctrl-C's KeyboardInterrupt is,
    so that what a command is writing is undone the same way (``files.atomic_path`` deletes its temp file) rather
    than the process ending on the spot: a ``.NAME.PID@HOST.XXXX.tmp`` of gigabytes stayed hidden beside a
    ``convert``'s output until something else was written there. ``signum``: the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__()
        self.signum = signum


class OutputClosed(Exception):
    """What reads npgpt's output went away (``npgpt generate ... | head -n 1``): not an error to report, and not
    click's to turn into a silent exit 1 (it catches EPIPE itself). :func:`npgpt.cli.commands.main` ends the run with
    the status the shell gives llama-cli, Ollama and cat, which SIGPIPE kills there: 141, nothing on stderr."""


def raise_terminated(signum: int, frame: object) -> None:
    """A SIGTERM handler: raise :class:`Terminated`."""
    raise Terminated(signum)


def print_error(message: str, label: str = "error") -> None:
    """``error: MESSAGE`` on stderr, the message printed literally on one line: every user error ends here.

    Control characters are written as Python escapes (``\\n``, ``\\x1b``): a file or folder name may hold a
    newline, which split the error over two lines (a script reading the first line got half of it), or a terminal
    escape sequence, which the terminal would have run."""
    from rich.text import Text

    message = _CONTROL.sub(lambda m: repr(m[0])[1:-1], message)
    console(stderr=True).print(Text.assemble((f"{label}:", "red"), " ", message), soft_wrap=True)


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # C0 but tab, DEL and C1


def print_notice(message: str, style: str = "dim") -> None:
    """A notice (which model is used, a warning) on stderr, printed literally in ``style``."""
    from rich.text import Text

    console(stderr=True).print(Text(message, style=style), soft_wrap=True)


def print_json(obj: object) -> None:
    """``obj`` as one JSON object on stdout and nothing else (``--json``)."""
    import json

    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def load_model(
    model: str | None, backend: str = "numpy", dtype: str = "float32", auto_rows: int = 1, cap_blas: bool = True
) -> GPT2:
    """``npgpt.load`` and its notices (e.g. "using the bundled model", what ``--dtype auto`` chose) on stderr.

    On the NumPy backend, whose int8 products and batched float32 steps run on ONNX Runtime, its
    sessions share one pool, and once the model's weights are int8, NumPy's BLAS is capped at one
    thread (npgpt/onnx_session.py, npgpt/q8_0.py): both process-wide, so decided here, at the entry
    point. ``cap_blas=False`` leaves the cap to a caller that loads several models (``npgpt
    serve``): float32 products need every core.
    """
    from ..api import load
    from ..backends import get_backend

    if get_backend(backend).onnx_sessions:  # a missing backend: the one-line install error
        from ..onnx_session import share_thread_pool

        share_thread_pool()  # process-wide, so the entry point decides: ONNX Runtime's products on one warm pool
    m = load(model, backend=backend, dtype=dtype, auto_rows=auto_rows)
    if cap_blas:
        from ..q8_0 import cap_blas_for

        cap_blas_for([m.params])  # only if the weights are int8 on ONNX Runtime
    if m.notice:
        print_notice(m.notice)
    if m.dtype_choice is not None:
        print_notice(f"dtype auto: {m.dtype_choice.describe()}")
    note_context_variables(m.config.n_ctx)
    return m


# llama.cpp's and Ollama's context size (llama-cli's -c, Ollama's num_ctx default), read by their every tool and server
CONTEXT_VARIABLES = ("LLAMA_ARG_CTX_SIZE", "OLLAMA_CONTEXT_LENGTH")


def note_context_variables(n_ctx: int) -> None:
    """A notice where llama.cpp's or Ollama's context size is set to another than the model's ``n_ctx``: npgpt has no
    such setting (a model's context is its own), so the variable changes nothing, where its user expects a context
    of that size. 0 (llama.cpp's "the model's own") or the model's own says nothing; llama.cpp ignores the variables
    it does not know, and so does npgpt with every other."""
    import os

    for variable in CONTEXT_VARIABLES:
        value = os.environ.get(variable, "").strip()
        if value and value not in ("0", str(n_ctx)):
            print_notice(
                f"{variable}={value} is not read: the context length is the model's own, {n_ctx} tokens for this one"
            )
            return


def note_chat_template(m: GPT2, chat: str, instead: str) -> None:
    """A notice when the model carries a chat template of its own (a fine-tune's tokenizer_config.json, a GGUF's
    metadata, a downloaded or converted npgpt file's), which npgpt does not render: ``chat`` (npgpt chat, the chat
    endpoint) writes GPT-2's plain transcript instead, and ``instead`` says where a transcript rendered from the
    template can go."""
    from ..errors import CheckpointError
    from ..formats import chat_template

    try:
        found = None if m.source is None else chat_template(m.source)
    except (CheckpointError, OSError):  # a template that cannot be read: nothing to say of it
        return
    if found is not None:
        print_notice(
            f"{m.source}: the model carries its own chat template ({found[0]}), which npgpt does not apply: {chat} "
            "writes GPT-2's plain transcript (System:/User:/Assistant: lines), which a model tuned on its template "
            f"may not follow; to use the template, render it (transformers' apply_chat_template) and {instead}"
        )


def unescape(text: str) -> str:
    r"""``\n``, ``\t``, ``\r``, ``\\``, ``\"``, ``\'``, ``\xHH``, ``\uHHHH`` and ``\UHHHHHHHH`` in ``text`` as the
    characters they stand for, as the playground reads its stop field; other backslashes stay as typed.

    Hand-written rather than ``codecs.decode(text, "unicode_escape")``, which goes through Latin-1 and
    so mangles any non-ASCII character in the text (``'é\\n'`` would come back as ``'Ã©\n'``).
    """
    import re

    simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}

    def one(m: re.Match[str]) -> str:
        s = m[0]
        if s[1] in simple:
            return simple[s[1]]
        code = int(s[2:], 16)
        return chr(code) if code <= 0x10FFFF else s  # past Unicode's last code point: left as typed

    return re.sub(r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[ntr\\\"'0])", one, text)


def check_out_dir(out: Path, option: str = "--out") -> None:
    """Refuse an output folder that is an existing file (or other non-folder), or one that cannot be made or
    written in, before any work starts; nothing is created."""
    if out.exists() and not out.is_dir():
        raise NpgptError(f"{option} {out} is a file, not a folder; give a folder for the run's files")
    from ..files import check_writable
    from ..formats.npgpt_format import MODEL_FILE

    check_writable(out / MODEL_FILE)  # /proc/run, a read-only folder: said now, not after loading JAX


_CHUNK = 1 << 20  # bytes read at a time: a device that never ends (/dev/zero) is refused in its first chunk

MiB = 1 << 20
# The most text each reader takes. A prompt past 1 MiB is far more than any GPT-2 context holds (1,024 tokens are
# rarely 10 KB); a text to tokenize or score is held in memory with its tokens, a dozen or so bytes per byte
# (64 MiB: about 16 M tokens, hours of scoring on a CPU), as llama.cpp's perplexity holds its whole file.
PROMPT_LIMIT = 1 * MiB
TEXT_LIMIT = 64 * MiB
PROMPT_FIX = "a model's context holds a few KB of text: give the text's end, e.g. `tail -c 4000 FILE`"


def read_text(path: Path, what: str, *, limit: int, fix: str) -> str:
    """A UTF-8 text file's contents (``-``: standard input's), or one error naming the file and why it cannot be read
    as text.

    Read and checked a chunk at a time, so binary input is refused as soon as it shows: ``/dev/zero`` or
    ``/dev/urandom`` given as a file (or piped in) was read whole, forever, filling memory. Text past ``limit``
    bytes is refused too, a file's before any of it is read, a pipe's once that much has come (``yes | npgpt score
    -`` never ends): the error says the limit and ``fix``, how to give a part of the text."""
    import codecs

    stdin = str(path) == "-"
    if stdin and sys.stdin is None:
        raise NpgptError(f"cannot read {what} from stdin: it is closed; pipe the text in or give a file")
    source = "standard input" if stdin else str(path)  # "- is a binary file" named no file the user gave
    decoder = codecs.getincrementaldecoder("utf-8")()
    parts: list[str] = []
    done = 0  # bytes read before the chunk in hand
    try:
        with contextlib.nullcontext(sys.stdin.buffer) if stdin else path.open("rb") as stream:
            size = _file_size(stream.fileno())
            while True:
                if max(size, done) > limit:
                    bound = f"{limit // MiB} MiB" if limit % MiB == 0 else f"{limit:,} bytes"
                    raise NpgptError(f"{source} is over {bound}, the most npgpt reads as {what}; {fix}")
                chunk = stream.read(min(_CHUNK, limit + 1 - done))
                if b"\0" in chunk:
                    fix = "pipe in UTF-8 text" if stdin else f"give a UTF-8 text file of {what}"
                    raise NpgptError(f"{source} is binary, not text (it holds a NUL byte); {fix}")
                try:
                    parts.append(decoder.decode(chunk, final=not chunk))
                except UnicodeDecodeError as e:  # e.object: the bytes the decoder held back, then this chunk
                    at = done - (len(e.object) - len(chunk)) + e.start
                    raise NpgptError(
                        f"{source} is not UTF-8 text (byte {at} is 0x{e.object[e.start]:02x}); "
                        f"convert it, e.g. `iconv -f latin1 -t utf-8`"
                    ) from None
                if not chunk:
                    break
                done += len(chunk)
    except OSError as e:
        raise NpgptError(f"cannot read {what} from {source}: {e.strerror}") from None
    return "".join(parts).removeprefix("\ufeff")  # a byte-order mark (Notepad writes one) is not text: dropped


def _file_size(fd: int) -> int:
    """A regular file's size, known before reading it; 0 for a pipe, a terminal or a device."""
    import os
    import stat

    try:
        info = os.fstat(fd)
    except (OSError, ValueError):
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0
