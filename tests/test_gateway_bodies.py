"""Request bodies through the gateway, over raw sockets: a body up to --buffer-body is gathered in the
gateway before a replica is taken (a slow or stalled upload pins nothing and is no load), a larger one
streams as it comes, a body that stops arriving gets 408 after --body-timeout, and the gateway answers
`Expect: 100-continue` itself for a body it gathers.

The endpoints here have one replica taking one request at a time (max_inputs=1): a request that held
its slot would keep every other one waiting. Every wait is bounded; nothing depends on how fast
anything is.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from mwtui.engine.gateway.limits import Limits, add_arguments

from .eventually import eventually
from .fixtures.gateway_harness import (
    TIMEOUT,
    Gateway,
    Upstream,
    endpoint,
    final_status,
    raw_exchange,
    running_gateway,
    up,
)
from .fixtures.gateway_harness import unix_upstream as unix_upstream_at

pytestmark = pytest.mark.timeout(90)

HOST = b"demo-hello.localhost"
GOOD = b"GET /echo/good HTTP/1.1\r\nHost: demo-hello.localhost\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with unix_upstream_at(tmp_path_factory.mktemp("up") / "replica.sock") as u:
        yield u


def connect(g: Gateway) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", g.port), timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each piece of a body goes when sent
    return s


def read_until(s: socket.socket, done: Callable[[bytes], bool]) -> bytes:
    got = b""
    while not done(got):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def read_to_end(s: socket.socket) -> bytes:
    """Everything until the gateway closes (a reset after its answer counts as the end)."""
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := s.recv(65536):
            got += chunk
    return got


def got_continue(s: socket.socket) -> bytes:
    got = read_until(s, lambda b: b"\r\n\r\n" in b)
    assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), got[:300]
    return got


def post_head(length: int, expect: bool = False, path: bytes = b"/echo") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: " + HOST + b"\r\nContent-Length: %d\r\n" % length
            + (b"Expect: 100-continue\r\n" if expect else b"") + b"\r\n")


def chunked_head(expect: bool = False) -> bytes:
    return (b"POST /echo HTTP/1.1\r\nHost: " + HOST + b"\r\nTransfer-Encoding: chunked\r\n"
            + (b"Expect: 100-continue\r\n" if expect else b"") + b"\r\n")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def live(g: Gateway) -> tuple[int, int]:
    """The endpoint's requests (in flight, of which waiting for a replica), as the gateway counts them."""
    e = next(e for e in g.api() if e["name"] == "hello")
    return int(e["inflight"]), int(e["queued"])


@contextlib.contextmanager
def in_background(fn: Callable[[], bytes]) -> Iterator[list[bytes]]:
    """Run `fn` in a thread; the list holds its result once the block has ended."""
    out: list[bytes] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    try:
        yield out
    finally:
        t.join(TIMEOUT * 2)


# ----------------------------------------------------------------------------- gathered: pins nothing
def test_a_stalled_small_body_pins_no_replica_and_gets_408(replica: Upstream) -> None:
    """The adversarial run's slow uploads: headers with Content-Length 1000, then half the body, then
    nothing. The one replica (max_inputs=1) serves another client meanwhile; each stalled one gets 408
    after --body-timeout and is closed."""
    # hold_s=3: a request that found the replica pinned would get its 503 after 3 s, not wait on.
    with running_gateway("--body-timeout", "1", upstreams=[replica], max_inputs=1, hold_s=3) as g:
        with connect(g) as plain, connect(g) as expecting:
            plain.sendall(post_head(1000) + b"x" * 500)
            # The same shape asking to continue: its 100 proves the gateway has taken the request (and,
            # had it given it the replica then, the replica's one slot would be gone).
            expecting.sendall(post_head(1000, expect=True))
            got_continue(expecting)
            expecting.sendall(b"y" * 500)

            other = raw_exchange(g.port, GOOD)
            assert final_status(other) == 200 and b'"/echo/good"' in other, other[:300]

            for s in (plain, expecting):
                rest = read_to_end(s)
                assert final_status(rest) == 408 and b"--body-timeout" in rest, rest[:300]
                assert b"connection: close" in rest.lower()
        # Neither reached a replica, so neither counts as a request of the endpoint's.
        assert g.metrics_where("hello", lambda m: m["requests_total"] >= 1)["inflight"] == 0
        assert final_status(raw_exchange(g.port, GOOD)) == 200


def test_a_small_chunked_body_is_gathered_until_it_outgrows_the_buffer(replica: Upstream) -> None:
    """Chunked, the size is unknown: gathered while under --buffer-body (no replica taken), streamed
    from the moment it outgrows it (the replica taken, so the next request waits its turn)."""
    with running_gateway("--buffer-body", "1k", upstreams=[replica], max_inputs=1) as g:
        with connect(g) as s:
            s.sendall(chunked_head(expect=True))
            got_continue(s)  # no replica is needed to take a body the gateway keeps
            s.sendall(chunk(b"a" * 600))
            assert final_status(raw_exchange(g.port, GOOD)) == 200  # 600 bytes so far: nothing pinned

            s.sendall(chunk(b"b" * 600))  # 1200 > 1k: off to the replica, the rest streams after it
            eventually(lambda: live(g) == (1, 0), TIMEOUT, "the chunked request on the replica")
            with in_background(lambda: raw_exchange(g.port, GOOD)) as other:
                eventually(lambda: live(g) == (2, 1), TIMEOUT, "the next request waiting for the busy replica")
                s.sendall(chunk(b"c" * 600) + b"0\r\n\r\n")
                got = read_until(s, lambda b: b'"client"' in b)
            assert final_status(got) == 200 and b'"body_len":1800' in got, got[:300]
            assert b'"body_head":"' + b"a" * 200 + b'"' in got
        assert other and final_status(other[0]) == 200


