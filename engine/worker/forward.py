"""`--listen tcp:…` for a pool whose only server is the user's own (`@modal.web_server(port)`).

In a container the one port is `$PORT`. When it is the web server's own port, the user's server already
listens there and there is nothing to do; otherwise this relays each TCP connection from the listening
socket to 127.0.0.1:port, byte for byte (HTTP, streaming, WebSocket alike), in a daemon thread with its
own event loop, so that the replica's main thread keeps waiting for a stop as it does now.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close: the other side may still be answering
    except (ConnectionError, OSError):
        writer.close()


class Forwarder:
    def __init__(self, sock: socket.socket, port: int) -> None:
        self.sock = sock
        self.port = port
        self.loop = asyncio.new_event_loop()
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
            server = self.loop.run_until_complete(asyncio.start_server(self._handle, sock=self.sock))
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

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            client_w.close()  # nothing listens (any more): the client sees a reset, as it would
            return
        try:
            await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
        finally:
            for w in (up_w, client_w):
                w.close()
