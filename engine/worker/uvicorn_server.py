"""Serving FastAPI and ASGI endpoints (and a class's WSGI methods, bridged) with uvicorn on a unix socket.

Uvicorn is driven programmatically on our own event loop: lifespan off (we drive each app's lifespan,
see lifespan.py), no access log (the gateway logs access), warning-level logs, and its signal capture
disabled, because the replica owns SIGTERM/SIGINT and must run lifespan shutdowns and `@exit` after
uvicorn has drained.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Generator

import uvicorn

from .lifespan import ASGIApp
from .listen import GRACEFUL_SECONDS, KEEPALIVE_SECONDS


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Uvicorn would re-raise a captured SIGTERM after serving, killing us before `@exit`.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            self._on_started()


def make_server(app: ASGIApp, on_started: Callable[[], None]) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        lifespan="off",
        access_log=False,
        log_level="warning",
        http="httptools",
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        timeout_keep_alive=KEEPALIVE_SECONDS,
        # Only the gateway reaches this socket: trust its X-Forwarded-For/-Proto, so that the app
        # sees the real client, as behind Modal's edge.
        proxy_headers=True,
        forwarded_allow_ips="*",
        server_header=False,
    )
    return _Server(config, on_started)
