"""Connections handed over by a replica (engine/worker/handoff.py -> engine/gateway/handoff.py): the
gateway talks to the replica's server itself, over a TCP socket the replica connected and sent it.

Tested on the host's network (a handoff does not need a namespace): a real gateway, a real uvicorn,
the `netns:` upstream between them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine.gateway import handoff as gateway_handoff
from engine.worker.handoff import Handoff

from .fixtures.gateway_harness import Upstream, running_gateway, tcp_upstream


@contextmanager
def handing_off(path: Path, port: int) -> Iterator[Handoff]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(64)
    h = Handoff(sock, port)
    h.start()
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture
def server() -> Iterator[Upstream]:
    with tcp_upstream() as u:
        yield u


def _port(u: Upstream) -> int:
    return int(u.address.rpartition(":")[2])


def test_the_gateway_serves_through_handed_over_connections(server: Upstream, tmp_path: Path) -> None:
    path = tmp_path / "r.port.sock"
    with handing_off(path, _port(server)) as h:
        handed = Upstream(f"netns:{path}", server.proc)
        with running_gateway(upstreams=[handed]) as g, g.client("demo-hello.localhost") as c:
            for i in range(20):
                r = c.post("/echo", content=f"body {i}".encode())
                assert r.status_code == 200 and r.json()["body_head"] == f"body {i}"
        assert h.handed == 1  # kept alive: one handoff, then the gateway's own connection


def test_nothing_on_the_port_is_a_refused_connection(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        path = tmp_path / "r.port.sock"
        with handing_off(path, port):
            loop = asyncio.new_event_loop()
            try:
                with pytest.raises(ConnectionRefusedError, match="the replica's port refused a connection"):
                    loop.run_until_complete(gateway_handoff.receive(loop, str(path)))
            finally:
                loop.close()


def test_a_handed_socket_is_a_plain_tcp_connection(server: Upstream, tmp_path: Path) -> None:
    path = tmp_path / "r.port.sock"
    with handing_off(path, _port(server)):
        loop = asyncio.new_event_loop()
        try:
            sock = loop.run_until_complete(gateway_handoff.receive(loop, str(path)))
        finally:
            loop.close()
        with sock:
            assert sock.type == socket.SOCK_STREAM and sock.family == socket.AF_INET
            assert sock.getpeername() == ("127.0.0.1", _port(server))
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
