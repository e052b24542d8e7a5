"""What llama.cpp, Ollama and nanoGPT call npgpt's commands and options.

An unknown command or option that one of them spells this way is answered with npgpt's own name
("No such option: --temp. npgpt takes --temperature"), not with click's closest spellings
(``--temp``: "--help, --stop, --stream"; ``--n-predict``: "--no-echo").
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
from typing import Any

from typer.core import TyperCommand, TyperGroup

from ..errors import NpgptError
from ..sampling import SamplingParams

# typer 0.2x carries its own copy of click, whose exceptions are not click's.
_click: Any = importlib.import_module("typer._click" if importlib.util.find_spec("typer._click") else "click")
NoSuchOption, UsageError = _click.exceptions.NoSuchOption, _click.exceptions.UsageError

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
    "--num_samples": "-n",
    "--top_k": "--top-k",
    "--top_p": "--top-p",
    "--min_p": "--min-p",
    "--repeat-penalty": "--repetition-penalty",
    "--repeat_penalty": "--repetition-penalty",
    "--presence_penalty": "--presence-penalty",
    "--frequency_penalty": "--frequency-penalty",
    "-s": "--seed",
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
}

# Single-dash names of several letters, which click would split into short options.
_GROUPED = {name for name in OPTIONS if not name.startswith("--") and len(name) > 2}

# Ollama's commands -> npgpt's.
COMMANDS = {
    "run": "generate (one prompt: npgpt generate PROMPT -m MODEL) or chat (npgpt chat -m MODEL)",
    "pull": "download",
    "show": "info",
    "ls": "list",
    "remove": "rm",
}


class Command(TyperCommand):
    """A typer command whose unknown-option error names npgpt's spelling of another tool's option."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # click reads "-sys" as the short options -s -y -s, so it would complain of "-s": look first
        grouped = next((a for a in args[: args.index("--") if "--" in args else None] if a in _GROUPED), None)
        if grouped is not None:
            self._hint(ctx, grouped)
            raise NoSuchOption(grouped, ctx=ctx)  # a command without npgpt's option: no "-s" riddle either
        try:
            return super().parse_args(ctx, args)
        except NoSuchOption as e:
            self._hint(ctx, e.option_name)
            raise

    def _hint(self, ctx: Any, theirs: str) -> None:
        """NoSuchOption naming npgpt's spelling of ``theirs``, where this command has it; else nothing."""
        known = OPTIONS.get(theirs, theirs.replace("_", "-") if theirs.startswith("--") else ())
        has = [o for o in ((known,) if isinstance(known, str) else known) if self._has(o)]
        if not has:
            return
        ours = has[0]
        how = f'the text as an argument: npgpt {ctx.info_name} "TEXT"' if ours == "PROMPT" else ours
        raise NoSuchOption(theirs, message=f"No such option: {theirs}. npgpt takes {how}", ctx=ctx) from None

    def _has(self, ours: str) -> bool:
        return any(ours in (*p.opts, (p.name or "").upper()) for p in self.params)


class Group(TyperGroup):
    """The ``npgpt`` group, whose unknown-command error names npgpt's version of an Ollama command."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except UsageError as e:
            if args and args[0] in COMMANDS:
                e.message = f"No such command {args[0]!r}. npgpt's is {COMMANDS[args[0]]}"
            raise


def as_flags(e: NpgptError) -> str:
    """``e``'s message in the CLI's words: the library names the Python API's keyword arguments, the user
    typed the flags. A keyword given a quoted value becomes the flag and the value (``dtype='int8'`` ->
    ``--dtype int8``), and the error's own parameter named bare becomes its flag (``max_new_tokens must
    be`` -> ``--max-new-tokens must be``). Only options whose flags are their names with dashes
    (tests/test_cli_usage.py checks it)."""
    message = _KEYWORD.sub(lambda m: f"{_flag(m['name'])} {m['value']}", str(e))
    if e.param not in _FLAGS:
        return message
    return re.sub(rf"(?<![\w-]){e.param}(?![\w-])", _flag(e.param), message)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# The Python API's keywords that are CLI options of the same name: sampling's, the load's and eval's.
# (stop_at_eot, logprobs and skip_leading_space are the API's and the server's only.)
_FLAGS = {f.name for f in dataclasses.fields(SamplingParams)} - {"stop_at_eot", "logprobs", "skip_leading_space"} | {
    "dtype",
    "backend",
    "window",
    "stride",
    "batch_size",
}
_KEYWORD = re.compile(rf"(?<![\w-])(?P<name>{'|'.join(sorted(_FLAGS))})=(?P<q>['\"])(?P<value>[^'\"]*)(?P=q)")
