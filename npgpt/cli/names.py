"""What llama.cpp, Ollama and nanoGPT call npgpt's commands and options.

One that means the same as a command's option, whatever its value (``--temp``, ``--max_new_tokens=100``), is
taken as it (:data:`ACCEPTED`). Any other that one of them spells this way is answered with npgpt's own name
("No such option: --init_from. npgpt takes --init"), not with click's closest spellings (``--temp`` on ``next``:
"--help, --stop, --stream"), or with what to do instead ("No such option: --threads; npgpt's threads follow
OMP_NUM_THREADS ...").
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import re
from collections.abc import Iterable, Mapping
from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup

from ..errors import NpgptError
from ..sampling import SamplingParams

# typer 0.2x carries its own copy of click, whose exceptions are not click's.
_click: Any = importlib.import_module("typer._click" if importlib.util.find_spec("typer._click") else "click")
NoSuchOption, UsageError = _click.exceptions.NoSuchOption, _click.exceptions.UsageError
BadParameter = _click.exceptions.BadParameter
ClickException = _click.exceptions.ClickException

# Other tools' option -> npgpt's (or npgpt's candidates, the first the command has); a hint is given only on a
# command that has npgpt's option. Any other ``--snake_case`` whose ``--kebab-case`` the command has is hinted too.
OPTIONS: dict[str, str | tuple[str, ...]] = {
    "-p": "PROMPT",  # llama.cpp
    "--prompt": "PROMPT",
    "--start": "PROMPT",  # nanoGPT's sample.py
    "--temp": "--temperature",
    "-n": "--max-new-tokens",  # where the command has no -n of its own (chat)
    "--n-predict": "--max-new-tokens",
    "--n_predict": "--max-new-tokens",
    "--max_new_tokens": "--max-new-tokens",
    "--max_tokens": "--max-new-tokens",  # the OpenAI API's (npgpt serve's) name
    "--max_steps": "--steps",  # transformers' Trainer
    "--num_samples": "-n",
    "--top_k": "--top-k",
    "--top_p": "--top-p",
    "--min_p": "--min-p",
    "--repeat-penalty": "--repetition-penalty",
    "--repeat_penalty": "--repetition-penalty",
    "--presence_penalty": "--presence-penalty",
    "--frequency_penalty": "--frequency-penalty",
    "-s": "--seed",
    "-v": "--version",  # Ollama's, at the root; a command's is llama.cpp's --verbose (INSTEAD)
    "--init_from": ("--model", "--init"),  # sample.py's, train.py's
    "--out_dir": ("--out", "--model"),  # train.py: the run folder; sample.py: the checkpoint's
    "--max_iters": "--steps",
    "--learning_rate": "--lr",
    "--block_size": "--seq-len",
    "--gradient_accumulation_steps": "--grad-accum",
    "--warmup_iters": "--warmup",
    "--grad_clip": "--clip",
    "--log_interval": "--log-interval",
    "--model-path": "--model",
    "-sys": "--system",
    "--system-prompt": "--system",
    "-r": "--stop",  # llama.cpp's reverse prompt
    "--reverse-prompt": "--stop",
    "--no-display-prompt": "--no-echo",  # llama-cli
    "-np": "--max-batch",  # llama-server's parallel slots
    "--parallel": "--max-batch",
    "-c": "--n-ctx",  # llama.cpp's context size: only a model trained from scratch has one to choose
    "--ctx-size": "--n-ctx",
    "-t": "--threads",  # npgpt bench's
    "--threads": "--threads",
    "-hf": "--hf",  # llama.cpp's Hugging Face repo
    "--hf-repo": "--hf",
}

# The spellings of OPTIONS that a command takes as its own option where it has npgpt's (they mean the same thing
# there, whatever the value): `--temp 0.7`, `--n-predict 64`, `--num_samples=3` run as `--temperature 0.7`,
# `--max-new-tokens 64`, `-n 3`; and any other `--snake_case` whose `--kebab-case` the command has (nanoGPT's
# `--max_new_tokens=100`, `--top_k=200`). The rest of OPTIONS get a hint: their meaning depends on the value
# (`--init_from=resume`, `--out_dir`), or differs (llama.cpp's -c is a run's context, npgpt's --n-ctx a new model's;
# nanoGPT's --block_size is the model's context and the training window at once), or is `npgpt serve`'s.
ACCEPTED = {
    "-p",  # llama.cpp's prompt: the text argument
    "--prompt",
    "--start",  # nanoGPT's sample.py: the text, or FILE:name for --prompt-file name
    "--temp",
    "-n",  # on a command with no -n of its own (chat): llama.cpp's tokens to predict
    "--n-predict",
    "--n_predict",
    "--max_tokens",
    "--num_samples",
    "--repeat-penalty",
    "--repeat_penalty",
    "-s",
    "--max_iters",
    "--max_steps",
    "--learning_rate",
    "--gradient_accumulation_steps",
    "--warmup_iters",
    "--grad_clip",
    "--model-path",
    "-sys",
    "--system-prompt",
    "-r",
    "--reverse-prompt",
    "--no-display-prompt",
    "-t",  # npgpt bench's --threads
    "--threads",
    "-hf",  # npgpt download's --hf
    "--hf-repo",
}

# Other tools' options that a command has no counterpart of, and what to do instead: the first (condition,
# text) whose condition holds is said (an option the command has, a command's name, or "*"); a text names
# only flags the command has (tests/test_cli_usage.py checks it). "{cmd}" is the command's name.
_THREADS = "npgpt's threads follow OMP_NUM_THREADS (default: every core): OMP_NUM_THREADS=4 npgpt {cmd} ..."
_CONTEXT = "the context length is the model's own (n_ctx; npgpt info shows it) and cannot be changed"
_ON_JAX = "npgpt train runs on every device JAX sees; JAX_PLATFORMS=cpu keeps it on the CPU"
_OFFLOAD = [
    ("--backend", "npgpt offloads no layers: the whole model runs on --backend's device (torch, jax or cupy: the GPU)"),
    ("train", _ON_JAX),
]
_CONVERSE = [("chat", "npgpt chat is interactive already; drop it"), ("*", "for a conversation, use npgpt chat")]
_PIPE_IN = [("chat", "npgpt chat reads your messages from the terminal, or piped in: echo Hi | npgpt chat")]
_DOWNLOAD_FIRST = [("--model", "download it first (`npgpt download --hf ORG/NAME`), then use -m ORG/NAME")]
_VERBOSE = [("*", "npgpt has no verbose mode; NPGPT_DEBUG=1 adds a traceback to an error")]
_ALIAS = [("serve", "name a model with --model NAME=PATH")]
_LOGPROBS = [
    (
        "*",
        "npgpt score gives each token's log-probability in a text, npgpt next shows the likeliest next tokens; for "
        "generated text's, the Python API's model.completions(prompt, logprobs=k) or the server's logprobs",
    )
]
_DEVICE = [
    ("--backend", "npgpt picks the device with --backend: numpy runs on the CPU; torch, jax and cupy on the GPU"),
    ("train", _ON_JAX),
]
_MAX_TOKENS = [
    (
        "serve",
        "a client sets max_tokens in each request; "
        "--max-request-tokens caps a request's prompt and max_tokens together",
    )
]
INSTEAD: dict[str, list[tuple[str, str]]] = {
    "-c": [("*", _CONTEXT)],
    "--ctx-size": [("*", _CONTEXT)],
    "-t": [("*", _THREADS)],
    "--threads": [("*", _THREADS)],
    "-i": _CONVERSE,
    "--interactive": _CONVERSE,
    "--interactive-first": _CONVERSE,
    "-cnv": _CONVERSE,
    "--conversation": _CONVERSE,
    "-ngl": _OFFLOAD,
    "--n-gpu-layers": _OFFLOAD,
    "--gpu-layers": _OFFLOAD,
    "--device": _DEVICE,  # nanoGPT's
    "--compile": [  # nanoGPT's torch.compile
        ("--backend", "npgpt has no --compile: --backend jax compiles the model with XLA by itself"),
        ("train", "npgpt train compiles its step with JAX by itself; drop --compile"),
    ],
    "--dtype": [  # nanoGPT's train.py: bfloat16 autocast
        (
            "train",
            "npgpt train trains in float32; for 16-bit weights, convert the result: "
            "`npgpt convert RUN/model.safetensors half.safetensors --dtype float16`",
        )
    ],
    "-n": [("serve", "a client sets max_tokens in each request")],  # llama-server's default n_predict
    "--max-tokens": _MAX_TOKENS,  # the OpenAI API's, typed as a server's setting (generate takes it: ACCEPTED)
    "--max_tokens": _MAX_TOKENS,
    "-p": _PIPE_IN,
    "--prompt": _PIPE_IN,
    "-hf": _DOWNLOAD_FIRST,
    "--hf-repo": _DOWNLOAD_FIRST,
    "-a": _ALIAS,  # llama-server's alias
    "--alias": _ALIAS,
    "-v": _VERBOSE,  # llama.cpp's; Ollama's -v, the version, is the root's (OPTIONS)
    "--verbose": _VERBOSE,
    "--color": [("*", "npgpt colours its output on a terminal by itself; NO_COLOR=1 turns colour off")],
    "--logprobs": _LOGPROBS,  # the OpenAI API's
    "--top-logprobs": _LOGPROBS,
    "--n-probs": _LOGPROBS,  # llama.cpp's
}

# Single-dash names of several letters, which click would split into short options.
_GROUPED = {name for name in (*OPTIONS, *INSTEAD) if not name.startswith("--") and len(name) > 2}

# Ollama's commands that npgpt runs as its own: `npgpt pull 124M` is `npgpt download 124M`; `run MODEL [PROMPT]` is
# generate (a prompt) or chat (none), with -m MODEL; `help [COMMAND]` is --help.
COMMAND_ALIASES = {"pull": "download", "show": "info", "ls": "list", "remove": "rm"}

# Ollama's other commands -> what npgpt says of them (`run` without a model is answered with the npgpt command).
COMMANDS = {
    "ps": "npgpt keeps no models running: each command loads its model and exits (a server: npgpt serve)",
    "stop": "npgpt keeps no models running: each command loads its model and exits (a server: npgpt serve)",
    # click offered 'chat' for create: npgpt has no model store of its own to create, copy or push models in
    "create": "npgpt has no Modelfiles: a model is a checkpoint file or folder, used where it lies (-m PATH)",
    "cp": "npgpt uses a model where it lies (-m PATH); copy its file or folder as any other",
    "push": "npgpt uploads no models; npgpt convert MODEL DIR --to hf writes a folder the Hugging Face Hub takes",
    "help": "npgpt's is --help (or -h), after a command for its own: npgpt generate --help",
}


def _ollama_args(commands: Mapping[str, Any], args: list[str]) -> list[str]:
    """``args`` with Ollama's command (:data:`COMMAND_ALIASES`, ``run``, ``help``) and its root ``-v`` written as
    npgpt's; other ``args`` as they are."""
    if args[:1] == ["-v"]:  # `ollama -v`: the version
        return ["--version", *args[1:]]
    name = args[0] if args else None
    if name is None or name in commands:
        return args
    if name in COMMAND_ALIASES:
        return [COMMAND_ALIASES[name], *args[1:]]
    if name == "help" and len(args) <= 2:  # an unknown command after it: click's "No such command 'x'"
        return [*args[1:], "--help"]
    if name == "run" and len(args) > 1 and not args[1].startswith("-"):
        model, rest = args[1], args[2:]
        ended = rest.index("--") if "--" in rest else len(rest)  # after `--`, every word is the prompt's
        options, words = _options_and_words(commands, rest[:ended])  # `run m why is --seed 1 the sky`
        prompt = [*words, *rest[ended + 1 :]]
        if not prompt:
            return ["chat", "-m", model, *options]
        return ["generate", "-m", model, *options, "--", " ".join(prompt)]
    return args


