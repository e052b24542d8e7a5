"""npgpt: GPT-2 in readable array code.

    >>> import npgpt
    >>> model = npgpt.load()                 # or npgpt.load("124M") after `npgpt download 124M`
    >>> model.generate("And God said", max_new_tokens=20, temperature=0)

Importing npgpt is cheap: the model, tokenizer and loaders are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["GPT2", "GPT2Config", "PRESETS", "NpgptError", "load", "__version__"]

if TYPE_CHECKING:
    from .api import GPT2, load
    from .config import PRESETS, GPT2Config
    from .errors import NpgptError

_LAZY = {"GPT2": "api", "load": "api", "GPT2Config": "config", "PRESETS": "config", "NpgptError": "errors"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'npgpt' has no attribute {name!r}")
