"""npgpt/backends.py: one model file, the same logits and tokens on every array library."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest
from conftest import hf_logits

from npgpt.api import GPT2
from npgpt.backends import get_backend
from npgpt.errors import NpgptError

PROMPTS = ["The quick brown fox", "Hi"]
HAS_GPU = shutil.which("nvidia-smi") is not None


def _gpu_backend(name: str) -> None:
    if not HAS_GPU:
        pytest.skip(f"backend {name!r} runs only on an NVIDIA GPU; this machine has none")
    if importlib.util.find_spec(name) is None:
        pytest.fail(f"a GPU is present but {name} is not installed")


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch", "cupy", "cupynumeric"])
def test_logits_and_greedy_tokens_match_hugging_face(pair, backend):
    if backend in ("cupy", "cupynumeric"):
        _gpu_backend(backend)
    base, ref = pair("odd")
    model = GPT2(base.config, base.params, backend=backend)
    ids = np.array([base.tokenizer.encode(PROMPTS[0])])
    logits = model.logits(ids)
    assert logits.dtype == np.float32
    assert np.abs(logits - hf_logits(ref, ids)).max() <= 1e-4
    kw = dict(max_new_tokens=12, temperature=0, stop_at_eot=False)
    assert model.generate(PROMPTS, **kw) == base.generate(PROMPTS, **kw)


def test_jax_compiles_prefill_and_decode_once_across_requests(pair):
    pytest.importorskip("jax")
    base, _ = pair("tiny")
    model = GPT2(base.config, base.params, backend="jax")
    programs = model.backend.forward._cache_size  # jit's cache is shared by every jit of gpt2
    before = programs()
    model.generate("Hello", max_new_tokens=8, temperature=0)
    assert programs() - before <= 2  # one prefill program, one decode-step program
    before = programs()
    for prompt in ["Hello there", "Hello there, general", "One two three four five"]:
        model.generate(prompt, max_new_tokens=8, temperature=0)
    assert programs() == before  # other lengths reuse them


def test_missing_backend_names_the_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_jax(name, *args, **kwargs):  # noqa: ANN001, ANN202
        if name == "jax" or name.startswith("jax."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jax)
    monkeypatch.setattr("importlib.import_module", lambda name: no_jax(name))
    with pytest.raises(NpgptError, match=r"pip install 'npgpt\[jax\]'"):
        get_backend("jax")
    with pytest.raises(NpgptError, match="choose one of"):
        get_backend("tensorflow")
