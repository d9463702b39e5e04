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
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

FIXTURES = Path(__file__).parent / "fixtures"
TIMEOUT = 10.0

pytestmark = pytest.mark.timeout(60)


# ----------------------------------------------------------------------------- helpers
def wait_until(pred: Callable[[], Any], timeout: float = TIMEOUT, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def start_uvicorn(*bind: str, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "gateway_upstream:app", "--app-dir", str(FIXTURES),
         "--log-level", "warning", "--no-access-log", *bind],
        pass_fds=pass_fds,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Upstream:
    def __init__(self, address: str, proc: subprocess.Popen[bytes]) -> None:
        self.address = address
        self.proc = proc


@pytest.fixture(scope="module")
def unix_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    path = tmp_path_factory.mktemp("up") / "replica.sock"
    proc = start_uvicorn("--uds", str(path))

    def ready() -> bool:
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(path))
                return True
            except OSError:
                return False

    try:
        wait_until(ready, 20, "uvicorn on a unix socket")
        yield Upstream(f"unix:{path}", proc)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def tcp_upstream() -> Iterator[Upstream]:
    # The listening socket is ours, handed over with --fd: no port race, ready as soon as bound.
    # (uvicorn then skips TCP_NODELAY, which only matters for speed: see bench/RESULTS.md.)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    proc = start_uvicorn("--fd", str(sock.fileno()), pass_fds=(sock.fileno(),))
    sock.close()
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/echo", timeout=TIMEOUT).status_code == 200,
                   20, "uvicorn on tcp")
        yield Upstream(f"tcp:127.0.0.1:{port}", proc)
    finally:
        stop(proc)


class Gateway:
    """A running gateway process: send it messages, read its events, talk HTTP to it."""

    def __init__(self, port: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mwtui.engine.gateway", "--host", "127.0.0.1", "--port", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = 0

    def _pump(self) -> None:
        assert self.proc.stdout
        for raw in self.proc.stdout:
            msg = json.loads(raw)  # anything that is not one JSON object per line fails the test
            with self._cond:
                self.events.append(msg)
                self._cond.notify_all()
        with self._cond:
            self.events.append({"type": "<eof>"})
            self._cond.notify_all()

    def wait_event(self, pred: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for ev in self.events[seen:]:
                    if pred(ev):
                        return ev
                seen = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching event; got {self.events[-5:]}")
                self._cond.wait(left)

    def started(self) -> Gateway:
        ev = self.wait_event(lambda e: e["type"] in ("listening", "error", "<eof>"))
        assert ev["type"] == "listening", ev
        self.port = ev["port"]
        return self

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()

    def routes(self, *endpoints: dict[str, Any]) -> None:
        """Replace the table, then wait until the gateway serves it (/api/endpoints shows it)."""
        self.send({"type": "routes", "endpoints": list(endpoints)})
        want = {(e["name"], e.get("state", "running"), len(e.get("upstreams", []))) for e in endpoints}

        def applied() -> bool:
            got = {(e["name"], e["state"], e["replicas"]["ready"]) for e in self.api()}
            return got == want

        wait_until(applied, what="routes applied")

    def api(self) -> list[dict[str, Any]]:
        return httpx.get(f"http://127.0.0.1:{self.port}/api/endpoints", timeout=TIMEOUT).json()

    def client(self, host: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Host": host} if host else {}
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers=headers, timeout=TIMEOUT, **kw)

    def get(self, host: str, path: str = "/echo", **kw: Any) -> httpx.Response:
        with self.client(host) as c:
            return c.get(path, **kw)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def gw() -> Iterator[Gateway]:
    g = Gateway().started()
    try:
        yield g
    finally:
        g.close()


def endpoint(name: str = "hello", label: str = "demo-hello", upstreams: list[dict[str, Any]] | None = None,
             **kw: Any) -> dict[str, Any]:
    return {
        "name": name, "label": label, "domains": [], "port": None, "requires_proxy_auth": False,
        "state": "running", "hold_s": 10, "upstreams": upstreams or [], **kw,
    }


def up(upstream: Upstream, id: str = "hello.0", dispatch: str | None = None) -> dict[str, Any]:
    return {"id": id, "address": upstream.address, "dispatch": dispatch}


def headers_of(echo: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in echo["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


def raw_exchange(port: int, data: bytes, until: Callable[[bytes], bool] | None = None) -> bytes:
    """Send raw bytes, read until `until(received)` or the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(data)
        got = b""
        while not (until and until(got)):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def test_own_port_ignores_host_and_busy_port_moves(gw: Gateway, unix_upstream: Upstream) -> None:
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
            r = httpx.get(f"http://127.0.0.1:{port}/echo", headers={"Host": "anything.example"}, timeout=TIMEOUT)
            assert r.status_code == 200
            assert headers_of(r.json())["host"] == ["anything.example"]
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
    wait_until(lambda: gw.api()[0].get("kind") == "fastapi", what="status applied")
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


def test_dispatch_header(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(unix_upstream, "web.0", dispatch="MyAPI.web")]))
    r = gw.get("demo-hello.localhost", headers={"x-mwtui-endpoint": "forged"})
    assert headers_of(r.json())["x-mwtui-endpoint"] == ["MyAPI.web"]


def test_keep_alive_reuse_to_upstream(gw: Gateway, tcp_upstream: Upstream) -> None:
    gw.routes(endpoint(upstreams=[up(tcp_upstream)]))
    # Separate client connections, sequential requests: one pooled connection to the replica.
    peers = {tuple(gw.get("demo-hello.localhost").json()["client"]) for _ in range(4)}
    assert len(peers) == 1


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
    """A replica that speaks HTTP by hand, to misbehave on purpose."""

    def __init__(self, reply: bytes) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.address = f"tcp:127.0.0.1:{self.sock.getsockname()[1]}"
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                got = b""
                while b"\r\n\r\n" not in got:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()


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
        wait_until(lambda: gw.api()[0]["errors_total"] == 1, what="error counted")
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
    wait_until(lambda: [e["name"] for e in gw.api()] == ["hello"], what="good entry applied")
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
