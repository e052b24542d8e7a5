"""8-bit weights for the torch backend: a weight matrix stored int8 whose ``@`` is PyTorch's kernel.

Scheme (``load(dtype="int8")``): every weight matrix (each block's ``c_attn``, ``attn.c_proj``,
``c_fc``, ``mlp.c_proj`` and the tied ``wte``/head) is quantized once at load, **symmetric, per
output channel**: for the product weight ``w`` [in, out], output column ``j`` gets the float32
scale ``s[j] = max_i |w[i, j]| / 127`` and int8 codes ``q[i, j] = round(w[i, j] / s[j])`` in
[-127, 127]; ``w ~= q * s``. The codes are stored ``[out, in]`` (``nn.Linear``'s layout),
1 byte a weight plus 4 bytes a column. For ``wte`` [V, C] the output channel of the head is the
vocabulary row, so the same codes and scales also give the embedding: a looked-up row is
widened to float32 as ``q[id] * s[id]`` (no second table).

Products (PyTorch's kernels, picked by the figures of ``scripts/int8_kernels.py`` and an
end-to-end decode, docs/benchmarks.md):
- up to ``WEIGHT_ONLY_ROWS`` rows (decoding a few sequences) with an input width that is a
  multiple of 32 (GPT-2's always are): ``torch.ops.aten._weight_int8pack_mm``,
  weight-only (the codes are widened in registers), on the activations cast to bfloat16 (on
  float32 ones it takes a slow path), float32 out;
- more rows (batches, prefill): ``torch._int_mm`` on the same codes with dynamic per-row
  activation quantization: each row of ``x`` to int8 with its own scale ``max|x_row| / 127``,
  int32 accumulation, both scales applied after (2-3x faster than weight-only at 8-32 rows);
- on a GPU, where ``torch._int_mm`` refuses few rows and widths that are not a multiple of 8
  (GPT-2's head has 50257 outputs), the weight-only kernel, whose CUDA version takes any shape;
  neither was timed there yet (docs/benchmarks.md). On the CPU, a width neither kernel takes
  (``n_in=1``) is the float32 matrix widened for that one product (:func:`product_kernel`).
fbgemm's dynamic ``Linear`` (``torch.ops.quantized.linear_dynamic``) was ~1.1x faster end to end
but quantizes activations per tensor to 7 bits (7x the held-out cross-entropy change), needs a
second copy of ``wte`` for the embedding, and its quantized-tensor API is deprecated.
Everything else stays float32, as with 16-bit weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat.torch as xp_torch
import torch

CHUNK = 1 << 20  # weights quantized at a time: bounds the float32 temporary at load (4 MB)
# Up to this many rows the weight-only kernel is faster; above it the int8 x int8 one (measured on
# [768, 3072]: 1 row 194 vs 360 us, 4 rows 303 vs 385, 8 rows 562 vs 385).
WEIGHT_ONLY_ROWS = 4


def quantize(w: torch.Tensor, done: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: ``w`` [out, in] float -> codes [out, in] int8, scales [out] float32.

    Rows of zeros get scale 1 (codes 0) so nothing divides by zero. ``done(i, j)`` is called once
    rows ``i:j`` are quantized (the loader drops those rows' checkpoint pages from memory).
    """
    codes = torch.empty(w.shape, dtype=torch.int8)
    scales = torch.empty(w.shape[0], dtype=torch.float32)
    step = max(1, CHUNK // w.shape[1])
    for i in range(0, w.shape[0], step):  # a few rows at a time: small temporaries, no float32 copy
        j = min(i + step, w.shape[0])
        rows = w[i:j].to(torch.float32)  # a view when w is float32 already
        s = torch.linalg.vector_norm(rows, ord=float("inf"), dim=1) / 127.0  # max |w| per row
        s = torch.where(s > 0, s, 1.0)
        codes[i:j] = torch.round_(rows / s[:, None]).clamp_(-127, 127)  # one temporary, rounded in place
        scales[i:j] = s
        if done is not None:
            done(i, j)
    return codes, scales


# torch._int_mm's row minimum: its CUDA kernel refuses 16 rows or fewer ("self.size(0) needs to be
# greater than 16", torch 2.11 on an H200); fewer rows are padded with zero rows up to it.
INT_MM_MIN_ROWS = {"cuda": 17}


def product_kernel(rows: int, n_in: int, n_out: int, device: str) -> str:
    """Which kernel multiplies ``[rows, n_in]`` float32 by an int8 matrix ``[n_in, n_out]`` on ``device``
    (a torch device type): ``"weight-only"``, ``"int8 x int8"`` or ``"widened"`` (neither takes the shape).

    The kernels' limits, as each was seen to fail (every one an error or a wrong result, never a
    slow path, so they are checked here rather than caught):

    - ``_weight_int8pack_mm``'s CPU kernel reads the input dimension in steps of 16 (or 32) with no
      check: at ``n_in=100`` (``n_inner=100``'s ``c_proj``) it returned garbage or crashed the
      process (torch 2.13), so it takes only ``n_in`` a multiple of 32. Its CUDA kernel is one
      thread per output summing in float32 over any ``n_in`` (PyTorch's
      ``aten/src/ATen/native/cuda/int8mm.cu``): any shape, slow for many rows.
    - ``torch._int_mm`` on CPU is wrong at ``n_in=1`` (torch 2.13). On CUDA (torch 2.11, H200) it
      refuses ``n_in`` or ``n_out`` that is not a multiple of 8 ("self.size(1) needs to be greater
      than 0 and a multiple of 8"; GPT-2's head has ``n_out=50257``) and 16 rows or fewer (padded).
    """
    if device == "cuda":
        fits = rows > WEIGHT_ONLY_ROWS and n_in % 8 == 0 and n_out % 8 == 0
        return "int8 x int8" if fits else "weight-only"
    if rows <= WEIGHT_ONLY_ROWS and n_in % 32 == 0:
        return "weight-only"
    return "int8 x int8" if n_in >= 2 else "widened"


class Int8Matrix:
    """A 2-D weight stored as int8 codes [out, in] and float32 scales [out] (see the module docstring).

    It stands in for the float matrix it approximates, in either orientation: as a product weight
    [in, out] (``transposed``), ``x @ m`` runs the int8 kernel on ``x`` [rows, in] float32 and
    returns [rows, out] float32; as a table [out, in] (``wte``), ``m[ids, :]`` returns the rows
    widened to float32. ``m.mT`` / ``m.T`` / ``torch.swapaxes(m, -1, -2)`` switch orientation
    without copying. Anything else is a ``TypeError``: no other operation silently widens an int8 weight.
    """

    ndim = 2
    dtype = torch.int8
    __array_ufunc__ = None  # NumPy: hand `ndarray @ m` back to this class (and refuse it)

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, transposed: bool = True) -> None:
        self.codes = codes  # [out, in] int8, contiguous
        self.scales = scales  # [out] float32
        self._scales_bf16 = scales.to(torch.bfloat16)  # what the kernel takes with bfloat16 inputs
        self.transposed = transposed
        self.device = codes.device

    @classmethod
    def from_float(cls, w: torch.Tensor, done: Callable[[int, int], None] | None = None) -> Int8Matrix:
        """Quantize a product weight ``w`` [in, out] (any float dtype; a view is fine); ``done``: see quantize."""
        codes, scales = quantize(w.T, done)
        return cls(codes.contiguous(), scales)

    def to(self, device: Any) -> Int8Matrix:
        return Int8Matrix(self.codes.to(device), self.scales.to(device), self.transposed)

    @property
    def shape(self) -> tuple[int, int]:
        out, inn = self.codes.shape
        return (inn, out) if self.transposed else (out, inn)

    @property
    def nbytes(self) -> int:
        return self.codes.numel() + 4 * self.scales.numel()

    @property
    def mT(self) -> Int8Matrix:
        m = Int8Matrix.__new__(Int8Matrix)
        m.__dict__.update(self.__dict__, transposed=not self.transposed)
        return m

    T = mT

    def __array_namespace__(self, api_version: str | None = None) -> Any:
        return xp_torch

    def __rmatmul__(self, x: torch.Tensor) -> torch.Tensor:  # [rows, in] float32 -> [rows, out] float32
        if not self.transposed or x.ndim != 2:
            raise TypeError("an int8 matrix multiplies [rows, in] @ [in, out] only")
        kernel = product_kernel(x.shape[0], self.codes.shape[1], self.codes.shape[0], self.codes.device.type)
        if kernel == "weight-only" and self.codes.is_cuda:  # its CUDA kernel reads float32 x and scales
            return torch.ops.aten._weight_int8pack_mm(x, self.codes, self.scales)
        if kernel == "weight-only":  # the codes widened in registers, x in bfloat16 (float32 is a slow path)
            y = torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), self.codes, self._scales_bf16)
            return y.to(torch.float32)
        if kernel == "widened":  # a shape neither kernel takes: the float32 matrix, made for this product
            return x @ (self.codes.T.to(torch.float32) * self.scales)  # [rows, in] @ [in, out]
        # Dynamic: each row of x to int8 with its own scale, an int8 x int8 -> int32 product.
        rows, min_rows = x.shape[0], INT_MM_MIN_ROWS.get(self.codes.device.type, 1)
        if rows < min_rows:  # zero rows added, then dropped: each row's product is its own
            x = torch.nn.functional.pad(x, (0, 0, 0, min_rows - rows))  # -> [min_rows, in]
        x_scale = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-30) / 127.0  # [rows, 1]
        xq = torch.round(x / x_scale).to(torch.int8)  # [rows, in] int8
        y = torch._int_mm(xq, self.codes.T).to(torch.float32) * x_scale * self.scales  # -> [rows, out]
        return y[:rows]

    def __getitem__(self, index: Any) -> torch.Tensor:  # table rows, widened: [n] ids -> [n, in] float32
        if self.transposed:
            raise TypeError("index an int8 matrix as a table [out, in] (e.g. wte), not as a product weight")
        rows = index[0] if isinstance(index, tuple) else index
        return self.codes[rows].to(torch.float32) * self.scales[rows][:, None]

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if (
            func in (torch.swapaxes, torch.transpose, torch.swapdims)
            and len(args) == 3
            and {args[1], args[2]} in ({-1, -2}, {0, 1})
        ):
            return args[0].mT
        if func in (torch.matmul, torch.Tensor.__matmul__) and isinstance(args[1], Int8Matrix):
            return args[1].__rmatmul__(args[0])
        raise TypeError(f"{func.__name__} is not defined for an int8 weight matrix")

    def __repr__(self) -> str:
        return f"Int8Matrix(shape={self.shape}, per-output-channel scales)"
