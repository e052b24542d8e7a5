"""``npgpt generate``, ``npgpt next`` and ``npgpt tokenize``: text in, tokens and text out.

A prompt comes from the argument, from stdin (``-``, or text piped in with no argument), from
``--prompt-file FILE`` (the whole file is one prompt) or ``--batch-file FILE`` (one prompt per line,
run in batches of up to 256 rows). Text read from stdin or a prompt file loses one trailing newline (``echo``'s).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import NpgptError
from .options import (
    MODEL_ENV,
    PATH,
    PROMPT_FIX,
    PROMPT_LIMIT,
    TEXT_LIMIT,
    UNTIL_FULL,
    BackendOpt,
    DtypeOpt,
    FrequencyPenaltyOpt,
    IgnoreEosOpt,
    JsonOpt,
    LogitBiasOpt,
    MinPOpt,
    ModelOpt,
    PresencePenaltyOpt,
    RepetitionPenaltyOpt,
    TemperatureOpt,
    TopKOpt,
    TopPOpt,
    console,
    load_model,
    logit_bias_value,
    model_value,
    path_value,
    print_json,
    print_notice,
    random_seed,
    read_text,
    unescape,
    until_full,
)

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

SamplingOpts = dict  # the keyword arguments of npgpt.sampling.SamplingParams
MAX_N = 128  # completions per prompt, as OpenAI's n (and npgpt serve's) allows: each is a row of one batch
# Rows decoded together, as vLLM's max_num_seqs (256): a --batch-file of 10,000 prompts was one batch of 10,000 rows,
# whose logits alone (2 GB a step) and caches outgrew memory; it runs 256 rows at a time.
MAX_ROWS = 256


def generate(
    ctx: typer.Context,
    prompt: Annotated[
        str | None, typer.Argument(help="The text to continue; - (or nothing, with text piped in) reads it from stdin.")
    ] = None,
    prompt_file: Annotated[
        Path | None,
        typer.Option(
            "--prompt-file",
            parser=path_value,
            metavar=PATH,
            help="Read ONE prompt from a file (it may span lines); - is stdin.",
        ),
    ] = None,
    batch_file: Annotated[
        Path | None,
        typer.Option(
            "--batch-file",
            parser=path_value,
            metavar=PATH,
            help="Read prompts from a file, one per line; run in batches of up to 256 rows (or -f, --file).",
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            hidden=True,
            parser=path_value,
            metavar=PATH,
            help="--batch-file, told apart from llama.cpp's -f.",
        ),
    ] = None,
    model: ModelOpt = None,
    backend: BackendOpt = "numpy",
    dtype: DtypeOpt = "float32",
    max_new_tokens: Annotated[
        int,
        typer.Option(
            envvar="LLAMA_ARG_N_PREDICT",
            help="Tokens to generate per prompt (-1: until end of text or the context is full); not given, fewer "
            "where the prompt leaves less of the context.",
        ),
    ] = 64,
    temperature: TemperatureOpt = 1.0,
    top_k: TopKOpt = 0,
    top_p: TopPOpt = 1.0,
    min_p: MinPOpt = 0.0,
    repetition_penalty: RepetitionPenaltyOpt = 1.0,
    presence_penalty: PresencePenaltyOpt = 0.0,
    frequency_penalty: FrequencyPenaltyOpt = 0.0,
    seed: Annotated[
        int | None, typer.Option(callback=random_seed, help="Seed for reproducible sampling (-1: random, as unset).")
    ] = None,
    stop: Annotated[
        list[str] | None,
        typer.Option(help=r"Stop at this text (repeatable); escapes as in the playground: \n, \t, \\, \u00e9."),
    ] = None,
    ignore_eos: IgnoreEosOpt = False,
    logit_bias: LogitBiasOpt = None,
    escape: Annotated[
        bool,
        typer.Option(
            "--escape", "-e", help=r"Read \n, \t, \\, \u00e9 in the prompt as the characters (llama.cpp's -e)."
        ),
    ] = False,
    n: Annotated[int, typer.Option("-n", help="Completions per prompt.")] = 1,
    stream: Annotated[bool, typer.Option("--stream", help="Print text as it is generated.")] = False,
    echo: Annotated[bool, typer.Option(help="Print the prompt before the completion.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Continue a prompt.

    Example: npgpt generate "And God said" --max-new-tokens 40 --temperature 0.8 --seed 1
    or `echo "And God said" | npgpt generate`
    """
    if not 1 <= n <= MAX_N:  # llama.cpp's -n 4096 (tokens) ran 4096 rows in one batch, until memory ran out
        from .parsing import typed_as

        spelt = typed_as("-n")  # nanoGPT's --num_samples, transformers' --num_return_sequences: no llama.cpp -n
        raise NpgptError(
            f"{spelt} is completions per prompt, from 1 to {MAX_N} (OpenAI's limit on n), got {n}"
            + (
                ""
                if spelt != "-n"
                else "; for tokens until the context is full (llama.cpp's -n -1), use --max-new-tokens -1"
                if n in UNTIL_FULL
                else f"; for {n if n > MAX_N else 'a number of'} new tokens (llama.cpp's -n), use --max-new-tokens"
                + (f" {n}" if n > MAX_N else "")
            )
        )
    if as_json and stream:
        raise NpgptError("--json prints one object at the end; drop --stream (or --json)")
    if file is not None and batch_file is not None:
        raise NpgptError("give --batch-file once (-f and --file are its other names)")
    prompts = _prompts(prompt, prompt_file, batch_file or file)
    if escape:  # llama.cpp's -e: its prompt's escapes, read as --stop's are (the playground's)
        prompts = [unescape(p) for p in prompts]
    if file is not None and len(prompts) > 1:  # llama.cpp's -f reads the whole file as one prompt
        print_notice(
            f"-f/--file {file}: {len(prompts)} prompts, one per line (npgpt's -f is --batch-file); "
            f"for the whole file as one prompt (llama.cpp's -f), use --prompt-file {file}"
        )
    rows = [p for p in prompts for _ in range(n)]
    fill = until_full(max_new_tokens)  # each prompt's room is known once the model (its context) is loaded
    source = ctx.get_parameter_source("max_new_tokens")
    given = source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")  # LLAMA_ARG_N_PREDICT too
    sampling = sampling_options(
        # not given: the library's default, which a prompt near the context's end shortens rather than refuses
        max_new_tokens=1 if fill else max_new_tokens if given else None,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        seed=seed,
        stop=stop,
        stop_at_eot=not ignore_eos,
        logit_bias=logit_bias_value(logit_bias),
    )
    if n > 1 and not given:  # llama.cpp's `-n 128` meant tokens
        print_notice(
            f"-n {n}: {n} completions of each prompt, up to {'the context' if fill else max_new_tokens} tokens each; "
            f"for {n} new tokens (llama.cpp's -n {n}), use --max-new-tokens {n}"
        )
    m = load_model(model, backend, dtype)
    groups = row_groups(rows)
    # with -1, rows of one length share a batch and its room: the context less the prompt (read as the library reads it)
    lengths = [len(m.tokenizer.encode(r, allow_special=True)) for r in rows] if fill else []
    groups = (
        [[i for i in g if lengths[i] == k] for g in groups for k in sorted({lengths[i] for i in g})] if fill else groups
    )

    def room(group: list[int]) -> SamplingOpts:
        # a prompt that fills the context gets 1: the library's error says to shorten the prompt
        return {**sampling, "max_new_tokens": max(1, m.config.n_ctx - lengths[group[0]])} if fill else sampling

    out = sys.stdout
    if len(rows) == 1 and stream:
        deltas = m.stream(rows[0], **room([0]))  # a request that cannot run stops here, before any output
        if echo:
            out.write(rows[0])
        try:
            for delta in deltas:
                out.write(delta)
                out.flush()
        finally:  # also on Ctrl-C: the shell's prompt starts on a line of its own, not after the text
            out.write("\n")
            out.flush()
        return
    # A batch: with --stream each completion is printed as soon as its row finishes.
    texts, finish, used = [""] * len(rows), [""] * len(rows), [0] * len(rows)
    for group in groups:
        for ev in m.events([rows[i] for i in group], **room(group)):
            i = group[ev.row]
            texts[i] += ev.text
            used[i] += ev.token is not None
            finish[i] = ev.finish_reason or finish[i]
            if stream and ev.finish_reason:
                _print_completion(i, rows, texts, echo)
    if as_json:
        print_json(
            {
                "model": m.source,
                "choices": [
                    {
                        "index": i,
                        "prompt": rows[i],
                        "text": texts[i],
                        "finish_reason": finish[i],
                        "completion_tokens": used[i],
                    }
                    for i in range(len(rows))
                ],
            }
        )
    elif not stream:
        for i in range(len(rows)):
            _print_completion(i, rows, texts, echo)


