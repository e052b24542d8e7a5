"""``npgpt eval``: perplexity of a text file; ``npgpt score``: each token's log-probability in a text
(the library parts are :mod:`npgpt.evaluate` and :mod:`npgpt.score`)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..char_tokenizer import CharTokenizer
from ..errors import NpgptError
from .options import (
    PATH,
    TEXT_LIMIT,
    BackendOpt,
    DtypeOpt,
    JsonOpt,
    ModelOpt,
    console,
    load_model,
    path_value,
    print_json,
    print_table,
    progress_bar,
    read_text,
)

SPECIAL_TOKENS_HELP = (
    "Read a literal <|endoftext|> as the special token (id 50256), as generate reads a prompt; "
    "by default it is text, so a score stays comparable with a text's earlier ones."
)


def eval_command(
    file: Annotated[
        Path | None,
        typer.Argument(parser=path_value, help="A UTF-8 text file to score (or --data FILE); - reads standard input."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            "-d",
            "-f",  # llama.cpp's llama-perplexity -f FILE
            parser=path_value,
            metavar=PATH,
            help="The text file, as an option (as FILE).",
        ),
    ] = None,
    model: ModelOpt = None,
    window: Annotated[int | None, typer.Option(help="Tokens per window (default: the model's context).")] = None,
    stride: Annotated[int | None, typer.Option(help="Tokens between window starts (default: window // 2).")] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    special_tokens: Annotated[bool, typer.Option("--special-tokens", help=SPECIAL_TOKENS_HELP)] = False,
    backend: BackendOpt = "numpy",
    dtype: DtypeOpt = "float32",
    as_json: JsonOpt = False,
) -> None:
    """Perplexity of a text file (Hugging Face's sliding-window method), or of a uint16 token file of GPT-2's ids
    (a .bin: nanoGPT's val.bin, llm.c's shard).

    Example: npgpt eval heldout.txt --stride 128
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn

    from ..evaluate import perplexity
    from .parsing import UsageError

    if file is not None and data is not None:
        raise UsageError(f"give the text file once: as FILE ({file}) or as --data ({data}), not both")
    data = file if file is not None else data
    if data is None:
        raise UsageError("Missing the text file: npgpt eval FILE (or --data FILE; - reads standard input)")

    fix = (
        "evaluate a part (`head -c 64M FILE > part.txt`), or each part of `split -C 64M FILE part-` and weight "
        "their cross-entropies by their token counts"
    )
    _refuse_a_model(data, "eval")
    ids = _token_file(data, fix)
    text = _read_text(data, fix) if ids is None else ids
    m = load_model(model, backend, dtype)
    if ids is not None and isinstance(m.tokenizer, CharTokenizer):
        raise NpgptError(
            f"{data} holds GPT-2's token ids, and this model reads its own characters (a tokenizer='char' model); "
            "evaluate it on the text"
        )
    if ids is not None:  # the file's ids, named as the file's: "text has token id 100" was of no text
        from ..token_ids import check_token_ids, count_tokens

        check_token_ids(ids, m.config.n_vocab, count_tokens(m.config.n_vocab, m.tokenizer), str(data), "text")
    with progress_bar(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
    ) as bar:
        task = bar.add_task("windows", total=None)
        result = perplexity(
            m,
            text,
            window=window,
            stride=stride,
            batch_size=batch_size,
            allow_special=special_tokens,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if as_json:
        print_json({"model": m.source, "data": str(data), **result})
        return
    screen = console()
    screen.print(f"tokens         {result['tokens']:,}")
    screen.print(f"cross-entropy  {result['cross_entropy']:.4f} nats/token")
    screen.print(f"perplexity     {result['perplexity']:.3f}")


def score_command(
    file: Annotated[
        Path, typer.Argument(parser=path_value, help="A UTF-8 text file to score, or - for standard input.")
    ],
    model: ModelOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: tokens, logprobs, totals.")] = False,
    window: Annotated[int | None, typer.Option(help="Tokens per window (default: the model's context).")] = None,
    stride: Annotated[int | None, typer.Option(help="Tokens between window starts (default: window // 2).")] = None,
    special_tokens: Annotated[bool, typer.Option("--special-tokens", help=SPECIAL_TOKENS_HELP)] = False,
    backend: BackendOpt = "numpy",
    dtype: DtypeOpt = "float32",
) -> None:
    """Each token's log-probability (nats) and surprisal (bits) in a text, its log-likelihood and perplexity.

    Example: printf 'In the beginning God created' | npgpt score -  or  npgpt score notes.txt --json
    """
    from ..score import score
    from .generate import _token_text

    _refuse_a_model(file, "score")
    text = _read_text(file, "score it in parts, e.g. `split -C 64M FILE part-`")
    m = load_model(model, backend, dtype)
    result = score(m, text, window=window, stride=stride, allow_special=special_tokens)
    pieces = [_token_text(m.tokenizer.token_bytes(t)) for t in result.tokens]
    if as_json:
        doc: dict[str, Any] = {
            "tokens": [
                {"id": t, "text": p, "logprob": lp, "surprisal_bits": None if lp is None else -lp / math.log(2)}
                for t, p, lp in zip(result.tokens, pieces, result.token_logprobs, strict=True)
            ],
            "tokens_scored": result.n_scored,
            "log_likelihood": result.log_likelihood,
            "cross_entropy": result.cross_entropy,
            "perplexity": result.perplexity,
        }
        sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
        return
    from rich.table import Table

    table = Table("#", "id", "token", "logprob (nats)", "surprisal (bits)", box=None, pad_edge=False)
    for i, (t, p, lp) in enumerate(zip(result.tokens, pieces, result.token_logprobs, strict=True)):
        table.add_row(
            str(i), str(t), repr(p), "" if lp is None else f"{lp:.4f}", "" if lp is None else f"{-lp / math.log(2):.3f}"
        )
    screen = console()
    print_table(table, screen)
    screen.print(f"tokens scored   {result.n_scored:,} of {len(result.tokens):,}")
    screen.print(f"log-likelihood  {result.log_likelihood:.4f} nats")
    screen.print(f"perplexity      {result.perplexity:.3f}")


def _refuse_a_model(path: Path, command: str) -> None:
    """A model file given as the text (llama-perplexity's -m habit, or a slip): read as text it was "binary, not
    text", read as a .bin's token ids "token id 65535 outside the vocabulary", and an llm.c model had training's
    "start from it with --init"."""
    if str(path) == "-" or not path.is_file():
        return
    import shlex

    from ..formats import model_file_kind

    if (kind := model_file_kind(path)) is not None:
        raise NpgptError(
            f"{path}: {kind}, not a text to score; give it as the model and the text after it: "
            f"npgpt {command} -m {shlex.quote(str(path))} TEXT_FILE"
        )


def _token_file(path: Path, fix: str) -> Any:
    """The GPT-2 token ids of a uint16 token file given to ``eval`` (a ``.bin`` that is not text: nanoGPT's
    ``val.bin``, as its train.py scores it; llm.c's shard), memory-mapped; None for text (a text named ``.bin``
    included). It was read as text and refused ("binary, not text"), the held-out file of nanoGPT's data unscored."""
    if str(path) == "-" or path.suffix != ".bin" or not path.is_file():
        return None
    from ..train import data as D

    if D.is_text(path):
        return None
    if (path.parent / "meta.pkl").is_file():  # nanoGPT's character-level ids (shakespeare_char), not GPT-2's
        raise NpgptError(
            f"{path}: nanoGPT's meta.pkl beside it says these are ids of the text's own characters, not GPT-2's "
            "tokens; evaluate the text they were made from (its input.txt) with a model trained on that text"
        )
    if path.stat().st_size > TEXT_LIMIT:
        raise NpgptError(f"{path} is over {TEXT_LIMIT // 2**20} MiB, the most npgpt reads as tokens to score; {fix}")
    return D.check_width(D.open_tokens(path), path)


def _read_text(file: Path, fix: str) -> str:
    """The file's (or stdin's, for ``-``) text, read as ``eval`` reads it: bytes checked as UTF-8, never
    decoded by the locale (which turns invalid bytes into U+FFFD tokens) nor with newlines translated."""
    text = read_text(file, "text to score", limit=TEXT_LIMIT, fix=fix)
    if not text.strip():
        raise NpgptError(
            f"{'standard input' if str(file) == '-' else file} is empty or only whitespace; give a text to score"
        )
    return text
