"""The engine's state as its readers see it: immutable records, made fresh on every status tick.

`Snapshot` is what the screen, `serve`'s printer and the gateway's status pages read; `EndpointStatus`
is one row of it (a plain pool's endpoint, a parametrized class's endpoint, or one set of its values),
carrying what the commands may do with it (`max_replicas`, and where that cap comes from). Nothing here
touches a process: the facade builds these from the pools it owns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .autoscaler import CAP_DEFAULT, CAP_MAX_CONTAINERS, CAP_WEB_SERVER
from .events import LOG_LINES_KEPT
from .labels import label_url
from .manifest import EndpointSpec, LoadError, PoolSpec
from .version import version

if TYPE_CHECKING:
    from .pool_group import PoolGroup
    from .supervisor import Pool



@dataclass(frozen=True)
class ReplicaStatus:
    id: str
    pid: int | None
    state: str
    generation: int
    age_s: float
    startup_ms: float | None
    cpu_percent: float
    rss_bytes: int
    memory_bytes: int = 0  # what its process tree holds alone (USS)


@dataclass(frozen=True)
class EndpointStatus:
    spec: EndpointSpec
    url: str
    own_url: str | None
    state: str
    ready: int
    starting: int
    desired: int
    restarts: int
    generation: int = 1
    pinned: int | None = None
    panic: bool = False
    scale_events: tuple[str, ...] = ()
    inflight: int = 0
    rps: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    requests_total: int = 0
    errors_total: int = 0
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    memory_bytes: int = 0  # what its replicas (and its snapshot) hold alone: USS, see memory.py
    last_error: str | None = None
    replicas: tuple[ReplicaStatus, ...] = ()
    # A parametrized class: its endpoint's own row lists the parameters; each set of values
    # asked for so far has a row of its own, named `Greeter.greet?name=ann`, with `variant_of` set.
    parameters: tuple[str, ...] = ()
    variant_of: str | None = None
    values: dict[str, Any] | None = None
    # The replica cap in force and where it comes from: "max_containers", "--max-replicas" (mwtui's
    # default where the app sets none) or "web_server" (one fixed port); None, None: no cap at all.
    max_replicas: int | None = None
    max_source: str | None = None
    # Where its replicas come from: {"mode": "snapshot" | "fresh import" | "starting", "reason", "import_ms",
    # "snap_enters", "generation"} for the generation it serves; None before its first replica.
    snapshot: Mapping[str, Any] | None = None
    app: str = ""  # the app it belongs to
    # A function or class called by other pools: who called it in the last minute (their pools), and
    # for a scheduled function, when it runs next (time.time()).
    callers: tuple[str, ...] = ()
    next_run: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def cap(self) -> tuple[int | None, str | None]:
        """(max_replicas, max_source); for a status made without them (by hand, in tests), the
        spec's max_containers."""
        if self.max_source is not None:
            return self.max_replicas, self.max_source
        top = self.spec.max_containers
        return top, None if top is None else CAP_MAX_CONTAINERS

    def to_json(self) -> dict[str, Any]:
        s = self.spec
        top, source = self.cap
        return {
            "name": s.name,
            "pool": s.pool,
            "label": s.label,
            "kind": s.kind,
            "method": s.method,
            "app": self.app,
            "url": self.url or None,  # none for a function or class called by other pools
            "own_url": self.own_url,
            "custom_domains": list(s.custom_domains),
            "requires_proxy_auth": s.requires_proxy_auth,
            "state": self.state,
            "replicas": {
                "ready": self.ready,
                "starting": self.starting,
                "desired": self.desired,
                "min": s.min_containers,
                "max": top,
                "max_source": source,
            },
            "replica_list": [
                {"id": r.id, "pid": r.pid, "state": r.state, "generation": r.generation,
                 "startup_ms": r.startup_ms, "cpu_percent": round(r.cpu_percent, 1), "rss_bytes": r.rss_bytes,
                 "memory_bytes": r.memory_bytes}
                for r in self.replicas
            ],
            "restarts": self.restarts,
            "generation": self.generation,
            "autoscaling": self.pinned is None,
            "pinned": self.pinned,
            "panic": self.panic,
            "scale_events": list(self.scale_events),
            "inflight": self.inflight,
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "requests_total": self.requests_total,
            "errors_total": self.errors_total,
            "cpu_percent": round(self.cpu_percent, 1),
            "rss_bytes": self.rss_bytes,
            "memory_bytes": self.memory_bytes,
            "last_error": self.last_error,
            "parameters": list(self.parameters),
            "variant_of": self.variant_of,
            "params": self.values,
            "snapshot": dict(self.snapshot) if self.snapshot is not None else None,
            "callers": list(self.callers),
            "schedule": s.schedule,
            "next_run": self.next_run,
            "retries": s.retries,
        }