def row_groups(rows: list[str], most: int | None = None) -> list[list[int]]:
    """The rows' indices in batches of at most ``most`` rows (more only where one prompt has more rows), every row of
    a prompt in the same batch and in order, so that a seeded row draws what it draws in one batch of all
    (sampling.row_rng numbers a prompt's samples within its batch)."""
    most = MAX_ROWS if most is None else most
    by_prompt: dict[str, list[int]] = {}
    for i, prompt in enumerate(rows):
        by_prompt.setdefault(prompt, []).append(i)
    groups: list[list[int]] = [[]]
    for indices in by_prompt.values():
        if groups[-1] and len(groups[-1]) + len(indices) > most:
            groups.append([])
        groups[-1] += indices
    return [sorted(g) for g in groups if g]


def sampling_options(*, stop: list[str] | None, **knobs: object) -> SamplingOpts:
    """The sampling keyword arguments, checked by ``SamplingParams`` before any (slow) model load;
    ``--stop`` values have their escape sequences read (``\\n`` is a newline)."""
    from ..sampling import SamplingParams

    sampling = {**knobs, "stop": tuple(unescape(s) for s in stop or ())}
    SamplingParams(**sampling)  # type: ignore[arg-type]
    return sampling


def _print_completion(i: int, rows: list[str], texts: list[str], echo: bool) -> None:
    if len(rows) > 1:
        sys.stdout.write(f"--- {i} ---\n")
    sys.stdout.write((rows[i] if echo else "") + texts[i] + "\n")
    sys.stdout.flush()


