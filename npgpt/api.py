"""The Python API: ``npgpt.load(...)`` and the model object it returns."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from .backends import Backend, get_backend
from .config import GPT2Config
from .errors import NpgptError
from .generate import Event, events
from .model import attention_bias
from .sampling import SamplingParams
from .tokenizer import Tokenizer


@dataclass
class Completion:
    """One finished completion, with what the OpenAI API reports about it."""

    text: str
    tokens: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    finish_reason: str = "length"


class GPT2:
    """A loaded GPT-2: ``generate``, ``stream``, ``logits``, ``tokenizer`` and ``config``."""

    def __init__(self, config: GPT2Config, params: dict[str, Any], tokenizer: Tokenizer | None = None,
                 backend: str = "numpy", source: str | None = None, notice: str | None = None,
                 dtype: str = "float32") -> None:
        self.config = config
        self.backend: Backend = get_backend(backend)
        self.params = self.backend.put_params(params, dtype)
        self.dtype = dtype
        self.tokenizer = tokenizer or Tokenizer()
        self.source = source
        self.notice = notice

    def __repr__(self) -> str:
        return f"GPT2({self.config}, backend={self.backend.name!r}, dtype={self.dtype!r}, source={self.source!r})"

    # -- logits -------------------------------------------------------------------------------
    def logits(self, ids: Any, attention_mask: Any = None) -> np.ndarray:
        """Float32 logits [B, T, V] for integer ids [B, T] (a 1-D sequence is treated as B=1).

        ``attention_mask`` [B, T] (1 = token, 0 = padding) supports left-padded batches;
        position ids then count from each row's first real token, as in Hugging Face.
        """
        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise NpgptError(f"ids must be integers of shape [batch, seq], got {ids.dtype} {ids.shape}")
        B, T = ids.shape
        if T > self.config.n_ctx:
            raise NpgptError(f"sequence of {T} tokens exceeds the model's context of {self.config.n_ctx}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.n_vocab):
            raise NpgptError(f"token ids must be in [0, {self.config.n_vocab}), the model's vocabulary")
        valid = np.ones((B, T), bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
        positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0)
        be = self.backend
        out, _ = be.forward(be.asarray(ids), self.params, n_head=self.config.n_head,
                            positions=be.asarray(positions), bias=be.asarray(attention_bias(valid, 0, T)))
        return be.to_numpy(out)

    # -- generation -----------------------------------------------------------------------------
    def _rows(self, prompts: Sequence[str | Sequence[int]]) -> list[list[int]]:
        return [self.tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]

    def events(self, prompts: Sequence[str | Sequence[int]], **sampling: Any) -> Iterator[Event]:
        """The raw token iterator over a batch of prompts (text or token ids); see ``generate.events``."""
        params = SamplingParams(**sampling)
        return events(self, self._rows(prompts), params)

    def completions(self, prompts: Sequence[str | Sequence[int]], **sampling: Any) -> list[Completion]:
        """Run a batch to the end; one :class:`Completion` per prompt, in order."""
        out = [Completion("") for _ in prompts]
        for ev in self.events(prompts, **sampling):
            c = out[ev.row]
            c.text += ev.text
            if ev.token is not None:
                c.tokens.append(ev.token)
                if ev.logprob is not None:
                    c.token_logprobs.append(ev.logprob)
                    c.top_logprobs.append(ev.top)
            if ev.finish_reason:
                c.finish_reason = ev.finish_reason
        return out

    @overload
    def generate(self, prompt: str, **sampling: Any) -> str: ...
    @overload
    def generate(self, prompt: list[str], **sampling: Any) -> list[str]: ...

    def generate(self, prompt: str | list[str], max_new_tokens: int = 64, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                 stop: str | Sequence[str] | None = None, **sampling: Any) -> str | list[str]:
        """The completion of ``prompt`` (without the prompt), or a list for a list of prompts.

        Options: ``max_new_tokens``, ``temperature`` (0 = greedy), ``top_k``, ``top_p``,
        ``min_p``, ``repetition_penalty``, ``presence_penalty``, ``frequency_penalty``, ``seed``,
        ``stop`` (string or list), ``stop_at_eot``. A list of prompts runs as one batch.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        done = self.completions(prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                                top_k=top_k, top_p=top_p, seed=seed, stop=stop or (), **sampling)
        texts = [c.text for c in done]
        return texts[0] if isinstance(prompt, str) else texts

    def stream(self, prompt: str | list[str], max_new_tokens: int = 64, temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
               stop: str | Sequence[str] | None = None, **sampling: Any) -> Iterator[Any]:
        """Text deltas as they are generated (never half a character); same options as ``generate``.

        For a string prompt yields ``str``; for a list, ``(prompt_index, str)`` pairs.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        for ev in self.events(prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                              top_k=top_k, top_p=top_p, seed=seed, stop=stop or (), **sampling):
            if ev.text:
                yield ev.text if isinstance(prompt, str) else (ev.row, ev.text)

    def next_tokens(self, prompt: str, k: int = 10) -> list[tuple[int, str, float]]:
        """The ``k`` most likely next tokens after ``prompt``: (id, text, probability)."""
        ids = self.tokenizer.encode(prompt)
        if not ids:
            raise NpgptError("prompt is empty; give at least one token of text")
        logits = self.logits([ids[-self.config.n_ctx:]])[0, -1]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argsort(-probs)[:k]
        return [(int(i), self.tokenizer.decode([int(i)]), float(probs[i])) for i in top]


def load(name_or_path: str | Path | None = None, backend: str = "numpy", dtype: str = "float32") -> GPT2:
    """Load a model: a checkpoint path, a downloaded name (``"124M"``), or None for the default.

    The default is the first downloaded GPT-2, else the small model bundled with npgpt (the
    returned object's ``notice`` then says how to get real GPT-2). ``dtype`` "float16" or
    "bfloat16" keeps the weight matrices in 16 bits (half the memory), "int8" in 8 bits with
    per-output-channel scales (a quarter; ``backend="torch"`` only, see npgpt/int8.py);
    computation stays float32 apart from the narrow matrix products.
    """
    from .backends import check_dtype
    from .download import resolve
    from .formats import load_checkpoint

    check_dtype(dtype)  # before the (slow) load
    path, notice = resolve(None if name_or_path is None else str(name_or_path))
    config, params = load_checkpoint(path)
    return GPT2(config, params, backend=backend, source=str(path), notice=notice, dtype=dtype)
