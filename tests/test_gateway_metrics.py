"""The gateway's per-endpoint figures: what the hot path leaves (`pending`) folds into the same counts,
histogram and percentiles as counting each request on its own would. Pure logic, no I/O."""

from __future__ import annotations

import random
from bisect import bisect_left

from mwtui.engine.gateway.metrics import LATENCY_BOUNDS_MS, SAMPLES_PER_TICK, EndpointStats


def reference_buckets(latencies: list[float]) -> list[int]:
    """One bisect per request: a latency equal to a bound counts in that bound's bucket."""
    out = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    for ms in latencies:
        out[bisect_left(LATENCY_BOUNDS_MS, ms)] += 1
    return out


def test_settle_folds_counts_sum_and_buckets_like_one_bisect_per_request() -> None:
    rng = random.Random(7)
    st = EndpointStats()
    seen: list[float] = []
    for _ in range(5):  # several folds, as several ticks (or /metrics reads) would make
        batch = [rng.choice([rng.uniform(0, 40000), *LATENCY_BOUNDS_MS, 0.0]) for _ in range(300)]
        for ms in batch:
            st.observe(200, ms)
        seen += batch
        st.settle()
        assert st.pending == []
    st.settle()  # nothing new: nothing changes
    assert st.requests_total == len(seen)
    assert st.buckets == reference_buckets(seen)
    assert abs(st.latency_sum_ms - sum(seen)) < 1e-6 * sum(seen)


def test_errors_count_at_once_and_live_figures_settle_first() -> None:
    st = EndpointStats()
    st.observe(200, 1.0)
    st.observe(502, 3.0)
    assert st.errors_total == 1  # 5xx are counted on the hot path itself
    live = st.live()  # what /api/endpoints shows: no request is left out until the next tick
    assert live["requests_total"] == 2 and live["errors_total"] == 1


def test_percentiles_keep_the_shape_of_a_busy_tick() -> None:
    st = EndpointStats()
    n = SAMPLES_PER_TICK * 8  # more than a tick keeps: an even spread of them stays
    for i in range(n):
        st.observe(200, float(i % 1000))  # uniform over 0..999 ms
    st.tick(1.0)
    assert st.requests_total == n
    assert st.p50_ms is not None and st.p95_ms is not None
    assert 450 <= st.p50_ms <= 550 and 900 <= st.p95_ms <= 999


def test_a_read_mid_tick_does_not_skew_the_percentiles() -> None:
    """/metrics or /api/endpoints may settle a busy tick halfway: each request still weighs the same."""
    st = EndpointStats()
    for _ in range(2100):
        st.observe(200, 1.0)
    st.live()
    for _ in range(2900):
        st.observe(200, 100.0)
    st.tick(1.0)
    assert st.p50_ms == 100.0 and st.requests_total == 5000
