"""How a command line is read: npgpt's click command and group, which take other tools' spellings (:mod:`.names`)
as npgpt's, and whose usage errors are one line naming what was typed and what to type instead."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup

from ..errors import NpgptError, cut
from .names import (
    _GROUPED,
    COMMANDS,
    INSTEAD,
    OPTIONS,
    _as_ours,
    _has,
    _hint_message,
    _ollama_args,
    _ours,
    _prompt_first,
    _short_with_equals,
)

# typer 0.2x carries its own copy of click, whose exceptions are not click's.
_click: Any = importlib.import_module("typer._click" if importlib.util.find_spec("typer._click") else "click")
NoSuchOption, UsageError = _click.exceptions.NoSuchOption, _click.exceptions.UsageError
BadParameter = _click.exceptions.BadParameter
ClickException = _click.exceptions.ClickException


_SHOWN = 80  # characters of the user's text a usage error repeats: a page pasted unquoted made the line a page


def _cut(text: str) -> str:
    """``text`` for a one-line error: control characters escaped (a pasted line break is ``\\n``), cut past
    :data:`_SHOWN` characters, with its length."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m[0])[1:-1], cut(text, _SHOWN))


def _typeable(text: str) -> bool:
    """Whether a command line holding ``text`` quoted fits in the one line of an error."""
    return len(text) <= _SHOWN and not re.search(r"[\x00-\x1f\x7f]", text)


