"""Array backends: where the weights live and how one forward pass is run.

The model is one array-API file; a backend only moves NumPy arrays in and out and, for JAX,
compiles the forward pass (once per input shape: a decode step has a fixed shape).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import NpgptError, dtype_hint, reason, shown
from .files import is_mapped, release_mapped
from .hugepages import collapse_huge_pages
from .params import Q8_0Blocks, as_floats, dequantized, dtype_name, head_name, map_with_path

__all__ = ["Backend", "check_dtype", "collapse_huge_pages", "float32_products", "get_backend", "tune_allocator"]

BACKENDS = ("numpy", "jax", "torch", "cupy", "cupynumeric")
WEIGHT_DTYPES = ("float32", "float16", "bfloat16", "int8")  # how the weight matrices are stored; activations: float32
AUTO = "auto"  # not a storage: asks load() to pick one of the backend's by measuring (npgpt/autotune.py)
# The weight dtypes each backend stores: 16 bits only where the library has 16-bit matrix products
# (NumPy has none that are fast; CuPy has no bfloat16); int8 only where a library's int8-weight
# product beats the backend's float32 one (NumPy: ONNX Runtime's, npgpt/q8_0.py; PyTorch's own,
# npgpt/int8.py).
DTYPES = {
    "numpy": ("float32", "int8"),
    "jax": ("float32", "float16", "bfloat16"),
    "torch": WEIGHT_DTYPES,
    "cupy": ("float32", "float16"),
    "cupynumeric": ("float32",),
}
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
        raise NpgptError(
            f"backend {backend!r} failed to start ({reason(e)}); it needs an NVIDIA GPU with its driver"
        ) from None


def float32_products(x: Any) -> contextlib.AbstractContextManager[Any]:
    """Around products run outside the backend's compiled forward pass (hooks, the logit lens): for a
    JAX array ``x``, JAX's float32 products stay float32 (on a GPU XLA's default is TensorFloat-32,
    ~1e-3 off), as the compiled pass's are; for any other array, nothing."""
    from array_api_compat import is_jax_array

    if is_jax_array(x):
        import jax

        return jax.default_matmul_precision("highest")
    return contextlib.nullcontext()


def check_dtype(dtype: Any, allow_auto: bool = False) -> str:
    """``dtype``'s name if it is a weight dtype npgpt stores (or, with ``allow_auto``, ``"auto"``), as a name or
    a library's dtype object (``np.float16``, ``torch.bfloat16``: :func:`npgpt.params.dtype_name`); else a
    one-line error in the Python API's words (``dtype='int4'``; the CLI says ``--dtype int4``, cli/flags.py's
    as_flags)."""
    valid = (*WEIGHT_DTYPES, AUTO) if allow_auto else WEIGHT_DTYPES
    name = dtype_name(dtype)
    if not isinstance(name, str) or name not in valid:
        given = repr(name) if isinstance(name, str) else shown(dtype)
        raise NpgptError(
            f"dtype={given} is unknown; choose one of {', '.join(valid)}{dtype_hint(name, valid)}", "dtype"
        )
    return name


