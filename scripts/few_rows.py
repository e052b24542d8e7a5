"""Time float32 products of a few rows: NumPy's ``@`` (OpenBLAS) against npgpt's batched form (MLAS, packed once).

Prints one line per row count: µs per matrix for each and their ratio (> 1: MLAS faster). The
weights are 24 different [768, 3072] matrices (GPT-2 124M's ``c_fc``, 226 MB in all) multiplied in
turn, so each comes from memory as in a decode step, not from the CPU's caches; best of
``--rounds`` passes. What npgpt/batched.py's row limits (``MIN_ROWS``, ``MAX_ROWS``) come from:

    python scripts/few_rows.py [--rows 1,2,4,8,16,32,64,128,256,512] [--rounds 5] [--others] [--cpu-time]

``--others`` adds the ways a prompt's few rows could go without a packed copy: NumPy on the weight
stored [out, in] (``x @ w.T``), and ONNX Runtime's MatMul with the weight as an input, which MLAS
packs on every call as OpenBLAS does. ``--cpu-time`` times the process's CPU time instead of the
wall clock: on a machine others share, with one thread (``OMP_NUM_THREADS=1
OPENBLAS_NUM_THREADS=1``), the kernels' own cost.

Needs ``pip install 'npgpt[int8]'`` (ONNX Runtime). Thread counts: the libraries' defaults, or
``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from npgpt.batched import BatchedMatrix
from npgpt.hugepages import collapse_huge_pages


def best_us(fns: list, rounds: int, clock=time.perf_counter) -> float:
    """Best time of one pass over ``fns`` (each called once), per call, in µs."""
    best = float("inf")
    for _ in range(rounds):
        t = clock()
        for f in fns:
            f()
        best = min(best, clock() - t)
    return best / len(fns) * 1e6


def unpacked_session():
    """ONNX Runtime's MatMul with the weight as an input: MLAS packs it on every call, as OpenBLAS does."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from npgpt.onnx_session import IR_VERSION

    node = helper.make_node("MatMul", ["x", "b"], ["y"])
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("x", [None, 768]), ("b", [768, 3072]))
    ]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3072])
    model = helper.make_model(
        helper.make_graph([node], "mm", inputs, [output]), opset_imports=[helper.make_opsetid("", 21)]
    )
    model.ir_version = IR_VERSION
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as npgpt's own sessions
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,2,4,8,16,32,64,128,256,512")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--matrices", type=int, default=24)
    parser.add_argument("--others", action="store_true", help="also [out, in] NumPy and unpacked ONNX Runtime")
    parser.add_argument("--cpu-time", action="store_true", help="the process's CPU time, not the wall clock")
    args = parser.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((768, 3072), dtype=np.float32) * 0.02 for _ in range(args.matrices)]
    packed = [BatchedMatrix(w) for w in weights]
    collapse_huge_pages()  # both in 2 MB pages, as npgpt's entry points and the batched build leave them
    transposed = [np.ascontiguousarray(w.T) for w in weights] if args.others else []
    unpacked = unpacked_session() if args.others else None
    print("rows  numpy us  mlas us  numpy/mlas" + ("  numpy [out,in] us  mlas unpacked us" if args.others else ""))
    for rows in (int(r) for r in args.rows.split(",")):
        x = rng.standard_normal((rows, 768), dtype=np.float32)
        sessions = [m._session for m in packed]  # MLAS at every row count, whatever batched.py's limits
        numpy_us = best_us([lambda w=w, x=x: x @ w for w in weights], args.rounds, clock)
        mlas_us = best_us([lambda s=s, x=x: s.run(None, {"x": x}) for s in sessions], args.rounds, clock)
        line = f"{rows:4d}  {numpy_us:8.0f}  {mlas_us:7.0f}  {numpy_us / mlas_us:10.2f}"
        if args.others:
            t_us = best_us([lambda w=w, x=x: x @ w.T for w in transposed], args.rounds, clock)
            u_us = best_us([lambda w=w, x=x: unpacked.run(None, {"x": x, "b": w}) for w in weights], args.rounds, clock)
            line += f"  {t_us:17.0f}  {u_us:16.0f}"
        print(line)


if __name__ == "__main__":
    main()
