"""Float32 products of a few rows, for batched steps: ONNX Runtime's MLAS sgemm on a prepacked copy.

Decoding a batch multiplies every weight matrix by a few rows (one per sequence). OpenBLAS's sgemm,
which NumPy's ``@`` calls, repacks the whole weight on every such call: on 2 cores (GPT-2 124M's
``c_fc`` [768, 3072], 24 different matrices in turn so each comes from memory) it took 1131 us for
2 rows where one row took 350, and 1208 us for 8. MLAS's sgemm on a copy packed once at load took
463 us for 2 rows, 558 for 8 (2.2x), 1476 for 64 (1.6x), 4431 for 256 (1.2x), and lost from 512 rows
on (0.89x), where OpenBLAS's packing pays for itself; at one row OpenBLAS's matrix-vector product
is the faster (350 vs 480 us), so a single sequence never uses this (``scripts/few_rows.py``
measures these). End to end (124M, decoding after a 16-token prompt, set up as npgpt's entry points
do, two alternating runs each): batch 8 115-120 -> 199-211 tok/s, batch 32 308-323 -> 453-465,
batch 1 unchanged; ``npgpt bench``: batch 8 0.69x -> 1.05x llama.cpp's f32. ONNX Runtime mallocs
the packed copies in 4 KB pages; moved into 2 MB pages once built
(:func:`~npgpt.hugepages.collapse_huge_pages` over the memory the build mapped, nothing older) they
stream faster: batch 8 144-151 -> 179 tok/s (a pool per session).

The price is memory: the packed copy is as large as the float32 weights it serves, beside them
(NumPy's copy still serves one row, the embedding, and anything else that reads the weights). So
the engine builds it only at its first decode step of two or more sequences and uses it only for
such steps (:meth:`Engine.params_for <npgpt.engine.Engine.params_for>`): one sequence, a prompt or
scoring a batch never pays for it and computes exactly as before. It is built only where the
machine has the memory for it (twice its size available), where an entry point has put ONNX
Runtime's sessions on one shared pool (npgpt's CLI, server and bench do; an application calls
:func:`~npgpt.onnx_session.share_thread_pool`), and never over a writable memory map handed in by
the caller (``np.load(..., mmap_mode="r+")``), whose in-place writes the model must see; the arrays
it serves are made read-only instead, so a later in-place write fails loudly rather than leaving the
packed copy stale (an array replaced in ``params`` makes the engine build it again).

Why a library and not npgpt's own kernel: MLAS is ONNX Runtime's maintained BLAS (the one its int8
path runs on, npgpt/q8_0.py), with sgemm kernels per instruction set (AVX2, AVX-512).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import NpgptError
from .files import is_mapped
from .hugepages import anonymous_ranges, collapse_huge_pages
from .onnx_session import ProductWeight, pool_shared, session
from .params import flatten, head_name, map_with_path

MIN_ROWS = 2  # one row: OpenBLAS's matrix-vector product is faster (above)
MAX_ROWS = 256  # from 512 rows on OpenBLAS's sgemm is faster (above)
HEADROOM = 2.0  # the packed copies are built only if this many times their size is available


class BatchedMatrix(ProductWeight):
    """A float32 weight whose products of ``MIN_ROWS..MAX_ROWS`` rows run on MLAS's prepacked sgemm.

    ``w`` is the NumPy array, [in, out] as the product uses it (C- or F-contiguous: a transposed
    view is fine); ``x @ m`` takes ``x`` [rows, in] float32 and returns [rows, out] float32, from
    MLAS for ``MIN_ROWS <= rows <= MAX_ROWS`` and from NumPy otherwise. ``m.T`` / ``m.mT`` /
    ``np.swapaxes`` switch orientation without copying (the [out, in] table of a tied head);
    indexing, ``shape`` and ``np.asarray(m)`` are the NumPy array's.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, w: np.ndarray) -> None:
        k, n = w.shape
        # Gemm's B: [in, out] rows contiguous as it is, or (a transposed view of a contiguous [out,
        # in] copy, e.g. the head) that copy, read with transB. ONNX Runtime reads it in place and
        # packs it once; it must outlive the session, hence kept here.
        self._b = w if w.flags.c_contiguous else np.ascontiguousarray(w.T)
        trans = {} if w.flags.c_contiguous else {"transB": 1}
        self._session = session("Gemm", {"b": self._b}, k, n, "float32 batched products", **trans)
        self.array = w
        self.product = True  # in the orientation the session multiplies by

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def nbytes(self) -> int:
        return self.array.nbytes

    def flipped(self) -> BatchedMatrix:
        m = BatchedMatrix.__new__(BatchedMatrix)
        m.__dict__.update(self.__dict__, array=self.array.T, product=not self.product)
        return m

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return np.asarray(self.array, dtype=dtype) if copy is not True else np.array(self.array, dtype=dtype)

    def __rmatmul__(self, x: np.ndarray) -> np.ndarray:  # [rows, in] float32 -> [rows, out] float32
        if self.product and getattr(x, "ndim", 0) == 2 and MIN_ROWS <= x.shape[0] <= MAX_ROWS and x.dtype == self.dtype:
            return self._session.run(None, {"x": np.ascontiguousarray(x)})[0]
        return x @ self.array

    def __matmul__(self, other: Any) -> Any:
        return self.array @ other

    def __getitem__(self, index: Any) -> np.ndarray:  # e.g. the embedding's rows of wte
        return self.array[index]

    def __repr__(self) -> str:
        return f"BatchedMatrix(shape={self.shape})"


