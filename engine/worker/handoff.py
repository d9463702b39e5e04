"""The replica's side of `engine/gateway/handoff.py`: connections to its port, handed to the gateway.

For each connection on a listening Unix socket, connect to 127.0.0.1:PORT (inside the replica's network
namespace: the port of its own web server) and send that socket over the Unix connection (SCM_RIGHTS),
then close our copies. When nothing accepts on the port, the Unix connection is closed without one and
the gateway sees a refused connection, as it would on the host's network. One thread, one accept at a
time: a loopback connect takes microseconds, and the gateway keeps its connections alive.
"""

from __future__ import annotations

import contextlib
import socket
import threading

CONNECT_TIMEOUT_S = 5.0


class Handoff:
    def __init__(self, sock: socket.socket, port: int) -> None:
        self.sock = sock  # a listening Unix socket
        self.port = port
        self.handed = 0  # connections handed over so far
        self._thread = threading.Thread(target=self._run, name=f"handoff:{port}", daemon=True)

    def start(self) -> None:
        self.sock.setblocking(True)
        self._thread.start()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # stopped
            with conn:
                try:
                    up = socket.create_connection(("127.0.0.1", self.port), timeout=CONNECT_TIMEOUT_S)
                except OSError:
                    continue  # closed without a socket: refused
                with up, contextlib.suppress(OSError):  # the gateway gave up meanwhile
                    socket.send_fds(conn, [b"1"], [up.fileno()])
                    self.handed += 1
