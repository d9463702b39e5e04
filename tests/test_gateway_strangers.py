"""What a client on another machine may see, and what a Host header may name.

A client that is not on this machine gets no list of labels, no traceback and none of mwtui's own
pages: a one-line reason instead. Such a client is made real here with a network namespace where
192.0.2.1 (a documentation address, reachable only inside it) is an address of the machine that is not
loopback. Host values that are not `name[:port]` are 400 everywhere.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .eventually import eventually
from .fixtures.gateway_harness import TIMEOUT, Gateway, Upstream, endpoint, free_port, raw_exchange, up

pytestmark = pytest.mark.timeout(60)
PROBE = Path(__file__).parent / "fixtures" / "stranger_probe.py"


def _netns_works() -> str | None:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare (util-linux) and ip (iproute2)"
    done = subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"cannot make a network namespace here: {done.stderr.strip()}"
    return None


def test_a_stranger_sees_no_labels_tracebacks_or_pages() -> None:
    why = _netns_works()
    if why:
        pytest.skip(why)
    script = (f"ip link set lo up && ip addr add 192.0.2.1/32 dev lo && "
              f"exec {sys.executable} {PROBE}")
    done = subprocess.run(["unshare", "-rn", "sh", "-c", script], capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    local, stranger = got["local"], got["stranger"]
    # On this machine: the whole story
    assert local["failed"]["status"] == 503 and "SECRET_PATH" in local["failed"]["body"]
    assert local["unknown"]["status"] == 404 and "demo-hello" in local["unknown"]["body"]
    assert local["index"]["status"] == 200 and "SECRET_PATH" in local["index"]["body"]
    # From elsewhere: that it failed, that the host is unknown, that the pages are not for it
    assert stranger["failed"]["status"] == 503 and "SECRET_PATH" not in stranger["failed"]["body"]
    assert "hello failed" in stranger["failed"]["body"]
    assert stranger["unknown"]["status"] == 404 and "demo-hello" not in stranger["unknown"]["body"]
    assert stranger["unknown"]["body"].count("\n") == 1
    assert stranger["index"]["status"] == 403 and "SECRET_PATH" not in stranger["index"]["body"]


BAD_HOSTS = [b"localhost:80@evil.com", b"evil.com/x", b"demo-hello.localhost:8x", b"[::1", b"::1",
             b"a_b c", b"localhost:123456", b"\xc3\xa9vil.localhost"]


@pytest.mark.parametrize("host", BAD_HOSTS)
def test_an_invalid_host_is_400_on_the_main_port(gw: Gateway, unix_upstream: Upstream, host: bytes) -> None:
    gw.routes(endpoint(upstreams=[up(unix_upstream)]))
    got = raw_exchange(gw.port, b"GET /echo HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 400"), got[:200]
    assert b"Host" in got and b"Known endpoints" not in got


def test_own_port_validates_and_allows_named_hosts(unix_upstream: Upstream) -> None:
    g = Gateway(0, "--allow-host", "myhost.lan", "--allow-host", "API.Example.com.").started()
    try:
        g.routes(endpoint(port=free_port(), upstreams=[up(unix_upstream)]))
        ev = g.wait_event(lambda e: e["type"] == "ports" and e["endpoints"].get("hello"))
        own = ev["endpoints"]["hello"]
        eventually(lambda: raw_exchange(own, b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                   .startswith(b"HTTP/1.1 200"), TIMEOUT, "own port serving")

        def status(host: bytes) -> int:
            got = raw_exchange(own, b"GET /echo HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
            return int(got[9:12])

        assert status(b"myhost.lan:9000") == 200
        assert status(b"api.example.com") == 200
        assert status(b"other.lan") == 403
        assert status(b"localhost:80@evil.com") == 400
    finally:
        g.close()


@pytest.mark.parametrize("target,want", [
    (b"http://demo-hello.localhost/echo/abs?x=1", b'"/echo/abs"'),
    (b"HTTP://Demo-Hello.localhost:1234/echo/abs", b'"/echo/abs"'),
    (b"http://other.example/echo/abs", b"HTTP/1.1 400"),
    (b"http://demo-hello.localhost@other.example/echo", b"HTTP/1.1 400"),
    (b"echo", b"HTTP/1.1 400"),
    (b"*", b"HTTP/1.1 400"),  # only OPTIONS * is a request for the server itself
])
def test_absolute_form_targets_must_match_the_host(gw: Gateway, unix_upstream: Upstream, target: bytes,
                                                   want: bytes) -> None:
    """The Host routes the request: a target naming another host would let the replica see another."""
    gw.routes(endpoint(upstreams=[up(unix_upstream)]))
    got = raw_exchange(gw.port, b"GET " + target + b" HTTP/1.1\r\nHost: demo-hello.localhost\r\nConnection: close\r\n\r\n")
    assert want in got, got[:300]


def test_cli_rejects_a_bad_allow_host() -> None:
    done = subprocess.run([sys.executable, "-m", "mwtui.engine.gateway", "--allow-host", "a b"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--allow-host" in done.stderr and "not a host name" in done.stderr
