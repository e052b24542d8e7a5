"""Tokens added to GPT-2's tokenizer by a fine-tune, read from the checkpoint as transformers saves it.

The checkpoint is made the way people make one: ``add_special_tokens``/``add_tokens`` on GPT-2's tokenizer
(built offline from npgpt's vendored files), ``model.resize_token_embeddings(len(tok))``, then
``save_pretrained`` of both. Ids, text and generated tokens are checked against transformers.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from conftest import run_cli

import npgpt
from npgpt.errors import CheckpointError
from npgpt.tokenizer import default_files

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CHAT = ["<|im_start|>", "<|im_end|>"]
WORDS = ["foo_bar", " spaced", "é", "hello"]  # é and hello are GPT-2 tokens already (ids 165, 31373)
TEXTS = [
    "a[PAD]b",
    " [PAD] x [PAD][PAD]",
    "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n",
    "foo_barx foo_ba foo_bar_bar",
    "x spaced y  spaced",
    "café hello sayhello",
    "<|endoftext|>hi<|im_end|><|endoftext|>",
    "<|im_start<|im_end|>|>",
    "plain text with no added token",
]


def gpt2_tokenizer():
    enc, bpe = (str(p) for p in default_files())
    return transformers.GPT2TokenizerFast(vocab=enc, merges=bpe)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A tiny GPT-2 and its tokenizer with [PAD], ChatML's markers and a few words added, saved by transformers.

    ln_f's gain is zero and the head's row of <|im_end|> is its bias scaled up, so greedy decoding always
    picks <|im_end|>, an added token."""
    tok = gpt2_tokenizer()
    tok.add_special_tokens({"pad_token": "[PAD]", "additional_special_tokens": CHAT})
    tok.add_tokens(WORDS)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64, tie_word_embeddings=False)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.resize_token_embeddings(len(tok))
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.normal_()
        model.lm_head.weight[tok.convert_tokens_to_ids("<|im_end|>")] = 10 * model.transformer.ln_f.bias
    path = tmp_path_factory.mktemp("finetuned")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model, transformers.AutoTokenizer.from_pretrained(path)


def test_added_tokens_encode_and_decode_as_in_transformers(finetuned):
    path, _, ref = finetuned
    tok = npgpt.load(path).tokenizer
    assert tok.n_vocab == len(tok) == len(ref) == 50262
    for text in TEXTS:
        ids = ref(text)["input_ids"]
        assert tok.encode(text, allow_special=True) == ids, text
        assert tok.decode(ids) == ref.decode(ids), text
        assert tok.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True), text
        # special ones stay text without allow_special (user text cannot inject <|im_end|>); the others are split
        assert tok.encode(text) == ref(text, split_special_tokens=True)["input_ids"], text
    assert tok.encode("a[PAD]b", allow_special=True) == [64, 50257, 65]
    assert tok.decode(range(50257, 50262)) == "[PAD]<|im_start|><|im_end|>foo_bar spaced"
    assert tok.decode(range(50256, 50262), skip_special_tokens=True) == "foo_bar spaced"  # as transformers' does
    assert [tok.token_bytes(i) for i in (50258, 50261)] == [b"<|im_start|>", b" spaced"]


def test_a_finetune_generates_its_added_tokens_in_the_api_the_cli_and_the_server(finetuned):
    path, model, ref = finetuned
    prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = ref(prompt, return_tensors="pt")["input_ids"]
    expected = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=50257)[0, ids.shape[1] :].tolist()
    assert expected == [50259] * 3  # <|im_end|>, as the head was built
    m = npgpt.load(path)
    with torch.no_grad():
        hf_logits = model(ids).logits.numpy()
    np.testing.assert_allclose(m.logits(ids.numpy()), hf_logits, atol=1e-4)
    (c,) = m.completions(prompt, max_new_tokens=3, temperature=0, stop_at_eot=False)
    assert c.tokens == expected and c.text == ref.decode(expected) == "<|im_end|>" * 3

    r = run_cli("generate", prompt, "--model", str(path), "--max-new-tokens", "3", "--temperature", "0", "--no-echo")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "<|im_end|>" * 3

    from npgpt.server import background_server, create_app

    openai = pytest.importorskip("openai")
    with background_server(create_app({"chatml": m})) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)
        out = client.completions.create(model="chatml", prompt=prompt, max_tokens=3, temperature=0)
        assert out.choices[0].text == "<|im_end|>" * 3


