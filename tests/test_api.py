"""npgpt/api.py and the package: cheap import, load(), the model object's contract."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import CONFIGS, random_params

import npgpt
from npgpt.errors import NpgptError
from npgpt.formats import npgpt_format


def test_import_is_light():
    """``import npgpt`` loads no framework and none of its own modules beyond the package (they load on
    first use); how long it takes is a figure of ``npgpt bench`` (``import_s``), not a test threshold."""
    code = (
        "import sys; import npgpt; "
        "print(*[m for m in ('torch', 'jax', 'tensorflow', 'transformers', 'numpy') if m in sys.modules], "
        "*sorted(m for m in sys.modules if m.startswith('npgpt.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == []  # no framework, not even NumPy, and no npgpt submodule


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "odd.safetensors"
    npgpt_format.save(path, CONFIGS["odd"], random_params(CONFIGS["odd"]))
    return path


@pytest.fixture(scope="module")
def model(model_path):
    return npgpt.load(model_path)


def test_load_and_contract(model):
    assert model.config == CONFIGS["odd"]
    assert model.tokenizer.encode("Hello world") == [15496, 995]
    logits = model.logits(np.array([[15496, 995]]))
    assert logits.dtype == np.float32 and logits.shape == (1, 2, CONFIGS["odd"].n_vocab)
    assert isinstance(model.generate("Hi", max_new_tokens=3), str)
    out = model.generate(["Hi", "there"], max_new_tokens=3)
    assert isinstance(out, list) and len(out) == 2 and all(isinstance(t, str) for t in out)


def test_logits_rejects_bad_ids(model):
    with pytest.raises(NpgptError, match="vocab"):
        model.logits([[CONFIGS["odd"].n_vocab]])
    with pytest.raises(NpgptError, match="context"):
        model.logits(np.zeros((1, CONFIGS["odd"].n_ctx + 1), dtype=np.int64))
    with pytest.raises(NpgptError, match="integers"):
        model.logits(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(NpgptError, match="different lengths.*attention_mask"):
        model.logits([[1, 2], [3]])  # ragged rows: NumPy's ValueError before
    with pytest.raises(NpgptError, match="empty"):
        model.logits([[]])
    with pytest.raises(NpgptError, match="tokenizer.encode"):
        model.logits("Hello")  # text where ids belong: "got <U5 ()" before


@pytest.mark.parametrize(
    "mask, says",
    [
        ([[2, 1]], "got 2"),  # read as a token, silently, as were the three after it
        ([[0.5, 1.0]], "got 0.5"),
        ([["a", "b"]], "got <U1"),
        ([[None, 1]], "got object"),
        ([[1], [1, 1]], "rows of different lengths"),  # NumPy's ValueError before
        ([[1, 1, 1]], r"the shape of ids \(1, 2\), got \(1, 3\)"),
    ],
)
def test_an_attention_mask_that_is_not_ones_and_zeros_is_refused(model, mask, says):
    """Every value was cast to bool: 2, 0.5, NaN and "a" read as a token, None as padding."""
    for run in (model.logits, model.run_with_cache):
        with pytest.raises(NpgptError, match=f"attention_mask must be .*{says}"):
            run([[1, 2]], attention_mask=mask)


def test_a_row_the_attention_mask_leaves_no_token_is_refused(model):
    """A row of all 0s has no key to attend to: its logits were computed, silently meaningless (TransformerLens and
    transformers each give such a row its own numbers, unsaid); every reader of a batch of ids refuses it now."""
    ids, mask = [[15496, 995, 11], [1, 2, 3]], [[1, 1, 1], [0, 0, 0]]
    for run in (model.logits, model, model.run_with_cache, model.run_with_hooks):
        with pytest.raises(NpgptError, match=r"attention_mask row 1 is all 0: that row holds no token") as err:
            run(ids, attention_mask=mask)
        assert err.value.param == "attention_mask"
    with pytest.raises(NpgptError, match=r"text 0 is empty, and with prepend_bos=False it has no token to run"):
        model.run_with_cache(["", "Hi there"], prepend_bos=False, padding_side="left")  # no attention_mask given
    np.testing.assert_array_equal(  # a row with one token still runs
        model.logits(ids, attention_mask=[[1, 1, 1], [0, 0, 1]])[0], model.logits(ids[:1])[0]
    )


def test_an_attention_mask_comes_as_the_ids_do(model):
    """Of booleans, integers or floats of 1 and 0, in any library's array, and [T] beside ids [T]."""
    torch = pytest.importorskip("torch")
    ids = [[15496, 995, 11]]
    want = model.logits(ids, attention_mask=[[0, 1, 1]])
    for mask in ([[False, True, True]], [[0.0, 1.0, 1.0]], torch.tensor([[0, 1, 1]]), np.array([[0, 1, 1]], np.int32)):
        np.testing.assert_array_equal(model.logits(ids, attention_mask=mask), want)
    np.testing.assert_array_equal(model.logits(ids[0], attention_mask=[0, 1, 1]), want)


def test_request_errors_name_the_parameter(model):
    n_ctx = CONFIGS["odd"].n_ctx
    with pytest.raises(NpgptError) as err:
        model.generate("Hi", max_new_tokens=n_ctx)
    assert err.value.param == "max_new_tokens"
    with pytest.raises(NpgptError) as err:
        model.generate("", max_new_tokens=2)
    assert err.value.param == "prompt"


def test_stream_and_events_refuse_at_the_call_not_at_the_first_token(model):
    """A request that cannot run raises when ``stream``/``events`` is called (before anything is printed
    by a caller that writes the prompt first), not at the first ``next()``."""
    for method in (model.stream, model.events):
        with pytest.raises(NpgptError, match="max_new_tokens"):
            method("Hello", max_new_tokens=10**6)
        with pytest.raises(NpgptError, match="temperature"):
            method("Hello", temperature=-1)