@dataclass(frozen=True)
class Backend:
    """How to run the model on one array library."""

    name: str
    asarray: Callable[[np.ndarray], Any]  # host NumPy -> backend array (on the backend's device)
    to_numpy: Callable[[Any], np.ndarray]
    forward: Callable[..., tuple[Any, Any]]  # model.gpt2 with the same signature, maybe compiled
    # Capabilities, declared here so callers never test a backend's name:
    bucket: Callable[[int], int] = int  # a length -> the (larger) length to pad it to for compiling
    compiles: bool = False  # forward is compiled per input shape: keep shapes fixed (run all rows)
    functional_updates: bool = False  # arrays are immutable: cache writes return new buffers
    dtypes: tuple[str, ...] = ("float32",)  # the weight dtypes it stores (DTYPES)
    layout: Callable[[dict[str, Any]], dict[str, Any]] = lambda params: params  # see _numpy_layout
    # A host float32 weight matrix, [in, out] as the products use it -> on the backend in a 16-bit
    # dtype (by name), laid out for its products; for the backends whose DTYPES have one.
    to_16bit: Callable[[np.ndarray, str], Any] | None = None
    # The same matrix, whether its rows are read too (wte, lm_head) and whether it is multiplied by
    # at all (not an untied model's wte, a table only) -> an int8 weight object whose `x @ w` is the
    # library's int8 kernel (float32 in and out) and whose `.mT` is the [out, in] table
    # (npgpt/int8.py); for DTYPES with "int8".
    to_int8: Callable[[np.ndarray, bool, bool], Any] | None = None
    # Laid-out params -> the same params with their products of a few rows on a faster kernel, for
    # steps over several sequences (npgpt/batched.py), or None where it cannot; costs memory, so the
    # engine asks only once it runs such a step.
    batched: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
    # A GGUF's Q8_0 matrix as its blocks (params.Q8_0Blocks, taken as a product weight: its rows are
    # the outputs) and the same two uses -> the int8 weight to_int8 would make of it, from the file's
    # own codes; for backends whose int8 product is Q8_0's (npgpt/q8_0.py).
    from_q8_0: Callable[[Any, bool, bool], Any] | None = None
    # Some of its products run on ONNX Runtime sessions (int8, batched float32): an entry point puts
    # them on one shared pool before loading (npgpt/onnx_session.py's share_thread_pool).
    onnx_sessions: bool = False
    # Whether an exception is the library's "out of memory" (NumPy's and CuPy's MemoryError; PyTorch's and JAX's
    # are RuntimeErrors of their own), which the engine answers as one line naming the rows and tokens asked for.
    out_of_memory: Callable[[BaseException], bool] = lambda e: isinstance(e, MemoryError)

    def put_params(self, params: dict[str, Any], dtype: str = "float32") -> dict[str, Any]:
        """Move every weight to the backend once, at load, in the layout its products run fastest on.

        ``dtype`` "float16" or "bfloat16" stores the weight matrices (``wte`` and every block's
        ``w``) in 16 bits: half the memory and half the bytes read per decoded token; "int8" in
        8 bits with per-output-channel scales (npgpt/int8.py): a quarter. Biases, layer norms,
        ``wpe``, the kv cache and all activations stay float32.
        """
        check_dtype(dtype)
        from_q8_0 = self.from_q8_0 if dtype == "int8" else None
        if from_q8_0 is None:  # a GGUF's Q8_0 blocks only this backend's own int8 product takes as they are
            params = dequantized(params)
        if dtype == "float32":
            return self.layout(map_with_path(lambda _name, a: self.asarray(a), params))
        to_16bit = self.to_16bit
        convert: Callable[[np.ndarray, bool, bool], Any] | None = (
            self.to_int8 if dtype == "int8" else None if to_16bit is None else lambda w, *_uses: to_16bit(w, dtype)
        )
        if convert is None or dtype not in self.dtypes:
            backends = _cpu_backends_with(dtype)
            # Name the install too where the advised library is missing: one step, not two errors in turn.
            missing = [f"pip install 'npgpt[{_EXTRA[b]}]'" for b in backends if b in _EXTRA and not _installed(b)]
            use = " or ".join(f"backend={b!r}" for b in backends)
            raise NpgptError(
                f"backend {self.name!r} has no fast {dtype} matrix product (it would run several "
                f"times slower than float32); use {use} for dtype={dtype!r}"
                + (f" ({', '.join(missing)})" if missing and len(missing) == len(backends) else ""),
                "dtype",
            )

        def narrow(
            w: Any, table: bool = False, product: bool = True
        ) -> Any:  # one matrix at a time, from the file's pages
            if isinstance(w, Q8_0Blocks) and from_q8_0 is not None:
                out = from_q8_0(w, table, product)  # the file's own codes, in the product's orientation
                if w.raw is not None:
                    release_mapped(w.raw)
                return out
            out = convert(w, table, product)
            release_mapped(w)
            return out

        # The head (wte, or an untied lm_head) multiplies by its transpose: pass it as used. Its rows
        # are read as well (wte's: the token embedding; lm_head's: unembedding directions). The heads
        # go first: the largest matrices, whose conversion's temporaries (int8: ONNX Runtime copies
        # the codes before it prepacks them) then come while little else is resident (124M int8,
        # peak during load: 379 -> 351 MB). With an untied lm_head, wte is the embedding table only:
        # never multiplied by, so no product is built for it (124M int8: ~45 MB). ".w": every linear layer.
        head = head_name(params)
        heads = {
            n: narrow(_flip(params[n]), table=True, product=n == head).T for n in ("wte", "lm_head") if n in params
        }
        return map_with_path(
            lambda name, a: heads[name] if name in heads else narrow(a) if name.endswith(".w") else _own(self, a),
            params,
        )


