"""Write tests/fixtures/openai_tiny/: a tiny random GPT-2 saved by real TensorFlow, as OpenAI did.

npgpt reads OpenAI's checkpoints without TensorFlow; this fixture is the ground truth its reader
is tested against. TensorFlow is not an npgpt dependency, so run this in a throwaway venv:

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu google-crc32c
    /tmp/tfvenv/bin/python scripts/make_tf_fixture.py

It writes, with ``tf.compat.v1.train.Saver`` in graph mode (the code path of OpenAI's own
``gpt-2`` repository): ``hparams.json``, ``checkpoint``, ``model.ckpt.index``,
``model.ckpt.data-00000-of-00001``, and ``reference.npz``, the tensors as TensorFlow reads them
back, so tests can compare without TensorFlow. It then checks the other direction: bundles
written by npgpt's own writer (:func:`npgpt.formats.openai_tf.save`), including one split into
many index blocks, must read back exactly through ``tf.train.load_checkpoint`` and restore
through ``Saver``. Rerunning rewrites the fixture with the same seed. The tests also check that
npgpt's writer reproduces the fixture byte for byte (TensorFlow 2.21 wrote it); if a future
TensorFlow changes its bytes, that test says so.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # import npgpt from this checkout; the TF venv does not install it

from npgpt.config import GPT2Config  # noqa: E402
from npgpt.formats import openai_tf  # noqa: E402
from npgpt.params import init_params  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "openai_tiny"
CONFIG = GPT2Config(n_vocab=300, n_ctx=32, n_embd=32, n_head=2, n_layer=2)


def openai_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Every variable of OpenAI's ``model.py`` for ``config``, with the shape it is saved in."""
    C = config.n_embd
    shapes = {"model/wte": (config.n_vocab, C), "model/wpe": (config.n_ctx, C)}
    for i in range(config.n_layer):
        p = f"model/h{i}/"
        shapes.update(
            {
                p + "ln_1/g": (C,),
                p + "ln_1/b": (C,),
                # OpenAI's conv1d keeps a leading filter-width dim of 1: [1, nx, nf].
                p + "attn/c_attn/w": (1, C, 3 * C),
                p + "attn/c_attn/b": (3 * C,),
                p + "attn/c_proj/w": (1, C, C),
                p + "attn/c_proj/b": (C,),
                p + "ln_2/g": (C,),
                p + "ln_2/b": (C,),
                p + "mlp/c_fc/w": (1, C, 4 * C),
                p + "mlp/c_fc/b": (4 * C,),
                p + "mlp/c_proj/w": (1, 4 * C, C),
                p + "mlp/c_proj/b": (C,),
            }
        )
    shapes.update({"model/ln_f/g": (C,), "model/ln_f/b": (C,)})
    return shapes


def random_weights(config: GPT2Config, seed: int) -> dict[str, np.ndarray]:
    """Random float32 values; gains near 1 and nonzero biases, so a swapped name changes logits."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in openai_shapes(config).items():
        values = rng.standard_normal(shape).astype(np.float32)
        if name.endswith("/g"):
            weights[name] = 1.0 + 0.1 * values
        elif name.endswith("/b"):
            weights[name] = 0.05 * values
        else:
            weights[name] = 0.1 * values if name in ("model/wte", "model/wpe") else 0.05 * values
    return weights


def save_with_tensorflow(directory: Path, config: GPT2Config, weights: dict[str, np.ndarray]) -> None:
    """hparams.json + a V2 checkpoint written by ``tf.compat.v1.train.Saver``, as OpenAI did."""
    directory.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.get_variable(name, initializer=tf.constant(value)) for name, value in weights.items()]
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(directory / "model.ckpt"), write_meta_graph=False)
    (directory / "hparams.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")


def read_with_tensorflow(prefix: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def restore_with_saver(prefix: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Values after ``Saver.restore`` into fresh variables: how OpenAI's sample code loads."""
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.get_variable(n, shape, tf.float32) for n, shape in shapes.items()]
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            saver.restore(sess, str(prefix))
            return dict(zip(shapes, sess.run(variables), strict=True))


def check_npgpt_writer() -> None:
    """TensorFlow must read what npgpt writes, bit for bit, in one index block or in many."""
    config = GPT2Config(n_vocab=77, n_ctx=16, n_embd=48, n_head=3, n_layer=5)
    params = init_params(config, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        openai_tf.save(tmp, config, params)
        ours = openai_tf.read_bundle(Path(tmp) / "model.ckpt")
        for got in (
            read_with_tensorflow(Path(tmp) / "model.ckpt"),
            restore_with_saver(Path(tmp) / "model.ckpt", openai_shapes(config)),
        ):
            assert got.keys() == ours.keys(), sorted(got.keys() ^ ours.keys())
            for name, value in ours.items():
                assert got[name].dtype == value.dtype and np.array_equal(got[name], value), name

        # A 64-byte block size forces one index entry per few tensors: exercises separators.
        prefix = Path(tmp) / "blocks"
        tensors = {
            "a": np.arange(3, dtype=np.int64),
            "b/scalar": np.array(2.5, np.float64),
            "b/half": np.linspace(0, 1, 7, dtype=np.float16),
            "c": np.arange(12, dtype=np.int32).reshape(3, 4),
            "c1": np.ones((2, 0), np.float32),
            **{f"z/{i:03d}": np.full(i, i, np.float32) for i in range(40)},
        }
        openai_tf.write_bundle(prefix, tensors, block_size=64)
        got = read_with_tensorflow(prefix)
        assert got.keys() == tensors.keys(), sorted(got.keys() ^ tensors.keys())
        for name, value in tensors.items():
            assert got[name].dtype == value.dtype, (name, got[name].dtype)
            assert got[name].shape == value.shape and np.array_equal(got[name], value), name
    print("ok: TensorFlow reads npgpt's writer output exactly (single and multi-block index)")


def main() -> None:
    weights = random_weights(CONFIG, seed=0)
    save_with_tensorflow(FIXTURE, CONFIG, weights)
    for stale in FIXTURE.glob("model.ckpt.meta"):
        stale.unlink()
    # Saver records the absolute path it saved to; OpenAI's files name the bundle relatively.
    (FIXTURE / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
    )
    reference = read_with_tensorflow(FIXTURE / "model.ckpt")
    assert reference.keys() == weights.keys()
    for name, value in weights.items():
        assert np.array_equal(reference[name], value), name
    np.savez(FIXTURE / "reference.npz", **reference)
    size = sum(f.stat().st_size for f in FIXTURE.iterdir())
    print(f"wrote {FIXTURE} ({size} bytes) with TensorFlow {tf.__version__}")
    check_npgpt_writer()


if __name__ == "__main__":
    main()