def test_unknown_backend_and_model_are_clear():
    with pytest.raises(NpgptError, match="/nonexistent"):
        npgpt.load("/nonexistent")
    from npgpt.backends import get_backend

    with pytest.raises(NpgptError, match="choose one of"):
        get_backend("tensorflow")


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ({"device": "cuda"}, "npgpt picks the device with backend="),  # transformers', torch's, nanoGPT's habit
        ({"device_map": "auto"}, "npgpt picks the device with backend="),
        ({"torch_dtype": "float16"}, "npgpt's is dtype ("),
        ({"backends": "torch"}, "did you mean 'backend'?"),
        ({"trust_remote_code": True}, "load takes name_or_path, backend, dtype, auto_rows"),
    ],
)
def test_another_librarys_load_option_is_one_line_with_npgpts_way(option, says):
    """npgpt.load(device="cuda"), as transformers' and nanoGPT's users type it, was Python's TypeError
    "load() got an unexpected keyword argument 'device'", naming no way to the GPU (the CLI's --device
    says --backend). Now NpgptError names npgpt's option, before the model is read."""
    with pytest.raises(NpgptError, match=re.escape(says)) as err:
        npgpt.load("/nonexistent", **option)  # refused before "/nonexistent: no such file"
    assert err.value.param == next(iter(option)) and "\n" not in str(err.value) and "--" not in str(err.value)


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda m: m.cuda(), "npgpt picks the device at load: npgpt.load(name, backend='torch')"),
        (lambda m: m.half(), "dtype='float16'"),
        (lambda m: m.device, "the device is the backend's, chosen at load: model.backend.name"),
        (lambda m: m.state_dict(), "the weights are model.params"),
        (lambda m: m.parameters(), "TransformerLens's are model.W_Q"),
        (lambda m: m.zero_grad(), "activation_grads"),
        (lambda m: m.pos_embed, r"model.W_pos[:T] is the position embedding"),
        (lambda m: m.all_head_labels, "f'L{l}H{h}'"),
    ],
)
def test_torch_module_habits_on_the_model_name_npgpts_way(model, call, says):
    """model.to("cuda"), model.cuda(), model.half(), model.device, model.state_dict() ..., which a PyTorch (and
    TransformerLens) user types after loading, were bare AttributeErrors ('GPT2' object has no attribute 'to'); each
    is now one line naming npgpt's way (still an AttributeError)."""
    with pytest.raises(AttributeError, match=re.escape(says)) as err:
        call(model)
    assert isinstance(err.value, NpgptError) and "\n" not in str(err.value)


def test_eval_called_by_habit_returns_the_model(model):
    """model.eval(), the line a PyTorch, transformers or TransformerLens user writes after loading (nn.Module's,
    returning the module: model = model.eval()), was refused ('npgpt's model has no eval ...; drop the call'),
    stopping the code at a call with nothing to do: npgpt's model has no training mode. It returns the model now,
    as train(False) does; train() (dropout on) is refused in one line. model.to('cpu') and model.cpu() of a NumPy
    model, where it runs already, were refused the same way; they return it, another device or dtype is one line."""
    torch = pytest.importorskip("torch")
    ids = [[15496, 995]]
    before = model.logits(ids)
    assert model.eval() is model and model.train(False) is model
    assert model.to("cpu") is model and model.cpu() is model and model.to(torch.device("cpu")) is model
    for other in ("cuda", torch.float16):
        with pytest.raises(
            NpgptError, match=r"npgpt's model does not move \(model.to\(.*npgpt picks the device at load"
        ):
            model.to(other)
    np.testing.assert_array_equal(model.logits(ids), before)
    with pytest.raises(NpgptError, match="npgpt's model has no training mode .*npgpt.train.train"):
        model.train()


@pytest.mark.parametrize(
    ("args", "kwargs", "says"),
    [
        (("gpt2",), {}, "npgpt.load('gpt2')"),  # nanoGPT's GPT.from_pretrained('gpt2'), transformers' the same
        (("openai-community/gpt2",), {"torch_dtype": "auto"}, "npgpt.load('openai-community/gpt2')"),
        ((), {}, "npgpt.load()"),
    ],
)
def test_from_pretrained_names_npgpt_load(args, kwargs, says):
    """GPT2.from_pretrained("gpt2"), the first line of a transformers or nanoGPT user, was Python's
    "type object 'GPT2' has no attribute 'from_pretrained'"; it now names the call that loads it."""
    from npgpt import GPT2

    with pytest.raises(NpgptError, match=re.escape(says)) as err:
        GPT2.from_pretrained(*args, **kwargs)
    assert "\n" not in str(err.value) and "--" not in str(err.value)


@pytest.mark.parametrize("auto_rows", [0, -2, 1.5, None])
def test_a_bad_auto_rows_is_refused_before_the_load(auto_rows):
    with pytest.raises(NpgptError, match="auto_rows must be a whole number >= 1") as err:  # a ValueError or TypeError
        npgpt.load("/nonexistent", dtype="auto", auto_rows=auto_rows)  # not "/nonexistent: no such file"
    assert err.value.param == "auto_rows"


@pytest.mark.parametrize(
    ("given", "says"), [(5, "got int"), (b"124M", "got bytes; decode the bytes first"), (["124M"], "got list")]
)
def test_load_refuses_a_name_that_is_no_text_or_path(given, says):
    """npgpt.load(5) said "'5' is not a file or a known model; available: ..." and load(b"124M") "\"b'124M'\" is not a
    file ...": the argument went through str(). It is now refused as what it is, naming what load takes."""
    with pytest.raises(NpgptError, match="^name_or_path must be a model's name or a checkpoint's path") as err:
        npgpt.load(given)
    assert str(err.value).endswith(says) and err.value.param == "name_or_path"


def _dtype_objects() -> list[tuple[str, object, str]]:
    """(backend, a library's dtype object, the name npgpt reads it as)."""
    out: list[tuple[str, object, str]] = [
        ("numpy", np.float32, "float32"),
        ("numpy", np.dtype("float32"), "float32"),
        ("numpy", np.dtype("int8"), "int8"),
    ]
    try:
        import torch

        out += [("torch", torch.bfloat16, "bfloat16"), ("torch", np.dtype("float16"), "float16")]
        out += [("torch", torch.half, "float16"), ("numpy", torch.float32, "float32")]
    except ImportError:
        pass
    try:
        import jax.numpy as jnp

        out += [("numpy", jnp.float32, "float32"), ("jax", jnp.bfloat16, "bfloat16")]
    except ImportError:
        pass
    return out


@pytest.mark.parametrize(("backend", "dtype", "name"), _dtype_objects(), ids=lambda v: str(v))
def test_load_reads_a_librarys_dtype_object_by_its_name(model_path, backend, dtype, name):
    """As transformers' torch_dtype takes torch.float16 and "float16" alike."""
    assert npgpt.load(model_path, backend=backend, dtype=dtype).dtype == name


