"""Time the int8 (and, for reference, float and int4) matrix-product kernels on GPT-2 124M shapes.

Prints one table: per product shape and row count, each kernel's best time over interleaved
rounds (every kernel runs once per round, in turn, so a busy neighbour slows all of them alike),
its weight-read rate and its speed relative to NumPy's float32 ``@``. Run on the machine you
care about; ratios, not absolute times, are what carry over between runs:

    python scripts/int8_kernels.py [--rounds 30] [--rows 1,8] [--onnx]

Kernels (weights random; products [rows, in] @ [in, out]):
- ``numpy f32``: ``x @ w`` with npgpt's NumPy layout (matrices taller than wide stored transposed).
- ``torch f32/f16/bf16``: ``F.linear`` on a ``[out, in]`` weight (16-bit: input cast, output widened).
- ``torch int8 dyn``: ``torch.ops.quantized.linear_dynamic`` (fbgemm/oneDNN, engine "x86"):
  int8 weights with per-output-channel scales; the activations are quantized to uint8 per call
  (one scale per tensor), so the products run in int8 with int32 accumulation.
- ``torch int8 w-only``: ``torch.ops.aten._weight_int8pack_mm``: int8 weights, per-output-channel
  scales, float activations (the weights are widened in registers); float32 x, and bfloat16 x
  (``w-only bf16``: what ``load(dtype="int8")`` runs for up to 4 rows).
- ``torch int8 x int8``: ``torch._int_mm`` on the same codes (``[out, in]`` passed transposed),
  each row of x quantized to int8 with its own scale (symmetric), int32 accumulation, then both
  scales applied: what ``load(dtype="int8")`` runs for more than 4 rows (npgpt/int8.py).
- ``torch int4``: ``torch.ops.aten._weight_int4pack_mm_for_cpu``: 4-bit weights, groups of 32
  along ``in`` with a scale and zero point each, bfloat16 activations (information only).
- ``onnx MatMulNBits 8/4``: ONNX Runtime's contrib op (blocks of 32, float scales), when
  ``onnxruntime`` and ``onnx`` are installed and ``--onnx`` is given; ``int8 compute``
  (``accuracy_level=4``: each row of x quantized to int8 per block of 32, int32 accumulation) is what
  ``load(dtype="int8")`` runs on the NumPy backend (npgpt/q8_0.py); ``float compute``
  (``accuracy_level=0``) widens the weights instead.
- ``onnx DynamicQuantizeMatMul``: ONNX Runtime's contrib op over int8 weights with one scale per
  output channel; each call quantizes x to uint8 with one scale and zero point for the whole
  tensor (MLAS's QGEMM, int32 accumulation): the arithmetic of fbgemm's ``linear_dynamic`` above.

Each kernel multiplies the same weight again and again, so its weights stay in the CPU's caches where
they fit: the figures are an upper bound on what a decode step (which reads every weight once, from
memory) gets. ``npgpt bench`` times the real thing.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import numpy as np

SHAPES = (("c_attn", 768, 2304), ("c_fc", 768, 3072), ("mlp.c_proj", 3072, 768), ("head", 768, 50257))


def kernels(w: np.ndarray, rows: int, onnx: bool) -> dict[str, tuple[Callable[[], object], float]]:
    """name -> (a zero-argument call computing ``x @ w``, bytes of weights it reads)."""
    import torch
    import torch.nn.functional as F

    K, N = w.shape
    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, K), dtype=np.float32)
    out: dict[str, tuple[Callable[[], object], float]] = {}
    w_np = np.ascontiguousarray(w.T).T if K > N else w  # npgpt's NumPy layout
    out["numpy f32"] = (lambda: x @ w_np, w.nbytes)
    wt = torch.from_numpy(np.ascontiguousarray(w.T))  # [out, in]
    xt = torch.from_numpy(x)
    out["torch f32"] = (lambda: F.linear(xt, wt), wt.numel() * 4)
    for name, dt in (("f16", torch.float16), ("bf16", torch.bfloat16)):
        w16 = wt.to(dt)
        out[f"torch {name}"] = (lambda w16=w16, dt=dt: F.linear(xt.to(dt), w16).float(), wt.numel() * 2)

    scale = wt.abs().amax(dim=1) / 127.0  # symmetric, per output channel
    q = torch.clamp(torch.round(wt / scale[:, None]), -127, 127).to(torch.int8)  # [out, in]
    with warnings.catch_warnings():  # the quantized-tensor API is deprecated, still shipped
        warnings.simplefilter("ignore")
        torch.backends.quantized.engine = "x86"
        qw = torch._make_per_channel_quantized_tensor(q, scale.double(), torch.zeros(N, dtype=torch.long), 0)
        packed = torch.ops.quantized.linear_prepack(qw, None)
    out["torch int8 dyn"] = (lambda: torch.ops.quantized.linear_dynamic(xt, packed, True), q.numel() + 4 * N)
    out["torch int8 w-only"] = (lambda: torch.ops.aten._weight_int8pack_mm(xt, q, scale), q.numel() + 4 * N)

    def int8_x_int8() -> object:  # each row of x to int8 with its own scale; int32 accumulation
        x_scale = xt.abs().amax(dim=1, keepdim=True) / 127.0
        xq = torch.round(xt / x_scale).to(torch.int8)
        return torch._int_mm(xq, q.T).float() * x_scale * scale

    out["torch int8 x int8"] = (int8_x_int8, q.numel() + 4 * N)
    xb = xt.to(torch.bfloat16)
    out["torch int8 w-only bf16"] = (
        lambda: torch.ops.aten._weight_int8pack_mm(xb, q, scale.bfloat16()).float(),
        q.numel() + 2 * N,
    )
    if K % 32 == 0 and N % 8 == 0:
        group = 32
        g = wt.reshape(N, K // group, group)
        lo, hi = g.amin(-1), g.amax(-1)
        s4 = ((hi - lo) / 15).clamp(min=1e-8)
        q4 = torch.clamp(torch.round((g - lo[..., None]) / s4[..., None]), 0, 15).to(torch.int32).reshape(N, K)
        packed4 = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q4, 1)
        # scales and zeros [K/group, N, 2], zero as the value of the middle code (8): lo + 8 * s
        sz = torch.stack([s4, lo + 8 * s4], dim=-1).transpose(0, 1).contiguous().bfloat16()
        out["torch int4 (g32)"] = (
            lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, packed4, group, sz).float(),
            q.numel() / 2 + 4 * N * K / group,
        )
    if onnx:
        out.update(_onnx_kernels(w, x))
    return out


def _onnx_kernels(w: np.ndarray, x: np.ndarray) -> dict[str, tuple[Callable[[], object], float]]:
    """ONNX Runtime's MatMulNBits (weight-only, blocks of 32 along ``in``) with 8 and 4 bits, and its
    DynamicQuantizeMatMul (per-channel int8 weights, x quantized per tensor on each call)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    K, N = w.shape
    block = 32
    out: dict[str, tuple[Callable[[], object], float]] = {}
    for bits, level in ((8, 4), (8, 0), (4, 4)):
        blocks = w.T.reshape(N, K // block, block)  # [out, in/32, 32]
        qmax = (1 << (bits - 1)) - 1
        scales = np.abs(blocks).max(-1) / qmax  # symmetric per block
        q = np.clip(np.round(blocks / scales[..., None]), -qmax - 1, qmax).astype(np.int32) + (1 << (bits - 1))
        if bits == 4:
            q = q[..., 0::2] | (q[..., 1::2] << 4)
        qb = q.astype(np.uint8)  # [N, K/32, 32*bits/8]
        graph = helper.make_graph(
            [
                helper.make_node(
                    "MatMulNBits",
                    ["x", "qw", "s"],
                    ["y"],
                    domain="com.microsoft",
                    K=K,
                    N=N,
                    bits=bits,
                    block_size=block,
                    accuracy_level=level,
                )
            ],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, K])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, N])],
            [
                helper.make_tensor("qw", TensorProto.UINT8, qb.shape, qb.tobytes(), raw=True),
                helper.make_tensor("s", TensorProto.FLOAT, [N * (K // block)], scales.astype(np.float32).ravel()),
            ],
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as npgpt/q8_0.py
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        _ = onnx  # imported for the graph helpers
        compute = "int8 compute" if level == 4 else "float compute"
        out[f"onnx MatMulNBits {bits} {compute}"] = (
            lambda sess=sess: sess.run(None, {"x": x})[0],
            qb.nbytes + scales.size * 4,
        )
    channel = np.abs(w).max(0) / 127  # [out]: one scale per output channel
    qw = np.round(w / channel).astype(np.int8)  # [in, out]
    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeMatMul", ["x", "qw", "s", "z"], ["y"], domain="com.microsoft")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, N])],
        [
            helper.make_tensor("qw", TensorProto.INT8, qw.shape, qw.tobytes(), raw=True),
            helper.make_tensor("s", TensorProto.FLOAT, [N], channel.astype(np.float32)),
            helper.make_tensor("z", TensorProto.INT8, [N], np.zeros(N, np.int8).tobytes(), raw=True),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out["onnx DynamicQuantizeMatMul"] = (lambda: sess.run(None, {"x": x})[0], qw.nbytes + N * 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--rows", default="1,8")
    ap.add_argument("--onnx", action="store_true", help="also ONNX Runtime's MatMulNBits (needs onnxruntime, onnx)")
    args = ap.parse_args()
    import torch

    from npgpt.hostinfo import instruction_sets

    print(
        f"host instruction sets: {', '.join(instruction_sets()) or 'unknown'}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; numpy {np.__version__}"
    )
    rng = np.random.default_rng(0)
    for label, K, N in SHAPES:
        w = (rng.standard_normal((K, N), dtype=np.float32) * 0.02).astype(np.float32)
        for rows in (int(r) for r in args.rows.split(",")):
            ks = kernels(w, rows, args.onnx)
            ref = ks["numpy f32"][0]()
            best = {name: float("inf") for name in ks}
            for _ in range(args.rounds):  # interleaved: every kernel once per round
                for name, (fn, _nbytes) in ks.items():
                    t = time.perf_counter()
                    fn()
                    best[name] = min(best[name], time.perf_counter() - t)
            base = best["numpy f32"]
            print(f"\n[{rows}, {K}] @ [{K}, {N}] ({label})")
            print(f"  {'kernel':24} {'us':>9} {'GB/s':>7} {'vs numpy f32':>13} {'max rel err':>12}")
            for name, (fn, nbytes) in ks.items():
                y = np.asarray(fn(), dtype=np.float32)
                err = float(np.abs(y - ref).max() / np.abs(ref).max())
                print(
                    f"  {name:24} {best[name] * 1e6:9.1f} {nbytes / best[name] / 1e9:7.1f} "
                    f"{base / best[name]:12.2f}x {err:12.1e}"
                )


if __name__ == "__main__":
    main()
