"""The server under faults and heavy requests: one bad row never fails the batch, one request never stalls it.

Faults are injected into one request of a running batch (its rows' sampler raises, or picks an id
outside the vocabulary, or its prefill fails); every other request must get exactly the text it
gets alone. Heavy requests are refused with a 400 naming the limit, or admitted fairly.
"""

from __future__ import annotations

import dataclasses
import http.client
import itertools
import json
import queue
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from npgpt.api import GPT2  # noqa: E402
from npgpt.config import GPT2Config  # noqa: E402
from npgpt.params import init_params  # noqa: E402
from npgpt.sampling import SamplingParams  # noqa: E402
from npgpt.server import background_server, create_app  # noqa: E402
from npgpt.server.scheduler import Request, RowFailed, Scheduler  # noqa: E402
from npgpt.server.streaming import failure  # noqa: E402
from npgpt.server.tasks import Row  # noqa: E402

TINY = GPT2Config(n_ctx=128, n_embd=32, n_head=2, n_layer=2)
BAD_SEED = 666  # the request whose rows the injected fault hits


@pytest.fixture(scope="module")
def model() -> GPT2:
    return GPT2(TINY, init_params(TINY, seed=0))


def inject(monkeypatch, fault) -> None:
    """Make ``Row.pick`` call ``fault(row)`` first (it may raise, or change the row) for every row."""
    original = Row.pick

    def pick(self, logits):
        fault(self)
        return original(self, logits)

    monkeypatch.setattr(Row, "pick", pick)


def collect(inbox: queue.Queue, n: int) -> tuple[list[str], list[list[int]], BaseException | None]:
    """Texts and tokens per row from a request's inbox, or the error that ended it (then nothing follows)."""
    texts, tokens, left = [""] * n, [[] for _ in range(n)], n
    while left:
        ev = inbox.get(timeout=60)
        if isinstance(ev, BaseException):
            time.sleep(0.05)
            assert inbox.empty(), "an event arrived after the error that ended the request"
            return texts, tokens, ev
        texts[ev.row] += ev.text
        tokens[ev.row].append(ev.token)
        left -= ev.finish_reason is not None
    return texts, tokens, None


GOOD = [
    ("The river", dict(max_new_tokens=20, seed=1, top_k=40), 2),
    ("Green apples are", dict(max_new_tokens=14, temperature=0), 1),
    ("A long prompt " * 6, dict(max_new_tokens=25, seed=3, top_p=0.9, stop=("e d",)), 2),
]


def run_batch(model: GPT2, bad_n: int = 2, max_batch: int = 8) -> tuple[list, BaseException | None]:
    """The GOOD requests and one BAD_SEED request, all admitted into one batch; their results."""
    sched = Scheduler(model, max_batch=max_batch)
    hold = threading.Event()
    try:
        sched.call(lambda: hold.wait(30))  # keeps the worker busy until every request is queued
        inboxes = []
        for prompt, kw, n in [GOOD[0], ("Bad apples", dict(max_new_tokens=30, seed=BAD_SEED), bad_n), *GOOD[1:]]:
            inbox: queue.Queue = queue.Queue()
            sched.submit(Request([model.tokenizer.encode(prompt)] * n, SamplingParams(**kw), inbox.put))
            inboxes.append((inbox, n))
        hold.set()
        results = [collect(inbox, n) for inbox, n in inboxes]
        # the scheduler keeps serving afterwards
        inbox = queue.Queue()
        sched.submit(Request([model.tokenizer.encode("After")], SamplingParams(max_new_tokens=3), inbox.put))
        assert collect(inbox, 1)[2] is None
        assert sched.active == 0
        return [results[0], *results[2:]], results[1][2]
    finally:
        sched.close()


def assert_good_unchanged(model: GPT2, good_results: list) -> None:
    for (prompt, kw, n), (texts, tokens, error) in zip(GOOD, good_results, strict=True):
        assert error is None
        ref = model.completions([prompt] * n, **kw)  # each request alone, same seed
        assert texts == [c.text for c in ref] and tokens == [c.tokens for c in ref], prompt