def _own(backend: Backend, a: Any) -> Any:
    """A vector or ``wpe`` beside narrowed matrices, on ``backend`` and no longer a view of the file.

    Why copy (3.5 MB for 124M): the pages read around these small tensors (the kernel maps whole
    folios) do not come back as ~55 MB of resident file pages after the first forward pass, and the
    vectors, read every step, cannot be changed under the model by a rewrite of the file. Float32
    weights stay mapped by design; int8 heads' rows are read from the file per lookup (npgpt/q8_0.py).
    """
    a = as_floats(a)
    return backend.asarray(np.array(a) if is_mapped(a) else a)


def _flip(w: Any) -> Any:
    """``w.T``; for Q8_0 blocks, the same blocks taken as the other orientation."""
    return dataclasses.replace(w, transposed=not w.transposed) if isinstance(w, Q8_0Blocks) else w.T


def _release_rows(w: np.ndarray) -> Callable[[int, int], None] | None:
    """For quantizing ``w`` [in, out] a few output rows at a time: drops rows ``i:j`` of ``w.T``'s mapped
    pages once read, where those rows are contiguous in the file (wte's, the head's); else None."""
    rows = w.T  # [out, in]
    return (lambda i, j: release_mapped(rows[i:j])) if rows.flags.c_contiguous else None


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _cpu_backends_with(dtype: str) -> list[str]:
    """The backends whose CPU kernels for ``dtype`` were measured to pay (docs/benchmarks.md): the advice
    an error gives. JAX's 16-bit weights are for accelerators; CuPy's need a GPU."""
    return [b for b in ("numpy", "torch") if dtype in DTYPES[b]]


def _numpy_layout(params: dict[str, Any]) -> dict[str, Any]:
    """NumPy's weights: every matrix in memory NumPy allocates, the taller-than-wide ones transposed.

    Decoding reads every weight once per step in a matrix-vector product, so how fast OpenBLAS
    streams a matrix from memory sets the speed. Two things make it stream faster:

    - **NumPy's own memory, not the checkpoint's file mapping.** A mapped file lives in 4 KB
      page-cache pages; NumPy asks the kernel for 2 MB transparent huge pages for its large arrays
      (``madvise(MADV_HUGEPAGE)``, where ``/sys/kernel/mm/transparent_hugepage/enabled`` allows
      it). The CPU's prefetchers stop at every 4 KB page boundary and each 4 KB page costs a TLB
      miss, so the same product read the mapped matrix at about half the rate (measured on 2 cores,
      GPT-2 124M, one decode step: ``c_attn`` / ``c_fc`` 7-9 GB/s mapped, 13-15 GB/s copied;
      decoding at batch 1 1.11x faster, median of 6 alternating runs, 1.03-1.37x per pair; and
      steadier, as mapped it was fast only when the page cache happened to hold the file in large
      folios). The mapped matrices are therefore copied once at load,
      each releasing its file pages right after (see :func:`~npgpt.files.release_mapped`), so
      resident memory stays one copy of the weights. Matrices already in process memory (from a
      checkpoint that was converted at load) are kept as they are, and so are writable mappings
      (``np.load(..., mmap_mode="r+")`` handed to ``GPT2``), whose writes the model must see.
    - **The long side contiguous.** Two matrices are taller than wide: ``wte`` [V, C] (or an
      untied ``lm_head``), whose transpose is the output head (a third of the bytes of a step),
      and ``mlp.c_proj`` [4C, C]. They are kept as transposed views of contiguous [C, V] and
      [C, 4C] copies. ``wte``'s rows are only gathered (the embedding), so ``wte`` needs no other copy.

    The model sees the same shapes and values.
    """

    def own(w: np.ndarray) -> np.ndarray:  # [m, n] -> [m, n], in NumPy's memory
        if not is_mapped(w) or w.flags.writeable:  # a writable mapping ("r+") is the caller's to update in place
            return w
        copy = np.array(w, copy=True)
        release_mapped(w)
        return copy

    def long_side_contiguous(w: np.ndarray) -> np.ndarray:  # [m, n] -> [m, n] view of an [n, m] copy
        copy = np.ascontiguousarray(w.T)  # [m, n] -> [n, m], copied once
        release_mapped(w)
        return copy.T

    def linear(layer: dict[str, Any], store: Callable[[np.ndarray], np.ndarray]) -> dict[str, Any]:
        return {**layer, "w": store(layer["w"])}

    # The head first: its copy is made while its file pages are resident (154 MB for 124M), which
    # is then the load's peak only if no other copy is resident yet.
    head = head_name(params)  # an untied head; wte then stays rows-contiguous
    head_w = long_side_contiguous(params[head])
    blocks = []
    for block in params["blocks"]:
        attn, mlp = block["attn"], block["mlp"]
        attn = {**attn, "c_attn": linear(attn["c_attn"], own), "c_proj": linear(attn["c_proj"], own)}
        mlp = {**mlp, "c_fc": linear(mlp["c_fc"], own), "c_proj": linear(mlp["c_proj"], long_side_contiguous)}
        blocks.append({**block, "attn": attn, "mlp": mlp})
    return {**params, head: head_w, "blocks": blocks}


