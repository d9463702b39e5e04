"""How many replicas a pool wants: a pure policy after Knative's KPA, with Modal's knobs.

No I/O, no clock, no asyncio: the caller feeds time in, so tests run on simulated time.

Interface::

    cfg = ScalingConfig.from_spec(pool.knobs)   # or ScalingConfig(min_containers=..., ...)
    scaler = Autoscaler(cfg, now)
    scaler.observe(now, inflight, requests)     # every 0.5-1 s, from the gateway's metrics
    d = scaler.decide(now, current)             # -> Decision(desired, reason, panic)
    scaler.reconfigure(cfg2)                    # knobs changed on reload: keep the history

`inflight` is the pool's requests in flight, counting the ones waiting in the gateway's queue;
`requests` is the pool's monotonic request counter; `current` is replicas ready + starting.

The policy, each `decide`:

- Load is averaged over 1 s buckets, each bucket the mean of its samples (a second with no sample
  repeats the last one, since in-flight is a level). Two windows: `stable_window` (60 s) and
  `panic_window` (6 s). History starts at the request that wakes an idle pool, and a window averages
  only the seconds since then until it is full, so a burst at wake-up is not diluted by idle zeros.
- The pool is *active* while a request is in flight or one arrived within the last `scaledown_window`.
  Idle for `scaledown_window`, it goes straight to `min_containers` (to zero when that is 0).
- While active: want = ceil(stable average / target), at least 1, and at least enough replicas for
  the panic-window average (and the latest sample) at `max_inputs` each, so that a step below the
  panic threshold does not leave requests queued for most of a stable window (Knative leans on its
  70 % target utilisation for this), and a burst that wakes a pool gets its replicas in one step.
  Then `+ buffer_containers`.
- Panic: when ceil(panic average / target) >= `panic_threshold` x max(1, current), use the larger of
  the stable and panic counts and never go down; leave panic once a full stable window passes without
  the condition (Knative's rule). `current` counts as at least 1 there, as Knative counts ready pods,
  so two or more requests waking a pool at zero are a burst.
- Scale down only to the largest count wanted over the last `scaledown_window` (Knative's scale-down
  delay), so a replica goes only after that long of not being needed. No delay going up.
- Clamp to [min_containers, max_containers]. mwtui fills in a cap where Modal has none (see
  DEFAULT_MAX_REPLICAS); `cap_from` names where the cap came from, for the reason text.

`Decision.reason` is empty unless `desired` differs from the previous decision's (the first decision
compares with `current`); then it reads like "3 -> 5: 9.2 in flight, target 2", for the scale-event log.
Deterministic: the same calls give the same decisions.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from .manifest import EndpointSpec

_EPS = 1e-9  # 8 in flight at target 2 is 4 replicas, not 5 through a float sum's rounding

# Replicas per pool when the app sets no max_containers (`--max-replicas`; 0: none, as on Modal).
# On Modal a crowd is met by a cloud; here every replica is a process on one machine (tens of MB
# each), and a crowd of slow clients once scaled a pool to 49 in 2 s. 8 covers the concurrency a
# local run needs on any laptop, is the same on every machine, and a person can raise it.
DEFAULT_MAX_REPLICAS = 8
# Where a pool's cap comes from (`ScalingConfig.cap_from`, and the status's `replicas.max_source`).
CAP_MAX_CONTAINERS = "max_containers"
CAP_DEFAULT = "--max-replicas"
CAP_WEB_SERVER = "web_server"  # one fixed port: one replica


def _replicas(load: float, per_replica: float) -> int:
    return max(0, math.ceil(load / per_replica - _EPS))


def _secs(x: float) -> str:
    return f"{x:g} s"


@dataclass(frozen=True)
class ScalingConfig:
    """A pool's knobs (Modal's defaults) and the KPA's windows."""

    min_containers: int = 0
    max_containers: int | None = None  # None: no limit
    cap_from: str = CAP_MAX_CONTAINERS  # what set max_containers (see CAP_*)
    buffer_containers: int = 0
    scaledown_window: float = 60.0
    max_inputs: int = 1  # hard limit of requests at once per replica
    target_inputs: float | None = None  # None (or 0): max_inputs
    stable_window: float = 60.0
    panic_window: float = 6.0
    panic_threshold: float = 2.0

    def __post_init__(self) -> None:
        if self.min_containers < 0 or self.buffer_containers < 0:
            raise ValueError("min_containers and buffer_containers must be >= 0")
        if self.max_containers is not None and self.max_containers < self.min_containers:
            raise ValueError(
                f"`min_containers` ({self.min_containers}) cannot be greater than "
                f"`max_containers` ({self.max_containers})"
            )
        if self.max_inputs < 1 or (self.target_inputs is not None and self.target_inputs < 0):
            raise ValueError("max_inputs must be >= 1 and target_inputs >= 0")
        if min(self.scaledown_window, self.stable_window, self.panic_window) <= 0 or self.panic_threshold <= 0:
            raise ValueError("windows and panic_threshold must be positive")

    @property
    def target(self) -> float:
        """Requests in flight per replica that the policy aims for."""
        return self.target_inputs or self.max_inputs

    @classmethod
    def from_spec(cls, spec: EndpointSpec) -> ScalingConfig:
        return cls(
            min_containers=spec.min_containers,
            max_containers=spec.max_containers,
            buffer_containers=spec.buffer_containers,
            scaledown_window=float(spec.scaledown_window),
            max_inputs=max(1, spec.max_inputs),
            target_inputs=spec.target_inputs or None,  # Modal allows 0; it cannot be a divisor
        )


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str  # "" unless desired changed; else "3 -> 5: 9.2 in flight, target 2"
    panic: bool
    # The reason without its "3 -> 5: " (what the pool's scale events say); derived, so not compared.
    why: str = field(default="", compare=False)


