"""Array backends: where the weights live and how one forward pass is run.

The model is one array-API file; a backend only moves NumPy arrays in and out and, for JAX,
compiles the forward pass (once per input shape: a decode step has a fixed shape).
"""

from __future__ import annotations

import functools
import mmap
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
    layout: Callable[[dict[str, Any]], dict[str, Any]] = lambda params: params  # see _numpy_layout

    def put_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Move every weight to the backend once, at load, in the layout its products run fastest on."""
        return self.layout(_tree_map(self.asarray, params))


def _numpy_layout(params: dict[str, Any]) -> dict[str, Any]:
    """NumPy's weights: ``wte`` becomes the transposed view of a contiguous [C, V] copy.

    The output head ``x @ wte.T`` reads a third of the bytes of a decode step, and OpenBLAS
    reads a contiguous [C, V] matrix 20-40 % faster than the transposed view of [V, C] (measured
    on 2 cores, at batch 1, 8 and 32 alike). The model still sees the same [V, C] array (its
    rows are now strided, which the embedding lookup does not mind), and no second copy stays
    resident (see :func:`_release_mapped`). The other matrices stay [in, out]: storing
    ``mlp.c_proj`` [4C, C] as [C, 4C] too reads it 25 % faster at batch 1 but 30 % slower at 8.
    """
    wte = params["wte"]
    head = np.ascontiguousarray(wte.T)  # [V, C] -> [C, V], copied once
    _release_mapped(wte)
    return {**params, "wte": head.T}


def _reuse_freed_memory() -> None:
    """Have glibc keep freed blocks (up to 32 MB each) for reuse rather than hand them back to the OS.

    Every NumPy operation allocates its result. By default glibc returns large freed blocks to
    the OS, so the next temporary faults fresh zeroed pages in: ~50,000 page faults in a
    512-token prefill, 10-15 % of its time. This pins glibc's own largest mmap threshold (32 MB)
    and lets up to 256 MB stay free on the heap. Process-wide; only on glibc, elsewhere a no-op.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
    libc = ctypes.CDLL(None)  # the C library already loaded into this process
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)


def _release_mapped(arr: np.ndarray) -> None:
    """Drop a read-only memory-mapped array's pages from this process's memory (not from the file).

    Pages of a file mapping count towards the process's resident memory until unmapped; the
    other tensors keep the checkpoint's mapping alive, so release this tensor's range. Reading
    it again would simply fault the pages back in from the OS page cache.
    """
    base = arr
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is None or arr.flags.writeable or not hasattr(mmap, "MADV_DONTNEED"):
        return  # not mapped, or copy-on-write (mode "c": dropping pages would lose writes)
    start = arr.ctypes.data - np.frombuffer(base, np.uint8).ctypes.data
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages inside the array only
    last = (start + arr.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        base.madvise(mmap.MADV_DONTNEED, first, last - first)


def _power_of_two(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def get_backend(name: str) -> Backend:
    """The :class:`Backend` called ``name``; a clear error naming the extra if it is missing."""
    from .model import gpt2

    if name == "numpy":
        _reuse_freed_memory()
        return Backend("numpy", np.asarray, np.asarray, gpt2, layout=_numpy_layout)
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