@pytest.mark.parametrize(
    ("dtype", "says"), [(np.float64, "dtype='float64' is unknown"), (np.int32, "dtype='int32'"), (3, "dtype=3")]
)
def test_a_dtype_object_npgpt_does_not_store_is_refused_naming_the_names(dtype, says):
    with pytest.raises(NpgptError, match=re.escape(says) + ".*choose one of float32, float16, bfloat16, int8, auto"):
        npgpt.load("/nonexistent", dtype=dtype)  # before the load


def test_save_and_convert_read_a_dtype_object_by_its_name(model_path, tmp_path):
    from npgpt.formats import convert, save_checkpoint

    config = CONFIGS["odd"]
    half = save_checkpoint(tmp_path / "half.safetensors", config, random_params(config), dtype=np.float16)
    assert npgpt_format.read_safetensors(half)[0]["wte"].dtype == np.float16
    assert convert(model_path, tmp_path / "c.safetensors", dtype=np.dtype("float16")).exists()
    with pytest.raises(NpgptError, match=r"dtype='float64' cannot be written as npgpt; it stores float32, float16"):
        convert(model_path, tmp_path / "d.safetensors", dtype=np.float64)


def test_out_of_memory_for_the_cache_is_one_line(model, monkeypatch):
    import npgpt.engine

    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 3.02 GiB for an array")

    monkeypatch.setattr(npgpt.engine, "init_cache", no_memory)
    with pytest.raises(NpgptError, match=r"out of memory for the kv cache of 3 rows .*fewer rows"):
        model.generate(["Hi"] * 3, max_new_tokens=2)  # an 'internal error: MemoryError' in the CLI before