def test_a_slow_tokenizers_added_tokens_are_read_as_in_transformers(finetuned, tmp_path):
    """transformers 4's GPT2Tokenizer saved vocab.json, merges.txt and added_tokens.json (special ones named in
    special_tokens_map.json); without a tokenizer.json those are the added tokens."""
    path, _, ref = finetuned
    enc, bpe = default_files()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(path / name, tmp_path / name)
    shutil.copy(enc, tmp_path / "vocab.json")
    shutil.copy(bpe, tmp_path / "merges.txt")
    added = {t: i for i, t in enumerate(["[PAD]", *CHAT, "foo_bar", " spaced"], start=50257)}
    (tmp_path / "added_tokens.json").write_text(json.dumps(added))
    (tmp_path / "special_tokens_map.json").write_text(
        json.dumps({"pad_token": "[PAD]", "additional_special_tokens": CHAT, "eos_token": "<|endoftext|>"})
    )
    slow_ref = transformers.GPT2TokenizerFast.from_pretrained(tmp_path)
    tok = npgpt.load(tmp_path).tokenizer
    assert tok.n_vocab == len(slow_ref) == 50262
    for text in TEXTS:
        ids = slow_ref(text)["input_ids"]
        assert tok.encode(text, allow_special=True) == ids, text
        assert tok.decode(ids) == slow_ref.decode(ids), text


def test_an_added_token_without_an_embedding_row_is_refused_at_load(finetuned, tmp_path):
    """The tokenizer saved with its tokens added but the model not resized: id 50257 has no row to embed."""
    path, _, _ = finetuned
    tok = gpt2_tokenizer()
    tok.add_special_tokens({"pad_token": "[PAD]"})
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"added token '\[PAD\]' is id 50257, but the weights have 50257 token"):
        npgpt.load(tmp_path)
    r = run_cli("generate", "hi", "--model", str(tmp_path), "--max-new-tokens", "1")
    assert r.returncode != 0 and "resize_token_embeddings(len(tokenizer))" in r.stderr and "Traceback" not in r.stderr

    gap = json.loads((path / "tokenizer.json").read_text())
    gap["added_tokens"] = [t for t in gap["added_tokens"] if t["id"] != 50258]  # a hand-edited file
    shutil.copytree(path, tmp_path / "gap")
    (tmp_path / "gap" / "tokenizer.json").write_text(json.dumps(gap))
    with pytest.raises(CheckpointError, match=r"tokenizer.*id 50258 is no token"):
        npgpt.load(tmp_path / "gap")


@pytest.mark.parametrize(
    "setting, where",
    [
        ("add_prefix_space", "saved"),  # tokenizer.json's pre_tokenizer and tokenizer_config.json both say it
        ("add_prefix_space", "config"),  # tokenizer_config.json alone, which transformers 5 follows
        ("add_bos_token", "saved"),  # tokenizer.json's post_processor puts <|endoftext|> first
        ("add_bos_token", "config"),  # what transformers 4 follows
    ],
)
def test_a_tokenizer_setting_that_changes_the_ids_is_refused_at_load(finetuned, tmp_path, setting, where):
    path, _, _ = finetuned
    for name in ("config.json", "model.safetensors"):
        shutil.copy(path / name, tmp_path / name)
    enc, bpe = (str(p) for p in default_files())
    tok = transformers.GPT2TokenizerFast(vocab=enc, merges=bpe, **({setting: True} if where == "saved" else {}))
    tok.save_pretrained(tmp_path)
    if where == "config":
        config = json.loads((tmp_path / "tokenizer_config.json").read_text())
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, setting: True}))
    ids = transformers.AutoTokenizer.from_pretrained(tmp_path)("Hello")["input_ids"]
    if ids == npgpt.tokenizer.Tokenizer().encode("Hello"):  # transformers 5 reads add_bos_token from tokenizer.json
        assert (setting, where) == ("add_bos_token", "config")
    with pytest.raises(CheckpointError, match=f"{setting}=True.*npgpt does not"):
        npgpt.load(tmp_path)


