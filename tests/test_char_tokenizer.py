"""The character-level tokenizer: round trips, the end-of-text token, streaming, refusals, and the
vocabulary saved in (and read back from) an npgpt model file."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import npgpt
from npgpt.char_tokenizer import CharTokenizer, tokenizer_from_spec
from npgpt.config import GPT2Config
from npgpt.errors import CheckpointError, NpgptError
from npgpt.formats import convert, npgpt_format
from npgpt.params import init_params
from npgpt.tokenizer import EOT, Tokenizer

TEXT = "In the beginning God created the heaven and the earth. é → 𝄞\n"


def test_vocabulary_is_the_sorted_characters_then_end_of_text():
    tok = CharTokenizer.from_text([TEXT, "xyz"])
    assert tok.chars == "".join(sorted(set(TEXT + "xyz")))
    assert tok.n_vocab == len(tok) == len(tok.chars) + 1 and tok.eot_id == len(tok.chars)
    assert tok.encode("the") == [tok.chars.index(c) for c in "the"]
    assert tok.decode(tok.encode(TEXT)) == TEXT
    assert tok.encode(f"the{EOT}he", allow_special=True) == [*tok.encode("the"), tok.eot_id, *tok.encode("he")]
    assert tok.decode([tok.eot_id]) == EOT and tok.token_bytes(tok.encode("𝄞")[0]) == "𝄞".encode()


@given(st.text(alphabet=sorted(set(TEXT)), max_size=40))
def test_streamed_pieces_equal_the_decoded_text(text):
    tok = CharTokenizer.from_text([TEXT])
    ids = tok.encode(text)
    assert "".join(tok.stream_decoder().decode_iter(ids)) == tok.decode(ids) == text


def test_characters_and_ids_outside_the_vocabulary_are_one_line_errors():
    tok = CharTokenizer.from_text(["abc"])
    with pytest.raises(NpgptError, match="character 'z' is not in this character-level model's vocabulary"):
        tok.encode("abz")
    with pytest.raises(NpgptError, match="token id 9 is not in this model's vocabulary: ids are 0 to 3"):
        tok.decode([9])
    with pytest.raises(NpgptError, match="got float64"):  # int(1.5) made it id 1, "b"
        tok.decode([1.5])
    with pytest.raises(NpgptError, match="decode each row"):
        tok.decode([[0, 1]])
    assert tok.decode(1) == "b"
    assert tok.decode([0, tok.eot_id, 1], skip_special_tokens=True) == "ab"
    with pytest.raises(CheckpointError, match="unknown tokenizer"):
        tokenizer_from_spec({"type": "bpe"})
    assert isinstance(tokenizer_from_spec(None), Tokenizer)


def test_an_empty_text_names_the_file_it_came_from(tmp_path):
    """Training --tokenizer char on an empty file said only "no text to build a character vocabulary from"."""
    from npgpt.train.data import char_tokenizer

    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(NpgptError, match=f"{tmp_path / 'empty.txt'}: no text to build a character vocabulary"):
        char_tokenizer(tmp_path / "empty.txt")


def test_the_model_file_carries_the_vocabulary_and_load_uses_it(tmp_path):
    tok = CharTokenizer.from_text([TEXT])
    config = GPT2Config(n_vocab=tok.n_vocab, n_ctx=16, n_embd=16, n_head=2, n_layer=1)
    npgpt_format.save(
        tmp_path / "model.safetensors",
        config,
        init_params(config, 0),
        metadata={"tokenizer": json.dumps(tok.to_spec())},
    )
    assert npgpt_format.tokenizer_spec(tmp_path) == tok.to_spec()
    model = npgpt.load(tmp_path)
    assert isinstance(model.tokenizer, CharTokenizer) and model.tokenizer.chars == tok.chars
    out = model.generate("the", max_new_tokens=5, seed=0)
    assert set(out) <= set(tok.chars) | set(EOT)
    npgpt_format.save(tmp_path / "plain.safetensors", config, init_params(config, 0))
    assert npgpt_format.tokenizer_spec(tmp_path / "plain.safetensors") is None


def test_convert_keeps_the_vocabulary_or_refuses(tmp_path):
    """npgpt convert dropped a character-level model's vocabulary: the copy loaded with GPT-2's BPE."""
    tok = CharTokenizer.from_text([TEXT])
    config = GPT2Config(n_vocab=tok.n_vocab, n_ctx=16, n_embd=16, n_head=2, n_layer=1)
    src = tmp_path / "char.safetensors"
    npgpt_format.save(src, config, init_params(config, 0), metadata={"tokenizer": json.dumps(tok.to_spec())})
    convert(src, tmp_path / "half.safetensors", dtype="float16")
    model = npgpt.load(tmp_path / "half.safetensors")
    assert isinstance(model.tokenizer, CharTokenizer) and model.tokenizer.chars == tok.chars
    assert set(model.generate("the", max_new_tokens=5, seed=0)) <= set(tok.chars) | set(EOT)
    with pytest.raises(CheckpointError, match="character-level model cannot be written as hf"):
        convert(src, tmp_path / "hf", fmt="hf")
    assert not (tmp_path / "hf").exists()
