"""The tokenizer is exact: ids equal Hugging Face's GPT-2 tokenizer built from the same vendored
files (offline), text round-trips, and the streaming decoder never emits half a character.

References, both built from ``npgpt/assets`` so no test touches the network:
- ``transformers.GPT2TokenizerFast``: the canonical HF class (its ``<|endoftext|>`` is special).
- a bare ``tokenizers`` ByteLevel BPE, the engine under that class, with no special tokens: the
  reference for ``allow_special=False``, where ``<|endoftext|>`` is ordinary text (it equals
  ``GPT2TokenizerFast`` with ``split_special_tokens=True``, checked on the corpus).
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFEngine
from tokenizers import decoders, models, pre_tokenizers

from npgpt.char_tokenizer import CharTokenizer
from npgpt.errors import NpgptError
from npgpt.tokenizer import EOT, EOT_ID, Tokenizer, default_files

ENCODER_JSON, VOCAB_BPE = (str(p) for p in default_files())

CORPUS = {
    "prose": "The quick brown fox jumps over the lazy dog. It was the best of times, it was "
    'the worst of times; "quoted" — em-dash… ellipsis (parens) [brackets] {braces}!?',
    "python": "def f(x):\n    if x > 0:\n        return x ** 2  # square\n\treturn -x\n\n\nclass A:\n    pass\n",
    "javascript": 'const f = (a, b) => {\n  return a?.b ?? `${a}-${b}`;\n};\nif (x !== null) { console.log("hi"); }\n',
    "emoji": "🎉 party 😀😃 👍🏽 👍🏿 👩‍👩‍👧‍👦 family 🏳️‍🌈 flag 👩🏽‍💻 coder 🇯🇵 ❤️",
    "cjk": "日本語のテキスト、中文文本。한국어 텍스트입니다。　全角スペース",
    "arabic_hebrew": "مرحبا بالعالم، كيف حالك؟ שלום עולם",
    "accents": "café naïve résumé Ångström Straße coöperate",
    "combining": "e\u0301 a\u0308 n\u0303 \u0915\u094d\u0937 Z\u0351\u0307\u0350a\u0313\u0315lgo",
    "whitespace_runs": "a  b   c\t\td \t \n e\n\n\nf\r\n\r\ng    ",
    "leading_spaces": "   x",
    "trailing_spaces": "x   ",
    "only_newlines": "\n\n\n",
    "only_spaces": "     ",
    "unicode_spaces": "a\u00a0b\u2003c\u3000d\u2028e\u0085f\x0b\x0cg",
    "contractions": "it's don't they're we've I'm you'll he'd 'S IT'S DON'T I'LL o'clock rock'n'roll",
    "contractions_spaced": " 's 't 're 've 'm 'll 'd ''s",
    # The contraction rule is case-sensitive: "'Sam" is "'" + "Sam", while "'sam" is "'s" + "am".
    "contractions_case": "'Sam 'Tom 'Dan 'Mike 'LLama 'VEry 'REd 'sam 'tom 'dan 'mike 'llama",
    "numbers": "0 1 12 123 1234 12345 3.14159 -42 1e10 1,000,000 ٣٤٥ ²³ ½ Ⅻ",
    "urls": "https://example.com/path?q=1&r=two#frag mailto:a@b.co www.x.org/~user/",
    "eot_inside": "before<|endoftext|>after <|endoftext|> spaced<|endoftext|><|endoftext|>",
    "eot_broken": "<|endoftext| <|endoftext <endoftext|> <|ENDOFTEXT|>",
    "control_chars": "\x00\x01\x7f\u200b\u200c\u200d\ufeff\ufffd",
    "astral": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓀀 🀄 \U0010fffd",
    "empty": "",
}

# Fragments the property tests splice together: the places where pre-tokenizers disagree if
# they disagree at all (whitespace before letters, apostrophes, the special token).
FRAGMENTS = [
    " ",
    "  ",
    "\t",
    "\n",
    "\n\n",
    "\r\n",
    "\u00a0",
    "\u3000",
    "'",
    "'s",
    "'t",
    "'re",
    "'ve",
    "'m",
    "'ll",
    "'d",
    "'S",
    "'T",
    "'M",
    "'D",
    "'LL",
    "'RE",
    "'VE",
    "0",
    "42",
    "٣",
    "½",
    "a",
    "am",
    "The",
    " the",
    "Sam",
    "LLama",
    "é",
    "e\u0301",
    "日本",
    "한",
    "مرحبا",
    "🎉",
    "👍🏽",
    "👩‍💻",
    "\u200d",
    "\ufe0f",
    "\ufffd",
    "<|",
    "|>",
    EOT,
    ".",
    "...",
    "->",
    "#",
    "\x00",
]
TEXT = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=40).map("".join)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer()


@pytest.fixture(scope="module")
def hf_engine() -> HFEngine:
    """GPT-2's byte-level BPE in ``tokenizers``, no special tokens."""
    engine = HFEngine(models.BPE.from_file(ENCODER_JSON, VOCAB_BPE))
    engine.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    engine.decoder = decoders.ByteLevel()
    return engine


