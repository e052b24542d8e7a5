"""Continuous batching: one worker thread owns the model and runs every request's rows as one batch.

Requests come from any thread (the server's event loop) and wait in a queue. Between two decode
steps the worker admits waiting rows: it prefills their prompts on their own, copies the keys and
values into free rows of the shared kv cache, and from then on they decode with everyone else, each
at its own cache slot (``DecodeState.start`` is per row). A row leaves as soon as it finishes or its
client goes away, and the last row moves into its place, so the active rows are always
``0 .. n-1`` and a step computes only those.

Each row samples with its request's :class:`SamplingParams` and its own generator (the k-th row of
a prompt in a seeded request uses ``default_rng([seed, k])``, :func:`npgpt.sampling.row_rng`), as
:func:`npgpt.generate.events` does, so a request gets the same tokens here as from
``GPT2.completions``, whatever else shares the batch, up to floating-point rounding: a batch's BLAS
products may round differently from one row's (prefill logits within ~2e-7, logprobs ~1e-6), which
can change a sampled token only where two candidates tie that closely (a row diverged once in 24
seeded requests, on a near-flat distribution with tight ``min_p``/``top_p``). Greedy rows are not
affected unless their top two logits tie within that rounding. Batch-invariant kernels (vLLM's
opt-in mode) would remove it, at a cost in speed.

Faults stay with the request that caused them. A row whose setting up, sampling or detokenising
raises (or that picks an id outside the vocabulary) ends its request alone, with the error delivered to it;
the other rows go on, and their tokens are the same as without it. A prefill that fails is retried
request by request, so only the request that fails alone fails. Only a failure of the shared
decode step, which no single request can be blamed for, ends every active request.

Admission is fair: free rows go one at a time to the waiting request with the fewest rows in the
batch (the oldest among equals), and no request holds more than ``max_rows_per_request`` (the
batch less an eighth, at least one row): a request that arrives while a huge one runs starts at
the next step, rather than after all of the huge one's rows.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cache import KVCache, copy_rows, grow, grown_capacity, rows
from ..errors import NpgptError, reason, shown
from ..generate import DecodeState, check_request, decode_step, prefill
from .tasks import QueueFull, Request, Row, RowFailed, ShuttingDown, safe_deliver, unique

if TYPE_CHECKING:
    from ..api import GPT2
    from ..engine import Engine
    from ..tokenizer import Tokenizer

log = logging.getLogger("npgpt.server")


def _log_failure(what: str, e: Exception) -> None:
    """A failure the request is told of, logged: an NpgptError (the model's logits are not finite) is an expected
    one with its own message, so one line; any other is a bug, with its traceback."""
    if isinstance(e, NpgptError):
        log.warning("%s: %s", what, e)
    else:
        log.error(what, exc_info=e)


__all__ = ["QueueFull", "Request", "RowFailed", "Scheduler", "ShuttingDown"]


class Scheduler:
    """Runs requests for one model with continuous batching on a worker thread of its own.

    ``model`` is anything with an ``engine`` and a ``tokenizer`` (a :class:`~npgpt.api.GPT2`).

    ``submit``, ``cancel`` and ``call`` are safe from any thread. ``on_step(kind, rows)`` is called
    on the worker after each "prefill" or "decode" step with its number of rows (one new token
    each), for metrics.
    """

    def __init__(
        self, model: GPT2, max_batch: int = 16, max_queue: int = 64, on_step: Callable[[str, int], None] | None = None
    ) -> None:
        if max_batch < 1 or max_queue < 0:
            raise ValueError(
                f"max_batch must be >= 1 and max_queue >= 0, got {shown(max_batch)} and {shown(max_queue)}"
            )
        self.model = model
        self.engine: Engine = model.engine
        self.tokenizer: Tokenizer = model.tokenizer
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.on_step = on_step
        self._cond = threading.Condition()
        self._waiting: deque[Request] = deque()
        self._jobs: deque[tuple[Callable[[], Any], Future]] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False
        # The worker's batch; only the worker touches these.
        self._rows: list[Row] = []
        self._cache: KVCache | None = None  # [max_batch, H, capacity, D] per layer, made on demand
        self._valid = np.zeros((max_batch, 0), dtype=bool)  # [max_batch, capacity]
        self._start = np.zeros(max_batch, dtype=np.int64)
        # A compiling backend wants fixed shapes, so it always runs all max_batch rows; the others
        # run a view of the n active rows and write the cache through it.
        self._compact = not self.engine.backend.compiles
        # One request never holds every row: the last max_batch // 8 rows (at least one) are kept for
        # whoever comes next, so a request that arrives while a huge one runs starts at the next step
        # instead of after the huge one's rows (head-of-line blocking). Costs a lone huge request 1/8.
        self.max_rows_per_request = max(1, max_batch - max(1, max_batch // 8))

    # -- any thread -------------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> int:
        return len(self._rows)

    def submit(self, request: Request) -> Request:
        """Queue a request (checked first: raises NpgptError if it cannot run, QueueFull if full)."""
        check_request(self.engine, self.tokenizer, request.rows, request.params)
        with self._cond:
            if self._closed:
                raise ShuttingDown("the server is shutting down; retry on another instance or later")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting; retry shortly")
            self._waiting.append(request)
            self._start_worker()
            self._cond.notify()
        return request

    def cancel(self, request: Request) -> None:
        """Stop generating for ``request``: its rows leave the batch at the next step boundary."""
        request.cancelled = True
        with self._cond:
            self._cond.notify()

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn()`` on the worker between two steps (the model is not thread-safe); a Future."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise ShuttingDown("the server is shutting down; retry on another instance or later")
            self._jobs.append((fn, future))
            self._start_worker()
            self._cond.notify()
        return future

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker (waiting up to ``timeout`` s for its step to end); requests still running or
        waiting get :class:`ShuttingDown` delivered, and so do jobs not yet run. Safe to call twice."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._cond:
            left = unique([r.request for r in self._rows] + list(self._waiting))
            jobs = list(self._jobs)
            self._waiting.clear()
            self._jobs.clear()
        for request in left:
            self._fail(request, ShuttingDown("the server shut down before this request finished"))
        for _, future in jobs:  # an exception, not cancel(): a cancelled await would cut the response
            if future.set_running_or_notify_cancel():
                future.set_exception(ShuttingDown("the server shut down before this request ran"))
        self._rows, self._cache = [], None

    def _start_worker(self) -> None:  # holding the lock
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="npgpt-scheduler", daemon=True)
            self._thread.start()

    # -- the worker thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._closed or self._waiting or self._jobs or self._rows):
                    self._cond.wait()
                if self._closed:
                    return
                jobs = list(self._jobs)
                self._jobs.clear()
                new = self._take_rows()
            for fn, future in jobs:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except Exception as e:  # handed to whoever waits on the future
                        future.set_exception(e)
            try:
                self._leave([j for j, row in enumerate(self._rows) if row.request.cancelled])
                if new:
                    self._admit(new)
                if self._rows:
                    self._step()
            except Exception as e:  # shared state failed (the decode step, the cache): no one request to blame
                _log_failure("generation step failed", e)
                error = RuntimeError(f"the batch's decode step failed, ending every request in it: {reason(e)}")
                for request in unique([r.request for r in self._rows] + [r for r, _ in new]):
                    self._fail(request, error)
                self._rows, self._cache = [], None

    def _take_rows(self) -> list[tuple[Request, int]]:
        """Waiting rows for the free rows of the batch (holding the lock): each free row goes to the
        waiting request with the fewest rows in the batch, the oldest among equals."""
        self._waiting = deque(r for r in self._waiting if not r.cancelled)
        free = self.max_batch - len(self._rows)
        held = Counter(id(row.request) for row in self._rows)
        new = []
        while free and self._waiting:
            open_ = [r for r in self._waiting if held[id(r)] < self.max_rows_per_request]
            if not open_:  # the rows left are kept for the next request, which then starts at once
                break
            request = min(open_, key=lambda r: held[id(r)])  # min keeps the first (oldest) of equals
            new.append((request, request.admitted))
            request.admitted += 1
            held[id(request)] += 1
            free -= 1
            if request.admitted == len(request.rows):
                self._waiting.remove(request)
        return new

    def _admit(self, new: list[tuple[Request, int]]) -> None:
        """Prefill the new rows' prompts (each distinct prompt once) and place them in the batch.

        A failed prefill of several requests is retried one request at a time, so that only a
        request that fails on its own is failed (its error delivered to it)."""
        try:
            distinct: dict[tuple[int, ...], int] = {}
            for request, i in new:
                distinct.setdefault(tuple(request.rows[i]), len(distinct))
            prompts = [list(p) for p in distinct]
            T = max(len(p) for p in prompts)
            logits, pre = prefill(self.engine, prompts, capacity=T)  # left-padded: prompt d ends before pre.start[d]
            n_ctx = self.engine.config.n_ctx
            cache = self._reserve(max(len(r.rows[i]) + r.params.room(len(r.rows[i]), n_ctx) for r, i in new))
        except Exception as e:
            requests = unique([r for r, _ in new])
            if len(requests) > 1:
                for request in requests:
                    self._admit([(r, i) for r, i in new if r is request])
            else:
                _log_failure("prefill failed", e)
                self._fail(requests[0], RuntimeError(f"prefill failed: {reason(e)}"))
            return
        for request, i in new:
            if request.failed:  # an earlier row of it failed to be set up
                continue
            try:  # the row's own state (penalty counts, stop tracker, generator): its failure is its request's
                row = Row(request, i, self.tokenizer, self.engine.config.n_vocab, self.engine.config.n_ctx)
            except Exception as e:
                _log_failure(f"setting up row {i} of a request failed", e)
                self._fail(request, RowFailed(i, e))
                continue
            d, L = distinct[tuple(request.rows[i])], len(request.rows[i])
            j = len(self._rows)
            end = int(pre.start[d])
            self._cache = cache = copy_rows(cache, np.s_[j, :, :L], pre.cache, np.s_[d, :, end - L : end])
            self._valid[j] = False
            self._valid[j, :L] = True
            self._start[j] = L
            self._rows.append(row)
            self._pick(row, logits[d])
        if self.on_step:
            self.on_step("prefill", len(new))
        self._leave([j for j, row in enumerate(self._rows) if row.done or row.request.failed])

    def _step(self) -> None:
        """One decode step for every active row: feed each its last token, pick the next."""
        n = len(self._rows)
        tokens = np.array([row.token for row in self._rows], dtype=np.int64)
        assert self._cache is not None
        if self._compact:
            view = DecodeState(rows(self._cache, n), self._valid[:n], self._start[:n].copy())
            logits = decode_step(self.engine, view, tokens)  # writes the cache in place, through the view
            self._start[:n] = view.start
        else:
            padded = np.zeros(self.max_batch, dtype=np.int64)
            padded[:n] = tokens
            state = DecodeState(self._cache, self._valid, self._start.copy())
            logits = decode_step(self.engine, state, padded)[:n]
            self._cache = state.cache
            self._start[:n] = state.start[:n]  # idle rows stay at slot 0
        for j, row in enumerate(self._rows):
            self._pick(row, logits[j])
        if self.on_step:
            self.on_step("decode", n)
        self._leave([j for j, row in enumerate(self._rows) if row.done or row.request.failed])

    def _pick(self, row: Row, logits: np.ndarray) -> None:
        """Pick a row's next token and deliver its event; a failure here is the row's own and ends only its request.

        The chosen id is checked too: an id outside the vocabulary would fail the next shared step."""
        request = row.request
        if request.failed:
            return
        try:
            event = row.pick(logits)
            if not 0 <= row.token < self.engine.config.n_vocab:
                raise ValueError(
                    f"the sampler chose token id {row.token}, outside the vocabulary [0, {self.engine.config.n_vocab})"
                )
        except Exception as e:
            _log_failure(f"row {row.row} of a request failed", e)
            self._fail(request, RowFailed(row.row, e))
            return
        safe_deliver(request, event)

    def _fail(self, request: Request, error: BaseException) -> None:
        """End ``request`` with ``error`` (once): its rows leave at the next boundary, its waiting rows never start."""
        if request.failed:
            return
        request.failed = request.cancelled = True
        safe_deliver(request, error)

    def _leave(self, finished: list[int]) -> None:
        """Remove rows; the last active row moves into each hole, keeping rows ``0 .. n-1`` packed."""
        for j in sorted(finished, reverse=True):  # larger first: the row moved in is never a finished one
            last = len(self._rows) - 1
            if j != last:
                assert self._cache is not None  # rows are active, so their cache exists
                s = int(self._start[last])
                self._cache = copy_rows(self._cache, np.s_[j, :, :s], self._cache, np.s_[last, :, :s])
                self._valid[j] = self._valid[last]
                self._start[j] = self._start[last]
                self._rows[j] = self._rows[last]
            self._rows.pop()
            self._valid[last] = False
            self._start[last] = 0
        if not self._rows:
            self._cache = None  # free the memory while idle; the next request makes a fresh one

    def _reserve(self, need: int) -> KVCache:
        """Make the cache hold at least ``need`` slots per row (grown by doubling, up to n_ctx); the cache."""
        capacity = self._valid.shape[1] if self._cache is not None else 0
        if self._cache is not None and need <= capacity:
            return self._cache
        size = grown_capacity(capacity, need, self.engine.config.n_ctx)
        valid = np.zeros((self.max_batch, size), dtype=bool)
        if self._cache is None:
            self._cache = self.engine.new_cache(self.max_batch, size)
        else:
            self._cache = grow(self._cache, self.engine.config, size, n_rows=len(self._rows))
            valid[:, :capacity] = self._valid
        self._valid = valid
        return self._cache
