"""nanoGPT's ckpt.pt: files from nanoGPT's own code, and train.py's dict built from transformers models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from checkpoint_writers import close_to_hf, nanogpt_checkpoint, state_dict

import npgpt
from npgpt.errors import CheckpointError
from npgpt.formats import detect, load_checkpoint

torch = pytest.importorskip("torch")
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", ["nanogpt_compiled", "nanogpt_nobias"])
def test_files_nanogpt_wrote_load_to_its_logits(name):
    """nanoGPT's own GPT, optimizer and checkpoint dict (scripts/make_nanogpt_fixture.py)."""
    ref = np.load(FIXTURES / name / "reference.npz")
    assert detect(FIXTURES / name / "ckpt.pt") == "nanogpt"
    assert np.abs(npgpt.load(FIXTURES / name).logits(ref["ids"]) - ref["logits"]).max() <= 1e-4


@pytest.mark.parametrize("compiled", [False, True], ids=["plain", "torch.compile"])
def test_nanogpt_ckpt_matches_transformers(pair, tmp_path, compiled):
    _, ref = pair("odd")
    torch.save(nanogpt_checkpoint(ref, compiled=compiled), tmp_path / "ckpt.pt")
    assert detect(tmp_path / "ckpt.pt") == "nanogpt" and detect(tmp_path) == "nanogpt"
    config, params = load_checkpoint(tmp_path / "ckpt.pt")
    assert (config.n_vocab, config.n_ctx, config.n_layer) == (50304, ref.config.n_positions, 5)
    assert params["wte"].shape == (50304, 48)
    assert close_to_hf(tmp_path, ref, width=50257) <= 1e-4


def test_nanogpt_bias_false(pair, tmp_path):
    _, ref = pair("odd")
    from transformers import GPT2LMHeadModel

    torch.save(nanogpt_checkpoint(ref, bias=False), tmp_path / "ckpt.pt")
    assert load_checkpoint(tmp_path)[0].bias is False

    zeroed = GPT2LMHeadModel(ref.config).eval()  # the same model with every bias zero
    zeroed.load_state_dict(
        {
            k: v if not k.endswith(".bias") or k.endswith(".attn.bias") else torch.zeros_like(v)
            for k, v in ref.state_dict().items()
        }
    )
    assert close_to_hf(tmp_path, zeroed, width=50257) <= 1e-4


def test_nanogpt_untied_head(pair, tmp_path):
    """A modified nanoGPT whose lm_head is not wte: used as the head, never dropped."""
    _, ref = pair("odd")
    ckpt = nanogpt_checkpoint(ref, vocab=50257)
    ckpt["model"]["lm_head.weight"] = ckpt["model"]["lm_head.weight"] + 0.1
    torch.save(ckpt, tmp_path / "ckpt.pt")
    assert load_checkpoint(tmp_path)[0].tie_word_embeddings is False
    from transformers import GPT2LMHeadModel

    untied = GPT2LMHeadModel(ref.config.__class__(**{**ref.config.to_dict(), "tie_word_embeddings": False})).eval()
    untied.load_state_dict({**ref.state_dict(), "lm_head.weight": ckpt["model"]["lm_head.weight"]}, strict=False)
    assert close_to_hf(tmp_path, untied) <= 1e-4


def test_nanogpt_refusals(pair, tmp_path):
    _, ref = pair("odd")
    ckpt = nanogpt_checkpoint(ref)
    ckpt["model_args"]["use_rmsnorm"] = True  # a fork's change to the math
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match="use_rmsnorm=True"):
        load_checkpoint(tmp_path / "ckpt.pt")
    torch.save(state_dict(ref), tmp_path / "bare.pt")  # a state dict with no config anywhere
    with pytest.raises(CheckpointError, match="config.json"):
        load_checkpoint(tmp_path / "bare.pt")


def test_nanogpt_weight_with_and_without_the_compile_prefix_is_refused(pair, tmp_path):
    _, ref = pair("odd")
    ckpt = nanogpt_checkpoint(ref, compiled=True)
    ckpt["model"]["transformer.ln_f.weight"] = torch.zeros_like(ckpt["model"]["_orig_mod.transformer.ln_f.weight"])
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match="'_orig_mod.transformer.ln_f.weight' and 'transformer.ln_f.weight'"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("dropped", [("bias",), ("bias", "vocab_size")], ids=["2023-01-14", "2022-12-28"])
def test_nanogpt_first_versions_model_args(pair, tmp_path, dropped):
    """nanoGPT's first checkpoints: model_args without 'bias' (before 2023-01-27) or 'vocab_size'
    (before 2023-01-14); their GPT had biases and GPT-2's vocabulary, which the weights show, and GPT-2's tanh GELU
    (new_gelu, before 594068e 'Use nn.GELU', 2023-05-17): such a checkpoint was read with the exact one that
    nanoGPT's later model.py runs, not the one it was trained and sampled with."""
    _, ref = pair("odd")
    ckpt = nanogpt_checkpoint(ref, vocab=50257)
    for key in dropped:
        del ckpt["model_args"][key]
    torch.save(ckpt, tmp_path / "ckpt.pt")
    config = load_checkpoint(tmp_path)[0]
    assert (config.bias, config.n_vocab, config.activation_function) == (True, 50257, "gelu_new")
    assert close_to_hf(tmp_path, ref) <= 1e-4