class Command(TyperCommand):
    """A typer command whose unknown-option error names npgpt's spelling of another tool's option, and whose
    Ctrl-C is one line (typer's own exits 130 saying nothing)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument) and _is_path(param.type_descriptor.annotation):
                # typer names the type of a path it does not parse itself (parser=path_value) by its class, <Path>;
                # a path option's metavar says <path>, and so does a path argument's type
                param.display_type = _path_type  # type: ignore[method-assign]

    def invoke(self, ctx: Any) -> Any:
        from .options import Interrupted, OutputClosed, Terminated

        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # click would exit 1, silently, as if the command had failed
            if not _output_closed():
                raise
            raise OutputClosed() from None
        except NpgptError as e:  # a bad value found by the command (--temp -1): named as typed too, as click's are
            raise _named_by_env(_named_as_typed(e, ctx.meta.get(_TYPED, {})), self, ctx) from None
        except KeyboardInterrupt as e:  # what a write left is the writer's to keep whole (atomic_path, write_together)
            if isinstance(e, Terminated):
                raise Interrupted("stopped by SIGTERM", e.signum) from None
            raise Interrupted("interrupted (Ctrl-C)") from None

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        typed: dict[str, str] = {}  # npgpt's option -> another tool's spelling the user typed (--n-predict)
        if not ctx.resilient_parsing:
            args = _as_ours(self, _short_with_equals(self, args), typed)
            ctx.meta[_TYPED] = typed
        # click reads "-sys" as the short options -s -y -s, so it would complain of "-s": look first
        ended = args.index("--") if "--" in args else len(args)  # after `--`, every word is text, never an option
        literal = set(args[ended + 1 :])
        grouped = next((a for i, a in enumerate(args[:ended]) if self._grouped(a, args[i - 1] if i else None)), None)
        if grouped is not None and not ctx.resilient_parsing:  # Tab completion's parse: let it be, as click does
            self._hint(ctx, grouped)
            raise NoSuchOption(grouped, ctx=ctx)  # a command without npgpt's option: no "-s" riddle either
        allow_extra, ctx.allow_extra_args = ctx.allow_extra_args, True  # extra arguments: judged below
        options = args[:ended]  # before click's parser consumes the list
        try:
            rest = super().parse_args(ctx, args)
        except NoSuchOption as e:
            self._dashed_text(ctx, options, e.option_name)
            self._hint(ctx, e.option_name)
            e.possibilities = _typos_of(e.option_name, e.possibilities)
            raise
        except UsageError as e:
            # click's parser raises "Option '--stop' requires an argument" with no context, so the error's pointer
            # named the root's help (`npgpt --help`), which lists none of this command's options: this command's
            if e.ctx is None:
                e.ctx = ctx
            _repeat_the_value(e)
            _as_typed(e, typed)
            _variable_only_if_read(e, ctx)
            raise
        finally:
            ctx.allow_extra_args = allow_extra
        if not ctx.resilient_parsing:
            texts = [v for p in self.params if p.param_type_name == "argument" for v in _values(ctx.params.get(p.name))]
            for value in [v for v in [*texts, *rest] if v not in literal]:  # `-- max_new_tokens=3` is that text
                if (setting := self._setting(ctx, value, is_text=value in texts)) is not None:
                    raise UsageError(setting, ctx=ctx)
        if rest and not allow_extra and not ctx.resilient_parsing:
            raise UsageError(self._extra_arguments(ctx, rest), ctx=ctx)
        if not ctx.resilient_parsing:
            _refuse_undecodable(self, ctx)
        return rest

    def _grouped(self, arg: str, before: str | None) -> bool:
        """Whether ``arg`` is another tool's single-dash option of several letters, which click would read as short
        options (llama.cpp's ``-sys``, ``-ngl``; and any other such as ``-fa``, ``-ctk`` or ``-no-cnv``, which click
        read as ``-f a``, ``-c tk``, ``-n o-cnv``: a riddle about a file, the context or a number), not the value of
        the option ``before`` it (``--stop -fa``). A letter with a value attached in click's way stays as it was when
        it has digits or is long (``-n3``, ``-mbundled``)."""
        if arg not in _GROUPED and (not re.fullmatch(r"-[a-z]{2,4}|-[a-z]+(-[a-z]+)+", arg) or _has(self, arg)):
            return False
        option = next((p for p in self.params if before in (*p.opts, *p.secondary_opts)), None) if before else None
        return option is None or bool(getattr(option, "is_flag", False))

    def _setting(self, ctx: Any, value: str, is_text: bool) -> str | None:
        """What to type for nanoGPT's ``key=value`` given as an argument (``max_new_tokens=3``, ``start=Hi``) where
        ``key`` is one of this command's options by another tool's name, or None: as a prompt it was continued as
        text (or refused as an extra argument with "quote text of several words")."""
        import shlex

        m = re.fullmatch(r"([A-Za-z]\w*)=(\S*)", value)
        ours = _ours(self, f"--{m[1]}") if m else None
        if m is None or ours is None:
            return None
        key, given = m[1], m[2]
        name = ctx.info_name
        if ours != "PROMPT":
            how = f"{ours} {shlex.quote(given)}"
        elif given.startswith("FILE:") and _has(self, "--prompt-file"):  # nanoGPT's start=FILE:prompt.txt
            how = f"--prompt-file {shlex.quote(given.removeprefix('FILE:'))}"
        else:
            how = f"the text as an argument: npgpt {name} {shlex.quote(given)}"
        pipe = f"echo {shlex.quote(value)} | npgpt {name}"
        instead = f" (to continue that very text, pipe it in: {pipe})" if is_text else ""
        return f"{value} is nanoGPT's way to set {key}; npgpt takes {how}{instead}"

    def _dashed_text(self, ctx: Any, options: list[str], theirs: str) -> None:
        """NoSuchOption saying how to give text that starts with '-' (a prompt "-5 degrees", a Markdown rule "---"),
        which click reads as an option, where this command takes text; else nothing."""
        import shlex

        if not any(p.param_type_name == "argument" and p.name in ("prompt", "text") for p in self.params):
            return
        # text, not a mistyped option: words with spaces, or dashes and digits alone ("-1", "---")
        is_text = [a.startswith(theirs) and bool(re.search(r"\s", a) or re.fullmatch(r"-+[\d.,]*", a)) for a in options]
        text = next((a for a, t in zip(options, is_text, strict=True) if t), None)
        if text is None:
            return
        name = ctx.info_name
        if _typeable(text):
            fix = f"text that starts with '-' goes after --: npgpt {name} -- {shlex.quote(text)}"
        else:  # a page pasted: not repeated
            fix = f"pipe in text that starts with '-': npgpt {name} < FILE"
        message = f"No such option: {_cut(theirs)}; {fix}"
        raise NoSuchOption(theirs, message=message, ctx=ctx) from None

    def _extra_arguments(self, ctx: Any, extra: list[str]) -> str:
        """click's "Got unexpected extra argument", with the command meant where a prompt came with more words:
        Ollama's MODEL PROMPT order (``npgpt generate gpt2 "Hi"``), or a prompt of several words unquoted."""
        import shlex

        words = " ".join(extra)
        message = f"Got unexpected extra argument{'s' * (len(extra) > 1)} ({_cut(words)})"
        first = ctx.params.get("prompt", ctx.params.get("text"))  # the text argument, on commands that take one
        from ..registry import names_a_model

        if first is None and self._has("--system"):  # chat: Ollama's `ollama run MODEL "PROMPT"`, its text typed here
            command = f"npgpt {ctx.info_name}"
            if len(extra) == 1 and names_a_model(words):
                return f"{message}. The model goes after -m: {command} -m {shlex.quote(words)}"
            given = f"echo {shlex.quote(words)} | {command}" if _typeable(words) else f"{command} < FILE"
            return f"{message}. {command} reads your messages from the terminal, or piped in: {given}"
        if not isinstance(first, str):
            return message

        command = f"npgpt {ctx.info_name}"
        model = self._has("--model") and names_a_model(first)
        text = words if model else " ".join([first, *extra])
        # a text past a line (a page pasted unquoted) is not repeated: the command to pipe it in is said instead;
        # one that starts with '-' goes after -- (`npgpt generate -- -5 degrees`), or it is read as an option
        given = shlex.quote(text) if _typeable(text) else "< FILE"
        given = f"-- {given}" if text.startswith("-") and given != "< FILE" else given
        if model:
            return f"{message}. The model goes after -m: {command} {given} -m {shlex.quote(first)}"
        if given == "< FILE":
            return f"{message}. Pipe the text in: {command} {given}"
        return f"{message}. Quote text of several words: {command} {given}"

    def _hint(self, ctx: Any, theirs: str) -> None:
        """NoSuchOption naming npgpt's spelling of ``theirs`` where this command has it, or what to do instead
        where another tool's option has no counterpart here; else nothing (click's own message)."""
        message = _hint_message(self, ctx.info_name, theirs)
        if message is not None:
            raise NoSuchOption(theirs, message=message, ctx=ctx) from None

    def _has(self, ours: str) -> bool:
        return _has(self, ours)