@dataclass(frozen=True)
class ReloadStatus:
    enabled: bool
    state: str = "watching"  # watching | reloading | error | off
    generation: int = 1
    last_ms: float | None = None  # how long the last reload took, save to served
    reloads: int = 0
    ignored: tuple[str, ...] = ()  # paths the loop guard stopped watching


@dataclass(frozen=True)
class Snapshot:
    app_name: str
    file: str
    gateway_url: str
    endpoints: tuple[EndpointStatus, ...] = ()
    warnings: tuple[str, ...] = ()
    error: LoadError | None = None  # the latest edit that did not load; the previous one still serves
    reload: ReloadStatus = ReloadStatus(enabled=False, state="off")
    mode: str = ""  # what replicas run in: "container" (a view of their own) or "host"; "" not known
    mode_why: str = ""  # for host mode: why, and how to enable the container view
    # web_server replicas: "own" (a network namespace each) or "host" (the host's, one replica at a time)
    network: str = ""
    network_why: str = ""
    apps: tuple[tuple[str, str], ...] = ()  # (name, file) of each app served, in order
    memory_bytes: int = 0  # the whole of mwtui (engine, gateway, zygote, snapshots, replicas): PSS summed
    t: float = field(default_factory=time.time)

    @property
    def total_rps(self) -> float:
        return sum(e.rps for e in self.endpoints)

    def app_json(self) -> dict[str, Any]:
        """The app as a whole, for `/api/app`: what a program needs to tell whether the file loads."""
        r = self.reload
        error = self.error
        return {
            "name": self.app_name,
            "file": self.file,
            "gateway_url": self.gateway_url,
            "generation": r.generation,
            "reload": {"enabled": r.enabled, "state": r.state, "reloads": r.reloads, "last_ms": r.last_ms,
                       "silenced": list(r.ignored)},
            "load_error": None if error is None else {"file": error.file, "line": error.line,
                                                      "message": error.message},
            "warnings": list(self.warnings),
            "endpoints": len(self.endpoints),
            "mode": self.mode,
            "mode_why": self.mode_why or None,
            "network": self.network,
            "network_why": self.network_why or None,
            "apps": [{"name": name, "file": file} for name, file in self.apps],
            "version": version(),
            "memory_bytes": self.memory_bytes,
        }


@dataclass(frozen=True)
class PoolBrief:
    """A pool in a word, for whoever heard `PoolChanged`: its state and its endpoints as routed."""

    state: str  # starting | running | idle | stopped | failed
    endpoints: tuple[str, ...]  # `Greeter.greet?name=ann` for a set of a class's parameters



