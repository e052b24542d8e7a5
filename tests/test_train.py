"""Training: data preparation, the step, exact resume after a kill, memorising a text, the CLI.

Models here are tiny (one or two layers, width 32-64) so every test runs in seconds on a CPU.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

jax = pytest.importorskip("jax")
pytest.importorskip("optax")

import jax.numpy as jnp  # noqa: E402
from conftest import model_files  # noqa: E402

from npgpt.config import GPT2Config  # noqa: E402
from npgpt.errors import NpgptError  # noqa: E402
from npgpt.formats import hf, npgpt_format  # noqa: E402
from npgpt.model import gpt2  # noqa: E402
from npgpt.params import flatten, init_params  # noqa: E402
from npgpt.tokenizer import Tokenizer  # noqa: E402
from npgpt.train import data as D  # noqa: E402
from npgpt.train.checkpoint import STATE_FILE, load_init, load_state  # noqa: E402
from npgpt.train.loop import train  # noqa: E402
from npgpt.train.settings import TrainSettings  # noqa: E402
from npgpt.train.step import accumulated_grads, schedule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LINE = "The quick brown fox jumps over the lazy dog. npgpt learns this line by heart."


def corpus(n_lines: int = 60) -> str:
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    return "\n".join(" ".join(rng.choice(words, size=8)) for _ in range(n_lines)) + "\n"


# --- data ----------------------------------------------------------------------------------


def test_chunked_tokenisation_is_exact():
    text = "Hello there.\n\n  indented line\nnext line\n\n\nend  \n" * 40
    tok = Tokenizer()
    pieces = D._chunks(text, size=37)
    assert len(pieces) > 10 and "".join(pieces) == text
    assert [i for p in pieces for i in tok.encode(p)] == tok.encode(text)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["a", "b", " ", "\n", "\n\n", "x y", "\t", "é", ".", "1", "'s", "\r\n", "\u3000", "日本"]),
        max_size=40,
    ).map("".join),
    st.integers(1, 20),
)
def test_chunks_never_change_the_ids(text, size):
    # e.g. "x ya\n\né": cut after "\n\n", the run would tokenise as one "\n\n" instead of "\n", "\n"
    tok = Tokenizer()
    pieces = D._chunks(text, size)
    assert "".join(pieces) == text
    assert [i for p in pieces for i in tok.encode(p)] == tok.encode(text)


def test_folder_tokenised_once_with_separators(tmp_path):
    src = tmp_path / "docs"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("first document")
    (src / "sub" / "b.txt").write_text("second one")
    (src / ".hidden").write_text("never read")
    tok = Tokenizer()
    path = D.tokenize_to_file(src, tmp_path / "tokens.bin")
    expected = tok.encode("first document") + [tok.eot_id] + tok.encode("second one")
    assert D.open_tokens(path).tolist() == expected
    stamp = path.stat().st_mtime_ns
    assert D.tokenize_to_file(src, path) == path and path.stat().st_mtime_ns == stamp  # reused
    (src / "a.txt").write_text("changed document")
    os.utime(src / "a.txt", ns=(stamp + 10**9, stamp + 10**9))
    assert D.open_tokens(D.tokenize_to_file(src, path))[:2].tolist() == tok.encode("changed document")


def test_an_empty_file_in_the_data_is_no_document(tmp_path):
    """An empty file got an <|endoftext|> of its own: two in a row between its neighbours, and a folder of empty
    files was "1 training tokens, too few for seq_len" instead of no text at all."""
    src = tmp_path / "docs"
    src.mkdir()
    for name, text in [("a.txt", ""), ("b.txt", "first"), ("c.txt", ""), ("d.txt", "second")]:
        (src / name).write_text(text)
    tok = Tokenizer()
    path = D.tokenize_to_file(src, tmp_path / "tokens.bin")
    assert D.open_tokens(path).tolist() == [*tok.encode("first"), tok.eot_id, *tok.encode("second")]
    for name in ("b.txt", "d.txt"):
        (src / name).write_text("")
    with pytest.raises(NpgptError, match="docs: no text to train on"):
        D.tokenize_to_file(src, tmp_path / "tokens.bin")


def test_tokens_made_by_an_older_reading_of_the_text_are_not_reused(tmp_path):
    """An empty file's <|endoftext|> and a UTF-16 file read as text changed how a folder is tokenised, but the
    fingerprint a tokens.bin is reused by did not: a run folder tokenised before (two <|endoftext|> in a row, a
    UTF-16 file's NULs as tokens) kept training on those tokens, on --resume or a new run in it, while the same
    folder tokenised afresh refuses the UTF-16 file. A token file from before is tokenised again."""
    import hashlib

    src = tmp_path / "docs"
    src.mkdir()
    for name, text in [("a.txt", "first"), ("b.txt", ""), ("c.txt", "second")]:
        (src / name).write_text(text)
    tok = Tokenizer()
    old = [*tok.encode("first"), tok.eot_id, tok.eot_id, *tok.encode("second")]  # as npgpt-tokens-v1 read it
    h = hashlib.sha256(b"npgpt-tokens-v1")
    for f in sorted(src.iterdir()):
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    np.asarray(old, dtype=np.uint16).tofile(tmp_path / "tokens.bin")
    sidecar = {"fingerprint": h.hexdigest(), "n_tokens": len(old), "sources": [str(f) for f in sorted(src.iterdir())]}
    (tmp_path / "tokens.bin.json").write_text(json.dumps(sidecar))
    assert D.text_files(src, tmp_path) == sorted(src.iterdir())  # the files the old fingerprint was made of
    path = D.tokenize_to_file(src, tmp_path / "tokens.bin")
    assert D.open_tokens(path).tolist() == [*tok.encode("first"), tok.eot_id, *tok.encode("second")]


@pytest.mark.parametrize("sidecar", ["[1, 2]", "null", '"text"', "{not json"])
def test_a_damaged_tokens_sidecar_means_tokenising_again(tmp_path, sidecar):
    """A tokens.bin.json that was valid JSON but not an object (a list) was an internal AttributeError: any
    sidecar that is not the one written is treated as missing, and the text tokenised again."""
    src = tmp_path / "a.txt"
    src.write_text("first document")
    path = D.tokenize_to_file(src, tmp_path / "tokens.bin")
    (tmp_path / "tokens.bin.json").write_text(sidecar)
    assert D.open_tokens(D.tokenize_to_file(src, path)).tolist() == Tokenizer().encode("first document")
    assert json.loads((tmp_path / "tokens.bin.json").read_text())["n_tokens"] == 2


def test_a_utf16_or_latin1_file_in_the_data_is_named_with_the_fix(tmp_path):
    """A UTF-16 file's NUL bytes are valid UTF-8: it was trained on as text (every other token a NUL); a Latin-1
    one was named without a way out. Each is one line naming the file and the fix; CRLF reads as before."""
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.txt").write_bytes(b"line one\r\nline two\r\n")
    assert D.open_tokens(D.tokenize_to_file(src, tmp_path / "t.bin")).tolist() == Tokenizer().encode(
        "line one\nline two\n"
    )
    for name, data, what in [
        ("b.txt", "cafe".encode("utf-16-le"), "binary or UTF-16, not UTF-8 text (it holds a NUL byte at byte 1)"),
        ("c.txt", "caf\u00e9".encode("latin-1"), "not UTF-8 text (byte 3 is 0xe9)"),
    ]:
        (src / name).write_bytes(data)
        with pytest.raises(NpgptError, match=re.escape(f"{src / name}: {what}; convert it to UTF-8")) as e:
            D.tokenize_to_file(src, tmp_path / "t.bin")
        assert "remove it from the training data" in str(e.value) and "\n" not in str(e.value)
        (src / name).unlink()


def test_an_llmc_token_shard_is_read_without_its_header(tmp_path):
    """llm.c's token shards (dev/data/data_common.py: 256 int32 of header, magic 20240520, then uint16 ids) were read
    with their header as tokens (refused as "token id 54472 is outside the model's vocabulary"): the ids after the
    header are read, as many as it says; a cut or uint32 (version 2) shard is named."""
    ids = np.arange(1, 40, dtype=np.uint16)

    def shard(name, version=1, data=None):
        header = np.zeros(256, "<i4")
        header[:3] = [20240520, version, len(ids)]
        (tmp_path / name).write_bytes(header.tobytes() + (ids.tobytes() if data is None else data))
        return tmp_path / name

    assert D.open_tokens(shard("train.bin")).tolist() == ids.tolist()
    with pytest.raises(NpgptError, match="cut short: it holds 38 of its 39 tokens; re-download or re-make it"):
        D.open_tokens(shard("cut.bin", data=ids.tobytes()[:-2]))
    with pytest.raises(
        NpgptError, match="version 2 .*uint32.*; npgpt reads version 1's"
    ) as e:  # eval's too: no "trains"
        D.open_tokens(shard("llama.bin", version=2, data=ids.astype("<u4").tobytes()))
    assert "train" not in str(e.value)
    from npgpt.formats import save_checkpoint

    config = GPT2Config(n_ctx=8, n_embd=8, n_head=2, n_layer=1, n_vocab=64)
    model = save_checkpoint(tmp_path / "gpt2_124M.bin", config, init_params(config), fmt="llmc")
    with pytest.raises(NpgptError, match="an llm.c model file, not tokens to train on; start from it with init="):
        D.open_tokens(model)  # its magic 20240326 and first weights would pass as ids


def test_a_model_file_given_as_the_data_is_named_with_the_way_to_train_from_it(tmp_path):
    """A model given as the training data was read as its bytes: model.safetensors or nanoGPT's ckpt.pt as text
    ("binary or UTF-16, not UTF-8 text; convert it to UTF-8 (e.g. iconv ...)"), a model.bin as token ids ("token
    id 65535 is outside the model's vocabulary"), HF's pytorch_model.bin "not a uint16 token file (size ...)". Each
    kind is named, with the way to start from it."""
    for kind, path in model_files(tmp_path).items():
        what = "tokens" if path.suffix == ".bin" else "text"
        with pytest.raises(NpgptError) as e:
            D.load_tokens(path, tmp_path / "run")
        assert (
            str(e.value)
            == f"{path}: {kind.strip()}, not {what} to train on; start from it with init=, and train on text"
        )


def test_a_token_file_starting_like_a_model_is_still_tokens(tmp_path):
    """Two bytes are no model: a token file whose first id is 640 (a legacy torch pickle's first two bytes) or whose
    bytes 8-9 spell '{"' is read as ids."""
    for first in ([640, 1, 2, 3, 4], [1, 2, 3, 4, ord("{") + 256 * ord('"')]):
        ids = np.array([*first, *range(100, 200)], np.uint16)
        ids.tofile(tmp_path / "train.bin")
        assert D.load_tokens(tmp_path / "train.bin", tmp_path / "run").tolist() == ids.tolist()


@pytest.mark.parametrize(
    "content",
    [
        b"<!DOCTYPE html><html><body>Sign in to continue</body></html>\n",
        b'{"error":"Access to dataset is restricted. You must be authenticated to access it."}',
        b"First Citizen:\nBefore we proceed any further, hear me speak.\n",
    ],
)
def test_text_named_bin_is_not_read_as_token_ids(tmp_path, content):
    """A .bin is read as uint16 ids: an error page saved by curl -o, or text named .bin, of an even size was
    trained on as ids (two letters each, every one in GPT-2's vocabulary) with nothing said. It is named as text."""
    path = tmp_path / "train.bin"
    path.write_bytes(content + b" " * (len(content) % 2))
    with pytest.raises(NpgptError, match=f"{re.escape(str(path))}: text, not a uint16 token file"):
        D.open_tokens(path)
    assert D.open_tokens(D.tokenize_to_file(_text(tmp_path, content), tmp_path / "t.bin")).size > 0


@pytest.mark.parametrize("dtype", ["<i4", "<u4", "<i8"])
def test_token_ids_written_wider_than_uint16_are_named(tmp_path, dtype):
    """A token file written with np.array(ids).tofile (NumPy's int64) or as int32 was read as uint16 ids: each id
    then its high half, 0, GPT-2's "!", every id in the vocabulary, so the run trained on ids with a "!" between
    each two and exited 0. It is named, with the dtype and how to write uint16; the same ids as uint16 load."""
    ids = Tokenizer().encode(corpus(20))
    path = tmp_path / "train.bin"
    np.asarray(ids, dtype=dtype).tofile(path)
    width = "int64" if dtype == "<i8" else "int32"
    with pytest.raises(NpgptError, match=re.escape(f"{path}: token ids written as {width}, not uint16")) as e:
        D.load_tokens(path, tmp_path)
    assert "np.array(ids, dtype=np.uint16).tofile(path)" in str(e.value) and "\n" not in str(e.value)
    np.asarray(ids, dtype=np.uint16).tofile(path)
    assert D.load_tokens(path, tmp_path).tolist() == ids


def test_nanogpts_character_ids_are_not_read_as_gpt2s(tmp_path):
    """nanoGPT's shakespeare_char prepare.py writes the ids of the text's sorted characters to train.bin and their
    table to meta.pkl: `npgpt train data/shakespeare_char/train.bin` trained on them as GPT-2's ids (all in its
    vocabulary) and exited 0, a model whose every generation decodes to other characters. The token file is
    refused naming meta.pkl and the way that gives nanoGPT's ids: the text with tokenizer='char'."""
    import pickle

    text = corpus(20)
    chars = sorted(set(text))  # nanoGPT's data/shakespeare_char/prepare.py
    (tmp_path / "input.txt").write_text(text)
    np.array([chars.index(c) for c in text], dtype=np.uint16).tofile(tmp_path / "train.bin")
    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": {}}, f)
    with pytest.raises(NpgptError, match="nanoGPT's meta.pkl beside it says these are ids of the text's own") as e:
        D.load_tokens(tmp_path / "train.bin", tmp_path / "run")
    fix = f"tokenizer='char', whose ids are nanoGPT's (the sorted characters): {tmp_path / 'input.txt'}"
    assert fix in str(e.value)
    assert e.value.keywords == ("tokenizer",)
    tok = D.char_tokenizer(tmp_path / "input.txt")  # the way it names gives nanoGPT's very ids
    assert tok.encode(text) == np.fromfile(tmp_path / "train.bin", np.uint16).tolist()
    (tmp_path / "meta.pkl").unlink()  # GPT-2's ids (nanoGPT's shakespeare, openwebtext) have no meta.pkl
    assert len(D.load_tokens(tmp_path / "train.bin", tmp_path / "run")) == len(text)


def test_a_folder_holding_token_files_names_them_not_iconv(tmp_path):
    """nanoGPT's data folder given as the data (`npgpt train data/shakespeare_char`: input.txt, prepare.py, train.bin,
    val.bin, meta.pkl) was read as text files, and said "meta.pkl (or train.bin): binary or UTF-16, not UTF-8 text;
    convert it to UTF-8 (e.g. iconv ...)": advice for a text file, given for token ids. A token file in a folder is
    named as one, with the way: the .bin alone, or for nanoGPT's character-level data its text with tokenizer='char'.
    A text file named .bin in a folder is still text."""
    data = tmp_path / "shakespeare"
    data.mkdir()
    (data / "input.txt").write_text(corpus(5))
    (data / "prepare.py").write_text("import numpy as np\n")
    np.arange(1, 100, dtype=np.uint16).tofile(data / "train.bin")
    np.arange(1, 100, dtype=np.uint16).tofile(data / "val.bin")
    with pytest.raises(NpgptError, match=re.escape(f"{data}: {data / 'train.bin'} is a token file, not text")) as e:
        D.text_files(data)
    assert "pass the token file itself as the data" in str(e.value) and "iconv" not in str(e.value)
    (data / "meta.pkl").write_bytes(b"\x80\x04\x95\x00")
    with pytest.raises(NpgptError, match=re.escape(f"{data}: nanoGPT's character-level data (train.bin, meta.pkl)")):
        D.tokenize_to_file(data, tmp_path / "t.bin")
    with pytest.raises(NpgptError, match=f"tokenizer='char'.*: {re.escape(str(data / 'input.txt'))}$"):
        D.char_tokenizer(data)
    for name in ("meta.pkl", "train.bin", "val.bin", "prepare.py"):
        (data / name).unlink()
    (data / "notes.bin").write_text("Text that happens to be named .bin.\n")
    assert D.text_files(data) == [data / "input.txt", data / "notes.bin"]


VAL_RUN = dict(n_layer=1, n_embd=16, n_head=2, n_ctx=16, steps=3, batch_size=2, seq_len=8, warmup=1, eval_interval=3)


def _nanogpt_data(folder: Path, n_train: int = 2400, n_val: int = 600) -> Path:
    """nanoGPT's data folder as its prepare.py writes it (data/openwebtext/: GPT-2's ids in train.bin and val.bin)."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.random.default_rng(5).integers(0, 500, size=n_train + n_val).astype(np.uint16)
    ids[:n_train].tofile(folder / "train.bin")
    ids[n_train:].tofile(folder / "val.bin")
    (folder / "prepare.py").write_text("import numpy as np\n")
    return folder


def test_nanogpts_val_bin_is_the_held_out_text(tmp_path):
    """nanoGPT's data comes as train.bin and val.bin, and its train.py measures the held-out loss on val.bin. npgpt
    trained on train.bin and held out its last tenth (val.bin never read), and refused the data folder itself. Now
    train.bin, or its folder, trains on all of train.bin and scores val.bin, as nanoGPT: the same losses as a run
    on the two joined that holds out exactly val.bin's share. The result and the checkpoint say which was held out;
    val_fraction= given still splits, as asked."""
    data = _nanogpt_data(tmp_path / "data")
    by_file = train(data / "train.bin", tmp_path / "a", TrainSettings(**VAL_RUN))
    by_folder = train(data, tmp_path / "b", TrainSettings(**VAL_RUN))
    joined = tmp_path / "joined.bin"
    joined.write_bytes((data / "train.bin").read_bytes() + (data / "val.bin").read_bytes())
    split = train(joined, tmp_path / "c", TrainSettings(**VAL_RUN, val_fraction=0.2))
    assert by_file.history["val_loss"] and by_file.history == by_folder.history == split.history
    assert by_file.held_out == str(data / "val.bin") and split.held_out == "the last 20% of the tokens"
    saved = load_state(tmp_path / "a" / STATE_FILE)[3]
    assert saved["data"]["held_out"] == str(data / "val.bin") and saved["settings"]["val_fraction"] == 0.0
    asked = train(data, tmp_path / "d", TrainSettings(**VAL_RUN, val_fraction=0.2))  # given: the split, as asked
    assert asked.held_out == "the last 20% of the tokens" and asked.history != by_folder.history
    # llm.c's dev/data scripts name theirs NAME_train.bin and NAME_val.bin
    (data / "train.bin").rename(data / "tiny_train.bin")
    (data / "val.bin").rename(data / "tiny_val.bin")
    assert D.held_out_file(data / "tiny_train.bin") == data / "tiny_val.bin"
    assert D.held_out_file(joined) is None


def test_a_resume_holds_out_what_the_run_held_out(tmp_path):
    """A resumed run scores what it scored before: val.bin for a run that used it (gone now: one line, not a
    silent switch to the split), the split for runs saved before the held-out file was recorded."""
    from npgpt.train.start import _held_out_file

    data = _nanogpt_data(tmp_path / "data")
    train(data / "train.bin", tmp_path / "run", TrainSettings(**VAL_RUN))
    resumed = train(data / "train.bin", tmp_path / "run", TrainSettings(**{**VAL_RUN, "steps": 4}), resume=True)
    assert resumed.held_out == str(data / "val.bin") and len(resumed.history["val_loss"]) == 2
    (data / "val.bin").rename(data / "v.bin")
    with pytest.raises(NpgptError, match=r"measured its held-out loss on .*val\.bin, and there is no such file") as e:
        train(data / "train.bin", tmp_path / "run", TrainSettings(**{**VAL_RUN, "steps": 5}), resume=True)
    assert "\n" not in str(e.value)
    (data / "v.bin").rename(data / "val.bin")
    older = {"source": str(data / "train.bin"), "n_tokens": 2400, "fingerprint": "x"}  # no "held_out" recorded
    assert _held_out_file(data / "train.bin", TrainSettings(), older, tmp_path) is None
    assert _held_out_file(data / "train.bin", TrainSettings(), {}, tmp_path) is None


@pytest.mark.timeout(120)  # a bound on a hang (a FIFO that no one writes), not a speed threshold
def test_a_val_bin_that_cannot_be_scored_is_named(tmp_path):
    """val.bin read as the training file is: a FIFO refused before a read, ids past the vocabulary named with the
    file, one too short for a window said in the result, not a silent run without a held-out loss."""
    data = _nanogpt_data(tmp_path / "data")
    (data / "val.bin").unlink()
    os.mkfifo(data / "val.bin")
    with pytest.raises(NpgptError, match=re.escape(f"{data / 'val.bin'}: a FIFO (named pipe), not a regular file")):
        train(data, tmp_path / "a", TrainSettings(**VAL_RUN))
    (data / "val.bin").unlink()
    np.array([1, 2, 60000, 3], np.uint16).tofile(data / "val.bin")
    with pytest.raises(NpgptError, match=re.escape(f"{data / 'val.bin'}: token id 60000 is outside the model's")):
        train(data, tmp_path / "b", TrainSettings(**VAL_RUN))
    np.array([1, 2, 3, 4], np.uint16).tofile(data / "val.bin")
    short = train(data, tmp_path / "c", TrainSettings(**VAL_RUN))
    assert short.history["val_loss"] == [] and "held-out file" in short.no_held_out_loss
    assert "holds 4 tokens, fewer than one window of seq_len=8 + 1" in short.no_held_out_loss
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _text(tmp_path, content: bytes) -> Path:
    (tmp_path / "text.txt").write_bytes(content)
    return tmp_path / "text.txt"


def test_batches_are_random_contiguous_windows():
    tokens = np.arange(1000, dtype=np.uint16)
    rng = np.random.default_rng(7)
    state = rng.bit_generator.state
    batch = D.random_batch(tokens, (2, 3), 16, rng)
    assert batch.shape == (2, 3, 17) and batch.dtype == np.int32
    rows = batch.reshape(-1, 17)
    assert np.all(np.diff(rows, axis=1) == 1)  # consecutive tokens
    assert len({int(r[0]) for r in rows}) > 1
    rng.bit_generator.state = state  # the same RNG state gives the same batch: what resume relies on
    np.testing.assert_array_equal(D.random_batch(tokens, (2, 3), 16, rng), batch)
    windows = D.eval_windows(tokens[:100], batch_size=4, seq_len=9, n_batches=3)
    assert windows.shape == (3, 4, 10)
    np.testing.assert_array_equal(windows, D.eval_windows(tokens[:100], 4, 9, 3))  # no RNG


# --- the step ------------------------------------------------------------------------------


def test_schedule_warms_up_then_decays():
    lr = schedule(1e-3, steps=100, warmup=10)
    values = np.array([float(lr(i)) for i in range(101)])
    assert values[0] > 0 and np.all(np.diff(values[:11]) > 0)
    assert values[10] == pytest.approx(1e-3, rel=1e-5)  # the peak: the first step after warm-up
    assert np.all(np.diff(values[10:]) <= 1e-12)
    assert values[100] == pytest.approx(1e-4, rel=1e-5)


@pytest.mark.parametrize("steps, warmup", [(3 * 10**9, 10), (100, 2**31), (2**63, 2**40)])
def test_schedule_takes_step_counts_past_int32(steps, warmup):
    """Steps and warm-up beyond 2**31 - 1 (--steps 3000000000) are numbers, not an OverflowError from XLA."""
    lr = schedule(1e-3, steps=steps, warmup=warmup)
    assert float(lr(0)) == pytest.approx(1e-3 / (warmup + 1), rel=1e-5)
    assert np.isfinite(float(lr(5)))


def test_gradient_accumulation_equals_one_big_batch():
    """Two micro-batches of 3 windows, accumulated in a scan, give the gradient of all 6 at once."""
    config = GPT2Config(n_vocab=97, n_ctx=16, n_embd=32, n_head=4, n_layer=1)
    params = jax.tree.map(jnp.asarray, init_params(config, 0))
    batch = np.random.default_rng(0).integers(0, 97, (2, 3, 9)).astype(np.int32)
    grads = jax.jit(accumulated_grads, static_argnums=2)
    loss_a, grads_a = grads(params, jnp.asarray(batch), config)
    loss_b, grads_b = grads(params, jnp.asarray(batch.reshape(1, 6, 9)), config)
    assert float(loss_a) == pytest.approx(float(loss_b), rel=1e-6)
    for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_training_loss_and_eval_are_one_definition_on_a_padded_vocabulary():
    """nanoGPT's padded vocabulary (50304 outputs over 50257 tokens) is in the training loss, as nanoGPT's
    train.py and estimate_loss have it; npgpt eval (perplexity) and model.score were over the 50257 tokens
    only, so a fresh run reported another loss than npgpt eval on the same text. Both use the full output."""
    from npgpt.api import GPT2
    from npgpt.evaluate import perplexity
    from npgpt.train.loss import loss
    from npgpt.train.step import make_eval_loss

    config = GPT2Config(n_vocab=50304, n_ctx=16, n_embd=16, n_head=2, n_layer=1)
    params = init_params(config, 0)
    params["wte"][50257:] *= 40  # padded rows with some of the probability, as a fresh model's have a little
    ids = np.random.default_rng(1).integers(0, 50257, 16)
    model = GPT2(config, params)
    evaluated = perplexity(model, ids, window=16)["cross_entropy"]
    assert float(loss(params, ids[None], config)) == pytest.approx(evaluated, rel=1e-5)
    held_out = make_eval_loss(config)(jax.tree.map(jnp.asarray, params), jnp.asarray(ids[None]))
    assert float(held_out) == pytest.approx(evaluated, rel=1e-5)
    assert -model.score(ids).log_likelihood / 15 == pytest.approx(evaluated, rel=1e-9)


# --- memorise, then generate ---------------------------------------------------------------


def greedy(params: dict, config: GPT2Config, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        logits, _ = gpt2(np.array([ids]), params, config, last_only=True)
        ids.append(int(np.argmax(logits[0, -1])))
    return ids


def test_memorises_a_text_and_generates_it(tmp_path):
    (tmp_path / "line.txt").write_text(LINE)
    ids = Tokenizer().encode(LINE)
    out = tmp_path / "run"
    result = train(
        tmp_path / "line.txt",
        out,
        TrainSettings(
            n_layer=2,
            n_embd=64,
            n_head=4,
            n_ctx=32,
            steps=60,
            batch_size=2,
            seq_len=len(ids) - 1,
            lr=1e-2,
            warmup=5,
            val_fraction=0.0,
            eval_interval=60,
        ),
    )
    assert result.step == 60 and result.history["loss"][-1] < 0.05
    config, params = npgpt_format.load(out / "model.safetensors")
    assert config == result.config
    assert Tokenizer().decode(greedy(params, config, ids[:1], len(ids) - 1)) == LINE
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    import npgpt

    if hasattr(npgpt, "load"):  # the high-level API, where present
        first = Tokenizer().decode(ids[:1])
        text = npgpt.load(out).generate(first, max_new_tokens=len(ids) - 1, temperature=0)
        assert (text if text.startswith(first) else first + text) == LINE


# --- exact resume --------------------------------------------------------------------------

RUN = dict(
    n_layer=1,
    n_embd=32,
    n_head=2,
    n_ctx=16,
    steps=8,
    batch_size=2,
    seq_len=8,
    grad_accum=2,
    lr=3e-3,
    warmup=2,
    seed=3,
    eval_interval=4,
    checkpoint_interval=3,
    val_fraction=0.2,
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, and its text."""
    tmp = tmp_path_factory.mktemp("reference")
    (tmp / "text.txt").write_text(corpus())
    return tmp / "text.txt", train(tmp / "text.txt", tmp / "run", TrainSettings(**RUN))


def assert_same_run(result, ref):
    assert result.step == ref.step == RUN["steps"]
    assert result.history == ref.history  # same losses, bit for bit, and the same evaluations
    for name, value in flatten(ref.params).items():
        np.testing.assert_array_equal(flatten(result.params)[name], value, err_msg=name)


@pytest.mark.slow
def test_stopped_run_resumes_to_identical_weights(reference, tmp_path):
    """The in-process version of the test below: ``stop_after`` ends a run right after a checkpoint."""
    text, ref = reference
    stopped = train(text, tmp_path / "run", TrainSettings(**RUN), stop_after=5)
    assert stopped.step == 5 and load_state(tmp_path / "run" / STATE_FILE)[3]["step"] == 5
    assert_same_run(train(text, tmp_path / "run", TrainSettings(**RUN), resume=True), ref)


def test_killed_run_resumes_to_identical_weights(reference, tmp_path):
    """SIGKILL a real training process after step 5 (its last checkpoint: step 3), resume."""
    text, ref = reference
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import sys, time
        from npgpt.train import TrainSettings, train
        def progress(p):
            print(p.step, flush=True)
            if p.step == 5:
                time.sleep(600)  # the parent kills us here
        train({str(text)!r}, {str(out)!r}, TrainSettings(**{RUN!r}), progress=progress)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        for line in proc.stdout:
            if line.strip() == "5":
                break
        else:
            pytest.fail(f"training process ended early (rc {proc.wait()})")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert load_state(out / STATE_FILE)[3]["step"] == 3
    # Only resume=True: every setting, the model and the RNG come from the checkpoint.
    assert_same_run(train(text, out, resume=True), ref)


def test_resume_on_other_data_is_refused_naming_both(reference, tmp_path):
    """A resume that read other text went on silently, a fine-tune under the old run's name; the same text
    at another path (the run moved, the corpus copied) is the same data and resumes."""
    text, ref = reference
    out = tmp_path / "run"
    shutil.copytree(ref.out, out)
    other = tmp_path / "other.txt"
    other.write_text(corpus(80))
    tokens = {name: (out / name).read_bytes() for name in ("tokens.bin", "tokens.bin.json")}
    with pytest.raises(NpgptError) as err:
        train(other, out, TrainSettings(steps=RUN["steps"] + 1), resume=True)
    # the refused text's tokens were left in the run's place (the next resume tokenised the corpus again)
    assert {name: (out / name).read_bytes() for name in tokens} == tokens
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    message = str(err.value)
    assert "\n" not in message and str(other) in message and str(text) in message
    assert f"init='{out}'" in message and "another out=" in message
    copy = tmp_path / "copy.txt"
    shutil.copy(text, copy)
    assert train(copy, out, TrainSettings(steps=RUN["steps"] + 1), resume=True).step == RUN["steps"] + 1


# --- init, errors --------------------------------------------------------------------------


def test_init_reads_npgpt_hf_and_run_folders(reference, tmp_path):
    config = GPT2Config(n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    params = init_params(config, 5)
    npgpt_format.save(tmp_path / "m.safetensors", config, params)
    hf.save(tmp_path / "hf", config, params)
    for init in (tmp_path / "m.safetensors", tmp_path / "hf"):
        got_config, got = load_init(init)
        assert got_config == config
        for name, value in flatten(params).items():
            np.testing.assert_array_equal(flatten(got)[name], value)
    _, ref = reference
    got_config, got = load_init(ref.out)  # a training run's folder is a valid --init
    assert got_config == ref.config
    np.testing.assert_array_equal(got["wte"], ref.params["wte"])


def test_a_fine_tune_keeps_the_tokens_its_init_ends_generations_at(tmp_path):
    """A GPT-2 whose generations end at another token (generation_config.json's eos_token_id) trained, but its
    fine-tune's model lost that eos_token_id and generated past it; it is kept, across a resume too."""
    from npgpt.formats import tokenizer_spec

    config = GPT2Config(n_ctx=16, n_embd=16, n_head=2, n_layer=1)
    hf.save(tmp_path / "hf", config, init_params(config, 0))
    (tmp_path / "hf" / "generation_config.json").write_text(json.dumps({"eos_token_id": [198, 50256]}))
    (tmp_path / "t.txt").write_text(corpus(5))
    run = dict(init=str(tmp_path / "hf"), steps=2, batch_size=2, seq_len=8)
    out = tmp_path / "run"
    train(tmp_path / "t.txt", out, TrainSettings(**run), stop_after=1)
    assert tokenizer_spec(out)["eos_token_id"] == [198, 50256]
    assert train(tmp_path / "t.txt", out, TrainSettings(**run), resume=True).step == 2
    assert tokenizer_spec(out)["eos_token_id"] == [198, 50256]
    assert load_state(out / STATE_FILE)[3]["tokenizer"]["eos_token_id"] == [198, 50256]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(init="x.safetensors", n_layer=2), "not both"),
        (dict(n_head=5, n_embd=32), "divisible"),
        (dict(n_ctx=8, seq_len=16), "exceeds the model's context"),
        (dict(n_ctx=128, seq_len=100), "too few"),
        (dict(init="no/such/model"), "no/such/model"),
    ],
)
def test_user_errors_are_one_line(tmp_path, kwargs, message):
    (tmp_path / "t.txt").write_text(corpus(5))
    base = dict(n_layer=1, n_embd=32, n_head=2, n_ctx=16, steps=1, batch_size=2)
    init = kwargs.get("init")
    if init is not None:
        base = {k: v for k, v in base.items() if not k.startswith("n_")}
    seq_len = kwargs.pop("seq_len", 8)
    with pytest.raises(NpgptError, match=message) as err:
        train(tmp_path / "t.txt", tmp_path / "run", TrainSettings(**{**base, **kwargs, "seq_len": seq_len}))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs, python, cli",
    [
        (
            dict(init="x.safetensors", n_layer=2),
            "pass init= or a model shape (n_layer=), not both",
            "pass --init or a model shape (--n-layer), not both",
        ),
        (dict(n_ctx=8, seq_len=16), "seq_len=16 exceeds the model's", "--seq-len 16 exceeds the model's"),
        (
            dict(n_ctx=128, seq_len=100),
            "too few for seq_len=100; use a shorter seq_len= or more text",
            "too few for --seq-len 100; use a shorter --seq-len or more text",
        ),
        (dict(steps=0), "steps must be at least 1, got 0", "--steps must be at least 1, got 0"),
        (dict(init="gpt2", tokenizer="char"), "tokenizer='char' is for training", "--tokenizer char is for training"),
    ],
)
def test_errors_name_the_keyword_in_python_and_the_flag_on_the_command_line(tmp_path, kwargs, python, cli):
    """train() said "too few for --seq-len 100" to a Python caller, who passed seq_len=100; the CLI's user still
    reads --seq-len, as the CLI writes the error's keywords as its flags."""
    from npgpt.cli.flags import as_flags

    (tmp_path / "t.txt").write_text(corpus(5))
    base = dict(n_layer=1, n_embd=32, n_head=2, n_ctx=16, steps=1, batch_size=2, seq_len=8)
    if "init" in kwargs:
        base = {k: v for k, v in base.items() if not k.startswith("n_")}
    with pytest.raises(NpgptError) as err:
        train(tmp_path / "t.txt", tmp_path / "run", TrainSettings(**{**base, **kwargs}))
    assert python in str(err.value) and "--" not in str(err.value), str(err.value)
    assert cli in as_flags(err.value), as_flags(err.value)


def test_no_message_of_the_library_names_a_flag():
    """Every string npgpt.train raises or returns names the Python keywords (``seq_len=``), never the CLI's flags."""
    import ast
    import re

    found = []
    for path in sorted((ROOT / "npgpt" / "train").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body and isinstance(n.body[0], ast.Expr)
        }
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
                found += [f"{path.name}:{n.lineno}: {f}" for f in re.findall(r"(?<![\w-])--[a-z][\w-]*", n.value)]
    assert not found, found


def test_existing_run_needs_resume_and_the_same_settings(reference, tmp_path):
    text, ref = reference
    shutil.copytree(ref.out, tmp_path / "run")
    with pytest.raises(NpgptError, match="resume=True"):
        train(text, tmp_path / "run", TrainSettings(**RUN))
    with pytest.raises(NpgptError, match="batch_size=4"):
        train(text, tmp_path / "run", TrainSettings(**{**RUN, "batch_size": 4}), resume=True)


def test_settings_say_what_may_change_on_resume():
    config = GPT2Config(n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    first = TrainSettings(batch_size=2, eval_interval=4).for_new_run(config)
    assert (first.steps, first.seq_len, first.warmup, first.lr) == (1000, 16, 100, 3e-4)  # the defaults
    meta = first.to_meta()
    resumed = TrainSettings(eval_interval=7, steps=2000).for_resume(meta, 1000, config)
    assert (resumed.eval_interval, resumed.steps, resumed.batch_size, resumed.seq_len) == (7, 2000, 2, 16)
    with pytest.raises(NpgptError, match="cannot resume with lr=0.1: the run in out= used 0.0003"):
        TrainSettings(lr=0.1).for_resume(meta, 1000, config)
    assert not set(TrainSettings.MUST_MATCH_ON_RESUME) & set(TrainSettings.MAY_CHANGE_ON_RESUME)
    # the same command resumes; a model of another shape is not trained as the old one
    assert TrainSettings(n_layer=1, n_embd=32, n_head=2, n_ctx=16).for_resume(meta, 1000, config).steps == 1000
    with pytest.raises(NpgptError, match="cannot resume with n_layer=3: the model in out= has 1"):
        TrainSettings(n_layer=3).for_resume(meta, 1000, config)
    with pytest.raises(NpgptError, match="cannot resume with n_ctx=32: the model in out= has 16"):
        TrainSettings(n_ctx=32).for_resume(meta, 1000, config)
    with pytest.raises(NpgptError, match="steps must be at least 1, got 0"):
        TrainSettings(steps=0)


# --- the CLI and import cost ---------------------------------------------------------------


def test_cli_fine_tunes_and_reports(tmp_path):
    import typer
    from typer.testing import CliRunner

    from npgpt.cli.train import train_command

    app = typer.Typer()
    app.command("train")(train_command)
    app.command("other")(lambda: None)  # two commands, so "train" is a subcommand as in npgpt's CLI
    runner = CliRunner()
    help_text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "120"}).output
    assert "npgpt train book.txt --out runs/book --init gpt2" in help_text
    (tmp_path / "t.txt").write_text(corpus(10))
    config = GPT2Config(n_ctx=16, n_embd=32, n_head=2, n_layer=1)
    hf.save(tmp_path / "hf", config, init_params(config, 5))  # fine-tune a Hugging Face checkpoint
    args = [
        "train",
        str(tmp_path / "t.txt"),
        "--out",
        str(tmp_path / "run"),
        "--init",
        str(tmp_path / "hf"),
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--seq-len",
        "8",
        "--eval-interval",
        "3",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "step 3: loss" in result.output and "held-out loss" in result.output and "tokens/s" in result.output
    assert "on the last 10% of the tokens" in result.output  # what the held-out loss was measured on
    assert npgpt_format.load(tmp_path / "run" / "model.safetensors")[0] == config
    again = runner.invoke(app, args)  # the run exists and --resume was not given
    assert isinstance(again.exception, NpgptError)


def test_importing_the_package_does_not_load_jax():
    code = (
        "import sys, npgpt, npgpt.train, npgpt.cli.train, npgpt.train.data; print(json.dumps("
        "[m for m in ('jax', 'optax', 'matplotlib', 'torch') if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json; " + code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert json.loads(out) == []
