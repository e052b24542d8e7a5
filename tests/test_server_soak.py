"""A short soak: ``npgpt serve`` under a bounded mix of normal, streaming, disconnecting and malformed requests.

For ~60 s (``NPGPT_SOAK_S`` to change it) a few client threads on loopback send a mix of requests
while a separate process polls ``/health``. Must hold: no 5xx and no error event in any stream,
RSS growth within :data:`RSS_GROWTH_BOUND_MB` after warm-up, ``/health`` answering throughout, and a
seeded request answering afterwards with the same text as before. The figures are printed.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import start_server

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from npgpt.config import GPT2Config  # noqa: E402
from npgpt.formats import npgpt_format  # noqa: E402
from npgpt.params import init_params  # noqa: E402

SOAK_S = float(os.environ.get("NPGPT_SOAK_S", "60"))
RSS_GROWTH_BOUND_MB = 64  # after warm-up; the server's steady state holds a kv cache of a few MB
HEALTH_BOUND_S = 0.5  # p99, a bound on a stall (the figure itself is printed; typically a few ms)
SEEDED = {"prompt": "The soak test began", "max_tokens": 24, "seed": 1234, "temperature": 0.9, "top_k": 40}

PROBE = """
import http.client, json, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
conn, lat, end = http.client.HTTPConnection(host, port, timeout=30), [], time.time() + seconds
while time.time() < end:
    t = time.perf_counter()
    conn.request("GET", "/health")
    r = conn.getresponse()
    r.read()
    lat.append(time.perf_counter() - t)
    assert r.status == 200, r.status
    time.sleep(0.02)
print(json.dumps(lat))
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Mix:
    """The clients' requests and what came back."""

    def __init__(self, base: str, rng: random.Random) -> None:
        self.base, self.rng = base, rng
        self.statuses: Counter = Counter()
        self.problems: list[str] = []

    def one(self, client: httpx.Client) -> None:
        kind = self.rng.choice(["plain", "chat", "stream", "stream", "leave_stream", "leave_plain", "malformed"])
        getattr(self, kind)(client)
        self.statuses[kind] += 1

    def _body(self) -> dict:
        r = self.rng
        return {
            "prompt": r.choice(["Once upon a time", "The server", ["A", "B"], [464, 3290]]),
            "max_tokens": r.randint(1, 16),
            "n": r.randint(1, 3),
            "seed": r.randint(0, 10**6),
            "temperature": r.choice([0, 0.7, 1.0]),
            "logprobs": r.choice([None, 2]),
            "echo": r.random() < 0.2,
        }

    def _check(self, r: httpx.Response, what: str) -> None:
        self.statuses[r.status_code] += 1
        if r.status_code >= 500:
            self.problems.append(f"{what}: {r.status_code} {r.text[:200]}")

    def plain(self, client: httpx.Client) -> None:
        self._check(client.post(self.base + "/v1/completions", json=self._body()), "plain")

    def chat(self, client: httpx.Client) -> None:
        body = {
            "messages": [{"role": "user", "content": "Hello there"}],
            "max_tokens": self.rng.randint(1, 12),
            "seed": self.rng.randint(0, 99),
            "logprobs": self.rng.random() < 0.3,
        }
        self._check(client.post(self.base + "/v1/chat/completions", json=body), "chat")

    def stream(self, client: httpx.Client) -> None:
        with client.stream("POST", self.base + "/v1/completions", json={**self._body(), "stream": True}) as r:
            self._check(r, "stream")
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        if not events or events[-1] != "[DONE]" or any("error" in json.loads(e) for e in events[:-1]):
            self.problems.append(f"stream: {events[-3:]}")

    def leave_stream(self, client: httpx.Client) -> None:
        body = {**self._body(), "max_tokens": 100, "stream": True}
        with client.stream("POST", self.base + "/v1/completions", json=body) as r:
            self._check(r, "leave_stream")
            next(r.iter_lines())  # one event, then the client goes away

    def leave_plain(self, client: httpx.Client) -> None:
        try:
            r = client.post(self.base + "/v1/completions", json={**self._body(), "max_tokens": 100}, timeout=0.05)
            self._check(r, "leave_plain")
        except httpx.TimeoutException:
            pass

    def malformed(self, client: httpx.Client) -> None:
        body = self.rng.choice(
            [
                b"{not json",
                b'{"prompt": 5}',
                b'{"prompt": "x", "max_tokens": 1e308}',
                b'{"prompt": "x", "temperature": NaN}',
                b'{"prompt": "x", "n": 100000}',
                b'{"prompt": ' + json.dumps(["a"] * 20000).encode() + b"}",
                b'{"messages": []}',
                b'{"prompt": "\\ud83d", "echo": true}',
            ]
        )
        path = "/v1/chat/completions" if b"messages" in body else "/v1/completions"
        r = client.post(self.base + path, content=body, headers={"Content-Type": "application/json"})
        self._check(r, f"malformed {body[:40]!r}")
        if not 200 <= r.status_code < 500 or (r.status_code >= 400 and "error" not in r.json()):
            self.problems.append(f"malformed {body[:40]!r}: {r.status_code} {r.text[:200]}")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="the server's RSS is read from /proc (Linux)")
