"""Training and scale-out, on JAX: ``from npgpt.train import train``.

Importing this package is cheap; JAX and optax load with the first name used from it.

- :mod:`.data`     text -> uint16 token file (memory-mapped), random contiguous batches
- :mod:`.loss`     next-token cross-entropy through ``npgpt.model.gpt2``
- :mod:`.step`     AdamW + warm-up/cosine + clipping + accumulation: the jitted ``train_step``
- :mod:`.sharding` ("data", "model") mesh, data and tensor parallelism, multi-host
- :mod:`.settings` ``TrainSettings``: defaults, and what may change on resume
- :mod:`.start`    a run's start: checkpoint or fresh model, settings, data, devices, optimiser state
- :mod:`.loop`     ``train(data, out, settings)``: the steps, exact resume, held-out loss
- :mod:`.checkpoint` the run's files: resume state, model, the model to start from
- :mod:`.plot`     the loss curves as a PNG

The ``npgpt train`` command is ``npgpt.cli.train``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train": "loop",
    "Progress": "loop",
    "TrainResult": "loop",
    "TrainSettings": "settings",
    "load_init": "checkpoint",
    "make_train_step": "step",
    "optimizer": "step",
    "schedule": "step",
    "make_mesh": "sharding",
    "shard_params": "sharding",
    "shard_batch": "sharding",
    "init_distributed": "sharding",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
