"""Sharded training and inference on 8 simulated CPU devices equal the single-device results.

XLA's device count is fixed when JAX starts, and other test modules start JAX with one device,
so the comparisons run in a fresh interpreter with ``--xla_force_host_platform_device_count=8``
and report back as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("optax")

from npgpt.formats import npgpt_format  # noqa: E402
from npgpt.train import sharding as S  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, jax, jax.numpy as jnp
    from npgpt.config import GPT2Config
    from npgpt.params import flatten, init_params
    from npgpt.model import gpt2
    from npgpt.train import sharding as S
    from npgpt.train.step import make_train_step, optimizer

    out = {"devices": jax.device_count()}
    config = GPT2Config(n_vocab=96, n_ctx=16, n_embd=32, n_head=4, n_layer=1)
    params = init_params(config, 0)
    batch = np.random.default_rng(0).integers(0, 96, (1, 8, 9)).astype(np.int32)  # 1 micro-batch, 8 rows
    opt = optimizer(1e-3, steps=10, warmup=1)
    step = make_train_step(opt, config)

    def run(mesh):
        p = jax.tree.map(jnp.asarray, params) if mesh is None else S.shard_params(params, mesh)
        state = opt.init(p)
        b = jnp.asarray(batch) if mesh is None else S.shard_batch(batch, mesh, axis=1)
        losses = []
        for _ in range(2):
            p, state, metrics = step(p, state, b)
            losses.append(float(metrics["loss"]))
        return flatten(S.to_host(p)), losses, p

    ref, ref_losses, _ = run(None)
    for name, (data, model) in {"data_parallel": (8, 1), "tensor_parallel": (2, 4)}.items():
        flat, losses, p = run(S.make_mesh(model=model, data=data))
        block = p["blocks"][0]
        out[name] = {
            "loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses)),
            "param_diff": max(float(np.max(np.abs(flat[k] - ref[k]))) for k in ref),
            "c_attn_shard": list(block["attn"]["c_attn"]["w"].addressable_shards[0].data.shape),
            "attn_proj_shard": list(block["attn"]["c_proj"]["w"].addressable_shards[0].data.shape),
            "c_fc_shard": list(block["mlp"]["c_fc"]["w"].addressable_shards[0].data.shape),
            "mlp_proj_shard": list(block["mlp"]["c_proj"]["w"].addressable_shards[0].data.shape),
            "wte_shard": list(p["wte"].addressable_shards[0].data.shape),
        }

    # inference: logits of sharded params and ids against plain NumPy
    mesh = S.make_mesh(model=4)
    ids = np.random.default_rng(1).integers(0, 96, (4, 12))
    logits = S.sharded_logits(mesh, config)(S.shard_params(params, mesh), S.shard_batch(ids, mesh))
    out["inference_diff"] = float(np.max(np.abs(np.asarray(logits) - gpt2(ids, params, config)[0])))
    out["inference_shards"] = len(logits.addressable_shards)
    print("RESULT " + json.dumps(out))
""")

DRIVER = textwrap.dedent("""
    import json, sys
    import numpy as np, jax
    from npgpt.params import flatten
    from npgpt.train import sharding as S
    from npgpt.train.loop import train
    from npgpt.train.settings import TrainSettings

    # the driver: 2 x 4 mesh, stopped and resumed, against one device
    data, tmp = sys.argv[1], sys.argv[2]
    kw = TrainSettings(n_layer=1, n_embd=32, n_head=4, n_ctx=16, steps=4, batch_size=4, seq_len=8, lr=1e-3,
                       warmup=1, eval_interval=2)
    single = train(data, tmp + "/one", kw, mesh=S.make_mesh(devices=jax.devices()[:1]))
    train(data, tmp + "/mesh", kw, model_parallel=4, stop_after=2)
    sharded = train(data, tmp + "/mesh", kw, model_parallel=4, resume=True)
    a, b = flatten(single.params), flatten(sharded.params)
    out = {"param_diff": max(float(np.max(np.abs(a[k] - b[k]))) for k in a),
           "loss_diff": max(abs(x - y) for x, y in zip(single.history["loss"], sharded.history["loss"])),
           "val_diff": abs(single.history["val_loss"][-1] - sharded.history["val_loss"][-1])}
    print("RESULT " + json.dumps(out))
""")


def run_on_eight_devices(script: str, *args: str) -> dict:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.fixture(scope="module")
def sharded():
    return run_on_eight_devices(SCRIPT)


def test_eight_devices(sharded):
    assert sharded["devices"] == 8


def test_data_parallel_step_equals_single_device(sharded):
    r = sharded["data_parallel"]
    assert r["loss_diff"] < 1e-5 and r["param_diff"] < 1e-5
    assert r["c_attn_shard"] == [32, 96]  # model axis of size 1: weights whole on every device


