"""Write tests/fixtures/transformers4_bin*/: a tiny random GPT-2 saved as ``pytorch_model.bin`` by transformers 4.

transformers 5 writes safetensors only, so the pickled ``pytorch_model.bin`` that most GPT-2
fine-tunes on the Hub were published as can only come from transformers 4. npgpt reads it
without torch (npgpt/formats/torch_pickle.py); this fixture is the ground truth. Run it with
transformers 4 beside the test environment's torch:

    pip install --no-deps --target /tmp/tf4 transformers==4.46.3 huggingface_hub==0.26.5 tokenizers==0.20.3
    PYTHONPATH=/tmp/tf4 python scripts/make_transformers4_fixture.py

It writes ``save_pretrained(d, safe_serialization=False)`` once whole (``transformers4_bin``) and
once split into shards with ``pytorch_model.bin.index.json`` (``transformers4_bin_sharded``), and
``reference.npz``: token ids and transformers 4's logits for them. Rerunning rewrites the same
files (fixed seed).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
IDS = np.array([[5, 17, 80, 3, 95, 41, 0]])


def main() -> None:
    if not transformers.__version__.startswith("4."):
        raise SystemExit(f"needs transformers 4 (pytorch_model.bin writer); found {transformers.__version__}")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=96, n_positions=16, n_embd=24, n_head=3, n_layer=2)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # every gain and bias away from its initial 1 or 0, so each one matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    for name, kw in [("transformers4_bin", {}), ("transformers4_bin_sharded", {"max_shard_size": "20KB"})]:
        shutil.rmtree(OUT / name, ignore_errors=True)
        model.save_pretrained(OUT / name, safe_serialization=False, **kw)
    with torch.no_grad():
        logits = model(torch.tensor(IDS)).logits.numpy()
    np.savez(
        OUT / "transformers4_bin" / "reference.npz",
        ids=IDS,
        logits=logits,
        transformers_version=np.array(transformers.__version__),
    )
    print(f"wrote {OUT}/transformers4_bin*/ with transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
