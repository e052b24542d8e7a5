"""Scale-out with JAX: a ("data", "model") device mesh, data-parallel batches and Megatron-style
tensor-parallel weights. The model code does not change: params and batches are *placed* on the
mesh and ``jax.jit`` (XLA's SPMD partitioner) splits the computation and inserts the
collectives. Training and inference use the same placement.

Tensor parallel (the "model" axis, size M), per block, as in Megatron-LM:

- ``attn.c_attn`` [C, 3C] and ``mlp.c_fc`` [C, 4C] are split by output column, so each device
  computes its slice of q/k/v and of the MLP's hidden units with no communication;
- ``attn.c_proj`` [C, C] and ``mlp.c_proj`` [4C, C] are split by input row, so each device
  multiplies its own slice and one all-reduce sums the partial outputs;
- embeddings, layer norms and the row-parallel biases are replicated (the vocabulary, 50257, is
  not divisible by any useful M).

``c_attn``'s columns are OpenAI's ``[q | k | v]``; a contiguous split of them does not give each
device the q, k and v of the same heads (Megatron permutes the fused weight so that it does).
npgpt keeps the checkpoint layout, and XLA regroups q, k and v by head after the matmul: per
layer, one all-gather of [B, T, 3C] besides Megatron's two all-reduces (counted in the compiled
forward). ``c_proj``'s rows are heads in order, so M must divide ``n_head``.
On one host, 8 CPU devices simulate a mesh: ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
(set before JAX starts).

Data parallel (the "data" axis, size N): each batch's rows are split N ways; the mean loss, and
so every gradient, is all-reduced by XLA. Gradients and AdamW moments follow the params' layout.

Multi-host: run the same command on every host, adding where process 0 listens, how many
processes there are and which one this is. Each process calls :func:`init_distributed` before
anything else touches JAX; ``jax.devices()`` then lists every host's devices and the mesh spans
them all. Every process reads the same data (same seed, so the same global batch) and feeds
only the rows its own devices hold; only process 0 writes checkpoints. Two GPU hosts::

    host0$ npgpt train data.txt --out run --init gpt2 --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0
    host1$ npgpt train data.txt --out run --init gpt2 --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 1

Under SLURM, Open MPI, Kubernetes or on Cloud TPU pods ``--distributed`` alone is enough (JAX
finds the three values). To try it on one machine, two processes with two CPU devices each
form one 2 x 2 mesh (tensor parallel within a process, data parallel across the two)::

    export XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu
    for i in 0 1; do
      npgpt train data.txt --out run --n-layer 2 --n-embd 64 --n-head 4 --n-ctx 64 --steps 20 \
        --model-parallel 2 --coordinator localhost:1234 --num-processes 2 --process-id $i &
    done; wait
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..config import GPT2Config
from ..errors import NpgptError, is_integer, reason, shown

Params = dict[str, Any]

# Tensor-parallel layout of one block's leaves: column-parallel ("model" on the output axis)
# then row-parallel ("model" on the input axis). Everything not listed is replicated.
BLOCK_SPECS: dict[str, P] = {
    "attn.c_attn.w": P(None, "model"),
    "attn.c_attn.b": P("model"),
    "attn.c_proj.w": P("model", None),
    "mlp.c_fc.w": P(None, "model"),
    "mlp.c_fc.b": P("model"),
    "mlp.c_proj.w": P("model", None),
}


def init_distributed(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Join a multi-host run: ``jax.distributed.initialize`` (see the module docstring).

    With no arguments JAX detects SLURM, Open MPI, Kubernetes and Cloud TPU clusters (and
    reads ``JAX_COORDINATOR_ADDRESS``). Must run before any other JAX call in the process.

    Raises NpgptError for a ``coordinator`` that is not ``HOST:PORT``, a ``num_processes`` below 1, a
    ``process_id`` outside ``[0, num_processes)``, and for a cluster JAX cannot join or detect (its
    ValueError or RuntimeError was an internal error to the CLI).
    """
    _check_cluster(coordinator, num_processes, process_id)
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    except (ValueError, TypeError, RuntimeError, IndexError) as e:
        if coordinator is None and "coordinator_address" in str(e):  # nothing given, and no cluster detected
            raise NpgptError(
                "cannot join a multi-host run: JAX detected no cluster (SLURM, Open MPI, Kubernetes, Cloud TPU); "
                "give coordinator='HOST:PORT' of process 0 with num_processes= and process_id=",
                keywords=CLUSTER,
            ) from None
        raise NpgptError(
            f"cannot join the multi-host run ({reason(e)}); check coordinator=, num_processes= and process_id=",
            keywords=CLUSTER,
        ) from None


CLUSTER = ("coordinator", "num_processes", "process_id")  # init_distributed's keywords, npgpt train's options


