"""8-bit weights for the NumPy backend: llama.cpp's Q8_0 blocks, multiplied by ONNX Runtime's kernel.

Scheme (``load(dtype="int8")`` on the NumPy backend): every weight matrix (each block's ``c_attn``,
``attn.c_proj``, ``c_fc``, ``mlp.c_proj`` and the tied ``wte``/head, or an untied ``lm_head``) is
quantized once at load in **blocks of 32 along the input dimension, symmetric**, as llama.cpp's
``Q8_0`` (ggml-quants.c, ``quantize_row_q8_0_ref``): for output channel ``j`` and block ``b`` (inputs
``32b .. 32b+31``), the float32 scale ``d = max |w| / 127`` over the block and the codes
``q = round(w / d)`` in [-127, 127]; ``w ~= q * d``. An input dimension that is not a multiple of 32
is padded with zeros to the next block. Stored ``[out, in/32, 32]`` as ``q + 128`` in uint8 (the
layout ONNX Runtime's kernel reads, zero point 128) plus the scales ``[out, in/32]``: 1.125 bytes a
weight, as in a Q8_0 GGUF file (whose float16 scales are exact in float32, so a Q8_0 GGUF loaded
with ``dtype="int8"`` gets back its own codes and scales bit for bit). For ``wte`` [V, C] the output
channel of the head is the vocabulary row, so the same codes give the embedding: a looked-up row is
widened to float32 as ``q[id] * d[id]`` (no second table).

Product: ``x @ m`` runs ONNX Runtime's ``com.microsoft.MatMulNBits`` (``bits=8``,
``block_size=32``, ``accuracy_level=4``): its MLAS kernel quantizes each row of ``x`` to int8 per
block of 32 as well and accumulates the int8 x int8 dot products in int32 (VNNI / AMX where the
CPU has them), float32 out: the same arithmetic as llama.cpp's ``q8_0 x q8_0`` dot product.
Picked by measurement (docs/benchmarks.md, ``scripts/int8_kernels.py``): on an AVX-512/AMX host it
ran GPT-2's products at 1 row 2-5x faster than NumPy's float32 and than PyTorch's int8 kernels, and
it needs no PyTorch in the process (~200 MB less resident memory). One ONNX Runtime session per
matrix, built at load. Where the entry point has called :func:`share_thread_pool` (npgpt's CLI,
server and bench do), all of them run on ONNX Runtime's one global thread pool.

Memory: a session multiplies from its own prepacked copy of the codes (ONNX Runtime copies the
initializers it is handed). :func:`runtime_keeps_its_own_copy` checks that once per process, on
matrices of its own, and a product-only matrix (every block's ``.w``) then drops its Python-side
codes and scales: the 8-bit weights are held once, not twice (GPT-2 124M, resident after load:
418 -> 342 MB, with the sessions' memory arenas off as well, npgpt/onnx_session.py). The heads'
rows are read too (``wte``'s are the token embedding, an untied ``lm_head``'s unembedding
directions): where the checkpoint is a read-only memory map of its file, a lookup reads the rows
it needs from the file and makes their codes as the load did (``Q8Matrix._rows``), so the heads
drop theirs as well (124M: 45 MB); from anything else (a checkpoint converted in memory, arrays
handed to ``GPT2``) they keep them.

``OMP_NUM_THREADS``, where set, bounds the pool's threads as it bounds OpenBLAS's.

Errors: :class:`~npgpt.errors.NpgptError` if ``onnxruntime``/``onnx`` are missing (``pip install
'npgpt[int8]'``); ``TypeError`` for anything but ``x @ m`` ([rows, in] float32) and table lookups.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from .files import FileRows
from .onnx_session import ProductWeight, session, share_thread_pool
from .params import Q8_0Blocks

__all__ = ["Q8Matrix", "cap_blas_for", "in_use", "keep_blas_to_one_thread", "quantize", "share_thread_pool"]

BLOCK = 32  # inputs per scale: Q8_0's block (ggml's QK8_0)
ZERO = 128  # the codes are stored q + 128 (uint8), MatMulNBits's default zero point for 8 bits
CHUNK = 1 << 20  # weights quantized at a time: bounds the float32 temporary at load (4 MB)
DROP_BYTES = 4096  # a product-only matrix with fewer code bytes keeps them (not worth a page)


def quantize(rows: np.ndarray, done: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 blocks: ``rows`` [out, in] float -> codes [out, in/32, 32] uint8 (q + 128), scales [out, in/32] float32.

    ``in`` is padded with zeros to a multiple of 32. A block of zeros gets scale 0 and codes 128
    (q = 0), as in llama.cpp. ``done(i, j)`` is called once rows ``i:j`` are quantized (the loader
    drops those rows' checkpoint pages from memory). Rounding: half away from zero (C's ``roundf``,
    as llama.cpp), not NumPy's half to even.
    """
    out, k = rows.shape
    n_blocks = -(-k // BLOCK)
    codes = np.empty((out, n_blocks, BLOCK), dtype=np.uint8)
    scales = np.empty((out, n_blocks), dtype=np.float32)
    step = max(1, CHUNK // max(k, 1))
    for i in range(0, out, step):  # a few rows at a time: small temporaries, no float32 copy of it all
        j = min(i + step, out)
        if k % BLOCK:  # padded to whole blocks with zeros
            w = np.zeros((j - i, n_blocks * BLOCK), dtype=np.float32)
            w[:, :k] = rows[i:j]
        else:
            w = np.asarray(rows[i:j], dtype=np.float32)
        w = w.reshape(j - i, n_blocks, BLOCK)
        d = np.abs(w).max(axis=-1) / np.float32(127.0)  # [rows, blocks]
        inv = np.divide(np.float32(1.0), d, out=np.zeros_like(d), where=d > 0)  # 0 for a block of zeros
        q = w * inv[..., None]
        q += np.copysign(np.float32(0.5), q)
        np.trunc(q, out=q)  # roundf: half away from zero
        # Ufuncs in place rather than np.clip and astype: the same numbers, a few times faster on the
        # one row a table lookup quantizes (Q8Matrix._rows).
        np.minimum(q, 127, out=q)
        np.maximum(q, -127, out=q)
        q += ZERO
        codes[i:j] = q  # whole numbers 1..255: exact in uint8
        scales[i:j] = d
        if done is not None:
            done(i, j)
    return codes, scales


def _session(codes: np.ndarray, scales: np.ndarray) -> Any:
    """An ONNX Runtime session computing ``y [rows, out] = x [rows, in/32*32] @ dequant(codes).T``."""
    n, n_blocks, block = codes.shape
    return session(
        "MatMulNBits",
        {"q": codes, "d": scales.reshape(-1)},  # kept by Q8Matrix unless the session holds its own
        n_blocks * block,
        n,
        "int8 weights",
        K=n_blocks * block,
        N=n,
        bits=8,
        block_size=block,
        accuracy_level=4,  # int8 compute: activations quantized per block of 32, int32 accumulation
    )


@functools.cache
def runtime_keeps_its_own_copy() -> bool:
    """Whether this process's ONNX Runtime multiplies an 8-bit matrix from its own copy of the codes.

    ONNX Runtime (1.32, as measured) copies external initializers into buffers of its own and
    prepacks them; its API promises neither that nor the opposite. Checked once per process (a
    check per matrix kept ONNX Runtime's pool thread spinning through the load: +1 s for 124M on 2
    cores), on two matrices of its own, the smallest whose codes are dropped (``DROP_BYTES``) and
    a large one (1 MB): both must hold their own copy.
    """
    rng = np.random.default_rng(0)
    for out, n_blocks in ((DROP_BYTES // (32 * BLOCK), 32), (256, 128)):
        codes, scales = quantize(rng.standard_normal((out, n_blocks * BLOCK), dtype=np.float32))
        if not _session_keeps_its_own_copy(_session(codes, scales), codes, scales):
            return False
    return True


def _session_keeps_its_own_copy(sess: Any, codes: np.ndarray, scales: np.ndarray) -> bool:
    """Whether ``sess`` computes from its own copy of ``codes`` and ``scales``, not from their memory:
    the same rows give the same products before and after both are overwritten (then restored, bit
    for bit). False where the arrays are read-only or the products differ."""
    if not (codes.flags.writeable and scales.flags.writeable):
        return False
    k = codes.shape[1] * codes.shape[2]
    rows = np.random.default_rng(0).standard_normal((33, k), dtype=np.float32)
    probes = (rows[:1], rows)  # one row and several: ONNX Runtime's two kinds of product
    before = [sess.run(None, {"x": x})[0] for x in probes]
    kept = scales.copy()
    np.bitwise_xor(codes, 0xFF, out=codes)  # every code changes (and changes back below)
    scales[...] = 1.0  # every scale changes too, zero ones included
    try:
        after = [sess.run(None, {"x": x})[0] for x in probes]
    finally:
        np.bitwise_xor(codes, 0xFF, out=codes)
        scales[...] = kept
    return all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def _file_rows(rows: np.ndarray | Q8_0Blocks, k: int) -> Callable[[Any], tuple[np.ndarray, np.ndarray]] | None:
    """For a table whose rows are a read-only view of a checkpoint file's memory map (float [out, k], or
    a GGUF's Q8_0 blocks): ids -> their codes (q + 128) and scales, read from the file and made as
    :func:`quantize` / :meth:`Q8Matrix.from_blocks` made them at load; None where they are not
    (a checkpoint converted in memory, arrays handed to ``GPT2``, a writable map: the caller's to change)."""
    if isinstance(rows, Q8_0Blocks):
        codes, scales = FileRows.of(rows.codes), FileRows.of(rows.scales)
        if codes is None or scales is None:
            return None
        return lambda ids: (codes[ids].view(np.uint8) ^ np.uint8(ZERO), scales[ids].astype(np.float32))
    floats = FileRows.of(rows)
    if floats is None:
        return None

    def read(ids: Any) -> tuple[np.ndarray, np.ndarray]:
        picked = floats[ids]  # [..., k]
        codes, scales = quantize(picked.reshape(-1, k))  # row by row, as at load
        lead = picked.shape[:-1]
        return codes.reshape(*lead, *codes.shape[1:]), scales.reshape(*lead, -1)

    return read


def in_use(params: dict[str, Any]) -> bool:
    """Whether any weight in ``params`` (a model's, as its backend holds them) is a :class:`Q8Matrix`."""
    from .params import flatten

    return any(isinstance(w, Q8Matrix) for w in flatten(params).values())


def keep_blas_to_one_thread() -> bool:
    """Cap NumPy's BLAS at one thread for the rest of the process (threadpoolctl); whether it was capped.

    Why: with int8 weights the weight products run on ONNX Runtime's shared pool
    (:func:`share_thread_pool`), whose thread stays awake between products; NumPy's BLAS is left
    only attention's products, and OpenBLAS's own threads stay awake between calls too. On 2 cores
    the two pools then take turns on each other's core: ``npgpt bench --random --backend numpy
    --dtype int8``, two runs each, prefilled 512 tokens at 454-459 tok/s with OpenBLAS on two
    threads and 787-827 with it on one, and decoded as fast or faster (batch 1: 76-83 -> 81-84
    tok/s; GPT-2 124M, 2 cores). Process-wide, and only right once the model's weights
    are int8 (float32 products need every core), so the entry points call it after loading
    such a model, never the library. False where threadpoolctl is missing (``pip install
    'npgpt[int8]'``): nothing changes.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    threadpool_limits(1, user_api="blas")  # stays until the process ends (never restored)
    return True


def cap_blas_for(models: list[dict[str, Any]]) -> bool:
    """:func:`keep_blas_to_one_thread` if every one of ``models`` (their params, as the backend holds
    them) has its products on ONNX Runtime (:func:`in_use`); whether it capped. An entry point that
    serves an int8 model beside a float32 one leaves NumPy's BLAS alone: float32 needs every core.
    """
    return bool(models) and all(in_use(p) for p in models) and keep_blas_to_one_thread()


class Q8Matrix(ProductWeight):
    """A 2-D weight stored as Q8_0 blocks (see the module docstring), in either orientation.

    As a product weight [in, out] (``transposed``), ``x @ m`` takes ``x`` [rows, in] float32 and
    returns [rows, out] float32 (ONNX Runtime's kernel); as a table [out, in] (``wte``),
    ``m[ids, :]`` returns the rows widened to float32. ``m.T`` / ``m.mT`` / ``np.swapaxes(m, -1, -2)``
    switch orientation without copying. Anything else is a ``TypeError``: an int8 weight is never
    silently widened whole. ``table=False``: a product weight only, its codes held by the session
    alone; ``product=False``: a table only (an untied model's ``wte``), no session built.
    """

    dtype = np.dtype(np.int8)  # what model.matmul tests: an int8 weight carries its own kernel

    def __init__(
        self,
        codes: np.ndarray,
        scales: np.ndarray,
        k: int,
        transposed: bool = True,
        table: bool = True,
        product: bool = True,
        rows_from: np.ndarray | Q8_0Blocks | None = None,
    ) -> None:
        if not (table or product):
            raise ValueError("an int8 matrix is a table, a product weight or both")
        self.codes: np.ndarray | None = codes  # [out, in/32, 32] uint8, q + 128; None once dropped
        self.scales: np.ndarray | None = scales  # [out, in/32] float32; None once dropped
        self.k = k  # the input dimension before padding
        self.transposed = transposed
        self._shape = codes.shape
        self._nbytes = codes.nbytes + scales.nbytes
        self._session = _session(codes, scales) if product else None
        # A table whose rows a checkpoint file holds (a read-only memory map of it) reads them there, a few
        # per lookup (see _rows): its codes are then needed only by a session that does not copy them.
        self._file_rows = _file_rows(rows_from, k) if table and rows_from is not None else None
        needed = table and self._file_rows is None or product and not runtime_keeps_its_own_copy()
        if not needed and codes.nbytes >= DROP_BYTES:
            self.codes = self.scales = None  # a second copy of what the session or the file holds: not kept

    @classmethod
    def from_float(
        cls, w: np.ndarray, done: Callable[[int, int], None] | None = None, table: bool = True, product: bool = True
    ) -> Q8Matrix:
        """Quantize a product weight ``w`` [in, out] (any float dtype; a view is fine); ``done``: see quantize.

        ``table=False``: the matrix is only ever multiplied by (every block's ``.w``), its rows never
        read; its codes then live in ONNX Runtime's session alone (see the module docstring).
        ``product=False``: only its rows are ever read (an untied model's ``wte``): no session.
        """
        codes, scales = quantize(w.T, done)
        return cls(codes, scales, w.shape[0], table=table, product=product, rows_from=w.T)

    @classmethod
    def from_blocks(cls, blocks: Q8_0Blocks, table: bool = True, product: bool = True) -> Q8Matrix:
        """A GGUF file's Q8_0 matrix with its own codes and scales, nothing rounded again: ``blocks`` as a
        product weight (``transposed``: its rows are the outputs); ``table``,
        ``product``: see :meth:`from_float`.

        The codes become ``q + 128`` in uint8 (flipping int8's sign bit), the float16 scales float32
        (exactly): the same arrays :func:`quantize` makes of the dequantized weights, without them.
        """
        if not blocks.transposed:
            raise TypeError("Q8_0 blocks become a product weight [in, out]: pass them with their rows as outputs")
        codes = blocks.codes.view(np.uint8) ^ np.uint8(ZERO)  # int8 q -> q + 128, a new contiguous array
        k = codes.shape[1] * codes.shape[2]
        return cls(codes, blocks.scales.astype(np.float32), k, table=table, product=product, rows_from=blocks)

    @property
    def shape(self) -> tuple[int, int]:
        out = self._shape[0]
        return (self.k, out) if self.transposed else (out, self.k)

    @property
    def nbytes(self) -> int:  # the Q8_0 codes and scales, wherever they are held
        return self._nbytes

    def flipped(self) -> Q8Matrix:
        m = Q8Matrix.__new__(Q8Matrix)
        m.__dict__.update(self.__dict__, transposed=not self.transposed)
        return m

    def __rmatmul__(self, x: np.ndarray) -> np.ndarray:  # [rows, in] float32 -> [rows, out] float32
        if not self.transposed or getattr(x, "ndim", 0) != 2 or x.shape[1] != self.k:
            raise TypeError("an int8 matrix multiplies [rows, in] @ [in, out] only")
        if self._session is None:
            raise TypeError("this int8 matrix was loaded as a table only (an untied model's wte); it has no product")
        pad = self._shape[1] * self._shape[2] - self.k
        if pad:  # the kernel's K is whole blocks; the padded inputs meet zero weights
            x = np.pad(x, ((0, 0), (0, pad)))
        return self._session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]

    def __matmul__(self, other: Any) -> Any:
        raise TypeError("an int8 matrix multiplies [rows, in] @ [in, out] only")

    def __getitem__(self, index: Any) -> np.ndarray:  # table rows, widened: [n] ids -> [n, in] float32
        if self.transposed:
            raise TypeError("index an int8 matrix as a table [out, in] (e.g. wte), not as a product weight")
        rows, rest = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
        codes, scales = self._rows(rows)  # [n, in/32, 32], [n, in/32] ([in/32, 32], [in/32] for one id)
        w = (codes.astype(np.float32) - np.float32(ZERO)) * scales[..., None]
        w = w.reshape(*w.shape[:-2], -1)[..., : self.k]  # -> [n, in] ([in])
        return w[(..., *rest)] if rest else w

    def _rows(self, rows: Any) -> tuple[np.ndarray, np.ndarray]:
        """The Q8_0 codes (q + 128) and scales of table rows ``rows``: from the codes kept, or read from
        the checkpoint's file and made as at load (the same numbers, bit for bit).

        Why read them there: a token's embedding needs one row a step, and keeping the table (``wte``:
        45 MB for 124M, beside ONNX Runtime's prepacked copy for the head's product) cost more resident
        memory than anything else npgpt held. The rows are read with ``pread`` (npgpt/files.py's
        FileRows), never mapped, so resident memory does not grow as tokens are looked up. Cost: one
        read and, from a float file, one row quantized, ~30-80 us a decode step. The file must not
        be rewritten in place while the model is loaded, as with float32 weights, whose vectors stay
        mapped (npgpt's own writers replace a file whole, leaving the one read as it was).
        """
        if self.codes is not None and self.scales is not None:
            return self.codes[rows], self.scales[rows]
        if self._file_rows is None:
            raise TypeError("this int8 matrix was loaded as a product weight only; its rows are not kept as a table")
        return self._file_rows(rows)

    def __repr__(self) -> str:
        return f"Q8Matrix(shape={self.shape}, blocks of {self._shape[2]})"