def _typos_of(typed: str, possibilities: Any) -> list[str]:
    """Those of click's "Possible options" that ``typed`` is a typo of (two edits at most: ``--temprature``,
    ``--seeed``, ``--jsn``, as git's "did you mean" is) or the start of (``--vers``, as argparse takes it). click
    offers any of difflib's close matches, so another tool's option npgpt knows nothing of got an unrelated one of
    npgpt's ("--control-vector": "--no-echo", "--main-gpu": "--min-p", "--prompt-cache": "--prompt-file"), as if it
    were its spelling. A ``--snake_case`` is measured as its ``--kebab-case``, as npgpt takes it
    (``--max_new_token``: ``--max-new-tokens``)."""
    typed = typed.replace("_", "-") if typed.startswith("--") else typed
    return [p for p in possibilities or () if _edits(typed, p) <= 2 or p.startswith(typed)]


def _edits(a: str, b: str) -> int:
    """Levenshtein distance, with a swap of two neighbours one edit (``--tpo-k``)."""
    rows = [list(range(len(b) + 1))]
    for i, x in enumerate(a, 1):
        row = [i]
        for j, y in enumerate(b, 1):
            row.append(min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (x != y)))
            if i > 1 and j > 1 and x == b[j - 2] and a[i - 2] == y:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


def _piped_text() -> str | None:
    """The text piped into standard input, less one trailing newline (echo's), as generate reads it; None where
    standard input is a terminal, closed, or empty (/dev/null)."""
    import sys
    from pathlib import Path

    from .options import PROMPT_FIX, PROMPT_LIMIT, read_text

    if sys.stdin is None or sys.stdin.isatty():
        return None
    text = read_text(Path("-"), "a prompt", limit=PROMPT_LIMIT, fix=PROMPT_FIX)
    text = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
    return text or None


