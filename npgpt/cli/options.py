"""What the commands share: the model, backend and dtype options, the consoles, and model loading."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from ..api import GPT2

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Checkpoint path or downloaded name (124M…); default: a downloaded GPT-2, else the bundled model.")]  # noqa: E501
BackendOpt = Annotated[str, typer.Option("--backend", help="numpy, jax, torch, cupy or cupynumeric.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Weight storage: float32, float16/bfloat16 (half the memory) or int8 (a quarter); fast with --backend torch.")]  # noqa: E501


def console(stderr: bool = False) -> Console:
    """A rich console on stdout (results) or stderr (progress, notices, errors), without auto-highlighting."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def load_model(model: str | None, backend: str = "numpy", dtype: str = "float32") -> GPT2:
    """``npgpt.load`` and its notice (e.g. "using the bundled model") shown on stderr."""
    from ..api import load

    m = load(model, backend=backend, dtype=dtype)
    if m.notice:
        console(stderr=True).print(f"[dim]{m.notice}[/dim]", soft_wrap=True)
    return m
