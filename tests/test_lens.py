"""The logit lens and attention patterns against Hugging Face's hidden states and attentions, and
the `npgpt lens` / `npgpt attention` commands."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CONFIGS, random_params, run_cli

from npgpt.errors import NpgptError
from npgpt.lens import attention_pattern, logit_lens


def hf_outputs(ref, ids: np.ndarray):
    import torch

    with torch.no_grad():
        return ref(torch.tensor(ids)[None], output_hidden_states=True, output_attentions=True)


def test_logit_lens_equals_hidden_states_through_ln_f_and_head(pair):
    import torch

    model, ref = pair("tiny")
    ids = np.array([464, 3139, 286, 4881, 318, 6342, 13])
    lens = logit_lens(model, ids)
    out = hf_outputs(ref, ids)
    L = model.config.n_layer
    assert lens.top_ids.shape == lens.top_probs.shape == lens.final_probs.shape == (L + 1, len(ids))
    # Hugging Face's last hidden state already has ln_f applied; the ones before do not.
    with torch.no_grad():
        rows = [ref.lm_head(ref.transformer.ln_f(h[0])) for h in out.hidden_states[:L]] + [out.logits[0]]
    for i, logits in enumerate(rows):
        probs = torch.softmax(logits, -1).numpy()
        np.testing.assert_array_equal(lens.top_ids[i], probs.argmax(-1), err_msg=f"row {i}")
        np.testing.assert_allclose(lens.top_probs[i], probs.max(-1), atol=1e-5)
        np.testing.assert_allclose(lens.final_probs[i], probs[np.arange(len(ids)), lens.top_ids[L]], atol=1e-5)
    np.testing.assert_array_equal(lens.top_ids[L], model.logits(ids)[0].argmax(-1))


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_logit_lens_unembeds_with_an_untied_models_own_head(dtype):
    """An untied model predicts with lm_head, not wte: the lens's last row is the model's own prediction,
    and every row is ln_f then lm_head."""
    import dataclasses

    from npgpt.api import GPT2
    from npgpt.model import layer_norm
    from npgpt.params import init_params

    if dtype == "int8":
        pytest.importorskip("onnxruntime")
    config = dataclasses.replace(CONFIGS["tiny"], tie_word_embeddings=False)
    model = GPT2(config, init_params(config, seed=1, std=0.3), dtype=dtype)
    ids = np.array([464, 3139, 286, 4881, 318, 6342, 13])
    lens = logit_lens(model, ids)
    L = config.n_layer
    np.testing.assert_array_equal(lens.top_ids[L], model.logits(ids)[0].argmax(-1))
    if dtype == "float32":
        resid = model.run_with_cache(ids)[1]["blocks.0.hook_resid_pre"][0]
        np.testing.assert_array_equal(
            lens.top_ids[0], (layer_norm(resid, **model.params["ln_f"]) @ model.params["lm_head"].T).argmax(-1)
        )


def test_logit_lens_uses_the_models_layer_norm_epsilon():
    """The last row is the model's own output probabilities, also for a layer_norm_epsilon other than 1e-5."""
    import dataclasses

    from npgpt.api import GPT2
    from npgpt.model import softmax
    from npgpt.params import init_params

    config = dataclasses.replace(CONFIGS["tiny"], layer_norm_epsilon=0.5)
    model = GPT2(config, init_params(config, seed=1, std=0.3))
    ids = np.array([464, 3139, 286, 4881, 318, 6342, 13])
    probs = softmax(model.logits(ids)[0])
    np.testing.assert_allclose(logit_lens(model, ids).top_probs[-1], probs.max(-1), rtol=1e-5)


def test_attention_pattern_equals_hugging_face(pair):
    model, ref = pair("tiny")
    ids = np.array([50256, 1212, 318, 257, 1332, 13])
    attentions = hf_outputs(ref, ids).attentions
    for layer in range(model.config.n_layer):
        for head in range(model.config.n_head):
            pattern = attention_pattern(model, ids, layer, head)
            np.testing.assert_allclose(pattern, attentions[layer][0, head].numpy(), atol=1e-5)
            np.testing.assert_allclose(pattern.sum(-1), 1.0, atol=1e-5)
            assert np.triu(pattern, 1).max() == 0.0  # causal


