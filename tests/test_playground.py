"""The playground page at ``/`` in headless Chromium: prompt, generate, streamed text, next-token bars.

Needs ``chromium``, ``chromedriver`` (Debian: ``apt-get install -y chromium chromium-driver``) and
the ``selenium`` package. Without them the test is skipped, except under CI (``CI`` set), where
it fails. Set ``NPGPT_SCREENSHOT=path.png`` to keep a copy of the screenshot, and
``NPGPT_SCREENSHOT_DIR=docs`` to keep the phone-width one as ``docs/playground-phone.png``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from npgpt.api import GPT2
from npgpt.config import GPT2Config
from npgpt.params import init_params
from npgpt.server import background_server, create_app

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def need(ok: object, why: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"{why}; CI must have it: apt-get install -y chromium chromium-driver; pip install selenium")
        pytest.skip(why)


@pytest.fixture
def browser(tmp_path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    need(webdriver, "selenium is not installed")
    need(CHROMIUM and CHROMEDRIVER, "chromium and chromedriver are not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def slow_tiny_model(delay: float) -> tuple[GPT2, GPT2]:
    """A small random model whose forward passes sleep ``delay`` s (to watch streaming), and the same model."""
    cfg = GPT2Config(n_ctx=128, n_embd=32, n_head=2, n_layer=2)
    model = GPT2(cfg, init_params(cfg, seed=0))
    forward = model.backend.forward

    def slow(*args, **kw):
        time.sleep(delay)
        return forward(*args, **kw)

    fast = GPT2(cfg, model.params)
    model.engine.backend = dataclasses.replace(model.backend, forward=slow)
    return model, fast


def keep_screenshot(browser, tmp_path, name: str) -> None:
    """Save a screenshot (checked to be a PNG); copy it to ``$NPGPT_SCREENSHOT_DIR/name`` if that is set."""
    shot = tmp_path / name
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("NPGPT_SCREENSHOT_DIR"):
        shutil.copy(shot, os.path.join(os.environ["NPGPT_SCREENSHOT_DIR"], name))


def test_playground_streams_a_completion(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    model, reference = slow_tiny_model(delay=0.03)
    prompt = "The quick brown fox"
    with background_server(create_app({"tiny": model})) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.execute_script("return document.getElementById('model').options.length") == 1)
        box = browser.find_element(By.ID, "prompt")
        box.clear()
        box.send_keys(prompt)
        for control, value in (("max_tokens", 40), ("temperature", 0)):
            browser.execute_script(
                "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
                "e.dispatchEvent(new Event('input'));",
                control,
                value,
            )
        browser.find_element(By.ID, "generate").click()

        def text(element_id: str) -> str:
            return browser.execute_script(f"return document.getElementById('{element_id}').textContent")

        # streaming: part of the text is on the page while generation is still running
        wait.until(lambda d: text("completion") and d.find_element(By.ID, "stop").is_enabled())
        wait.until(lambda d: "done" in text("status"))
        assert text("completion") == reference.generate(prompt, max_new_tokens=40, temperature=0)
        assert text("echo") == prompt and text("error") == ""
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#next-tokens .bar")) == 10)
        top = reference.next_tokens(prompt + text("completion"), k=10)
        shown = [b.get_attribute("title") for b in browser.find_elements(By.CSS_SELECTOR, "#next-tokens .bar")]
        assert shown == [f"token id {i}" for i, _, _ in top]
        shot = tmp_path / "playground.png"
        assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:4] == b"\x89PNG"
        if os.environ.get("NPGPT_SCREENSHOT"):
            shutil.copy(shot, os.environ["NPGPT_SCREENSHOT"])

        # an error from the server shows on the page
        browser.execute_script(
            "document.getElementById('max_tokens').max = 1000;document.getElementById('max_tokens').value = 1000;"
        )
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda d: text("error"))
        assert "context" in text("error")


def test_playground_at_phone_width_follows_typing(browser, tmp_path):
    """At 390 px nothing in the header is cut off; the next-token bars follow the prompt as it is typed;
    the bundled model gets a prompt it knows; the stop field's escapes read as the CLI reads them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from npgpt.api import load
    from npgpt.cli.options import unescape

    bundled = load("bundled")
    model, _ = slow_tiny_model(delay=0)
    with background_server(create_app({"bundled": bundled, "tiny": model})) as url:
        browser.set_window_size(390, 844)
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.execute_script("return document.getElementById('model').options.length") == 2)
        js = browser.execute_script
        assert js("return window.innerWidth") <= 390
        # the header's controls lie inside the viewport and the page does not scroll sideways
        for element_id in ("model", "api-key"):
            left, right = js(
                f"const r = document.getElementById('{element_id}').getBoundingClientRect();return [r.left, r.right]"
            )
            assert 0 <= left < right <= js("return document.documentElement.clientWidth"), element_id
        assert js("return document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        assert js("return document.getElementById('api-key').getBoundingClientRect().width") >= 80

        box = browser.find_element(By.ID, "prompt")
        assert box.get_attribute("value") == "And God said"  # the bundled model's default prompt

        def bars() -> list[str]:
            return [b.get_attribute("title") for b in browser.find_elements(By.CSS_SELECTOR, "#next-tokens .bar")]

        def expected(text: str) -> list[str]:
            return [f"token id {i}" for i, _, _ in bundled.next_tokens(text, k=10)]

        wait.until(lambda d: bars() == expected("And God said"))
        box.send_keys(" unto Moses")  # typed, no button pressed: the panel follows
        wait.until(lambda d: bars() == expected("And God said unto Moses"))
        height = js("return document.documentElement.scrollHeight")
        browser.set_window_size(390, height + 140)  # the whole page in one picture, still 390 px wide
        assert js("return window.innerWidth") <= 390
        keep_screenshot(browser, tmp_path, "playground-phone.png")

        # another model: the untouched default prompt changes to suit it; an edited one stays
        js("const s = document.getElementById('model'); s.value = 'tiny'; s.dispatchEvent(new Event('change'));")
        assert box.get_attribute("value") == "And God said unto Moses"
        box.clear()
        js("const s = document.getElementById('model'); s.value = 'tiny'; s.dispatchEvent(new Event('change'));")
        assert box.get_attribute("value").startswith("Alan Turing")

        for typed in (
            "\\n\\n",
            "a\\tb",
            "back\\\\slash",
            "caf\\u00e9",
            "\\x41",
            "\\q stays",
            "\\U0001F600",
            "\\UFFFFFFFF",
        ):
            assert js("return unescape(arguments[0])", typed) == unescape(typed), typed
