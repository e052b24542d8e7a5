"""Views of one prompt's forward pass: the logit lens, and one attention head's pattern.

The logit lens (nostalgebraist, 2020, "interpreting GPT: the logit lens") reads the residual
stream after each block as if it were the last: the final layer norm ``ln_f`` and the tied output
head applied to it give the tokens the model "already predicts" at that depth. The rows are the
stream entering each block (TransformerLens's ``blocks.{i}.hook_resid_pre``) and after the last
block, so the last row is exactly the model's own prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from array_api_compat import array_namespace

from .backends import float32_products
from .errors import NpgptError, counted_index
from .hooks import run_with_cache
from .model import layer_norm, matmul, softmax
from .params import head_name
from .token_ids import as_ids, count_tokens

if TYPE_CHECKING:
    from .engine import Engine, HasEngine


@dataclass
class LogitLens:
    """The logit lens of one sequence of T tokens through a model of L blocks.

    Row ``i`` of each array is the residual stream after ``i`` blocks (row 0: the embeddings,
    row L: the model's output).
    """

    ids: np.ndarray  # [T] int: the input tokens
    top_ids: np.ndarray  # [L+1, T] int: the most likely next token read from each row
    top_probs: np.ndarray  # [L+1, T] float32: its probability
    final_probs: np.ndarray  # [L+1, T] float32: the probability of the model's final prediction at that position


def _one_row(model: Engine | HasEngine, ids: Any) -> np.ndarray:
    ids = as_ids(ids, "ids", "one non-empty sequence of token ids")
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1 or ids.size == 0:
        raise NpgptError(f"give one non-empty sequence of token ids, got shape {ids.shape}")
    return ids


def logit_lens(model: Engine | HasEngine, ids: Any) -> LogitLens:
    """The :class:`LogitLens` of token ids [T] (one sequence); computed on the model's backend.

    The probabilities are the softmax over the model's full output, as ``score``, ``next_tokens`` and a
    generated token's logprob take it (and TransformerLens's unembed, over its ``d_vocab_out``); the top
    token is the most likely of the tokenizer's tokens: a vocabulary padded past them (nanoGPT's 50304)
    has ids that are no token, which ``generate`` never picks either. Raises :class:`NpgptError` for an empty
    or too long sequence or ids outside the vocabulary.
    """
    ids = _one_row(model, ids)
    L = model.config.n_layer
    names = [f"blocks.{i}.hook_resid_pre" for i in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]
    _, cache = run_with_cache(model, ids, names_filter=names, host=False)
    head = model.params[head_name(model.params)]  # the model's own unembedding, as model.gpt2 picks it
    tokenizer = getattr(model, "tokenizer", None)  # an Engine has none: every id
    n_tokens = model.config.n_vocab if tokenizer is None else count_tokens(model.config.n_vocab, tokenizer)
    xp = array_namespace(head)
    at = np.arange(len(ids))
    top_ids, top_probs, final_probs = [], [], []
    # Last row first, for the final prediction; one [T, V] at a time (all of them would be 13 x 200 MB
    # for 124M at T = 1024).
    eps = model.config.layer_norm_epsilon  # ln_f as the model applies it (not every checkpoint's is 1e-5)
    for name in reversed(names):
        x = layer_norm(cache.pop(name)[0], **model.params["ln_f"], eps=eps)  # [T, C]
        with float32_products(x):  # as the model's own head product
            logits = matmul(x, xp.matrix_transpose(head))  # [T, C] -> [T, V]
        # The top token by its logit (its probability may round to 0 in float32 when padded rows dominate),
        # a token, never a padded id; the probabilities over the model's full output, as model.score's.
        top_ids.append(model.backend.to_numpy(xp.argmax(logits[:, :n_tokens], axis=-1)))  # -> [T]
        probs = model.backend.to_numpy(softmax(logits))  # -> [T, V]
        top_probs.append(probs[at, top_ids[-1]])
        final_probs.append(probs[at, top_ids[0]])
    return LogitLens(
        ids=ids,
        top_ids=np.stack(top_ids[::-1]),
        top_probs=np.stack(top_probs[::-1]),
        final_probs=np.stack(final_probs[::-1]),
    )


def block_and_head(model: Engine | HasEngine, layer: Any, head: Any) -> tuple[int, int]:
    """``layer`` and ``head`` as indices from 0; a negative one counts from the end, as Python's and TransformerLens's
    indices do (``layer=-1``: the last block). Raises :class:`NpgptError` naming the one outside its range."""
    # is_integer: True, 1.0 or "1" made a hook name no model has ('blocks.True.attn.hook_pattern') or a TypeError
    return counted_index(layer, model.config.n_layer, "layer"), counted_index(head, model.config.n_head, "head")


def attention_pattern(model: Engine | HasEngine, ids: Any, layer: int, head: int) -> np.ndarray:
    """Head ``head`` of block ``layer``'s attention pattern [T query, T key] over token ids [T]:
    row q is how much token q attends to each earlier token (rows sum to 1).
    ``blocks.{layer}.attn.hook_pattern`` in TransformerLens's names; a negative ``layer`` or ``head`` counts from
    the end (-1: the last).
    """
    ids = _one_row(model, ids)
    layer, head = block_and_head(model, layer, head)
    name = f"blocks.{layer}.attn.hook_pattern"
    _, cache = run_with_cache(model, ids, names_filter=[name])
    return cache[name][0, head]