def test_soak(tmp_path, capsys):
    cfg = GPT2Config(n_ctx=128, n_embd=64, n_head=2, n_layer=2)
    path = npgpt_format.save(tmp_path / "soak.safetensors", cfg, init_params(cfg, seed=0))
    server, base = start_server(f"soak={path}", "--max-batch", "8", log=tmp_path / "server.log")
    try:
        before = httpx.post(base + "/v1/completions", json=SEEDED, timeout=60).json()["choices"][0]["text"]
        mix = Mix(base, random.Random(0))
        with httpx.Client(timeout=60) as client:
            for _ in range(40):  # warm-up: every kind of request, so the baseline RSS has seen them
                mix.one(client)
        rss = [rss_mb(server.pid)]
        probe = subprocess.Popen(
            [sys.executable, "-c", PROBE, "127.0.0.1", str(httpx.URL(base).port), str(SOAK_S)],
            stdout=subprocess.PIPE,
            text=True,
        )
        end = time.time() + SOAK_S

        def client_loop(seed: int) -> None:
            m = Mix(base, random.Random(seed))
            with httpx.Client(timeout=60) as client:
                while time.time() < end:
                    m.one(client)
            with lock:
                mix.statuses.update(m.statuses)
                mix.problems.extend(m.problems)

        lock = threading.Lock()
        threads = [threading.Thread(target=client_loop, args=(i + 1,)) for i in range(4)]
        for t in threads:
            t.start()
        while time.time() < end:
            time.sleep(1)
            rss.append(rss_mb(server.pid))
        for t in threads:
            t.join(120)
        health = sorted(json.loads(probe.communicate(timeout=60)[0]))
        time.sleep(1)  # rows of departed clients leave at the next step
        rss.append(rss_mb(server.pid))
        after = httpx.post(base + "/v1/completions", json=SEEDED, timeout=60).json()["choices"][0]["text"]
        state = httpx.get(base + "/health").json()["models"]["soak"]
    finally:
        server.terminate()
        server.wait(30)
    served = sum(v for k, v in mix.statuses.items() if isinstance(k, str))
    p50, p99 = statistics.median(health), health[round(0.99 * (len(health) - 1))]
    with capsys.disabled():
        print(
            f"\nsoak {SOAK_S:.0f} s: {served} requests served after warm-up, by kind "
            f"{ {k: v for k, v in mix.statuses.items() if isinstance(k, str)} }, by status "
            f"{ {k: v for k, v in mix.statuses.items() if isinstance(k, int)} }; /health x{len(health)}: p50 "
            f"{1e3 * p50:.1f} ms, p99 {1e3 * p99:.1f} ms, max {1e3 * health[-1]:.1f} ms; RSS {rss[0]:.0f} MB after "
            f"warm-up -> {rss[-1]:.0f} MB after (max {max(rss):.0f} MB)"
        )
    assert not mix.problems, mix.problems[:10]
    assert not any(isinstance(k, int) and k >= 500 for k in mix.statuses)
    assert after == before, "a seeded request changed its answer after the soak"
    assert state["active_rows"] == 0 and state["queued_requests"] == 0, state
    assert max(rss) - rss[0] < RSS_GROWTH_BOUND_MB, rss
    assert p99 < HEALTH_BOUND_S, (p50, p99)