def test_100_continue_comes_from_the_gateway_while_the_pool_is_at_zero(replica: Upstream) -> None:
    """With no replica at all, the gateway asks for the body itself, and the request does not wake the
    pool until its body is whole; then it waits for a replica as any request does."""
    with running_gateway(upstreams=[], state="starting", max_inputs=1) as g:
        with connect(g) as s:
            s.sendall(post_head(500, expect=True))
            got_continue(s)
            # Events are written in order: once the gateway acknowledges routes sent after the 100
            # went out, any wake the held request caused would be among the events before it.
            g.send({"type": "routes", "seq": 7, "endpoints": [endpoint(state="starting", max_inputs=1)]})
            g.wait_event(lambda e: e["type"] == "routes_applied" and e["seq"] == 7)
            assert not [e for e in g.events if e["type"] == "wake"], g.events

            s.sendall(b"z" * 500)  # now it is a request: it wakes the pool and waits for a replica
            g.wait_event(lambda e: e["type"] == "wake" and e["endpoint"] == "hello")
            g.routes(endpoint(upstreams=[up(replica)], max_inputs=1))
            got = read_until(s, lambda b: b'"client"' in b)
        # No second 100 when it reaches the replica: the answer follows the one 100 directly.
        assert got.startswith(b"HTTP/1.1 200 ") and b'"body_len":500' in got, got[:300]


def test_pipelined_bodies_are_answered_in_order(replica: Upstream) -> None:
    """A gathered request behind another one on its connection takes its turn: answered after the
    first, once its body is whole."""
    with running_gateway("--buffer-body", "1k", upstreams=[replica], max_inputs=1) as g:
        with connect(g) as s:
            s.sendall(post_head(3, path=b"/echo/1") + b"one" + post_head(600, path=b"/echo/2") + b"t" * 300)
            first = read_until(s, lambda b: b'"client"' in b)
            assert final_status(first) == 200 and b'"/echo/1"' in first and b'"body_len":3' in first, first[:300]
            s.sendall(b"t" * 300)
            second = read_until(s, lambda b: b'"client"' in b)
        assert final_status(second) == 200 and b'"/echo/2"' in second and b'"body_len":600' in second, second[:300]


# ----------------------------------------------------------------------------- larger bodies stream
def test_a_body_over_the_buffer_streams_to_the_replica(replica: Upstream) -> None:
    """Over --buffer-body the request takes its replica at once and its body follows as it comes: the
    replica is busy with it (the next request waits) before the body is whole, and gets all of it."""
    with running_gateway("--buffer-body", "1k", upstreams=[replica], max_inputs=1) as g:
        with connect(g) as s:
            s.sendall(post_head(5000, expect=True))
            got_continue(s)  # sent once the replica is reachable, as before
            s.sendall(b"p" * 2000)
            with in_background(lambda: raw_exchange(g.port, GOOD)) as other:
                eventually(lambda: live(g) == (2, 1), TIMEOUT, "the next request waiting for the busy replica")
                s.sendall(b"q" * 3000)
                got = read_until(s, lambda b: b'"client"' in b)
            assert final_status(got) == 200 and b'"body_len":5000' in got, got[:300]
        assert other and final_status(other[0]) == 200


def test_a_stalled_streamed_body_gets_408_and_frees_the_replica(replica: Upstream) -> None:
    """A body over --buffer-body already holds a replica when it stalls: after --body-timeout the
    client gets 408, the replica sees its client go, and the request waiting for it is served."""
    with running_gateway("--buffer-body", "1k", "--body-timeout", "1", upstreams=[replica], max_inputs=1,
                 hold_s=30) as g:
        with connect(g) as s:
            s.sendall(post_head(5000, expect=True))
            got_continue(s)
            s.sendall(b"p" * 2000)
            with in_background(lambda: raw_exchange(g.port, GOOD)) as other:
                eventually(lambda: live(g) == (2, 1), TIMEOUT, "the next request waiting for the busy replica")
                rest = read_to_end(s)
            assert final_status(rest) == 408 and b"--body-timeout" in rest, rest[:300]
        assert other and final_status(other[0]) == 200 and b'"/echo/good"' in other[0]
        # Both were the endpoint's requests (the 408 one reached its replica); none is left in flight.
        assert g.metrics_where("hello", lambda m: m["requests_total"] == 2)["inflight"] == 0


# ----------------------------------------------------------------------------- the flags
def _parse(*argv: str) -> Limits:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return Limits.from_args(parser.parse_args(list(argv)))


def test_body_flags_defaults_and_validation() -> None:
    d = Limits()
    assert (d.buffer_body, d.body_timeout) == (64 * 1024, 60.0)
    assert _parse("--buffer-body", "1M", "--body-timeout", "2.5").argv() == [
        "--buffer-body", str(1 << 20), "--body-timeout", "2.5"]
    assert _parse("--buffer-body", "0").buffer_body == 0  # every body streams
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(SystemExit):
            _parse("--body-timeout", bad)
