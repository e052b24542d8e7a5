"""The engines a bench times, behind one interface: ``prefill(ids, capacity)`` and ``step(state, tokens)``.

Both return greedy next tokens ``[B]`` and the decoding state to pass on; ``ids`` is an int array
``[B, T]``. :class:`NpgptEngine` holds every call into npgpt's generation code, so a change there
is made here once.
"""

from __future__ import annotations

import inspect
from typing import Any


def device_kind(array: Any) -> str:
    """``"cpu"`` or ``"gpu"``: where ``array`` lives (NumPy's are on the CPU; torch reads ``.type``, JAX
    ``.platform``, a CuPy device names CUDA). The CPU's memory bandwidth bounds only CPU engines."""
    device = getattr(array, "device", None)
    kind = getattr(device, "platform", None) or getattr(device, "type", None) or str(device)
    return "cpu" if device is None or "cpu" in str(kind).lower() else "gpu"


class NpgptEngine:
    """npgpt's own generation path: ``prefill`` into a preallocated cache, then ``decode_step``."""

    def __init__(self, path: str, backend: str, dtype: str = "float32") -> None:
        from ..api import load

        self.model = load(path, backend=backend, dtype=dtype)
        self.n_vocab = self.model.config.n_vocab
        self.device = device_kind(self.model.params["wpe"])  # wpe stays float32 in every storage

    def prefill(self, ids: Any, capacity: int) -> tuple[Any, Any]:  # ids [B, T] -> next tokens [B], state
        from ..generate import prefill

        logits, state = prefill(self.model.engine, ids.tolist(), capacity)
        return logits.argmax(-1), state

    def step(self, state: Any, tokens: Any) -> tuple[Any, Any]:  # [B] -> [B]
        from ..generate import decode_step

        return decode_step(self.model.engine, state, tokens).argmax(-1), state

    def full_logits(self, ids: Any) -> Any:  # [B, T] -> [B, T, V] NumPy, without a cache
        return self.model.engine.logits(ids)

    def weight_bytes(self) -> int:
        """Bytes the loaded weights take on their backend (a 16-bit matrix: 2 per number)."""
        from ..params import flatten

        return sum(int(a.nbytes) for a in flatten(self.model.params).values())


class HFEngine:
    """Hugging Face ``GPT2LMHeadModel`` with its kv cache: the same loop, in PyTorch."""

    def __init__(self, path: str, threads: int) -> None:
        import torch
        from transformers import GPT2LMHeadModel

        torch.set_num_threads(threads)
        self.torch = torch
        # On the GPU where PyTorch sees one, as npgpt's torch backend is: the same device for both.
        self.device = "gpu" if torch.cuda.is_available() else "cpu"
        self.model = GPT2LMHeadModel.from_pretrained(path).eval().to("cuda" if self.device == "gpu" else "cpu")
        self.on = next(self.model.parameters()).device
        self.n_vocab = self.model.config.vocab_size
        # transformers 5 calls the cache argument ``cache``; 4.x called it ``past_key_values``.
        self.cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _run(self, ids: Any, cache: Any) -> tuple[Any, Any]:
        kw = {self.cache_arg: cache} if cache is not None else {}
        with self.torch.inference_mode():
            out = self.model(self.torch.from_numpy(ids).to(self.on), use_cache=True, logits_to_keep=1, **kw)
        return out.logits[:, -1].argmax(-1).cpu().numpy(), out[self.cache_arg]

    def prefill(self, ids: Any, capacity: int) -> tuple[Any, Any]:
        return self._run(ids, None)

    def step(self, state: Any, tokens: Any) -> tuple[Any, Any]:
        return self._run(tokens[:, None], state)
