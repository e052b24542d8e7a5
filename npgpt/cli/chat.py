"""``npgpt chat``: talk to a model in the terminal, over the same template as the server's chat
endpoint (:mod:`npgpt.chat`).

Replies stream as they are generated. The history is kept within the model's context: when the
transcript plus room for a reply no longer fits, the oldest turns are dropped, with a notice.
Each line is one message; an empty line is skipped. A line that starts with ``/`` is a command, as in
Ollama: ``/reset`` (or Ollama's ``/clear``) forgets the conversation (the ``--system`` message stays),
``/exit`` (or ``/quit``, ``/bye``) or Ctrl-D ends it, ``/help`` (or ``/?``) lists them; any other gets a
one-line hint and is not sent to the model (``//`` sends a line that starts with ``/``: ``//etc`` is the
message ``/etc``). As in Ollama, a line starting with three double quotes begins a message of several lines, which
ends at a line ending with them. Ctrl-C stops a reply. Lines can be piped in: ``printf 'Hello\\n/reset\\nHi\\n' | npgpt
chat``; piped, a message the chat refuses (an unknown command, one too long for the context) ends it
with exit status 1.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import NpgptError
from .generate import sampling_options
from .options import (
    PROMPT_LIMIT,
    BackendOpt,
    DtypeOpt,
    FrequencyPenaltyOpt,
    IgnoreEosOpt,
    LogitBiasOpt,
    MinPOpt,
    ModelOpt,
    PresencePenaltyOpt,
    RepetitionPenaltyOpt,
    TemperatureOpt,
    Terminated,
    TopKOpt,
    TopPOpt,
    load_model,
    logit_bias_value,
    note_chat_template,
    print_error,
    print_notice,
    random_seed,
    until_full,
)

if TYPE_CHECKING:
    from ..api import GPT2

HELP = (
    "/reset (or /clear) forgets the conversation, /exit (or /bye, Ctrl-D) ends it, Ctrl-C stops a reply; "
    '// sends a line that starts with /; """ begins and ends a message of several lines'
)
EXIT, RESET, HELP_COMMANDS = ("/exit", "/quit", "/bye"), ("/reset", "/clear"), ("/help", "/?")
BLOCK = '"""'  # Ollama's: a line starting with it begins a message of several lines, one ending with it ends it
# Ollama's other chat commands, and npgpt's way to the same end
_SETTINGS = "npgpt chat takes its settings when it starts: npgpt chat --temperature 0.5 --system TEXT"
OLLAMAS = {
    "/set": _SETTINGS,
    "/show": "npgpt info MODEL shows a model's shape and files; npgpt chat --help the settings",
    "/load": "npgpt chat talks to one model; to change it, start again with -m MODEL",
    "/save": "npgpt chat keeps no sessions or models of its own",
}