def _chomp(text: str) -> str:
    """Drop one trailing newline: ``echo`` and text editors end a file with one."""
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def text_argument(
    text: str | None,
    what: str = "a prompt",
    limit: int = PROMPT_LIMIT,
    fix: str = PROMPT_FIX,
    file_option: str | None = None,
) -> str | None:
    """The argument's text; ``-``, or no argument while text is piped in, reads stdin (None: neither), at most
    ``limit`` bytes of it (``fix``: how to give a part). ``file_option``: the command's option for a file's text."""
    if text == "-" or (text is None and sys.stdin is not None and not sys.stdin.isatty()):
        return _chomp(read_text(Path("-"), what, limit=limit, fix=fix))
    if text is not None and _names_a_file(text):
        # `npgpt generate prompt.txt` continued the words "prompt.txt", as llama.cpp's -p and Ollama's run read them,
        # while the user meant the file's text (llama.cpp's -f): still the text as typed, said so with the way
        import importlib
        import shlex

        from .parsing import _click

        ctx = importlib.import_module(f"{_click.__name__}.globals").get_current_context(silent=True)
        command = f"npgpt {ctx.info_name}" if ctx is not None else "npgpt COMMAND"
        quoted = shlex.quote(text)
        if Path(text).suffix.lower() in _MODEL_SUFFIXES and command != "npgpt tokenize":
            way = f"for the model, use -m {quoted}"
        elif file_option is not None:
            way = f"for the file's text, use {file_option} {quoted}"
        else:
            way = f"for the file's text, pipe it in: {command} - < {quoted}"
        print_notice(f"taking {text!r} as the text itself, though it names a file here; {way}")
    return text


_MODEL_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf"}


def _names_a_file(text: str) -> bool:
    """Whether ``text``, one word, is the path of a file that exists."""
    if len(text) > 4096 or not text.strip() or any(c.isspace() for c in text):
        return False
    try:
        return Path(text).expanduser().is_file()
    except (OSError, ValueError, RuntimeError):  # a name too long, a NUL, ~nosuchuser
        return False


def _prompts(prompt: str | None, prompt_file: Path | None, batch_file: Path | None) -> list[str]:
    given = [
        name
        for name, v in (("PROMPT", prompt), ("--prompt-file", prompt_file), ("--batch-file", batch_file))
        if v is not None
    ]
    if len(given) > 1:
        raise NpgptError(f"give one of PROMPT, --prompt-file FILE or --batch-file FILE, not {' and '.join(given)}")
    if batch_file is not None:
        # A file of many prompts (run a bounded batch at a time) is bounded as a text to score is; each prompt
        # as one prompt is, before any is tokenised: a context holds a few KB of text.
        fix = "put fewer prompts in a file, e.g. `split -l 100000 FILE part-`, and run each part"
        lines = read_text(batch_file, "prompts", limit=TEXT_LIMIT, fix=fix).splitlines()
        source = "standard input" if str(batch_file) == "-" else str(batch_file)
        for number, line in enumerate(lines, 1):
            if len(line) > PROMPT_LIMIT // 4 and len(line.encode()) > PROMPT_LIMIT:  # a character is 1 to 4 bytes
                raise NpgptError(
                    f"{source} line {number} is over {PROMPT_LIMIT >> 20} MiB, the most npgpt reads as a prompt; "
                    f"{PROMPT_FIX}"
                )
        lines = [line for line in lines if line.strip()]
        if not lines:
            raise NpgptError(f"{batch_file} has no prompts; put one prompt per line")
        return lines
    if prompt_file is not None:
        text = _chomp(read_text(prompt_file, "a prompt", limit=PROMPT_LIMIT, fix=PROMPT_FIX))
        if not text:
            raise NpgptError(f"{prompt_file} is empty; put the prompt in it")
        return [text]
    text_given = text_argument(prompt, file_option="--prompt-file")
    if text_given is None:
        raise NpgptError(
            "no prompt: give a PROMPT, pipe text in (`echo text | npgpt generate`), "
            "or use --prompt-file FILE or --batch-file FILE"
        )
    if not text_given:
        raise NpgptError("the prompt is empty; give a PROMPT (or pipe some text in) to continue")
    return [text_given]


