"""Write tests/fixtures/nanogpt_*/ckpt.pt: tiny random models saved the way nanoGPT's train.py saves them.

The model is nanoGPT's own ``GPT`` class (its model.py, imported from a nanoGPT checkout), its
optimizer the one ``GPT.configure_optimizers`` builds, stepped once, and the checkpoint dict is
train.py's: ``model`` (``raw_model.state_dict()``: with ``compile=True`` the model is wrapped by
``torch.compile``, hence the ``_orig_mod.`` prefix), ``optimizer``, ``model_args``, ``iter_num``,
``best_val_loss`` (a tensor: train.py stores ``losses['val']``) and ``config``. Run with the
test environment's torch:

    git clone https://github.com/karpathy/nanoGPT /tmp/nanoGPT
    NANOGPT_DIR=/tmp/nanoGPT python scripts/make_nanogpt_fixture.py

Writes ``nanogpt_compiled`` (bias=True, compiled) and ``nanogpt_nobias`` (bias=False), each with
``reference.npz``: token ids and nanoGPT's logits for them. Rerunning rewrites the same files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
IDS = np.array([[5, 17, 60, 3, 63, 41, 0]])


def main() -> None:
    sys.path.insert(0, os.environ.get("NANOGPT_DIR", "nanoGPT"))
    from model import GPT, GPTConfig  # nanoGPT's model.py

    for name, bias, compiled in [("nanogpt_compiled", True, True), ("nanogpt_nobias", False, False)]:
        torch.manual_seed(0)
        model_args = dict(n_layer=2, n_head=3, n_embd=12, block_size=8, bias=bias, vocab_size=64, dropout=0.0)
        model = GPT(GPTConfig(**model_args))
        with torch.no_grad():  # gains and biases away from 1 and 0, so each one matters
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        optimizer = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cpu")
        x = torch.randint(0, 64, (2, 8))
        _, loss = model(x, torch.roll(x, -1, 1))
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            logits, _ = model(torch.tensor(IDS), torch.tensor(IDS))  # with targets: logits at every position
        raw_model = torch.compile(model) if compiled else model  # train.py: model = torch.compile(model)
        config = {
            "out_dir": "out",
            "eval_interval": 2000,
            "init_from": "scratch",
            "dataset": "openwebtext",
            "batch_size": 12,
            "block_size": 8,
            "learning_rate": 6e-4,
            "max_iters": 600000,
            "weight_decay": 0.1,
            "beta1": 0.9,
            "beta2": 0.95,
            "decay_lr": True,
            "device": "cpu",
            "dtype": "float32",
            "compile": compiled,
            "bias": bias,
        }
        checkpoint = {
            "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "model_args": model_args,
            "iter_num": 1,
            "best_val_loss": loss.detach(),
            "config": config,
        }
        (OUT / name).mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint, OUT / name / "ckpt.pt")
        np.savez(OUT / name / "reference.npz", ids=IDS, logits=logits.numpy())
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
