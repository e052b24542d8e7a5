"""npgpt/backends.py: one model file, the same logits and tokens on every array library."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys

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


def test_jax_float32_products_are_not_tensorfloat32(pair):
    """On a GPU XLA's default float32 product is TensorFloat-32 (~1e-3 off); the backend asks for
    float32 in every product of the compiled program, which the CPU's lowering shows too."""
    pytest.importorskip("jax")
    import jax.numpy as jnp

    base, _ = pair("tiny")
    model = GPT2(base.config, base.params, backend="jax")
    params = model.engine.params
    ids = jnp.asarray(np.array([[1, 2, 3]]))
    text = model.backend.forward.lower(ids, params, base.config).as_text()
    products = [line for line in text.splitlines() if "dot_general" in line]
    assert products and all("precision = [HIGHEST, HIGHEST]" in line for line in products)


def test_missing_backend_names_the_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_jax(name, *args, **kwargs):
        if name == "jax" or name.startswith("jax."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jax)
    monkeypatch.setattr("importlib.import_module", lambda name: no_jax(name))
    with pytest.raises(NpgptError, match=r"pip install 'npgpt\[jax\]'"):
        get_backend("jax")
    with pytest.raises(NpgptError, match="choose one of"):
        get_backend("tensorflow")


@pytest.mark.parametrize(
    "backend, dtype", [("torch", "float16"), ("torch", "bfloat16"), ("jax", "float16"), ("jax", "bfloat16")]
)
def test_16bit_weights_are_as_close_to_hf_float32_as_hf_own_16bit_model(pair, backend, dtype):
    import copy

    import torch

    pytest.importorskip(backend)
    base, ref = pair("odd")
    model = GPT2(base.config, base.params, backend=backend, dtype=dtype)
    p = model.params
    for w in (p["wte"], p["blocks"][0]["attn"]["c_attn"]["w"], p["blocks"][-1]["mlp"]["c_proj"]["w"]):
        assert str(w.dtype).endswith(dtype)  # stored in 16 bits: half the bytes
    assert str(p["wpe"].dtype).endswith("float32") and str(p["ln_f"]["g"].dtype).endswith("float32")

    rng = np.random.default_rng(0)
    ids = rng.integers(0, base.config.n_vocab, (2, 24))
    exact = hf_logits(ref, ids)
    ours = model.logits(ids)
    assert ours.dtype == np.float32
    theirs = hf_logits(copy.deepcopy(ref).to(getattr(torch, dtype)), ids)
    ours_err, their_err = np.abs(ours - exact).max(), np.abs(theirs - exact).max()
    assert 0 < ours_err <= their_err  # rounded weights do show, but no more than in HF's own 16-bit model
    assert ours_err <= {"float16": 2e-3, "bfloat16": 2e-2}[dtype] * np.abs(exact).max()

    # the kv cache path in 16 bits agrees with the full forward in 16 bits
    got = model.completions([ids[0, :8].tolist()], max_new_tokens=6, temperature=0, logprobs=1)[0]
    full = model.logits(np.array([ids[0, :8].tolist() + got.tokens[:-1]]))[0, 7:]
    lp = full - np.log(np.exp(full - full.max(-1, keepdims=True)).sum(-1, keepdims=True)) - full.max(-1, keepdims=True)
    assert got.tokens == full.argmax(-1).tolist()
    # The 16-bit product's output is rounded to 16 bits, so a logit may land one step either side in
    # the two paths (on the GPU machine, JAX bfloat16: exactly 2**-8 apart, one step at |logit| < 1):
    # two steps of the dtype at the largest logit.
    step = 2.0 ** (np.floor(np.log2(np.abs(full).max())) - {"float16": 10, "bfloat16": 7}[dtype])
    np.testing.assert_allclose(got.token_logprobs, lp[np.arange(6), got.tokens], atol=2 * step)


def test_numpy_refuses_16bit_weights_with_the_fix(pair):
    base, _ = pair("tiny")
    with pytest.raises(NpgptError, match="no fast float16 matrix product.*use backend='torch' for dtype='float16'"):
        GPT2(base.config, base.params, dtype="float16")
    with pytest.raises(NpgptError, match="^dtype='int4' is unknown; choose one of float32, float16"):
        GPT2(base.config, base.params, backend="torch", dtype="int4")


def test_the_api_names_its_keywords_and_the_cli_its_flags(pair):
    """The library's dtype errors said the CLI's --backend and --dtype to a Python caller; it says backend= and
    dtype=, and the CLI turns those into its flags."""
    from npgpt.cli.flags import as_flags

    base, _ = pair("tiny")
    for kwargs in ({"dtype": "float16"}, {"backend": "torch", "dtype": "int4"}):
        with pytest.raises(NpgptError) as e:
            GPT2(base.config, base.params, **kwargs)
        assert "--" not in str(e.value) and e.value.param == "dtype", str(e.value)
        assert f"--dtype {kwargs['dtype']}" in as_flags(e.value) and "dtype=" not in as_flags(e.value)
    with pytest.raises(NpgptError) as e:
        base.score("And God said, Let there be light", window=1)
    assert str(e.value).startswith("window must be") and as_flags(e.value).startswith("--window must be")


