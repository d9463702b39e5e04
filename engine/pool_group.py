"""A function or class of the app and the pools that serve it: the one table the engine keeps.

A plain function or class has one set of parameter values, the empty one, and so one pool for as long as
it is in the file. A parametrized class (`modal.parameter()`) gets a pool per set of values a request asks
for, at most `limit` at once; a set that has scaled to zero is removed until a request asks for it again.
Start, reload, commands, routes and the snapshot treat both alike, through this class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .autoscaler import Autoscaler
from .manifest import EndpointSpec, PoolSpec
from .params import ParamError, from_query, pool_key, query_of
from .supervisor import Pool

PLAIN = ""  # the key of a plain function's or class's one set (no parameters)


class PoolGroup:
    def __init__(self, spec: PoolSpec, limit: int) -> None:
        self.spec = spec  # the latest that loaded (a set whose rollout failed still runs its own)
        self.limit = limit  # sets at once
        self.sets: dict[str, Pool] = {}  # pool_key(values) -> its pool; a plain one's is PLAIN
        self.scalers: dict[str, Autoscaler] = {}  # same keys
        self.stopped = False  # stopped by hand: a set added meanwhile starts stopped too

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def parametrized(self) -> bool:
        return bool(self.spec.parameters)

    def generations(self) -> set[int]:
        """The generations its pools serve now."""
        return {pool.generation for pool in self.sets.values()}

    def pools(self) -> list[Pool]:
        return list(self.sets.values())

    def key_of(self, values: dict[str, Any]) -> str:
        return pool_key(values) if self.parametrized else PLAIN

    def fits(self, values: dict[str, Any]) -> bool:
        """Do these values name the same set under the (current) parameters? After a reload, a set that
        no longer fits is dropped; a request's values are checked again here."""
        if not self.parametrized:
            return not values
        try:
            return from_query(self.spec.parameters, query_of(values)) == values
        except ParamError:
            return False

    def default_values(self) -> dict[str, Any] | None:
        """The set started warm, as any pool starts, so that a broken class shows at once: the empty one
        of a plain pool; a class's defaults when every parameter has one; else None."""
        if not self.parametrized:
            return {}
        try:
            return from_query(self.spec.parameters, "")
        except ParamError:
            return None

    def full(self) -> bool:
        return len(self.sets) >= self.limit

    def add(self, key: str, pool: Pool, scaler: Autoscaler) -> None:
        self.sets[key] = pool
        self.scalers[key] = scaler

    def remove(self, key: str) -> Pool:
        self.scalers.pop(key, None)
        return self.sets.pop(key)

    def autoscale(self, now: float, metrics: Mapping[str, Mapping[str, Any]]) -> None:
        """Feed each set's load (the gateway's `metrics`, by routed endpoint) to its autoscaler and apply
        what it decides, unless pinned by hand."""
        for key, pool in self.sets.items():
            scaler = self.scalers[key]
            inflight = requests = 0
            for spec in routed(pool):
                m = metrics.get(spec.name, {})
                inflight += int(m.get("inflight", 0))
                requests += int(m.get("requests_total", 0))
            scaler.observe(now, inflight, requests)
            decision = scaler.decide(now, len(pool.ready_replicas()) + len(pool.starting_replicas()))
            pool.panic = decision.panic
            if pool.pinned is not None or pool.stopped or pool.failed or decision.desired == pool.desired:
                continue
            # The pool starts warm so that a broken factory shows at once; the autoscaler may only
            # grow it until one scaledown_window has passed without traffic.
            warm = pool.spec.serves_web and now - pool.started_monotonic < scaler.config.scaledown_window
            if decision.desired < pool.desired and warm:
                continue
            pool.set_desired(decision.desired, decision.why or f"{inflight} in flight, target {scaler.config.target:g}")

    def reap(self, metrics: Mapping[str, Mapping[str, Any]]) -> list[Pool]:
        """Take out the sets of a parametrized class that have scaled to zero (nothing runs, starts or
        waits there); the caller closes them."""
        gone = []
        for key, pool in list(self.sets.items()):
            if not self.parametrized or pool.desired or pool.replicas or pool.pinned is not None or pool.stopped:
                continue
            if any(metrics.get(s.name, {}).get("inflight") for s in routed(pool)):
                continue
            gone.append(self.remove(key))
        return gone

    def state(self) -> str:
        """A parametrized class's own rows: running if any set runs."""
        if self.stopped:
            return "stopped"
        states = {pool.state for pool in self.sets.values()}
        return "running" if "running" in states else "starting" if "starting" in states else "idle"


def routed(pool: Pool) -> list[EndpointSpec]:
    """The pool's endpoints under the names the gateway routes them by (`Greeter.greet?name=ann`)."""
    v = pool.variant
    if v is None:
        return list(pool.spec.endpoints)
    return [replace(s, name=s.name + v.suffix, pool=pool.name) for s in pool.spec.endpoints]