def _output_closed() -> bool:
    """Whether stdout or stderr is a pipe whose reader has gone (``| head``), rather than some other pipe the command
    wrote to. poll reports POLLERR on such a pipe's writing end (POSIX); where there is no poll, assume it is."""
    import select
    import sys

    if not hasattr(select, "poll"):
        return True
    for stream in (sys.stdout, sys.stderr):
        try:
            poller = select.poll()
            poller.register(stream.fileno(), 0)  # 0: only POLLERR, POLLHUP and POLLNVAL, which are always reported
            if any(events & select.POLLERR for _, events in poller.poll(0)):
                return True
        except (AttributeError, OSError, ValueError):  # no descriptor (a replaced stream), or a closed one
            continue
    return False


def _repeat_the_value(e: Any) -> None:
    """A number option's bad value said as click said it, naming the value (``'abc' is not an integer``), where
    typer's message said only "Input should be a valid integer, unable to parse string as an integer"; with how to
    write it where the value is a number written otherwise (``1e3``, ``0,8``)."""
    errors = getattr(e.__cause__, "errors", None)  # typer's pydantic ValidationError
    if not isinstance(e, BadParameter) or not callable(errors) or not errors():
        return
    first = errors()[0]
    value, kind = first.get("input"), str(first.get("type", ""))
    if not isinstance(value, str) or not kind.startswith(("int_", "float_")):
        return
    wanted = "an integer" if kind.startswith("int_") else "a number"
    if not value.strip():  # `--top-k "$K"` with K unset, as not_empty says of an empty model or path
        e.message = f"the value is empty (an unset shell variable?); give {wanted}"
        return
    shown = repr(_cut(value))
    if kind.startswith("int_"):
        e.message = f"{shown} is not an integer"
        with contextlib.suppress(ValueError, OverflowError):
            grouped = re.fullmatch(r"[+-]?\d{1,3}(,\d{3})+", value.strip())  # 1,000 (1,5 is no whole number)
            number = float(value.replace(",", "") if grouped else value)
            if number.is_integer():  # 1e3, 1,000: a whole number written another way
                e.message += f"; write it as {int(number)}"
    else:
        e.message = f"{shown} is not a number"
        if re.fullmatch(r"[+-]?\d*,\d+", value.strip()):  # a decimal comma
            e.message += f"; write decimals with a point: {value.strip().replace(',', '.')}"


_TYPED = "npgpt.typed"  # ctx.meta's key: npgpt's option -> another tool's spelling the user typed (_as_ours)


def typed_as(ours: str) -> str:
    """How the user spelt the running command's option ``ours``: another tool's spelling it was given in (nanoGPT's
    ``--num_samples`` for ``-n``), else ``ours``."""
    import importlib

    ctx = importlib.import_module(f"{_click.__name__}.globals").get_current_context(silent=True)
    return ctx.meta.get(_TYPED, {}).get(ours, ours) if ctx is not None else ours


def _named_as_typed(e: NpgptError, typed: dict[str, str]) -> NpgptError:
    """``e``, whose option the user typed in another tool's spelling (``--temp -1``, ``--n-predict 0``), with that
    option named as typed ("--temp must be a finite number >= 0"), where it named npgpt's ("--temperature", an option
    not on the command line); any other ``e`` as it is."""
    from .flags import _flag, as_flags

    ours = _flag(e.param) if e.param else None
    if ours not in typed:
        return e
    message, n = re.subn(rf"(?<![\w-]){re.escape(ours)}(?![\w-])", typed[ours], as_flags(e), count=1)
    return NpgptError(message) if n else e


ENV = "npgpt.env"  # ctx.meta's key: npgpt's option -> (variable, value) a command took from the environment itself