# -- one bad row never fails the batch (issue 14, kind 6) ---------------------------------------------------
@pytest.mark.parametrize("at_token, bad_row", [(0, 0), (0, 1), (3, 1), (7, 0), (29, 1)])
def test_a_row_that_raises_ends_only_its_request(model, monkeypatch, at_token, bad_row):
    """A fault at the first pick (prefill), mid-way, or at the last token, in either row of the bad request."""

    def fault(row: Row) -> None:
        if row.request.params.seed == BAD_SEED and row.row == bad_row and row.n_new == at_token:
            raise ValueError("injected fault in one row's sampler")

    inject(monkeypatch, fault)
    good, error = run_batch(model)
    assert isinstance(error, RowFailed) and error.index == bad_row and "injected fault" in str(error)
    assert "ValueError" not in str(
        error
    )  # a client is told the words, not Python's type: "choice 1 failed: injected ..."
    assert_good_unchanged(model, good)


def test_a_token_outside_the_vocabulary_ends_only_its_request(model, monkeypatch):
    """A sampler that returns an id the embedding does not have (e.g. a padded vocabulary's) is caught
    before the shared decode step it would fail."""
    original = Row.pick

    def pick(self, logits):
        event = original(self, logits)
        if self.request.params.seed == BAD_SEED and self.n_new == 4:
            self.token = TINY.n_vocab + 3
        return event

    monkeypatch.setattr(Row, "pick", pick)
    good, error = run_batch(model)
    assert isinstance(error, RowFailed) and "outside the vocabulary" in str(error)
    assert_good_unchanged(model, good)


@pytest.mark.parametrize("bad_row", [0, 1])
def test_a_row_whose_setting_up_raises_ends_only_its_request(model, monkeypatch, bad_row):
    """Setting up a row as it joins the batch (its sampler state: penalty counts, stop tracker, generator) is
    the row's own work too: if it raises, only its request ends, and the rows admitted beside it run."""
    original = Row.__init__

    def init(self, request, index, *args, **kw):
        if request.params.seed == BAD_SEED and index == bad_row:
            raise MemoryError("injected fault setting up one row")
        original(self, request, index, *args, **kw)

    monkeypatch.setattr(Row, "__init__", init)
    good, error = run_batch(model)
    assert isinstance(error, RowFailed) and error.index == bad_row and "injected fault" in str(error)
    assert_good_unchanged(model, good)


def test_a_failing_prefill_ends_only_its_request(model):
    """The prefill of several new requests fails because of one of them: the others are retried and run."""
    m = GPT2(TINY, init_params(TINY, seed=0))
    marker = m.tokenizer.encode("Bad apples")[0]
    forward = m.backend.forward

    def failing(ids, *args, **kw):
        if ids.shape[1] > 1 and (np.asarray(ids) == marker).any():  # a prefill holding the bad prompt
            raise FloatingPointError("injected prefill failure")
        return forward(ids, *args, **kw)

    m.engine.backend = dataclasses.replace(m.backend, forward=failing)
    good, error = run_batch(m)
    assert isinstance(error, RuntimeError) and "injected prefill failure" in str(error)
    assert "FloatingPointError" not in str(error)
    assert_good_unchanged(model, good)


@pytest.fixture
def url(model):
    with background_server(create_app({"tiny": model}, max_batch=8)) as base:
        yield base


