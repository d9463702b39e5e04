"""The autoscaling policy on simulated time: no clock, no I/O, every case in microseconds."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from itertools import pairwise

import pytest
from mwtui.engine.autoscaler import Autoscaler, Decision, ScalingConfig
from mwtui.engine.manifest import EndpointSpec

Load = float | Callable[[float], float]


class Sim:
    """A pool fed by the gateway every `step` seconds; the supervisor reaches `desired` at once."""

    def __init__(self, step: float = 0.5, current: int = 0, **knobs: object) -> None:
        self.step = step
        self.t = 0.0
        self.current = current
        self.requests = 0
        self.scaler = Autoscaler(ScalingConfig(**knobs), 0.0)  # type: ignore[arg-type]
        self.log: list[tuple[float, Decision]] = []

    def run(self, until: float, inflight: Load, arrivals: int | None = None) -> Decision:
        """Up to `until`; each sample with something in flight counts one new request unless told."""
        assert until > self.t
        while self.t < until - 1e-9:
            self.t += self.step
            x = inflight(self.t) if callable(inflight) else inflight
            self.requests += arrivals if arrivals is not None else int(x > 0)
            self.scaler.observe(self.t, x, self.requests)
            d = self.scaler.decide(self.t, self.current)
            self.log.append((self.t, d))
            self.current = d.desired
        return self.log[-1][1]

    def at(self, t: float) -> Decision:
        return next(d for when, d in self.log if when == t)

    def first(self, pred: Callable[[Decision], bool], after: float = 0.0) -> float:
        return next(when for when, d in self.log if when > after and pred(d))

    def between(self, a: float, b: float) -> list[Decision]:
        return [d for when, d in self.log if a <= when <= b]


# ----- scaling out


def test_step_below_panic_threshold_scales_out_in_seconds_without_panic() -> None:
    sim = Sim(current=4)  # already serving 4: no wake-up burst to panic about
    sim.run(120, 4)
    assert sim.current == 4
    sim.run(180, 6)
    # 6 / 4 is under the 2x panic threshold: the queue guard, not panic, adds the replicas, and
    # within seconds rather than the half stable window the 60 s average alone would take.
    assert sim.first(lambda d: d.desired == 6, after=120) <= 124
    assert not any(d.panic for _, d in sim.log)


def test_burst_panics_and_scales_out_within_seconds() -> None:
    sim = Sim(min_containers=1)
    sim.run(60, 1)
    assert (sim.current, sim.log[-1][1].panic) == (1, False)
    sim.run(70, 8)
    assert sim.first(lambda d: d.panic) <= 61
    assert sim.first(lambda d: d.desired >= 2, after=60) <= 61
    assert sim.first(lambda d: d.desired == 8, after=60) <= 67
    sim.run(400, 1)
    # Never down while panicking; the burst's replicas outlast it by the stable window at least.
    panicking = [d.desired for d in sim.between(60, 400) if d.panic]
    assert panicking == sorted(panicking)
    assert all(d.desired == 8 for d in sim.between(67, 130))
    assert sim.current == 1


def test_slow_ramp_tracks_the_load_without_panic_or_overshoot() -> None:
    def load(t: float) -> float:
        return 2 + min(int(t // 10), 9)  # one more in flight every 10 s, 2 up to 11

    sim = Sim(current=2)
    sim.run(120, load)
    desired = [d.desired for _, d in sim.log]
    assert not any(d.panic for _, d in sim.log)
    assert desired == sorted(desired)  # never down while the load only rises
    assert all(d.desired <= load(t) for t, d in sim.log)  # no overshoot
    for step in range(10, 100, 10):
        assert sim.at(step + 4.0).desired == load(step + 4.0), step  # caught up within 4 s


def test_panic_lasts_one_stable_window_after_its_condition_then_scale_down_waits_the_window() -> None:
    scaler = Autoscaler(ScalingConfig(), 0.0)
    scaler.observe(0.0, 8, 1)
    first = scaler.decide(0.0, 1)
    assert (first.desired, first.panic) == (8, True)
    log: dict[float, Decision] = {}
    t, n = 0.0, 1
    while t < 130:
        t += 0.5
        n += 1
        scaler.observe(t, 1, n)
        log[t] = scaler.decide(t, 8)
    # The condition held last at t=0 (8 >= 2 x 1); with 8 replicas it no longer does.
    assert log[60.0].panic and not log[60.5].panic
    # The last 8 was wanted at t=60, so the surplus goes exactly one scaledown_window later.
    assert log[119.5].desired == 8
    assert log[120.0] == Decision(1, "8 -> 1: 1.0 in flight, target 1, 1 sufficed for 60 s", False)


# ----- scaling in and to zero


def test_idle_to_zero_after_the_window_and_not_a_second_before() -> None:
    sim = Sim()
    sim.run(10, 2)  # the last sample with requests in flight is at t=10.0
    sim.run(80, 0)
    assert sim.at(69.0).desired == 2 and sim.at(69.5).desired == 2
    assert sim.at(70.0) == Decision(0, "2 -> 0: scale to zero after 60 s idle", False)
    assert all(d.desired == 0 for d in sim.between(70, 80))


def test_short_scaledown_window_reaches_zero_that_much_after_the_last_request() -> None:
    sim = Sim(max_containers=4, scaledown_window=2)
    sim.run(10, 8)
    assert sim.current == 4
    sim.run(20, 0)
    assert sim.at(11.5).desired == 4 and sim.at(12.0).desired == 0


def test_requests_with_nothing_in_flight_at_sample_time_keep_one_replica() -> None:
    # Fast handlers: every sample sees 0 in flight but the counter moves.
    sim = Sim()
    sim.run(1, 1)
    sim.run(300, 0, arrivals=3)
    assert all(d.desired == 1 for d in sim.between(1, 300))


def test_scale_down_waits_scaledown_window_after_the_last_need() -> None:
    sim = Sim(scaledown_window=30)
    sim.run(100, 6)
    sim.run(300, 2)
    drops = [(t, d) for t, d in sim.log if t > 100 and d.reason]
    assert drops, "never scaled down"
    t0, d0 = drops[0]
    assert t0 >= 130  # 6 was still wanted at t=100
    assert re.fullmatch(r"6 -> \d: \d+\.\d in flight, target 1, \d sufficed for 30 s", d0.reason), d0.reason
    assert sim.current == 2


# ----- knobs


def test_min_containers_is_a_floor_even_when_idle() -> None:
    sim = Sim(min_containers=2)
    assert sim.run(0.5, 0) == Decision(2, "0 -> 2: floor min_containers=2", False)
    sim.run(30, 5)
    assert sim.current == 5
    sim.run(200, 0)
    assert sim.current == 2
    assert any(d.reason == "5 -> 2: after 60 s idle, floor min_containers=2" for _, d in sim.log)
    assert min(d.desired for _, d in sim.log) == 2


def test_max_containers_caps_and_says_so() -> None:
    sim = Sim(max_containers=4)
    sim.run(30, 20)
    assert max(d.desired for _, d in sim.log) == 4
    assert sim.log[0][1].reason.endswith(", cap max_containers=4")


def test_a_cap_mwtui_filled_in_says_where_it_comes_from() -> None:
    sim = Sim(max_containers=2, cap_from="--max-replicas")  # what the engine sets without max_containers
    sim.run(30, 20)
    assert max(d.desired for _, d in sim.log) == 2
    assert sim.log[0][1].reason.endswith(", cap --max-replicas=2")


def test_buffer_containers_only_while_active() -> None:
    sim = Sim(buffer_containers=1)
    sim.run(20, 0)
    assert sim.current == 0  # no buffer for a pool nobody uses
    sim.run(40, 3)
    assert sim.current == 4
    assert "+1 buffer" in next(d.reason for _, d in sim.log if d.reason)
    sim.run(120, 0)
    assert sim.current == 0

    floor = Sim(min_containers=1, buffer_containers=2)
    floor.run(20, 0)
    assert floor.current == 1
    floor.run(40, 1)
    assert floor.current == 3
    floor.run(120, 0)
    assert floor.current == 1


def test_target_inputs_not_max_inputs_sets_the_count() -> None:
    sim = Sim(max_inputs=8, target_inputs=2)
    sim.run(30, 8)
    assert sim.current == 4
    default = Sim(max_inputs=8)  # target defaults to max_inputs
    default.run(30, 8)
    assert default.current == 1


def test_from_spec_takes_the_pool_knobs() -> None:
    spec = EndpointSpec(
        "f", "f", "fastapi", "f", min_containers=1, max_containers=5, buffer_containers=2,
        scaledown_window=7, max_inputs=8, target_inputs=2,
    )
    cfg = ScalingConfig.from_spec(spec)
    assert (cfg.min_containers, cfg.max_containers, cfg.buffer_containers) == (1, 5, 2)
    assert (cfg.scaledown_window, cfg.max_inputs, cfg.target) == (7.0, 8, 2)
    assert (cfg.stable_window, cfg.panic_window, cfg.panic_threshold) == (60.0, 6.0, 2.0)
    # Modal accepts target_inputs=0; it must not become a divisor.
    zero = EndpointSpec("f", "f", "fastapi", "f", max_inputs=4, target_inputs=0)
    assert ScalingConfig.from_spec(zero).target == 4


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match=r"`min_containers` \(3\) cannot be greater than `max_containers` \(2\)"):
        ScalingConfig(min_containers=3, max_containers=2)
    with pytest.raises(ValueError):
        ScalingConfig(max_inputs=0)


def test_reconfigure_keeps_the_history() -> None:
    sim = Sim(current=4)
    sim.run(30, 4)
    sim.scaler.reconfigure(ScalingConfig(max_containers=2))
    d = sim.run(30.5, 4)
    assert d == Decision(2, "4 -> 2: 4.0 in flight, target 1, cap max_containers=2", False)

    busy = Sim(current=8)
    busy.run(30, 8)
    busy.run(35, 1)
    busy.scaler.reconfigure(ScalingConfig(scaledown_window=2))
    # Without the scale-down delay the 60 s average decides, and it still remembers the 8.
    assert busy.run(40, 1).desired == 7


# ----- waking


def test_first_request_wakes_the_pool_on_the_same_tick() -> None:
    scaler = Autoscaler(ScalingConfig(), 0.0)
    assert scaler.decide(5.0, 0) == Decision(0, "", False)
    scaler.observe(100.0, 0, 0)
    scaler.observe(100.2, 1, 1)
    assert scaler.decide(100.2, 0) == Decision(1, "0 -> 1: wake on request, 1.0 in flight, target 1", False)


def test_wake_after_scale_to_zero_starts_fresh() -> None:
    sim = Sim()
    sim.run(30, 8)
    sim.run(90, 0)
    assert sim.current == 0  # just idle: the last burst is still inside every window
    # The old load is forgotten: one request wakes one replica, not what the burst wanted.
    assert sim.run(90.5, 1).desired == 1
    # And a burst at wake-up is not diluted by the idle seconds before it.
    burst = Sim()
    burst.run(100, 0)
    d = burst.run(100.5, 8)
    assert (d.desired, d.panic) == (8, True)


# ----- stability


def test_no_flapping_on_noise_around_a_boundary() -> None:
    rng = random.Random(7)
    sim = Sim()
    sim.run(600, lambda t: 4 + rng.uniform(-0.6, 0.6))
    after = [d.desired for d in sim.between(5, 600)]
    changes = sum(1 for a, b in pairwise(after) if a != b)
    assert changes <= 1 and after == sorted(after)

    square = Sim()  # 10 s at 3, 10 s at 5: the need for 5 recurs well inside the 60 s window
    square.run(600, lambda t: 5 if int(t // 10) % 2 else 3)
    assert {d.desired for d in square.between(15, 600)} == {5}


def test_sparse_samples_hold_the_level() -> None:
    # A sample every 3 s: the seconds between repeat the last level instead of counting as zero.
    sim = Sim(step=3, current=4)
    sim.run(300, 4)
    assert {d.desired for _, d in sim.log} == {4}


def test_a_whole_average_is_not_rounded_up_by_float_error() -> None:
    scaler = Autoscaler(ScalingConfig(), 0.0)
    for t, x in ((0.1, 0.1), (0.3, 2.7), (0.6, 0.2)):  # mean 1.0000000000000002 in floats
        scaler.observe(t, x, 1)
    assert scaler.decide(0.6, 1) == Decision(1, "", False)


def test_counter_restart_counts_as_activity() -> None:
    scaler = Autoscaler(ScalingConfig(), 0.0)
    scaler.observe(0.0, 1, 500)
    scaler.decide(0.0, 0)
    scaler.observe(30.0, 0, 3)  # gateway restarted; three requests since, already done
    assert scaler.decide(89.5, 1).desired == 1
    assert scaler.decide(90.0, 1).desired == 0


def test_deterministic() -> None:
    def trace() -> list[tuple[float, Decision]]:
        rng = random.Random(3)
        sim = Sim(max_containers=6, buffer_containers=1)
        sim.run(300, lambda t: rng.choice([0, 0, 1, 3, 9]) if t < 200 else 0)
        return sim.log

    assert trace() == trace()


# ----- reasons


def test_reason_texts() -> None:
    def first(cfg: ScalingConfig, inflight: float, current: int) -> Decision:
        scaler = Autoscaler(cfg, 0.0)
        scaler.observe(0.0, inflight, 1)
        return scaler.decide(0.0, current)

    assert first(ScalingConfig(max_inputs=4, target_inputs=2), 9.2, 3).reason == "3 -> 5: 9.2 in flight, target 2"
    assert first(ScalingConfig(), 9.2, 1).reason == "1 -> 10: panic, 9.2 in flight over 6 s, target 1"
    assert first(ScalingConfig(max_containers=4), 9.2, 1).reason == (
        "1 -> 4: panic, 9.2 in flight over 6 s, target 1, cap max_containers=4"
    )
    assert first(ScalingConfig(), 1, 1) == Decision(1, "", False)  # unchanged: nothing to log
    never = Autoscaler(ScalingConfig(), 0.0)
    assert never.decide(1.0, 3).reason == "3 -> 0: no requests yet"