def test_tensor_parallel_step_equals_single_device(sharded):
    r = sharded["tensor_parallel"]
    assert r["loss_diff"] < 1e-5 and r["param_diff"] < 1e-5
    # Megatron layout over 4 devices: column-parallel in, row-parallel out, embeddings replicated
    assert r["c_attn_shard"] == [32, 96 // 4] and r["c_fc_shard"] == [32, 128 // 4]
    assert r["attn_proj_shard"] == [32 // 4, 32] and r["mlp_proj_shard"] == [128 // 4, 32]
    assert r["wte_shard"] == [96, 32]


def test_sharded_inference_equals_numpy(sharded):
    assert sharded["inference_diff"] < 1e-4 and sharded["inference_shards"] == 8


@pytest.mark.slow
def test_sharded_driver_resumes_and_matches_one_device(tmp_path):
    """``train`` on a 2 x 4 mesh, stopped and resumed (sharded checkpoint round trip), against
    ``train`` on one device."""
    (tmp_path / "text.txt").write_text(" ".join(f"word{i % 37}" for i in range(600)))
    r = run_on_eight_devices(DRIVER, str(tmp_path / "text.txt"), str(tmp_path))
    assert r["loss_diff"] < 1e-5 and r["param_diff"] < 1e-5 and r["val_diff"] < 1e-5


MULTIHOST = textwrap.dedent("""
    import json, sys
    from npgpt.train import sharding as S
    S.init_distributed(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))  # before any other JAX call
    import jax
    from npgpt.params import flatten
    from npgpt.train.loop import train
    from npgpt.train.settings import TrainSettings
    result = train(sys.argv[3], sys.argv[4], TrainSettings(**json.loads(sys.argv[5])), model_parallel=2)
    print("RESULT " + json.dumps({"processes": jax.process_count(), "devices": jax.device_count(),
                                  "loss": result.history["loss"], "val_loss": result.history["val_loss"],
                                  "wte": flatten(result.params)["wte"][:50].tolist()}))
""")


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    """Multi-host on one machine: two processes x two CPU devices join with
    ``jax.distributed`` into one 2 x 2 mesh; the run equals a one-device run."""
    import socket

    from npgpt.train.loop import train
    from npgpt.train.settings import TrainSettings

    (tmp_path / "text.txt").write_text(" ".join(f"word{i % 37}" for i in range(600)))
    kw = dict(
        n_layer=1, n_embd=32, n_head=4, n_ctx=16, steps=3, batch_size=4, seq_len=8, lr=1e-3, warmup=1, eval_interval=3
    )
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                MULTIHOST,
                f"localhost:{port}",
                str(i),
                str(tmp_path / "text.txt"),
                str(tmp_path / "run"),
                json.dumps(kw),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for i in range(2)
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, stderr[-3000:]
        results.append(json.loads(lines[-1].removeprefix("RESULT ")))
    one = train(tmp_path / "text.txt", tmp_path / "one", TrainSettings(**kw))
    for r in results:
        assert r["processes"] == 2 and r["devices"] == 4
        np.testing.assert_allclose(r["loss"], one.history["loss"], rtol=1e-5)
        np.testing.assert_allclose(r["val_loss"], one.history["val_loss"], rtol=1e-5)
        np.testing.assert_allclose(r["wte"], one.params["wte"][:50], atol=1e-6)
    assert npgpt_format.load(tmp_path / "run" / "model.safetensors")[0] == one.config  # process 0 wrote it


def test_param_specs_follow_megatron():
    from jax.sharding import PartitionSpec as P

    from npgpt.config import GPT2Config
    from npgpt.params import flatten, init_params

    specs = flatten(S.param_specs(init_params(GPT2Config(n_vocab=10, n_ctx=4, n_embd=8, n_head=2, n_layer=1))))
    assert specs["blocks.0.attn.c_attn.w"] == P(None, "model") and specs["blocks.0.attn.c_attn.b"] == P("model")
    assert specs["blocks.0.attn.c_proj.w"] == P("model", None) and specs["blocks.0.attn.c_proj.b"] == P()
    assert specs["blocks.0.mlp.c_fc.w"] == P(None, "model") and specs["blocks.0.mlp.c_proj.w"] == P("model", None)
    assert specs["wte"] == P() and specs["blocks.0.ln_1.g"] == P() and specs["ln_f.b"] == P()


def test_tensor_parallel_size_must_divide_heads():
    with pytest.raises(ValueError, match="divide n_head"):
        S.check_divisible(n_head=3, n_embd=48, mesh=SimpleNamespace(shape={"data": 1, "model": 2}))
    S.check_divisible(n_head=4, n_embd=48, mesh=SimpleNamespace(shape={"data": 1, "model": 2}))
