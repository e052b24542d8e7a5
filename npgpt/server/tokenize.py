"""``POST /tokenize`` and ``POST /detokenize``: a text's token ids and back, with the model's own tokenizer, as
vLLM's server serves them (its clients call them to count a prompt's tokens before sending it).

``/tokenize`` takes vLLM's two forms: ``{"prompt": text}``, read as ``/v1/completions`` reads a prompt (a literal
``<|endoftext|>`` is the special token unless the server reads it as text), or ``{"messages": [...]}``, the chat
transcript ``/v1/chat/completions`` would prompt with. It answers ``{"count", "max_model_len", "tokens",
"token_strs"}``: ``token_strs`` (with ``return_token_strs``) spell each token as the vocabulary does
(``"Ġworld"``), as vLLM's do. ``add_special_tokens`` is accepted either way: GPT-2's tokenizer adds none.
``/detokenize`` takes ``{"tokens": [ids]}`` and answers ``{"prompt": text}``; an id the tokenizer does not have is
a 400 naming it. Like vLLM's, both sit beside ``/v1``, not under it (and, with an API key, need it too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from pydantic import ConfigDict

from ..errors import NpgptError, shown
from .body import Body, Int
from .jsonbody import JSONRoute
from .protocol import ChatMessage, ChatRequest, chat_prompt, check_message
from .unsupported import check_refused

# the chat options that change the transcript, which npgpt's one template cannot (chat refuses them too)
_CHAT_REFUSED = {
    k: v
    for k, v in ChatRequest.refused.items()
    if k in ("chat_template", "add_generation_prompt", "continue_final_message", "documents")
}
_OTHERS_NAMES = {  # llama.cpp server's /tokenize fields -> vLLM's (npgpt's) names
    "content": "send prompt, vLLM's name for the text (llama.cpp's is content)",
    "with_pieces": "send return_token_strs: true for each token's text (vLLM's name)",
    "add_special": "GPT-2's tokenizer adds no special token; leave it out",
}


class TokenizeRequest(Body):
    """vLLM's ``TokenizeCompletionRequest`` (``prompt``) or ``TokenizeChatRequest`` (``messages``)."""

    model_config = ConfigDict(extra="allow")  # unknown fields kept only to refuse other servers' names by name

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool | None = None
    return_token_strs: bool | None = None
    tools: list[Any] | None = None  # chat's: accepted and ignored, as in chat (GPT-2 never calls one)
    chat_template_kwargs: dict[str, Any] | None = None

    def check(self) -> None:
        """NpgptError (naming the field) unless the request is one of vLLM's two forms, in fields npgpt reads."""
        extra = self.model_extra or {}
        check_refused(extra, _CHAT_REFUSED)
        for name, instead in _OTHERS_NAMES.items():
            if name in extra:
                raise NpgptError(f"{name} is llama.cpp's field, not read here: {instead}", param=name)
        if (self.prompt is None) == (self.messages is None):
            raise NpgptError(
                "send either prompt (a text) or messages (a chat, tokenised as its transcript), "
                + ("not both" if self.prompt is not None else "got neither"),
                param="prompt",
            )
        for i, m in enumerate(self.messages or ()):
            check_message(m, f"messages[{i}]")
            if m.content is None and m.role != "assistant":
                raise NpgptError(
                    f"Missing required parameter: 'messages[{i}].content'; a {m.role} message needs content",
                    param=f"messages[{i}].content",
                )
        if self.messages is not None and not self.messages:
            raise NpgptError("messages is empty; send at least one message", param="messages")


class DetokenizeRequest(Body):
    """vLLM's ``DetokenizeRequest``."""

    model: str | None = None
    tokens: list[Int]


def tokenize_routes(pick: Callable[[str | None], tuple[str, Any]], special_tokens: bool = True) -> APIRouter:
    """The two routes; ``pick(model_name)`` gives ``(name, scheduler)`` as ``create_app`` resolves models.
    ``special_tokens``: whether a literal ``<|endoftext|>`` in a ``prompt`` is the special token."""
    router = APIRouter(route_class=JSONRoute)

    @router.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        _, sched = pick(body.model)
        m = sched.model

        def tokens() -> dict[str, Any]:
            body.check()
            if body.messages is not None:  # a chat message's <|endoftext|> is text, as in chat
                ids = m.tokenizer.encode(chat_prompt(body.messages))
            else:
                ids = m.tokenizer.encode(body.prompt, allow_special=special_tokens)
            strs = m.tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None
            return {"count": len(ids), "max_model_len": m.config.n_ctx, "tokens": ids, "token_strs": strs}

        # on a thread of its own: a 1 MB body's messages or text take up to a second, which would hold up the
        # event loop (/health, every stream)
        return await asyncio.to_thread(tokens)

    @router.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        name, sched = pick(body.model)
        tok = sched.model.tokenizer

        def text() -> str:
            n_vocab = len(tok)
            for i, t in enumerate(body.tokens):
                if not 0 <= t < n_vocab:
                    raise NpgptError(
                        f"tokens[{i}] is {shown(t)}, which is no token of model {shown(name)}: its ids are 0 to "
                        f"{n_vocab - 1}",
                        param=f"tokens[{i}]",
                    )
            return tok.decode(body.tokens)

        return {"prompt": await asyncio.to_thread(text)}  # a 1 MB list of ids: off the event loop

    return router