@pytest.fixture(scope="module")
def hf_gpt2():
    """``GPT2TokenizerFast`` from the vendored files: transformers 4 names the arguments
    ``vocab_file``/``merges_file``, transformers 5 ``vocab``/``merges`` (and silently ignores
    the old names, leaving a 1-token vocabulary, hence the length check)."""
    from transformers import GPT2TokenizerFast

    params = inspect.signature(GPT2TokenizerFast.__init__).parameters
    if "vocab_file" in params:
        hf = GPT2TokenizerFast(vocab_file=ENCODER_JSON, merges_file=VOCAB_BPE)
    else:
        hf = GPT2TokenizerFast(vocab=ENCODER_JSON, merges=VOCAB_BPE)
    assert len(hf) == 50257
    return hf


def test_known_ids(tok: Tokenizer) -> None:
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(EOT, allow_special=True) == [EOT_ID] == [50256]
    assert tok.n_vocab == len(tok) == 50257  # len(): transformers' len(tokenizer)
    assert tok.eot_id == EOT_ID
    assert tok.decode([15496, 995]) == "Hello world"
    assert tok.decode([EOT_ID]) == EOT
    assert tok.token_bytes(EOT_ID) == EOT.encode()


def test_token_strings_are_the_vocabularys_as_transformers_gives_them(tok: Tokenizer, hf_gpt2) -> None:
    """``convert_ids_to_tokens`` (what vLLM's ``/tokenize`` gives as ``token_strs``) spells each token as
    transformers does: byte-level BPE's printable characters, ``<|endoftext|>`` as itself; every id."""
    ids = list(range(tok.n_vocab))
    assert tok.convert_ids_to_tokens(ids) == hf_gpt2.convert_ids_to_tokens(ids)
    with pytest.raises(ValueError, match="token id 50257 is not in GPT-2's vocabulary"):
        tok.convert_ids_to_tokens([50257])


@pytest.mark.parametrize("bad_id", [50257, 10**6, -1, -(2**70)])
def test_out_of_vocabulary_ids_raise_value_error(tok: Tokenizer, bad_id: int) -> None:
    with pytest.raises(ValueError, match=f"token id {bad_id} is not in GPT-2's vocabulary"):
        tok.decode([15496, bad_id])
    with pytest.raises(ValueError, match=f"token id {bad_id} is not in GPT-2's vocabulary"):
        tok.stream_decoder().push(bad_id)


def test_numpy_ids(tok: Tokenizer) -> None:
    """Generation hands over numpy integers; they decode like Python ints."""
    ids = np.array([15496, 995, 8582, 236, 231], dtype=np.int32)
    assert tok.decode(ids) == tok.decode(ids.astype(np.int64)) == "Hello world🎉"
    assert "".join(tok.stream_decoder().decode_iter(ids)) == "Hello world🎉"


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([1.5, 2.0], "got float64"),
        ("Hello", "got str; encode"),
        (np.array([[15496, 995]]), r"got shape \(1, 2\); decode each row"),
        ([[15496], [995]], r"got shape \(2, 1\); decode each row"),
        ([True], "got bool"),
    ],
)
def test_decode_refuses_what_is_not_token_ids(tok: Tokenizer, ids, message: str) -> None:
    """As transformers' users pass them: a batch [B, T] (a tensor of generated rows), floats or text get one
    line naming the fix, not a TypeError from inside tiktoken."""
    with pytest.raises(NpgptError, match=message):
        tok.decode(ids)


