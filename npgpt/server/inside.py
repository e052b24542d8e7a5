"""``POST /v1/internals`` (npgpt's own): what the playground's "inside" panel draws for a prompt —
one attention head's pattern and the logit lens (``lens.py``), computed on the model's worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from fastapi import APIRouter
from pydantic import Field

from ..lens import attention_pattern, block_and_head, logit_lens
from .body import Body, Int
from .jsonbody import JSONRoute

MAX_TOKENS = 64  # the last this many tokens of the prompt: the pattern is T x T numbers in JSON


class InternalsRequest(Body):
    """The prompt, and which attention head to show (blocks and heads count from 0; a negative one from the end,
    as the library's :func:`~npgpt.lens.attention_pattern` and TransformerLens's indices do)."""

    model: str | None = None
    prompt: str = Field(min_length=1)
    layer: Int = 0
    head: Int = 0


def internals(m: Any, all_ids: list[int], layer: int, head: int) -> dict[str, Any]:
    """The response body for one model (``api.GPT2``) and a prompt's token ids; raises ``NpgptError`` for a
    layer or head the model does not have or a prompt with no tokens. The body names the block and head by their
    numbers from 0 (``layer=-1``: the last block's)."""
    layer, head = block_and_head(m, layer, head)
    ids = all_ids[-MAX_TOKENS:]
    lens = logit_lens(m, ids)
    pattern = attention_pattern(m, ids, layer, head)

    def text(t: int) -> str:
        return m.tokenizer.decode([int(t)])

    return {
        "object": "internals",
        "layer": layer,
        "head": head,
        "n_layer": m.config.n_layer,
        "n_head": m.config.n_head,
        "tokens": [text(t) for t in ids],
        "truncated": len(all_ids) > MAX_TOKENS,
        "attention": [[round(float(p), 4) for p in row[: q + 1]] for q, row in enumerate(pattern)],  # causal rows
        "logit_lens": {
            "layers": ["embed"] + [str(i + 1) for i in range(m.config.n_layer)],  # blocks applied
            "top_tokens": [[text(t) for t in row] for row in lens.top_ids],  # [n_layer + 1][T]
            "top_probs": [[round(float(p), 4) for p in row] for row in lens.top_probs],
            "final_probs": [[round(float(p), 4) for p in row] for row in lens.final_probs],
        },
    }


def inside_routes(pick: Callable[[str | None], tuple[str, Any]], special_tokens: bool = True) -> APIRouter:
    """The router; ``pick(model_name)`` gives ``(name, scheduler)`` as ``create_app`` resolves models.
    The work runs on the scheduler's worker thread, like every other use of the model."""
    router = APIRouter(route_class=JSONRoute)

    @router.post("/internals")
    async def post_internals(body: InternalsRequest) -> dict[str, Any]:
        name, sched = pick(body.model)
        m = sched.model
        # tokenised on a thread of its own: on the model's worker, a long prompt would hold up every request generating
        ids = await asyncio.to_thread(m.tokenizer.encode, body.prompt, allow_special=special_tokens)
        out = await asyncio.wrap_future(sched.call(partial(internals, m, ids, body.layer, body.head)))
        return {**out, "model": name}

    return router
