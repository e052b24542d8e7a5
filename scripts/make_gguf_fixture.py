"""Write tests/fixtures/gguf_tiny.tar.xz: a tiny random GPT-2 converted to GGUF by llama.cpp's OWN converter.

npgpt reads GGUF through the ``gguf`` package; this fixture is the ground truth that reader is tested
against. llama.cpp is not pip-installable as a library, but its sources ship in the PyPI sdist of
``llama-cpp-python``; this script downloads that sdist with pip (nothing of llama.cpp is committed), builds
a seeded random ``transformers.GPT2LMHeadModel`` with GPT-2's real tokenizer (the converter recognises the
tokenizer by hashing its output, so the vocabulary cannot shrink), runs
``vendor/llama.cpp/convert_hf_to_gguf.py --outtype f32|f16|bf16|q8_0`` with llama.cpp's vendored
``gguf-py``, and stores, in one solid xz archive:

- ``tiny-f32.gguf``, ``tiny-f16.gguf``, ``tiny-bf16.gguf``, ``tiny-q8_0.gguf``: the converter's output, byte for byte;
- ``hf/``: the Hugging Face original (``config.json``, ``model.safetensors``, ``vocab.json``, ``merges.txt``);
- ``reference.npz``: ``ids`` [1, T] and transformers' float32 ``logits`` [1, T, 50257] for them;
- ``converter.txt``: the sdist version used.

Size: the 50257-row embedding dominates (50257 x 32 float32 is 6.4 MB per file). Its rows are therefore
tiled from ``PERIOD`` random rows (row ``v`` equals row ``v % PERIOD``): still a full, valid GPT-2 whose
every logit is compared, but one whose four files and reference compress, solid, to ~1.3 MB (xz finds
the repeats, and the tokenizer that each file repeats, within its 64 MB dictionary). Every other tensor
is fully random, gains and biases included. Run from the repository root with npgpt's environment
(torch + transformers):

    python scripts/make_gguf_fixture.py [--sdist-dir DIR]

Rerunning with the same converter version rewrites the same fixture (seeded).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "gguf_tiny.tar.xz"
ASSETS = ROOT / "npgpt" / "assets"
VERSION = "0.3.36"  # llama-cpp-python sdist (vendors llama.cpp and its gguf-py)
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
# n_embd a multiple of 32 so Q8_0 quantizes every matrix (its blocks are 32 values along a row), and no
# wider: random block weights do not compress, and they are stored five times (four GGUFs + the original).
SHAPE = {"n_embd": 32, "n_head": 2, "n_layer": 2, "n_positions": 64}
PERIOD = 512  # distinct wte rows
PROMPT = "The quick brown fox jumps over the lazy dog, said GPT-2 in 2019."


def fetch_converter(sdist_dir: Path) -> Path:
    """``vendor/llama.cpp`` of the llama-cpp-python sdist, downloaded with pip into ``sdist_dir``."""
    name = f"llama_cpp_python-{VERSION}"
    tarball = sdist_dir / f"{name}.tar.gz"
    if not tarball.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={VERSION}",
                "-d",
                str(sdist_dir),
            ],
            check=True,
        )
    llama = sdist_dir / name / "vendor" / "llama.cpp"
    if not (llama / "convert_hf_to_gguf.py").exists():
        with tarfile.open(tarball) as tar:
            wanted = ("/conversion/", "/gguf-py/", "/convert_hf_to_gguf.py")
            members = [
                m
                for m in tar.getmembers()
                if m.isfile() and m.name.startswith(f"{name}/vendor/llama.cpp/") and any(w in m.name for w in wanted)
            ]
            tar.extractall(sdist_dir, members=members, filter="data")
    return llama


def make_hf_model(directory: Path) -> None:
    """A seeded random GPT2LMHeadModel + GPT-2's tokenizer, saved as transformers saves them."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50257, **SHAPE, n_ctx=SHAPE["n_positions"])
    model = GPT2LMHeadModel(config).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("wte.weight"):
                base = 0.1 * torch.randn(PERIOD, p.shape[1], generator=gen)
                p.copy_(base.repeat(-(-p.shape[0] // PERIOD), 1)[: p.shape[0]])
            elif ".ln_" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(directory)
    # HF's own gpt2 config.json carries n_ctx, which the converter reads; make sure it is there.
    cfg = json.loads((directory / "config.json").read_text())
    cfg.setdefault("n_ctx", SHAPE["n_positions"])
    (directory / "config.json").write_text(json.dumps(cfg, indent=2))
    # GPT-2's tokenizer as the hub ships it: encoder.json is its vocab.json, vocab.bpe its merges.txt. (A
    # tokenizer.json re-saved by transformers 5 encodes the converter's probe text differently, and the
    # converter then refuses it as an unknown pre-tokenizer.)
    shutil.copyfile(ASSETS / "encoder.json", directory / "vocab.json")
    shutil.copyfile(ASSETS / "vocab.bpe", directory / "merges.txt")


def reference(directory: Path) -> dict[str, np.ndarray]:
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(directory, attn_implementation="eager").eval()
    ids = np.array([AutoTokenizer.from_pretrained(directory).encode(PROMPT)], dtype=np.int64)
    ids[0, -1] = 50256  # <|endoftext|>, the largest id, exercises the last embedding row
    with torch.no_grad():
        logits = model(torch.tensor(ids)).logits.float().numpy()
    return {"ids": ids, "logits": logits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdist-dir", type=Path, default=None, help="where the sdist is (or goes); default: temp")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        llama = fetch_converter(args.sdist_dir or tmp)
        hf = tmp / "hf"
        make_hf_model(hf)
        out = tmp / "out"
        out.mkdir()
        env = {**os.environ, "PYTHONPATH": str(llama / "gguf-py"), "NO_LOCAL_GGUF": ""}
        for outtype in OUTTYPES:
            subprocess.run(
                [
                    sys.executable,
                    str(llama / "convert_hf_to_gguf.py"),
                    str(hf),
                    "--outtype",
                    outtype,
                    "--outfile",
                    str(out / f"tiny-{outtype}.gguf"),
                ],
                check=True,
                env=env,
                cwd=llama,
            )
        ref = reference(hf)
        buf = io.BytesIO()
        np.savez(buf, **ref)
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(FIXTURE, "w:xz", preset=9) as tar:
            for path in sorted(out.iterdir()):
                tar.add(path, arcname=path.name)
            for path in sorted(hf.iterdir()):
                tar.add(path, arcname=f"hf/{path.name}")
            note = f"llama-cpp-python {VERSION} vendor/llama.cpp/convert_hf_to_gguf.py\n".encode()
            for name, data in (("reference.npz", buf.getvalue()), ("converter.txt", note)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
