"""``npgpt lens`` and ``npgpt attention``: looking inside the model from the command line.

Thin typer commands over ``lens.py`` (numbers) and ``figures.py`` (PNGs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import NpgptError
from .options import PATH, BackendOpt, DtypeOpt, ModelOpt, path_value, print_table

PngOpt = Annotated[
    Path | None, typer.Option("--png", parser=path_value, metavar=PATH, help="Also write the picture to this PNG file.")
]


def _prompt_text(prompt: str | None) -> str:
    """The PROMPT argument; ``-``, or no argument while text is piped in, reads stdin (as ``generate``)."""
    from .generate import text_argument

    text = text_argument(prompt)
    if text is None:
        raise NpgptError("no prompt: give a PROMPT, or pipe text in")
    return text


def _prompt_ids(m, prompt: str) -> list[int]:
    ids = m.tokenizer.encode(prompt)
    if not ids:
        raise NpgptError("prompt is empty; give at least one token of text")
    if len(ids) > m.config.n_ctx:
        raise NpgptError(
            f"the prompt has {len(ids)} tokens, more than the model's context of {m.config.n_ctx}; shorten the prompt"
        )
    return ids


def _shown(m, token: int) -> str:
    """A token as the terminal shows it: quoted, whitespace escaped (repr)."""
    from .generate import _token_text

    return repr(_token_text(m.tokenizer.token_bytes(int(token))))


def lens_command(
    prompt: Annotated[
        str | None, typer.Argument(help="The text to look inside; - (or nothing, with text piped in) reads stdin.")
    ] = None,
    last: Annotated[int, typer.Option("--last", help="Show only the last N positions (0 = all).")] = 0,
    png: PngOpt = None,
    model: ModelOpt = None,
    backend: BackendOpt = "numpy",
    dtype: DtypeOpt = "float32",
) -> None:
    """The logit lens: the token the residual stream already predicts after each block.

    One row per position of the prompt (its input token first), one column per number of blocks
    applied: the most likely next token read at that depth, bold where it already is the model's
    final prediction, dim where its probability is under 10 %. `--png` writes a heat map of the
    final prediction's probability at every depth and position.

    Example: npgpt lens "The Eiffel Tower is in the city of" --png lens.png
    """
    from rich.table import Table
    from rich.text import Text

    from ..lens import logit_lens
    from .options import console as _console
    from .options import load_model as _load

    if last < 0:
        raise NpgptError(f"--last must be >= 0, got {last}")
    prompt = _prompt_text(prompt)
    if png is not None:  # before any compute: a bad place or no matplotlib fails now, not after the table
        from ..figures import check_can_write_png

        check_can_write_png(png)
    m = _load(model, backend, dtype)
    lens = logit_lens(m, _prompt_ids(m, prompt))
    T, L = len(lens.ids), m.config.n_layer
    table = Table(title="logit lens: the top next token after each number of blocks", header_style="bold")
    table.add_column("input", no_wrap=True)
    for i in range(L + 1):
        table.add_column("embed" if i == 0 else str(i), no_wrap=True)
    table.add_column("p", justify="right")
    for t in range(T - last if 0 < last < T else 0, T):
        final = lens.top_ids[:, t] == lens.top_ids[L, t]  # [L+1]: already the final prediction
        cells = [
            Text(
                _shown(m, lens.top_ids[i, t]), style="bold" if final[i] else "dim" if lens.top_probs[i, t] < 0.1 else ""
            )
            for i in range(L + 1)
        ]
        table.add_row(Text(_shown(m, lens.ids[t])), *cells, f"{lens.top_probs[L, t]:.0%}")
    print_table(table)
    if png is not None:
        from ..figures import lens_figure, save_png

        tokens = [_shown(m, t) for t in lens.ids]
        save_png(lens_figure(lens.final_probs, tokens, [_shown(m, t) for t in lens.top_ids[L]]), png)
        _console().print(f"wrote {png}")  # the console prints text as it is (no markup)


def attention_command(
    prompt: Annotated[
        str | None,
        typer.Argument(help="The text whose attention to show; - (or nothing, with text piped in) reads stdin."),
    ] = None,
    layer: Annotated[
        int, typer.Option("--layer", "-l", help="Block, from 0; negative counts from the end (-1: the last).")
    ] = 0,
    head: Annotated[
        int, typer.Option("--head", help="Head within the block, from 0; negative counts from the end.")
    ] = 0,
    png: PngOpt = None,
    model: ModelOpt = None,
    backend: BackendOpt = "numpy",
    dtype: DtypeOpt = "float32",
) -> None:
    """One attention head's pattern: for each token, the earlier tokens it attends to most.

    `--png` writes the whole pattern as an image, with the tokens on both axes.

    Example: npgpt attention "When Mary and John went to the store, John gave a drink to" --layer 0 --head 1 --png attn.png
    """  # noqa: E501
    from rich.table import Table
    from rich.text import Text

    from ..lens import attention_pattern, block_and_head
    from .options import console as _console
    from .options import load_model as _load

    prompt = _prompt_text(prompt)
    if png is not None:  # before any compute: a bad place or no matplotlib fails now, not after the table
        from ..figures import check_can_write_png

        check_can_write_png(png)
    m = _load(model, backend, dtype)
    layer, head = block_and_head(m, layer, head)  # -1: the last, named by its number in the title and the picture
    ids = _prompt_ids(m, prompt)
    pattern = attention_pattern(m, ids, layer, head)
    tokens = [_shown(m, t) for t in ids]
    table = Table(
        title=f"attention, block {layer}, head {head}: the 3 keys each query attends to most", header_style="bold"
    )
    table.add_column("query", no_wrap=True)
    for k in range(3):
        table.add_column(f"#{k + 1}", no_wrap=True)
    for q, row in enumerate(pattern):
        best = [k for k in row.argsort()[::-1][:3] if k <= q]
        table.add_row(tokens[q], *[Text.assemble(tokens[k], " ", (f"{row[k]:.0%}", "dim")) for k in best])
    print_table(table)
    if png is not None:
        from ..figures import attention_figure, save_png

        save_png(attention_figure(pattern, tokens, layer, head), png)
        _console().print(f"wrote {png}")  # the console prints text as it is (no markup)
