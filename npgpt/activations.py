"""The MLP activations a GPT-2 checkpoint may name, other than GPT-2's own (``model.gelu``).

Keyed by the names transformers' ``ACT2FN`` accepts in ``GPT2Config.activation_function``,
with the same formulas (transformers ``activations.py``); elementwise, array-API, float32 in
and out. Not here, so refused at load: ``prelu`` and ``xielu``, whose learned parameters are
extra tensors npgpt does not hold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from array_api_compat import array_namespace

Array = Any

# Names transformers gives to GPT-2's tanh approximation of GELU; model.gelu computes them all.
TANH_GELU = ("gelu_new", "gelu_fast", "gelu_accurate", "gelu_pytorch_tanh", "gelu_python_tanh")


def erf(x: Array) -> Array:
    """The error function; fractional error < 1.2e-7 everywhere (float32's own precision).

    Hand-written because the array API standard and NumPy have no erf. Chebyshev fit of erfc
    from Numerical Recipes in C, 2nd ed., section 6.2 (``erfcc``).
    """
    xp = array_namespace(x)
    z = xp.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -1.26551223 + t * (
        1.00002368
        + t
        * (
            0.37409196
            + t
            * (
                0.09678418
                + t
                * (
                    -0.18628806
                    + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))
                )
            )
        )
    )
    erfc = t * xp.exp(-z * z + poly)  # erfc(|x|)
    return xp.sign(x) * (1.0 - erfc)


def gelu_erf(x: Array) -> Array:  # BERT's exact GELU: x * Phi(x) (Hendrycks & Gimpel 2016)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def sigmoid(x: Array) -> Array:  # 1 / (1 + exp(-x)), written with tanh so it cannot overflow
    return 0.5 * (1.0 + array_namespace(x).tanh(0.5 * x))


def softplus(x: Array) -> Array:  # log(1 + exp(x)), without overflow for large x
    xp = array_namespace(x)
    return xp.maximum(x, 0.0) + xp.log1p(xp.exp(-xp.abs(x)))


def relu6(x: Array) -> Array:
    return array_namespace(x).clip(x, 0.0, 6.0)


OTHERS: dict[str, Callable[[Array], Array]] = {
    "gelu": gelu_erf,
    "gelu_python": gelu_erf,
    "gelu_10": lambda x: array_namespace(x).clip(gelu_erf(x), -10.0, 10.0),
    "quick_gelu": lambda x: x * sigmoid(1.702 * x),
    "relu": lambda x: array_namespace(x).maximum(x, 0.0),
    "relu2": lambda x: array_namespace(x).maximum(x, 0.0) ** 2,
    "relu6": relu6,
    "leaky_relu": lambda x: array_namespace(x).where(x >= 0, x, 0.01 * x),  # torch's default slope
    "silu": lambda x: x * sigmoid(x),
    "swish": lambda x: x * sigmoid(x),
    "hardswish": lambda x: x * relu6(x + 3.0) / 6.0,
    "mish": lambda x: x * array_namespace(x).tanh(softplus(x)),
    "tanh": lambda x: array_namespace(x).tanh(x),
    "sigmoid": sigmoid,
    "sqrtsoftplus": lambda x: array_namespace(x).sqrt(softplus(x)),
    "laplace": lambda x: 0.5 * (1.0 + erf((x - 0.707107) / (0.282095 * math.sqrt(2.0)))),  # MEGA's
    "linear": lambda x: x,
}

NAMES = (*TANH_GELU, *OTHERS)  # every activation_function npgpt computes
