"""Shared fixtures: random-init models of several shapes, and the same weights in Hugging Face."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npgpt.api import GPT2
from npgpt.config import PRESETS, GPT2Config
from npgpt.formats import hf
from npgpt.params import flatten, init_params, unflatten

# Full GPT-2 vocabulary so the real tokenizer can be used with every test model.
CONFIGS = {
    "tiny": GPT2Config(n_ctx=128, n_embd=32, n_head=2, n_layer=2),
    "odd": GPT2Config(n_ctx=96, n_embd=48, n_head=3, n_layer=5),
    "124M": PRESETS["124M"],
}


def random_params(config: GPT2Config, seed: int = 0) -> dict:
    """GPT-2-shaped random weights with non-trivial gains and biases, so every tensor matters."""
    params = init_params(config, seed=seed)
    rng = np.random.default_rng(seed + 1000)
    flat = flatten(params)
    for name, arr in flat.items():
        if name.endswith(".g"):
            flat[name] = (1.0 + 0.1 * rng.standard_normal(arr.shape)).astype(np.float32)
        elif name.endswith(".b"):
            flat[name] = (0.02 * rng.standard_normal(arr.shape)).astype(np.float32)
    return unflatten(flat, config)


@functools.cache
def model_pair(name: str, tmp_root: str) -> tuple[GPT2, object]:
    """(npgpt model, HF GPT2LMHeadModel) with identical random weights; cached per session."""
    import torch
    from transformers import GPT2LMHeadModel

    config = CONFIGS[name]
    params = random_params(config, seed=len(name))
    path = Path(tmp_root) / f"hf-{name}"
    hf.save(path, config, params)
    torch.manual_seed(0)
    ref = GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    return GPT2(config, params, source=str(path)), ref


@pytest.fixture(scope="session")
def hf_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="session")
def pair(hf_root: str):
    """Call ``pair(name)`` for a cached (npgpt model, HF model) of CONFIGS[name]."""
    return lambda name: model_pair(name, hf_root)


def hf_logits(ref, ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
    import torch

    with torch.no_grad():
        kw = {}
        if attention_mask is not None:
            mask = torch.tensor(attention_mask)
            kw = {"attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
        return ref(torch.tensor(ids), **kw).logits.float().numpy()


# npgpt bench at test scale: short prompts, a few tokens, a small bandwidth probe (tests read these figures)
SMALL_BENCH = ("--prompt-len", "32", "--short-prompt", "8", "--new-tokens", "4", "--bandwidth-mib", "64")


def child_json(script: str, *args: str, threads: int = 2) -> dict:
    """Run ``script`` in a fresh interpreter (for settings that are process-wide) on ``threads``
    threads; the JSON object it prints last. ONNX Runtime's "EP Error" banner must not reach stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "EP Error" not in r.stdout
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_cli(*args: str, env: dict | None = None, timeout: float = 120, input: str | None = None):
    """Run the real ``npgpt`` entry point in a subprocess."""
    exe = Path(sys.executable).parent / "npgpt"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "npgpt.cli"]
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    # no input: an empty standard input, not the test runner's (a pipe that never closes would be read forever)
    stdin = subprocess.DEVNULL if input is None else None
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=full_env, timeout=timeout, input=input, stdin=stdin
    )


@pytest.fixture(scope="session")
def tiktoken_gpt2(tmp_path_factory: pytest.TempPathFactory):
    """tiktoken's own ``gpt2`` encoding, built offline: npgpt's vendored ``encoder.json`` and
    ``vocab.bpe`` are OpenAI's files (tiktoken checks their sha256), placed in a tiktoken cache."""
    import hashlib

    import tiktoken

    from npgpt.tokenizer import default_files

    cache = tmp_path_factory.mktemp("tiktoken")
    encoder_json, vocab_bpe = default_files()
    for name, path in [("encoder.json", encoder_json), ("vocab.bpe", vocab_bpe)]:
        url = f"https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/{name}"
        (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(path.read_bytes())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        return tiktoken.get_encoding("gpt2")


@contextlib.contextmanager
def small_disk(where: Path, size: str, read_only: bool = False):
    """A tmpfs of ``size`` (e.g. "4m", "300k") mounted at ``where``, for disk-full tests (root can mount
    one), ``read_only`` for read-only ones; the test is skipped, with the reason printed, where mounting
    is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        pytest.skip(f"mounting a tmpfs is not allowed here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def resident_kb(path: Path) -> int:
    """Kilobytes of ``path``'s memory mappings resident in this process (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isdigit() or line[:1] in "abcdef" and "-" in line.split()[0]:  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def start_server(model: str, *flags: str, log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """``npgpt serve --model MODEL FLAGS`` in a subprocess on a free port, one BLAS thread (on a shared 2-core
    machine, BLAS threads spinning against other processes make timings noise); returns (process, base URL)
    once ``/health`` answers 200. Its output goes to the file ``log``, else to a pipe (``proc.communicate()``).
    Fails, with that output, if the server exits or is not up within 120 s. The caller stops it."""
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "npgpt.cli", "serve", "--model", model, "--port", str(port), *flags]
    if log is None:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    else:
        with open(log, "w") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        if proc.poll() is not None or time.time() > deadline:
            output = proc.communicate()[0] if log is None else log.read_text()
            pytest.fail(f"npgpt serve did not come up:\n{output}")
        try:
            if httpx.get(base + "/health").status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.1)


def model_files(tmp_path: Path) -> dict[str, Path]:
    """A model file of each kind npgpt reads, under names a user may give as data."""
    from npgpt.formats import save_checkpoint
    from npgpt.params import init_params

    config = GPT2Config(n_ctx=8, n_embd=8, n_head=2, n_layer=1, n_vocab=64)
    params = init_params(config)
    fixtures = Path(__file__).parent / "fixtures"
    files = {
        "a safetensors model file": save_checkpoint(tmp_path / "model.safetensors", config, params, fmt="npgpt"),
        "an llm.c model file": save_checkpoint(tmp_path / "gpt2_124M.bin", config, params, fmt="llmc"),
        "a PyTorch checkpoint (torch.save)": fixtures / "nanogpt_nobias" / "ckpt.pt",
    }
    named_bin = tmp_path / "model.bin"  # npgpt's own file under a token file's suffix: read as ids, 65535 and all
    named_bin.write_bytes(files["a safetensors model file"].read_bytes())
    torch_bin = tmp_path / "pytorch_model.bin"
    torch_bin.write_bytes((fixtures / "transformers4_bin" / "pytorch_model.bin").read_bytes() + b"\0")  # even size
    return {**files, "a safetensors model file ": named_bin, "a PyTorch checkpoint (torch.save) ": torch_bin}