def batched_layout(params: dict[str, Any]) -> dict[str, Any] | None:
    """``params`` (NumPy's, laid out) with every float32 weight matrix a :class:`BatchedMatrix`; or None.

    None where nothing would change or it cannot be built, and ``params`` is then left as it was:
    no float32 matrices (e.g. int8 weights, which have their own kernel), a writable memory map
    among them, no shared ONNX Runtime pool (:func:`~npgpt.onnx_session.share_thread_pool`, an
    entry point's call: with a pool per session, ~50 sessions would hold ~50 threads per core),
    ONNX Runtime or onnx missing or unable to build the sessions, or less memory available than
    ``HEADROOM`` times the copies' size. Once built, the arrays wrapped are read-only (see the
    module docstring). The other weights are shared, not copied.
    """
    head = head_name(params)
    # The products' matrices, named as put_params names them: the head and every linear layer's w.
    matrices = {name: w for name, w in flatten(params).items() if name == head or name.endswith(".w")}
    if not all(isinstance(w, np.ndarray) and w.dtype == np.float32 and w.ndim == 2 for w in matrices.values()):
        return None
    if any(is_mapped(w) and w.flags.writeable for w in matrices.values()):
        return None  # the caller writes these in place: a packed copy would go stale
    if not pool_shared() or _available_bytes() < HEADROOM * sum(w.nbytes for w in matrices.values()):
        return None
    before = anonymous_ranges()
    try:
        # [in, out] as the products use them; the head multiplies by wte [V, C]'s transpose.
        packed = {name: BatchedMatrix(w.T).T if name == head else BatchedMatrix(w) for name, w in matrices.items()}
    except NpgptError:  # e.g. onnx missing, or an ONNX Runtime without this kernel: NumPy's path stays
        return None
    for w in matrices.values():
        w.flags.writeable = False  # the packed copy is a snapshot: refuse in-place writes from now on
    collapse_huge_pages(since=before)  # the packed copies (malloc'd, 4 KB pages) into 2 MB pages
    return map_with_path(lambda name, a: packed.get(name, a), params)


def _available_bytes() -> float:
    """The memory the kernel could give this process without swapping (Linux ``MemAvailable``); inf if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")
