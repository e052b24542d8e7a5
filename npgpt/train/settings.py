"""What a training run is asked to do: :class:`TrainSettings`, its defaults and the resume rules.

A field left ``None`` takes its default in a new run, or the checkpoint's value when resuming.
The run settings (``RUN_DEFAULTS``) decide which numbers the run computes, so a resumed run must
keep them: an explicit different value is refused. The monitoring settings (``MONITORING_DEFAULTS``)
say how the run is watched and may change on ``--resume``; so may ``steps``, which then stretches
the cosine schedule to the new end.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from ..config import GPT2Config
from ..errors import NpgptError

SCRATCH = {"n_layer": 6, "n_embd": 384, "n_head": 6, "n_ctx": 256}  # from-scratch default shape, ~30M
DEFAULT_STEPS = 1000
RUN_DEFAULTS: dict[str, Any] = {
    "batch_size": 8, "seq_len": None, "grad_accum": 1, "lr": 3e-4, "warmup": None,
    "weight_decay": 0.1, "clip": 1.0, "seed": 0, "val_fraction": 0.1,
}  # seq_len None: min(256, n_ctx); warmup None: min(100, steps // 10)
MONITORING_DEFAULTS: dict[str, Any] = {"eval_interval": 100, "eval_batches": 8, "checkpoint_interval": None}
POSITIVE = ("steps", "batch_size", "grad_accum", "seq_len", "eval_interval", "checkpoint_interval")


@dataclass(frozen=True)
class TrainSettings:
    """One run's settings (see the module docstring for ``None``); checked on construction.

    ``init`` is a checkpoint path or model name to start from; otherwise ``n_layer``, ``n_embd``,
    ``n_head``, ``n_ctx`` give a fresh model's shape (defaults ``SCRATCH``, GPT-2's vocabulary).
    One step is one AdamW update on ``grad_accum * batch_size`` windows of ``seq_len`` tokens; the
    learning rate warms up over ``warmup`` steps to ``lr``, then follows a cosine to ``lr / 10``.
    Every ``eval_interval`` steps the loss on the held-out last ``val_fraction`` of the tokens is
    measured (``eval_batches`` batches); every ``checkpoint_interval`` steps (default:
    ``eval_interval``) and at the end the run folder is updated. Raises NpgptError for a count
    below 1.
    """

    init: str | Path | None = None
    n_layer: int | None = None
    n_embd: int | None = None
    n_head: int | None = None
    n_ctx: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    seq_len: int | None = None
    grad_accum: int | None = None
    lr: float | None = None
    warmup: int | None = None
    weight_decay: float | None = None
    clip: float | None = None
    seed: int | None = None
    val_fraction: float | None = None
    eval_interval: int | None = None
    eval_batches: int | None = None
    checkpoint_interval: int | None = None

    MUST_MATCH_ON_RESUME: ClassVar[tuple[str, ...]] = tuple(RUN_DEFAULTS)
    MAY_CHANGE_ON_RESUME: ClassVar[tuple[str, ...]] = ("steps", *MONITORING_DEFAULTS)

    def __post_init__(self) -> None:
        for name in POSITIVE:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise NpgptError(f"{name} must be at least 1, got {value}")

    def model(self) -> tuple[GPT2Config, Any]:
        """The model to train: ``(config, params)`` loaded from ``init``, or a fresh config and None."""
        shape = {"n_layer": self.n_layer, "n_embd": self.n_embd, "n_head": self.n_head, "n_ctx": self.n_ctx}
        given = {k: v for k, v in shape.items() if v is not None}
        if self.init is not None:
            if given:
                raise NpgptError(f"pass --init or a model shape ({', '.join(given)}), not both")
            from .checkpoint import load_init

            return load_init(self.init)
        try:
            return GPT2Config(**{**SCRATCH, **given}), None
        except ValueError as e:
            raise NpgptError(str(e)) from None

    def for_new_run(self, config: GPT2Config) -> TrainSettings:
        """Every run and monitoring setting filled in from the defaults, for a run of ``config``."""
        steps = DEFAULT_STEPS if self.steps is None else self.steps
        filled = {k: default if getattr(self, k) is None else getattr(self, k)
                  for k, default in {**RUN_DEFAULTS, **MONITORING_DEFAULTS}.items()}
        filled["seq_len"] = self.seq_len or min(256, config.n_ctx)
        filled["warmup"] = min(100, steps // 10) if self.warmup is None else self.warmup
        return replace(self, steps=steps, **filled)

    def for_resume(self, saved: dict[str, Any], saved_steps: int) -> TrainSettings:
        """The checkpoint's settings (``saved``, from :meth:`to_meta`), with the changes allowed.

        Raises NpgptError naming a run setting given with a value other than the checkpoint's.
        """
        for key in self.MUST_MATCH_ON_RESUME:
            given = getattr(self, key)
            if given is not None and given != saved[key]:
                raise NpgptError(f"cannot resume with {key}={given}: the run in --out used {saved[key]}; "
                                 "pass the same value or start a new --out")
        monitoring = {k: saved.get(k, default) if getattr(self, k) is None else getattr(self, k)
                      for k, default in MONITORING_DEFAULTS.items()}
        steps = saved_steps if self.steps is None else self.steps
        return replace(self, steps=steps, **{k: saved[k] for k in RUN_DEFAULTS}, **monitoring)

    def to_meta(self) -> dict[str, Any]:
        """The run and monitoring settings as the checkpoint stores them (JSON-ready)."""
        return {k: getattr(self, k) for k in (*RUN_DEFAULTS, *MONITORING_DEFAULTS)}