def _check_cluster(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """NpgptError naming a multi-host setting that JAX would refuse with a bare ValueError or IndexError."""
    if coordinator is not None:
        host, _, port = str(coordinator).rpartition(":")
        if not (host and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise NpgptError(
                "coordinator must be HOST:PORT (process 0's address and a free port, e.g. 10.0.0.1:1234), "
                f"got {shown(coordinator)}",
                "coordinator",
                CLUSTER,
            )
    if num_processes is not None and not (is_integer(num_processes) and num_processes >= 1):
        raise NpgptError(
            f"num_processes must be a whole number, at least 1, got {shown(num_processes)}", "num_processes", CLUSTER
        )
    if process_id is not None and not (
        is_integer(process_id) and 0 <= process_id and (num_processes is None or process_id < num_processes)
    ):
        below = (
            "0 or more"
            if num_processes is None
            else f"from 0 to {num_processes - 1} (below num_processes={num_processes})"
        )
        raise NpgptError(f"process_id must be a whole number, {below}, got {shown(process_id)}", "process_id", CLUSTER)


def make_mesh(model: int = 1, data: int | None = None, devices: list | None = None) -> Mesh:
    """A ``(data, model)`` mesh; ``data`` defaults to every device not used by ``model``.

    Devices along "model" are adjacent in ``jax.devices()`` order (on GPUs: the same host, fast
    links), because tensor parallelism communicates every layer and data parallelism once a step.
    """
    devices = list(jax.devices() if devices is None else devices)
    if model < 1 or len(devices) % model:
        raise ValueError(f"model-parallel size {model} must divide the {len(devices)} devices")
    data = len(devices) // model if data is None else data
    if data < 1 or data * model > len(devices):
        raise ValueError(f"a {data} x {model} mesh needs {data * model} devices; {len(devices)} found")
    grid = np.array(devices[: data * model], dtype=object).reshape(data, model)
    # Auto axes: XLA propagates the shardings we place (JAX's default is explicit sharding types,
    # under which reshaping the fused q/k/v columns into heads would need annotations in the model).
    return Mesh(grid, ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))


def param_specs(params: Params) -> Params:
    """A pytree like ``params`` of ``PartitionSpec``: Megatron layout for the block matrices."""

    def block_specs(block: Params) -> Params:
        return {
            group: {
                layer: {leaf: BLOCK_SPECS.get(f"{group}.{layer}.{leaf}", P()) for leaf in leaves}
                for layer, leaves in layers.items()
            }
            if group in ("attn", "mlp")
            else {leaf: P() for leaf in layers}
            for group, layers in block.items()
        }

    return {
        name: [block_specs(b) for b in value] if name == "blocks" else jax.tree.map(lambda _: P(), value)
        for name, value in params.items()
    }


def check_divisible(n_head: int, n_embd: int, mesh: Mesh) -> None:
    """Refuse tensor-parallel sizes that would split a head (a precise message, not an XLA one)."""
    m = mesh.shape["model"]
    if n_head % m:
        raise ValueError(f"model-parallel size {m} must divide n_head ({n_head}): each device holds whole heads")
    if (4 * n_embd) % m or n_embd % m:
        raise ValueError(f"model-parallel size {m} must divide n_embd ({n_embd})")


def shard_params(params: Params, mesh: Mesh) -> Params:
    """Place ``params`` (NumPy or JAX arrays) on ``mesh`` in the tensor-parallel layout.

    On several hosts each process passes the full params (e.g. loaded from the same file) and
    keeps the shards of its own devices.
    """
    specs = param_specs(params)
    return jax.tree.map(lambda x, s: put(x, NamedSharding(mesh, s)), params, specs)


def batch_sharding(mesh: Mesh, ndim: int, axis: int = 0) -> NamedSharding:
    """Split dimension ``axis`` of an ``ndim``-dimensional batch over "data"."""
    spec: list[str | None] = [None] * ndim
    spec[axis] = "data"
    return NamedSharding(mesh, P(*spec))


def put(x: Any, sharding: NamedSharding) -> jax.Array:
    """A global array from a host value every process holds in full.

    Unlike ``jax.device_put`` this also works across hosts: each process builds only the
    shards of its own devices.
    """
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def shard_batch(batch: np.ndarray, mesh: Mesh, axis: int = 0) -> jax.Array:
    """Place a batch with dimension ``axis`` (the rows) split over "data"."""
    if batch.shape[axis] % mesh.shape["data"]:
        raise ValueError(
            f"batch size {batch.shape[axis]} must be a multiple of the data-parallel size {mesh.shape['data']}"
        )
    return put(batch, batch_sharding(mesh, batch.ndim, axis))


def place_like(tree: Any, like: Any) -> Any:
    """Put each host array of ``tree`` on the sharding of the matching leaf of ``like``."""
    return jax.tree.map(lambda x, ref: put(x, ref.sharding), tree, like)


def to_host(tree: Any) -> Any:
    """NumPy copies of a pytree of (possibly sharded, possibly multi-host) arrays."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, tree)


def sharded_logits(mesh: Mesh, config: GPT2Config) -> Callable[[Params, jax.Array], jax.Array]:
    """Inference on the mesh: ``logits(params, ids)`` with params from :func:`shard_params` and
    ids ``[B, T]`` from :func:`shard_batch`; logits come back split by row like the ids."""
    from ..model import gpt2

    out = NamedSharding(mesh, P("data", None, None))

    def logits(params: Params, ids: jax.Array) -> jax.Array:
        with jax.default_matmul_precision("highest"):  # float32 products on a GPU too (see step.py)
            return gpt2(ids, params, config)[0]

    return jax.jit(logits, out_shardings=out)
