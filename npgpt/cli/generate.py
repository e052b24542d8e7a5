"""``npgpt generate``, ``npgpt next`` and ``npgpt tokenize``: text in, tokens and text out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import NpgptError
from .options import BackendOpt, DtypeOpt, ModelOpt, console, load_model


def generate(
    prompt: Annotated[str | None, typer.Argument(help="The text to continue.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read prompts from a file, one per line; run as one batch.")] = None,  # noqa: E501
    model: ModelOpt = None,
    backend: BackendOpt = "numpy",
    dtype: DtypeOpt = "float32",
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per prompt.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 = greedy; higher = more random.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample among the k most likely tokens (0 = off).")] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass in (0, 1] (1 = off).")] = 1.0,
    min_p: Annotated[float, typer.Option(help="Drop tokens below min_p × the top probability.")] = 0.0,
    repetition_penalty: Annotated[float, typer.Option(help="> 1 discourages repeats (1 = off).")] = 1.0,
    presence_penalty: Annotated[float, typer.Option(help="OpenAI-style, in [-2, 2].")] = 0.0,
    frequency_penalty: Annotated[float, typer.Option(help="OpenAI-style, in [-2, 2].")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop at this text (repeatable).")] = None,
    n: Annotated[int, typer.Option("-n", help="Completions per prompt.")] = 1,
    stream: Annotated[bool, typer.Option("--stream", help="Print text as it is generated.")] = False,
    echo: Annotated[bool, typer.Option(help="Print the prompt before the completion.")] = True,
) -> None:
    """Continue a prompt.

    Example: `npgpt generate "And God said" --max-new-tokens 40 --temperature 0.8 --seed 1`
    """
    prompts = _prompts(prompt, file)
    if n < 1:
        raise NpgptError(f"-n must be >= 1, got {n}")
    rows = [p for p in prompts for _ in range(n)]
    sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                    min_p=min_p, repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                    frequency_penalty=frequency_penalty, seed=seed, stop=tuple(stop or ()))
    from ..sampling import SamplingParams

    SamplingParams(**sampling)  # validate before the (slow) load
    m = load_model(model, backend, dtype)
    out = sys.stdout
    if len(rows) == 1 and stream:
        if echo:
            out.write(rows[0])
        for delta in m.stream(rows[0], **sampling):
            out.write(delta)
            out.flush()
        out.write("\n")
        return
    # A batch: with --stream each completion is printed as soon as its row finishes.
    texts = [""] * len(rows)
    for ev in m.events(rows, **sampling):
        texts[ev.row] += ev.text
        if stream and ev.finish_reason:
            _print_completion(ev.row, rows, texts, echo)
    if not stream:
        for i in range(len(rows)):
            _print_completion(i, rows, texts, echo)


def _print_completion(i: int, rows: list[str], texts: list[str], echo: bool) -> None:
    if len(rows) > 1:
        sys.stdout.write(f"--- {i} ---\n")
    sys.stdout.write((rows[i] if echo else "") + texts[i] + "\n")
    sys.stdout.flush()


def _prompts(prompt: str | None, file: Path | None) -> list[str]:
    if (prompt is None) == (file is None):
        raise NpgptError("give a PROMPT or --file FILE (one prompt per line), not both or neither")
    if file is not None:
        try:
            lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as e:
            raise NpgptError(f"cannot read prompts from {file}: {e.strerror}") from None
        if not lines:
            raise NpgptError(f"{file} has no prompts; put one prompt per line")
        return lines
    if not prompt:
        raise NpgptError("the prompt is empty; give some text to continue")
    return [prompt]


def tokenize(text: Annotated[str, typer.Argument(help="Text to split into GPT-2 tokens.")],
             ids_only: Annotated[bool, typer.Option("--ids", help="Print only the ids.")] = False) -> None:
    """Show how GPT-2 splits text into tokens, with their ids.

    Example: `npgpt tokenize "Hello, world! 👋"`
    """
    from rich.text import Text

    from ..tokenizer import Tokenizer

    tok = Tokenizer()
    ids = tok.encode(text)
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
    screen.print(f"[dim]{len(ids)} tokens, {len(text)} characters[/dim]")


def _token_text(piece: bytes) -> str:
    """A token's text; a token holding part of a UTF-8 character shows its bytes (⟨f0 9f⟩)."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "⟨" + " ".join(f"{b:02x}" for b in piece) + "⟩"


def next_(
    prompt: Annotated[str, typer.Argument(help="Text whose next token to predict.")],
    k: Annotated[int, typer.Option("-k", help="How many candidates to show.")] = 10,
    model: ModelOpt = None,
    backend: BackendOpt = "numpy",
    dtype: DtypeOpt = "float32",
) -> None:
    """Show the k most likely next tokens as a bar chart: the model made visible.

    Example: `npgpt next "The capital of France is" -k 5`
    """
    if k < 1:
        raise NpgptError(f"-k must be >= 1, got {k}")
    m = load_model(model, backend, dtype)
    screen = console()
    width = 40
    for _id, text, p in m.next_tokens(prompt, k=k):
        bar = "█" * max(1, round(p * width)) if p >= 0.5 / width else "▏"
        screen.print(f"{text!r:>16} {_id:>6}  [cyan]{bar:<{width}}[/cyan] {p:7.2%}")