@pytest.mark.parametrize(
    "layer, head, param",
    [(True, 0, "layer"), (1.0, 0, "layer"), ("1", 0, "layer"), (0, False, "head"), (0, 1.0, "head"), (0, "1", "head")],
)
def test_a_layer_or_head_that_is_no_integer_is_one_line_naming_it(layer, head, param):
    """layer=True was "unknown hook name 'blocks.True.attn.hook_pattern'", layer="1" a TypeError comparing a str
    with an int; now one line naming the argument and its range. NumPy's integers are integers."""
    from npgpt.api import GPT2

    config = CONFIGS["tiny"]
    model = GPT2(config, random_params(config, 0))
    with pytest.raises(NpgptError, match=rf"^{param} must be a whole number in \[-2, 1\] for this model") as err:
        attention_pattern(model, [1, 2], layer, head)
    assert err.value.param == param and "\n" not in str(err.value)
    np.testing.assert_array_equal(
        attention_pattern(model, [1, 2], np.int64(1), np.int8(1)), attention_pattern(model, [1, 2], 1, 1)
    )


def test_a_negative_layer_or_head_counts_from_the_end(pair):
    """attention_pattern(model, ids, -1, -1) was refused ('layer must be a whole number in [0, 1]') though the cache
    reads cache['pattern', -1][:, -1] as TransformerLens's does; it is now the last block's last head."""
    model, _ = pair("tiny")
    ids = [464, 3290, 318, 257]
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_pattern"))
    for layer, head in [(-1, -1), (-2, 0), (0, -2)]:
        np.testing.assert_array_equal(attention_pattern(model, ids, layer, head), cache["pattern", layer][0, head])
    np.testing.assert_array_equal(attention_pattern(model, ids, -1, -1), attention_pattern(model, ids, 1, 1))


def test_bad_layer_head_or_ids_are_one_line_errors(pair):
    model, _ = pair("tiny")
    with pytest.raises(NpgptError, match=r"layer must be a whole number in \[-2, 1\]"):
        attention_pattern(model, [1, 2], 2, 0)
    with pytest.raises(NpgptError, match=r"head must be a whole number in \[-2, 1\]"):
        attention_pattern(model, [1, 2], 0, -3)
    with pytest.raises(NpgptError, match="one non-empty sequence"):
        logit_lens(model, [])
    with pytest.raises(NpgptError, match="one non-empty sequence"):
        logit_lens(model, [[1, 2], [3, 4]])


PNG = b"\x89PNG\r\n\x1a\n"


def test_lens_command_prints_the_table_and_writes_the_png(tmp_path):
    png = tmp_path / "lens.png"
    r = run_cli("lens", "In the beginning [bold]God", "--png", str(png))
    assert r.returncode == 0, r.stderr
    assert "logit lens" in r.stdout and "embed" in r.stdout
    assert "' ['" in r.stdout and "'bold'" in r.stdout  # the prompt's markup is shown, not applied
    assert png.read_bytes().startswith(PNG)


def test_attention_command_prints_the_top_keys_and_writes_the_png(tmp_path):
    png = tmp_path / "attn.png"
    r = run_cli("attention", "And God said, Let there be light", "--layer", "1", "--head", "2", "--png", str(png))
    assert r.returncode == 0, r.stderr
    assert "block 1, head 2" in r.stdout and "' light'" in r.stdout
    assert png.read_bytes().startswith(PNG)
    bad = run_cli("attention", "hello", "--layer", "99")
    assert bad.returncode == 1 and "--layer must be a whole number in" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("command", ["lens", "attention"])
def test_commands_read_the_prompt_from_stdin_as_generate_does(command):
    """``-`` or a pipe with no PROMPT is stdin's text (``-`` was looked inside as the token '-')."""
    direct = run_cli(command, "And God said")
    for args in (["-"], []):
        r = run_cli(command, *args, input="And God said\n")
        assert r.returncode == 0 and r.stdout == direct.stdout, r.stderr


def test_jax_backend_gives_the_same_lens_and_pattern():
    pytest.importorskip("jax")
    from npgpt.api import GPT2

    params = random_params(CONFIGS["tiny"], seed=2)
    model, on_jax = GPT2(CONFIGS["tiny"], params), GPT2(CONFIGS["tiny"], params, backend="jax")
    ids = np.array([464, 3139, 286, 4881, 318])
    ours, theirs = logit_lens(model, ids), logit_lens(on_jax, ids)
    np.testing.assert_array_equal(ours.top_ids, theirs.top_ids)
    np.testing.assert_allclose(ours.final_probs, theirs.final_probs, atol=1e-5)
    np.testing.assert_allclose(attention_pattern(model, ids, 1, 1), attention_pattern(on_jax, ids, 1, 1), atol=1e-5)


