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
matrix, built at load; where the entry point has called :func:`share_thread_pool` (npgpt's CLI,
server and bench do), all of them run on ONNX Runtime's one global thread pool.
``OMP_NUM_THREADS``, where set, bounds its threads as it bounds OpenBLAS's.

Errors: :class:`~npgpt.errors.NpgptError` if ``onnxruntime``/``onnx`` are missing (``pip install
'npgpt[int8]'``); ``TypeError`` for anything but ``x @ m`` ([rows, in] float32) and table lookups.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Callable
from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np

from .errors import NpgptError

BLOCK = 32  # inputs per scale: Q8_0's block (ggml's QK8_0)
ZERO = 128  # the codes are stored q + 128 (uint8), MatMulNBits's default zero point for 8 bits
CHUNK = 1 << 20  # weights quantized at a time: bounds the float32 temporary at load (4 MB)


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
        w = np.zeros((j - i, n_blocks * BLOCK), dtype=np.float32)
        w[:, :k] = rows[i:j]
        w = w.reshape(j - i, n_blocks, BLOCK)
        d = np.abs(w).max(axis=-1) / np.float32(127.0)  # [rows, blocks]
        inv = np.divide(np.float32(1.0), d, out=np.zeros_like(d), where=d > 0)  # 0 for a block of zeros
        q = w * inv[..., None]
        q = np.trunc(q + np.copysign(np.float32(0.5), q))  # roundf: half away from zero
        codes[i:j] = (np.clip(q, -127, 127) + ZERO).astype(np.uint8)
        scales[i:j] = d
        if done is not None:
            done(i, j)
    return codes, scales


def _session(codes: np.ndarray, scales: np.ndarray) -> Any:
    """An ONNX Runtime session computing ``y [rows, out] = x [rows, in/32*32] @ dequant(codes).T``."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        raise NpgptError("int8 weights on the numpy backend need ONNX Runtime; pip install 'npgpt[int8]'") from None
    n, n_blocks, block = codes.shape
    node = helper.make_node(
        "MatMulNBits",
        ["x", "q", "d"],
        ["y"],
        domain="com.microsoft",
        K=n_blocks * block,
        N=n,
        bits=8,
        block_size=block,
        accuracy_level=4,  # int8 compute: activations quantized per block of 32, int32 accumulation
    )
    # The weights reach the session as external initializers: ONNX Runtime reads these arrays in
    # place (no serialized copy) and keeps only its own prepacked form beside them. The arrays
    # must outlive the session (Q8Matrix holds both).
    weights = {"q": codes, "d": scales.reshape(-1)}
    graph = helper.make_graph(
        [node],
        "q8_0_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n_blocks * block])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
        [_external(name, a) for name, a in weights.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    )
    shared = _pool_shared()
    opts = ort.SessionOptions()
    if shared:
        opts.use_per_session_threads = False  # every matrix's session runs on the one shared pool
    else:
        opts.intra_op_num_threads = _threads()
        # Between calls a session's own pool sleeps rather than spins: 49 pools of spinning threads
        # steal the cores NumPy/OpenBLAS run on between products (measured: 30x slower decoding).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only
    opts.add_external_initializers(list(weights), [ort.OrtValue.ortvalue_from_numpy(a) for a in weights.values()])
    try:
        # ONNX Runtime prints an "EP Error" banner to stdout before it raises; the error below says it.
        with contextlib.redirect_stdout(io.StringIO()):
            return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # an ONNX Runtime without 8-bit MatMulNBits (before 1.23 on some CPUs) fails here
        if not shared and _GLOBAL_POOL_IN_USE in str(e) and share_thread_pool():
            return _session(codes, scales)  # other code in this process sized the global pool: run on it
        reason = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
        raise NpgptError(
            f"ONNX Runtime {ort.__version__} cannot run 8-bit weights ({reason}); "
            "pip install -U 'onnxruntime>=1.23', or load with --dtype float32"
        ) from None


_GLOBAL_POOL_IN_USE = "use_per_session_threads must be false"  # ONNX Runtime, once a global pool exists
_GLOBAL_POOL_EXISTS = "Global thread pools have already been created"  # ONNX Runtime, on a second sizing


def _threads() -> int:
    """ONNX Runtime's intra-op threads: ``OMP_NUM_THREADS`` where set, else 0 (its default: the cores)."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    return int(threads) if threads.isdigit() else 0


