"""``npgpt eval`` against Hugging Face: the same weights, the guide's sliding-window loop.

The model is random but with large weights (std 0.3), so its predictions are far from uniform
and depend on the context: a window that scored the wrong tokens, or with the wrong context,
would change the perplexity by far more than the tolerances here.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import model_files, run_cli

from npgpt.api import GPT2
from npgpt.config import GPT2Config
from npgpt.errors import NpgptError
from npgpt.evaluate import perplexity, windows
from npgpt.formats import hf
from npgpt.params import init_params

FIXTURE = Path(__file__).parent / "fixtures" / "kjv_heldout.txt"
CONFIG = GPT2Config(n_ctx=64, n_embd=32, n_head=2, n_layer=2)
TEXT = FIXTURE.read_text(encoding="utf-8")[:1500]  # ~330 tokens: six windows of 64, stride 48


@functools.cache
def models(root: str) -> tuple[GPT2, object, Path]:
    """(npgpt model, HF GPT2LMHeadModel, HF folder) with identical weights."""
    from transformers import GPT2LMHeadModel

    params = init_params(CONFIG, seed=7, std=0.3)
    path = hf.save(Path(root) / "hf-eval", CONFIG, params)
    ref = GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    return GPT2(CONFIG, params, source=str(path)), ref, path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    return models(str(tmp_path_factory.mktemp("eval")))


def hf_guide_perplexity(ref, ids: list[int], max_length: int, stride: int) -> float:
    """The loop of Hugging Face's "Perplexity of fixed-length models" guide, as published."""
    import torch

    input_all = torch.tensor([ids])
    seq_len = input_all.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
        input_ids = input_all[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            neg_log_likelihood = ref(input_ids, labels=target_ids).loss
        num_valid_tokens = (target_ids != -100).sum().item()
        num_loss_tokens = num_valid_tokens - target_ids.size(0)  # the guide: subtract batch_size
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return float(torch.exp(nll_sum / n_tokens))


def hf_exact_perplexity(ref, ids: list[int], max_length: int, stride: int) -> float:
    """The guide's windows, with each window's loss weighted by the tokens it really scored."""
    import torch

    input_all = torch.tensor([ids])
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, len(ids), stride):
        end_loc = min(begin_loc + max_length, len(ids))
        trg_len = end_loc - prev_end_loc
        input_ids = input_all[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = float(ref(input_ids, labels=target_ids).loss)
        scored = int((target_ids[:, 1:] != -100).sum())  # HF shifts the labels left by one
        nll_sum += loss * scored
        n_tokens += scored
        prev_end_loc = end_loc
        if end_loc == len(ids):
            break
    return math.exp(nll_sum / n_tokens)


def test_windows_score_every_token_once() -> None:
    for n, window, stride in [(330, 64, 48), (64, 64, 32), (10, 64, 32), (101, 20, 7), (200, 50, 49)]:
        scored = [t for _, end, first in windows(n, window, stride) for t in range(first, end)]
        assert scored == list(range(1, n)), (n, window, stride)
        assert all(end - begin <= window for begin, end, _ in windows(n, window, stride))
    # Disjoint windows (stride == window), as in HF: a window's first token has no context in
    # it, so it is not scored.
    scored = [t for _, end, first in windows(200, 50, 50) for t in range(first, end)]
    assert scored == [t for t in range(1, 200) if t % 50]


@pytest.mark.parametrize("window,stride,batch_size", [(64, 48, 4), (64, 32, 1), (40, 40, 8), (64, 13, 3)])
def test_matches_hugging_face(pair, window: int, stride: int, batch_size: int) -> None:
    model, ref, _ = pair
    ids = model.tokenizer.encode(TEXT)
    ours = perplexity(model, TEXT, window=window, stride=stride, batch_size=batch_size)
    assert ours["tokens"] == len(ids) - 1 - (len(ids) - 1) // window * (stride == window)
    assert ours["perplexity"] == pytest.approx(hf_exact_perplexity(ref, ids, window, stride), rel=1e-5)
    if stride >= window // 2:  # the guide weights each window by one token fewer than it scored:
        # a bias that grows as the stride shrinks (0.2 % at stride 13 with this model)
        assert ours["perplexity"] == pytest.approx(hf_guide_perplexity(ref, ids, window, stride), rel=1e-3)
    assert math.log(ours["perplexity"]) == pytest.approx(ours["cross_entropy"])


def test_short_text_is_one_window(pair) -> None:
    import torch

    model, ref, _ = pair
    ids = model.tokenizer.encode("In the beginning God created the heaven and the earth.")
    with torch.no_grad():
        loss = float(ref(torch.tensor([ids]), labels=torch.tensor([ids])).loss)
    assert perplexity(model, ids)["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)


def test_bad_arguments(pair) -> None:
    model = pair[0]
    with pytest.raises(NpgptError, match="context of 64"):
        perplexity(model, TEXT, window=65)
    with pytest.raises(NpgptError, match="stride"):
        perplexity(model, TEXT, window=32, stride=33)
    with pytest.raises(NpgptError, match="at least 2"):
        perplexity(model, "A")
    for kwargs in ({"window": 32.5}, {"stride": 2.5}, {"batch_size": 1.5}, {"window": True}):  # TypeError or ran before
        with pytest.raises(NpgptError, match=f"^{next(iter(kwargs))} must be a whole number"):
            perplexity(model, TEXT, **kwargs)


def test_cli_matches_hugging_face(pair, tmp_path: Path) -> None:
    model, ref, path = pair
    data = tmp_path / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    result = run_cli(
        "eval", "--data", str(data), "--model", str(path), "--window", "64", "--stride", "48", "--batch-size", "4"
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    expected = hf_guide_perplexity(ref, model.tokenizer.encode(TEXT), 64, 48)
    assert float(lines["perplexity"]) == pytest.approx(expected, rel=1e-3)
    assert int(lines["tokens"].replace(",", "")) == len(model.tokenizer.encode(TEXT)) - 1


def test_cli_errors_are_one_line(pair, tmp_path: Path) -> None:
    path = pair[2]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    for args, message in [
        (["--data", str(tmp_path / "missing.txt")], "cannot read"),
        (["--data", str(empty)], "is empty or only whitespace"),  # "\n" alone: it said just "is empty"
        (["--data", str(data), "--model", str(path), "--window", "65"], "context of 64"),
    ]:
        result = run_cli("eval", *args)
        assert result.returncode == 1, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr


def test_cli_evaluates_a_token_file_as_nanogpt_scores_its_val_bin(pair, tmp_path: Path) -> None:
    """nanoGPT's held-out text is val.bin, GPT-2's ids as uint16: `npgpt eval val.bin` said "binary, not text". A
    .bin token file is scored as its ids, the same perplexity as the text they encode; a text named .bin is still
    text; character-level ids (meta.pkl beside them) and ids written as int32 are named in one line."""
    model, _, path = pair
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    val = tmp_path / "data" / "val.bin"
    val.parent.mkdir()
    np.asarray(model.tokenizer.encode(TEXT), np.uint16).tofile(val)
    args = ("--model", str(path), "--window", "64", "--stride", "48", "--json")
    by_text, by_ids = run_cli("eval", str(text), *args), run_cli("eval", str(val), *args)
    assert by_ids.returncode == 0, by_ids.stderr
    assert by_ids.stdout.replace(str(val), "X") == by_text.stdout.replace(str(text), "X")
    named_bin = tmp_path / "notes.bin"
    named_bin.write_text(TEXT, encoding="utf-8")
    assert run_cli("eval", str(named_bin), *args).stdout.replace(str(named_bin), "X") == by_text.stdout.replace(
        str(text), "X"
    )
    np.asarray(model.tokenizer.encode(TEXT), "<i4").tofile(val)
    (tmp_path / "data" / "wide.bin").write_bytes(val.read_bytes())
    for file, said in [
        (tmp_path / "data" / "wide.bin", "token ids written as int32, not uint16"),
        (val, "nanoGPT's meta.pkl beside it says these are ids of the text's own characters"),
    ]:
        if file == val:
            (tmp_path / "data" / "meta.pkl").write_bytes(b"\x80\x04")
        result = run_cli("eval", str(file), *args)
        assert result.returncode == 1 and said in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_cli_a_model_file_given_as_the_text_says_to_give_it_as_the_model(tmp_path: Path) -> None:
    """llama-perplexity's users write -m MODEL -f TEXT; `npgpt eval gpt2_124M.bin` (an llm.c model) was told
    training's way ("not tokens to train on; start from it with --init"), model.bin was scored as ids ("token id
    65535 outside the vocabulary"), and score said "binary, not text". Each names the model and the way."""
    files = model_files(tmp_path)
    for command, kind in [
        ("eval", "an llm.c model file"),
        ("eval", "a safetensors model file "),
        ("eval", "a PyTorch checkpoint (torch.save) "),
        ("score", "a safetensors model file"),
    ]:
        path = files[kind]
        result = run_cli(command, str(path))
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip() == (
            f"error: {path}: {kind.strip()}, not a text to score; give it as the model and the text after it: "
            f"npgpt {command} -m {path} TEXT_FILE"
        )


def test_cli_a_token_file_with_ids_past_the_models_vocabulary_names_the_file(tmp_path: Path) -> None:
    """`npgpt eval val.bin` with an id the model has no token for said 'text has token id 100, outside the
    vocabulary [0, 64)': of a text no one gave. The file is named."""
    model = model_files(tmp_path)["a safetensors model file"]  # 64 tokens
    ids = tmp_path / "val.bin"
    np.array([1, 2, 3, 100, 5, 6] * 10, np.uint16).tofile(ids)
    result = run_cli("eval", str(ids), "-m", str(model))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {ids} has token id 100, outside the vocabulary [0, 64)"


def test_cli_eval_has_the_special_tokens_option_its_hint_names(pair, tmp_path: Path) -> None:
    """npgpt eval on a one-token text said to put <|endoftext|> before it "with --special-tokens", an option
    only npgpt score had: eval said "No such option". eval now takes it and scores the first token."""
    one = tmp_path / "one.txt"
    one.write_text("Hi")
    result = run_cli("eval", "--data", str(one), "--model", str(pair[2]))
    assert result.returncode == 1 and "with --special-tokens" in result.stderr, result.stderr
    one.write_text("<|endoftext|>Hi")
    result = run_cli("eval", "--data", str(one), "--model", str(pair[2]), "--special-tokens", "--json")
    assert result.returncode == 0, result.stderr
    assert '"tokens": 1' in result.stdout, result.stdout
    text = run_cli("eval", "--data", str(one), "--model", str(pair[2]), "--json")
    assert text.returncode == 0 and '"tokens": 7' in text.stdout, text.stdout  # by default the marker is text


def test_cli_eval_in_a_log_leaves_no_empty_line(pair, tmp_path: Path) -> None:
    """The progress bar is for a terminal: with stderr a file or pipe it left an empty line there."""
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    result = run_cli("eval", "--data", str(data), "--model", str(pair[2]))
    assert result.returncode == 0, result.stderr
    assert "" not in result.stderr.splitlines() and "perplexity" in result.stdout


def test_cli_help_has_an_example() -> None:
    result = run_cli("eval", "--help")
    assert result.returncode == 0 and "Example: npgpt eval heldout.txt" in result.stdout


def test_window_padding_does_not_leak() -> None:
    """The right-padded last window scores exactly as an unpadded forward would."""
    model = GPT2(CONFIG, init_params(CONFIG, seed=3, std=0.3))
    ids = np.random.default_rng(0).integers(0, 50257, 100).tolist()
    a = perplexity(model, ids, window=64, stride=30, batch_size=8)  # last window padded in the batch
    b = perplexity(model, ids, window=64, stride=30, batch_size=1)  # every window alone
    assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-6)
