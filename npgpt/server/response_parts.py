"""Parts of the OpenAI API's responses: the model object, and tokens as logprobs name them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..api import GPT2
    from ..tokenizer import Tokenizer


def model_card(name: str, model: GPT2, created: int) -> dict[str, Any]:
    """``GET /v1/models/{name}``: OpenAI's model object, plus the context length, the config, and whether
    it is npgpt's bundled model (trained on the King James Bible: the playground suggests a prompt to suit).
    The context length is ``max_model_len``, vLLM's name, which clients (litellm, agent frameworks) read from
    ``/v1/models`` to size their prompts, and ``context_length``, as the playground reads it.
    ``created``: Unix seconds, when the server loaded it (0 read as 1970 in any client that shows it)."""
    from ..registry import is_bundled

    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "npgpt",
        "max_model_len": model.config.n_ctx,
        "context_length": model.config.n_ctx,
        "config": model.config.to_dict(),
        "bundled": is_bundled(model.source),
    }


def token_text(tok: Tokenizer, token: int) -> str:
    """A token as text; a token that is part of a UTF-8 character is written ``bytes:\\xe2\\x80``, like OpenAI."""
    return bytes_text(tok.token_bytes(token))


def bytes_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


def token_entry(tok: Tokenizer, token: int, logprob: float | None) -> dict[str, Any]:
    """A token in chat's ``logprobs.content`` list."""
    raw = tok.token_bytes(token)
    return {"token": bytes_text(raw), "logprob": logprob, "bytes": list(raw)}