def _options_and_words(commands: Mapping[str, Any], args: list[str]) -> tuple[list[str], list[str]]:
    """``args`` of ``run MODEL`` split into options (each with its value) and the prompt's words, wherever they stand:
    Ollama joins every word that is not an option or its value. Whether an option takes a value is generate's (or
    chat's) say, by npgpt's name or another tool's (``--temp``); an option neither has takes none (click names it)."""
    options: list[str] = []
    words: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "-":
            words.append(arg)
        else:
            options.append(arg)
            if "=" not in arg and i + 1 < len(args) and _takes_value(commands, arg):
                i += 1
                options.append(args[i])
        i += 1
    return options, words


def _takes_value(commands: Mapping[str, Any], option: str) -> bool:
    """Whether ``option`` (npgpt's spelling or another tool's) takes a value on generate or chat."""
    for command in filter(None, (commands.get("generate"), commands.get("chat"))):
        ours = option if _has(command, option) else _accepted(command, option)
        if ours == "PROMPT":  # -p TEXT
            return True
        param = next((p for p in getattr(command, "params", ()) if ours in (*p.opts, *p.secondary_opts)), None)
        if param is not None:
            return not param.is_flag
    return False


_SHOWN = 80  # characters of the user's text a usage error repeats: a page pasted unquoted made the line a page