def _named_by_env(e: NpgptError, command: Any, ctx: Any) -> NpgptError:
    """``e``, about an option whose value came from an environment variable (llama.cpp's ``LLAMA_ARG_PORT=70000``),
    with the variable and its value named where the option was (``LLAMA_ARG_PORT=70000 is not a TCP port``): the
    error named ``--port 70000``, which is nowhere on the command line. An error that names only the value (a model
    LLAMA_ARG_MODEL names: "no such file or directory: /no/such") says where it came from: "(from LLAMA_ARG_MODEL)",
    since the user typed no model. Any other ``e`` as it is."""
    import os
    import shlex

    from .flags import as_flags

    given = dict(ctx.meta.get(ENV, {}))
    for p in command.params:
        source = ctx.get_parameter_source(p.name) if p.name else None
        if source is not None and source.name == "ENVIRONMENT" and p.opts:
            names = [p.envvar] if isinstance(p.envvar, str) else list(p.envvar or ())
            variable = next((v for v in names if os.environ.get(v)), None)
            if variable is not None:  # an argument (info's MODEL) has no flag: its name is a word of the message
                flag = max(p.opts, key=len) if p.param_type_name == "option" else ""
                given[flag] = (variable, os.environ[variable])
    message = original = as_flags(e)
    for flag, (variable, value) in given.items():
        if variable in message:  # the message names it already ("--api-key (or NPGPT_API_KEY) is empty")
            continue
        for shown in dict.fromkeys((f"{flag} {value}", f"{flag} {value!r}", f"{flag} {shlex.quote(value)}")):
            if flag and shown in message:
                message = message.replace(shown, f"{variable}={value}", 1)
                break
        else:
            named = flag and re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", message)
            if named:
                message = re.sub(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", variable, message, count=1)
            elif _names_value(message, value.strip()):
                message += f" (from {variable})"
    return e if message == original else NpgptError(message)


def _names_value(message: str, value: str) -> bool:
    """Whether ``message`` names ``value``, a path or a name (not a bare number, which may be any number in it), as a
    word of its own."""
    if not value or value.lstrip("+-").replace(".", "", 1).isdigit():
        return False
    return re.search(rf"(?<![\w./~-]){re.escape(value)}(?![\w/-])", message) is not None


def _variable_only_if_read(e: Any, ctx: Any) -> None:
    """typer's hint for an option that an environment variable may set names the variable in every error about it
    ("Invalid value for '--model' / '-m' (env var: 'LLAMA_ARG_MODEL')"), so `-m ''` typed on the command line read
    as if the variable were at fault: the variable is named only where the value came from it, and then alone, the
    one that is set: an option several variables may set was "(env var: '['LLAMA_ARG_N_PARALLEL',
    'OLLAMA_NUM_PARALLEL']')", a Python list, whichever was set."""
    import os

    param = getattr(e, "param", None)
    if not isinstance(e, BadParameter) or param is None or e.param_hint is not None or not param.envvar:
        return
    source = ctx.get_parameter_source(param.name) if param.name else None
    if source is None or source.name != "ENVIRONMENT":
        e.param_hint = " / ".join(f"'{o}'" for o in param.opts)
        return
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)
    e.param_hint = next((v for v in names if os.environ.get(v)), names[0])  # click's: the first one set


def _as_typed(e: Any, typed: dict[str, str]) -> None:
    """An error about an option's value named by the spelling the user typed (llama.cpp's ``--n-predict abc``:
    "Invalid value for '--n-predict'", where it said '--max-new-tokens', an option not on the command line)."""
    if isinstance(e, BadParameter) and e.param is not None and e.param_hint is None:
        theirs = next((typed[o] for o in e.param.opts if o in typed), None)
        if theirs is not None:
            e.param_hint = f"'{theirs}'"
        return
    # click's parser: "Option '--max-new-tokens' requires an argument" for a bare --n-predict
    m = re.match(r"Option '([^']+)' requires ", e.message)
    if m is not None and m[1] in typed:
        e.message = e.message.replace(f"'{m[1]}'", f"'{typed[m[1]]}'", 1)


_TEXTS = ("prompt", "text", "system", "stop")  # the parameters whose values are text for the model, not paths or names


def _is_path(annotation: object) -> bool:
    """``Path`` or ``Path | None``."""
    from pathlib import Path

    return annotation is Path or annotation == Path | None


def _path_type(ctx: Any) -> str:
    from .options import PATH

    return PATH


