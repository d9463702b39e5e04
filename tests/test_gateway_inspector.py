"""The request inspector in the gateway (issue 19): every request's headers, bodies (first 64 KB),
timings and replica kept in a bounded ring per endpoint, credentials never shown, /api/requests for
loopback clients only, and replay through the gateway itself. A real gateway and real uvicorn."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from mwtui.engine.tokens import TokenStore
from websockets.sync.client import connect as ws_connect

from .eventually import eventually
from .fixtures.gateway_harness import TIMEOUT, Gateway, Upstream, endpoint, running_gateway, up

pytestmark = pytest.mark.timeout(60)
HOST = "demo-hello.localhost"


def requests_api(g: Gateway, path: str = "", **params: Any) -> Any:
    r = httpx.get(f"http://127.0.0.1:{g.port}/api/requests{path}", params=params, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def newest(g: Gateway, **params: Any) -> dict[str, Any]:
    entries = eventually(lambda: requests_api(g, **params) or None, TIMEOUT, "a captured request")
    return entries[0]  # type: ignore[no-any-return]


def test_a_request_and_its_response_are_captured(unix_upstream: Upstream) -> None:
    with running_gateway(upstreams=[unix_upstream]) as g:
        r = g.get(HOST, "/echo?x=1", headers={"X-Trace": "abc"})
        assert r.status_code == 200
        entry = newest(g)
        assert (entry["endpoint"], entry["method"], entry["path"], entry["status"]) == ("hello", "GET", "/echo?x=1", 200)
        assert ["X-Trace", "abc"] in entry["request_headers"] or ["x-trace", "abc"] in entry["request_headers"]
        assert entry["replica"] == "hello.0" and entry["woke"] is False and entry["error"] is None
        assert entry["response_body"]["json"] and json.loads(entry["response_body"]["text"])["query"] == "x=1"
        assert entry["duration_ms"] > 0 and entry["queue_ms"] is not None and entry["ttfb_ms"] is not None
        assert entry["curl"].startswith("curl -X GET -H 'Host: demo-hello.localhost'")
        assert requests_api(g, f"/{entry['id']}")["id"] == entry["id"]


def test_credentials_are_never_shown(unix_upstream: Upstream) -> None:
    with running_gateway(upstreams=[unix_upstream]) as g:
        headers = {"Authorization": "Bearer auth-value-never-shown", "Cookie": "c=cookie-in-never-shown"}
        assert g.get(HOST, "/echo", headers=headers).status_code == 200
        assert g.get(HOST, "/cookie").status_code == 200
        text = httpx.get(f"http://127.0.0.1:{g.port}/api/requests", timeout=TIMEOUT).text
        for secret in ("auth-value-never-shown", "cookie-in-never-shown", "cookie-value-never-shown"):
            assert secret not in text
        cookie, echo = requests_api(g)[:2]
        assert dict(map(tuple, echo["request_headers"]))["Authorization"] == "••••••"  # type: ignore[arg-type]
        assert any(name.lower() == "set-cookie" and value == "••••••" for name, value in cookie["response_headers"])
        assert "$AUTHORIZATION" in echo["curl"]


def test_bodies_are_kept_up_to_64k_with_their_sizes(unix_upstream: Upstream) -> None:
    with running_gateway(upstreams=[unix_upstream]) as g:
        with g.client(HOST) as c:
            assert c.post("/echo", content=b"a" * 100_000).status_code == 200
        entry = newest(g)
        assert entry["request_body"] == {**entry["request_body"], "size": 100_000, "kept": 65536, "truncated": True}
        assert g.get(HOST, "/big?n=100000").status_code == 200
        body = newest(g)["response_body"]
        assert (body["size"], body["kept"], body["truncated"]) == (100_000, 65536, True)
        # A replay needs the whole body: one over 64 KB is refused.
        r = httpx.post(f"http://127.0.0.1:{g.port}/api/requests/{entry['id']}/replay", timeout=TIMEOUT)
        assert r.status_code == 409


def test_a_stream_counts_its_chunks(unix_upstream: Upstream) -> None:
    with running_gateway(upstreams=[unix_upstream]) as g, g.client(HOST) as c:
        with c.stream("GET", "/stream/insp") as r:
            lines = r.iter_lines()
            assert next(lines) == "first"
            assert g.get(HOST, "/release/insp").status_code == 200
            assert next(lines) == "second"
        entry = eventually(lambda: next((e for e in requests_api(g) if e["path"] == "/stream/insp"), None),
                           TIMEOUT, "the stream's entry")
        assert entry["response_body"]["text"] == "first\nsecond\n" and entry["response_body"]["chunks"] >= 2


def test_a_websocket_is_captured_with_its_traffic(unix_upstream: Upstream) -> None:
    with running_gateway(upstreams=[unix_upstream]) as g:
        sock = socket.create_connection(("127.0.0.1", g.port), timeout=TIMEOUT)
        with ws_connect(f"ws://{HOST}:{g.port}/ws", sock=sock, open_timeout=TIMEOUT) as ws:
            for text in ("hello there", "second", "x" * 300):
                ws.send(text)
                assert ws.recv() == text
            ws.send(b"\x00\x01")
            assert ws.recv() == b"\x00\x01"
        entry = eventually(lambda: next((e for e in requests_api(g) if e["status"] == 101 and e.get("websocket")
                                         and e["websocket"]["bytes_from_replica"]), None), TIMEOUT, "the websocket")
        ws = entry["websocket"]
        assert entry["path"] == "/ws" and ws["bytes_from_client"] > 0
        entry = eventually(lambda: next((e for e in requests_api(g) if e["path"] == "/ws"
                                         and e["websocket"]["messages_from_replica"] == 4), None), TIMEOUT, "4 echoes")
        ws = entry["websocket"]
        assert ws["messages_from_client"] == 4  # the client's frames are masked: read all the same
        assert ws["first_from_client"] == ws["first_from_replica"] == ["hello there", "second", "x" * 200]


def test_the_ring_keeps_the_newest_within_its_budget(unix_upstream: Upstream) -> None:
    with running_gateway("--inspect-ring", "64k", upstreams=[unix_upstream]) as g, g.client(HOST) as c:
        for i in range(40):
            assert c.post(f"/echo/{i}", content=b"b" * 8192).status_code == 200
        entries = requests_api(g, endpoint="hello")
        assert 3 <= len(entries) <= 8  # 8 KB bodies, about 9 KB each, in 64 KB
        assert entries[0]["path"] == "/echo/39" and [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)


def test_replay_sends_the_same_request_again(unix_upstream: Upstream) -> None:
    with running_gateway(upstreams=[unix_upstream]) as g, g.client(HOST) as c:
        body = b'{"n": 1}'
        assert c.post("/echo?q=1", content=body, headers={"content-type": "application/json"}).status_code == 200
        original = newest(g)
        r = httpx.post(f"http://127.0.0.1:{g.port}/api/requests/{original['id']}/replay", timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["replay_of"] == original["id"] and answer["status"] == 200
        replayed = requests_api(g, f"/{answer['id']}")
        assert replayed["replay_of"] == original["id"] and replayed["path"] == "/echo?q=1"
        echoed = json.loads(replayed["response_body"]["text"])
        assert echoed["method"] == "POST" and echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert not any(name.lower() == "x-mwtui-replay" for name, _ in echoed["headers"])  # ours, not forwarded
        # A client cannot pass its request off as a replay: only ids the gateway handed out are taken.
        assert c.get("/echo", headers={"x-mwtui-replay": f"99999:{original['id']}"}).status_code == 200
        forged = newest(g)
        assert forged["replay_of"] is None and forged["id"] != 99999


def test_replay_of_a_proxy_auth_request_works_without_showing_the_secret(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(requires_proxy_auth=True, upstreams=[up(unix_upstream)]))
    info, secret = TokenStore(Path(gw.home) / "tokens.json").create("ci")
    assert gw.get(HOST, headers={"Modal-Key": info.key, "Modal-Secret": secret}).status_code == 200
    original = newest(gw)
    r = httpx.post(f"http://127.0.0.1:{gw.port}/api/requests/{original['id']}/replay", timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["status"] == 200, r.text
    text = httpx.get(f"http://127.0.0.1:{gw.port}/api/requests", timeout=TIMEOUT).text
    assert secret not in text and '"$MODAL_SECRET"' in original["curl"] or "$MODAL_SECRET" in original["curl"]


def test_the_gateways_own_error_is_kept_with_its_cause(gw: Gateway, unix_upstream: Upstream) -> None:
    gw.routes(endpoint(state="stopped", upstreams=[]))
    assert gw.get(HOST).status_code == 503
    entry = newest(gw, status="5xx")
    assert entry["status"] == 503 and "stopped" in entry["error"] and entry["replica"] is None
    assert requests_api(gw, status="200") == []


def test_only_loopback_hosts_reach_the_api_and_no_inspect_keeps_nothing(unix_upstream: Upstream) -> None:
    with running_gateway("--no-inspect", upstreams=[unix_upstream]) as g:
        assert g.get(HOST).status_code == 200
        r = httpx.get(f"http://127.0.0.1:{g.port}/api/requests", timeout=TIMEOUT)
        assert r.status_code == 404 and "inspector is off" in r.text
    with running_gateway(upstreams=[unix_upstream]) as g:
        r = httpx.get(f"http://127.0.0.1:{g.port}/api/requests", headers={"Host": "evil.example"}, timeout=TIMEOUT)
        assert r.status_code == 404 and "[" not in r.text


def test_memory_stays_within_the_rings_bound_under_load(unix_upstream: Upstream) -> None:
    import psutil

    with running_gateway(upstreams=[unix_upstream]) as g, g.client(HOST) as c:
        proc = psutil.Process(g.proc.pid)
        for _ in range(50):  # warm: connection pools, parser buffers, the first ring entries
            c.post("/echo", content=b"w" * 8192)
        before = proc.memory_info().rss
        for i in range(3000):
            assert c.post(f"/echo/{i}", content=b"m" * 8192).status_code == 200
        grown = proc.memory_info().rss - before
        assert grown < 16 << 20, f"the gateway grew by {grown >> 20} MB over 3,000 requests of 8 KB"
        assert len(requests_api(g, endpoint="hello", limit=5000)) < 300  # the 2 MB ring, not 3,000 entries
