"""Request smuggling through the gateway's own header handling, against a pooled upstream connection.

A client controls which headers `Connection` names as hop-by-hop. If the gateway dropped a framing or
routing header because of it (Content-Length, Transfer-Encoding, Host) while still forwarding the body
as it came, the replica would read the body as a second request on the shared keep-alive connection:
a head of the attacker's choosing (here one naming a proxy-auth method with X-Mwtui-Endpoint), whose
response would then go to the next client of that connection. The gateway refuses such a request with
400: nothing of it reaches the replica, and no other client sees anything but its own answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from .fixtures.gateway_harness import Gateway, Upstream, endpoint, final_status, raw_exchange, up
from .fixtures.gateway_harness import tcp_upstream as tcp_upstream_cm

pytestmark = pytest.mark.timeout(60)

HOST = b"demo-hello.localhost"
SMUGGLED = (b"GET /echo/private HTTP/1.1\r\nHost: demo-hello.localhost\r\n"
            b"X-Mwtui-Endpoint: Secure.private\r\n\r\n")


@pytest.fixture(scope="module")
def replica() -> Iterator[Upstream]:
    with tcp_upstream_cm() as u:  # TCP: the gateway keeps pooled keep-alive connections to it
        yield u


@pytest.fixture
def gw(replica: Upstream) -> Iterator[Gateway]:
    g = Gateway().started()
    try:
        g.routes(endpoint(upstreams=[up(replica, "web.0", dispatch="Public.web")]))
        yield g
    finally:
        g.close()


def answered(raw: bytes) -> bool:
    """A whole response with a Content-Length has arrived (the connection may stay open)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(body) >= int(line.partition(b":")[2])
    return False


def seen_by_replica(replica: Upstream) -> list[str]:
    with replica.client() as c:
        return c.get("/seen").json()


def pooled_peers(gw: Gateway, n: int) -> tuple[set[tuple[str, int]], list[str]]:
    """`n` ordinary requests, each on a new client connection: the replica connections that served
    them, and every body the clients got."""
    peers, bodies = set(), []
    for _ in range(n):
        r = gw.get("demo-hello.localhost", "/echo/next")
        bodies.append(r.text)
        assert r.status_code == 200 and r.json()["path"] == "/echo/next", r.text
        peers.add(tuple(r.json()["client"]))
    return peers, bodies


@pytest.mark.parametrize("connection", [b"content-length", b"Content-Length", b"keep-alive, content-length",
                                        b"close,CONTENT-LENGTH "])
def test_connection_naming_content_length_is_refused(gw: Gateway, replica: Upstream, connection: bytes) -> None:
    before, _ = pooled_peers(gw, 2)  # a pooled connection to the replica now exists
    attack = (b"POST /echo HTTP/1.1\r\nHost: " + HOST + b"\r\nConnection: " + connection + b"\r\n"
              b"Content-Length: %d\r\n\r\n" % len(SMUGGLED)) + SMUGGLED
    got = raw_exchange(gw.port, attack, until=answered)
    assert final_status(got) == 400 and b"Connection" in got, got[:300]
    assert b"/echo/private" not in got
    after, bodies = pooled_peers(gw, 4)
    assert after & before, "the pooled replica connection was still in use"
    assert not any("/echo/private" in b for b in bodies), "a poisoned response reached another client"
    assert "/echo/private" not in seen_by_replica(replica), "the smuggled request reached the replica"


def test_connection_naming_transfer_encoding_is_refused(gw: Gateway, replica: Upstream) -> None:
    body = b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    got = raw_exchange(gw.port, b"POST /echo HTTP/1.1\r\nHost: " + HOST + b"\r\nConnection: transfer-encoding\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n" + body, until=answered)
    assert final_status(got) == 400, got[:300]
    _, bodies = pooled_peers(gw, 3)
    assert not any("/echo/private" in b for b in bodies)
    assert "/echo/private" not in seen_by_replica(replica)


def test_connection_naming_host_is_refused(gw: Gateway) -> None:
    got = raw_exchange(gw.port, b"GET /echo/hostless HTTP/1.1\r\nHost: " + HOST + b"\r\nConnection: host\r\n\r\n",
                       until=answered)
    assert final_status(got) == 400, got[:300]
    # The ordinary case still carries its Host to the replica.
    echo = json.loads(raw_exchange(gw.port, b"GET /echo HTTP/1.1\r\nHost: " + HOST + b"\r\n"
                                            b"Connection: close, x-hop\r\nX-Hop: 1\r\n\r\n").partition(b"\r\n\r\n")[2])
    names = {k.lower(): v for k, v in echo["headers"]}
    assert names["host"] == HOST.decode() and "x-hop" not in names


@pytest.mark.parametrize("te", [b"gzip, chunked", b"identity, chunked", b"chunked\r\nTransfer-Encoding: chunked"])
def test_only_plain_chunked_is_forwarded(gw: Gateway, replica: Upstream, te: bytes) -> None:
    """The gateway frames a chunked body itself; a transfer coding it would pass on unread (gzip) or a
    repeated header is refused as nginx does (501), never forwarded for the replica to read its way."""
    got = raw_exchange(gw.port, b"POST /echo HTTP/1.1\r\nHost: " + HOST + b"\r\nTransfer-Encoding: " + te
                                + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n", until=answered)
    assert final_status(got) in (400, 501), got[:300]
    ok = raw_exchange(gw.port, b"POST /echo HTTP/1.1\r\nHost: " + HOST + b"\r\nTransfer-Encoding: Chunked\r\n"
                               b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert final_status(ok) == 200 and json.loads(ok.partition(b"\r\n\r\n")[2])["body_len"] == 5


def test_forged_dispatch_header_never_reaches_the_replica(gw: Gateway) -> None:
    r = httpx.get(f"http://127.0.0.1:{gw.port}/echo", headers={
        "Host": "demo-hello.localhost", "X-Mwtui-Endpoint": "Secure.private", "Connection": "x-mwtui-endpoint"})
    values = [v for k, v in r.json()["headers"] if k.lower() == "x-mwtui-endpoint"]
    assert values == ["Public.web"]


def test_underscored_names_of_our_headers_are_dropped(gw: Gateway) -> None:
    """A WSGI bridge (a2wsgi) maps `X_Forwarded_Proto` onto the same environ key as X-Forwarded-Proto:
    a client must not spell its way around the headers the gateway sets."""
    r = httpx.get(f"http://127.0.0.1:{gw.port}/echo", headers={
        "Host": "demo-hello.localhost", "X_Forwarded_Proto": "https", "X_Mwtui_Endpoint": "Secure.private",
        "Content_Length": "5", "X_Custom_Thing": "kept"})
    names = [k.lower() for k, _ in r.json()["headers"]]
    assert "x_custom_thing" in names
    for gone in ("x_forwarded_proto", "x_mwtui_endpoint", "content_length"):
        assert gone not in names, gone