def _refuse_undecodable(command: Any, ctx: Any) -> None:
    """A text argument typed in a terminal that is not UTF-8 (``caf\xe9`` from Latin-1) reaches Python as lone
    surrogates, which the tokenizer read as U+FFFD silently, where the same bytes piped in are refused: refused here
    too. Paths and model names keep any bytes: a file may be named so."""
    for p in command.params:
        for value in _values(ctx.params.get(p.name)) if p.name in _TEXTS else []:
            bad = next((c for c in value if "\udc80" <= c <= "\udcff"), None)
            if bad is not None:
                option = p.param_type_name == "option"
                name = p.opts[0] if option else (p.name or "").upper()
                piped = "" if option else ", or pipe the text in from a UTF-8 file"  # an option's text has no pipe
                byte = ord(bad) - 0xDC00
                raise UsageError(
                    f"{name} is not UTF-8 text (it holds the byte 0x{byte:02x}); set the terminal to UTF-8{piped}",
                    ctx=ctx,
                )


def _values(value: object) -> list[str]:
    """An argument's text values: one, several (``nargs=-1``), or none (a path, a number, None)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [v for v in values if isinstance(v, str)]


class Group(TyperGroup):
    """The ``npgpt`` group, whose unknown-command error names npgpt's version of an Ollama command, and whose
    unknown-option error says where a command's option goes (``npgpt -m gpt2 generate``) or names npgpt's
    spelling of another tool's (Ollama's ``-v``: ``--version``), as a command's does."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:
            wrong = _prompt_first(self.commands, args[1:]) if args[:1] == ["run"] else None
            if wrong is not None:  # `npgpt run "Why is the sky blue?"`: no model is named, the prompt was read as one
                error = UsageError(wrong, ctx=ctx)
                error.help_path = f"{ctx.command_path} run"
                raise error
            args = _ollama_args(self.commands, args, _piped_text)
        # the group's own options end at the command's name; click would read "-ngl" as -n -g -l: look first
        named = next((i for i, a in enumerate(args) if a in self.commands or a == "--"), len(args))
        grouped = next((a for a in args[:named] if a in _GROUPED), None)
        try:
            if grouped is not None and not ctx.resilient_parsing:  # Tab completion's parse: let it be, as click does
                raise NoSuchOption(grouped, ctx=ctx)
            return super().parse_args(ctx, list(args))  # a copy: click's parser consumes the list
        except NoSuchOption as e:
            name = args[named] if args[named:] and args[named] in self.commands else None
            message = self._root_hint(e.option_name, name)
            if message is None:
                e.possibilities = _typos_of(e.option_name, e.possibilities)
                raise
            error = NoSuchOption(e.option_name, message=message, ctx=ctx)
            if name is not None:  # the hint is about that command's options: its help is the one to see
                error.help_path = f"{ctx.command_path} {name}"
            raise error from None

    def _root_hint(self, theirs: str, name: str | None) -> str | None:
        """What ``npgpt THEIRS [... NAME]`` says: npgpt's root option, or where ``theirs`` goes for the command
        ``name`` that follows (None: none follows), or what that command says of it; None for click's message."""
        ours = _ours(self, theirs)
        if ours is not None:
            return f"No such option: {theirs}. npgpt takes {ours}"
        if name is not None:
            command = self.commands[name]
            ours = _ours(command, theirs)
            if ours == theirs:
                return f"No such option: {theirs}; options go after the command: npgpt {name} {theirs} ..."
            if ours is not None and ours != "PROMPT":
                after = f"after the command: npgpt {name} {ours} ..."
                return f"No such option: {theirs}; npgpt {name} takes {ours}, {after}"
            message = _hint_message(command, name, theirs)  # click's would offer the root's --version
            return message or f"No such option: {theirs}; npgpt {name} has no such option either"
        if any(_ours(c, theirs) is not None for c in self.commands.values()):
            return f"No such option: {theirs}; options go after the command: npgpt COMMAND {theirs} ..."
        instead = next((t for c, t in INSTEAD.get(theirs, ()) if c == "*"), None)
        if instead is not None:
            return f"No such option: {theirs}; {instead.format(cmd='COMMAND')}"
        if theirs in OPTIONS or theirs in INSTEAD:  # a command may say what to do instead
            return f"No such option: {theirs}; npgpt's options go after the command"
        return None

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except UsageError as e:
            if args and args[0] in COMMANDS:
                e.message = f"No such command {args[0]!r}. {COMMANDS[args[0]]}"
            raise