def tokenize(
    text: Annotated[
        str | None,
        typer.Argument(help="Text to split into GPT-2 tokens; - (or nothing, with text piped in) reads stdin."),
    ] = None,
    ids_only: Annotated[bool, typer.Option("--ids", help="Print only the ids.")] = False,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            callback=model_value,
            envvar=MODEL_ENV,
            help="Split as this model's tokenizer does (a path or a name, as llama-tokenize's -m): a character-level "
            "model's, or GPT-2's with the tokens a fine-tune added; default: GPT-2's.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show how GPT-2 splits text into tokens, with their ids (<|endoftext|> is id 50256, as generate reads it).

    Example: npgpt tokenize "Hello, world! 👋"  or  npgpt tokenize "Hello" -m runs/chars
    """
    from rich.text import Text

    text = text_argument(text, "text to tokenize", TEXT_LIMIT, "tokenize it in parts, e.g. `split -C 64M FILE part-`")
    if text is None:
        raise NpgptError("no text: give TEXT, or pipe text in")
    tok = _tokenizer(model)
    ids = tok.encode(text, allow_special=True)  # as generate reads the prompt
    if as_json:
        print_json(
            {
                "ids": ids,
                "tokens": [
                    {"id": t, "text": _token_text(tok.token_bytes(t)), "bytes": list(tok.token_bytes(t))} for t in ids
                ],
                "n_tokens": len(ids),
                "n_characters": len(text),
            }
        )
        return
    screen = console()
    if ids_only:
        screen.print(" ".join(map(str, ids)))
        return
    colours = ["on dark_blue", "on dark_green", "on dark_red", "on dark_magenta", "on grey30"]
    line = Text()
    for i, t in enumerate(ids):
        line.append(_token_text(tok.token_bytes(t)), style=colours[i % len(colours)])
    screen.print(line)
    screen.print(" ".join(f"{t}" for t in ids))
    screen.print(Text(f"{len(ids)} tokens, {len(text)} characters", style="dim"))


def _tokenizer(model: str | None) -> Tokenizer:
    """GPT-2's tokenizer, or the one ``model`` keeps with its weights (read without loading them): a model trained
    with --tokenizer char was shown in GPT-2's tokens, which it never reads."""
    from ..tokenizer import Tokenizer

    if model is None:
        return Tokenizer()
    from ..char_tokenizer import tokenizer_from_spec
    from ..formats import tokenizer_spec
    from ..registry import resolve

    path, _ = resolve(model)
    return tokenizer_from_spec(tokenizer_spec(path))


def _token_text(piece: bytes) -> str:
    """A token's text; a token holding part of a UTF-8 character shows its bytes (⟨f0 9f⟩)."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "⟨" + " ".join(f"{b:02x}" for b in piece) + "⟩"


def next_(
    prompt: Annotated[
        str | None,
        typer.Argument(help="Text whose next token to predict; - (or nothing, with text piped in) reads stdin."),
    ] = None,
    k: Annotated[int, typer.Option("-k", help="How many candidates to show.")] = 10,
    model: ModelOpt = None,
    backend: BackendOpt = "numpy",
    dtype: DtypeOpt = "float32",
    as_json: JsonOpt = False,
) -> None:
    """Show the k most likely next tokens as a bar chart: the model made visible.

    Example: npgpt next "The capital of France is" -k 5
    """
    from rich.text import Text

    if k < 1:
        raise NpgptError(f"-k must be >= 1, got {k}")
    prompt = text_argument(prompt)
    if not prompt:
        raise NpgptError("no prompt: give a PROMPT, or pipe text in")
    m = load_model(model, backend, dtype)
    n_tokens = len(m.tokenizer.encode(prompt, allow_special=True))
    if n_tokens > m.config.n_ctx:  # next_tokens reads the last n_ctx tokens: said, where generate refuses
        print_notice(
            f"the prompt has {n_tokens} tokens, more than the model's context of {m.config.n_ctx}: the next "
            f"token is predicted from its last {m.config.n_ctx}"
        )
    top = m.next_tokens(prompt, k=k)
    if as_json:
        print_json(
            {"model": m.source, "prompt": prompt, "tokens": [{"id": i, "text": text, "prob": p} for i, text, p in top]}
        )
        return
    screen = console()
    width = 40
    for _id, text, p in top:
        bar = "█" * max(1, round(p * width)) if p >= 0.5 / width else "▏"
        screen.print(Text.assemble(f"{text!r:>16} {_id:>6}  ", (f"{bar:<{width}}", "cyan"), f" {p:7.2%}"))
