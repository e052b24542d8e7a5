"""An OpenAI-compatible HTTP server with continuous batching and a web playground (``npgpt serve``).

    >>> from npgpt.server import create_app
    >>> app = create_app({"124M": npgpt.load("124M")})   # then: uvicorn.run(app)

Needs the ``serve`` extra (FastAPI, uvicorn). ``app.py`` is the API, ``scheduler.py`` the batching
worker, ``schemas.py`` the request bodies and chat template, ``static/index.html`` the playground.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "background_server"]


def __getattr__(name: str) -> Any:  # FastAPI is imported only when the app is wanted
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'npgpt.server' has no attribute {name!r}")
