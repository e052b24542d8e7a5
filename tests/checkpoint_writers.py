"""Checkpoints in other tools' layouts, written by those tools (torch.save, transformers) for the tests."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import hf_logits

import npgpt

torch = pytest.importorskip("torch")  # the writers are torch's own; without it, the tests that use them skip

IDS = np.array([[464, 2068, 7586, 21831, 50256, 11, 290]])


def close_to_hf(path, ref, width: int | None = None) -> float:
    """Largest |npgpt logits - transformers logits| for the model at ``path``."""
    logits = npgpt.load(path).logits(IDS)
    expected = hf_logits(ref, IDS)
    return float(np.abs(logits[..., : width or expected.shape[-1]] - expected).max())


def state_dict(ref) -> dict:
    return {k: v.detach().clone() for k, v in ref.state_dict().items()}


def save_bin(directory, ref, sd: dict | None = None, **kw) -> None:
    """What transformers' save_pretrained(safe_serialization=False) wrote (transformers 5 writes
    safetensors only): config.json + torch.save of the state dict as pytorch_model.bin."""
    directory.mkdir(parents=True, exist_ok=True)
    ref.config.save_pretrained(directory)
    torch.save(state_dict(ref) if sd is None else sd, directory / "pytorch_model.bin", **kw)


def nanogpt_checkpoint(ref, *, vocab: int = 50304, compiled: bool = False, bias: bool = True) -> dict:
    """The dict nanoGPT's train.py saves, built from a transformers model (HF Conv1D [in, out] ->
    nn.Linear [out, in]; lm_head the same tensor as wte; vocabulary padded to ``vocab`` rows)."""
    cfg = ref.config
    sd = {}
    for k, v in state_dict(ref).items():
        if k.endswith((".attn.bias", ".attn.masked_bias")) or k == "lm_head.weight":
            continue
        if k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            v = v.t().contiguous()
        if not bias and k.endswith(".bias"):
            continue
        sd[k] = v
    wte = sd["transformer.wte.weight"]
    sd["transformer.wte.weight"] = torch.cat([wte, 0.02 * torch.randn(vocab - wte.shape[0], wte.shape[1])])
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # tied: one storage, saved once
    if compiled:
        sd = {"_orig_mod." + k: v for k, v in sd.items()}
    params = [v.clone().requires_grad_() for v in sd.values()]
    opt = torch.optim.AdamW(params, lr=6e-4, betas=(0.9, 0.95))
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    model_args = dict(
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_embd=cfg.n_embd,
        block_size=cfg.n_positions,
        bias=bias,
        vocab_size=vocab,
        dropout=0.0,
    )
    config = {
        "out_dir": "out",
        "eval_interval": 2000,
        "init_from": "scratch",
        "learning_rate": 6e-4,
        "decay_lr": True,
        "dtype": "bfloat16",
        "compile": compiled,
        "weight_decay": 0.1,
    }
    return {
        "model": sd,
        "optimizer": opt.state_dict(),
        "model_args": model_args,
        "iter_num": 5000,
        "best_val_loss": torch.tensor(2.85),
        "config": config,
    }
