"""The Engine: a model's config and weights on one backend, and the forward passes run on them.

Everything above (generation, the scheduler, evaluation, the benchmark, the ``GPT2`` facade)
calls the model through an :class:`Engine`, so the additive attention mask and the position ids
are built here and nowhere else. Arrays cross the boundary as NumPy: integer ids and bool masks
in, float32 logits out.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .backends import Backend
from .cache import KVCache, init_cache
from .config import GPT2Config
from .errors import NpgptError
from .hostinfo import physical_memory
from .model import attention_mask
from .params import flatten
from .token_ids import as_ids, as_mask, check_token_ids


def positions_and_mask(valid: np.ndarray, start: Any, n_new: int) -> tuple[np.ndarray, np.ndarray]:
    """Position ids [B, T] and the additive attention mask [B, 1, T, S] for T new tokens.

    ``valid`` [B, S] bool marks the slots holding real tokens (the new ones included); the new
    tokens of row b sit at slots ``start[b] .. start[b]+T-1`` (``start``: an int or [B] ints).
    A token's position id counts the real tokens before it, so left padding (or a row placed
    anywhere in a shared cache) does not shift positions, as in Hugging Face's
    ``attention_mask``-derived position ids.
    """
    B = valid.shape[0]
    slots = np.broadcast_to(np.reshape(start, (-1, 1)), (B, 1)) + np.arange(n_new)  # [B, T]
    before = np.cumsum(valid, axis=1)  # [B, S]: real tokens up to and including each slot
    positions = np.maximum(np.take_along_axis(before, slots, axis=1) - 1, 0)
    return positions, attention_mask(valid, start, n_new)


class Engine:
    """A GPT-2 on one backend: ``config``, ``params`` (on the backend, laid out), ``backend``, ``dtype``.

    Build one with :meth:`load_params` from host (NumPy) weights, or directly from weights
    already placed with ``backend.put_params``. Not thread-safe: one caller at a time.
    """

    def __init__(self, config: GPT2Config, params: dict[str, Any], backend: Backend, dtype: str = "float32") -> None:
        self.config = config
        self.params = params
        self.backend = backend
        self.dtype = dtype
        self._batched: tuple[tuple[Any, ...], dict[str, Any] | None] | None = None  # (params' arrays, batched form)

    @classmethod
    def load_params(
        cls, config: GPT2Config, params: dict[str, Any], backend: Backend, dtype: str = "float32"
    ) -> Engine:
        """An Engine over host float32 ``params``, moved to ``backend`` once (see ``Backend.put_params``)."""
        return cls(config, backend.put_params(params, dtype), backend, dtype)

    def __repr__(self) -> str:
        return f"Engine({self.config}, backend={self.backend.name!r}, dtype={self.dtype!r})"

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        """A zeroed kv cache for ``batch`` rows of ``capacity`` slots on this engine's backend/device.

        Raises ValueError when ``capacity`` exceeds the context, NpgptError when memory runs out.
        """
        try:
            return init_cache(
                self.config, batch, capacity, like=self.params["wte"], functional=self.backend.functional_updates
            )
        except Exception as e:
            if not self.backend.out_of_memory(e):
                raise
            raise NpgptError(
                f"out of memory for the kv cache of {batch} rows x {capacity} tokens ({first_line(e)}); "
                "run fewer rows at once (prompts x n) or fewer new tokens"
            ) from None

    def logits(self, ids: Any, attention_mask: Any = None) -> np.ndarray:
        """Float32 logits [B, T, V] for integer ids [B, T] (a 1-D sequence is treated as B=1).

        V is the model's full width ``config.n_vocab``: with a padded vocabulary (nanoGPT's
        50304) the columns from ``tokenizer.n_vocab`` on belong to no token; generation never
        picks them.

        ``attention_mask`` [B, T] (1 = token, 0 = padding) supports left-padded batches;
        position ids then count from each row's first real token, as in Hugging Face.
        Raises NpgptError for ids that are not integers [B, T], longer than the context, or
        outside the vocabulary.
        """
        ids, valid = self.check_ids(ids, attention_mask)
        self.check_logits_fit(*ids.shape)
        out, _ = self._run(ids, valid, 0)
        return out

    def check_logits_fit(self, rows: int, tokens: int) -> None:
        """NpgptError, before any compute, for logits [rows, tokens, V] whose float32 alone outgrow this machine's
        memory: a batch of 100,000 rows asked for 20 GB a token, and ended in MemoryError deep in the forward pass
        (a PyTorch RuntimeError on that backend), or in the OOM killer. The hooked forward pass asks it too."""
        need, memory = rows * tokens * self.config.n_vocab * 4, physical_memory()
        if memory is not None and need > memory:
            raise NpgptError(
                f"logits of {rows} rows x {tokens} tokens x {self.config.n_vocab} are {need / 2**30:,.0f} GiB of "
                f"float32, more than this machine's {memory / 2**30:,.0f} GiB of memory; pass fewer rows at a time "
                "(model.score(text) scores a text in windows, model.generate(prompts) runs a batch at a time)",
                param="ids",
            )

    def check_ids(self, ids: Any, attention_mask: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """ids as int [B, T] and the mask of real tokens as bool [B, T], checked (see :meth:`logits`)."""
        ids = as_ids(
            ids,
            "ids",
            "integers of shape [batch, seq]",
            ragged="; left-pad them to one length and pass attention_mask (1 = token, 0 = padding)",
        )
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.size == 0:
            raise NpgptError(f"ids are empty (shape {ids.shape}); give at least one token id")
        if ids.ndim != 2:
            raise NpgptError(f"ids must be integers of shape [batch, seq], got {ids.dtype} {ids.shape}")
        B, T = ids.shape
        if T > self.config.n_ctx:
            n = self.config.n_ctx
            raise NpgptError(
                f"sequence of {T} tokens exceeds the model's context of {n}; give at most {n} tokens a row "
                f"(e.g. the last {n}: ids[..., -{n}:]); model.score(ids) scores a longer text in sliding windows"
            )
        check_token_ids(ids.ravel(), self.config.n_vocab, self.config.n_vocab, "ids", param="ids")
        valid = np.ones((B, T), bool) if attention_mask is None else as_mask(attention_mask, (B, T))
        if (empty := ~valid.any(axis=1)).any():
            # no key to attend to: TransformerLens and transformers compute such a row, each its own meaningless numbers
            raise NpgptError(
                f"attention_mask row {int(np.argmax(empty))} is all 0: that row holds no token, so its logits would "
                "mean nothing; give each row at least one token (1), or leave the empty row out",
                "attention_mask",
            )
        return ids, valid

    def forward(
        self, ids: np.ndarray, cache: KVCache, valid: np.ndarray, start: np.ndarray, last_only: bool = False
    ) -> tuple[np.ndarray, KVCache]:
        """Run ids [B, T] written into ``cache`` at each row's slot ``start`` [B]; (logits, updated cache).

        ``valid`` [B, S] marks the cache slots holding real tokens, the T new ones included.
        Logits are float32 [B, T, V] on the host ([B, 1, V] with ``last_only``). On an in-place
        backend the returned cache is ``cache`` itself, written through; callers use the returned one.
        """
        # One int when every row is at the same slot: the common case, and a simpler program to compile.
        same: Any = int(start[0]) if (start == start[0]).all() else start
        out, new_cache = self._run(ids, valid, same, cache, last_only)
        assert new_cache is not None
        return out, new_cache

    def _run(
        self, ids: np.ndarray, valid: np.ndarray, start: Any, cache: KVCache | None = None, last_only: bool = False
    ) -> tuple[np.ndarray, KVCache | None]:
        positions, mask = positions_and_mask(valid, start, ids.shape[1])
        be = self.backend
        try:
            logits, cache = be.forward(
                be.asarray(ids),
                self.params_for(*ids.shape),
                config=self.config,
                positions=be.asarray(positions),
                mask=be.asarray(mask),
                cache=cache,
                start=start,
                last_only=last_only,
            )
            return be.to_numpy(logits), cache
        except Exception as e:  # the activations of a large batch are [B, T, 4C] at once
            if not be.out_of_memory(e):
                raise
            raise NpgptError(
                f"out of memory running {ids.shape[0]} rows x {ids.shape[1]} tokens ({first_line(e)}); "
                "run fewer rows at once (prompts x n) or shorter prompts"
            ) from None

    def params_for(self, batch: int, tokens: int) -> dict[str, Any]:
        """The weights a step of ``tokens`` new tokens in each of ``batch`` sequences runs on.

        ``params``; for a decode step of two or more sequences (one new token each), their batched
        form where the backend has one (``Backend.batched``: faster products of a few rows, for
        twice the weights' memory), built at the first such step. So one sequence alone, a prompt,
        or scoring a batch of texts never pays for it and computes exactly as before. Built again
        when any array in ``params`` was replaced since (the form holds the arrays it was built on).
        """
        if batch < 2 or tokens != 1 or self.backend.batched is None:
            return self.params
        leaves = tuple(flatten(self.params).values())
        built_on = self._batched[0] if self._batched is not None else ()
        if len(built_on) != len(leaves) or any(a is not b for a, b in zip(leaves, built_on, strict=True)):
            self._batched = (leaves, self.backend.batched(self.params))
        return (self._batched[1] if self._batched else None) or self.params


def first_line(e: BaseException) -> str:
    """What a library's out-of-memory error says (NumPy's "Unable to allocate 95.9 GiB for an array with shape ...",
    PyTorch's "... can't allocate memory: you tried to allocate N bytes"), on one line."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class HasEngine(Protocol):
    """What runs on an Engine: the ``GPT2`` facade (``npgpt.load``) or anything else holding one,
    with the Engine's config, params and backend at hand."""

    @property
    def engine(self) -> Engine: ...
    @property
    def config(self) -> GPT2Config: ...
    @property
    def params(self) -> dict[str, Any]: ...
    @property
    def backend(self) -> Backend: ...


def as_engine(model: Engine | HasEngine) -> Engine:
    """The Engine itself, or the one a model wraps, so library functions take either."""
    return model if isinstance(model, Engine) else model.engine