def test_add_prefix_space_false_in_tokenizer_config_wins_as_in_transformers(finetuned, tmp_path):
    path, _, _ = finetuned
    for name in ("config.json", "model.safetensors"):
        shutil.copy(path / name, tmp_path / name)
    enc, bpe = (str(p) for p in default_files())
    transformers.GPT2TokenizerFast(vocab=enc, merges=bpe, add_prefix_space=True).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "add_prefix_space": False}))
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert npgpt.load(tmp_path).tokenizer.encode("Hello world") == ref("Hello world")["input_ids"] == [15496, 995]


def test_a_normalizer_is_refused_at_load(finetuned, tmp_path):
    """A tokenizer.json with a normalizer (here lowercasing) changes the ids in the ``tokenizers`` library and
    transformers 4, while transformers 5's GPT2Tokenizer ignores it: the tools disagree, so npgpt refuses."""
    path, _, _ = finetuned
    shutil.copytree(path, tmp_path / "m")
    saved = json.loads((path / "tokenizer.json").read_text())
    (tmp_path / "m" / "tokenizer.json").write_text(json.dumps({**saved, "normalizer": {"type": "Lowercase"}}))
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(tmp_path / "m" / "tokenizer.json")).encode("Hello").ids == [31373]  # 'hello'
    with pytest.raises(CheckpointError, match="tokenizer.json: a normalizer or pre-tokenizer unlike GPT-2's"):
        npgpt.load(tmp_path / "m")


def test_convert_keeps_the_added_tokens_or_refuses_a_format_without_them(finetuned, tmp_path):
    """npgpt's format carries them in its metadata, as a character-level model's vocabulary, and a Hugging Face
    folder in tokenizer_config.json's added_tokens_decoder, where transformers reads them (a conversion to hf was
    refused, though the model came from such a folder); llm.c's and OpenAI's hold GPT-2's tokenizer or none, so a
    conversion to them is refused rather than losing <|im_end|>."""
    from npgpt.formats import convert

    path, _, ref = finetuned
    convert(path, tmp_path / "m.safetensors")
    tok = npgpt.load(tmp_path / "m.safetensors").tokenizer
    text = TEXTS[2] + "foo_bar"
    assert tok.encode(text, allow_special=True) == ref(text)["input_ids"] and tok.n_vocab == 50262
    for i, source in enumerate((path, tmp_path / "m.safetensors")):
        for fmt in ("llmc", "openai"):
            with pytest.raises(CheckpointError, match=r"tokens added to GPT-2's \('\[PAD\]', .*only npgpt's, Hugging"):
                convert(source, tmp_path / fmt, fmt=fmt)
            assert not (tmp_path / fmt).exists()
        convert(source, tmp_path / f"hf{i}", fmt="hf-sharded" if i else "hf")
        theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / f"hf{i}")
        ours = npgpt.load(tmp_path / f"hf{i}").tokenizer
        assert len(theirs) == ours.n_vocab == 50262
        for each in (*TEXTS, text):
            ids = ref(each)["input_ids"]
            assert theirs(each)["input_ids"] == ours.encode(each, allow_special=True) == ids, each
            assert theirs.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True), each


def test_training_from_a_model_with_added_tokens_is_refused(finetuned, tmp_path):
    """Training reads text with GPT-2's BPE and saves no added tokens: from a chat fine-tune it would learn
    <|im_end|> as BPE pieces and write a model without it, so init= such a model is refused in one line."""
    pytest.importorskip("jax")
    from npgpt.errors import NpgptError
    from npgpt.formats import convert
    from npgpt.train.checkpoint import init_tokenizer

    path, _, _ = finetuned
    convert(path, tmp_path / "m.safetensors")
    for init in (path, tmp_path / "m.safetensors"):
        with pytest.raises(
            NpgptError, match=r"tokens added to GPT-2's \('\[PAD\]', '<\|im_start\|>', '<\|im_end\|>'\)"
        ):
            init_tokenizer(init)


