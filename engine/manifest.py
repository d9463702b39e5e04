"""What discovery finds in an app file: plain data, JSON in and out, no I/O.

Every other part of the engine (supervisor, gateway, reloader, screen) works from these records, never
from user code, so that user code only ever runs inside subprocesses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

# "function" and "cls": a function or class that other pools call (`.remote()`, `.spawn()`, `.map()`,
# `Cls().method.remote()`), reached through the gateway on an internal host, never on a URL of its own.
EndpointKind = Literal["fastapi", "asgi", "wsgi", "web_server", "function", "cls"]
CALL_KINDS = frozenset({"function", "cls"})
PoolServer = Literal["uvicorn", "gunicorn", "web_server"]


@dataclass(frozen=True)
class EndpointSpec:
    """One web endpoint: a web function, or one web method of a class."""

    name: str  # "hello", or "MyAPI.health" for a class method
    pool: str  # the function or class whose replicas serve it: "hello", "MyAPI"
    kind: EndpointKind
    label: str
    method: str | None = None  # fastapi only: the HTTP method of its one route
    docs: bool = False
    requires_proxy_auth: bool = False
    custom_domains: tuple[str, ...] = ()
    port: int | None = None  # web_server only: the port the user's server listens on
    startup_timeout: float | None = None  # web_server only: seconds to wait for that port
    deprecated_alias: bool = False  # declared with @modal.web_endpoint
    # Pool-level knobs, repeated on each endpoint so that one record tells the whole story.
    min_containers: int = 0
    max_containers: int | None = None
    buffer_containers: int = 0
    scaledown_window: int = 60
    timeout: int = 300
    max_inputs: int = 1
    target_inputs: int = 1
    source: str = ""  # "path/app.py:12", where the function or method is defined
    # A function's `schedule=`: {"period_s": 5.0} or {"cron": "0 9 * * *", "timezone": "UTC"} (see schedules.py).
    schedule: dict[str, Any] | None = None
    retries: int = 0  # function or class `retries=` (its max_retries): shown; the caller retries

    @property
    def is_call(self) -> bool:
        """Reached by calls from other pools, not by a URL."""
        return self.kind in CALL_KINDS

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["custom_domains"] = list(self.custom_domains)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EndpointSpec:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["custom_domains"] = tuple(kw.get("custom_domains") or ())
        return cls(**kw)


@dataclass(frozen=True)
class PoolSpec:
    """The unit that replicas are made of: one function, or one class with all its web methods."""

    name: str
    server: PoolServer
    endpoints: tuple[EndpointSpec, ...]
    # JSON (sdk.environment.plan): the environment, mounts and class parameters of the pool; the
    # supervisor gives it to each replica as MWTUI_POOL_PLAN. "" when there is nothing to set up.
    plan: str = ""

    @property
    def knobs(self) -> EndpointSpec:
        return self.endpoints[0]

    @property
    def serves_web(self) -> bool:
        """Has a URL: starts warm. A pool only called by others starts at min_containers (0 by default)."""
        return any(not e.is_call for e in self.endpoints)

    @property
    def fixed_ports(self) -> tuple[int, ...]:
        """The ports its `@modal.web_server(port)` endpoints listen on: every replica needs them."""
        return tuple(sorted({e.port for e in self.endpoints if e.kind == "web_server" and e.port is not None}))

    @property
    def parameters(self) -> list[dict[str, Any]]:
        """A parametrized class's `modal.parameter()`s (see engine/params.py); [] for other pools."""
        return list(json.loads(self.plan).get("parameters") or []) if self.plan else []


@dataclass(frozen=True)
class LoadError:
    """Why an app file could not be turned into a manifest, written for a person."""

    message: str  # one paragraph, names file, line, endpoint or package
    file: str = ""
    line: int | None = None
    traceback: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AppManifest:
    app_name: str
    file: str  # absolute path of the app file
    app_var: str | None = None  # the `file.py::var` part, if given
    endpoints: tuple[EndpointSpec, ...] = ()
    warnings: tuple[str, ...] = ()
    error: LoadError | None = None
    sources: tuple[str, ...] = ()  # files of the Python modules the import loaded (the reloader watches them)
    pool_plans: tuple[tuple[str, str], ...] = ()  # (pool, plan JSON), see PoolSpec.plan

    @property
    def ok(self) -> bool:
        return self.error is None

    def pools(self) -> list[PoolSpec]:
        """Group endpoints by pool, in definition order, and pick the server each pool runs."""
        order: dict[str, list[EndpointSpec]] = {}
        for ep in self.endpoints:
            order.setdefault(ep.pool, []).append(ep)
        plans = dict(self.pool_plans)
        return [PoolSpec(name, pool_server(eps), tuple(eps), plans.get(name, "")) for name, eps in order.items()]

    def endpoint(self, name: str) -> EndpointSpec | None:
        return next((e for e in self.endpoints if e.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app_name,
            "file": self.file,
            "app_var": self.app_var,
            "endpoints": [e.to_json() for e in self.endpoints],
            "warnings": list(self.warnings),
            "error": self.error.to_json() if self.error else None,
            "sources": list(self.sources),
            "pool_plans": {name: json.loads(plan) for name, plan in self.pool_plans},
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json())

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AppManifest:
        err = d.get("error")
        return cls(
            app_name=d.get("app", ""),
            file=d.get("file", ""),
            app_var=d.get("app_var"),
            endpoints=tuple(EndpointSpec.from_json(e) for e in d.get("endpoints", [])),
            warnings=tuple(d.get("warnings", [])),
            error=LoadError(**err) if err else None,
            sources=tuple(d.get("sources", [])),
            pool_plans=tuple((k, json.dumps(v, sort_keys=True)) for k, v in (d.get("pool_plans") or {}).items()),
        )


def pool_server(endpoints: list[EndpointSpec]) -> PoolServer:
    """A lone WSGI function runs under gunicorn, a lone web_server runs the user's own process, and
    everything else (FastAPI, ASGI, any class) runs under uvicorn. A class keeps one process so that
    its methods share instance state, as on Modal; its WSGI methods are bridged to ASGI there."""
    if len(endpoints) == 1 and "." not in endpoints[0].name:
        kind = endpoints[0].kind
        if kind == "wsgi":
            return "gunicorn"
        if kind == "web_server":
            return "web_server"
    return "uvicorn"
