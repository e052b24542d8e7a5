"""Train npgpt's bundled model (``npgpt/assets/bundled.safetensors``) with npgpt's own trainer.

The recipe, end to end (see docs/bundled-model.md for the figures of the shipped run)::

    apt-get install -y bible-kjv-text
    python scripts/prepare_corpus.py                 # data/kjv/{train,heldout}.txt, kjv.bin
    python scripts/train_bundled.py                  # runs/bundled/ -> the bundled file
    npgpt eval --data data/kjv/heldout.txt --model npgpt/assets/bundled.safetensors --stride 128

This is ``npgpt train data/kjv/kjv.bin --out runs/bundled --n-layer 4 --n-embd 160 --n-head 4
--n-ctx 256 ...`` (the same :func:`npgpt.train.train`), plus the one setting the command does
not take: ``val_fraction``, chosen by ``prepare_corpus.py`` so the run's held-out slice is
exactly the held-out chapters. The run is resumable (``--resume``), and the result is stored
as float16 to keep the file under 20 MB: GPT-2's 50257-token embedding alone is
``50257 * n_embd * 2`` bytes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from npgpt.config import GPT2Config  # noqa: E402
from npgpt.formats import npgpt_format  # noqa: E402

SHAPE = {"n_layer": 4, "n_embd": 160, "n_head": 4, "n_ctx": 256}
RUN = {"steps": 1200, "batch_size": 8, "seq_len": 256, "lr": 3e-3, "warmup": 50, "seed": 0}
MAX_BYTES = 20_000_000


def file_bytes(config: GPT2Config, bytes_per_param: int = 2) -> int:
    """Size of the weights in npgpt's format (the safetensors header adds a few KB)."""
    return config.n_params * bytes_per_param


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bundled")
    parser.add_argument("--steps", type=int, default=RUN["steps"])
    parser.add_argument("--batch-size", type=int, default=RUN["batch_size"])
    parser.add_argument("--lr", type=float, default=RUN["lr"])
    parser.add_argument("--n-embd", type=int, default=SHAPE["n_embd"])
    parser.add_argument("--n-layer", type=int, default=SHAPE["n_layer"])
    parser.add_argument("--stop-after", type=int, default=None, help="end after this step (to time a short run)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--eval-interval", type=int, default=100)
    parser.add_argument("--bundle", type=Path, default=ROOT / "npgpt" / "assets" / "bundled.safetensors")
    args = parser.parse_args()

    from npgpt.train import train

    shape = {**SHAPE, "n_embd": args.n_embd, "n_layer": args.n_layer}
    config = GPT2Config(**shape)
    size = file_bytes(config)
    print(f"{shape}: {config.n_params:,} parameters, {size / 1e6:.2f} MB as float16", flush=True)
    if size > MAX_BYTES:
        raise SystemExit(f"too big for the bundle: {size:,} > {MAX_BYTES:,} bytes")
    source = json.loads((ROOT / "data" / "kjv" / "SOURCE.json").read_text())
    start = time.time()

    def progress(p) -> None:  # npgpt.train.loop.Progress
        if p.step % 10 == 0 or p.val_loss is not None or p.step == 1:
            val = f" held-out {p.val_loss:.4f}" if p.val_loss is not None else ""
            print(
                f"step {p.step}/{p.steps} loss {p.loss:.4f}{val} lr {p.lr:.2e} "
                f"{p.tokens_per_s:,.0f} tok/s {time.time() - start:,.0f}s",
                flush=True,
            )

    result = train(
        ROOT / source["tokens"]["path"],
        args.out,
        **shape,
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=RUN["seq_len"],
        lr=args.lr,
        warmup=RUN["warmup"],
        seed=RUN["seed"],
        val_fraction=source["tokens"]["val_fraction"],
        eval_interval=args.eval_interval,
        eval_batches=4,
        resume=args.resume,
        progress=progress,
        stop_after=args.stop_after,
    )
    wall = time.time() - start
    summary = {
        "step": result.step,
        "wall_s": round(wall),
        "tokens_per_s": round(result.tokens_per_s),
        "train_loss_last50": sum(result.history["loss"][-50:]) / len(result.history["loss"][-50:]),
        "val": list(zip(result.history["val_step"], result.history["val_loss"], strict=True)),
    }
    print(json.dumps(summary), flush=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    if result.step == args.steps:
        npgpt_format.save(args.bundle, result.config, result.params, dtype="float16")
        shutil.copy(args.out / "loss.png", ROOT / "docs" / "bundled_loss.png")
        print(f"wrote {args.bundle} ({args.bundle.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