@pytest.mark.parametrize("command", ["lens", "attention"])
def test_a_png_path_that_cannot_be_written_fails_before_any_compute(tmp_path, command):
    """The --png destination is checked first: one line naming it, and no table printed (it was checked
    only after the table, so the run's work was lost)."""
    from conftest import small_disk

    (tmp_path / "file").write_text("x")
    places = {
        tmp_path: "it is a directory",
        tmp_path / "file" / "x.png": "a part of the path is a file",
        "/proc/no/such/x.png": "its folder cannot be created",
    }
    with small_disk(tmp_path / "ro", "1m", read_only=True) as ro:
        places[ro / "sub" / "x.png"] = "read-only file system"
        for png, reason in places.items():
            r = run_cli(command, "And God said", "--png", str(png))
            assert r.returncode == 1 and r.stdout == "", r.stdout
            assert r.stderr.strip() == r.stderr.strip().splitlines()[0] and f"cannot write {png}: " in r.stderr
            assert reason in r.stderr and "free some space" not in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "ro"]  # nothing created on the way


@pytest.mark.parametrize("command", ["lens", "attention"])
def test_a_png_path_not_named_png_fails_before_any_compute(tmp_path, command):
    """--png x.jpg wrote PNG data under a .jpg name; now it is refused with one line before anything runs.
    The suffix's case does not matter."""
    for name in ("x.jpg", "x", "x.png.txt"):
        r = run_cli(command, "And God said", "--png", str(tmp_path / name))
        assert r.returncode == 1 and r.stdout == "", r.stdout
        assert r.stderr.strip() == r.stderr.strip().splitlines()[0] and "is not a .png name" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []
    r = run_cli(command, "And God said", "--png", str(tmp_path / "x.PNG"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "x.PNG").read_bytes().startswith(PNG)


@pytest.mark.parametrize("command", ["lens", "attention"])
def test_png_without_matplotlib_fails_before_any_compute(tmp_path, command):
    """Missing matplotlib was reported only after the table was printed (the run's work lost)."""
    code = (
        "import importlib.util as u, sys; find = u.find_spec; "
        "u.find_spec = lambda name, *a: None if name == 'matplotlib' else find(name, *a); "
        "sys.argv = ['npgpt', *sys.argv[1:]]; from npgpt.cli import main; main()"
    )
    import subprocess
    import sys

    args = [command, "And God said", "--png", str(tmp_path / "x.png")]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr.strip() == "error: PNG output needs matplotlib: pip install matplotlib (or 'npgpt[train]')"
    assert not (tmp_path / "x.png").exists()


def test_logit_lens_reads_only_the_tokenizers_tokens_of_a_padded_vocabulary():
    """nanoGPT pads the vocabulary to 50304; ids 50257.. are no token, and the lens showed one as the
    top token (then `npgpt lens` and the server failed to decode it). Now its top token is the most likely of
    the tokenizer's tokens, as generate picks them, with its probability over the model's full output, as
    score and next_tokens give it."""
    import dataclasses

    from npgpt.api import GPT2
    from npgpt.model import softmax
    from npgpt.params import init_params

    config = dataclasses.replace(CONFIGS["tiny"], n_vocab=50304)
    params = init_params(config, seed=1, std=0.3)
    ids = np.array([464, 3139, 286, 4881, 318, 6342, 13])
    padded = 50300
    params["wte"][padded] = 30 * params["wte"][logit_lens(GPT2(config, params), ids).top_ids[1, 0]]
    model = GPT2(config, params)
    assert model.logits(ids)[0].argmax(-1).max() == padded  # the model itself would pick it
    lens = logit_lens(model, ids)
    assert lens.top_ids.max() < model.tokenizer.n_vocab
    logits = model.logits(ids)[0]
    top = logits[:, : model.tokenizer.n_vocab].argmax(-1)
    np.testing.assert_array_equal(lens.top_ids[-1], top)
    np.testing.assert_allclose(lens.top_probs[-1], softmax(logits)[np.arange(len(ids)), top], rtol=1e-5)


@pytest.mark.parametrize("command", ["lens", "attention"])
def test_a_prompt_over_the_context_is_refused_with_the_fix(command):
    """npgpt lens with a prompt over the context said only 'prompt is 301 tokens; this model reads at most 256',
    and model.logits / run_with_cache / logit_lens only that the sequence exceeds the context: each now says what
    to do."""
    r = run_cli(command, "x " * 300, "--model", "bundled")
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("using npgpt's")]
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "256" in lines[0] and "shorten the prompt" in lines[0], lines[0]


def test_ids_over_the_context_say_how_many_to_give(pair):
    model, _ = pair("tiny")
    n_ctx = model.config.n_ctx
    for call in (
        lambda ids: model.logits([ids]),
        lambda ids: logit_lens(model, ids),
        lambda ids: model.run_with_cache(ids),
    ):
        with pytest.raises(NpgptError, match=rf"give at most {n_ctx} tokens a row \(e\.g\. the last {n_ctx}") as err:
            call(list(range(n_ctx + 1)))
        assert "\n" not in str(err.value)
