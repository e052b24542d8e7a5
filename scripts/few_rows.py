"""Time float32 products of a few rows: NumPy's ``@`` (OpenBLAS) against npgpt's batched form (MLAS, packed once).

Prints one line per row count: µs per matrix for each and their ratio (> 1: MLAS faster). The
weights are 24 different [768, 3072] matrices (GPT-2 124M's ``c_fc``, 226 MB in all) multiplied in
turn, so each comes from memory as in a decode step, not from the CPU's caches; best of
``--rounds`` passes. What npgpt/batched.py's row limits (``MIN_ROWS``, ``MAX_ROWS``) come from:

    python scripts/few_rows.py [--rows 1,2,4,8,16,32,64,128,256,512] [--rounds 5]

Needs ``pip install 'npgpt[int8]'`` (ONNX Runtime). Thread counts: the libraries' defaults, or
``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from npgpt.batched import BatchedMatrix
from npgpt.hugepages import collapse_huge_pages


def best_us(fns: list, rounds: int) -> float:
    """Best time of one pass over ``fns`` (each called once), per call, in µs."""
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for f in fns:
            f()
        best = min(best, time.perf_counter() - t)
    return best / len(fns) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,2,4,8,16,32,64,128,256,512")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--matrices", type=int, default=24)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((768, 3072), dtype=np.float32) * 0.02 for _ in range(args.matrices)]
    packed = [BatchedMatrix(w) for w in weights]
    collapse_huge_pages()  # both in 2 MB pages, as npgpt's entry points and the batched build leave them
    print("rows  numpy us  mlas us  numpy/mlas")
    for rows in (int(r) for r in args.rows.split(",")):
        x = rng.standard_normal((rows, 768), dtype=np.float32)
        sessions = [m._session for m in packed]  # MLAS at every row count, whatever batched.py's limits
        numpy_us = best_us([lambda w=w, x=x: x @ w for w in weights], args.rounds)
        mlas_us = best_us([lambda s=s, x=x: s.run(None, {"x": x}) for s in sessions], args.rounds)
        print(f"{rows:4d}  {numpy_us:8.0f}  {mlas_us:7.0f}  {numpy_us / mlas_us:10.2f}")


if __name__ == "__main__":
    main()
