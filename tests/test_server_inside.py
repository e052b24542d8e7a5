"""``POST /v1/internals`` and the playground's "Inside" panel: the attention pattern and logit lens
the server sends and the page draws equal ``lens.py``'s."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("uvicorn") and pytest.importorskip("httpx")

from test_playground import browser  # noqa: E402, F401 - the headless Chromium fixture

from npgpt.api import GPT2  # noqa: E402
from npgpt.config import GPT2Config  # noqa: E402
from npgpt.lens import attention_pattern, logit_lens  # noqa: E402
from npgpt.params import init_params  # noqa: E402
from npgpt.server import background_server, create_app  # noqa: E402
from npgpt.server.inside import MAX_TOKENS  # noqa: E402

TINY = GPT2Config(n_ctx=128, n_embd=48, n_head=3, n_layer=2)
PROMPT = "In the beginning God created the heaven"


@pytest.fixture(scope="module")
def model() -> GPT2:
    return GPT2(TINY, init_params(TINY, seed=3))


@pytest.fixture(scope="module")
def url(model: GPT2):
    with background_server(create_app({"tiny": model})) as base:
        yield base


def post(url: str, **body) -> httpx.Response:
    return httpx.post(url + "/v1/internals", json=body, timeout=60)


def test_internals_equal_the_library(url: str, model: GPT2):
    r = post(url, prompt=PROMPT, layer=1, head=2)
    assert r.status_code == 200, r.text
    d = r.json()
    ids = model.tokenizer.encode(PROMPT)
    assert d["model"] == "tiny" and (d["n_layer"], d["n_head"], d["layer"], d["head"]) == (2, 3, 1, 2)
    assert d["tokens"] == [model.tokenizer.decode([t]) for t in ids] and not d["truncated"]
    pattern = attention_pattern(model, ids, 1, 2)
    assert [len(row) for row in d["attention"]] == list(range(1, len(ids) + 1))
    for q, row in enumerate(d["attention"]):
        np.testing.assert_allclose(row, pattern[q, : q + 1], atol=1e-4)
    lens = logit_lens(model, ids)
    assert d["logit_lens"]["layers"] == ["embed", "1", "2"]
    assert d["logit_lens"]["top_tokens"] == [[model.tokenizer.decode([t]) for t in row] for row in lens.top_ids]
    np.testing.assert_allclose(d["logit_lens"]["final_probs"], lens.final_probs, atol=1e-4)


def test_a_negative_layer_or_head_counts_from_the_end_as_the_library_does(url: str):
    """The library takes layer=-1 as the last block and its error says so ('[-2, 1] ... negative: counted from the
    end'), while the server refused -1 ('integer below minimum value'): it reads it as the library does, answering
    with the block's and the head's numbers."""
    r, last = post(url, prompt=PROMPT, layer=-1, head=-2), post(url, prompt=PROMPT, layer=1, head=1)
    assert r.status_code == 200, r.text
    assert (r.json()["layer"], r.json()["head"]) == (1, 1) and r.json() == last.json()


def test_long_prompts_show_their_last_tokens(url: str, model: GPT2):
    d = post(url, prompt=" and" * (MAX_TOKENS + 10)).json()
    assert d["truncated"] and len(d["tokens"]) == len(d["attention"]) == MAX_TOKENS


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": PROMPT, "layer": 2}, "layer must be a whole number in [-2, 1]"),
        ({"prompt": PROMPT, "head": 3}, "head must be a whole number in [-3, 2]"),
        ({"prompt": PROMPT, "layer": -3}, "layer must be a whole number in [-2, 1]"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": PROMPT, "model": "nope"}, "not served here"),
    ],
)
def test_bad_requests_are_400_with_a_message(url: str, body: dict, message: str):
    r = post(url, **body)
    assert r.status_code == (404 if "model" in body else 400) and message in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == next(k for k in ("model", "layer", "head", "prompt") if k in body)


def test_playground_inside_panel_draws_the_pattern_and_the_lens(browser, url: str, model: GPT2):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.execute_script("return document.getElementById('model').options.length") == 1)
    box = browser.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(PROMPT)
    browser.find_element(By.ID, "inside").click()
    ids = model.tokenizer.encode(PROMPT)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#attention tbody tr")) == len(ids))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#lens tbody tr")) == TINY.n_layer + 1
    Select(browser.find_element(By.ID, "head")).select_by_value("2")  # redraws for head 2
    wait.until(lambda d: d.find_element(By.ID, "attention").get_attribute("data-head") == "2")
    pattern = attention_pattern(model, ids, 0, 2)
    titles = [td.get_attribute("title") for td in browser.find_elements(By.CSS_SELECTOR, "#attention tbody tr td")]
    q, k = len(ids) - 1, int(pattern[-1].argmax())
    assert titles[q * len(ids) + k].endswith(f"{100 * pattern[q, k]:.1f}%")
    lens = logit_lens(model, ids)
    final_row = browser.find_elements(By.CSS_SELECTOR, "#lens tbody tr")[-1].find_elements(By.TAG_NAME, "td")
    shown = [td.get_attribute("textContent") for td in final_row]  # tokens as JSON strings without the quotes
    assert shown == [json.dumps(model.tokenizer.decode([t]), ensure_ascii=False)[1:-1] for t in lens.top_ids[-1]]
    assert browser.find_element(By.ID, "inside-status").text == f"{len(ids)} tokens"