def test_out_of_memory_in_a_forward_pass_is_one_line(model, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 368. MiB for an array")

    import dataclasses

    monkeypatch.setattr(model.engine, "backend", dataclasses.replace(model.backend, forward=no_memory))
    with pytest.raises(NpgptError, match=r"out of memory running 2 rows x 3 tokens .*fewer rows"):
        model.logits([[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize(
    "prompts, match",
    [
        ([[1.5, 2]], "integer token ids"),  # int(1.5) made it id 1, silently
        (np.array([1.0, 2.0]), "integer token ids"),
        ([[True, False]], "integer token ids"),
        ([[1, "a"]], "integer token ids"),  # ValueError before
        ([[[1]]], "integer token ids"),  # TypeError before
        (None, "got NoneType"),  # TypeError before
        (5, "got int"),
    ],
)
def test_prompts_that_are_not_text_or_ids_are_refused(model, prompts, match):
    """By every method that takes prompts (generate(5) and stream(None) were TypeErrors of list())."""
    for run in (
        model.completions,
        model.generate,
        lambda p, **kw: list(model.stream(p, **kw)),
        lambda p, **kw: model.next_tokens(p),
    ):
        with pytest.raises(NpgptError, match=match) as err:
            run(prompts, max_new_tokens=2)
        assert err.value.param == "prompt"


def test_next_tokens_takes_token_ids_as_generate_does(model):
    ids = model.tokenizer.encode("Hello world")
    assert model.next_tokens(ids, k=3) == model.next_tokens(np.array(ids), k=3) == model.next_tokens("Hello world", k=3)
    with pytest.raises(NpgptError, match="next_tokens takes one prompt, got 2") as err:
        model.next_tokens(["Hello", "world"])
    assert err.value.param == "prompt"


def test_a_generator_of_prompts_still_runs_as_a_list(model):
    got = model.generate((p for p in ["Hi", "there"]), max_new_tokens=2, temperature=0)
    assert got == model.generate(["Hi", "there"], max_new_tokens=2, temperature=0)


def test_a_generator_of_prompts_runs_in_completions_events_and_next_tokens_too(model):
    """generate and stream took a generator of prompts; completions and events (the same facade's) refused it
    ("prompts must be a string, integer token ids or a list of them, got generator"), and next_tokens a generator
    of one prompt's ids. Every method that takes prompts reads a generator as the list it yields."""
    run = dict(max_new_tokens=2, temperature=0)
    want = model.completions(["Hi", "there"], **run)
    assert model.completions((p for p in ["Hi", "there"]), **run) == want
    tokens = [e.token for e in model.events(iter(["Hi", "there"]), **run)]
    assert tokens == [e.token for e in model.events(["Hi", "there"], **run)]
    assert model.next_tokens(iter([5, 6]), k=3) == model.next_tokens([5, 6], k=3)


def test_token_id_prompts_of_every_integer_kind(model):
    want = model.completions([[1, 2]], max_new_tokens=2, temperature=0)[0].tokens
    for prompts in ([1, 2], (1, 2), np.array([1, 2]), [np.array([1, 2])], [np.int64(1), np.int64(2)]):
        assert model.completions(prompts, max_new_tokens=2, temperature=0)[0].tokens == want


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_next_tokens_refuses_a_k_under_one(model, k):
    """k=-1 listed every token but the least likely (a slice [:-1]), k=0 nothing."""
    with pytest.raises(NpgptError, match="k must be an integer >= 1"):
        model.next_tokens("Hi", k=k)


def test_next_tokens_refuses_logits_that_are_not_finite():
    """A model whose weights hold a NaN (a broken checkpoint) listed NaN probabilities from next_tokens, in id order
    ([(0, '!', nan), (1, '"', nan)]), where generate and score already refused such logits (check_finite): it refuses
    them too now, naming the cause; a row of finite logits is listed as before."""
    from npgpt.api import GPT2

    config = CONFIGS["tiny"]
    params = random_params(config)
    params["wte"] = params["wte"].copy()
    params["wte"][5] = np.nan
    broken = GPT2(config, params)
    with pytest.raises(NpgptError, match="^the model's logits are not finite") as err:
        broken.next_tokens([5], k=2)
    assert "\n" not in str(err.value)
    with pytest.raises(NpgptError, match="^the model's logits are not finite"):  # the NaN column, from finite input
        broken.next_tokens([1], k=2)
    assert len(GPT2(config, random_params(config)).next_tokens([5], k=2)) == 2


@pytest.mark.parametrize(
    ("method", "options", "says"),
    [
        ("logits", {"position_ids": [[0, 1]]}, "npgpt builds the position ids from attention_mask"),  # transformers'
        ("logits", {"mask": [[1, 1]]}, "npgpt's is attention_mask"),
        ("logits", {"labels": [[1, 2]]}, "model(ids, return_type='loss')"),
        ("logits", {"atention_mask": [[1, 1]]}, "did you mean 'attention_mask'?"),
        ("score", {"windo": 4}, "did you mean 'window'?"),
        ("score", {"reduction": "sum"}, "score takes text, allow_special, window, stride"),
        ("next_tokens", {"top_k": 3}, "npgpt's is k"),
        ("next_tokens", {"top_logprobs": 3}, "npgpt's is k"),
    ],
)
def test_logits_score_and_next_tokens_name_the_option_for_one_they_do_not_take(model, method, options, says):
    """model.logits(ids, position_ids=...) (transformers' forward), next_tokens(text, top_k=3) and score(text,
    windo=4) were Python's bare TypeError ("got an unexpected keyword argument"), as generate's were before it named
    max_new_tokens for max_tokens: each is now one NpgptError line naming npgpt's option (param: the one given)."""
    args = {"logits": [[1, 2]], "score": "Hello world", "next_tokens": "Hello"}[method]
    with pytest.raises(NpgptError, match="^unknown option " + re.escape(repr(next(iter(options))))) as err:
        getattr(model, method)(args, **options)
    assert says in str(err.value) and "\n" not in str(err.value) and err.value.param == next(iter(options))


def test_an_array_of_texts_as_prompts_names_the_list_generate_takes(model):
    """model.generate(np.array(["Hi", "Yo"])) said "got text (shape (2,)); encode each text first:
    model.tokenizer.encode(text)", and a pandas Series of texts (df["prompt"]) "got object (2,)", though a list of
    texts is what generate takes: both now name it (prompts.tolist()), as transformers' tokenizers and vLLM take a list,
    not an array. Arrays of ids are read as before."""
    for prompts, what in [(np.array(["Hi", "Yo"]), "NumPy array"), (np.array(["Hi", 1], dtype=object), "NumPy array")]:
        for call in (model.generate, model.completions, model.stream):
            with pytest.raises(NpgptError, match="^prompts must be a string, integer token ids or a list of them") as e:
                call(prompts, max_new_tokens=1)
            assert str(e.value).endswith(f"got a {what} of texts; pass them as a list: prompts.tolist()")
    assert model.generate(np.array(["Hi", "Yo"]).tolist(), max_new_tokens=1, temperature=0) == [
        model.generate(p, max_new_tokens=1, temperature=0) for p in ("Hi", "Yo")
    ]
    assert model.generate(np.array([[1, 2]]), max_new_tokens=1, temperature=0) == model.generate(
        [[1, 2]], max_new_tokens=1, temperature=0
    )
    pd = pytest.importorskip("pandas")
    with pytest.raises(NpgptError, match=re.escape("got a Series of texts; pass them as a list: prompts.tolist()")):
        model.generate(pd.Series(["Hi", "Yo"]), max_new_tokens=1)


def test_a_model_built_from_weights_that_do_not_fit_its_config_is_refused_at_construction():
    """GPT2(config, params) took anything: {} or a Hugging Face state dict failed deep in the backend (KeyError
    'wte'), None with NumPy's IndexError, a misshapen tensor at the first forward pass with NumPy's "operands could
    not be broadcast together", and GPT2("124M", params) or tokenizer="gpt2" were kept and failed later. Each is one
    line at construction, naming what the constructor takes; weights that fit are taken as before (a model's own
    params, on their backend, too)."""
    from npgpt.api import GPT2
    from npgpt.config import GPT2Config
    from npgpt.errors import CheckpointError

    config = CONFIGS["tiny"]
    params = random_params(config)
    narrow = {**params, "wte": params["wte"][:, :16]}
    state_dict = {"transformer.wte.weight": params["wte"]}
    for given, says in [
        ({}, "got an empty dict"),
        (None, "got NoneType"),
        (state_dict, "got keys 'transformer.wte.weight'; npgpt.load(path) reads a checkpoint in another layout"),
        (narrow, "params: tensor 'wte' has shape (50257, 16), expected (50257, 32) from the config's"),
        ({**params, "wpe": None}, "params: 'wpe' is a NoneType, not an array"),
        ({**params, "blocks": params["blocks"][:1]}, "the config says n_layer=2 but the weights hold 1 blocks"),
    ]:
        with pytest.raises(CheckpointError, match=re.escape(says)) as err:
            GPT2(config, given)
        assert "\n" not in str(err.value)
    for config_given, says in [("124M", "got str; npgpt.load(name)"), ({"n_layer": 2}, "GPT2Config.from_dict(d)")]:
        with pytest.raises(NpgptError, match="^config must be a GPT2Config") as err:
            GPT2(config_given, params)  # type: ignore[arg-type]
        assert says in str(err.value) and err.value.param == "config"
    with pytest.raises(NpgptError, match="^tokenizer must be an npgpt Tokenizer"):
        GPT2(config, params, tokenizer="gpt2")  # type: ignore[arg-type]
    model = GPT2(config, params)
    assert GPT2(config, model.params).generate("Hi", max_new_tokens=2, temperature=0) == model.generate(
        "Hi", max_new_tokens=2, temperature=0
    )
    untied = GPT2Config(n_ctx=32, n_embd=32, n_head=2, n_layer=1, tie_word_embeddings=False, bias=False)
    GPT2(untied, random_params(untied))


def test_a_loaded_models_params_build_a_model_of_another_backend_or_dtype_or_one_line():
    """GPT2(model.config, model.params, backend=..., dtype=...) (a loaded model's weights into another backend or
    dtype) failed deep in put_params for a torch model's tensors ("expected np.ndarray (got Tensor)", "'Tensor' object
    has no attribute 'flags'") and for laid-out int8 matrices ("'Q8Matrix' object has no attribute 'flags'", NumPy's
    "too many indices"). Float tensors NumPy can read are now taken as float32 host arrays, giving the same tokens;
    what it cannot read (bfloat16 tensors, int8 matrices) is one line naming the way."""
    pytest.importorskip("torch")
    from npgpt.api import GPT2
    from npgpt.errors import CheckpointError

    config = CONFIGS["tiny"]
    params = random_params(config)
    greedy = dict(max_new_tokens=3, temperature=0)
    expected = GPT2(config, params).generate("Hi", **greedy)
    for backend, dtype in [("torch", "float32"), ("torch", "float16")]:
        source = GPT2(config, params, backend=backend, dtype=dtype)
        for to_backend, to_dtype in [("numpy", "float32"), ("torch", "float16"), ("numpy", "int8")]:
            built = GPT2(config, source.params, backend=to_backend, dtype=to_dtype)
            assert built.generate("Hi", **greedy) == expected, (backend, dtype, to_backend, to_dtype)
    for backend, dtype, kind in [("torch", "bfloat16", "Tensor"), ("numpy", "int8", "Q8Matrix")]:
        source = GPT2(config, params, backend=backend, dtype=dtype)
        says = rf"^params: '[\w.]+' \({kind}\) is no float array NumPy can read"
        with pytest.raises(CheckpointError, match=says) as e:
            GPT2(config, source.params)
        assert "load the checkpoint again with the backend and dtype you want" in str(e.value)


def test_prompts_of_ids_in_another_librarys_array_are_read_as_score_reads_them(model):
    """A PyTorch tensor or JAX array of ids ([T], or [B, T] as a tokenizer's return_tensors="pt" gives) was
    "prompts must be a string, token ids or a list of them, got Tensor" from generate, stream,
    completions and next_tokens, while score and logits took it."""
    torch = pytest.importorskip("torch")
    ids = model.tokenizer.encode("Hello world")
    run = dict(max_new_tokens=2, temperature=0)
    want = model.generate(ids, **run)
    as_int32 = torch.tensor(ids, dtype=torch.int32)
    for prompt in (torch.tensor(ids), torch.tensor([ids]), as_int32, np.array([ids], np.int32)):
        assert model.generate(prompt, **run) == want
        assert [c.text for c in model.completions(prompt, **run)] == want
        assert "".join(t for _, t in model.stream(prompt, **run)) == want[0]
        assert model.next_tokens(prompt, k=3) == model.next_tokens(ids, k=3)
    two = torch.tensor([ids, ids[::-1]])  # [B, T]: B prompts, never T prompts of B tokens
    assert model.generate(two, **run) == model.generate([ids, ids[::-1]], **run)
    jnp = pytest.importorskip("jax.numpy")
    assert model.generate(jnp.asarray(ids), **run) == want
    assert model.next_tokens(jnp.asarray(ids), k=3) == model.next_tokens(ids, k=3)


def test_a_list_of_an_arrays_scalars_is_one_prompt_of_ids(model):
    """``list(torch.tensor(ids))`` (0-d tensors; JAX's and NumPy's 0-d arrays alike) was read as that many prompts
    and refused ("prompt 0 must be text or a flat list of integer token ids, got shape ()") by generate, stream,
    completions and next_tokens, while score, logits and tokenizer.decode read it as the ids it holds."""
    torch = pytest.importorskip("torch")
    ids = model.tokenizer.encode("Hello world")
    run = dict(max_new_tokens=2, temperature=0)
    want = model.generate(ids, **run)
    for prompt in (list(torch.tensor(ids)), [np.array(i) for i in ids], list(np.array(ids, np.int32))):
        assert model.generate(prompt, **run) == want
        assert model.next_tokens(prompt, k=2) == model.next_tokens(ids, k=2)
        assert model.to_str_tokens(prompt) == model.to_str_tokens(ids)
    with pytest.raises(NpgptError, match=r"token id tensor\(1\.\), not an integer"):
        model.generate(list(torch.tensor([1.0, 2.0])), **run)


def test_numpys_bools_are_true_and_false_wherever_an_option_is(model):
    """NumPy's bool (what ``a > b`` of arrays gives) was refused as skip_leading_space ("must be True or False, got
    np.True_"), set_use_attn_in's and to_tokens' prepend_bos, truncate and move_to_device, while stop_at_eot and the
    tokenizer's options took it. It is True or False everywhere (stored as Python's); 1 and 0 are still no bool."""
    from npgpt.sampling import SamplingParams

    yes, no = np.bool_(True), np.bool_(False)
    p = SamplingParams(skip_leading_space=yes, stop_at_eot=no)
    assert (p.skip_leading_space, p.stop_at_eot) == (True, False) and type(p.skip_leading_space) is bool
    run = dict(max_new_tokens=3, seed=0)
    assert model.generate(" a", skip_leading_space=yes, **run) == model.generate(" a", skip_leading_space=True, **run)
    model.set_use_attn_in(yes)
    assert model.use_attn_in is True
    model.set_use_attn_in(False)
    assert model.to_tokens("hi", prepend_bos=no, truncate=yes, move_to_device=no).tolist() == [[5303]]
    for bad in (1, 0, "yes"):
        with pytest.raises(NpgptError, match="skip_leading_space must be True or False"):
            SamplingParams(skip_leading_space=bad)
        with pytest.raises(NpgptError, match="set_use_attn_in takes True or False"):
            model.set_use_attn_in(bad)


def test_logits_that_outgrow_the_machines_memory_are_refused_before_any_compute(model, monkeypatch):
    """model.logits of 100,000s of rows asked for their [B, T, V] float32 logits at once: NumPy's MemoryError deep in
    the forward pass (after the activations were built), a bare RuntimeError on torch, or the OOM killer. It is
    refused first, naming the size and the way; what fits runs as before."""
    import npgpt.engine

    memory = 2**30
    monkeypatch.setattr(npgpt.engine, "physical_memory", lambda: memory)  # a 1 GiB machine, whatever this one is
    rows = memory // (4 * model.config.n_vocab * 8) + 1  # 8 tokens a row: just over the memory
    with pytest.raises(NpgptError, match=r"logits of \d+ rows x 8 tokens x 50257 are .* more than this machine's") as e:
        model.logits(np.ones((rows, 8), np.int64))
    assert e.value.param == "ids" and "pass fewer rows at a time" in str(e.value)
    assert model.logits(np.ones((2, 8), np.int64)).shape == (2, 8, 50257)


def test_vllms_prompt_dicts_are_the_text_or_ids_they_hold(model):
    """vLLM's LLM.generate takes {"prompt": text} (TextPrompt) and {"prompt_token_ids": ids} (TokensPrompt), alone or
    in a list; npgpt refused them ("prompts must be a string, integer token ids or a list of them, got dict"). They are
    now those prompts (a list back, as from vLLM and for ids); a key npgpt has no use for is refused by name."""
    ids = model.tokenizer.encode("Hello")
    run = dict(max_new_tokens=3, temperature=0)
    want = model.generate(["Hi", ids], **run)
    assert model.generate([{"prompt": "Hi"}, {"prompt_token_ids": ids}], **run) == want
    assert model.generate({"prompt": "Hi"}, **run) == want[:1]
    assert model.generate({"prompt": "Hi", "prompt_token_ids": ids}, **run) == want[1:]  # the ids win, as in vLLM
    assert model.next_tokens({"prompt_token_ids": ids}, k=2) == model.next_tokens(ids, k=2)
    for bad, says in [
        ({"prompt": "Hi", "multi_modal_data": {}}, "prompt 0 has 'multi_modal_data', which npgpt has no use for"),
        ([{"text": "Hi"}], "prompt 0 is a dict with 'text'; a prompt is a text or token ids, or vLLM's"),
        ({"prompt_token_ids": [1.5]}, "prompt 0 must be text or a flat list of integer token ids"),
    ]:
        with pytest.raises(NpgptError, match=re.escape(says)) as err:
            model.generate(bad, **run)
        assert err.value.param == "prompt"


def test_a_samplingparams_is_taken_as_vllms_llm_generate_takes_its_own(model):
    """vLLM's callers write llm.generate(prompts, sampling_params); npgpt refused its own SamplingParams there ("got 1
    more positional argument(s) (SamplingParams)") and as sampling_params= ("unknown option ... valid options: ...").
    Both now run with its options; one given beside it is refused, naming the way to change one."""
    from npgpt.sampling import SamplingParams

    params = SamplingParams(max_new_tokens=3, temperature=0.7, seed=-5, stop=["x"], logit_bias={11: -100})
    want = model.completions(["Hi", "Yo"], **params.options())
    assert model.completions(["Hi", "Yo"], params) == model.completions(["Hi", "Yo"], sampling_params=params) == want
    assert model.generate("Hi", params) == want[0].text == "".join(model.stream("Hi", params))
    assert [e.token for e in model.events(["Hi", "Yo"], sampling_params=params)] == [
        e.token for e in model.events(["Hi", "Yo"], **params.options())
    ]
    with pytest.raises(NpgptError, match=r"takes a SamplingParams or options by name, not both \(got seed= too\)"):
        model.generate("Hi", params, seed=1)
    with pytest.raises(NpgptError, match="unknown option 'sampling_params'; npgpt takes its options by name"):
        model.generate("Hi", sampling_params={"temperature": 0})


def test_the_hooked_forward_pass_refuses_logits_that_outgrow_memory_and_says_out_of_memory(model, monkeypatch):
    """model(ids), run_with_hooks and run_with_cache of a batch whose logits outgrow the machine ran the whole hooked
    pass and ended in NumPy's bare MemoryError ("Unable to allocate 59.9 GiB for an array with shape (320000, 50257)").
    They refuse it first, as model.logits does (stop_at_layer, which makes no logits, still runs), and any other
    out-of-memory in the pass is one line naming the rows and the way."""
    import npgpt.engine

    memory = 2**30
    monkeypatch.setattr(npgpt.engine, "physical_memory", lambda: memory)  # a 1 GiB machine, whatever this one is
    ids = np.ones((memory // (4 * model.config.n_vocab * 8) + 1, 8), np.int64)
    for run in (lambda: model(ids), lambda: model.run_with_cache(ids), lambda: model.run_with_hooks(ids)):
        with pytest.raises(NpgptError, match=r"logits of \d+ rows x 8 tokens x 50257 are .* pass fewer rows"):
            run()
    assert model.run_with_cache(ids[:2], stop_at_layer=1)[0].shape == (2, 8, model.config.n_embd)

    def full(activation, hook):
        raise MemoryError("Unable to allocate 59.9 GiB for an array with shape (320000, 50257)")

    with pytest.raises(NpgptError, match=r"^out of memory running 2 rows x 8 tokens with hooks \(Unable to allocate"):
        model.run_with_hooks(ids[:2], fwd_hooks=[("blocks.0.hook_resid_pre", full)])


def test_ids_that_are_not_integers_are_one_line_wherever_they_go(model):
    torch = pytest.importorskip("torch")
    for run in (model.generate, model.next_tokens, model.logits, model.score):
        with pytest.raises(NpgptError, match=r"must be .*got float32 \(3,\)"):
            run(torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(NpgptError, match="prompt 0 must be .*different lengths"):
        model.generate([[[1, 2], [3]]])  # NumPy's ValueError before


@pytest.mark.parametrize("ids", [[2**70], [1, 2**63], (15496, -(2**64))])
def test_an_integer_id_past_int64_is_named_not_called_object_or_float(model, ids):
    """NumPy reads a Python int past int64 as an object array, or beside small ones as float64: the ids were
    refused as "got object (1,)" or "got float64 (2,)", though every one was an integer."""
    big = next(i for i in ids if abs(i) >= 2**63)
    for run in (model.generate, model.next_tokens, model.logits, model.score):
        with pytest.raises(NpgptError, match=f"got id {big}, past any vocabulary"):
            run(ids)
    with pytest.raises(NpgptError, match=f"token id {big} is not in GPT-2's vocabulary"):
        model.tokenizer.decode(ids)  # decode's own message, as before


def test_a_list_of_texts_where_ids_go_is_told_to_encode_them(model):
    """model.logits(["Hello", "world"]) said "got <U5 (2,)", NumPy's name for its text dtype; a list of texts
    (or of texts and ids) where token ids go now says it is text and how to encode it, as one text does."""
    for run in (model.logits, lambda x: model.run_with_cache([*x, 5])):
        with pytest.raises(NpgptError, match=r"must be .*got text \(shape \(\d,\)\); encode each text first"):
            run(["Hello", "world"])
    with pytest.raises(NpgptError, match=r"score each: \[model\.score\(t\) for t in texts\]"):  # score takes a text
        model.score(["Hello", "world"])


def test_a_hugging_face_tokenizers_output_is_told_to_pass_its_input_ids(model):
    """tokenizer(text, return_tensors="pt") is a BatchEncoding: logits read it as "<U14 (1, 2)" (its keys),
    the others as "got BatchEncoding" with no way forward; score's [1, T] input_ids was "got int64 (1, 3)"."""
    torch = pytest.importorskip("torch")
    from transformers import BatchEncoding

    ids = torch.tensor([model.tokenizer.encode("Hello world")])
    enc = BatchEncoding({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    for run in (model.generate, model.next_tokens, model.logits, model.score, model.run_with_cache):
        for given in (enc, dict(enc)):
            with pytest.raises(NpgptError, match=r"a tokenizer's output: pass the text itself, or its \['input_ids'\]"):
                run(given)
    with pytest.raises(NpgptError, match=r"got int64 \(1, 2\); for a batch of one \[1, T\] pass its row, ids\[0\]"):
        model.score(enc["input_ids"])
    assert model.score(enc["input_ids"][0]) == model.score("Hello world")


def test_options_given_by_position_or_a_prompt_by_transformers_name_are_one_line(model):
    """nanoGPT's generate(idx, max_new_tokens, temperature, top_k) by position, and transformers'
    generate(input_ids=ids, ...), were TypeErrors ("takes 2 positional arguments but 5 were given",
    "missing 1 required positional argument"): the same in generate, stream, completions and events. The prompt
    under the other method's name (completions(prompt=...), generate(prompts=...)) said it "needs a prompt"."""
    ids = [model.tokenizer.encode("Hello world")]
    for method in ("generate", "stream", "completions", "events"):
        run = getattr(model, method)
        with pytest.raises(
            NpgptError, match=rf"{method} takes the prompt, then options by name: .*got 3 more .*\(3, 0.8, 5\)"
        ):
            list(run(ids, 3, 0.8, 5))
        # completions(prompt="Hi") (generate's name, the OpenAI API's) said "completions needs a prompt"
        other = "prompts" if method in ("generate", "stream") else "prompt"
        for name in ("input_ids", "inputs", "input", "idx", other, "text"):
            with pytest.raises(
                NpgptError, match=rf"pass the prompt first, not as {name}=: model.{method}\(ids, "
            ) as err:
                list(run(**{name: ids}, max_new_tokens=2))
            assert err.value.param == "prompt"
        with pytest.raises(NpgptError, match=rf"{method} needs a prompt: model.{method}\(prompt, "):
            list(run(max_new_tokens=2))


def test_calling_the_model_is_transformer_lens_forward_and_nanogpt_targets_or_the_tokenizer_say_the_way(model):
    """model(ids) is TransformerLens's forward (the logits); nanoGPT's logits, loss = model(idx, targets) would
    put its targets on return_type (and unpack a batch of two), and transformers' tokenizer(text) was "'Tokenizer'
    object is not callable": each is one line naming the way."""
    ids = np.asarray([model.tokenizer.encode("Hello world, again")] * 2)
    np.testing.assert_allclose(model(ids), model.logits(ids), atol=1e-5)
    with pytest.raises(NpgptError, match=r"not nanoGPT's targets; .*model\(ids, return_type='both'\)") as err:
        model(ids, ids[:, 1:])
    assert err.value.param == "return_type"
    with pytest.raises(NpgptError, match=r"model.tokenizer.encode\(text\) gives the token ids"):
        model.tokenizer("Hello world")


# -- one check of a prompt's ids (npgpt.token_ids.check_token_ids) for every entry point -------------------------
@pytest.mark.parametrize(
    "bad, named",
    [
        (-1, "token id -1, outside the vocabulary [0, 50257)"),
        (50257, "token id 50257, outside the vocabulary [0, 50257)"),
    ]
    + [(b, f"token id {b!r}, not an integer") for b in (True, 1.5, np.float32(2.0))],
)
def test_every_entry_point_refuses_a_prompt_id_that_is_no_token_naming_it(model, bad, named):
    """The range check of prompt ids was written three times (generate's check_request, next_tokens, the
    server's scoring check) and named no id; generate's check_request read a bool as id 1 and a float as an id,
    and next_tokens([1, 2.0]) said "prompt 0 ... got int". One check now, naming the id, the same everywhere."""
    from npgpt.generate import check_request
    from npgpt.sampling import SamplingParams

    calls = {
        "check_request": lambda: check_request(model.engine, model.tokenizer, [[5, bad]], SamplingParams()),
        "next_tokens": lambda: model.next_tokens([5, bad]),
        "generate": lambda: model.generate([5, bad], max_new_tokens=2),
        "completions": lambda: model.completions([5, bad], max_new_tokens=2),
    }
    for name, call in calls.items():
        with pytest.raises(NpgptError) as err:
            call()
        message = str(err.value)
        assert named in message and "\n" not in message, (name, message)
        assert err.value.param == "prompt", name


def test_a_bool_among_ids_is_refused_never_read_as_id_1(model):
    """NumPy reads [1, True] as int64 [1, 1], so a bool among a batch's ids was silently id 1: generate([[5, True]]),
    logits, run_with_cache, score, to_string and decode all ran on it. Every reader of ids refuses it now."""
    for name, call in {
        "generate": lambda: model.generate([[5, True]], max_new_tokens=2),
        "generate, a tuple row": lambda: model.generate([(5, 6), (5, True)], max_new_tokens=2),
        "logits": lambda: model.logits([[1, True]]),
        "run_with_cache": lambda: model.run_with_cache([[1, True]]),
        "score": lambda: model.score([1, True]),
        "to_string": lambda: model.to_string([[1, 2], [3, np.True_]]),
        "decode": lambda: model.tokenizer.decode([1, True]),
    }.items():
        with pytest.raises(NpgptError, match=r"got (np\.)?True(_)? among the ids, which is no token id"):
            call()
            pytest.fail(name)


def test_a_uint64_id_past_int64_is_named_as_it_is_not_wrapped_round(model):
    """np.uint64 ids were cast to int64, so 2**63 + 5 was refused as "token id -9223372036854775803"."""
    big = np.array([5, 2**63 + 5], dtype=np.uint64)
    for call in (lambda: model.generate(big, max_new_tokens=1), lambda: model.score(big), lambda: model.logits(big)):
        with pytest.raises(NpgptError, match=f"got id {2**63 + 5}, past any vocabulary"):
            call()


def test_an_id_outside_the_model_is_named_by_the_forward_pass(model):
    """model.logits([[1, 99999]]) (and run_with_cache, the engine's every reader of ids) said 'token ids must be in
    [0, 50257), the model's vocabulary', naming no id, where generate and score name it (check_token_ids): the
    engine's range check is that one now."""
    n = model.config.n_vocab
    for call in (lambda: model.logits([[1, n + 5]]), lambda: model.run_with_cache(np.array([[-1, 2]]))):
        with pytest.raises(NpgptError, match=rf"^ids has token id (-1|{n + 5}), outside the vocabulary \[0, {n}\)$"):
            call()


@pytest.mark.parametrize(
    "options",
    [
        {"max_tokens": 32, "stop": ["Q:", "\n"], "echo": True},  # llama-cpp-python's README: llm(prompt, ...)
        {"max_new_tokens": 5},  # npgpt's own generate options
        {"temperature": 0.5},
        {"repeat_penalty": 1.1},
        {"max_length": 20},  # transformers'
    ],
)
def test_calling_the_model_with_generation_options_names_generate(model, options):
    """llama-cpp-python's ``llm("Q: ... A: ", max_tokens=32, stop=["Q:", "\\n"], echo=True)`` (its Llama.__call__) got
    "unknown option 'max_tokens'; valid: return_type, loss_per_token, ...": TransformerLens's forward options, and
    no way to the text asked for. Any generation option now names model.generate; the forward's own still run."""
    says = r"TransformerLens's forward, which gives logits .*model\.generate\(prompt"
    with pytest.raises(NpgptError, match=says) as e:
        model("Q: Name the planets in the solar system? A: ", **options)
    assert e.value.param == next(iter(options))
    assert model([1, 2, 3], attention_mask=[1, 1, 1]).shape[:2] == (1, 3)  # an option model(...) takes runs


def test_calling_the_model_with_transformers_forward_options_names_run_with_cache(model):
    """transformers' forward options, ``model(ids, output_hidden_states=True)`` (and ``output_attentions``,
    ``use_cache``), ask for activations, not for text; since model(...) names model.generate for generation options,
    which these are among (for generate), they were told "to generate text ... model.generate(prompt, ...)". They
    name run_with_cache (use_cache: that there is no cache to return), and the hidden state it names is the one."""
    for name, way in (
        (
            "output_hidden_states",
            r"model\.run_with_cache\(input\) .*hidden_states\[i\] is blocks\.\{i\}\.hook_resid_pre",
        ),
        ("output_attentions", r"attentions\[i\] blocks\.\{i\}\.attn\.hook_pattern"),
        ("use_cache", "keeps no kv cache"),
    ):
        with pytest.raises(NpgptError, match=rf"^model\(input\) takes no {name}; .*{way}") as e:
            model([[1, 2, 3]], **{name: True})
        assert e.value.param == name and "generate text" not in str(e.value)
    logits, cache = model.run_with_cache([[1, 2, 3]])
    n = model.config.n_layer
    np.testing.assert_allclose(  # the last hidden state: ln_f of the last block's output, whose head gives the logits
        model.unembed(model.ln_final(cache["resid_post", n - 1])), logits, atol=1e-4
    )


def test_llama_cpp_pythons_and_vllms_methods_name_npgpts_way(model):
    """llm.create_completion(prompt, max_tokens=16), llm.tokenize(b"..."), llm.n_ctx() (llama-cpp-python's Llama) and
    llm.get_tokenizer(), llm.chat(messages) (vLLM's LLM) were Python's bare "'GPT2' object has no attribute ...":
    each now names npgpt's way, and that way runs."""
    from npgpt.chat import chat_prompt, chat_stop

    ways = {
        "create_completion": r"model\.completions\(prompt",
        "create_chat_completion": "chat_prompt",
        "chat": "chat_prompt",
        "tokenize": r"model\.tokenizer\.encode\(text\)",
        "detokenize": r"model\.tokenizer\.decode\(ids\)",
        "n_ctx": r"model\.config\.n_ctx",
        "n_vocab": r"model\.config\.n_vocab",
        "get_tokenizer": "model.tokenizer",
    }
    for name, way in ways.items():
        with pytest.raises(AttributeError, match=f"^npgpt's model has no {name}; .*{way}") as e:
            getattr(model, name)
        assert isinstance(e.value, NpgptError) and not hasattr(model, name)
    messages = [("user", "Hi")]
    reply = model.generate(chat_prompt(messages), stop=chat_stop(messages), skip_leading_space=True, max_new_tokens=3)
    assert isinstance(reply, str)
    assert model.completions("Hi", max_new_tokens=2)[0].tokens
    assert model.tokenizer.decode(model.tokenizer.encode("Hi")) == "Hi" and model.config.n_ctx > 0


def test_an_option_given_as_none_is_its_default(model):
    """model.generate("Hi", temperature=None) said 'temperature must be a finite number >= 0 (0 = greedy), got None'
    (top_p, top_k, min_p, the penalties and logit_bias alike), though seed=None and max_new_tokens=None were their
    defaults: a wrapper passing on its caller's temperature=None stopped there. None is now every option's default,
    as the OpenAI API (and npgpt's server) reads a JSON null, vLLM's SamplingParams.from_optional and transformers'
    generate(temperature=None) read it."""
    from npgpt.sampling import SamplingParams

    names = [f for f in SamplingParams.__dataclass_fields__ if f not in ("max_new_tokens", "seed")]
    given = dict.fromkeys(names)
    assert SamplingParams.from_options(given) == SamplingParams()
    want = model.completions(["Hi", [5, 6]], max_new_tokens=4, seed=3)
    assert model.completions(["Hi", [5, 6]], max_new_tokens=4, seed=3, **given) == want
    assert model.generate("Hi", max_new_tokens=4, temperature=None, seed=3) == want[0].text
    with pytest.raises(NpgptError, match="unknown option 'max_tokens'"):  # an unknown name is still one, None or not
        model.generate("Hi", max_tokens=None)


def test_max_new_tokens_minus_one_generates_until_the_context_is_full(model):
    """llama-cpp-python's max_tokens=-1 (and llama.cpp's -n -1, which npgpt's CLI takes) is "no limit": until end
    of text or the context is full. The Python API refused it ('max_new_tokens must be an integer >= 1, got -1; leave
    it out for 64 or the rest of the context'), and had no other way to it for prompts of different lengths (a
    number given must fit beside every prompt). -1 now fills each prompt's own rest of the context; -2 and 0 are
    still refused."""
    n_ctx = model.config.n_ctx
    prompts = [[5, 6, 7], list(range(100, 100 + n_ctx - 9))]
    got = model.completions(prompts, max_new_tokens=-1, temperature=0, stop_at_eot=False)
    for p, c in zip(prompts, got, strict=True):
        assert len(p) + len(c.tokens) == n_ctx and c.finish_reason == "length"
        assert c == model.completions(p, max_new_tokens=n_ctx - len(p), temperature=0, stop_at_eot=False)[0]
    for bad in (-2, 0):
        with pytest.raises(NpgptError, match=f"max_new_tokens must be an integer >= 1, or -1 .*got {bad}"):
            model.generate("Hi", max_new_tokens=bad)
