"""The server's edges: docs behind the API key, and a bounded, graceful shutdown with OpenAI-shaped errors to the end.

In flight at shutdown: a request that finishes within ``--shutdown-timeout`` gets its full answer;
one that does not gets a 503 in OpenAI's shape (plain) or a final error event and ``[DONE]``
(stream), never a cut stream or a plain-text 500; a second SIGINT ends them at once, the same way.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import start_server

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from npgpt.api import GPT2  # noqa: E402
from npgpt.config import GPT2Config  # noqa: E402
from npgpt.formats import npgpt_format  # noqa: E402
from npgpt.params import init_params  # noqa: E402
from npgpt.server import background_server, create_app  # noqa: E402
from npgpt.server.shutdown import FLUSH_S  # noqa: E402

TINY = GPT2Config(n_ctx=128, n_embd=32, n_head=2, n_layer=2)


def slow_model(delay: float) -> GPT2:
    """A tiny model whose every forward pass sleeps ``delay`` seconds first."""
    m = GPT2(TINY, init_params(TINY, seed=0))
    forward = m.backend.forward

    def slow(*args, **kw):
        time.sleep(delay)
        return forward(*args, **kw)

    m.engine.backend = dataclasses.replace(m.backend, forward=slow)
    return m


def test_docs_and_schema_are_off_with_an_api_key():
    m = GPT2(TINY, init_params(TINY, seed=0))
    with background_server(create_app({"tiny": m})) as base:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert httpx.get(base + path).status_code == 200, path
    with background_server(create_app({"tiny": m}, api_key="sesame")) as base:
        for path in ("/docs", "/redoc", "/openapi.json"):
            for headers in ({}, {"Authorization": "Bearer sesame"}):
                r = httpx.get(base + path, headers=headers)
                assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}, path
        assert httpx.get(base + "/health").status_code == 200


def assert_ends_with_shutdown_event(events: list[str]) -> None:
    assert events[-1] == "[DONE]", events[-3:]
    assert json.loads(events[-2])["error"]["code"] == "server_shutting_down", events[-3:]


def test_shutdown_drains_then_ends_the_rest_with_errors():
    """Grace 1 s: a 5-token request finishes, a 100-token plain one gets a 503, a stream an error event."""
    grace = 1.0
    m = slow_model(0.04)  # 100 tokens take over 4 s
    started = threading.Event()
    results: dict = {}

    def stream() -> None:
        with httpx.stream(
            "POST",
            base + "/v1/completions",
            timeout=60,
            json={"prompt": "long stream", "max_tokens": 100, "stream": True},
        ) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            started.set()
            results["stream"] = sse_lines_from(lines)
            results["stream_end"] = time.perf_counter()

    with ThreadPoolExecutor(4) as pool:
        with background_server(create_app({"tiny": m}), shutdown_timeout=grace) as base:
            s = pool.submit(stream)
            plain = pool.submit(
                httpx.post, base + "/v1/completions", timeout=60, json={"prompt": "long plain", "max_tokens": 100}
            )
            assert started.wait(30)
            short = pool.submit(
                httpx.post,
                base + "/v1/completions",
                timeout=60,
                json={"prompt": "short", "max_tokens": 5, "temperature": 0},
            )
            deadline = time.time() + 30
            while httpx.get(base + "/health").json()["models"]["tiny"]["active_rows"] < 3:  # all three in flight
                assert time.time() < deadline
                time.sleep(0.01)
            t0 = time.perf_counter()
        took = time.perf_counter() - t0  # leaving the block shut the server down
        s.result()
    assert short.result().status_code == 200
    assert short.result().json()["choices"][0]["text"] == GPT2(TINY, init_params(TINY, seed=0)).generate(
        "short", max_new_tokens=5, temperature=0
    )
    r = plain.result()
    assert r.status_code == 503 and r.json()["error"]["code"] == "server_shutting_down", r.text
    assert_ends_with_shutdown_event(results["stream"])
    assert results["stream_end"] - t0 < grace + FLUSH_S + 2
    assert took < grace + FLUSH_S + 5


def sse_lines_from(lines) -> list[str]:
    return [line[6:] for line in lines if line.startswith("data: ")]


# -- the real `npgpt serve` and SIGINT ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = GPT2Config(n_ctx=1024, n_embd=128, n_head=2, n_layer=2)  # 1000 tokens x 4 rows: many seconds
    return npgpt_format.save(tmp_path_factory.mktemp("shutdown") / "slow.safetensors", cfg, init_params(cfg, seed=0))


@pytest.mark.parametrize("signals", [1, 2])
def test_sigint_ends_a_long_stream_with_an_error_event_and_exits_0(checkpoint, signals):
    """One SIGINT: the stream ends within the 1 s grace period (+ flush); two, with a 60 s grace: at once."""
    grace = 1.0 if signals == 1 else 60.0
    proc, base = start_server(f"slow={checkpoint}", "--shutdown-timeout", str(grace))
    try:
        body = {"prompt": "Tell me everything", "max_tokens": 1000, "n": 4, "temperature": 0, "stream": True}
        with httpx.stream("POST", base + "/v1/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            t0 = time.perf_counter()
            proc.send_signal(signal.SIGINT)
            if signals == 2:
                time.sleep(0.5)
                proc.send_signal(signal.SIGINT)
            events = sse_lines_from(lines)
            ended = time.perf_counter() - t0
        assert_ends_with_shutdown_event(events)
        finished = [c for e in events[:-2] for c in json.loads(e)["choices"] if c["finish_reason"]]
        assert not finished, "the request finished before the shutdown: make it longer"
        assert ended < (grace if signals == 1 else 0.5) + FLUSH_S + 3, ended
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "Traceback" not in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