def tune_allocator() -> None:
    """Have glibc keep freed blocks (up to 32 MB each) for reuse rather than hand them back to the OS.

    Every NumPy operation allocates its result. By default glibc returns large freed blocks to
    the OS, so the next temporary faults fresh zeroed pages in: ~50,000 page faults in a
    512-token prefill, 10-15 % of its time. This pins glibc's own largest mmap threshold (32 MB)
    and lets up to 256 MB stay free on the heap. Only on glibc, elsewhere a no-op.

    Process-wide, so the library never calls it on its own: the entry points do (the ``npgpt``
    CLI, ``npgpt serve`` and the benchmark's workers). An application embedding npgpt may call
    it once at start-up for the same speed-up.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
    libc = ctypes.CDLL(None)  # the C library already loaded into this process
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)


def _power_of_two(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def get_backend(name: str) -> Backend:
    """The :class:`Backend` called ``name``; a clear error naming the extra if it is missing."""
    from .model import gpt2

    if name == "numpy":

        def q8_0(w: np.ndarray, table: bool, product: bool) -> Any:
            from .q8_0 import Q8Matrix

            return Q8Matrix.from_float(w, _release_rows(w), table=table, product=product)

        def from_q8_0(blocks: Q8_0Blocks, table: bool, product: bool) -> Any:
            from .q8_0 import Q8Matrix

            return Q8Matrix.from_blocks(blocks, table=table, product=product)

        def batched(params: dict[str, Any]) -> dict[str, Any] | None:
            from .batched import batched_layout

            return batched_layout(params)

        return Backend(
            "numpy",
            np.asarray,
            np.asarray,
            gpt2,
            dtypes=DTYPES[name],
            layout=_numpy_layout,
            to_int8=q8_0,
            from_q8_0=from_q8_0,
            batched=batched,
            onnx_sessions=True,
        )
    if name == "jax":
        jax = _require("jax", name)

        @functools.wraps(gpt2)  # jit reads the signature (static_argnames) through it
        def gpt2_float32_products(*args: Any, **kw: Any) -> Any:
            # On a GPU, XLA's default float32 product rounds its inputs to TensorFloat-32 (10-bit
            # mantissa): logits ~1e-3 off. "highest" keeps float32 products float32, as NumPy's and
            # PyTorch's are; 16-bit weights are unaffected. Read while tracing: no process-wide setting.
            with jax.default_matmul_precision("highest"):
                return gpt2(*args, **kw)

        # The config and last_only change the program, so they are static; the cache is donated
        # so XLA can update it in place.
        forward = jax.jit(gpt2_float32_products, static_argnames=("config", "last_only"), donate_argnames=("cache",))
        # 16-bit weights are for accelerators: XLA's CPU 16-bit products are ~10x slower than float32.
        return Backend(
            "jax",
            jax.numpy.asarray,
            np.asarray,
            forward,
            bucket=_power_of_two,
            compiles=True,
            functional_updates=True,
            dtypes=DTYPES[name],
            to_16bit=lambda w, dtype: jax.numpy.asarray(w, dtype=dtype),
            out_of_memory=lambda e: (
                isinstance(e, MemoryError)
                or isinstance(e, jax.errors.JaxRuntimeError)
                and "RESOURCE_EXHAUSTED" in str(e)
            ),
        )
    if name == "torch":
        torch = _require("torch", name)
        device = "cuda" if torch.cuda.is_available() else "cpu"

        def to_torch(a: np.ndarray) -> Any:
            t = torch.from_numpy(np.array(a, copy=True)).to(device)  # copy: memmaps are read-only
            release_mapped(a)  # the copy is what stays; the checkpoint's pages need not
            return t

        def to_numpy(a: Any) -> np.ndarray:
            return a.detach().cpu().numpy()

        @functools.wraps(gpt2)
        def forward(*args: Any, **kw: Any) -> Any:
            with torch.inference_mode():
                return gpt2(*args, **kw)

        def to_16bit(w: np.ndarray, dtype: str) -> Any:
            # [in, out] kept as the transposed view of a contiguous [out, in] copy (nn.Linear's
            # layout): on CPU, oneDNN's float16 matrix-vector product is ~25x faster on it.
            with warnings.catch_warnings():  # read-only memmap: only read here, never written
                warnings.simplefilter("ignore", UserWarning)
                src = torch.from_numpy(w)
            return src.T.to(device, getattr(torch, dtype), memory_format=torch.contiguous_format).T

        def to_int8(
            w: np.ndarray, _table: bool, _product: bool
        ) -> Any:  # the kernel reads the codes it keeps: no second copy
            from .int8 import Int8Matrix

            with warnings.catch_warnings():  # read-only memmap: only read here, never written
                warnings.simplefilter("ignore", UserWarning)
                return Int8Matrix.from_float(torch.from_numpy(w), _release_rows(w)).to(device)

        def out_of_memory(e: BaseException) -> bool:
            # a GPU's is torch.OutOfMemoryError; the CPU allocator's a plain RuntimeError saying so
            return isinstance(e, (MemoryError, torch.OutOfMemoryError)) or (
                isinstance(e, RuntimeError) and "can't allocate memory" in str(e)
            )

        return Backend(
            "torch",
            to_torch,
            to_numpy,
            forward,
            dtypes=DTYPES[name],
            to_16bit=to_16bit,
            to_int8=to_int8,
            out_of_memory=out_of_memory,
        )
    if name == "cupy":
        cp = _require("cupy", name)
        # cuBLAS runs float16 products on tensor cores; CuPy has no bfloat16 dtype.
        return Backend(
            "cupy",
            cp.asarray,
            cp.asnumpy,
            gpt2,
            dtypes=DTYPES[name],
            to_16bit=lambda w, dtype: cp.asarray(w.astype(dtype)),
        )
    if name == "cupynumeric":
        # NVIDIA's distributed drop-in NumPy: its arrays carry __array_namespace__, so the
        # model file runs unchanged; Legate decides where the data lives.
        cn = _require("cupynumeric", name)
        return Backend("cupynumeric", cn.asarray, np.asarray, gpt2)
    given = repr(name) if isinstance(name, str) else shown(name)
    raise NpgptError(f"backend={given} is unknown; choose one of {', '.join(BACKENDS)}{backend_hint(name)}", "backend")


# Other names of npgpt's backends (another case too), and device names given where the backend (the library) goes
_BACKEND_NAMES = {"np": "numpy", "pytorch": "torch", "pt": "torch", "cupynumpy": "cupynumeric"}
_DEVICES = ("cpu", "cuda", "gpu", "mps", "tpu", "xla", "rocm", "hip", "xpu")


def backend_hint(name: object) -> str:
    """What to add to "backend X is unknown": npgpt's name of a backend spelt otherwise (``NumPy``, ``pytorch``,
    ``torch:cuda``), or for a device name (``cuda``, ``cpu``, ``cuda:0``) that the backend is the library and
    which device each runs on; else ``""``."""
    if not isinstance(name, str):
        return ""
    low = name.strip().lower()
    library, _, device = low.partition(":")
    library = _BACKEND_NAMES.get(library, library)
    if library in BACKENDS and library != name:
        on = ", which picks its device itself" if device else ""
        return f" ({name!r} is {library!r} here{on})"
    if library in _DEVICES:
        return f"; npgpt's backends are array libraries, not devices: {_ON_DEVICE}"
    return ""


_ON_DEVICE = (
    "'numpy' runs on the CPU; 'torch' on a CUDA GPU when it sees one, else the CPU; 'jax' on its default device; "
    "'cupy' on an NVIDIA GPU"
)
