"""The params pytree: npgpt's tensor names, the shape of each, flatten/unflatten, and initialisation.

The params pytree is ``{"wte", "wpe", "blocks": [block, ...], "ln_f"}``, plus ``"lm_head"`` [V, C]
when the output head is not tied to ``wte``, and without the biases (``b``) of a ``bias=False``
model; flattened names join the path with dots (``blocks.3.attn.c_attn.w``). Every format
module maps its own names to these, and :func:`unflatten` checks every tensor against the
config before the model ever sees it.
:func:`map_with_path` is the one walker over the tree; everything else that visits leaves uses it.

A leaf is a float32 array, or (a GGUF file's Q8_0 matrix, read for 8-bit weights) a
:class:`Q8_0Blocks` that a backend multiplies as it is and everything else dequantizes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import GPT2Config
from .errors import CheckpointError


def dtype_name(dtype: Any) -> Any:
    """A dtype given as an object of an array library, as its name: ``np.float32``, ``np.dtype("float16")``,
    ``torch.bfloat16`` and ``jnp.float32`` name one as ``"float32"`` does (transformers' ``torch_dtype`` takes
    torch's dtypes and strings alike). Text, and anything that is no dtype, comes back as given, for the
    caller's check to refuse with the names it takes."""
    if isinstance(dtype, str):
        return dtype
    if type(dtype).__name__ == "dtype" and type(dtype).__module__.startswith("torch"):
        return str(dtype).removeprefix("torch.")  # torch.bfloat16 -> "bfloat16" (NumPy cannot read torch's)
    if isinstance(dtype, (type, np.dtype)):  # np.float32, jnp.float32, ml_dtypes.bfloat16, np.dtype("float16")
        try:
            return np.dtype(dtype).name
        except TypeError:  # a class that is no dtype (str, a dataclass)
            return dtype
    return dtype


@dataclass(frozen=True)
class Q8_0Blocks:
    """A weight matrix still in llama.cpp's Q8_0 blocks, as a GGUF file holds it (``block_q8_0``).

    ``codes`` [rows, cols/32, 32] int8 and ``scales`` [rows, cols/32] float16, usually views of the
    file's memory map: the blocks run along each row, ``row ~= codes * scales[..., None]``. The
    param is those rows (``wte`` [V, C]) or, ``transposed``, their transpose (a block's Conv1D
    ``w`` [in, out], whose rows are its outputs). Why a leaf of its own: a backend whose 8-bit
    product is Q8_0's (``Backend.from_q8_0``: NumPy's, npgpt/q8_0.py) takes the file's own codes,
    with no float32 copy of the model at load; :meth:`dequantize` serves everything else.
    """

    codes: np.ndarray
    scales: np.ndarray
    transposed: bool
    raw: np.ndarray | None = None  # the file's bytes both are views of: their pages are dropped once read

    @property
    def shape(self) -> tuple[int, int]:  # the param's: [rows, cols], or [cols, rows] transposed
        rows, n_blocks, block = self.codes.shape
        return (n_blocks * block, rows) if self.transposed else (rows, n_blocks * block)

    def dequantize(self) -> np.ndarray:
        """The float32 param: ``q * d`` per block (ggml's ``dequantize_row_q8_0``, bit for bit)."""
        rows = self.codes.astype(np.float32) * self.scales.astype(np.float32)[..., None]  # [rows, blocks, 32]
        rows = rows.reshape(rows.shape[0], -1)  # -> [rows, cols]
        return rows.T if self.transposed else rows


def as_floats(a: Any) -> Any:
    """A leaf as an array: a :class:`Q8_0Blocks` dequantized (the file's pages it read let go), else itself."""
    if not isinstance(a, Q8_0Blocks):
        return a
    from .files import release_mapped

    floats = a.dequantize()
    if a.raw is not None:
        release_mapped(a.raw)
    return floats


def dequantized(params: dict[str, Any]) -> dict[str, Any]:
    """The same params with every :class:`Q8_0Blocks` as its float32 array (:func:`as_floats`)."""
    return map_with_path(lambda _name, a: as_floats(a), params)


def head_name(params: dict[str, Any]) -> str:
    """The matrix the model unembeds with (``model.gpt2``'s head): an untied ``lm_head``, else ``wte``."""
    return "lm_head" if "lm_head" in params else "wte"


def expected_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Every tensor npgpt needs for ``config``, by flat name, with its shape (``GPT2Config.param_shapes``)."""
    return config.param_shapes()


def map_with_path(fn: Callable[[str, Any], Any], tree: Any, prefix: str = "") -> Any:
    """The same nested dicts/lists with ``fn(name, leaf)`` in place of each leaf.

    ``name`` is the leaf's flat name (``"blocks.0.attn.c_attn.w"``, ``"wte"``). Leaves are
    whatever is not a dict, list or tuple (NumPy, JAX, PyTorch arrays alike).
    """
    if isinstance(tree, dict):
        return {k: map_with_path(fn, v, f"{prefix}{k}.") for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(map_with_path(fn, v, f"{prefix}{i}.") for i, v in enumerate(tree))
    return fn(prefix[:-1], tree)


def flatten(params: dict[str, Any]) -> dict[str, Any]:
    """Nested params -> ``{"blocks.0.ln_1.g": array, ...}``."""
    flat: dict[str, Any] = {}
    map_with_path(flat.__setitem__, params)
    return flat


# The config's fields a tensor's shape comes from, by its name less "blocks.N." (the rest: n_embd alone); a
# wrong shape names these, not the whole config.
_SHAPE_FIELDS = {
    "wte": ("n_vocab", "n_embd"),
    "lm_head": ("n_vocab", "n_embd"),
    "wpe": ("n_ctx", "n_embd"),
    "mlp.c_fc.w": ("n_embd", "d_mlp"),
    "mlp.c_fc.b": ("d_mlp",),
    "mlp.c_proj.w": ("d_mlp", "n_embd"),
}


def unflatten(flat: dict[str, Any], config: GPT2Config, source: str = "checkpoint") -> dict[str, Any]:
    """Flat names -> nested params, checking that every tensor is present with the right shape.

    The cheap facts come first: a config claiming more (or fewer) layers than the file holds is
    refused before the table of expected shapes is built (for ``n_layer=10**9`` that would hang).
    """
    n_blocks = len({name.split(".")[1] for name in flat if name.startswith("blocks.")})
    if n_blocks != config.n_layer:
        raise CheckpointError(
            f"{source}: the config says n_layer={config.n_layer} but the weights hold "
            f"{n_blocks} blocks; the config does not belong to these weights"
        )
    expected = expected_shapes(config)
    missing = [k for k in expected if k not in flat]
    if missing:
        raise CheckpointError(
            f"{source}: {len(missing)} tensor(s) missing, e.g. {missing[0]!r}; "
            "the file is incomplete or was written for another model"
        )
    extra = [k for k in flat if k not in expected]
    if extra:
        raise CheckpointError(f"{source}: unexpected tensor {extra[0]!r} for a GPT-2 model")
    for name, shape in expected.items():
        if tuple(flat[name].shape) != shape:
            fields = ", ".join(
                f"{f}={getattr(config, f)}" for f in _SHAPE_FIELDS.get(name.split(".", 2)[-1], ("n_embd",))
            )
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {tuple(flat[name].shape)}, expected {shape} from the config's "
                f"{fields}; the config does not belong to these weights"
            )
    params: dict[str, Any] = {"blocks": [{} for _ in range(config.n_layer)]}
    for name, value in flat.items():
        parts = name.split(".")
        node: Any = params
        if parts[0] == "blocks":
            node, parts = params["blocks"][int(parts[1])], parts[2:]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return params


def check_params(params: Any, config: GPT2Config, source: str = "params") -> None:
    """Refuse weights built by hand (``GPT2(config, params)``) that are not npgpt's tree for ``config``: not nested
    dicts with OpenAI's names (an empty dict, None, a Hugging Face state dict), a leaf that is no array, a tensor
    missing, extra or of another shape (:func:`unflatten`'s checks). One line naming the first fault, where the
    first forward pass raised NumPy's KeyError 'wte' or "operands could not be broadcast"."""
    if not isinstance(params, dict) or "wte" not in params:
        if isinstance(params, dict):
            got = f"keys {', '.join(map(repr, list(params)[:3]))}" if params else "an empty dict"
        else:
            got = type(params).__name__
        raise CheckpointError(
            f"{source} must be npgpt's weights, nested dicts of arrays by OpenAI's names (wte, wpe, blocks, ln_f; "
            f"init_params(config) makes them), got {got}; npgpt.load(path) reads a checkpoint in another layout "
            "(Hugging Face's, nanoGPT's)"
        )
    flat = flatten(params)
    for name, leaf in flat.items():
        if not isinstance(getattr(leaf, "shape", None), tuple):
            raise CheckpointError(f"{source}: {name!r} is a {type(leaf).__name__}, not an array")
    unflatten(flat, config, source)


def host_params(params: dict[str, Any], source: str = "params") -> dict[str, Any]:
    """``params`` with every leaf a NumPy array (or :class:`Q8_0Blocks`), what ``Backend.put_params`` takes: another
    library's float arrays (a torch model's CPU tensors, JAX arrays) read through NumPy as float32. A leaf NumPy
    cannot read as floats (a bfloat16 or GPU tensor, a model's laid-out int8 matrix) is refused in one line: passing
    a loaded model's ``.params`` to another dtype or backend failed deep in it ("expected np.ndarray (got Tensor)",
    "'Q8Matrix' object has no attribute 'flags'")."""

    def host(name: str, leaf: Any) -> Any:
        if isinstance(leaf, (np.ndarray, Q8_0Blocks)):
            return leaf
        try:
            arr = np.asarray(leaf)
        except (TypeError, ValueError, RuntimeError):  # bfloat16, a tensor on a GPU, an array that stays on device
            arr = None
        if arr is None or not np.issubdtype(arr.dtype, np.floating):
            raise CheckpointError(
                f"{source}: {name!r} ({type(leaf).__name__}) is no float array NumPy can read; pass float32 arrays on "
                "the CPU (a loaded model's params are laid out for its own backend and dtype: load the checkpoint "
                "again with the backend and dtype you want)"
            )
        return arr.astype(np.float32, copy=False)

    return map_with_path(host, params)


def init_params(config: GPT2Config, seed: int = 0, std: float = 0.02) -> dict[str, Any]:
    """Random float32 weights of GPT-2's shape (normal(0, std) matrices, unit gains, zero biases).

    Residual projections are scaled by 1/sqrt(2 * n_layer), as in GPT-2's paper.
    """
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in expected_shapes(config).items():
        if name.endswith(".g"):
            flat[name] = np.ones(shape, np.float32)
        elif name.endswith(".b"):
            flat[name] = np.zeros(shape, np.float32)
        else:
            scale = std / np.sqrt(2 * config.n_layer) if name.endswith("c_proj.w") else std
            flat[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
    return unflatten(flat, config)
