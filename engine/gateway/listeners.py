"""The gateway's sockets: the main listener (routing by Host), and one per endpoint that asks for a
port of its own (`MWTUI_PORT_<LABEL>`), bound, moved or closed to match each new table."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

from ..ports import port_holder
from .client import ClientConn

if TYPE_CHECKING:
    from .server import Gateway

OWN_PORT_TRIES: Final = 20  # a busy own port: the next ones up are tried, then any


def sockets(server: asyncio.Server) -> Any:
    """uvloop gives a list where typeshed says tuple: read it untyped (compiled, a wrong declared
    type is a TypeError)."""
    return cast(Any, server).sockets


class OwnListener:
    __slots__ = ("requested", "port", "server")

    def __init__(self, requested: int, port: int, server: asyncio.Server) -> None:
        self.requested = requested
        self.port = port
        self.server = server


class Listeners:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.own: dict[str, OwnListener] = {}
        self._lock = asyncio.Lock()
        self._again = False

    def ports(self) -> dict[str, int]:
        """Endpoint -> the port it actually has."""
        return {name: o.port for name, o in self.own.items()}

    def factory(self, endpoint: str | None) -> Callable[[], ClientConn]:
        gw = self.gw
        return lambda: ClientConn(gw, endpoint)

    async def listen_main(self, port: int) -> asyncio.Server:
        gw = self.gw
        server = await gw.loop.create_server(self.factory(None), gw.host, port, backlog=2048)
        gw.port = sockets(server)[0].getsockname()[1]
        return server

    async def reconcile(self) -> None:
        """Bind, move or close endpoints' own listeners to match the table; report what changed."""
        if self._lock.locked():
            self._again = True  # the run in progress will look again
            return
        async with self._lock:
            changed = False
            warnings: list[str] = []
            while True:
                self._again = False
                desired = {ep.name: ep.port for ep in self.gw.table.endpoints.values() if ep.port}
                for name in list(self.own):
                    if desired.get(name) != self.own[name].requested:
                        self.own.pop(name).server.close()
                        changed = True
                for name, port in desired.items():
                    if name in self.own:
                        continue
                    listener, warning = await self._bind(name, port)
                    if warning:
                        warnings.append(warning)
                    if listener is not None:
                        self.own[name] = listener
                    changed = True
                if not self._again:
                    break
            if changed or warnings:
                control = self.gw.control
                assert control is not None
                control.emit({"type": "ports", "endpoints": self.ports(), "warnings": warnings})

    async def _bind(self, name: str, port: int) -> tuple[OwnListener | None, str | None]:
        gw = self.gw
        tries = [port] + [p for p in range(port + 1, port + 1 + OWN_PORT_TRIES) if p < 65536] + [0]
        first_error: OSError | None = None
        for candidate in tries:
            try:
                server = await gw.loop.create_server(self.factory(name), gw.host, candidate, backlog=1024)
            except OSError as e:
                first_error = first_error or e
                continue
            actual = sockets(server)[0].getsockname()[1]
            warning = None
            if candidate != port:
                assert first_error is not None
                if first_error.errno == errno.EADDRINUSE:
                    why = f"is busy (held by {port_holder(port)})"
                else:
                    why = f"cannot be used ({first_error.strerror or first_error})"
                warning = f"port {port} for {name} {why}; using {actual}"
            return OwnListener(port, actual, server), warning
        return None, f"no port could be opened for {name}: {first_error}"

    def close(self) -> None:
        for listener in self.own.values():
            listener.server.close()
