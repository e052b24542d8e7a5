"""vLLM's request options at the server: ``ignore_eos`` is honoured, the ones npgpt does not have are
refused by name (a client written for vLLM must never get an answer that silently ignored one)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from npgpt.api import GPT2  # noqa: E402
from npgpt.config import GPT2Config  # noqa: E402
from npgpt.params import init_params  # noqa: E402
from npgpt.server import background_server, create_app  # noqa: E402

TINY = GPT2Config(n_ctx=64, n_embd=32, n_head=2, n_layer=2)


def eot_model() -> GPT2:
    """A model whose every next token is <|endoftext|>: its final hidden state is constant, and only
    <|endoftext|>'s embedding points along it."""
    params = init_params(TINY, seed=0)
    params["ln_f"]["g"][:] = 0
    params["ln_f"]["b"][:] = 1
    params["wte"][50256] = 1
    return GPT2(TINY, params)


@pytest.fixture(scope="module")
def url():
    with background_server(create_app({"eot": eot_model(), "tiny": GPT2(TINY, init_params(TINY, seed=0))})) as base:
        yield base


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_ignore_eos_generates_past_endoftext(url, path):
    body = {"prompt": "Hello"} if "chat" not in path else {"messages": [{"role": "user", "content": "Hello"}]}
    body = {**body, "max_tokens": 5, "temperature": 0}
    stops = httpx.post(url + path, json=body).json()
    assert stops["usage"]["completion_tokens"] == 1 and stops["choices"][0]["finish_reason"] == "stop"
    goes_on = httpx.post(url + path, json={**body, "ignore_eos": True}).json()
    assert goes_on["usage"]["completion_tokens"] == 5 and goes_on["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("stream", [False, True])
def test_ignore_eos_writes_no_endoftext_into_the_text(url, stream):
    """Going on past <|endoftext|>, it was written into the text (13 characters a token) and counted in the next
    token's text_offset; as in vLLM (skip_special_tokens, its default) it is no text: the logprobs list each
    such token, at its place in the text, and a stop sequence is matched in the text without it."""
    body = {"prompt": "Hello", "max_tokens": 4, "logprobs": 1, "echo": True, "ignore_eos": True, "stream": stream}
    for stop in (None, "<|endoftext|>", "Hello<|endoftext|>"):
        r = httpx.post(url + "/v1/completions", json={**body, "stop": stop})
        if stream:
            chunks = [json.loads(x[6:]) for x in r.text.split("\n\n") if x.startswith("data: {")]
            text = "".join(c["text"] for ch in chunks for c in ch["choices"])
            lp = {
                k: [v for ch in chunks for c in ch["choices"] for v in c["logprobs"][k]]
                for k in ("tokens", "text_offset")
            }
        else:
            text, lp = r.json()["choices"][0]["text"], r.json()["choices"][0]["logprobs"]
        assert text == "Hello", r.text
        assert lp["tokens"] == ["Hello", *["<|endoftext|>"] * 4] and lp["text_offset"] == [0, 5, 5, 5, 5]


def test_ignore_eos_lists_endoftext_between_text_as_no_text(url):
    """Among other tokens (this seed and bias draw <|endoftext|> 2nd and 4th of 8): chat's entries spell the
    content, and each completions token but <|endoftext|> is the text at its text_offset."""
    body = {"model": "tiny", "max_tokens": 8, "seed": 1, "logit_bias": {"50256": 8}, "ignore_eos": True}
    chat = {**body, "messages": [{"role": "user", "content": "Hello"}], "logprobs": True}
    c = httpx.post(url + "/v1/chat/completions", json=chat).json()["choices"][0]
    assert "".join(t["token"] for t in c["logprobs"]["content"]) == c["message"]["content"] != ""
    prompt = "User: Hello\nAssistant:"
    r = httpx.post(url + "/v1/completions", json={**body, "prompt": prompt, "logprobs": 0, "echo": True}).json()
    text, lp = r["choices"][0]["text"], r["choices"][0]["logprobs"]
    assert lp["tokens"].count("<|endoftext|>") == 2 and "endoftext" not in text
    for token, offset in zip(lp["tokens"], lp["text_offset"], strict=True):
        assert text[offset : offset + len(token)] == token or token == "<|endoftext|>"
    assert sorted(lp["text_offset"]) == lp["text_offset"] and lp["text_offset"][-1] < len(text)


def test_chat_logprobs_leave_out_the_end_token_the_content_lacks(url):
    """OpenAI lists no end token: chat's logprobs.content spells the content, while usage counts the token;
    completions (lm-evaluation-harness reads its logprobs) lists <|endoftext|> as before."""
    body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3, "logprobs": True, "top_logprobs": 1}
    r = httpx.post(url + "/v1/chat/completions", json=body).json()
    choice = r["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("", "stop")
    assert choice["logprobs"] == {"content": []} and r["usage"]["completion_tokens"] == 1
    with httpx.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True}) as s:
        text = s.read().decode()
    assert "endoftext" not in text and '"finish_reason":"stop"' in text
    goes_on = httpx.post(url + "/v1/chat/completions", json={**body, "ignore_eos": True}).json()["choices"][0]
    assert goes_on["message"]["content"] == "" and goes_on["logprobs"] == {"content": []}  # ignore_eos: still no text
    completion = httpx.post(url + "/v1/completions", json={"prompt": "Hello", "max_tokens": 3, "logprobs": 1}).json()
    assert completion["choices"][0]["logprobs"]["tokens"] == ["<|endoftext|>"]
    assert completion["usage"]["completion_tokens"] == 1


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_skip_special_tokens_false_is_refused_where_it_would_show_endoftext(url, path):
    """vLLM's skip_special_tokens: false writes a generated <|endoftext|> into the text, which it only reaches
    with ignore_eos (the token that ends a reply is never text); npgpt never does, so together they are a
    400 naming it, not an answer that silently left the token out."""
    body = {"prompt": "Hello"} if "chat" not in path else {"messages": [{"role": "user", "content": "Hello"}]}
    body = {**body, "max_tokens": 3, "skip_special_tokens": False}
    r = httpx.post(url + path, json={**body, "ignore_eos": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "skip_special_tokens", r.text
    assert "leave it out" in r.json()["error"]["message"]
    for fine in ({}, {"ignore_eos": True, "skip_special_tokens": True}, {"spaces_between_special_tokens": False}):
        assert httpx.post(url + path, json={**body, **fine}).status_code == 200, fine


REFUSED = [  # vLLM's options npgpt does not have, each set to something that would change the answer
    ("min_tokens", 4),
    ("stop_token_ids", [13]),
    ("include_stop_str_in_output", True),
    ("use_beam_search", True),
    ("prompt_logprobs", 0),
    ("guided_json", {"type": "object"}),
    ("guided_regex", "[0-9]+"),
    ("guided_choice", ["yes", "no"]),
    ("guided_grammar", "root ::= 'a'"),
    ("structured_outputs", {"choice": ["yes", "no"]}),
    ("allowed_token_ids", [13, 14]),
    ("bad_words", ["And"]),
    ("truncate_prompt_tokens", 0),
    ("response_format", {"type": "json_object"}),  # vLLM's completions take it too
    ("return_tokens_as_token_ids", True),
    ("return_token_ids", True),
    ("logits_processors", ["my.module:Processor"]),
    ("logprob_token_ids", [13, 14]),
    ("return_prompt_text", True),
]
LLAMA_CPP = [  # llama.cpp server's names, set to change the answer, and the value that changes nothing
    ("n_predict", 50, None),
    ("repeat_penalty", 1.3, 1.0),
    ("n_probs", 3, 0),
    ("typical_p", 0.5, 1.0),
    ("mirostat", 2, 0),
    ("top_n_sigma", 1.0, -1.0),
    ("dynatemp_range", 0.5, 0),
    ("dry_multiplier", 0.8, 0),
    ("xtc_probability", 0.5, 0),
    ("grammar", 'root ::= "a"', ""),
    ("json_schema", {"type": "object"}, {}),
    ("t_max_predict_ms", 100, 0),
]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize(("field", "value", "off"), LLAMA_CPP)
def test_llama_cpp_options_are_refused_by_name(url, path, field, value, off):
    """A client written for llama-server (``repeat_penalty``, ``n_predict``) got an answer that ignored them."""
    body = {"prompt": "Hello"} if "chat" not in path else {"messages": [{"role": "user", "content": "Hello"}]}
    body = {**body, "max_tokens": 2}
    r = httpx.post(url + path, json={**body, field: value})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field and field in r.json()["error"]["message"]
    assert httpx.post(url + path, json={**body, field: off}).status_code == 200


TRANSFORMERS = [  # transformers' generate's and TGI's names (and npgpt's Python API's), set to change the answer
    ("max_new_tokens", 50, None),
    ("max_length", 50, None),
    ("do_sample", False, True),
    ("num_return_sequences", 2, 1),
    ("num_beams", 4, 1),
    ("return_full_text", True, False),
    ("stop_at_eot", False, True),
]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize(("field", "value", "off"), TRANSFORMERS)
def test_transformers_and_tgi_options_are_refused_by_name(url, path, field, value, off):
    """A request written with transformers' or TGI's names, or npgpt's own Python API's (``max_new_tokens``,
    ``do_sample: false``, ``num_return_sequences``), was answered as if they were not there: 16 tokens for
    max_new_tokens 50, a sampled reply for do_sample false, one choice for two. Each is refused by name with
    OpenAI's field for it, as llama.cpp's n_predict is; set to what npgpt does anyway, it is accepted."""
    body = {"prompt": "Hello"} if "chat" not in path else {"messages": [{"role": "user", "content": "Hello"}]}
    body = {**body, "max_tokens": 2}
    r = httpx.post(url + path, json={**body, field: value})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field and r.json()["error"]["message"].startswith(f"{field} is not supported")
    assert httpx.post(url + path, json={**body, field: off}).status_code == 200


REFUSED_IN_CHAT = [  # vLLM's chat options that change the transcript
    ("chat_template", "{{ messages[0].content }}"),
    ("add_generation_prompt", False),
    ("documents", [{"title": "a", "text": "b"}]),
]


@pytest.mark.parametrize(("field", "value"), REFUSED_IN_CHAT)
def test_vllm_chat_options_npgpt_lacks_are_refused_by_name(url, field, value):
    body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2}
    r = httpx.post(url + "/v1/chat/completions", json={**body, field: value})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field and field in r.json()["error"]["message"]
    off = {"add_generation_prompt": True}.get(field)
    assert httpx.post(url + "/v1/chat/completions", json={**body, field: off}).status_code == 200


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize(("field", "value"), REFUSED)
def test_vllm_options_npgpt_lacks_are_refused_by_name(url, path, field, value):
    body = {"prompt": "Hello"} if "chat" not in path else {"messages": [{"role": "user", "content": "Hello"}]}
    body = {**body, "max_tokens": 2}
    r = httpx.post(url + path, json={**body, field: value})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field and field in r.json()["error"]["message"]
    off = {"prompt_logprobs": None, "truncate_prompt_tokens": None, "min_tokens": 0, "stop_token_ids": []}.get(
        field, {"type": "text"} if field == "response_format" else False
    )
    assert httpx.post(url + path, json={**body, field: off}).status_code == 200  # left at its default: fine


def char_model() -> GPT2:
    from npgpt.char_tokenizer import CharTokenizer

    tok = CharTokenizer.from_text(["hello world"])
    config = GPT2Config(n_vocab=tok.n_vocab, n_ctx=16, n_embd=16, n_head=2, n_layer=1)
    return GPT2(config, init_params(config, seed=0), tokenizer=tok)


def test_tokenize_and_detokenize_answer_as_vllms_do():
    """``POST /tokenize`` and ``/detokenize`` (vLLM's, which its clients call to count a prompt's tokens) were a
    404: they answer in vLLM's fields with the model's own tokenizer, a character-level one's too."""
    tiny, char = GPT2(TINY, init_params(TINY, seed=0)), char_model()
    with background_server(create_app({"tiny": tiny, "char": char})) as base:
        r = httpx.post(base + "/tokenize", json={"prompt": "Hello world<|endoftext|>", "add_special_tokens": True})
        ids = tiny.tokenizer.encode("Hello world<|endoftext|>", allow_special=True)
        assert r.json() == {"count": 3, "max_model_len": 64, "tokens": ids, "token_strs": None}, r.text
        r = httpx.post(base + "/tokenize", json={"prompt": "Hello world", "return_token_strs": True})
        assert r.json()["token_strs"] == ["Hello", "Ġworld"]  # the vocabulary's spelling, as vLLM's (transformers')
        # a chat's messages: the transcript /v1/chat/completions prompts with, counted as its usage counts it
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        chat = httpx.post(base + "/v1/chat/completions", json={"messages": messages, "max_tokens": 1}).json()
        r = httpx.post(base + "/tokenize", json={"messages": messages})
        assert r.json()["count"] == chat["usage"]["prompt_tokens"]
        assert r.json()["tokens"] == tiny.tokenizer.encode("System: Be brief.\nUser: Hi\nAssistant:")
        r = httpx.post(base + "/detokenize", json={"tokens": ids})
        assert r.json() == {"prompt": "Hello world<|endoftext|>"}
        # a character-level model's own ids
        r = httpx.post(base + "/tokenize", json={"model": "char", "prompt": "hello", "return_token_strs": True})
        assert r.json()["tokens"] == char.tokenizer.encode("hello") and r.json()["token_strs"] == list("hello")
        assert r.json()["max_model_len"] == 16
        r = httpx.post(base + "/detokenize", json={"model": "char", "tokens": r.json()["tokens"]})
        assert r.json() == {"prompt": "hello"}


def test_the_model_list_gives_the_context_length_by_vllms_name():
    """Clients written for vLLM (litellm, agent frameworks sizing their prompts) read a model's context from
    ``/v1/models`` as ``max_model_len``, vLLM's name, which npgpt's cards lacked (they said ``context_length``)."""
    with background_server(create_app({"tiny": GPT2(TINY, init_params(TINY, seed=0)), "char": char_model()})) as base:
        cards = {c["id"]: c for c in httpx.get(base + "/v1/models").json()["data"]}
        assert cards["tiny"]["max_model_len"] == 64 and cards["char"]["max_model_len"] == 16
        assert httpx.get(base + "/v1/models/char").json()["max_model_len"] == 16
        r = httpx.post(base + "/tokenize", json={"model": "char", "prompt": "he"})
        assert r.json()["max_model_len"] == 16  # the same number /tokenize gives


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "says"),
    [
        ("/detokenize", {"tokens": [15496, 50257]}, 400, "tokens[1]", "its ids are 0 to 50256"),
        ("/detokenize", {"tokens": [-1]}, 400, "tokens[0]", "no token of model 'tiny'"),
        ("/detokenize", {"model": "char", "tokens": [0, 9]}, 400, "tokens[1]", "its ids are 0 to 8"),
        ("/detokenize", {"tokens": [True]}, 400, "tokens[0]", "expected an integer"),
        ("/detokenize", {"tokens": "15496"}, 400, "tokens", "expected an array"),
        ("/detokenize", {}, 400, "tokens", "Missing required parameter"),
        ("/detokenize", {"tokens": [1], "model": "gpt-4"}, 404, "model", "not served here"),
        ("/tokenize", {"prompt": 5}, 400, "prompt", "expected a string"),
        ("/tokenize", {}, 400, "prompt", "send either prompt (a text) or messages"),
        ("/tokenize", {"prompt": "a", "messages": [{"role": "user", "content": "a"}]}, 400, "prompt", "not both"),
        ("/tokenize", {"messages": [{"role": "robot", "content": "a"}]}, 400, "messages[0].role", "one of"),
        ("/tokenize", {"model": "char", "prompt": "hello?"}, 400, None, "'?'"),  # no character of its vocabulary
        ("/tokenize", {"content": "a"}, 400, "content", "send prompt"),  # llama.cpp's name
        ("/tokenize", {"prompt": "a", "model": "gpt-4"}, 404, "model", "not served here"),
        (
            "/tokenize",
            {"messages": [{"role": "user", "content": "a"}], "add_generation_prompt": False},
            400,
            "add_generation_prompt",
            "always ends in 'Assistant:'",
        ),
    ],
)
def test_tokenize_and_detokenize_refuse_bad_input_naming_it(path, body, status, param, says):
    with background_server(create_app({"tiny": GPT2(TINY, init_params(TINY, seed=0)), "char": char_model()})) as base:
        r = httpx.post(base + path, json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and says in error["message"] and "\n" not in error["message"], error


def test_tokenize_needs_the_api_key_as_the_api_does():
    with background_server(create_app({"tiny": GPT2(TINY, init_params(TINY, seed=0))}, api_key="k")) as base:
        for path, body in (("/tokenize", {"prompt": "a"}), ("/detokenize", {"tokens": [64]})):
            assert httpx.post(base + path, json=body).status_code == 401
            r = httpx.post(base + path, json=body, headers={"Authorization": "Bearer k"})
            assert r.status_code == 200, r.text