def test_a_refused_dtype_names_the_install_when_the_advised_backend_is_missing(monkeypatch):
    """Without PyTorch, asking NumPy for float16 says both what to use and how to get it: one step, not two."""
    from npgpt import backends
    from npgpt.config import GPT2Config
    from npgpt.params import init_params

    params = init_params(GPT2Config(n_vocab=64, n_ctx=16, n_embd=32, n_head=2, n_layer=1), seed=0)
    monkeypatch.setattr(backends, "_installed", lambda module: module != "torch")
    with pytest.raises(NpgptError) as err:
        backends.get_backend("numpy").put_params(params, "float16")
    assert str(err.value).endswith("use backend='torch' for dtype='float16' (pip install 'npgpt[torch]')")
    monkeypatch.setattr(backends, "_installed", lambda module: True)
    with pytest.raises(NpgptError) as err:
        backends.get_backend("numpy").put_params(params, "float16")
    assert str(err.value).endswith("use backend='torch' for dtype='float16'")


COLLAPSE_CHILD = r"""
import ctypes, json, sys
from npgpt.backends import collapse_huge_pages
buf = bytearray(32 << 20)  # malloc'd: 4 KB pages, as ONNX Runtime's prepacked weights
for i in range(0, len(buf), 4096):
    buf[i] = i // 4096 % 251
start = ctypes.addressof(ctypes.c_char.from_buffer(buf))

def huge_kb():  # AnonHugePages of the mappings holding buf (madvise may have split its mapping)
    inside, total = False, 0
    for line in open("/proc/self/smaps"):
        if "-" in line.split(" ", 1)[0]:
            a, b = (int(x, 16) for x in line.split()[0].split("-"))
            inside = a < start + len(buf) and start < b
        elif inside and line.startswith("AnonHugePages:"):
            total += int(line.split()[1])
    return total

before = huge_kb()
advised = collapse_huge_pages()
intact = all(buf[i] == i // 4096 % 251 for i in range(0, len(buf), 4096))
print(json.dumps({"before": before, "after": huge_kb(), "advised": advised, "intact": intact}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="transparent huge pages are Linux's")
def test_collapse_huge_pages_moves_malloc_memory_to_2mb_pages_and_changes_no_data():
    """What `npgpt serve`/`chat` call once loaded: the int8 kernel's malloc'd weights end up in 2 MB
    pages (where this kernel and its settings allow it) and not one byte changes."""
    import json
    import platform
    import subprocess

    r = subprocess.run([sys.executable, "-c", COLLAPSE_CHILD], capture_output=True, text=True, check=True)
    out = json.loads(r.stdout)
    assert out["intact"] and out["advised"] >= 30 << 20  # the 32 MB buffer's whole 2 MB pages at least
    mode = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    kernel = tuple(int(x) for x in platform.release().split(".")[:2] if x.isdigit())
    if "[never]" not in mode and kernel >= (6, 1):  # MADV_COLLAPSE exists and huge pages are allowed
        assert out["before"] == 0 and out["after"] >= 28 << 10  # at least 14 of its 2 MB pages


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_token_ids_of_any_integer_dtype_give_the_same_logits(pair, backend: str):
    """Ids as int8, uint8, uint16, ... (a NumPy array or a torch tensor) were an IndexError on torch
    (uint8 ids were even read as a boolean mask) and an OverflowError on JAX; they are now read
    as int64, everywhere the model takes ids (logits, run_with_cache, the logit lens)."""
    torch = pytest.importorskip(backend)
    from npgpt.lens import logit_lens

    ref, _ = pair("tiny")
    model = GPT2(ref.config, ref.params, backend=backend)
    ids = np.array([[7, 100, 120, 3, 9]])
    expected = ref.logits(ids)
    for dtype in (np.int8, np.uint8, np.int16, np.uint16, np.uint32, np.uint64):
        np.testing.assert_allclose(model.logits(ids.astype(dtype)), expected, atol=1e-4, err_msg=dtype.__name__)
        np.testing.assert_allclose(model.run_with_cache(ids.astype(dtype), names_filter=[])[0], expected, atol=1e-4)
        np.testing.assert_array_equal(logit_lens(model, ids[0].astype(dtype)).top_ids[-1], expected[0].argmax(-1))
    if backend == "torch":
        np.testing.assert_allclose(model.logits(torch.tensor(ids, dtype=torch.uint8)), expected, atol=1e-4)


@pytest.mark.parametrize(
    ("backend", "says"),
    [
        ("cuda", "npgpt's backends are array libraries, not devices: 'numpy' runs on the CPU; 'torch' on a CUDA GPU"),
        ("cuda:0", "not devices"),
        ("cpu", "not devices"),
        ("GPU", "not devices"),
        ("mps", "not devices"),
        ("NumPy", "('NumPy' is 'numpy' here)"),
        ("Torch", "('Torch' is 'torch' here)"),
        ("pytorch", "('pytorch' is 'torch' here)"),
        ("np", "('np' is 'numpy' here)"),
        ("numpy ", "('numpy ' is 'numpy' here)"),
        ("torch:cuda", "('torch:cuda' is 'torch' here, which picks its device itself)"),
    ],
)
def test_a_backend_spelt_otherwise_or_a_device_name_gets_npgpts_name(backend, says):
    """npgpt.load(backend="cuda") (transformers' and PyTorch's device string) and backend="NumPy" or "pytorch" said
    only "backend='cuda' is unknown; choose one of numpy, jax, torch, ..." (dtype="fp16" already got "(fp16 is
    float16 here)"): the device name now gets which backend runs where, another spelling npgpt's name. Still refused,
    as npgpt's dtype spellings are; an unrelated name gets no hint."""
    with pytest.raises(NpgptError, match=re.escape(f"backend={backend!r} is unknown; choose one of numpy")) as e:
        get_backend(backend)
    assert says in str(e.value) and "\n" not in str(e.value) and e.value.param == "backend"
    with pytest.raises(NpgptError) as e:
        get_backend("foo")
    assert str(e.value) == "backend='foo' is unknown; choose one of numpy, jax, torch, cupy, cupynumeric"


