"""An OpenAI-compatible HTTP server with continuous batching and a web playground (``npgpt serve``).

    >>> from npgpt.server import create_app
    >>> app = create_app({"124M": npgpt.load("124M")})   # then: uvicorn.run(app)

Needs the ``serve`` extra (FastAPI, uvicorn). Laid out like vLLM's ``entrypoints/openai``:

- ``app.py``: wiring (``create_app``, lifespan) and ``background_server``
- ``routes.py``: the router, thin; ``completions.py`` and ``chat.py``: each endpoint's serving logic
- ``protocol.py``: request bodies and the chat template; ``body.py``: what every body is (strict types,
  bounded depth, valid Unicode); ``unsupported.py``: the options refused by name; ``response_parts.py``: the
  model object, tokens as logprobs name them
- ``streaming.py``: events from the scheduler's thread, one stream of chunks, SSE or folded
- ``errors.py``: OpenAI-shaped errors and their handlers; ``middleware.py``: body limit, key, metrics
- ``scheduler.py``: continuous batching on a worker thread; ``tasks.py``: requests and their rows;
  ``metrics.py``: Prometheus text
- ``limits.py``: per-request limits on rows and tokens; ``shutdown.py``: the bounded, draining shutdown;
  ``settings.py``: the range of each server setting
- ``cli.py``: ``npgpt serve``; ``static/index.html``: the playground
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "background_server"]


def __getattr__(name: str) -> Any:  # FastAPI is imported only when the app is wanted
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'npgpt.server' has no attribute {name!r}")
