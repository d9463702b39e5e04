"""The engine facade: wires discovery, supervisor and gateway, publishes snapshots, takes commands.

The screen, the headless `serve` printer and the gateway's status page all read the same immutable
`Snapshot`; commands (start, stop, restart, scale) come in here and never go straight to a process.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .discovery import discover_async
from .gateway_link import GatewayError, GatewayLink
from .lifeline import Lifeline
from .loader import AppRef
from .manifest import AppManifest, EndpointSpec, LoadError
from .ports import DEFAULT_GATEWAY_PORT, stable_port
from .supervisor import Event, LogLine, Pool, PoolChanged

LOG_LINES_KEPT = 2000


class LoadFailed(Exception):
    """The app file could not be loaded at start; `error` says why, for a person."""

    def __init__(self, error: LoadError) -> None:
        super().__init__(error.message)
        self.error = error


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
    inflight: int = 0
    rps: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    requests_total: int = 0
    errors_total: int = 0
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    last_error: str | None = None
    replicas: tuple[ReplicaStatus, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    def to_json(self) -> dict[str, Any]:
        s = self.spec
        return {
            "name": s.name,
            "pool": s.pool,
            "label": s.label,
            "kind": s.kind,
            "method": s.method,
            "url": self.url,
            "own_url": self.own_url,
            "custom_domains": list(s.custom_domains),
            "requires_proxy_auth": s.requires_proxy_auth,
            "state": self.state,
            "replicas": {
                "ready": self.ready,
                "starting": self.starting,
                "desired": self.desired,
                "min": s.min_containers,
                "max": s.max_containers,
            },
            "restarts": self.restarts,
            "inflight": self.inflight,
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "requests_total": self.requests_total,
            "errors_total": self.errors_total,
            "cpu_percent": round(self.cpu_percent, 1),
            "rss_bytes": self.rss_bytes,
            "last_error": self.last_error,
        }


@dataclass(frozen=True)
class Snapshot:
    app_name: str
    file: str
    gateway_url: str
    endpoints: tuple[EndpointStatus, ...] = ()
    warnings: tuple[str, ...] = ()
    error: LoadError | None = None
    t: float = field(default_factory=time.time)

    @property
    def total_rps(self) -> float:
        return sum(e.rps for e in self.endpoints)


def label_url(label: str, port: int | None) -> str:
    return f"http://{label}.localhost:{port}"


class Engine:
    def __init__(
        self,
        ref: AppRef,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_GATEWAY_PORT,
        own_ports: bool = True,
    ) -> None:
        self.ref = ref
        self.host = host
        self.lifeline = Lifeline()
        self.gateway = GatewayLink(host, port, self.lifeline, self._on_gateway_event)
        self.own_ports = own_ports
        self.manifest: AppManifest | None = None
        self.pools: dict[str, Pool] = {}
        self.logs: dict[str, deque[LogLine]] = {}
        self._listeners: list[Callable[[Event], None]] = []
        self._metrics: dict[str, dict[str, Any]] = {}
        self._socket_dir = tempfile.mkdtemp(prefix="mwtui-")
        self._status_task: asyncio.Task[None] | None = None
        self._closed = False

    # ----- lifecycle
    async def start(self) -> Snapshot:
        manifest = await discover_async(self.ref)
        if manifest.error:
            raise LoadFailed(manifest.error)
        self.manifest = manifest
        await self.gateway.start()
        for spec in manifest.pools():
            self.logs[spec.name] = deque(maxlen=LOG_LINES_KEPT)
            pool = Pool(spec, self.ref, self._socket_dir, self.lifeline, self._emit)
            self.pools[spec.name] = pool
            pool.start()
        self._publish_routes()
        self._status_task = asyncio.get_running_loop().create_task(self._status_loop())
        return self.snapshot()

    async def close(self) -> None:
        """Drain and stop: replicas finish their in-flight requests (the gateway stays up meanwhile)."""
        if self._closed:
            return
        self._closed = True
        if self._status_task:
            self._status_task.cancel()
        await asyncio.gather(*(p.close() for p in self.pools.values()), return_exceptions=True)
        await self.gateway.close()
        self.lifeline.close()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    async def wait_ready(self, timeout: float = 30.0) -> bool:
        """Until every pool has settled (running, failed or stopped); True if all are running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [p.state for p in self.pools.values()]
            if all(s in ("running", "failed", "stopped", "idle") for s in states):
                return all(s == "running" for s in states)
            await asyncio.sleep(0.05)
        return False

    # ----- subscriptions
    def subscribe(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def _emit(self, event: Event) -> None:
        if isinstance(event, LogLine):
            self.logs.setdefault(event.pool, deque(maxlen=LOG_LINES_KEPT)).append(event)
        elif isinstance(event, PoolChanged):
            self._publish_routes()
        for listener in self._listeners:
            listener(event)

    # ----- commands (by endpoint name; a class's endpoints share one pool)
    def _pool_of(self, endpoint: str) -> Pool:
        assert self.manifest
        spec = self.manifest.endpoint(endpoint)
        if spec is None:
            raise KeyError(f"no endpoint named {endpoint!r}")
        return self.pools[spec.pool]

    def stop_endpoint(self, name: str) -> None:
        self._pool_of(name).pause()
        self._publish_routes()

    def start_endpoint(self, name: str) -> None:
        self._pool_of(name).resume()
        self._publish_routes()

    async def restart_endpoint(self, name: str) -> None:
        await self._pool_of(name).restart()

    def scale(self, name: str, replicas: int) -> None:
        self._pool_of(name).scale(replicas)

    # ----- gateway
    def _on_gateway_event(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "metrics":
            self._metrics = msg.get("endpoints", {})
        elif kind == "access":
            for line in msg.get("lines", []):
                spec = self.manifest.endpoint(line.get("endpoint", "")) if self.manifest else None
                if spec is None:
                    continue
                text = f"{line['method']} {line['path']} {line['status']} {line['ms']:.1f}ms"
                self._emit(LogLine(spec.pool, line.get("upstream") or spec.pool, text, line.get("t", time.time())))
        elif kind == "ports":
            for warning in msg.get("warnings", []):
                self._emit(LogLine("mwtui", "gateway", warning, time.time()))

    def _publish_routes(self) -> None:
        if not self.manifest or self.gateway.proc is None:
            return
        routes = []
        for spec in self.manifest.endpoints:
            pool = self.pools.get(spec.pool)
            if pool is None:
                continue
            upstreams = [
                {"id": r.id, "address": r.upstreams[spec.name].address, "dispatch": r.upstreams[spec.name].dispatch}
                for r in pool.ready_replicas()
                if spec.name in r.upstreams
            ]
            hold = (spec.startup_timeout or 0) + 30.0
            routes.append(
                {
                    "name": spec.name,
                    "label": spec.label,
                    "domains": list(spec.custom_domains),
                    "port": stable_port(self.ref.path, spec.name) if self.own_ports else None,
                    "requires_proxy_auth": spec.requires_proxy_auth,
                    "state": pool.state,
                    "hold_s": hold,
                    "upstreams": upstreams,
                }
            )
        self.gateway.send({"type": "routes", "endpoints": routes})

    async def _status_loop(self) -> None:
        while True:
            for pool in self.pools.values():
                for r in pool.replicas:
                    r.sample()
            self.gateway.send({"type": "status", "endpoints": [e.to_json() for e in self.snapshot().endpoints]})
            await asyncio.sleep(1.0)

    # ----- snapshots
    def snapshot(self) -> Snapshot:
        m = self.manifest
        if m is None:
            return Snapshot(app_name=self.ref.stem, file=self.ref.path, gateway_url=self.gateway.base_url)
        now = time.time()
        out = []
        for spec in m.endpoints:
            pool = self.pools[spec.pool]
            metrics = self._metrics.get(spec.name, {})
            own_port = self.gateway.endpoint_ports.get(spec.name)
            replicas = tuple(
                ReplicaStatus(
                    r.id, r.pid, r.state, r.generation, now - r.started_at, r.startup_ms, r.cpu_percent, r.rss_bytes
                )
                for r in pool.replicas
            )
            out.append(
                EndpointStatus(
                    spec=spec,
                    url=label_url(spec.label, self.gateway.port),
                    own_url=f"http://127.0.0.1:{own_port}" if own_port else None,
                    state=pool.state,
                    ready=len(pool.ready_replicas()),
                    starting=len(pool.starting_replicas()),
                    desired=0 if pool.stopped else pool.desired,
                    restarts=pool.restarts,
                    inflight=int(metrics.get("inflight", 0)),
                    rps=float(metrics.get("rps", 0.0)),
                    p50_ms=metrics.get("p50_ms"),
                    p95_ms=metrics.get("p95_ms"),
                    requests_total=int(metrics.get("requests_total", 0)),
                    errors_total=int(metrics.get("errors_total", 0)),
                    cpu_percent=sum(r.cpu_percent for r in replicas),
                    rss_bytes=sum(r.rss_bytes for r in replicas),
                    last_error=pool.last_error,
                    replicas=replicas,
                )
            )
        return Snapshot(
            app_name=m.app_name,
            file=m.file,
            gateway_url=self.gateway.base_url,
            endpoints=tuple(out),
            warnings=m.warnings,
        )


__all__ = ["Engine", "EndpointStatus", "GatewayError", "LoadFailed", "Snapshot", "label_url"]
