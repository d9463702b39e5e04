"""One socket for all of a class's web methods: the gateway names the endpoint in a header.

A class replica is one process (so that its methods share the instance, as on Modal) and listens on
one unix socket; the gateway adds `x-mwtui-endpoint: MyAPI.web` to each request. The header is
removed before the method's app sees the request.
"""

from __future__ import annotations

from .lifespan import ASGIApp, Receive, Scope, Send

HEADER = b"x-mwtui-endpoint"  # servers hand ASGI apps lower-cased header names


class Dispatcher:
    def __init__(self, apps: dict[str, ASGIApp]) -> None:
        self.apps = apps
        self._known = ", ".join(apps)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return  # each method's lifespan is driven on its own (see lifespan.py)
        name: str | None = None
        for key, value in scope["headers"]:
            if key == HEADER:
                name = value.decode("latin-1")
                break
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
