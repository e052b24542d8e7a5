"""Counters and histograms for ``GET /metrics``, written in Prometheus' text format by hand.

Updated from the event loop (requests) and the scheduler threads (steps), so behind one lock.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Mapping

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    """Cumulative-bucket histogram, as Prometheus exposes one."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out, total = [], 0
        for bound, n in zip([*map(_num, self.buckets), "+Inf"], self.counts, strict=True):
            total += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {total}')
        braces = f"{{{labels}}}" if labels else ""
        return out + [f"{name}_sum{braces} {_num(self.sum)}", f"{name}_count{braces} {self.count}"]


class Metrics:
    """What the server counts: requests, latency, tokens and batch sizes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()  # (endpoint, status) -> requests
        self.latency: dict[str, Histogram] = {}  # endpoint -> seconds
        self.prompt_tokens: Counter[str] = Counter()  # model -> tokens
        self.generated_tokens: Counter[str] = Counter()
        self.batch: dict[tuple[str, str], Histogram] = {}  # (model, "prefill" or "decode") -> rows per step

    def request_done(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[endpoint, status] += 1
            self.latency.setdefault(endpoint, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def step(self, model: str, kind: str, rows: int) -> None:
        with self._lock:
            self.generated_tokens[model] += rows
            self.batch.setdefault((model, kind), Histogram(BATCH_BUCKETS)).observe(rows)

    def prompt(self, model: str, tokens: int) -> None:
        with self._lock:
            self.prompt_tokens[model] += tokens

    def render(self, gauges: Mapping[str, Mapping[str, float]]) -> str:
        """The exposition text; ``gauges`` maps a metric name to {model: value}."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            out.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}"])

        with self._lock:
            family("npgpt_requests_total", "counter", "HTTP requests by endpoint and status code.")
            for (endpoint, status), n in sorted(self.requests.items()):
                out.append(f'npgpt_requests_total{{endpoint="{_label(endpoint)}",status="{status}"}} {n}')
            family("npgpt_request_duration_seconds", "histogram", "Time from request to the end of the response.")
            for endpoint, h in sorted(self.latency.items()):
                out += h.lines("npgpt_request_duration_seconds", f'endpoint="{_label(endpoint)}"')
            family("npgpt_prompt_tokens_total", "counter", "Prompt tokens of accepted generation requests.")
            for model, n in sorted(self.prompt_tokens.items()):
                out.append(f'npgpt_prompt_tokens_total{{model="{_label(model)}"}} {n}')
            family("npgpt_generated_tokens_total", "counter", "Tokens generated, all rows together.")
            for model, n in sorted(self.generated_tokens.items()):
                out.append(f'npgpt_generated_tokens_total{{model="{_label(model)}"}} {n}')
            family("npgpt_batch_size", "histogram", "Rows per model step (kind: prefill of new rows, or decode).")
            for (model, kind), h in sorted(self.batch.items()):
                out += h.lines("npgpt_batch_size", f'model="{_label(model)}",kind="{kind}"')
        for name, values in gauges.items():
            family(name, "gauge", name.removeprefix("npgpt_").replace("_", " ").capitalize() + ".")
            out += [f'{name}{{model="{_label(model)}"}} {_num(v)}' for model, v in sorted(values.items())]
        return "\n".join(out) + "\n"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
