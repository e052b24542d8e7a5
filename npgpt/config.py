"""GPT-2 hyperparameters: a frozen dataclass with OpenAI's names, and the four released sizes."""

from __future__ import annotations

import dataclasses
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

    @property
    def n_params(self) -> int:
        """Parameter count with the output head tied to ``wte`` (as GPT-2 does)."""
        C, L = self.n_embd, self.n_layer
        per_block = 2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
        return self.n_vocab * C + self.n_ctx * C + L * per_block + 2 * C

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
