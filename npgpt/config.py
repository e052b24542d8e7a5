"""GPT-2 hyperparameters: a frozen dataclass with OpenAI's names, and the four released sizes."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GPT2Config:
    """Shape of a GPT-2 model. Field names follow OpenAI's ``hparams.json``."""

    n_vocab: int = 50257
    n_ctx: int = 1024
    n_embd: int = 768
    n_head: int = 12
    n_layer: int = 12

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPT2Config.{field.name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                "pick a width that is a multiple of the head count"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of the model, by npgpt's flat name (see ``npgpt.params``), with its shape.

        Linear weights are [in, out] (OpenAI's layout); the output head is tied to ``wte``.
        """
        C, V = self.n_embd, self.n_vocab
        shapes: dict[str, tuple[int, ...]] = {"wte": (V, C), "wpe": (self.n_ctx, C)}
        for i in range(self.n_layer):
            p = f"blocks.{i}."
            shapes.update({
                p + "ln_1.g": (C,), p + "ln_1.b": (C,),
                p + "attn.c_attn.w": (C, 3 * C), p + "attn.c_attn.b": (3 * C,),
                p + "attn.c_proj.w": (C, C), p + "attn.c_proj.b": (C,),
                p + "ln_2.g": (C,), p + "ln_2.b": (C,),
                p + "mlp.c_fc.w": (C, 4 * C), p + "mlp.c_fc.b": (4 * C,),
                p + "mlp.c_proj.w": (4 * C, C), p + "mlp.c_proj.b": (C,),
            })
        shapes.update({"ln_f.g": (C,), "ln_f.b": (C,)})
        return shapes

    @property
    def n_params(self) -> int:
        """Parameter count, summed over :meth:`param_shapes` (the head is tied to ``wte``, as in GPT-2)."""
        return sum(math.prod(shape) for shape in self.param_shapes().values())

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPT2Config:
        """Build from npgpt/OpenAI ``hparams.json`` names or Hugging Face ``config.json`` names."""
        hf_names = {"vocab_size": "n_vocab", "n_positions": "n_ctx"}
        kw = {hf_names.get(k, k): v for k, v in d.items()}
        names = {f.name for f in dataclasses.fields(cls)}
        missing = names - kw.keys()
        if missing:
            raise ValueError(f"model config is missing {sorted(missing)}; expected keys {sorted(names)}")
        return cls(**{k: int(kw[k]) for k in names})


# The four checkpoints OpenAI released (the names are their parameter counts).
PRESETS: dict[str, GPT2Config] = {
    "124M": GPT2Config(n_embd=768, n_head=12, n_layer=12),  # gpt2
    "355M": GPT2Config(n_embd=1024, n_head=16, n_layer=24),  # gpt2-medium
    "774M": GPT2Config(n_embd=1280, n_head=20, n_layer=36),  # gpt2-large
    "1558M": GPT2Config(n_embd=1600, n_head=25, n_layer=48),  # gpt2-xl
}
