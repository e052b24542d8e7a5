"""Array backends: where the weights live and how one forward pass is run.

The model is one array-API file; a backend only moves NumPy arrays in and out and, for JAX,
compiles the forward pass (once per input shape: a decode step has a fixed shape).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import NpgptError

BACKENDS = ("numpy", "jax", "torch", "cupy", "cupynumeric")
_EXTRA = {"jax": "jax", "torch": "torch"}
_GPU_INSTALL = {  # not extras: these need CUDA and pick a wheel per CUDA version
    "cupy": "pip install cupy-cuda12x (needs an NVIDIA GPU)",
    "cupynumeric": "pip install nvidia-cupynumeric (needs an NVIDIA GPU and its driver's libcuda)",
}


def _require(module: str, backend: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        hint = _GPU_INSTALL.get(backend) or f"pip install 'npgpt[{_EXTRA[backend]}]'"
        raise NpgptError(f"backend {backend!r} is not installed; {hint}") from None
    except Exception as e:  # cuPyNumeric/legate raise their own errors when libcuda is missing
        raise NpgptError(f"backend {backend!r} failed to start ({type(e).__name__}: {e}); "
                         "it needs an NVIDIA GPU with its driver") from None


def _tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_tree_map(fn, v) for v in tree)
    return fn(tree)


@dataclass(frozen=True)
class Backend:
    """How to run the model on one array library."""

    name: str
    asarray: Callable[[np.ndarray], Any]  # host NumPy -> backend array (on the backend's device)
    to_numpy: Callable[[Any], np.ndarray]
    forward: Callable[..., tuple[Any, Any]]  # model.gpt2 with the same signature, maybe compiled
    bucket: Callable[[int], int] = int  # a length -> the (larger) length to pad it to for compiling

    def put_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Move every weight to the backend once, at load."""
        return _tree_map(self.asarray, params)


def _power_of_two(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def get_backend(name: str) -> Backend:
    """The :class:`Backend` called ``name``; a clear error naming the extra if it is missing."""
    from .model import gpt2

    if name == "numpy":
        return Backend("numpy", np.asarray, np.asarray, gpt2)
    if name == "jax":
        jax = _require("jax", name)
        # n_head and last_only change the program, so they are static; the cache is donated
        # so XLA can update it in place.
        forward = jax.jit(gpt2, static_argnames=("n_head", "last_only"), donate_argnames=("cache",))
        return Backend("jax", jax.numpy.asarray, np.asarray, forward, bucket=_power_of_two)
    if name == "torch":
        torch = _require("torch", name)
        device = "cuda" if torch.cuda.is_available() else "cpu"

        def to_torch(a: np.ndarray) -> Any:
            return torch.from_numpy(np.array(a, copy=True)).to(device)  # copy: memmaps are read-only

        def to_numpy(a: Any) -> np.ndarray:
            return a.detach().cpu().numpy()

        @functools.wraps(gpt2)
        def forward(*args: Any, **kw: Any) -> Any:
            with torch.inference_mode():
                return gpt2(*args, **kw)

        return Backend("torch", to_torch, to_numpy, forward)
    if name == "cupy":
        cp = _require("cupy", name)
        return Backend("cupy", cp.asarray, cp.asnumpy, gpt2)
    if name == "cupynumeric":
        # NVIDIA's distributed drop-in NumPy: its arrays carry __array_namespace__, so the
        # model file runs unchanged; Legate decides where the data lives.
        cn = _require("cupynumeric", name)
        return Backend("cupynumeric", cn.asarray, np.asarray, gpt2)
    raise NpgptError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