@pytest.mark.parametrize("make", [Tokenizer, lambda: CharTokenizer("ab")])
@pytest.mark.parametrize("bad", [True, False, 1.0, 1.5, np.float32(2), "1", None])
def test_one_token_id_that_is_no_integer_is_refused_as_decode_refuses_it(make, bad) -> None:
    """token_bytes and a stream decoder's push read True as id 1 and gave tiktoken's bare TypeError for 1.0,
    where decode refuses both in one line."""
    tok = make()
    with pytest.raises(NpgptError, match="a token id must be an integer, got"):
        tok.token_bytes(bad)
    with pytest.raises(NpgptError, match="a token id must be an integer, got"):
        tok.stream_decoder().push(bad)
    assert tok.token_bytes(np.int32(1)) == tok.token_bytes(1)


def test_decode_takes_ids_as_any_library_holds_them(tok: Tokenizer) -> None:
    """One id (transformers' decode(15496)), a 0-d array, a generator and a tensor decode like a list."""
    torch = pytest.importorskip("torch")
    assert tok.decode(15496) == tok.decode(np.int64(15496)) == tok.decode(np.array(15496)) == "Hello"
    assert tok.decode(i for i in [15496, 995]) == tok.decode(torch.tensor([15496, 995])) == "Hello world"
    assert tok.decode([]) == tok.decode(np.array([], dtype=np.int64)) == ""


def test_decode_skips_special_tokens_as_transformers_does(tok: Tokenizer, hf_gpt2) -> None:
    """transformers' tokenizer.decode(ids, skip_special_tokens=True) habit was a TypeError."""
    ids = [EOT_ID, 15496, EOT_ID, 995, EOT_ID]
    assert tok.decode(ids, skip_special_tokens=True) == hf_gpt2.decode(ids, skip_special_tokens=True) == "Hello world"
    assert tok.decode(ids) == hf_gpt2.decode(ids) == f"{EOT}Hello{EOT} world{EOT}"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (["Hello", "world"], r"got list; for several texts, encode_batch\(texts\)"),
        (b"Hello", "got bytes; decode the bytes first"),
        (None, "got NoneType"),
        (15496, "got int"),
    ],
)
def test_encode_refuses_what_is_not_text(tok: Tokenizer, text, says: str) -> None:
    """They were TypeErrors from inside tiktoken; the character tokenizer read a list's items as characters."""
    for t in (tok, CharTokenizer("Helowrd")):
        with pytest.raises(NpgptError, match=f"text must be a string, {says}"):
            t.encode(text)


def test_encode_batch_refuses_one_string(tok: Tokenizer) -> None:
    """encode_batch("abc") encoded each character as a text of its own, silently."""
    for t in (tok, CharTokenizer("abc")):
        with pytest.raises(NpgptError, match=r"texts must be a list of strings, got one string; encode\(text\)"):
            t.encode_batch("abc")
        assert t.encode_batch(("ab", "c")) == [t.encode("ab"), t.encode("c")]


def test_special_token_is_not_injectable(tok: Tokenizer) -> None:
    ids = tok.encode(f"a{EOT}b")
    assert EOT_ID not in ids
    assert tok.decode(ids) == f"a{EOT}b"
    assert tok.encode(f"a{EOT}b", allow_special=True) == [64, EOT_ID, 65]


@pytest.mark.parametrize("text", CORPUS.values(), ids=CORPUS.keys())
def test_corpus_matches_hugging_face(text: str, tok: Tokenizer, hf_engine: HFEngine, hf_gpt2) -> None:
    # HF always recognises <|endoftext|>: the same as allow_special=True.
    expected_special = hf_gpt2.encode(text)
    assert tok.encode(text, allow_special=True) == expected_special
    # With the special token split into ordinary text, HF matches allow_special=False.
    expected_plain = hf_gpt2(text, split_special_tokens=True)["input_ids"]
    assert tok.encode(text) == expected_plain == hf_engine.encode(text).ids
    assert tok.decode(expected_plain) == hf_engine.decode(expected_plain) == text
    assert tok.decode(expected_special) == text