def _cut(text: str) -> str:
    """``text`` for a one-line error: control characters escaped (a pasted line break is ``\\n``), cut past
    :data:`_SHOWN` characters, with its length."""
    shown = text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m[0])[1:-1], shown)


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
        from .options import Interrupted

        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # what a write left is the writer's to keep whole (files.atomic_path, write_together)
            raise Interrupted("interrupted (Ctrl-C)") from None

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:
            args = _as_ours(self, args)
        # click reads "-sys" as the short options -s -y -s, so it would complain of "-s": look first
        ended = args.index("--") if "--" in args else len(args)  # after `--`, every word is text, never an option
        literal = set(args[ended + 1 :])
        grouped = next((a for a in args[:ended] if a in _GROUPED), None)
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
            raise
        except UsageError as e:
            # click's parser raises "Option '--stop' requires an argument" with no context, so the error's pointer
            # named the root's help (`npgpt --help`), which lists none of this command's options: this command's
            if e.ctx is None:
                e.ctx = ctx
            _repeat_the_value(e)
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
        # a text past a line (a page pasted unquoted) is not repeated: the command to pipe it in is said instead
        given = shlex.quote(text) if _typeable(text) else "< FILE"
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


def _has(command: Any, ours: str) -> bool:
    """Whether ``command`` has the option ``ours`` (or the argument, upper-cased: ``PROMPT``, which a command's
    ``TEXT`` is too: llama-tokenize's -p is npgpt tokenize's text)."""
    names = (ours, "TEXT") if ours == "PROMPT" else (ours,)
    return any(
        n in (*p.opts, *getattr(p, "secondary_opts", ()), (p.name or "").upper()) for p in command.params for n in names
    )