def test_nanogpt_runs_its_exact_gelu_not_gpt2s_tanh_form(tmp_path):
    """nanoGPT's MLP is nn.GELU() (exact, erf: transformers' "gelu") since 2023-05-17 (594068e, "Use nn.GELU"); its
    checkpoints were run with GPT-2's tanh approximation ("gelu_new"). On the tiny fixtures' small activations the
    two agree to 1e-7; on weights of a trained model's size (pre-activations of order 1) a ckpt.pt written by
    nanoGPT's own model.py was 8.8e-4 off its logits. The same model in transformers with activation "gelu" (the
    reference, nanoGPT's math in its layout) is now matched to 1e-4; it was 1.7e-3 off."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50257, n_positions=16, n_embd=48, n_head=3, n_layer=2, activation_function="gelu")
    ref = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # trained-size weights: the MLP's inputs spread over the range where the GELUs differ
        for name, p in ref.named_parameters():
            p.add_(0.3 * torch.randn_like(p)) if "ln_" not in name else None
    torch.save(nanogpt_checkpoint(ref), tmp_path / "ckpt.pt")
    assert load_checkpoint(tmp_path)[0].activation_function == "gelu"
    assert close_to_hf(tmp_path, ref, width=50257) <= 1e-4


def test_a_run_of_numbered_checkpoints(pair, tmp_path):
    """Training scripts that keep several checkpoints (forks of nanoGPT's train.py) write ckpt_1000.pt, ckpt_2000.pt
    in out_dir, and no ckpt.pt: the folder was 'no model found'. One is loaded; several are named for the user to pick
    (nanoGPT's sample.py reads only ckpt.pt, so no choice is made for them), the newest by step number suggested."""
    _, ref = pair("odd")
    torch.save(nanogpt_checkpoint(ref), tmp_path / "ckpt_900.pt")
    (tmp_path / "optimizer.pt").write_bytes((tmp_path / "ckpt_900.pt").read_bytes()[:4])  # not a model: left alone
    assert detect(tmp_path) == "nanogpt"
    assert close_to_hf(tmp_path, ref, width=50257) <= 1e-4
    from npgpt.formats import model_files

    assert model_files(tmp_path) == [tmp_path / "ckpt_900.pt"]
    for step in (1000, 2000):
        torch.save(nanogpt_checkpoint(ref), tmp_path / f"ckpt_{step}.pt")
    newest = tmp_path / "ckpt_2000.pt"
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path)
    assert str(e.value) == (
        f"{tmp_path}: holds several model files (ckpt_900.pt, ckpt_1000.pt, ckpt_2000.pt); "
        f"pass the path of the one to load, e.g. the newest, {newest}"
    )
    assert detect(newest) == "nanogpt"
    torch.save(nanogpt_checkpoint(ref), tmp_path / "ckpt.pt")  # nanoGPT's own name: what its sample.py reads
    assert model_files(tmp_path) == [tmp_path / "ckpt.pt"]


def test_a_character_level_checkpoint_is_named_at_load(pair, tmp_path):
    """nanoGPT's README quick start trains shakespeare_char: 65 characters, vocab_size=65, the table in
    data/shakespeare_char/meta.pkl. It loaded without a word, and every prompt was then refused ('prompt 0 has
    token id 31373, outside the vocabulary [0, 65)'). Its logits of its own ids still come (as for the fixtures'
    64-token models above); the load warns, in one line, what the model is and the ways to run it."""
    from npgpt.errors import CheckpointWarning

    _, ref = pair("odd")
    ckpt = nanogpt_checkpoint(ref)
    ckpt["model_args"]["vocab_size"] = 65
    ckpt["model"]["transformer.wte.weight"] = ckpt["model"]["transformer.wte.weight"][:65].clone()
    ckpt["model"]["lm_head.weight"] = ckpt["model"]["transformer.wte.weight"]
    ckpt["config"]["dataset"] = "shakespeare_char"
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.warns(CheckpointWarning) as caught:
        model = npgpt.load(tmp_path)
    said = str(caught[0].message)
    assert said.startswith(f"{tmp_path / 'ckpt.pt'}: a model of 65 tokens (model_args vocab_size), not GPT-2's 50257")
    assert "data/shakespeare_char/meta.pkl" in said and "nanoGPT's sample.py" in said and "\n" not in said
    assert model.logits(np.array([[1, 2, 64]])).shape == (1, 3, 65)
