"""One weight matrix's product as an ONNX Runtime session, and the thread pool those sessions run on.

Two kinds of NumPy-backend weight hand their product to ONNX Runtime's MLAS kernels: 8-bit weights
(npgpt/q8_0.py, ``MatMulNBits``) and float32 weights in batched steps (npgpt/batched.py,
``Gemm``). Each matrix gets one session with one node, ``y [rows, n] = x [rows, k] @ W``, whose
weights are handed over as external initializers (no serialized copy of them in the model's bytes;
ONNX Runtime 1.32 copies them into buffers of its own and prepacks them, which its API does not
promise, so the caller keeps the arrays alive unless it has checked: npgpt/q8_0.py does). Why a
library session and not npgpt's own code: MLAS's kernels are what make these products fast
(docs/benchmarks.md), and a session is how ONNX Runtime exposes them.

The thread pool: with a pool per session, every product first wakes a thread that slept since that
matrix's previous product. :func:`share_thread_pool` (an entry point's call, process-wide) puts every
session on ONNX Runtime's one global pool instead.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np

from .errors import NpgptError

IR_VERSION = 10  # ONNX's IR version for opset 21, the newest opset these graphs use
_GLOBAL_POOL_IN_USE = "use_per_session_threads must be false"  # ONNX Runtime, once a global pool exists
_GLOBAL_POOL_EXISTS = "Global thread pools have already been created"  # ONNX Runtime, on a second sizing


def session(op: str, weights: dict[str, np.ndarray], k: int, n: int, what: str, **attrs: Any) -> Any:
    """An ONNX Runtime session running ``op(x, *weights)`` -> ``y``: x [rows, k] float32 -> y [rows, n] float32.

    ``weights`` (name -> array, in the op's input order) are the caller's to keep alive (see the
    module docstring); ONNX Runtime keeps its own prepacked form of them. ``what`` names the weights in errors ("int8
    weights"). Raises :class:`~npgpt.errors.NpgptError` where ONNX Runtime or onnx is missing
    (``pip install 'npgpt[int8]'``) or this ONNX Runtime cannot run ``op`` (one line, with the fix).
    """
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        raise NpgptError(f"{what} on the numpy backend need ONNX Runtime; pip install 'npgpt[int8]'") from None
    node = helper.make_node(op, ["x", *weights], ["y"], domain="com.microsoft" if op == "MatMulNBits" else "", **attrs)
    graph = helper.make_graph(
        [node],
        f"{op}_product",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
        [_external(name, a) for name, a in weights.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    )
    # The IR version of opset 21 (onnx 1.16), not the installed onnx's newest: each ONNX Runtime reads
    # IR versions up to its own, and onnx 1.23 writes IR 14, which ONNX Runtime 1.30 refuses.
    model.ir_version = IR_VERSION
    shared = pool_shared()
    opts = ort.SessionOptions()
    if shared:
        opts.use_per_session_threads = False  # every matrix's session runs on the one shared pool
    else:
        opts.intra_op_num_threads = _threads()
        # Between calls a session's own pool sleeps rather than spins: 49 pools of spinning threads
        # steal the cores NumPy/OpenBLAS run on between products (measured: 30x slower decoding).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only
    # No memory arena: each session's arena holds a chunk of its own (~1 MB) for outputs of a few
    # KB, ~50 MB over GPT-2 124M's 49 sessions; plain malloc serves them as fast (measured at load:
    # 170 -> 121 MB for the blocks' int8 sessions, a product 91 -> 85 us).
    opts.enable_cpu_mem_arena = False
    opts.add_external_initializers(list(weights), [ort.OrtValue.ortvalue_from_numpy(a) for a in weights.values()])
    try:
        # ONNX Runtime prints an "EP Error" banner to stdout before it raises; the error below says it.
        with contextlib.redirect_stdout(io.StringIO()):
            return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # e.g. an ONNX Runtime without 8-bit MatMulNBits (before 1.23 on some CPUs)
        if not shared and _GLOBAL_POOL_IN_USE in str(e) and share_thread_pool():
            return session(op, weights, k, n, what, **attrs)  # other code sized the global pool: run on it
        raise NpgptError(
            f"ONNX Runtime {ort.__version__} cannot run {what} ({_reason(e)}); "
            "pip install -U onnxruntime (1.23 or newer), or load with dtype='float32'"
        ) from None


def _reason(e: BaseException) -> str:
    """The end of ONNX Runtime's message: it puts the source file and a C++ signature first and
    the reason last ("... Unsupported model IR version: 14, max supported IR version: 13")."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    line = text.splitlines()[-1].strip()
    return line if len(line) <= 200 else "..." + line[-200:]


def _threads() -> int:
    """ONNX Runtime's intra-op threads: ``OMP_NUM_THREADS`` where set, at most the cores this process
    may run on; else 0 (ONNX Runtime's default: the cores).

    Why the cap: more threads than cores never speed a product up, and the pool's threads spin
    between products, so on 2 cores ``OMP_NUM_THREADS=16`` made 8 concurrent requests to ``npgpt
    serve`` (124M, float32, batched on ONNX Runtime) take 33-36 s instead of 6.4.
    """
    threads = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not threads.isdigit() or int(threads) == 0:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(int(threads), cores)


@functools.cache
def share_thread_pool() -> bool:
    """Run every ONNX Runtime product session on one process-wide thread pool; whether it is in place.

    A model has ~50 weight matrices, one session each. With a pool per session, every product wakes
    a thread that slept since that matrix's last product (a session's pool must not spin: 50
    spinning pools made decoding 30x slower). One shared pool's thread stays awake from product to
    product: measured on 2 cores (GPT-2 124M, int8, a decode loop at batch 1 after load, weights in
    2 MB pages), 61-63 -> 72-80 tok/s; with ``npgpt bench --random --backend numpy --dtype int8``,
    before and after this and the 2 MB pages together (two runs each): batch 1 52-56 -> 75-79
    tok/s, batch 8 226-241 -> 272-302, batch 32 397-403 -> 416-466, time to first token 35-37 ->
    28-29 ms; 4 threads in the process instead of 52. The awake thread competes with OpenBLAS's
    for the cores where a long prompt runs attention between the int8 products (a 512-token
    prefill went 505-544 -> 398-457 tok/s), which is why the entry points also call
    :func:`~npgpt.q8_0.keep_blas_to_one_thread` once an int8 model is loaded (then 787-827).

    Process-wide: ``onnxruntime.set_global_thread_pool_sizes`` (ONNX Runtime 1.22+) creates the
    process's global pool, which can be sized once, and from then on ONNX Runtime refuses every
    session in the process that keeps a pool of its own. So the library never calls this on its
    own: npgpt's entry points do, before loading on a backend that declares ``onnx_sessions`` (the
    NumPy backend, whatever the dtype: its int8 products and batched float32 steps run here; the
    CLI, the server and the bench's workers); an application may too, if its own ONNX Runtime
    sessions opt into the global pool. Batched float32 (npgpt/batched.py) runs only on this pool.
    Sized by ``OMP_NUM_THREADS`` where set. Where the global pool was
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


def pool_shared() -> bool:
    """Whether :func:`share_thread_pool` has run in this process and put the shared pool in place."""
    return share_thread_pool.cache_info().currsize > 0 and share_thread_pool()


def _external(name: str, a: np.ndarray) -> Any:
    """An initializer declared in the graph whose data the session options supply (no bytes in the model)."""
    from onnx import TensorProto, helper

    t = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(a.dtype), dims=a.shape)
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="supplied-by-session-options")
    return t


class ProductWeight:
    """A 2-D weight whose ``x @ w`` runs an ONNX Runtime session, in either orientation.

    What the int8 weights (:class:`~npgpt.q8_0.Q8Matrix`) and the batched float32 ones
    (:class:`~npgpt.batched.BatchedMatrix`) share: NumPy hands ``ndarray @ w`` to the subclass's
    ``__rmatmul__`` and refuses ufuncs on it (``__array_ufunc__ = None``), the model's array
    namespace is NumPy's, and ``w.T`` / ``w.mT`` / ``np.swapaxes(w, -1, -2)`` give the other
    orientation without copying (the subclass's ``flipped``). ``TypeError`` for other axes.
    """

    ndim = 2
    __array_ufunc__ = None

    def flipped(self) -> Any:  # the same weight in the other orientation, sharing its data and session
        raise NotImplementedError

    def swapaxes(self, a: int, b: int) -> Any:  # what np.swapaxes / matrix_transpose call
        if {a, b} not in ({-1, -2}, {0, 1}):
            raise TypeError("a weight matrix has two axes")
        return self.flipped()

    @property
    def T(self) -> Any:
        return self.flipped()

    mT = T

    def __array_namespace__(self, api_version: str | None = None) -> Any:
        return xp_numpy