def _ours(command: Any, theirs: str) -> str | None:
    """``command``'s spelling of another tool's ``theirs`` (``--temp``: ``--temperature``), ``theirs`` itself where
    the command has it, or None."""
    if _has(command, theirs):
        return theirs
    theirs = _snake(theirs)  # nanoGPT's --learning_rate typed --learning-rate, as every other option is spelt
    known = OPTIONS.get(theirs, theirs.replace("_", "-") if theirs.startswith("--") else ())
    return next((o for o in ((known,) if isinstance(known, str) else known) if _has(command, o)), None)


def _snake(theirs: str) -> str:
    """``--learning-rate`` as :data:`OPTIONS` spells it, ``--learning_rate``, where only that spelling is there."""
    snake = "--" + theirs[2:].replace("-", "_")
    return snake if theirs.startswith("--") and theirs not in OPTIONS and snake in OPTIONS else theirs


def _as_ours(command: Any, args: list[str]) -> list[str]:
    """``args`` with another tool's spelling of one of ``command``'s options (:data:`ACCEPTED`, or a ``--snake_case``
    of its ``--kebab-case``) written as the command's own: ``--temp 0.7`` as ``--temperature 0.7``, ``--top_k=200``
    as ``--top-k=200``; llama.cpp's ``-p TEXT`` (``--prompt``, nanoGPT's ``--start``) as the text argument, after
    ``--`` so that text starting with '-' stays text; ``--start=FILE:name`` as ``--prompt-file name``."""
    ended = args.index("--") if "--" in args else len(args)
    out: list[str] = []
    texts: list[str] = []
    i = 0
    while i < ended:
        arg = args[i]
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        ours = None if _has(command, name) else _accepted(command, name)
        if ours is None and name in ("-m", "--model") and not _has(command, name) and _has(command, "MODEL"):
            ours = "PROMPT"  # npgpt info -m 124M, as every other command takes its model: the MODEL argument
        if ours is None:
            out.append(arg)
        elif ours != "PROMPT":
            out += ([f"{ours}={value}"] if ours.startswith("--") else [ours, value]) if eq else [ours]  # -n=3: "=3"
        else:
            if not eq:  # the value is the next word (none: click's "requires an argument" for npgpt's own spelling)
                if i + 1 >= ended:
                    return args
                i, value = i + 1, args[i + 1]
            if name == "--start" and value.startswith("FILE:"):
                if not _has(command, "--prompt-file"):  # no file option to read it: the hint (`npgpt lens - < FILE`)
                    return args
                out += ["--prompt-file", value.removeprefix("FILE:")]
            else:
                texts.append(value)
        i += 1
    rest = args[ended:]
    if texts:
        rest = ["--", *texts, *rest[1:]]
    return out + rest