@pytest.mark.parametrize(
    ("dtype", "name"),
    [("torch.float16", "float16"), ("torch.half", "float16"), ("np.float32", "float32"), ("jnp.bfloat16", "bfloat16")],
)
def test_a_librarys_dtype_as_text_gets_npgpts_name(dtype, name):
    """dtype=str(torch.float16), "torch.float16" (as a config or a command line writes a torch dtype) said only
    "dtype='torch.float16' is unknown; choose one of float32, ..." where "fp16" and "FLOAT16" got "(fp16 is float16
    here)"; a library's prefix is now read past for the hint too. The dtype objects themselves are taken."""
    from npgpt.backends import check_dtype

    with pytest.raises(NpgptError, match=re.escape(f"dtype='{dtype}' is unknown; choose one of float32")) as e:
        check_dtype(dtype)
    assert str(e.value).endswith(f"({dtype} is {name} here)"), e.value
    with pytest.raises(NpgptError) as e:
        check_dtype("torch.float64")
    assert str(e.value) == "dtype='torch.float64' is unknown; choose one of float32, float16, bfloat16, int8"


def test_a_librarys_out_of_memory_is_one_line_naming_the_rows_on_every_backend():
    """Only NumPy's MemoryError was answered ("out of memory running B rows x T tokens ...; run fewer rows"): PyTorch's
    (its CPU allocator's RuntimeError "can't allocate memory", a GPU's torch.OutOfMemoryError) and JAX's
    (RESOURCE_EXHAUSTED) came out as the library's own traceback from generate, logits and the kv cache. Each backend
    now says which of its errors is out of memory; any other error passes through unchanged."""
    import dataclasses

    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    from npgpt.config import GPT2Config
    from npgpt.params import init_params

    config = GPT2Config(n_ctx=16, n_embd=8, n_head=2, n_layer=1)
    model = GPT2(config, init_params(config, seed=0), backend="torch")
    cpu = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
        "allocate 102926336000 bytes. Error code 12 (Cannot allocate memory)"
    )
    gpu = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def failing(error: BaseException):
        def fail(*args, **kwargs):
            raise error

        return dataclasses.replace(get_backend("torch"), forward=fail)

    for error in (cpu, gpu, MemoryError("Unable to allocate 95.9 GiB")):
        model.engine.backend = failing(error)
        with pytest.raises(NpgptError, match=r"^out of memory running 1 rows x 2 tokens \(.+\); run fewer rows"):
            model.logits([[1, 2]])
        with pytest.raises(NpgptError, match=r"^out of memory running 2 rows x 1 tokens"):
            model.generate([[1], [2]], max_new_tokens=1)
    model.engine.backend = failing(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        model.logits([[1, 2]])
    exhausted = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1024 bytes.")
    assert get_backend("jax").out_of_memory(exhausted)
    assert not get_backend("jax").out_of_memory(jax.errors.JaxRuntimeError("INVALID_ARGUMENT: shapes"))
    assert get_backend("numpy").out_of_memory(MemoryError()) and not get_backend("numpy").out_of_memory(cpu)