def test_whole_corpus_matches_hugging_face(tok: Tokenizer, hf_gpt2) -> None:
    """Joined, so pre-token boundaries between the samples are exercised too."""
    text = "\n".join(CORPUS.values())
    assert tok.encode(text, allow_special=True) == hf_gpt2.encode(text)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_roundtrip_any_unicode(tok: Tokenizer, text: str) -> None:
    # st.text() draws from all of Unicode except surrogates (which cannot be UTF-8 encoded).
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, allow_special=True)) == text


@settings(max_examples=200, deadline=None)
@given(text=TEXT)
def test_matches_hugging_face_on_arbitrary_text(tok: Tokenizer, hf_engine: HFEngine, text: str) -> None:
    assert tok.encode(text) == hf_engine.encode(text).ids


@settings(max_examples=100, deadline=None)
@given(text=TEXT)
def test_special_matches_hugging_face_on_arbitrary_text(tok: Tokenizer, hf_gpt2, text: str) -> None:
    assert tok.encode(text, allow_special=True) == hf_gpt2.encode(text)


def _is_partial_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# The 256 single-byte tokens are ids 0..255; PARTIAL_IDS are the tokens whose bytes are not valid
# UTF-8 on their own (the pieces of multi-byte characters: b"\xf0\x9f", b"\x8e", ...).
_SINGLE_BYTE_IDS = st.integers(0, 255)
_PARTIAL_IDS = sorted(i for i in range(EOT_ID) if _is_partial_utf8(Tokenizer().token_bytes(i)))
TOKEN_IDS = st.lists(st.one_of(_SINGLE_BYTE_IDS, st.sampled_from(_PARTIAL_IDS), st.integers(0, EOT_ID)), max_size=30)


def test_partial_ids_exist() -> None:
    assert len(_PARTIAL_IDS) > 100


@settings(max_examples=200, deadline=None)
@given(ids=TOKEN_IDS)
def test_stream_equals_decode_on_any_ids(tok: Tokenizer, hf_engine: HFEngine, ids) -> None:
    stream = tok.stream_decoder()
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == tok.decode(ids)
    # Replacement characters for broken UTF-8 are placed exactly as HF places them.
    assert tok.decode(ids) == hf_engine.decode(ids)
    emitted = list(tok.stream_decoder().decode_iter(ids))
    assert "" not in emitted
    assert "".join(emitted) == tok.decode(ids)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=100), data=st.data())
def test_stream_never_emits_half_characters(tok: Tokenizer, text: str, data) -> None:
    ids = tok.encode(text)
    stream = tok.stream_decoder()
    out = ""
    for n, token_id in enumerate(ids, start=1):
        out += stream.push(token_id)
        # Everything emitted is a prefix of the text (so no spurious U+FFFD, no half
        # characters), and it is every complete character decoded so far (nothing held back).
        assert text.startswith(out)
        assert out == tok.decode_bytes(ids[:n]).decode("utf-8", errors="ignore")
    assert out + stream.flush() == text

    # Cut the stream anywhere: flushing gives exactly what decode gives for that prefix.
    k = data.draw(st.integers(0, len(ids)), label="cut")
    cut = tok.stream_decoder()
    assert "".join(cut.push(i) for i in ids[:k]) + cut.flush() == tok.decode(ids[:k])


def test_partial_utf8_decodes_to_replacement(tok: Tokenizer) -> None:
    ids = tok.encode("🎉")
    assert len(ids) > 1  # 4 UTF-8 bytes spread over several tokens
    assert tok.decode(ids) == "🎉"
    assert "\ufffd" in tok.decode(ids[:1])
    assert "\ufffd" in tok.decode(ids[1:])
    stream = tok.stream_decoder()
    assert [stream.push(i) for i in ids] == [""] * (len(ids) - 1) + ["🎉"]
    stream = tok.stream_decoder()
    assert stream.push(ids[0]) == ""
    assert stream.flush() == "\ufffd"  # a dangling prefix is one replacement character