@dataclass(frozen=True)
class RowMaker:
    """Builds the snapshot's rows from the engine's pool groups: what the facade knows besides them."""

    gateway_port: int | None
    endpoint_ports: Mapping[str, int]  # each endpoint's own port on the gateway, where it has one
    metrics: Mapping[str, Mapping[str, Any]]  # the gateway's latest figures, by routed endpoint name
    load_error: LoadError | None  # the latest save's, while it does not load
    generation: int
    cap: Callable[[PoolSpec], tuple[int | None, str | None]]  # a pool's replica cap, and where it comes from
    snapshot: Callable[[str, int], Mapping[str, Any] | None] = lambda pool, generation: None  # see snapshots.py
    app_of: Callable[[str], str] = lambda pool: ""  # the name of the app a pool belongs to
    callers: Callable[[str], tuple[str, ...]] = lambda endpoint: ()  # who called it in the last minute
    next_run: Callable[[str], float | None] = lambda endpoint: None  # a scheduled function's next run

    def endpoints(self, groups: Iterable[PoolGroup], now: float) -> tuple[EndpointStatus, ...]:
        """In the file's order: each endpoint of a plain pool; a parametrized class's endpoint, then a
        row for each of its sets of values."""
        from .pool_group import routed

        out: list[EndpointStatus] = []
        for group in groups:
            sets = [(pool, routed(pool)) for pool in group.pools()]
            if not group.parametrized:
                out += [self.pool_row(pool, spec, now) for pool, specs in sets for spec in specs]
                continue
            for i, spec in enumerate(group.spec.endpoints):
                out.append(self.class_row(group, spec))
                out += [self.pool_row(pool, specs[i], now) for pool, specs in sets if i < len(specs)]
        return tuple(out)

    def _last_error(self, pool: Pool | None) -> str | None:
        # The file's own state first: it is the newest news when the latest save is broken.
        return (self.load_error.message if self.load_error else None) or (pool.last_error if pool else None)

    def _traffic(self, endpoint: str) -> dict[str, Any]:
        """The gateway's latest figures for one routed endpoint, as EndpointStatus fields."""
        m = self.metrics.get(endpoint, {})
        return {
            "inflight": int(m.get("inflight", 0)), "rps": float(m.get("rps", 0.0)),
            "p50_ms": m.get("p50_ms"), "p95_ms": m.get("p95_ms"),
            "requests_total": int(m.get("requests_total", 0)), "errors_total": int(m.get("errors_total", 0)),
        }

    def _cap_fields(self, spec: PoolSpec) -> dict[str, Any]:
        cap, source = self.cap(spec)
        return {"max_replicas": cap, "max_source": source}

    def pool_row(self, pool: Pool, spec: EndpointSpec, now: float) -> EndpointStatus:
        v = pool.variant
        snap = self.snapshot(pool.spec.name, pool.generation)
        base = spec.name.partition("?")[0]
        own_port = self.endpoint_ports.get(base)  # a parameter set is reached through its parent's
        replicas = tuple(
            ReplicaStatus(r.id, r.pid, "unresponsive" if r.unresponsive else r.state, r.generation, now - r.started_at,
                          r.startup_ms, r.cpu_percent, r.rss_bytes, r.memory_bytes)
            for r in pool.replicas
        )
        return EndpointStatus(
            spec=spec,
            url="" if spec.is_call else label_url(spec.label, self.gateway_port) + (f"/{v.suffix}" if v else ""),
            own_url=f"http://127.0.0.1:{own_port}" + (f"/{v.suffix}" if v else "") if own_port else None,
            app=self.app_of(pool.spec.name),
            callers=self.callers(spec.name),
            next_run=self.next_run(spec.name),
            state=pool.state,
            ready=len(pool.ready_replicas()),
            starting=len(pool.starting_replicas()),
            desired=0 if pool.stopped else pool.desired,
            restarts=pool.restarts,
            generation=pool.generation,
            pinned=pool.pinned,
            panic=pool.panic,
            scale_events=tuple(
                f"{time.strftime('%H:%M:%S', time.localtime(t))} {text}" for t, text in pool.scale_events
            ),
            **self._traffic(spec.name),
            # The snapshot's own process counts with its pool (not with each set of a class's values).
            cpu_percent=sum(r.cpu_percent for r in replicas) + (0.0 if v or not snap else snap.get("cpu_percent", 0.0)),
            rss_bytes=sum(r.rss_bytes for r in replicas) + (0 if v or not snap else snap.get("rss_bytes", 0)),
            memory_bytes=sum(r.memory_bytes for r in replicas) + (0 if v or not snap else snap.get("memory_bytes", 0)),
            last_error=self._last_error(pool),
            replicas=replicas,
            variant_of=base if v else None,
            values=dict(v.values) if v else None,
            **self._cap_fields(pool.spec),
            snapshot=snap,
        )

    def class_row(self, group: PoolGroup, spec: EndpointSpec) -> EndpointStatus:
        """A parametrized class's endpoint: no replicas of its own; its sets of values have the rows
        below it, and what went wrong last in any of them shows here too."""
        own_port = self.endpoint_ports.get(spec.name)
        failing = next((p for p in group.pools() if p.last_error), None)
        return EndpointStatus(
            spec=spec,
            url="" if spec.is_call else label_url(spec.label, self.gateway_port),
            own_url=f"http://127.0.0.1:{own_port}" if own_port else None,
            app=self.app_of(group.name),
            callers=self.callers(spec.name),
            state=group.state(),
            ready=0,
            starting=0,
            desired=0,
            restarts=0,
            generation=self.generation,
            **self._traffic(spec.name),
            last_error=self._last_error(failing),
            parameters=tuple(str(p["name"]) for p in group.spec.parameters),
            **self._cap_fields(group.spec),  # each set of values is capped so
        )


__all__ = [
    "CAP_DEFAULT", "CAP_MAX_CONTAINERS", "CAP_WEB_SERVER", "LOG_LINES_KEPT", "EndpointStatus", "PoolBrief", "RowMaker", "ReloadStatus",
    "ReplicaStatus", "Snapshot", "label_url",
]