def _accepted(command: Any, theirs: str) -> str | None:
    """``command``'s option (or ``PROMPT``, its text argument) that it takes ``theirs`` as, or None."""
    if _snake(theirs) in ACCEPTED:
        return _ours(command, theirs)
    kebab = theirs.replace("_", "-")
    return kebab if theirs.startswith("--") and _has(command, kebab) else None


def _hint_message(command: Any, name: str, theirs: str) -> str | None:
    """What ``npgpt NAME`` says of an option ``theirs`` it lacks: npgpt's spelling, what to do instead, that it
    has nothing like another tool's option; None for an option no tool npgpt knows has (click's own message)."""
    ours = _ours(command, theirs)
    if ours is not None:
        how = f'the text as an argument: npgpt {name} "TEXT"' if ours == "PROMPT" else ours
        if theirs == "--start" and _has(command, "--prompt-file"):
            how += " (nanoGPT's FILE:name is --prompt-file name)"
        elif theirs == "--start":
            how += f" (nanoGPT's FILE:name is read from stdin: npgpt {name} - < name)"
        return f"No such option: {theirs}. npgpt takes {how}"
    instead = next((t for c, t in INSTEAD.get(theirs, ()) if c in ("*", name) or _has(command, c)), None)
    if instead is not None:
        return f"No such option: {theirs}; {instead.format(cmd=name)}"
    if _snake(theirs) in OPTIONS or theirs in INSTEAD:  # click's closest spellings would be a wrong neighbour
        return f"No such option: {theirs}; npgpt {name} has nothing like it"  # the error adds where help is
    return None