def test_gguf_carries_the_added_tokens_as_llama_cpps_converter_writes_them(finetuned, tmp_path):
    """convert_hf_to_gguf.py writes a fine-tune's special added tokens as CONTROL, the others as USER_DEFINED,
    and a padded vocabulary's rows as UNUSED [PAD{i}] (checked on its output for this fine-tune, vocab.json
    layout, with and without pad_to_multiple_of=64); npgpt writes and reads them so."""
    gguf = pytest.importorskip("gguf")
    from npgpt.formats import convert

    path, _, ref = finetuned
    convert(path, tmp_path / "m.gguf", fmt="gguf")
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    tokens, types = (reader.fields[f"tokenizer.ggml.{k}"] for k in ("tokens", "token_type"))
    T = gguf.TokenType
    assert [bytes(tokens.parts[i]) for i in tokens.data[50256:]] == [
        b"<|endoftext|>",
        b"[PAD]",
        b"<|im_start|>",
        b"<|im_end|>",
        b"foo_bar",
        b" spaced",
    ]
    assert [int(types.parts[i][0]) for i in types.data[50256:]] == [T.CONTROL] * 4 + [T.USER_DEFINED] * 2
    m = npgpt.load(tmp_path / "m.gguf")
    for text in TEXTS:
        assert m.tokenizer.encode(text, allow_special=True) == ref(text)["input_ids"], text
    (c,) = m.completions(TEXTS[2], max_new_tokens=2, temperature=0, stop_at_eot=False)
    assert c.text == "<|im_end|>" * 2


def test_a_finetunes_eos_token_ends_generation_as_in_transformers(finetuned, tmp_path):
    """A chat fine-tune ends its turns with <|im_end|> (TRL's setup_chat_format sets it as eos_token_id in the
    generation config): transformers' generate stops there, and so do npgpt's API and server."""
    path, model, ref = finetuned
    model.generation_config.eos_token_id = [50256, 50259]
    model.save_pretrained(tmp_path)
    ref.save_pretrained(tmp_path)
    prompt = TEXTS[2]
    ids = ref(prompt, return_tensors="pt")["input_ids"]
    expected = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=50257)[0, ids.shape[1] :].tolist()
    assert expected == [50259]
    m = npgpt.load(tmp_path)
    assert m.tokenizer.eos_token_ids == (50256, 50259)
    (c,) = m.completions(prompt, max_new_tokens=3, temperature=0)
    assert (c.tokens, c.text, c.finish_reason) == (expected, "", "stop")
    (c,) = m.completions(prompt, max_new_tokens=3, temperature=0, stop_at_eot=False)  # as ignore_eos
    assert c.text == "<|im_end|>" * 3

    from npgpt.server import background_server, create_app

    openai = pytest.importorskip("openai")
    with background_server(create_app({"chatml": m})) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=60)
        out = client.completions.create(model="chatml", prompt=prompt, max_tokens=3, temperature=0)
        assert (out.choices[0].text, out.choices[0].finish_reason, out.usage.completion_tokens) == ("", "stop", 1)

    from npgpt.formats import convert

    convert(tmp_path, tmp_path / "m.safetensors")  # npgpt's format keeps it
    assert npgpt.load(tmp_path / "m.safetensors").tokenizer.eos_token_ids == (50256, 50259)


@pytest.mark.parametrize(
    "entries, message",
    [
        ("x", "its added tokens are not a list of tokens"),
        ([{"id": "50257", "content": "[PAD]"}], "has no integer id and text"),
        ([{"id": 50257, "content": ""}], "added token id 50257 is empty text"),
        ([{"id": 100, "content": "[PAD]"}], r"added token '\[PAD\]' has id 100, which is GPT-2's b'\\xa7'"),
        ([{"id": -1, "content": "[PAD]"}], "has id -1; ids are 0 or more"),
        ([{"id": 10**60, "content": "[PAD]"}], "without gaps, and id 50257 is no token .ids a 61-digit integer"),
        ([{"id": 50257, "content": "[PAD]", "rstrip": True}], "rstrip=True, which changes how it is matched"),
    ],
)
def test_hostile_added_tokens_are_refused_naming_the_file(finetuned, tmp_path, entries, message):
    path, _, _ = finetuned
    shutil.copytree(path, tmp_path / "m")
    saved = json.loads((path / "tokenizer.json").read_text())
    (tmp_path / "m" / "tokenizer.json").write_text(json.dumps({**saved, "added_tokens": entries}))
    with pytest.raises(CheckpointError, match=rf"m/tokenizer.json: .*{message}") as e:
        npgpt.load(tmp_path / "m")
    assert "\n" not in str(e.value)