def chat_command(
    model: ModelOpt = None,
    backend: BackendOpt = "numpy",
    dtype: DtypeOpt = "float32",
    system: Annotated[str | None, typer.Option("--system", help="A system message before the conversation.")] = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(
            envvar="LLAMA_ARG_N_PREDICT",
            help="Most tokens per reply (default: a quarter of the context, at most 256; -1: until end of text or "
            "the context is full).",
            show_default=False,
        ),
    ] = None,
    temperature: TemperatureOpt = 0.8,
    top_k: TopKOpt = 40,
    top_p: TopPOpt = 1.0,
    min_p: MinPOpt = 0.0,
    repetition_penalty: RepetitionPenaltyOpt = 1.0,
    presence_penalty: PresencePenaltyOpt = 0.0,
    frequency_penalty: FrequencyPenaltyOpt = 0.0,
    seed: Annotated[
        int | None,
        typer.Option(callback=random_seed, help="Seed for reproducible replies (turn i uses seed + i; -1: random)."),
    ] = None,
    stop: Annotated[
        list[str] | None,
        typer.Option(help=r"Also stop a reply at this text (repeatable); escapes as in generate: \n, \t, \\."),
    ] = None,
    ignore_eos: IgnoreEosOpt = False,
    logit_bias: LogitBiasOpt = None,
) -> None:
    """Chat with a model in the terminal: type a message, read the reply as it is written.

    Example: npgpt chat --system "You are a helpful assistant."
    """
    from ..chat import CHAT_STOP, Conversation, chat_prompt
    from ..sampling import SamplingParams

    if sys.stdin is None:
        raise NpgptError("standard input is closed; chat reads your messages from it (type them, or pipe them in)")
    fill = until_full(max_new_tokens)  # a reply runs to the context's end; history is kept as by default
    if fill:
        max_new_tokens = None
    knobs = sampling_options(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        stop=stop,
        stop_at_eot=not ignore_eos,
        logit_bias=logit_bias_value(logit_bias),
    )
    m = load_model(model, backend, dtype)
    note_chat_template(m, "npgpt chat", "continue the text with npgpt generate")
    from ..backends import collapse_huge_pages

    collapse_huge_pages()  # a conversation runs long: ~1 s once for faster decoding (process-wide: entry points only)
    n_ctx = m.config.n_ctx
    # turn i's seed is seed + i, counted from the seed as the library reads it (>= 0: a negative one's two's
    # complement), so a turn never lands on -1, the library's "no seed": --seed -2's second reply was random
    first_seed = None if seed is None else SamplingParams(seed=seed).seed
    reply_room = max_new_tokens or max(1, min(256, n_ctx // 4))
    chat = Conversation(lambda text: len(m.tokenizer.encode(text)), budget=n_ctx - reply_room, system=system)
    if reply_room >= n_ctx:  # each refusal names its own fix: "lower or shorten them" read as both, always
        raise NpgptError(
            f"--max-new-tokens {reply_room} leaves no room in the {n_ctx}-token context for a message; "
            f"give at most {n_ctx - 1}"
        )
    system_tokens = chat.count_tokens(chat_prompt([("system", system)])) if system else 0
    if system_tokens > chat.budget:
        raise NpgptError(
            f"the --system message takes {system_tokens} tokens, more than the {chat.budget} the {n_ctx}-token "
            f"context leaves beside a reply of --max-new-tokens {reply_room}; shorten it (or lower --max-new-tokens)"
        )
    interactive = sys.stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):  # line editing and history for input(), where the platform has it
            import readline  # noqa: F401
        print_notice(f"chatting with {m.source}; {HELP}")
    # the reply's leading whitespace is dropped, as the server does, and a --stop is matched only after it
    sampling = {**knobs, "stop": (*CHAT_STOP, *knobs["stop"]), "max_new_tokens": reply_room, "skip_leading_space": True}
    turn, lineno = 0, 0
    while True:
        lineno += 1
        try:
            line = _read(interactive, lineno)
        except NpgptError as e:
            if not interactive:  # piped text that is not UTF-8: refused, as generate and score refuse it
                raise
            print_error(str(e))  # typed: this message is refused, the chat goes on
            continue
        if line is None:
            break
        block = None
        if line.startswith(BLOCK):  # the message is every line up to one ending with """
            try:
                block, lineno = _read_block(line[len(BLOCK) :], interactive, lineno)
            except NpgptError as e:  # a line that is not UTF-8, or the input's end within it (piped: raised)
                if not interactive:
                    raise
                print_error(str(e))
                continue
            if block is None:  # Ctrl-D within it: the conversation ends, as Ollama's does
                break
        message = line.strip() if block is None else block.strip()  # a block is text, never a command
        slash = block is None and message.startswith("/") and not message.startswith("//")
        command = message.split()[0] if slash else None
        if command in EXIT:
            return
        if command in RESET:
            chat.reset()
            print_notice("(conversation reset)")
            continue
        if command in HELP_COMMANDS:
            print_notice(HELP)
            continue
        if command is not None:  # sent to the model, a typo'd command would be a message it answers
            unknown = "is not a chat command; /help lists them (start the line with // to send it as a message)"
            hint = f"{command} is Ollama's; {OLLAMAS[command]}" if command in OLLAMAS else f"{command} {unknown}"
            if not interactive:  # as for a refused message: a script learns it from the exit status
                raise NpgptError(f"standard input line {lineno}: {hint}")
            print_error(hint)
            continue
        message = message if block is not None else message.removeprefix("/")  # "//etc" is the message "/etc"
        if not message:
            continue
        try:
            prompt, dropped = chat.ask(message)
        except NpgptError as e:  # too long for the context: refused; typed, the chat goes on
            if e.param == "budget":  # the Conversation's budget= is the context less --max-new-tokens
                e = NpgptError(
                    f"that message takes more than the {chat.budget} tokens the {n_ctx}-token context leaves beside "
                    f"a reply of --max-new-tokens {reply_room}; say less (or lower --max-new-tokens)"
                )
            if not interactive:  # a script piping messages learns it from the exit status, as for bad UTF-8
                raise e from None
            print_error(str(e))
            continue
        if dropped:
            print_notice(
                f"(dropped the {dropped} oldest message{'s' * (dropped > 1)} to fit the {n_ctx}-token context)",
                style="yellow",
            )
        ids = m.tokenizer.encode(prompt)  # token ids: a message's literal <|endoftext|> stays text
        room = {"max_new_tokens": max(1, n_ctx - len(ids))} if fill else {}
        turn_seed = None if first_seed is None else first_seed + turn
        chat.answer(_stream_reply(m, ids, {**sampling, **room, "seed": turn_seed}))
        turn += 1


def _read(interactive: bool, lineno: int, prompt: str = "> ") -> str | None:
    """The user's next line, or None at end of input (Ctrl-D). NpgptError for a line that is not UTF-8:
    piped lines are read as bytes and decoded strictly (the locale's decoding turned bad bytes into
    U+FFFD silently, or failed with a traceback); a terminal's bad bytes come as lone surrogates."""
    if interactive:
        try:
            line = input(prompt)
        except EOFError:  # Ctrl-D: the conversation ends, exit 0
            sys.stderr.write("\n")
            return None
        except KeyboardInterrupt:  # Ctrl-C at the prompt: exit 130, as llama.cpp's chat and any shell command
            sys.stderr.write("\n")
            raise
        except UnicodeDecodeError:  # a terminal whose encoding is not UTF-8, read strictly
            line = "\udcff"
        if any("\udc80" <= c <= "\udcff" for c in line):  # the bytes the locale's decoding escaped
            raise NpgptError("that message is not UTF-8 text; set your terminal to UTF-8 and type it again")
        return line
    stdin = getattr(sys.stdin, "buffer", None)
    if stdin is None:  # a text-only stdin (embedded): already decoded
        return sys.stdin.readline() or None
    data = stdin.readline(PROMPT_LIMIT)  # bounded: /dev/zero piped in has no line end
    if b"\0" in data:
        raise NpgptError(f"standard input line {lineno} is binary, not text (it holds a NUL byte); pipe in UTF-8 text")
    if len(data) == PROMPT_LIMIT and not data.endswith(b"\n"):
        raise NpgptError(
            f"standard input line {lineno} is over {PROMPT_LIMIT >> 20} MiB, far more than a GPT-2 context holds; "
            "pipe in one message per line"
        )
    try:
        return data.decode("utf-8") if data else None
    except UnicodeDecodeError as e:
        raise NpgptError(
            f"standard input line {lineno} is not UTF-8 text (byte {e.start} is 0x{data[e.start]:02x}); "
            "convert it, e.g. `iconv -f latin1 -t utf-8`"
        ) from None


def _read_block(first: str, interactive: bool, lineno: int) -> tuple[str | None, int]:
    """A message of several lines, as Ollama reads one: ``first`` (the text after the opening :data:`BLOCK`) and
    each line after it, up to one ending with :data:`BLOCK` (``first`` itself may: a message of one line). Returns
    the text (None: the input ended within it, typed: Ctrl-D) and the number of the last line read. Piped, an end of
    input within it is an error: the message was cut."""
    start, lines = lineno, []
    line = first
    while True:
        line = line.rstrip("\r\n")
        if line.endswith(BLOCK):
            lines.append(line[: -len(BLOCK)])
            return "\n".join(lines), lineno
        lines.append(line)
        lineno += 1
        read = _read(interactive, lineno, prompt="... ")
        if read is None:
            if interactive:
                return None, lineno
            raise NpgptError(
                f"standard input ended inside the message begun with {BLOCK} on line {start}; end it with a line "
                f"ending in {BLOCK}"
            )
        line = read


def _stream_reply(m: GPT2, ids: list[int], sampling: dict) -> str:
    """Print the reply to the prompt's token ``ids`` as it is generated; return it. Ids, so that a message's literal
    <|endoftext|> stays text (a text prompt would read it as the token)."""
    out, reply = sys.stdout, ""
    try:
        for ev in m.events(ids, **sampling):
            reply += ev.text
            out.write(ev.text)
            out.flush()
    except KeyboardInterrupt as e:
        if isinstance(e, Terminated):  # SIGTERM ends the chat; Ctrl-C only the reply
            out.write("\n")
            raise
        out.write(" [stopped]")
    out.write("\n")
    out.flush()
    return reply.strip()
