"""One socket for all of a class's web methods: the gateway names the endpoint in a header.

A class replica is one process (so that its methods share the instance, as on Modal) and listens on
one unix socket; the gateway adds `x-mwtui-endpoint: MyAPI.web` to each request. The header is
removed before the method's app sees the request.

With `--listen tcp:…` (a container: no gateway in front) a request may come without the header. Then,
in order: the original Host (`K-Original-Host`, which Knative sets when a DomainMapping rewrites Host,
then `X-Forwarded-Host`, then `Host`) matching a method's custom domain, or whose first DNS label is a
method's label; else the class's first web method, in definition order.
"""

from __future__ import annotations

from .lifespan import ASGIApp, Receive, Scope, Send

HEADER = b"x-mwtui-endpoint"  # servers hand ASGI apps lower-cased header names
HOST_HEADERS = (b"k-original-host", b"x-forwarded-host", b"host")


class Dispatcher:
    def __init__(
        self,
        apps: dict[str, ASGIApp],
        *,
        hosts: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        default: str | None = None,
    ) -> None:
        self.apps = apps
        self._known = ", ".join(apps)
        # Only without a gateway (tcp mode): custom domain / label -> endpoint name, and the fallback.
        self.hosts = {h.lower().rstrip("."): n for h, n in (hosts or {}).items()}
        self.labels = {label.lower(): n for label, n in (labels or {}).items()}
        self.default = default

    def by_host(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        values: dict[bytes, bytes] = {}
        for key, value in headers:
            values.setdefault(key, value)  # the first of each: these are single-valued
        for key in HOST_HEADERS:
            raw = values.get(key)
            if not raw:
                continue
            host = raw.decode("latin-1").split(",")[0].strip().lower()
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host  # drop the port
            host = host.rstrip(".")
            name = self.hosts.get(host) or self.labels.get(host.split(".", 1)[0])
            if name is not None:
                return name
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return  # each method's lifespan is driven on its own (see lifespan.py)
        name: str | None = None
        for key, value in scope["headers"]:
            if key == HEADER:
                name = value.decode("latin-1")
                break
        if name is None and (self.default is not None or self.hosts or self.labels):
            name = self.by_host(scope["headers"])
        app = self.apps.get(name) if name is not None else None
        if app is None:
            await self._not_found(scope, send, name)
            return
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != HEADER]
        await app(scope, receive, send)

    async def _not_found(self, scope: Scope, send: Send, name: str | None) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        asked = f"no endpoint `{name}` here" if name is not None else f"missing {HEADER.decode()} header"
        body = f"mwtui: {asked}; this replica serves: {self._known}\n".encode()
        await send({
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body})
