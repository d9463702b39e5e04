"""`--listen tcp:…` for a pool whose only server is the user's own (`@modal.web_server(port)`).

In a container the one port is `$PORT`. When it is the web server's own port, the user's server already
listens there and there is nothing to do; otherwise this relays each TCP connection from the listening
socket to 127.0.0.1:port, byte for byte (HTTP, streaming, WebSocket alike), in a daemon thread with its
own event loop, so that the replica's main thread keeps waiting for a stop as it does now.

The same relay bridges the gateway's Unix socket to a web_server's port in a network of its own
(network.py), where it is on every request's path: so it is built on transports and protocols (each
side's data written straight to the other's transport, no stream objects or tasks per chunk) on uvloop
where installed: about half the CPU per request of asyncio streams on the default loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from typing import Any

UPSTREAM_HOST = "127.0.0.1"


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


class _Link:
    """One relayed connection: the two transports, and which directions have ended."""

    def __init__(self) -> None:
        self.eofs = 0
        self.closed = False
        self.sides: list[_Side] = []

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for side in self.sides:
            if side.transport is not None:
                side.transport.close()  # sends what is still buffered, then closes


class _Side(asyncio.Protocol):
    """One end of a relayed connection: what it receives is written to its peer's transport."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        link.sides.append(self)
        self.transport: Any = None  # asyncio.Transport once connected
        self.peer: _Side | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio sets it only where `proto` says TCP, which an accepted socket's does not: without it
            # Nagle and delayed ACKs hold each keep-alive answer ~40 ms (--listen tcp relaying).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.peer.transport.write(data)  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        # Half-close: pass the end on; the other direction may still be answering.
        assert self.peer is not None
        link = self.link
        link.eofs += 1
        if link.eofs == 2:
            link.close()
        elif self.peer.transport.can_write_eof():
            self.peer.transport.write_eof()
        else:
            link.close()
        return True  # keep our own side open for writing

    def pause_writing(self) -> None:
        # Our transport's buffer is full: stop reading what fills it.
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.close()


class _Client(_Side):
    """The accepted end: it connects its upstream, and keeps what arrives until that is done (uvloop
    may deliver data even when reading is paused in `connection_made`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int) -> None:
        super().__init__(_Link())
        self.loop = loop
        self.port = port
        self.early: list[bytes] = []
        self.early_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        transport.pause_reading()  # type: ignore[attr-defined]
        self.loop.create_task(self._connect())

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.early.append(data)
        else:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        if self.peer is None:
            self.early_eof = True
            return True
        return super().eof_received()

    async def _connect(self) -> None:
        upstream = _Side(self.link)
        try:
            await self.loop.create_connection(lambda: upstream, UPSTREAM_HOST, self.port)
        except OSError:
            self.link.close()  # nothing listens (any more): the client sees the connection end, as it would
            return
        if self.link.closed:  # the client went away meanwhile
            upstream.transport.close()
            return
        self.peer, upstream.peer = upstream, self
        for data in self.early:
            upstream.transport.write(data)
        self.early.clear()
        if self.early_eof:
            self.eof_received()
        else:
            self.transport.resume_reading()


class Forwarder:
    def __init__(self, sock: socket.socket, port: int) -> None:
        self.sock = sock
        self.port = port
        self.loop = _new_loop()
        self._thread = threading.Thread(target=self._run, name=f"forward:{port}", daemon=True)
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        """Return once the relay accepts connections; raise what stopped it from starting."""
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            server = self.loop.run_until_complete(
                self.loop.create_server(lambda: _Client(self.loop, self.port), sock=self.sock))
        except BaseException as e:  # noqa: BLE001 - handed to start()'s caller
            self._error = e
            self._started.set()
            return
        self._started.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()
            self.loop.close()