@functools.cache
def share_thread_pool() -> bool:
    """Run every int8 matrix's ONNX Runtime session on one process-wide thread pool; whether it is in place.

    A model has ~50 weight matrices, one session each. With a pool per session, every product wakes
    a thread that slept since that matrix's last product (a session's pool must not spin: 50
    spinning pools made decoding 30x slower). One shared pool's thread stays awake from product to
    product: measured on 2 cores (GPT-2 124M, a decode loop at batch 1 after load, weights in 2 MB
    pages), 61-63 -> 72-80 tok/s; with ``npgpt bench --random --backend numpy --dtype int8``,
    before and after this and the 2 MB pages together (two runs each): batch 1 52-56 -> 75-79
    tok/s, batch 8 226-241 -> 272-302, batch 32 397-403 -> 416-466, time to first token 35-37 ->
    28-29 ms; 4 threads in the process instead of 52. The awake thread competes with OpenBLAS's
    for the cores where a long prompt runs attention between the int8 products (a 512-token
    prefill went 505-544 -> 398-457 tok/s), which is why the entry points also call
    :func:`keep_blas_to_one_thread` once an int8 model is loaded (then 787-827).

    Process-wide: ``onnxruntime.set_global_thread_pool_sizes`` (ONNX Runtime 1.22+) creates the
    process's global pool, which can be sized once, and from then on ONNX Runtime refuses every
    session in the process that keeps a pool of its own. So the library never calls this on its
    own: npgpt's entry points do, before loading (the CLI and the server for ``--dtype int8`` or
    ``auto``, and the bench's workers); an application may too, if its own ONNX Runtime sessions
    opt into the global pool. Sized by ``OMP_NUM_THREADS`` where set. Where the global pool was
    already sized by other code, npgpt's sessions run on that one (True). False where ONNX Runtime
    is missing or cannot: each session then keeps its own pool.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    set_sizes = getattr(ort, "set_global_thread_pool_sizes", None)
    if set_sizes is None:
        return False
    try:
        set_sizes(_threads(), 1)  # intra-op threads (0: the cores), inter-op 1: one node per graph
    except Exception as e:
        return _GLOBAL_POOL_EXISTS in str(e)
    return True


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


def _pool_shared() -> bool:
    """Whether :func:`share_thread_pool` has run in this process and put the shared pool in place."""
    return share_thread_pool.cache_info().currsize > 0 and share_thread_pool()


def _external(name: str, a: np.ndarray) -> Any:
    """An initializer declared in the graph whose data the session options supply (no bytes in the model)."""
    from onnx import TensorProto, helper

    t = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(a.dtype), dims=a.shape)
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="supplied-by-session-options")
    return t


class Q8Matrix:
    """A 2-D weight stored as Q8_0 blocks (see the module docstring), in either orientation.

    As a product weight [in, out] (``transposed``), ``x @ m`` takes ``x`` [rows, in] float32 and
    returns [rows, out] float32 (ONNX Runtime's kernel); as a table [out, in] (``wte``),
    ``m[ids, :]`` returns the rows widened to float32. ``m.T`` / ``m.mT`` / ``np.swapaxes(m, -1, -2)``
    switch orientation without copying. Anything else is a ``TypeError``: an int8 weight is never
    silently widened whole.
    """

    ndim = 2
    dtype = np.dtype(np.int8)  # what model.matmul tests: an int8 weight carries its own kernel
    __array_ufunc__ = None  # NumPy hands `ndarray @ m` to __rmatmul__ and refuses ufuncs on m

    def __init__(self, codes: np.ndarray, scales: np.ndarray, k: int, transposed: bool = True) -> None:
        self.codes = codes  # [out, in/32, 32] uint8, q + 128
        self.scales = scales  # [out, in/32] float32
        self.k = k  # the input dimension before padding
        self.transposed = transposed
        self._session = _session(codes, scales)

    @classmethod
    def from_float(cls, w: np.ndarray, done: Callable[[int, int], None] | None = None) -> Q8Matrix:
        """Quantize a product weight ``w`` [in, out] (any float dtype; a view is fine); ``done``: see quantize."""
        codes, scales = quantize(w.T, done)
        return cls(codes, scales, w.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        out = self.codes.shape[0]
        return (self.k, out) if self.transposed else (out, self.k)

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scales.nbytes

    def swapaxes(self, a: int, b: int) -> Q8Matrix:  # what np.swapaxes / matrix_transpose call
        if {a, b} not in ({-1, -2}, {0, 1}):
            raise TypeError("an int8 matrix has two axes")
        m = Q8Matrix.__new__(Q8Matrix)
        m.__dict__.update(self.__dict__, transposed=not self.transposed)
        return m

    @property
    def T(self) -> Q8Matrix:
        return self.swapaxes(0, 1)

    mT = T

    def __array_namespace__(self, api_version: str | None = None) -> Any:
        return xp_numpy

    def __rmatmul__(self, x: np.ndarray) -> np.ndarray:  # [rows, in] float32 -> [rows, out] float32
        if not self.transposed or getattr(x, "ndim", 0) != 2 or x.shape[1] != self.k:
            raise TypeError("an int8 matrix multiplies [rows, in] @ [in, out] only")
        pad = self.codes.shape[1] * self.codes.shape[2] - self.k
        if pad:  # the kernel's K is whole blocks; the padded inputs meet zero weights
            x = np.pad(x, ((0, 0), (0, pad)))
        return self._session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]

    def __matmul__(self, other: Any) -> Any:
        raise TypeError("an int8 matrix multiplies [rows, in] @ [in, out] only")

    def __getitem__(self, index: Any) -> np.ndarray:  # table rows, widened: [n] ids -> [n, in] float32
        if self.transposed:
            raise TypeError("index an int8 matrix as a table [out, in] (e.g. wte), not as a product weight")
        rows = index[0] if isinstance(index, tuple) else index
        q = self.codes[rows].astype(np.float32) - np.float32(ZERO)  # [n, in/32, 32]
        w = q * self.scales[rows][..., None]
        return w.reshape(w.shape[0], -1)[:, : self.k]

    def __repr__(self) -> str:
        return f"Q8Matrix(shape={self.shape}, blocks of {self.codes.shape[2]})"
