"""Counters and latency per endpoint and per upstream.

The hot path only appends a request's latency to `EndpointStats.pending` (and counts a 5xx); counts,
histogram buckets, rates and percentiles are folded from those once per tick (`settle`), where sorting
one list does in bulk what a bisect per request used to do.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from itertools import chain
from typing import Any, Final

# Histogram bounds in ms for /metrics (Prometheus wants cumulative buckets; we keep plain counts).
LATENCY_BOUNDS_MS: Final[tuple[float, ...]] = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
SAMPLES_PER_TICK: Final = 2048  # latency samples kept per tick for the percentiles; beyond that, an even spread
WINDOW_TICKS: Final = 10  # p50/p95 and rps look at the last WINDOW_TICKS ticks (5 s at 0.5 s)


class UpstreamStats:
    __slots__ = ("inflight", "requests_total")

    def __init__(self) -> None:
        self.inflight = 0
        self.requests_total = 0


class EndpointStats:
    __slots__ = (
        "inflight", "queued", "requests_total", "errors_total", "buckets", "latency_sum_ms", "pending",
        "samples", "_window", "_totals", "rps", "p50_ms", "p95_ms",
    )

    def __init__(self) -> None:
        self.inflight = 0  # from request head to end of response, waiting for a replica included
        self.queued = 0  # of those, the ones waiting for a replica (none ready, or all at max_inputs)
        self.requests_total = 0  # folded in by settle(): read it after calling that
        self.errors_total = 0  # counted on the hot path (rare)
        self.buckets = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        self.latency_sum_ms = 0.0
        self.pending: list[float] = []  # ms of requests finished since the last settle(): the hot path appends
        self.samples: list[float] = []  # this tick's latencies, for the percentiles (settled ones)
        self._window: deque[list[float]] = deque(maxlen=WINDOW_TICKS)
        self._totals: deque[tuple[float, int]] = deque(maxlen=WINDOW_TICKS + 1)
        self.rps = 0.0
        self.p50_ms: float | None = None
        self.p95_ms: float | None = None

    def observe(self, status: int, ms: float) -> None:
        """One finished request: all the metrics work on the hot path."""
        if status >= 500:
            self.errors_total += 1
        self.pending.append(ms)

    def settle(self) -> None:
        """Fold the requests finished since the last call into the totals and the histogram."""
        pending = self.pending
        n = len(pending)
        if not n:
            return
        self.pending = []
        pending.sort()
        self.requests_total += n
        self.latency_sum_ms += sum(pending)
        buckets = self.buckets
        below = 0
        for i, bound in enumerate(LATENCY_BOUNDS_MS):
            upto = bisect_right(pending, bound, below)  # a latency equal to a bound counts in its bucket
            buckets[i] += upto - below
            below = upto
        buckets[-1] += n - below
        self.samples += pending  # all of them until the tick, which keeps an even spread

    def tick(self, now: float) -> None:
        """Roll the window: rps over the last few seconds, p50/p95 over the recent samples."""
        self.settle()
        totals = self._totals
        totals.append((now, self.requests_total))
        t0, n0 = totals[0]
        self.rps = (self.requests_total - n0) / (now - t0) if now > t0 else 0.0
        if self.samples or any(self._window):
            # Each tick's samples are sorted once as they enter the window; merging the sorted runs
            # then costs Timsort little (~5x less than sorting the whole window afresh at 20k req/s).
            samples = self.samples
            samples.sort()
            if len(samples) > SAMPLES_PER_TICK:  # an even spread across the sorted tick: its shape survives
                samples = samples[:: -(-len(samples) // SAMPLES_PER_TICK)]
            self._window.append(samples)
            self.samples = []
            merged = sorted(chain.from_iterable(self._window))
            if merged:
                self.p50_ms = merged[(len(merged) - 1) // 2]
                self.p95_ms = merged[int((len(merged) - 1) * 0.95)]
            else:
                self.p50_ms = self.p95_ms = None

    def live(self) -> dict[str, Any]:
        self.settle()
        return {
            "inflight": self.inflight,
            "queued": self.queued,
            "requests_total": self.requests_total,
            "errors_total": self.errors_total,
            "rps": round(self.rps, 2),
            "p50_ms": None if self.p50_ms is None else round(self.p50_ms, 2),
            "p95_ms": None if self.p95_ms is None else round(self.p95_ms, 2),
        }


class Metrics:
    """Stats that outlive routing tables: keyed by endpoint name and (endpoint, upstream id)."""

    def __init__(self) -> None:
        self.endpoints: dict[str, EndpointStats] = {}
        self.upstreams: dict[tuple[str, str], UpstreamStats] = {}

    def endpoint(self, name: str) -> EndpointStats:
        stats = self.endpoints.get(name)
        if stats is None:
            stats = self.endpoints[name] = EndpointStats()
        return stats

    def upstream(self, endpoint: str, upstream_id: str) -> UpstreamStats:
        key = (endpoint, upstream_id)
        stats = self.upstreams.get(key)
        if stats is None:
            stats = self.upstreams[key] = UpstreamStats()
        return stats

    def forget_upstream(self, endpoint: str, upstream_id: str) -> None:
        # Only once nothing is in flight there: a draining replica still finishes its requests.
        stats = self.upstreams.get((endpoint, upstream_id))
        if stats is not None and stats.inflight == 0:
            del self.upstreams[(endpoint, upstream_id)]