def test_stream_decoder_is_reusable_after_flush(tok: Tokenizer) -> None:
    stream = tok.stream_decoder()
    first = tok.encode("🎉")[0]
    stream.push(first)
    stream.flush()
    assert [stream.push(i) for i in tok.encode("ok 🎉")][-1] == "🎉"


def _run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


def test_construction_needs_no_network_and_builds_once() -> None:
    """A fresh interpreter builds the encoding from the vendored encoder.json with sockets disabled,
    and a second Tokenizer reuses it (its cost is in ``npgpt bench``'s start-up figure, not a threshold)."""
    out = _run_python(
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse\n"
        "from npgpt.tokenizer import Tokenizer\n"
        "a, b = Tokenizer(), Tokenizer()\n"
        "print(a.encode('Hello world'), a._enc is b._enc)"
    )
    assert out.split("]")[0] + "]" == "[15496, 995]" and out.strip().endswith("True")


def test_import_npgpt_does_not_load_tokenizer() -> None:
    out = _run_python(
        "import sys, npgpt\nprint(sorted(m for m in ('tiktoken', 'npgpt.tokenizer') if m in sys.modules))"
    )
    assert out.strip() == "[]", f"`import npgpt` loaded {out.strip()}"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("eos_token_id", "tokenizer.eot_id"),  # transformers'
        ("bos_token_id", "tokenizer.eot_id"),
        ("pad_token_id", "npgpt needs no pad token"),
        ("vocab_size", "tokenizer.n_vocab"),
        ("batch_decode", "[tokenizer.decode(row) for row in ids]"),
        ("eot_token", "tokenizer.eot_id"),  # tiktoken's
        ("encode_ordinary", "tokenizer.encode(text) reads <|endoftext|> as plain text"),
    ],
)
def test_another_librarys_tokenizer_attribute_names_npgpts(name, says):
    """tokenizer.eos_token_id (transformers': model.generate(..., pad_token_id=tokenizer.eos_token_id)) and
    tiktoken's enc.eot_token were bare AttributeErrors ('Tokenizer' object has no attribute ...); each is now one
    line naming npgpt's attribute or way, still an AttributeError. Other missing names stay plain."""
    from npgpt.char_tokenizer import CharTokenizer

    for tok in (Tokenizer(), CharTokenizer("ab")):
        with pytest.raises(AttributeError, match=re.escape(says)) as err:
            getattr(tok, name)
        assert isinstance(err.value, NpgptError) and "\n" not in str(err.value)
    assert not hasattr(Tokenizer(), "no_such_thing")
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        Tokenizer().no_such_thing  # noqa: B018


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"allowed_special": "all"}, "npgpt's is allow_special=True"),  # tiktoken's
        ({"allowed_special": {EOT}}, "npgpt's is allow_special=True"),
        ({"disallowed_special": {EOT}}, "allow_special=False (the default) reads a literal <|endoftext|> as"),
        ({"add_special_tokens": "no"}, "add_special_tokens='no' is not supported; GPT-2's tokenizer adds no special"),
        ({"return_tensors": "np"}, "returns a list of ids"),
        ({"allow_specials": True}, "encode takes the text and allow_special"),
        ({"allow_special": "none"}, "allow_special must be True or False"),  # was truthy: the token allowed
        ({"allow_special": "all"}, "allow_special must be True or False"),
        ({"allow_special": None}, "allow_special must be True or False"),
        ({"allow_special": 1}, "allow_special must be True or False"),
    ],
)
def test_encode_names_npgpts_way_for_other_tokenizers_options(options, says):
    """tiktoken's enc.encode(text, allowed_special="all") and transformers' add_special_tokens=False were bare
    TypeErrors (unexpected keyword argument), and allow_special="none" was truthy, so a literal <|endoftext|> was
    read as the special token: each is now one NpgptError line naming npgpt's way, for both tokenizers, encode and
    encode_batch; score's allow_special too. allow_special takes True/False (NumPy's bools too)."""
    from npgpt.char_tokenizer import CharTokenizer
    from npgpt.score import token_ids

    text = EOT + "ab"
    for tok in (Tokenizer(), CharTokenizer("".join(sorted(set(text))))):
        for encode, arg in ((tok.encode, text), (tok.encode_batch, [text])):
            with pytest.raises(NpgptError, match=re.escape(says)) as err:
                encode(arg, **options)
            assert "\n" not in str(err.value)
        assert tok.encode(text, allow_special=np.bool_(True))[0] == tok.eot_id
        assert tok.encode(text, allow_special=np.bool_(False)) == tok.encode(text)

    class Model:  # what score's token_ids reads: a model's tokenizer
        tokenizer = Tokenizer()

    if "allow_special" in options:
        with pytest.raises(NpgptError, match=re.escape(says)):
            token_ids(Model(), text, options["allow_special"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"errors": "strict"}, "errors='strict' is not supported; npgpt's decode always replaces bytes"),  # tiktoken's
        ({"clean_up_tokenization_spaces": True}, "npgpt's decode never changes the spaces"),  # transformers'
        ({"skip_special": True}, "decode takes the ids and skip_special_tokens"),
        ({"skip_special_tokens": "no"}, "skip_special_tokens must be True or False, got 'no'"),  # was truthy
        ({"skip_special_tokens": None}, "skip_special_tokens must be True or False"),
    ],
)
def test_decode_names_npgpts_way_for_other_tokenizers_options(options, says):
    """transformers' tokenizer.decode(ids, clean_up_tokenization_spaces=True) and tiktoken's decode(ids,
    errors="strict") were bare TypeErrors, and skip_special_tokens="no" was truthy, so <|endoftext|> was left out:
    each is now one NpgptError line naming npgpt's way, for both tokenizers. NumPy's bools pass."""
    from npgpt.char_tokenizer import CharTokenizer

    for tok in (Tokenizer(), CharTokenizer("ab")):
        ids = [0, tok.eot_id, 1]
        with pytest.raises(NpgptError, match=re.escape(says)) as err:
            tok.decode(ids, **options)
        assert "\n" not in str(err.value)
        assert tok.decode(ids, skip_special_tokens=np.bool_(True)) == tok.decode([0, 1])
        assert tok.decode(ids, skip_special_tokens=np.bool_(False)) == tok.decode(ids)


