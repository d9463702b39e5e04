"""The gateway process, end to end: a real `python -m mwtui.engine.gateway` in front of real uvicorn.

Each test starts its own gateway on an ephemeral port and drives it as mwtui does, through JSON lines
on stdin, reading its events on stdout. The upstream replicas (uvicorn on a Unix socket and on TCP)
are shared by the module. Waits are bounded; no assertion depends on how fast anything is.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mwtui.engine.gateway_link import GatewayLink
from mwtui.engine.lifeline import Lifeline
from mwtui.engine.tokens import TokenStore
from websockets.sync.client import connect as ws_connect

from .eventually import eventually, eventually_async
from .fixtures.gateway_harness import (
    TIMEOUT,
    Gateway,
    Upstream,
    endpoint,
    free_port,
    headers_of,
    raw_exchange,
    up,
)
from .fixtures.gateway_harness import tcp_upstream as tcp_upstream_cm

pytestmark = pytest.mark.timeout(60)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tcp_upstream() -> Iterator[Upstream]:
    with tcp_upstream_cm() as u:
        yield u


# ----------------------------------------------------------------------------- routing
def test_host_routing_ignores_case_and_port(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(unix_upstream)]))
    for host in ("demo-hello.localhost", "Demo-Hello.LOCALHOST:12345", f"demo-hello.localhost:{gw.port}"):
        r = gw.get(host, "/echo?x=1")
        assert r.status_code == 200, host
        assert r.json()["path"] == "/echo" and r.json()["query"] == "x=1"
        assert headers_of(r.json())["host"] == [host]


def test_custom_domain(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(domains=["api.example.com"], upstreams=[up(unix_upstream)]))
    assert gw.get("API.Example.com:8080").status_code == 200
    assert gw.get("other.example.com").status_code == 404


def test_unknown_host_lists_labels(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(unix_upstream)]), endpoint("web", "demo-web", upstreams=[up(unix_upstream)]))
    r = gw.get("nope.localhost")
    assert r.status_code == 404
    assert "demo-hello" in r.text and "demo-web" in r.text
    assert f"http://demo-hello.localhost:{gw.port}" in r.text


def test_own_port_takes_our_hosts_and_busy_port_moves(gw: Gateway, unix_upstream: Upstream) -> None:
    wanted = free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    busy = blocker.getsockname()[1]
    try:
        gw.routes(
            endpoint(port=wanted, upstreams=[up(unix_upstream)]),
            endpoint("web", "demo-web", port=busy, upstreams=[up(unix_upstream, "web.0")]),
        )
        ev = gw.wait_event(lambda e: e["type"] == "ports" and len(e["endpoints"]) == 2)
        assert ev["endpoints"]["hello"] == wanted
        moved = ev["endpoints"]["web"]
        assert moved != busy
        assert any(str(busy) in w and "web" in w and "busy" in w and str(moved) in w for w in ev["warnings"])
        for port in (wanted, moved):
            # Any local name, IP address, label or custom domain, whichever endpoint it names
            for host in ("anything.localhost", "localhost:1", "10.1.2.3:80", "[::1]", "demo-web.localhost"):
                r = httpx.get(f"http://127.0.0.1:{port}/echo", headers={"Host": host}, timeout=TIMEOUT)
                assert r.status_code == 200, (port, host)
                assert headers_of(r.json())["host"] == [host]
            # A foreign name (a page whose DNS rebinds to 127.0.0.1) is refused before any user code
            r = httpx.get(f"http://127.0.0.1:{port}/echo", headers={"Host": "anything.example"}, timeout=TIMEOUT)
            assert r.status_code == 403 and "--allow-host" in r.text
        # mwtui's own pages live on the main port only: on an own port "/" is the endpoint's
        assert httpx.get(f"http://127.0.0.1:{wanted}/api/endpoints", timeout=TIMEOUT).status_code == 404
    finally:
        blocker.close()


def test_pages_index_api_and_metrics(gw: Gateway, unix_upstream: Upstream) -> None:
    port = free_port()
    gw.routes(endpoint(domains=["api.example.com"], port=port, upstreams=[up(unix_upstream)]))
    gw.wait_event(lambda e: e["type"] == "ports" and e["endpoints"].get("hello") == port)
    gw.send({"type": "status", "endpoints": [{
        "name": "hello", "label": "demo-hello", "kind": "fastapi", "url": f"http://demo-hello.localhost:{gw.port}",
        "state": "running", "replicas": {"ready": 1, "starting": 0, "desired": 1, "min": 0, "max": None},
        "cpu_percent": 0.5, "rss_bytes": 12345, "last_error": None,
    }]})
    eventually(lambda: gw.api()[0].get("kind") == "fastapi", TIMEOUT, "status applied")
    for _ in range(2):
        assert gw.get("demo-hello.localhost").status_code == 200
    assert gw.get("demo-hello.localhost", "/nothing-here").status_code == 404

    [obj] = gw.api()
    assert obj["kind"] == "fastapi" and obj["cpu_percent"] == 0.5 and obj["rss_bytes"] == 12345
    assert obj["requests_total"] == 3 and obj["errors_total"] == 0 and obj["inflight"] == 0
    for key in ("rps", "p50_ms", "p95_ms"):
        assert key in obj

    for host in ("localhost", "127.0.0.1", "[::1]", f"LOCALHOST:{gw.port}"):
        index = gw.get(host, "/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        assert f"http://demo-hello.localhost:{gw.port}" in index.text
        assert "api.example.com" in index.text and str(port) in index.text

    metrics = gw.get("localhost", "/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    assert 'mwtui_requests_total{endpoint="hello"} 3' in text
    assert 'mwtui_request_errors_total{endpoint="hello"} 0' in text
    assert 'mwtui_inflight_requests{endpoint="hello"} 0' in text
    assert 'mwtui_request_duration_seconds_count{endpoint="hello"} 3' in text
    assert 'mwtui_upstream_requests_total{endpoint="hello",upstream="hello.0"} 3' in text


# ----------------------------------------------------------------------------- gatekeeping
def test_proxy_auth_missing_and_invalid(gw: Gateway) -> None:
    # The replica address does not exist: reaching it would give 502, not 401.
    gw.routes(endpoint(requires_proxy_auth=True, upstreams=[{"id": "hello.0", "address": "unix:/nonexistent/x.sock"}]))
    r = gw.get("demo-hello.localhost")
    assert r.status_code == 401 and r.text == "modal-http: missing credentials for proxy authorization"
    r = gw.get("demo-hello.localhost", headers={"Modal-Key": "wk-1"})
    assert r.status_code == 401 and "missing credentials" in r.text
    r = gw.get("demo-hello.localhost", headers={"modal-key": "wk-1", "MODAL-SECRET": "ws-2"})
    assert r.status_code == 401 and r.text == "modal-http: invalid credentials for proxy authorization"


def test_stopped_is_503(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(state="stopped"))
    r = gw.get("demo-hello.localhost")
    assert r.status_code == 503
    assert "hello is stopped in mwtui" in r.text and "press s" in r.text


def test_failed_is_503_with_last_error(gw: Gateway) -> None:
    gw.send({"type": "status", "endpoints": [{"name": "hello", "label": "demo-hello", "state": "failed",
                                               "replicas": {"ready": 0}, "last_error": "ImportError: no flask"}]})
    gw.routes(endpoint(state="failed"))
    r = gw.get("demo-hello.localhost")
    assert r.status_code == 503 and "ImportError: no flask" in r.text


def test_request_held_while_starting_then_served(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(state="starting", hold_s=20))
    result: queue.Queue[httpx.Response | BaseException] = queue.Queue()

    def call() -> None:
        try:
            result.put(gw.get("demo-hello.localhost", "/echo/held"))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result.put(e)

    threading.Thread(target=call, daemon=True).start()
    # The held request counts as in flight (the autoscaler scales from zero on it)...
    gw.wait_event(lambda e: e["type"] == "metrics" and e["endpoints"].get("hello", {}).get("inflight") == 1)
    assert result.empty()
    # ...and goes through once a replica is ready.
    gw.routes(endpoint(state="running", upstreams=[up(unix_upstream)]))
    r = result.get(timeout=TIMEOUT)
    assert isinstance(r, httpx.Response), r
    assert r.status_code == 200 and r.json()["path"] == "/echo/held"


def test_hold_gives_up_with_503_retry_after(gw: Gateway) -> None:
    gw.routes(endpoint(state="idle", hold_s=0.2))
    r = gw.get("demo-hello.localhost")
    assert r.status_code == 503 and "retry-after" in r.headers and "no ready replica" in r.text


def test_upstream_down_is_502_naming_replica(gw: Gateway, tmp_path: Path) -> None:
    gw.routes(endpoint(upstreams=[{"id": "hello.7", "address": f"unix:{tmp_path}/gone.sock"}]))
    r = gw.get("demo-hello.localhost")
    assert r.status_code == 502 and "hello" in r.text and "hello.7" in r.text
    [obj] = gw.api()
    assert obj["errors_total"] == 1


# ----------------------------------------------------------------------------- proxying
def test_forwarded_and_hop_by_hop_headers(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(unix_upstream)]))
    r = gw.get("demo-hello.localhost:9999", headers={
        "X-Forwarded-For": "10.0.0.1", "X-Forwarded-Proto": "https", "Connection": "keep-alive, X-Hop",
        "X-Hop": "secret", "Keep-Alive": "timeout=5", "X-Mwtui-Endpoint": "forged", "X-Custom": "kept",
    })
    h = headers_of(r.json())
    assert h["x-forwarded-for"] == ["10.0.0.1, 127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-host"] == ["demo-hello.localhost:9999"]
    assert h["x-custom"] == ["kept"]
    for gone in ("x-hop", "keep-alive", "x-mwtui-endpoint"):
        assert gone not in h, gone


def test_an_empty_x_forwarded_for_adds_only_the_peer(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(unix_upstream)]))
    got = raw_exchange(gw.port, b"GET /echo HTTP/1.1\r\nHost: demo-hello.localhost\r\nX-Forwarded-For:\r\n"
                                b"Connection: close\r\n\r\n")
    echo = json.loads(got.partition(b"\r\n\r\n")[2])
    assert headers_of(echo)["x-forwarded-for"] == ["127.0.0.1"]


def test_request_trailers_are_dropped(gw: Gateway, unix_upstream: Upstream) -> None:
    """Trailers after a chunked body reach nobody: not the next request on the connection (where a
    Host or Modal-Key would be smuggled), and they do not pile up in the gateway either."""
    gw.routes(endpoint(upstreams=[up(unix_upstream)]))
    trailers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"x" * 1000) for i in range(100))  # past 64 KB
    got = raw_exchange(
        gw.port,
        b"POST /echo HTTP/1.1\r\nHost: demo-hello.localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Injected: from-trailer\r\n" + trailers + b"\r\n"
        b"GET /echo HTTP/1.1\r\nHost: demo-hello.localhost\r\nConnection: close\r\n\r\n",
        until=lambda b: b.count(b"HTTP/1.1 ") >= 2 and b.rstrip().endswith(b"}"),
    )
    first, second = [json.loads(part.partition(b"\r\n\r\n")[2].split(b"HTTP/1.1 ")[0])
                     for part in got.split(b"HTTP/1.1 200 OK")[1:]]
    assert first["body_len"] == 5 and second["method"] == "GET"
    assert "x-injected" not in headers_of(second) and "x-injected" not in headers_of(first)


def test_dispatch_header(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(unix_upstream, "web.0", dispatch="MyAPI.web")]))
    r = gw.get("demo-hello.localhost", headers={"x-mwtui-endpoint": "forged"})
    assert headers_of(r.json())["x-mwtui-endpoint"] == ["MyAPI.web"]


def test_keep_alive_reuse_to_upstream(gw: Gateway, tcp_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(tcp_upstream)]))
    # Separate client connections, sequential requests: one pooled connection to the replica.
    peers = {tuple(gw.get("demo-hello.localhost").json()["client"]) for _ in range(4)}
    assert len(peers) == 1


def test_idle_upstream_connection_is_retired(gw: Gateway, tcp_upstream: Upstream) -> None:
    """A pooled connection left idle past POOL_IDLE_S is closed by the sweep, not reused: the replica
    may be closing it (gunicorn does after 2 s)."""
    from mwtui.engine.gateway.proxy import POOL_IDLE_S

    gw.routes(endpoint(upstreams=[up(tcp_upstream)]))
    first = tuple(gw.get("demo-hello.localhost").json()["client"])
    assert tuple(gw.get("demo-hello.localhost").json()["client"]) == first  # pooled meanwhile
    time.sleep(POOL_IDLE_S + 0.6)  # past the bound plus one sweep interval (0.5 s at most)
    assert tuple(gw.get("demo-hello.localhost").json()["client"]) != first


def test_streaming_response_arrives_incrementally(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(unix_upstream)]))
    key = os.urandom(4).hex()
    with gw.client("demo-hello.localhost") as c, c.stream("GET", f"/stream/{key}") as r:
        assert r.status_code == 200
        chunks = r.iter_raw()
        # The replica holds "second" back until released: "first" can only arrive if it was forwarded
        # on its own (a gateway that buffered the response would hang here until the timeout).
        assert next(chunks) == b"first\n"
        assert gw.get("demo-hello.localhost", f"/release/{key}").status_code == 200
        assert b"".join(chunks) == b"second\n"


def test_chunked_upload_is_streamed(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(unix_upstream)]))
    parts = [os.urandom(1000 * (i + 1)) for i in range(20)]
    with gw.client("demo-hello.localhost") as c:
        r = c.post("/echo", content=iter(parts))
    echo = r.json()
    assert headers_of(echo)["transfer-encoding"] == ["chunked"]
    assert echo["body_len"] == sum(map(len, parts))
    assert echo["body_sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()


def test_large_bodies_both_ways(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(unix_upstream)]))
    body = os.urandom(8 * 1024 * 1024)
    with gw.client("demo-hello.localhost") as c:
        echo = c.post("/echo", content=body).json()
        assert echo["body_len"] == len(body)
        assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
        r = c.get("/big", params={"n": 16 * 1024 * 1024})
        assert r.status_code == 200 and len(r.content) == 16 * 1024 * 1024
        assert r.headers["content-length"] == str(16 * 1024 * 1024)


def test_head_then_keep_alive(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(unix_upstream)]))
    with gw.client("demo-hello.localhost") as c:
        r = c.head("/big", params={"n": 1000})
        assert r.status_code == 200 and r.headers["content-length"] == "1000" and r.content == b""
        assert c.get("/big", params={"n": 10}).content == b"x" * 10  # same connection still in step


def test_expect_100_continue(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(unix_upstream)]))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=TIMEOUT) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: demo-hello.localhost\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(4096)
        assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"hello")
        got = got[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        while b'"body_head"' not in got:
            got += s.recv(4096)
    assert got.startswith(b"HTTP/1.1 200") and b'"body_head":"hello"' in got and b"expect" not in got.lower()


def test_pipelined_requests_answered_in_order(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(unix_upstream)]))
    req = b"GET /echo/%d HTTP/1.1\r\nHost: demo-hello.localhost\r\n\r\n"
    last = b"GET /echo/3 HTTP/1.1\r\nHost: demo-hello.localhost\r\nConnection: close\r\n\r\n"
    got = raw_exchange(gw.port, req % 1 + req % 2 + last)
    assert got.count(b"HTTP/1.1 200") == 3
    assert got.index(b'"/echo/1"') < got.index(b'"/echo/2"') < got.index(b'"/echo/3"')


def test_websocket_echo(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(unix_upstream)]))
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=TIMEOUT)
    with ws_connect(f"ws://demo-hello.localhost:{gw.port}/ws", sock=sock, open_timeout=TIMEOUT) as ws:
        ws.send("hi there")
        assert ws.recv(TIMEOUT) == "hi there"
        blob = os.urandom(300_000)
        ws.send(blob)
        assert ws.recv(TIMEOUT) == blob
    # the handshake is counted as a request with status 101
    ev = gw.wait_event(lambda e: e["type"] == "access" and any(x["path"] == "/ws" for x in e["lines"]))
    assert [x["status"] for x in ev["lines"] if x["path"] == "/ws"] == [101]


def test_slow_client_backpressure(gw: Gateway, unix_upstream: Upstream) -> None:
    """A client that does not read: the gateway stops reading the replica instead of buffering."""
    import psutil

    gw.routes(endpoint(upstreams=[up(unix_upstream)]))
    size = 32 * 1024 * 1024
    proc = psutil.Process(gw.proc.pid)
    rss0 = proc.memory_info().rss
    with socket.create_connection(("127.0.0.1", gw.port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: demo-hello.localhost\r\nConnection: close\r\n\r\n" % size)
        got = s.recv(1024)
        # Over a Unix socket the whole body would be in the gateway within a second if it kept reading;
        # the kernel's socket buffers (not in RSS) hold a few MB at most.
        peak = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            peak = max(peak, proc.memory_info().rss - rss0)
            time.sleep(0.05)
        assert peak < 12 * 1024 * 1024, f"gateway grew by {peak} bytes"
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
    assert got.startswith(b"HTTP/1.1 200") and len(got.partition(b"\r\n\r\n")[2]) == size


def test_malformed_request_is_400_and_closes(gw: Gateway) -> None:
    got = raw_exchange(gw.port, b"GARBAGE \x00\x01 nonsense\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 400")
    assert b"connection: close" in got.lower()
    # and it is still serving
    assert gw.get("localhost", "/api/endpoints").status_code == 200


class RawReplica:
    """A replica that speaks HTTP by hand, to misbehave on purpose: the n-th request on a connection
    gets replies[n] (the last one over again after that); with keep_alive=False it then closes."""

    def __init__(self, *replies: bytes, keep_alive: bool = False) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.address = f"tcp:127.0.0.1:{self.sock.getsockname()[1]}"
        self.replies = replies
        self.keep_alive = keep_alive
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            got, n = b"", 0
            while True:
                while b"\r\n\r\n" not in got:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    got += chunk
                got = got.partition(b"\r\n\r\n")[2]
                conn.sendall(self.replies[min(n, len(self.replies) - 1)])
                if not self.keep_alive:
                    return
                n += 1

    def close(self) -> None:
        self.sock.close()


def test_response_trailers_do_not_reach_the_next_client(gw: Gateway) -> None:
    replica = RawReplica(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n"
        b"Set-Cookie: session=client-A\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        keep_alive=True,
    )
    try:
        gw.routes(endpoint(upstreams=[{"id": "hello.0", "address": replica.address}]))
        a = gw.get("demo-hello.localhost", "/")
        b = gw.get("demo-hello.localhost", "/")  # another client, the same pooled replica connection
        assert a.text == "hi" and b.text == "ok"
        assert "set-cookie" not in a.headers and "set-cookie" not in b.headers
        assert replica.connections == 1
    finally:
        replica.close()


def test_a_response_nobody_asked_for_ends_its_connection(gw: Gateway) -> None:
    """A replica that sends a second response right behind the first: the connection cannot be
    trusted (where would the next response begin?), so the next client gets a fresh one."""
    replica = RawReplica(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirstHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra",
        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond",
        keep_alive=True,
    )
    try:
        gw.routes(endpoint(upstreams=[{"id": "hello.0", "address": replica.address}]))
        assert gw.get("demo-hello.localhost", "/").text == "first"
        assert gw.get("demo-hello.localhost", "/").text == "first"  # a new connection's first reply
        assert replica.connections == 2
    finally:
        replica.close()


def test_close_delimited_response_is_rechunked(gw: Gateway) -> None:
    replica = RawReplica(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nno length here")
    try:
        gw.routes(endpoint(upstreams=[{"id": "hello.0", "address": replica.address}]))
        with gw.client("demo-hello.localhost") as c:
            r = c.get("/")
            assert r.status_code == 200 and r.text == "no length here"
            assert r.headers["transfer-encoding"] == "chunked"
            assert c.get("/").text == "no length here"  # the client connection stayed usable
    finally:
        replica.close()


def test_replica_dying_mid_response_closes_client(gw: Gateway) -> None:
    replica = RawReplica(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
    try:
        gw.routes(endpoint(upstreams=[{"id": "hello.0", "address": replica.address}]))
        with pytest.raises(httpx.RemoteProtocolError):
            gw.get("demo-hello.localhost", "/")
        eventually(lambda: gw.api()[0]["errors_total"] == 1, TIMEOUT, "error counted")
    finally:
        replica.close()


# ----------------------------------------------------------------------------- process and events
def test_metrics_and_access_events(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(unix_upstream)]))
    assert gw.get("demo-hello.localhost", "/echo/seen?q=1").status_code == 200
    ev = gw.wait_event(lambda e: e["type"] == "access" and any(x["path"] == "/echo/seen?q=1" for x in e["lines"]))
    [line] = [x for x in ev["lines"] if x["path"] == "/echo/seen?q=1"]
    assert line["endpoint"] == "hello" and line["upstream"] == "hello.0" and line["method"] == "GET"
    assert line["status"] == 200 and line["ms"] >= 0 and abs(line["t"] - time.time()) < 60
    m = gw.wait_event(lambda e: e["type"] == "metrics" and e["endpoints"].get("hello", {}).get("requests_total") == 1)
    hello = m["endpoints"]["hello"]
    assert hello["upstreams"]["hello.0"]["requests_total"] == 1
    assert hello["inflight"] == 0 and hello["errors_total"] == 0 and hello["p50_ms"] is not None
    for key in ("rps", "p95_ms"):
        assert key in hello


def test_bad_control_lines_are_ignored(gw: Gateway, unix_upstream: Upstream) -> None:
    assert gw.proc.stdin
    gw.proc.stdin.write(b"this is not json\n[1, 2]\n{\"type\": \"routes\"}\n{\"type\": \"what\"}\n")
    gw.proc.stdin.flush()
    # one bad entry is skipped, the good one applies
    gw.send({"type": "routes", "endpoints": [{"name": "broken"}, endpoint(upstreams=[up(unix_upstream)])]})
    eventually(lambda: [e["name"] for e in gw.api()] == ["hello"], TIMEOUT, "good entry applied")
    assert gw.get("demo-hello.localhost").status_code == 200
    assert gw.proc.poll() is None


def test_stdin_eof_exits(gw: Gateway) -> None:
    assert gw.proc.stdin
    gw.proc.stdin.close()
    assert gw.proc.wait(TIMEOUT) == 0


def test_busy_main_port_is_an_error_naming_it() -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    g = Gateway(port)
    try:
        ev = g.wait_event(lambda e: e["type"] in ("error", "listening", "<eof>"))
        assert ev["type"] == "error" and str(port) in ev["message"] and "busy" in ev["message"]
        assert g.proc.wait(TIMEOUT) == 2
    finally:
        blocker.close()
        g.close()


# ----------------------------------------------------------------------------- proxy auth with real tokens
def test_proxy_auth_with_tokens_from_the_store(gw: Gateway, unix_upstream: Upstream) -> None:
    store = TokenStore(Path(gw.home) / "tokens.json")
    gw.routes(endpoint(requires_proxy_auth=True, upstreams=[up(unix_upstream)]))
    info, secret = store.create("ci")
    # Created after the gateway started, used at once: it looks at the file again on an unknown key.
    for key_name, secret_name in (("Modal-Key", "Modal-Secret"), ("modal-key", "MODAL-SECRET")):
        r = gw.get("demo-hello.localhost", headers={key_name: info.key, secret_name: secret})
        assert r.status_code == 200, r.text
        h = headers_of(r.json())
        assert h["modal-key"] == [info.key]
        assert "modal-secret" not in h  # user code never sees (so never logs) the secret
    r = gw.get("demo-hello.localhost", headers={"Modal-Key": info.key, "Modal-Secret": secret + "x"})
    assert r.status_code == 401 and r.text == "modal-http: invalid credentials for proxy authorization"
    r = gw.get("demo-hello.localhost", headers={"Modal-Secret": secret})
    assert r.status_code == 401 and r.text == "modal-http: missing credentials for proxy authorization"
    assert store.revoke(info.key)
    # Revoked: refused within the file re-check interval, without a restart.
    eventually(lambda: gw.get("demo-hello.localhost", headers={"Modal-Key": info.key, "Modal-Secret": secret})
               .status_code == 401, 5, "revocation seen")
    assert secret not in httpx.get(f"http://127.0.0.1:{gw.port}/api/endpoints", timeout=TIMEOUT).text


# ----------------------------------------------------------------------------- DNS rebinding
def test_own_pages_only_for_a_loopback_host(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(unix_upstream)]))
    for host in ("127.0.0.2", "localhost.", "[::1]:1"):
        assert gw.get(host, "/api/endpoints").status_code == 200, host
    # A page whose DNS name was rebound to 127.0.0.1 still sends its own name: no status, no index,
    # and no list of labels either (it could read the 404; only local names get the list).
    for host in ("attacker.example", "attacker.example:8470", "192.168.1.10", "0.0.0.0"):
        for path in ("/", "/api/endpoints", "/metrics"):
            r = gw.get(host, path)
            assert r.status_code == 404, (host, path)
            assert "demo-hello" not in r.text and '"requests_total"' not in r.text
            assert r.text.count("\n") == 1, r.text


def test_own_pages_refuse_posts(gw: Gateway) -> None:
    with gw.client("localhost") as c:
        r = c.post("/api/endpoints", data={"x": "1"}, headers={"Origin": "http://attacker.example"})
    assert r.status_code == 405


# ----------------------------------------------------------------------------- max_inputs, queueing, timeouts
def _run_concurrently(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response | BaseException]:
    results: list[httpx.Response | BaseException] = [RuntimeError("no answer")] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 2)
    return results


def test_max_inputs_caps_each_replica_and_balances(gw: Gateway, unix_upstream: Upstream,
                                                   tcp_upstream: Upstream) -> None:
    gw.routes(endpoint(max_inputs=2, upstreams=[up(unix_upstream, "hello.0"), up(tcp_upstream, "hello.1")]))
    key = os.urandom(4).hex()
    results = _run_concurrently([lambda: gw.get("demo-hello.localhost", f"/conc/{key}?s=0.3")] * 10)
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in results), results
    by_pid: dict[int, int] = {}
    for r in results:
        body = r.json()  # type: ignore[union-attr]
        by_pid[body["pid"]] = max(by_pid.get(body["pid"], 0), body["max"])
    assert len(by_pid) == 2  # both replicas were used (fewest in flight first)
    assert max(by_pid.values()) == 2  # never more than max_inputs at once on one replica


def test_queue_is_fifo_and_counted_in_metrics(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(max_inputs=1, upstreams=[up(unix_upstream)]))
    key = os.urandom(4).hex()
    done: queue.Queue[str] = queue.Queue()

    def call(path: str) -> None:
        try:
            r = gw.get("demo-hello.localhost", path)
            done.put(f"{path} {r.status_code}")
        except BaseException as e:  # noqa: BLE001
            done.put(f"{path} {e!r}")

    threading.Thread(target=call, args=(f"/stream/{key}",), daemon=True).start()
    gw.metrics_where("hello", lambda m: m["inflight"] == 1)
    for i in range(3):  # one at a time, so that their arrival order is certain
        threading.Thread(target=call, args=(f"/echo/{i}",), daemon=True).start()
        gw.metrics_where("hello", lambda m, i=i: m["queued"] == i + 1)
    m = gw.metrics_where("hello", lambda m: m["queued"] == 3)
    assert m["inflight"] == 4  # the autoscaler sees the waiting ones too
    assert done.empty()  # none of them got past the busy replica, none was refused
    with unix_upstream.client() as direct:
        assert direct.get(f"/release/{key}").status_code == 200
    got = sorted(done.get(timeout=TIMEOUT) for _ in range(4))
    assert got == ["/echo/0 200", "/echo/1 200", "/echo/2 200", f"/stream/{key} 200"]
    # The order they were answered in, as the gateway logged them (client threads may report late).
    def order() -> list[str]:
        return [x["path"] for e in gw.events if e["type"] == "access" for x in e["lines"]]

    eventually(lambda: len(order()) == 4, TIMEOUT, "four access lines")
    assert order() == [f"/stream/{key}", "/echo/0", "/echo/1", "/echo/2"]
    m = gw.metrics_where("hello", lambda m: m["inflight"] == 0)
    assert m["queued"] == 0 and m["requests_total"] == 4


def test_waiting_request_goes_to_a_new_replica(gw: Gateway, unix_upstream: Upstream,
                                               tcp_upstream: Upstream) -> None:
    gw.routes(endpoint(max_inputs=1, upstreams=[up(unix_upstream, "hello.0")]))
    key = os.urandom(4).hex()
    first = _background(lambda: gw.get("demo-hello.localhost", f"/stream/{key}"))
    gw.metrics_where("hello", lambda m: m["inflight"] == 1)
    second = _background(lambda: gw.get("demo-hello.localhost", "/echo/second"))
    gw.metrics_where("hello", lambda m: m["queued"] == 1)
    # A replica joins (the autoscaler's doing): the waiting request goes there, the first still runs.
    gw.routes(endpoint(max_inputs=1, upstreams=[up(unix_upstream, "hello.0"), up(tcp_upstream, "hello.1")]))
    r = second.get(timeout=TIMEOUT)
    assert isinstance(r, httpx.Response) and r.status_code == 200 and r.json()["path"] == "/echo/second"
    assert first.empty()
    with unix_upstream.client() as direct:
        direct.get(f"/release/{key}")
    r = first.get(timeout=TIMEOUT)
    assert isinstance(r, httpx.Response) and r.status_code == 200


def _background(fn: Callable[[], Any]) -> queue.Queue[Any]:
    out: queue.Queue[Any] = queue.Queue()

    def run() -> None:
        try:
            out.put(fn())
        except BaseException as e:  # noqa: BLE001
            out.put(e)

    threading.Thread(target=run, daemon=True).start()
    return out


def test_websocket_holds_a_slot(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(max_inputs=1, upstreams=[up(unix_upstream)]))
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=TIMEOUT)
    with ws_connect(f"ws://demo-hello.localhost:{gw.port}/ws", sock=sock, open_timeout=TIMEOUT) as ws:
        ws.send("hi")
        assert ws.recv(TIMEOUT) == "hi"
        waiting = _background(lambda: gw.get("demo-hello.localhost", "/echo/after-ws"))
        gw.metrics_where("hello", lambda m: m["queued"] == 1 and m["inflight"] == 2)
        assert waiting.empty()
    r = waiting.get(timeout=TIMEOUT)
    assert isinstance(r, httpx.Response) and r.status_code == 200


def test_queue_bound_and_wait_bound_say_why() -> None:
    g = Gateway(0, "--max-queue", "2").started()
    try:
        g.routes(endpoint(state="starting", hold_s=30))
        held = [_background(lambda: g.get("demo-hello.localhost")) for _ in range(2)]
        g.metrics_where("hello", lambda m: m["queued"] == 2)
        r = g.get("demo-hello.localhost")
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert "already has 2 requests waiting" in r.text and "--max-queue" in r.text
        g.routes(endpoint(state="stopped"))
        for q in held:
            r = q.get(timeout=TIMEOUT)
            assert r.status_code == 503 and "stopped" in r.text
    finally:
        g.close()


def test_all_replicas_busy_past_the_bound_is_503(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(max_inputs=1, hold_s=0.3, timeout=0, upstreams=[up(unix_upstream)]))
    key = os.urandom(4).hex()
    first = _background(lambda: gw.get("demo-hello.localhost", f"/stream/{key}"))
    gw.metrics_where("hello", lambda m: m["inflight"] == 1)
    r = gw.get("demo-hello.localhost", "/echo")
    assert r.status_code == 503 and "retry-after" in r.headers
    assert "max_inputs=1" in r.text and "busy" in r.text
    with unix_upstream.client() as direct:
        direct.get(f"/release/{key}")
    assert first.get(timeout=TIMEOUT).status_code == 200


def test_timeout_is_504_and_frees_the_slot(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(max_inputs=1, timeout=1, upstreams=[up(unix_upstream)]))
    slow = _background(lambda: gw.get("demo-hello.localhost", "/slow", params={"s": 4}))
    gw.metrics_where("hello", lambda m: m["inflight"] == 1)
    behind = _background(lambda: gw.get("demo-hello.localhost", "/echo/behind"))
    r = slow.get(timeout=TIMEOUT)
    assert isinstance(r, httpx.Response) and r.status_code == 504, r
    assert "timeout of 1s" in r.text
    # The slot is free at once: the waiting request runs long before the slow one would have ended.
    r = behind.get(timeout=2)
    assert isinstance(r, httpx.Response) and r.status_code == 200 and r.json()["path"] == "/echo/behind"
    [obj] = gw.api()
    assert obj["errors_total"] == 1


def test_timeout_cuts_a_streaming_response(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(timeout=1, upstreams=[up(unix_upstream)]))
    key = os.urandom(4).hex()
    with gw.client("demo-hello.localhost") as c, c.stream("GET", f"/stream/{key}") as r:
        assert r.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            b"".join(r.iter_raw())  # the head was out: only a close can say it failed
    with unix_upstream.client() as direct:
        direct.get(f"/release/{key}")


# ----------------------------------------------------------------------------- the engine's link
async def test_gateway_link_restarts_a_dead_gateway_on_its_port(unix_upstream: Upstream) -> None:
    lifeline = Lifeline()
    events: list[dict[str, Any]] = []
    link = GatewayLink("127.0.0.1", 0, lifeline, events.append)
    try:
        port = await link.start()
        link.send({"type": "routes", "seq": 1, "endpoints": [endpoint(upstreams=[up(unix_upstream)])]})
        link.send({"type": "status", "endpoints": [{"name": "hello", "label": "demo-hello", "kind": "asgi",
                                                    "state": "running", "replicas": {"ready": 1}}]})

        async def get() -> int:
            try:
                async with httpx.AsyncClient(timeout=2) as c:
                    r = await c.get(f"http://127.0.0.1:{port}/echo", headers={"Host": "demo-hello.localhost"})
                    return r.status_code
            except httpx.HTTPError:
                return 0

        await eventually_async(lambda: _is(get, 200), 20, lambda: f"the first gateway to serve; events: {events[-5:]}")
        first = link.proc
        assert first is not None
        os.killpg(first.pid, signal.SIGKILL)
        await eventually_async(lambda: _is(get, 200), 20,
                               lambda: f"a new gateway with the old routes; events: {events[-5:]}")
        assert link.proc is not first and link.port == port and link.restarts == 1
        assert any("SIGKILL" in w and str(port) in w for e in events for w in e.get("warnings", []))
        async with httpx.AsyncClient(timeout=2) as c:  # the status came back too
            api = (await c.get(f"http://127.0.0.1:{port}/api/endpoints")).json()
        assert api[0]["kind"] == "asgi"
    finally:
        await link.close()
        lifeline.close()
    assert link.proc is not None and link.proc.returncode is not None


async def _is(fn: Callable[[], Any], want: Any) -> bool:
    return (await fn()) == want
