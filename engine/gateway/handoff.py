"""Connections a replica hands over from a network namespace of its own (engine/worker/handoff.py).

A `web_server` replica with a network of its own listens on its fixed port inside its namespace, where
the gateway cannot connect. It listens on a Unix socket (`netns:/path.sock`) instead; for each connection
there it connects to its port inside and sends that TCP socket back (SCM_RIGHTS). The gateway then talks
to the replica's server directly, as to any TCP upstream: nothing relays the bytes. Only a new upstream
connection comes this way (the gateway keeps them alive), so this stays out of the compiled hot path.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket


async def receive(loop: asyncio.AbstractEventLoop, path: str) -> socket.socket:
    """A connected TCP socket to the replica's port, from the replica listening at `path`."""
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        u.setblocking(False)
        await loop.sock_connect(u, path)
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(u, 1, 1)
                break
            except (BlockingIOError, InterruptedError):
                await _readable(loop, u)
    finally:
        u.close()
    if not fds:  # the replica closed without one: nothing accepts on its port (any more)
        raise ConnectionRefusedError(errno.ECONNREFUSED, f"the replica's port refused a connection (via {path})")
    for extra in fds[1:]:
        os.close(extra)
    sock = socket.socket(fileno=fds[0])
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())