def test_other_tokenizers_options_asking_for_what_npgpt_does_are_taken():
    """transformers' tokenizer.encode(text, add_special_tokens=False) and decode(ids, skip_special_tokens=True,
    clean_up_tokenization_spaces=False), and tiktoken's encode(text, disallowed_special=()) and decode(ids,
    errors="replace"), the usual lines of code written for those tokenizers, were refused ("unknown option"), though
    each asks for exactly what npgpt's encode and decode do (GPT-2's tokenizer adds no special token either way in
    transformers; npgpt never raises on special-token text, never cleans spaces, always replaces bad UTF-8): they
    are taken, as those libraries take them, giving the same ids and text. Other values are still refused."""
    from npgpt.char_tokenizer import CharTokenizer

    text = "Hello " + EOT + " world"
    for tok in (Tokenizer(), CharTokenizer("".join(sorted(set(text))))):
        ids = tok.encode(text)
        for options in ({"add_special_tokens": False}, {"add_special_tokens": True}, {"disallowed_special": ()}):
            assert tok.encode(text, **options) == ids, options
            assert tok.encode_batch([text], **options) == [ids], options
        assert tok.encode(text, allow_special=True, add_special_tokens=False) == tok.encode(text, allow_special=True)
        special = tok.encode(text, allow_special=True)
        for options in ({"clean_up_tokenization_spaces": False}, {"errors": "replace"}):
            assert tok.decode(special, **options) == tok.decode(special), options
            assert tok.decode(special, skip_special_tokens=True, **options) == tok.decode(special, True), options
        with pytest.raises(NpgptError, match="^clean_up_tokenization_spaces=True is not supported; npgpt's decode"):
            tok.decode(special, clean_up_tokenization_spaces=True)
        with pytest.raises(NpgptError, match="^unknown option 'allowed_special'"):
            tok.encode(text, allowed_special="all")