def test_skip_special_tokens_false_is_refused_where_endoftext_does_not_end_the_reply(finetuned, tmp_path):
    """skip_special_tokens: false (vLLM's: write special tokens into the text) was refused only with ignore_eos, once
    the one way past a generated <|endoftext|>; a fine-tune that ends at its own <|im_end|> goes on past it anyway,
    and the request was answered 200 with each <|endoftext|> silently left out of the text."""
    path, model, ref = finetuned
    saved_eos, model.generation_config.eos_token_id = model.generation_config.eos_token_id, 50259  # <|im_end|> alone
    model.save_pretrained(tmp_path)
    model.generation_config.eos_token_id = saved_eos
    ref.save_pretrained(tmp_path)
    m = npgpt.load(tmp_path)
    assert m.tokenizer.eos_token_ids == (50259,)
    from npgpt.server import background_server, create_app

    httpx = pytest.importorskip("httpx")
    body = {"model": "chatml", "prompt": "Hi", "max_tokens": 2, "logit_bias": {"50256": 100}}
    with background_server(create_app({"chatml": m})) as base:
        r = httpx.post(base + "/v1/completions", json={**body, "skip_special_tokens": False}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == "skip_special_tokens", r.text
        fine = httpx.post(base + "/v1/completions", json=body, timeout=60).json()["choices"][0]
        assert fine["text"] == ""  # two <|endoftext|>, no text (vLLM's default, skip_special_tokens true)


def test_gguf_carries_a_finetunes_own_eos_token_as_llama_cpp_reads_it(finetuned, tmp_path):
    """A chat fine-tune ending at its <|im_end|> (generation_config.json's eos_token_id) is written to GGUF with it
    as tokenizer.ggml.eos_token_id, where npgpt's reader (as llama.cpp) ends generations. The reader read the eos
    the converter writes and the writer refused to write one, so a llama.cpp chat GGUF could not be converted to
    GGUF again (npgpt convert chat.gguf chat-q8.gguf --dtype q8_0). Eos ids GGUF cannot carry (without
    <|endoftext|>, at which llama.cpp always ends; more than its eos, eot and eom besides those llama.cpp ends at by
    their spelling, as <|im_end|>) are still refused."""
    pytest.importorskip("gguf")
    from npgpt.formats import convert

    path, model, ref = finetuned
    saved_eos = model.generation_config.eos_token_id
    for eos, name in (([50259], "alone"), ([198, 200, 201, 50256, 50258, 50259], "many")):
        model.generation_config.eos_token_id = eos
        model.save_pretrained(tmp_path / name)
        ref.save_pretrained(tmp_path / name)
        with pytest.raises(CheckpointError, match=rf"token ids {re.escape(str(eos))} \(eos_token_id\) cannot be"):
            convert(tmp_path / name, tmp_path / f"{name}.gguf", fmt="gguf")
        assert not (tmp_path / f"{name}.gguf").exists()
    model.generation_config.eos_token_id = [50256, 50259]
    model.save_pretrained(tmp_path / "m")
    model.generation_config.eos_token_id = saved_eos
    ref.save_pretrained(tmp_path / "m")
    convert(tmp_path / "m", tmp_path / "m.gguf", fmt="gguf")
    # and at [PAD] (50257): llama.cpp ends a generation at a token spelled as its FIM pad token, whatever the eos
    assert npgpt.load(tmp_path / "m.gguf").tokenizer.eos_token_ids == (50256, 50257, 50259)
    with pytest.raises(CheckpointError, match=r"carry them; use fmt='npgpt', fmt='hf' or fmt='gguf'$"):
        convert(tmp_path / "m", tmp_path / "llmc", fmt="llmc")
    convert(tmp_path / "m", tmp_path / "hf", fmt="hf")  # a Hugging Face folder keeps it, where transformers reads it
    assert npgpt.load(tmp_path / "hf").tokenizer.eos_token_ids == (50256, 50259)
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf")
    assert hf_model.generation_config.eos_token_id == [50256, 50259]  # where transformers' generate stops
    convert(tmp_path / "m", tmp_path / "m.safetensors")  # npgpt's format keeps it
    assert npgpt.load(tmp_path / "m.safetensors").tokenizer.eos_token_ids == (50256, 50259)