def stream_events(base: str, body: dict) -> list:
    with httpx.stream("POST", base + "/v1/completions", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200
        return [line[6:] for line in r.iter_lines() if line.startswith("data: ")]


def test_over_http_the_bad_request_gets_an_error_and_the_others_their_text(url, model, monkeypatch):
    """Plain: an OpenAI-shaped 500 for the bad request; streamed: a final error event, then [DONE]."""

    def fault(row: Row) -> None:
        if row.request.params.seed == BAD_SEED and row.n_new == 5:
            raise ValueError("injected fault")

    inject(monkeypatch, fault)
    good = [
        dict(prompt=f"Client {i} writes", max_tokens=12, seed=10 + i, temperature=0.8, n=1 + i % 2) for i in range(4)
    ]
    bad = dict(prompt="Bad client", max_tokens=20, seed=BAD_SEED, n=2)
    with ThreadPoolExecutor(8) as pool:
        plain = [pool.submit(httpx.post, url + "/v1/completions", json=b, timeout=60) for b in good]
        streamed = [pool.submit(stream_events, url, b) for b in good]
        bad_plain = pool.submit(httpx.post, url + "/v1/completions", json=bad, timeout=60)
        bad_stream = pool.submit(stream_events, url, bad)
        r = bad_plain.result()
        assert r.status_code == 500
        err = r.json()["error"]
        assert err["code"] == "generation_failed" and err["type"] == "server_error"
        assert "choice" in err["message"] and "injected fault" in err["message"]
        events = bad_stream.result()
        assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "generation_failed"
        for b, p, s in zip(good, plain, streamed, strict=True):
            ref = [
                c.text
                for c in model.completions([b["prompt"]] * b["n"], max_new_tokens=12, seed=b["seed"], temperature=0.8)
            ]
            assert [c["text"] for c in p.result().json()["choices"]] == ref
            texts = [""] * b["n"]
            events = s.result()
            assert events[-1] == "[DONE]"
            for e in events[:-1]:
                for c in json.loads(e)["choices"]:
                    texts[c["index"]] += c["text"]
            assert texts == ref


# -- one request cannot stall the server (issue 14, kind 7) --------------------------------------------------
def test_limits_refuse_with_a_400_naming_the_limit_and_parameter(model):
    app = create_app({"tiny": model}, max_rows=8, max_request_tokens=200)
    with background_server(app) as base:
        cases = [
            ({"prompt": ["a", "b", "c"], "n": 3}, "prompt", "too_many_rows", "--max-rows"),
            ({"prompt": [[1], [2], [3]], "n": 3}, "prompt", "too_many_rows", "--max-rows"),
            ({"prompt": "x", "n": 9}, "n", "too_many_rows", "--max-rows"),
            ({"prompt": "hi there", "n": 4, "max_tokens": 60}, "max_tokens", "too_many_tokens", "--max-request-tokens"),
        ]
        for body, param, code, option in cases:
            r = httpx.post(base + "/v1/completions", json=body)
            assert r.status_code == 400, (body, r.text)
            err = r.json()["error"]
            assert (err["param"], err["code"]) == (param, code) and option in err["message"], err
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        for body, code in [({**chat, "n": 9}, "too_many_rows"), ({**chat, "n": 4}, "too_many_tokens")]:
            r = httpx.post(base + "/v1/chat/completions", json=body)  # n=4 to the end of the context: > 200
            assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text
        ok = httpx.post(base + "/v1/completions", json={"prompt": ["a", "b"], "n": 4, "max_tokens": 3})
        assert ok.status_code == 200 and len(ok.json()["choices"]) == 8


def test_the_logprobs_limit_follows_a_raised_token_limit(model, monkeypatch):
    """The logprobs limit's default was 262144 whatever the token limit: a server started with
    --max-request-tokens 300000 for a large scoring job refused lm-evaluation-harness's logprobs 1 over the
    tokens it admits (too_many_logprobs). Left out, it is twice the token limit, in create_app and npgpt serve."""
    from typer.testing import CliRunner

    import npgpt.server.app as server_app
    from npgpt.cli import app

    assert create_app({"tiny": model}).state.limits.max_request_logprobs == 262_144
    raised = create_app({"tiny": model}, max_request_tokens=300_000).state.limits
    assert raised.max_request_logprobs == 600_000
    assert create_app({"tiny": model}, max_request_logprobs=5).state.limits.max_request_logprobs == 5
    seen = {}

    def fake_create_app(models, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(server_app, "create_app", fake_create_app)
    r = CliRunner().invoke(app, ["serve", "-m", "bundled", "--max-request-tokens", "300000"])
    assert seen.get("max_request_logprobs") == 600_000, (r.output, r.exception)


def test_logprobs_over_the_limit_are_a_400_naming_the_product_before_any_scoring(model, monkeypatch):
    """The answer's size was bounded by nothing but the token limit: echo with logprobs 20 lists 21 entries a
    token, ~14 MB and ~a minute of Python for 96 prompts of 256 tokens. Now tokens listed x (logprobs + 1) is
    bounded too (--max-request-logprobs), refused up front, before any prompt is scored, naming the product."""
    from npgpt.server import completions
    from npgpt.server.limits import MAX_REQUEST_TOKENS, Limits

    scored = []
    real = completions.score_prompts
    monkeypatch.setattr(completions, "score_prompts", lambda *a: scored.append(1) or real(*a))
    app = create_app({"tiny": model}, max_request_logprobs=1000)
    prompts = [[5] * 30] * 4  # 120 tokens
    with background_server(app) as base:
        body = {"prompt": prompts, "max_tokens": 0, "echo": True, "logprobs": 20}
        error = httpx.post(base + "/v1/completions", json=body).json()["error"]
        assert error == {
            "message": "this request asks for the logprobs of 120 tokens (4 prompt(s) echoed: 120 tokens) x 21 (each "
            "token and its logprobs=20 alternatives) = 2520 entries, over the server's limit of 1000 per request "
            "(--max-request-logprobs); send logprobs of at most 7, or fewer or shorter prompts, or split the request",
            "type": "invalid_request_error",
            "param": "logprobs",
            "code": "too_many_logprobs",
        }
        assert not scored
        ok = httpx.post(base + "/v1/completions", json={**body, "logprobs": 7})
        assert ok.status_code == 200 and len(ok.json()["choices"][0]["logprobs"]["tokens"]) == 30 and scored
        # generated tokens count too, and n copies of an echoed prompt
        body = {"prompt": prompts[:1], "max_tokens": 20, "echo": True, "logprobs": 5, "n": 4}
        message = httpx.post(base + "/v1/completions", json=body).json()["error"]["message"]
        assert "of 200 tokens (1 prompt(s) echoed x n=4: 120 tokens, plus max_tokens=20 for each of its 4 " in message
        assert httpx.post(base + "/v1/completions", json={**body, "echo": False}).status_code == 200  # 80 x 6
        chat = {"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 20, "n": 4}
        error = httpx.post(base + "/v1/chat/completions", json={**chat, "max_tokens": 20}).json()["error"]
        assert error["param"] == "top_logprobs" and error["code"] == "too_many_logprobs", error
        assert "send top_logprobs of at most 11, or a lower max_tokens or n" in error["message"], error
        assert httpx.post(base + "/v1/chat/completions", json={**chat, "max_tokens": 11}).status_code == 200
    # a scoring client's logprobs 1 (lm-evaluation-harness's) over every token the token limit admits is admitted
    Limits().check_logprobs(MAX_REQUEST_TOKENS, 1, "every token")


def test_the_token_limit_names_the_parameter_that_puts_the_request_over(model):
    """The prompt over the limit alone names prompt (chat: messages), n when only its copies are over, and
    max_tokens only when the client sent it: a default max_tokens is said to be one, never cited as sent."""
    app = create_app({"tiny": model}, max_rows=8, max_request_tokens=40)
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    long_chat = {"messages": [{"role": "user", "content": "word " * 50}]}  # under the context of 128, over 40
    cases = [
        ("/v1/completions", {"prompt": [1] * 50, "max_tokens": 5}, "prompt", "shorter prompts"),
        ("/v1/completions", {"prompt": [1] * 50, "max_tokens": 0, "echo": True, "logprobs": 0}, "prompt", "50"),
        ("/v1/completions", {"prompt": [[1] * 30, [2] * 30], "max_tokens": 1}, "prompt", "fewer or shorter"),
        ("/v1/completions", {"prompt": [1] * 15, "n": 3, "max_tokens": 1}, "n", "lower n to at most 2"),
        ("/v1/completions", {"prompt": [1] * 10, "max_tokens": 50}, "max_tokens", "max_tokens of at most 30"),
        ("/v1/completions", {"prompt": [1] * 30}, None, "max_tokens=16 (not sent: its default)"),
        ("/v1/chat/completions", long_chat, "messages", "fewer or shorter messages"),
        ("/v1/chat/completions", {**long_chat, "max_tokens": 5}, "messages", "fewer or shorter messages"),
        ("/v1/chat/completions", chat, None, "(not sent: its default)"),
        ("/v1/chat/completions", {**chat, "max_tokens": 60}, "max_tokens", "max_tokens=60"),
        ("/v1/chat/completions", {**chat, "max_completion_tokens": 60}, "max_completion_tokens", "at most"),
    ]
    with background_server(app) as base:
        for path, body, param, words in cases:
            r = httpx.post(base + path, json=body)
            assert r.status_code == 400, (body, r.text)
            err = r.json()["error"]
            assert (err["param"], err["code"]) == (param, "too_many_tokens"), (body, err)
            assert words in err["message"] and "--max-request-tokens" in err["message"], (body, err)
            if param in ("prompt", "messages", "n"):
                assert "max_tokens" not in err["message"], (body, err)
        ok = httpx.post(base + "/v1/chat/completions", json={**chat, "max_tokens": 20})
        assert ok.status_code == 200, ok.text


class HealthProbe:
    """Polls ``/health`` from a thread while it runs; the latencies in seconds."""

    def __init__(self, base: str, every: float = 0.02) -> None:
        self.base, self.every, self.latencies = base, every, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:  # http.client: httpx adds ~40 ms a call on loopback here, hiding the server's time
        host, port = self.base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            while not self.stop.is_set():
                t = time.perf_counter()
                conn.request("GET", "/health")
                r = conn.getresponse()
                r.read()
                self.latencies.append(time.perf_counter() - t)
                assert r.status == 200
                time.sleep(self.every)
        finally:
            conn.close()

    def __enter__(self) -> HealthProbe:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)

    def summary(self) -> str:
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
        return (
            f"{len(lat)} /health calls: p50 {1e3 * statistics.median(lat):.1f} ms, p99 {1e3 * p99:.1f} ms, "
            f"max {1e3 * lat[-1]:.1f} ms"
        )


def test_a_huge_request_neither_freezes_the_server_nor_blocks_a_small_one(model, capsys):
    """A 1 MB body of one-token prompts with n=128 is refused at once; a maximal request (every row and token
    the limits allow) runs while /health keeps answering and a small request after it finishes first."""
    max_rows = 48
    app = create_app({"tiny": model}, max_batch=8, max_rows=max_rows)
    with background_server(app) as base, HealthProbe(base) as probe, ThreadPoolExecutor(4) as pool:
        huge = json.dumps({"prompt": ["a"] * 240_000, "n": 128, "max_tokens": 1}, separators=(",", ":")).encode()
        assert 900_000 < len(huge) <= 1_000_000
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)  # httpx would hold the GIL encoding it
        t = time.perf_counter()
        conn.request("POST", "/v1/completions", body=huge, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        err = json.loads(r.read())["error"]
        refused_in = time.perf_counter() - t
        conn.close()
        assert r.status == 400 and err["param"] == "prompt" and "4096" in err["message"], err
        prompts = [f"prompt {i} " * 40 for i in range(max_rows // 2)]  # long prompts: every admission a prefill
        big = pool.submit(
            httpx.post,
            base + "/v1/completions",
            timeout=120,
            json={"prompt": prompts, "n": 2, "max_tokens": 24, "seed": 1},
        )
        deadline = time.time() + 60
        while httpx.get(base + "/health").json()["models"]["tiny"]["active_rows"] == 0:
            assert time.time() < deadline and not big.done()
            time.sleep(0.005)
        small = pool.submit(
            httpx.post, base + "/v1/completions", json={"prompt": "small", "max_tokens": 4}, timeout=120
        )
        assert small.result().status_code == 200
        assert not big.done(), "the small request waited for the whole of the big one"
        assert big.result().status_code == 200 and len(big.result().json()["choices"]) == max_rows
    # A bound on a hang, not a timing claim: a frozen server answers nothing for the whole request (tens of
    # seconds); a busy CI machine (load 7 on 2 cores) once delayed one answer 4.3 s.
    assert max(probe.latencies) < 15.0, probe.summary()
    with capsys.disabled():
        print(
            f"\n1 MB body of 240000 prompts x n=128 refused in {1e3 * refused_in:.0f} ms; while a maximal "
            f"request ran: {probe.summary()}"
        )


def test_free_rows_go_to_the_request_with_the_fewest(model):
    """Scheduler level: a small request queued behind a big one starts at the next free row, not after the
    big one's every row; order of finishing is recorded from the worker thread."""
    sched = Scheduler(model, max_batch=4)
    finished: list[str] = []
    hold = threading.Event()

    def inbox(name: str):
        return lambda ev: finished.append(name) if getattr(ev, "finish_reason", None) else None

    try:
        sched.call(lambda: hold.wait(30))
        ids = model.tokenizer.encode("Tokens")
        sched.submit(Request([ids] * 40, SamplingParams(max_new_tokens=5, seed=0), inbox("big")))
        sched.submit(Request([ids] * 2, SamplingParams(max_new_tokens=5, seed=1), inbox("small")))
        hold.set()
        deadline = time.time() + 60
        while len(finished) < 42:
            assert time.time() < deadline
            time.sleep(0.01)
    finally:
        sched.close()
    last_small = max(i for i, name in enumerate(finished) if name == "small")
    assert last_small < 12, finished  # oldest-first would finish it after 38 of the big one's rows


def test_a_failing_decode_step_ends_the_batch_clearly_and_the_server_goes_on(model, caplog):
    """The shared decode step has no one request to blame: every active request gets the error, named as
    the batch's, and the next request runs."""
    m = GPT2(TINY, init_params(TINY, seed=0))
    forward, calls = m.backend.forward, {"decode": 0}

    def failing(ids, *args, **kw):
        if ids.shape[1] == 1:
            calls["decode"] += 1
            if calls["decode"] == 3:
                raise MemoryError("injected decode failure")
        return forward(ids, *args, **kw)

    m.engine.backend = dataclasses.replace(m.backend, forward=failing)
    sched = Scheduler(m, max_batch=8)
    hold = threading.Event()
    try:
        sched.call(lambda: hold.wait(30))
        inboxes = []
        for prompt, kw, n in GOOD:
            inbox: queue.Queue = queue.Queue()
            sched.submit(Request([m.tokenizer.encode(prompt)] * n, SamplingParams(**kw), inbox.put))
            inboxes.append((inbox, n))
        hold.set()
        for inbox, n in inboxes:
            error = collect(inbox, n)[2]
            assert isinstance(error, RuntimeError) and "decode step failed" in str(error)
            assert "injected decode failure" in str(error)
            # what the client reads had Python's type names twice: "generation failed: RuntimeError: the batch's decode
            # step failed, ...: NpgptError: out of memory running ..."
            told = failure(error).message
            assert told.startswith(
                "generation failed: the batch's decode step failed, ending every request in it: out of memory running "
            ), told
            assert "Error" not in told, told
        # out of memory is said to the user (run fewer rows), so it is logged as that one line, no traceback
        logged = [r for r in caplog.records if r.getMessage().startswith("generation step failed: out of memory")]
        assert logged and not any(r.exc_info for r in logged), [r.getMessage() for r in caplog.records]
        inbox = queue.Queue()
        sched.submit(Request([m.tokenizer.encode("After")], SamplingParams(max_new_tokens=3, temperature=0), inbox.put))
        texts, _, error = collect(inbox, 1)
        assert error is None and texts == [model.generate("After", max_new_tokens=3, temperature=0)]
    finally:
        sched.close()


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--max-rows", "0"),
        ("--max-request-tokens", "-1"),
        ("--max-request-logprobs", "0"),
        ("--max-unread-events", "0"),
        ("--shutdown-timeout", "-2"),
        ("--shutdown-timeout", "nan"),
    ],
)
def test_serve_refuses_bad_limits_before_loading(flag, value):
    from typer.testing import CliRunner

    from npgpt.cli import app
    from npgpt.cli.flags import as_flags
    from npgpt.errors import NpgptError

    r = CliRunner().invoke(app, ["serve", "--model", "/nonexistent/model", flag, value])
    # the library names the setting (max_rows); the CLI says it as the user typed it (--max-rows)
    assert isinstance(r.exception, NpgptError) and as_flags(r.exception).startswith(flag), r.output


@pytest.mark.parametrize(
    "args, env", [(["--api-key", ""], {}), (["--api-key", "  "], {}), ([], {"NPGPT_API_KEY": " "})]
)
def test_serve_refuses_an_empty_api_key(args, env, monkeypatch):
    """An empty key (``--api-key "$KEY"`` with KEY unset) would let in every client that sends
    ``Bearer `` and silence the warning for a server open to the network: refused before loading."""
    from typer.testing import CliRunner

    from npgpt.cli import app
    from npgpt.errors import NpgptError

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    r = CliRunner().invoke(app, ["serve", "--model", "/nonexistent/model", *args])
    assert isinstance(r.exception, NpgptError) and "--api-key" in str(r.exception), r.output


def test_a_request_arriving_while_a_huge_one_holds_the_batch_starts_at_once(model):
    """The huge request is admitted first and would take every row; one is kept for the next request,
    which then finishes (2 tokens) before any of the huge one's rows (40 tokens each)."""
    sched = Scheduler(model, max_batch=4)
    assert sched.max_rows_per_request == 3
    finished: list[str] = []

    def inbox(name: str):
        return lambda ev: finished.append(name) if getattr(ev, "finish_reason", None) else None

    try:
        ids = model.tokenizer.encode("Tokens")
        sched.submit(Request([ids] * 8, SamplingParams(max_new_tokens=40, seed=0), inbox("huge")))
        deadline = time.time() + 60
        while sched.active < 3:  # the huge request is in the batch
            assert time.time() < deadline
            time.sleep(0.005)
        assert sched.active == 3  # and holds all the rows it may
        sched.submit(Request([ids], SamplingParams(max_new_tokens=2, seed=1), inbox("small")))
        while len(finished) < 9:
            assert time.time() < deadline
            time.sleep(0.01)
    finally:
        sched.close()
    assert finished[0] == "small", finished


def test_scoring_many_prompts_takes_turns_with_the_requests_generating(monkeypatch):
    """An echo-scoring request (max_tokens 0, echo, logprobs: lm-evaluation-harness's loglikelihood) scored all
    its prompts as one job on the model's worker, so no request generating got a token until its last prompt was
    scored (for a harness's batch of long windows, as long as all of them took). Each prompt is now a job of its
    own, the batch decoding a step between two of them."""
    config = GPT2Config(n_ctx=1024, n_embd=32, n_head=2, n_layer=2)  # room for a long stream
    m = GPT2(config, init_params(config, seed=0))
    app = create_app({"m": m})
    sched, log = app.state.schedulers["m"], []
    step, logits = sched._step, m.logits  # prefill and decode use the engine; only scoring calls m.logits here
    monkeypatch.setattr(sched, "_step", lambda: (log.append("step"), step())[1])
    monkeypatch.setattr(m, "logits", lambda *a, **k: (log.append("score"), logits(*a, **k))[1])
    scoring = {"prompt": [[1, 2, 3, 4]] * 5, "max_tokens": 0, "echo": True, "logprobs": 1}
    with background_server(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        alone = http.post("/v1/completions", json=scoring).json()["choices"]
        log.clear()
        body = {"prompt": "a", "max_tokens": 1000, "ignore_eos": True, "stream": True}
        with http.stream("POST", "/v1/completions", json=body) as stream:
            lines = stream.iter_lines()  # kept: a dropped generator would close the stream
            next(lines)  # the stream is generating
            r = http.post("/v1/completions", json=scoring)
    assert r.status_code == 200 and r.json()["choices"] == alone
    scored = [i for i, what in enumerate(log) if what == "score"]
    assert len(scored) == 5 and all("step" in log[a:b] for a, b in itertools.pairwise(scored)), log


@pytest.mark.parametrize(
    "path, body", [("/v1/next_tokens", {"prompt": "a b", "k": 3}), ("/v1/internals", {"prompt": "a b"})]
)
def test_next_tokens_and_internals_tokenise_off_the_models_worker(model, monkeypatch, path, body):
    """Their prompts were tokenised inside the job on the model's worker thread, so a 1 MB prompt ("a" x 999,000
    takes tiktoken over a second) held up every request generating for as long. They are tokenised on a thread
    of their own, as completions' and chat's are."""
    threads, encode = [], model.tokenizer.encode
    record = lambda *a, **k: (threads.append(threading.current_thread().name), encode(*a, **k))[1]  # noqa: E731
    monkeypatch.setattr(model.tokenizer, "encode", record)
    with background_server(create_app({"m": model})) as url:
        r = httpx.post(url + path, json=body, timeout=60)
    assert r.status_code == 200 and threads and "npgpt-scheduler" not in threads, (r.text, threads)


def test_a_scoring_answer_is_built_and_encoded_off_the_event_loop(model, monkeypatch):
    """An echo-scoring request's answer (lm-evaluation-harness's loglikelihood with top logprobs: a dict of
    alternatives per prompt token, megabytes of JSON for a batch of long windows) was built, folded and encoded on
    the event loop, so /health and every stream waited seconds for it. Each of those steps runs on a thread."""
    import asyncio

    from npgpt.server import completions, errors

    on_loop = []

    def running_loop() -> bool:
        try:
            asyncio.get_running_loop()
            return True
        except RuntimeError:
            return False

    token_text, dumps = completions.token_text, errors.dumps
    monkeypatch.setattr(completions, "token_text", lambda *a: (on_loop.append(running_loop()), token_text(*a))[1])
    monkeypatch.setattr(errors, "dumps", lambda *a, **k: (on_loop.append(running_loop()), dumps(*a, **k))[1])
    body = {"model": "m", "prompt": [[1, 2, 3], [4, 5, 6, 7]], "max_tokens": 0, "echo": True, "logprobs": 3}
    with background_server(create_app({"m": model})) as url:
        r = httpx.post(url + "/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"][1]["logprobs"]["top_logprobs"]) == 4
    assert on_loop and not any(on_loop), on_loop


@pytest.mark.parametrize(
    "models, says",
    [
        (["a=/nonexistent/x", "a=/nonexistent/y"], "two models are called 'a'"),
        (["x?y=/nonexistent/x"], "'x?y'"),
        (["x?y=/nonexistent/x"], "give the model another name, e.g. gpt2 with --model NAME=PATH"),
        (["../x=/nonexistent/x"], "'../x'"),
        (["a=/nonexistent/x", "b="], "--model NAME=PATH"),
    ],
)
def test_serve_refuses_a_repeated_or_unsendable_model_name_before_loading(models, says):
    """Two models under one name, or a name a client cannot put in a URL (``GET /v1/models/{name}``), are
    refused before any model is loaded (a repeated name was found only once both were loaded)."""
    from typer.testing import CliRunner

    from npgpt.cli import app
    from npgpt.errors import NpgptError

    r = CliRunner().invoke(app, ["serve", "--port", "0", *[a for m in models for a in ("-m", m)]])
    assert isinstance(r.exception, NpgptError) and says in str(r.exception), r.output
    assert "\n" not in str(r.exception)


@pytest.mark.parametrize("name", ["", "a b\n", "x?y", "x#y", "50%", ".", "org/..", "/x", "x/", "a//b", "\tx"])
def test_create_app_refuses_a_model_name_clients_cannot_send(name):
    from npgpt.api import GPT2
    from npgpt.config import GPT2Config
    from npgpt.errors import NpgptError
    from npgpt.params import init_params
    from npgpt.server import create_app

    config = GPT2Config(n_ctx=16, n_embd=8, n_head=2, n_layer=1)
    with pytest.raises(NpgptError, match="model name") as e:
        create_app({name: GPT2(config, init_params(config))})
    # in the words of create_app's caller, whose models are a dict: npgpt serve's flag is the CLI's to name
    assert "--model" not in str(e.value) and "give the model another name" in str(e.value), e.value