class _Bucket:
    """One second of in-flight samples; without a sample it repeats the last level seen."""

    __slots__ = ("total", "n", "carry")

    def __init__(self, carry: float) -> None:
        self.total = 0.0
        self.n = 0
        self.carry = carry

    @property
    def value(self) -> float:
        return self.total / self.n if self.n else self.carry


class Autoscaler:
    """Desired replica count for one pool, from in-flight samples on the caller's clock."""

    def __init__(self, config: ScalingConfig, now: float) -> None:
        self.config = config
        self._last_bucket = math.floor(now)
        self._buckets: deque[_Bucket] = deque([_Bucket(0.0)], maxlen=self._history_len(config))
        self._level = 0.0  # the latest in-flight sample
        self._requests: int | None = None  # counter baseline: set by the first sample
        self._last_active: float | None = None  # last sample with a request in flight or arrived
        self._panic_since: float | None = None  # last time the panic condition held
        self._max_panic = 0
        self._delay: deque[tuple[float, int]] = deque()  # (time, wanted), wanted strictly falling
        self._last_desired: int | None = None
        self._idle = True  # the history holds no load worth keeping: the next request restarts it

    @staticmethod
    def _history_len(config: ScalingConfig) -> int:
        return max(math.ceil(config.stable_window), math.ceil(config.panic_window), 1)

    def reconfigure(self, config: ScalingConfig) -> None:
        """New knobs (a reload changed them); the load history and panic state carry over."""
        self.config = config
        self._buckets = deque(self._buckets, maxlen=self._history_len(config))

    # ----- input

    def _advance(self, now: float) -> None:
        """Open buckets up to `now`'s second; skipped seconds repeat the last level."""
        b = math.floor(now)
        gap = b - self._last_bucket
        if gap <= 0:
            return  # same second, or the clock stepped back: keep filling the current bucket
        for _ in range(min(gap, self._buckets.maxlen or gap)):
            self._buckets.append(_Bucket(self._level))
        self._last_bucket = b

    def observe(self, now: float, inflight: float, requests: int) -> None:
        """One sample: requests in flight now (queued ones included) and the total request count."""
        inflight = max(0.0, float(inflight))
        arrived = False
        if self._requests is not None:
            # A smaller total means the gateway's counter restarted: what it holds arrived since.
            arrived = requests > self._requests or (requests < self._requests and requests > 0)
        self._requests = requests
        if self._idle and (inflight > 0 or arrived):
            # Waking: seconds of zeros before this would only dilute the burst that woke us.
            self._idle = False
            self._buckets = deque([_Bucket(0.0)], maxlen=self._buckets.maxlen)
            self._last_bucket = math.floor(now)
        self._advance(now)
        bucket = self._buckets[-1]
        bucket.total += inflight
        bucket.n += 1
        self._level = inflight
        if inflight > 0 or arrived:
            self._last_active = now if self._last_active is None else max(self._last_active, now)

    def _average(self, window: float) -> float:
        n = min(max(1, math.ceil(window)), len(self._buckets))
        return sum(self._buckets[-i].value for i in range(1, n + 1)) / n

    # ----- output

    def decide(self, now: float, current: int) -> Decision:
        """The replica count the pool should have now; `current` = replicas ready + starting."""
        cfg = self.config
        self._advance(now)
        prev = current if self._last_desired is None else self._last_desired
        idle_for = math.inf if self._last_active is None else now - self._last_active
        active = self._level > 0 or idle_for < cfg.scaledown_window

        if not active:
            # Idle for the whole window: forget the load so a wake starts from one replica.
            self._panic_since, self._max_panic = None, 0
            self._delay.clear()
            self._idle = True
            desired = self._clamp(0)
            why = self._idle_reason(desired)
            return self._decision(desired, prev, why, panic=False)

        target = cfg.target
        stable, burst = self._average(cfg.stable_window), self._average(cfg.panic_window)
        want_stable, want_burst = _replicas(stable, target), _replicas(burst, target)

        if want_burst >= cfg.panic_threshold * max(1, current):
            self._panic_since = now
        elif self._panic_since is not None and now - self._panic_since > cfg.stable_window:
            self._panic_since, self._max_panic = None, 0  # the surge is in the stable average now
        panic = self._panic_since is not None

        if panic:
            self._max_panic = max(self._max_panic, want_stable, want_burst)  # never down in panic
            want, load = self._max_panic, burst
        else:
            want, load = want_stable, stable
        # Replicas so that nothing waits at max_inputs: from the latest sample, not an average, so a
        # burst that wakes a pool (4 calls of a .map() at once) gets its replicas in one step.
        room = max(_replicas(burst, cfg.max_inputs), _replicas(self._level, cfg.max_inputs))
        if room > want:
            want, load = room, max(burst, self._level)
        want = max(want, 1) + cfg.buffer_containers

        # Scale-down delay: the largest count wanted over the last scaledown_window.
        while self._delay and self._delay[-1][1] <= want:
            self._delay.pop()
        self._delay.append((now, want))
        while self._delay[0][0] <= now - cfg.scaledown_window:
            self._delay.popleft()
        held = self._delay[0][1]

        desired = self._clamp(held)
        parts = []
        if prev == 0 and current == 0:
            parts.append("wake on request")
        if panic:
            parts.append(f"panic, {load:.1f} in flight over {_secs(cfg.panic_window)}")
        else:
            parts.append(f"{load:.1f} in flight")
        parts.append(f"target {target:g}")
        if cfg.buffer_containers:
            parts.append(f"+{cfg.buffer_containers} buffer")
        if desired < prev and held < prev:
            parts.append(f"{held} sufficed for {_secs(cfg.scaledown_window)}")
        parts.extend(self._bound_notes(held, desired))
        return self._decision(desired, prev, ", ".join(parts), panic)

    def _clamp(self, n: int) -> int:
        cfg = self.config
        n = max(n, cfg.min_containers)
        return n if cfg.max_containers is None else min(n, cfg.max_containers)

    def _bound_notes(self, wanted: int, desired: int) -> list[str]:
        if desired < wanted:
            return [f"cap {self.config.cap_from}={self.config.max_containers}"]
        if desired > wanted:
            return [f"floor min_containers={self.config.min_containers}"]
        return []

    def _idle_reason(self, desired: int) -> str:
        cfg = self.config
        if self._last_active is None:
            return ", ".join(self._bound_notes(0, desired)) or "no requests yet"
        idle = f"{_secs(cfg.scaledown_window)} idle"
        if desired == 0:
            return f"scale to zero after {idle}"
        return ", ".join([f"after {idle}", *self._bound_notes(0, desired)])

    def _decision(self, desired: int, prev: int, why: str, panic: bool) -> Decision:
        self._last_desired = desired
        changed = desired != prev
        return Decision(desired, f"{prev} -> {desired}: {why}" if changed else "", panic, why if changed else "")
