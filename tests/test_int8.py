"""8-bit weights (``dtype="int8"``): close to float32, cache == full forward, end to end, on both backends.

``torch``: per-output-channel codes, PyTorch's kernels (npgpt/int8.py); ``numpy``: llama.cpp's Q8_0
blocks, ONNX Runtime's kernel (npgpt/q8_0.py; its scheme is tested in tests/test_q8_0.py).
Small odd shapes (3 heads, width 48: not a multiple of Q8_0's 32-value blocks); the bounds come
from the schemes: codes are within half a step (``max|w| / 254`` of a channel or a block) of the
weight, and the activations enter the kernel in bfloat16 (torch) or int8 per block (ONNX Runtime).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

from npgpt.api import GPT2
from npgpt.backends import WEIGHT_DTYPES
from npgpt.config import GPT2Config
from npgpt.errors import NpgptError
from npgpt.formats import save_checkpoint
from npgpt.params import init_params

ODD = GPT2Config(n_vocab=50257, n_ctx=64, n_embd=48, n_head=3, n_layer=2)


@pytest.fixture(scope="module")
def params() -> dict:
    return init_params(ODD, seed=3)


INT8_BACKENDS = {"numpy": "onnxruntime", "torch": "torch"}  # backend -> the library its int8 kernel needs


@pytest.fixture(scope="module", params=list(INT8_BACKENDS))
def pair(params, request) -> tuple[GPT2, GPT2]:
    pytest.importorskip(INT8_BACKENDS[request.param])
    return GPT2(ODD, params), GPT2(ODD, params, backend=request.param, dtype="int8")


def test_quantize_is_symmetric_per_output_channel():
    torch = pytest.importorskip("torch")
    from npgpt.int8 import quantize

    w = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [2.0, 1.0, -0.01]])  # [out, in]
    codes, scales = quantize(w)
    assert codes.dtype == torch.int8 and scales.dtype == torch.float32
    torch.testing.assert_close(scales, torch.tensor([1.0 / 127, 1.0, 2.0 / 127]))  # zero row: scale 1
    assert codes.tolist() == [[64, -127, 32], [0, 0, 0], [127, 64, -1]]  # round(w / s), ties to even
    step = scales[:, None] / 2
    assert bool(((codes * scales[:, None] - w).abs() <= step + 1e-7).all())


def test_int8_kernel_choice_keeps_to_each_kernels_limits():
    """On the GPU machine torch._int_mm refused 16 rows or fewer and widths that are not a multiple
    of 8 (the 50257-token head): there those shapes pad rows or take the weight-only kernel."""
    pytest.importorskip("torch")
    from npgpt.int8 import product_kernel

    assert product_kernel(1, 768, 50257, "cpu") == product_kernel(1, 768, 50257, "cuda") == "weight-only"
    assert product_kernel(5, 768, 3072, "cuda") == "int8 x int8"  # rows padded to 17
    assert product_kernel(32, 768, 50257, "cuda") == "weight-only"  # CUDA's weight-only kernel takes any shape
    assert product_kernel(32, 768, 50257, "cpu") == "int8 x int8"
    assert product_kernel(32, 100, 48, "cuda") == "weight-only" and product_kernel(1, 100, 48, "cpu") == "int8 x int8"
    assert product_kernel(3, 1, 48, "cpu") == "widened"


def test_int8_padded_rows_and_widened_products_equal_the_plain_ones(monkeypatch):
    """The two ways round a kernel's limits, run on the CPU: rows padded with zeros give each real row
    the product it has alone, and the widened product is the float32 product of the dequantized matrix."""
    torch = pytest.importorskip("torch")
    import npgpt.int8 as int8

    rng = np.random.default_rng(1)
    w = torch.from_numpy(rng.standard_normal((48, 40), dtype=np.float32))  # [in, out]: 48 is no multiple of 32
    m = int8.Int8Matrix.from_float(w)
    x = torch.from_numpy(rng.standard_normal((5, 48), dtype=np.float32))
    plain = x @ m
    monkeypatch.setitem(int8.INT_MM_MIN_ROWS, "cpu", 17)
    torch.testing.assert_close(x @ m, plain, atol=0, rtol=0)
    monkeypatch.setattr(int8, "product_kernel", lambda *a: "widened")
    torch.testing.assert_close(x @ m, x @ (m.codes.T.to(torch.float32) * m.scales), atol=0, rtol=0)
    assert float((x @ m - x @ w).abs().max()) <= 0.05 * float((x @ w).abs().max())


def test_int8_matrix_product_and_table_rows():
    torch = pytest.importorskip("torch")
    from npgpt.int8 import WEIGHT_ONLY_ROWS, Int8Matrix

    rng = np.random.default_rng(0)
    w = torch.from_numpy(rng.standard_normal((48, 144), dtype=np.float32))  # [in, out]
    m = Int8Matrix.from_float(w)
    assert m.shape == (48, 144) and m.mT.shape == (144, 48) and m.nbytes == 48 * 144 + 4 * 144
    x = torch.from_numpy(rng.standard_normal((5, 48), dtype=np.float32))
    w_step = w.abs().amax(0) / 254  # [out]: half a step of the weights' codes
    for rows in (1, 5):  # 1 row: the weight-only kernel (bfloat16 x); 5: x quantized per row too
        xr = x[:rows]
        exact, got = xr @ w, xr @ m
        assert got.dtype == torch.float32 and got.shape == (rows, 144)
        x_err = 2**-8 * xr.abs() if rows <= WEIGHT_ONLY_ROWS else xr.abs().amax(1, keepdim=True) / 254 * (xr != 0)
        bound = xr.abs() @ w_step[None, :].expand(48, -1) + x_err @ w.abs() + 1e-5  # [rows, out]
        assert 0 < float((got - exact).abs().max()) and bool(((got - exact).abs() <= bound).all())
    rows = m.mT[torch.tensor([3, 0, 3]), :]  # the table orientation: rows of w.T, widened
    assert rows.dtype == torch.float32
    torch.testing.assert_close(rows, w.T[[3, 0, 3]], atol=float(w.abs().max()) / 254 + 1e-6, rtol=0)
    with pytest.raises(TypeError, match="multiplies"):
        x @ m.mT  # the table orientation is for lookups only
    with pytest.raises(TypeError, match="index an int8 matrix as a table"):
        m[torch.tensor([0])]
    with pytest.raises(TypeError):
        torch.exp(m)


def test_int8_logits_within_bound_of_float32(pair):
    f32, i8 = pair
    p = i8.params
    for w in (
        p["wte"],
        p["blocks"][0]["attn"]["c_attn"]["w"],
        p["blocks"][0]["attn"]["c_proj"]["w"],
        p["blocks"][-1]["mlp"]["c_fc"]["w"],
        p["blocks"][-1]["mlp"]["c_proj"]["w"],
    ):
        assert str(w.dtype).endswith("int8")  # what model.matmul dispatches on
        assert w.nbytes < 2 * w.shape[0] * w.shape[1]  # a byte a weight + scales, padded to blocks: not 16-bit
    for a in (p["wpe"], p["ln_f"]["g"], p["blocks"][0]["attn"]["c_attn"]["b"]):
        assert str(a.dtype).endswith("float32")

    ids = np.random.default_rng(0).integers(0, ODD.n_vocab, (2, 24))
    exact, got = f32.logits(ids), i8.logits(ids)
    assert got.dtype == np.float32 and got.shape == exact.shape
    err = float(np.abs(got - exact).max())
    # Stated bound: 2 % of the largest logit (measured: ~0.5 %); and not bit-equal (really int8).
    assert 0 < err <= 0.02 * float(np.abs(exact).max())
    # the distribution barely moves: next-token cross-entropy within 0.01 nats of float32

    def ce(logits: np.ndarray) -> float:
        lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        return float((lse[:, :-1] - np.take_along_axis(logits[:, :-1], ids[:, 1:, None], -1)[..., 0]).mean())

    assert abs(ce(got) - ce(exact)) < 0.01


@pytest.mark.parametrize("n_embd, n_inner", [(64, 100), (64, 1), (40, 36), (72, None)])
@pytest.mark.parametrize("backend", list(INT8_BACKENDS))
def test_int8_on_input_widths_that_are_not_a_multiple_of_32(backend, n_embd, n_inner):
    """Input widths of 100, 1, 40, 36 and 72 (n_inner=100 is mlp.c_proj's): PyTorch's weight-only int8
    kernel returned garbage or crashed the process on such widths (it reads them in steps of 16 or 32),
    and its int8 x int8 one is wrong at width 1; every row count stays within the int8 bound of float32."""
    import dataclasses

    pytest.importorskip(INT8_BACKENDS[backend])
    config = dataclasses.replace(ODD, n_embd=n_embd, n_head=4, n_inner=n_inner)
    params = init_params(config, seed=1)
    f32, i8 = GPT2(config, params), GPT2(config, params, backend=backend, dtype="int8")
    for T in (1, 3, 9):  # the weight-only kernel's rows (<= 4) and the int8 x int8 kernel's
        ids = np.arange(T)[None] * 7
        exact, got = f32.logits(ids), i8.logits(ids)
        assert np.isfinite(got).all() and 0 < np.abs(got - exact).max() <= 0.02 * np.abs(exact).max()


def test_int8_cache_path_equals_full_forward(pair):
    _, i8 = pair
    prompt = [464, 3290, 318, 257]
    got = i8.completions([prompt], max_new_tokens=8, temperature=0, logprobs=1)[0]
    full = i8.logits(np.array([prompt + got.tokens[:-1]]))[0, len(prompt) - 1 :]
    lp = full - full.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    assert got.tokens == full.argmax(-1).tolist()
    # The steps run one row (weight-only kernel), the full pass many (activations to int8 as well):
    # both paths are int8, to within the rounding of the activations.
    np.testing.assert_allclose(got.token_logprobs, lp[np.arange(8), got.tokens], atol=2e-2)


@pytest.mark.parametrize("backend", list(INT8_BACKENDS))
def test_int8_through_load_and_the_server(params, tmp_path, backend):
    import httpx

    import npgpt
    from npgpt.server import background_server, create_app

    pytest.importorskip(INT8_BACKENDS[backend])
    path = save_checkpoint(tmp_path / "odd.safetensors", ODD, params)
    model = npgpt.load(path, backend=backend, dtype="int8")
    assert model.dtype == "int8" and "int8" in repr(model)
    text = model.generate("In the beginning", max_new_tokens=6, temperature=0)
    assert isinstance(text, str) and text
    streamed = "".join(model.stream("In the beginning", max_new_tokens=6, temperature=0))
    assert streamed == text
    with background_server(create_app({"odd": model}, max_batch=4)) as url:
        r = httpx.post(
            url + "/v1/completions", json={"prompt": "In the beginning", "max_tokens": 6, "temperature": 0}, timeout=60
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == text
        batch = httpx.post(
            url + "/v1/completions",
            json={"prompt": ["In the beginning", "And"], "max_tokens": 4, "temperature": 0},
            timeout=60,
        )
        assert batch.status_code == 200 and len(batch.json()["choices"]) == 2


def test_int8_on_a_backend_without_an_int8_kernel_is_a_clear_error(params):
    pytest.importorskip("jax")
    assert "int8" in WEIGHT_DTYPES
    with pytest.raises(
        NpgptError,
        match=r"^backend 'jax' has no fast int8 matrix product .*use backend='numpy' or backend='torch' "
        r"for dtype='int8'$",
    ):
        GPT2(ODD, params, backend="jax", dtype="int8")


def test_cli_int8_greedy_equals_float32_on_the_bundled_model():
    """The issue's accuracy goal as a test: the README prompt, 20 greedy tokens, as float32."""
    args = ("generate", "And God said", "--max-new-tokens", "20", "--temperature", "0", "--no-echo")
    reference = run_cli(*args)
    assert len(reference.stdout) > 20
    for backend in INT8_BACKENDS:
        r = run_cli(*args, "--backend", backend, "--dtype", "int8")
        assert r.returncode == 0, r.stderr
        assert r.stdout == reference.stdout, backend
