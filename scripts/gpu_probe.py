"""Probes of the GPU kernels npgpt's backends call (run by scripts/gpu_check.sh where a GPU is).

For each library: the error of a float32 product [rows, 768] @ [768, 3072] against float64 (a
TensorFloat-32 product is ~1e-3 off, a float32 one ~1e-6), and for the torch backend's int8
weights (npgpt/int8.py) whether each row count runs on the GPU and how far it is from float32.
One line per probe; a failure is printed, not raised, so every probe runs.
"""

from __future__ import annotations

import numpy as np


def relative_error(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(y - ref).max() / np.abs(ref).max())


def main() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((768, 3072)).astype(np.float32) * 0.02
    for rows in (1, 8, 64):
        x = rng.standard_normal((rows, 768)).astype(np.float32)
        ref = x.astype(np.float64) @ w.astype(np.float64)
        line = [f"float32 product, {rows} rows, error vs float64:"]
        try:
            import torch

            y = (torch.from_numpy(x).cuda() @ torch.from_numpy(w).cuda()).cpu().numpy()
            line.append(f"torch {relative_error(y, ref):.1e}")
        except Exception as e:
            line.append(f"torch failed ({type(e).__name__}: {e})")
        try:
            import jax
            import jax.numpy as jnp

            y = np.asarray(jax.jit(lambda a, b: a @ b)(jnp.asarray(x), jnp.asarray(w)))
            line.append(f"jax default {relative_error(y, ref):.1e}")
            with jax.default_matmul_precision("highest"):
                y = np.asarray(jax.jit(lambda a, b: a @ b)(jnp.asarray(x), jnp.asarray(w)))
            line.append(f"jax highest {relative_error(y, ref):.1e}")
        except Exception as e:
            line.append(f"jax failed ({type(e).__name__}: {e})")
        try:
            import cupy as cp

            y = cp.asnumpy(cp.asarray(x) @ cp.asarray(w))
            line.append(f"cupy {relative_error(y, ref):.1e}")
        except Exception as e:
            line.append(f"cupy failed ({type(e).__name__}: {e})")
        print(" ".join(line), flush=True)

    import torch

    from npgpt.int8 import Int8Matrix

    for n_in, n_out in ((768, 3072), (3072, 768), (100, 48)):
        wt = torch.from_numpy(rng.standard_normal((n_in, n_out)).astype(np.float32) * 0.02)
        m = Int8Matrix.from_float(wt).to("cuda")
        for rows in (1, 4, 5, 8, 16, 17, 32, 64):
            x = torch.from_numpy(rng.standard_normal((rows, n_in)).astype(np.float32)).cuda()
            try:
                y = (x @ m).cpu().numpy()
                ref = x.cpu().numpy().astype(np.float64) @ wt.numpy().astype(np.float64)
                print(
                    f"torch int8 on cuda [{rows}, {n_in}] @ [{n_in}, {n_out}]: ok, error {relative_error(y, ref):.1e}"
                )
            except Exception as e:
                msg = str(e).splitlines()[0][:160]
                print(f"torch int8 on cuda [{rows}, {n_in}] @ [{n_in}, {n_out}]: {type(e).__name__}: {msg}")


if __name__ == "__main__":
    main()