class Group(TyperGroup):
    """The ``npgpt`` group, whose unknown-command error names npgpt's version of an Ollama command, and whose
    unknown-option error says where a command's option goes (``npgpt -m gpt2 generate``) or names npgpt's
    spelling of another tool's (Ollama's ``-v``: ``--version``), as a command's does."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:
            args = _ollama_args(self.commands, args)
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
            if args and args[0] == "run":  # Ollama's `run MODEL [PROMPT]`: the npgpt command for these arguments
                e.message = f"No such command 'run'. npgpt's is {_ollama_run(args[1:])}"
            elif args and args[0] in COMMANDS:
                e.message = f"No such command {args[0]!r}. {COMMANDS[args[0]]}"
            raise


def _ollama_run(args: list[str]) -> str:
    """npgpt's command for ``ollama run MODEL [PROMPT]``: generate for a prompt, else chat."""
    import shlex

    model = [a for a in args[:1] if not a.startswith("-")]
    prompt = " ".join(args[1:]) if model else ""
    with_model = f" -m {shlex.quote(model[0])}" if model else " -m MODEL"
    if prompt:
        return f"generate: npgpt generate {shlex.quote(prompt)}{with_model}"
    return f"chat: npgpt chat{with_model} (or for one prompt: npgpt generate PROMPT{with_model})"


def as_flags(e: NpgptError) -> str:
    """``e``'s message in the CLI's words: the library names the Python API's keyword arguments, the user
    typed the flags. A keyword given a quoted value becomes the flag and the value (``dtype='int8'`` ->
    ``--dtype int8``), and the error's own parameter named bare becomes its flag (``max_new_tokens must
    be`` -> ``--max-new-tokens must be``). Only options whose flags are their names with dashes
    (tests/test_cli_usage.py checks it)."""
    message = as_flags_in(_KEYWORD.sub(lambda m: f"{_flag(m['name'])} {m['value']}", str(e)), e.keywords)
    if e.param not in _FLAGS and e.param not in e.keywords:
        return message
    return re.sub(rf"(?<![\w-]){e.param}(?![\w-])", _flag(e.param), message)


def as_flags_in(text: str, keywords: Iterable[str]) -> str:
    """``text`` with each of ``keywords`` written as ``name=value`` or ``name=`` given as its flag: ``seq_len=512``
    -> ``--seq-len 512``, ``out='my run'`` -> ``--out 'my run'``, ``resume=True`` -> ``--resume``, ``lower lr=``
    -> ``lower --lr``. A name without ``=`` is prose (a folder named ``out``) and is left as it is."""
    import shlex

    names = "|".join(sorted(map(re.escape, keywords), key=len, reverse=True))
    if not names:
        return text

    def flag(m: re.Match[str]) -> str:
        quoted = m["single"] if m["single"] is not None else m["double"]
        value = shlex.quote(quoted) if quoted is not None else m["bare"]
        return _flag(m["name"]) if value in (None, "True") else f"{_flag(m['name'])} {value}"

    value = r"(?:'(?P<single>[^']*)'|\"(?P<double>[^\"]*)\"|(?P<bare>[^\s,;:()'\"]+))?"
    return re.sub(rf"(?<![\w-])(?P<name>{names})={value}", flag, text)


def _flag(name: str) -> str:
    return _RENAMED.get(name, "--" + name.replace("_", "-"))


_RENAMED = {"fmt": "--to", "allow_special": "--special-tokens"}  # convert()'s format: npgpt convert's --to


# The Python API's keywords that are CLI options of the same name: sampling's, the load's, eval's and attention's.
# (stop_at_eot, logprobs, skip_leading_space and logit_bias are the API's and the server's only.)
_API_ONLY = {"stop_at_eot", "logprobs", "skip_leading_space", "logit_bias"}
_FLAGS = {f.name for f in dataclasses.fields(SamplingParams)} - _API_ONLY | {
    "dtype",
    "backend",
    "window",
    "stride",
    "batch_size",
    "layer",  # npgpt attention's, as lens.attention_pattern names them
    "head",
}
_KEYWORD = re.compile(rf"(?<![\w-])(?P<name>{'|'.join(sorted(_FLAGS))})=(?P<q>['\"])(?P<value>[^'\"]*)(?P=q)")
