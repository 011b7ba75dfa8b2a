"""Prometheus text metrics: requests, refusals, queue depth, batch sizes, latency, decisions.

Written by hand (the text format is a few lines) so the service needs no metrics client.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class _Histogram:
    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out = [
            f'{name}_bucket{{{labels}{sep}le="{_num(b)}"}} {c}' for b, c in zip(self.buckets, self.counts, strict=True)
        ]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        brace = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{brace} {_num(self.sum)}", f"{name}_count{brace} {self.total}"]
        return out


class Metrics:
    """Thread-safe counters and histograms; :meth:`render` gives the Prometheus text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, _Histogram] = {}
        self.batches: dict[str, _Histogram] = {}
        self.batch_seconds: dict[str, _Histogram] = {}
        self.decisions: dict[str, int] = defaultdict(int)
        self.gauges: dict[str, Callable[[], float]] = {}

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1
            self.latency.setdefault(endpoint, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, queue: str, size: int, seconds: float) -> None:
        with self._lock:
            self.batches.setdefault(queue, _Histogram(BATCH_BUCKETS)).observe(size)
            self.batch_seconds.setdefault(queue, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_decision(self, decision: str) -> None:
        with self._lock:
            self.decisions[decision] += 1

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """Register a gauge read at scrape time, e.g. ``queue_depth{queue="images"}``."""
        self.gauges[name] = read

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP safegen_requests_total HTTP requests answered, by endpoint and status code.",
                "# TYPE safegen_requests_total counter",
            ]
            for (endpoint, status), n in sorted(self.requests.items()):
                lines.append(f'safegen_requests_total{{endpoint="{endpoint}",code="{status}"}} {n}')
            lines += [
                "# HELP safegen_request_seconds Time from request to answer, by endpoint.",
                "# TYPE safegen_request_seconds histogram",
            ]
            for endpoint, hist in sorted(self.latency.items()):
                lines += hist.lines("safegen_request_seconds", f'endpoint="{endpoint}"')
            lines += [
                "# HELP safegen_batch_size Items per model call, by queue.",
                "# TYPE safegen_batch_size histogram",
            ]
            for queue, hist in sorted(self.batches.items()):
                lines += hist.lines("safegen_batch_size", f'queue="{queue}"')
            lines += [
                "# HELP safegen_batch_seconds Duration of one model call, by queue.",
                "# TYPE safegen_batch_seconds histogram",
            ]
            for queue, hist in sorted(self.batch_seconds.items()):
                lines += hist.lines("safegen_batch_seconds", f'queue="{queue}"')
            lines += [
                "# HELP safegen_images_total Images answered, by output-policy decision.",
                "# TYPE safegen_images_total counter",
            ]
            for decision, n in sorted(self.decisions.items()):
                lines.append(f'safegen_images_total{{decision="{decision}"}} {n}')
            gauges = dict(self.gauges)
        by_family: dict[str, list[str]] = defaultdict(list)
        for name, read in sorted(gauges.items()):
            by_family[name.split("{")[0]].append(f"{name} {_num(float(read()))}")
        for family, samples in by_family.items():
            lines += [f"# TYPE {family} gauge", *samples]
        return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
