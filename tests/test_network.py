"""A network of its own for each web_server replica (engine/worker/network.py).

The pure parts (the /proc/net tables, pasta's command line, the mode) in microseconds; then a real
`mwtui serve` of a web_server on a fixed port that a host process also listens on: two replicas ready at
once, each reaching the host's loopback (the gateway's URL included) through pasta, a reload under load
that drops nothing, no pasta left afterwards, and the host-network fallback with `--no-container`.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest

from engine.worker import container, network

from .conftest import FIXTURES, Served, alive_pids, as_nobody_or_skip, free_port, start_serve, stop_serve
from .eventually import eventually

if not sys.platform.startswith("linux"):
    pytest.skip("network namespaces are Linux's", allow_module_level=True)

# --- pure -----------------------------------------------------------------------------------------------

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0
   1: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0
   2: 0200000A:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0
   3: 0100007F:2116 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0
   4: 0101007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0
"""
TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A
   1: 00000000000000000000000000000000:0BB9 00000000000000000000000000000000:0000 0A
   2: 0000000000000000FFFF00000100007F:0BBA 00000000000000000000000000000000:0000 0A
   3: 20010DB8000000000000000000000001:0BBB 00000000000000000000000000000000:0000 0A
"""


def test_listening_ports_are_those_localhost_reaches() -> None:
    # 127.0.0.1:8000, 0.0.0.0:2024 and 127.1.1.1:53 listen; 10.0.0.2:80 is another address; 8470 is a
    # connection, not a listener.
    assert network.listening_ports(TCP, network.TCP_LISTEN) == {8000, 2024, 53}
    # ::1, ::, ::ffff:127.0.0.1 yes; 2001:db8::1 no.
    assert network.listening_ports(TCP6, network.TCP_LISTEN) == {3000, 3001, 3002}
    udp = "  sl  local_address rem_address   st\n   0: 3500007F:0035 00000000:0000 07\n"
    assert network.listening_ports(udp, network.UDP_UNCONNECTED) == {53}
    assert network.listening_ports("", network.TCP_LISTEN) == set()


def test_port_spec_and_pasta_argv() -> None:
    assert network.port_spec([]) == "none"
    assert network.port_spec([8470, 80, 8470]) == "80,8470"
    assert network.port_spec(range(1, 1000)).count(",") == network.MAX_FORWARDED - 1
    as_root = network.pasta_argv({8470}, set(), "/proc/self/fd/4", None, 0)
    assert as_root[:4] == ["pasta", "--foreground", "--quiet", "--config-net"]
    assert as_root[as_root.index("-T") + 1] == "8470" and as_root[as_root.index("-U") + 1] == "none"
    assert as_root[as_root.index("-t") + 1] == "none"  # nothing of the host's is forwarded in
    assert as_root[-3:] == ["--netns", "/proc/self/fd/4", "--netns-only"]
    user = network.pasta_argv(set(), set(), "/proc/self/fd/4", "/proc/self/fd/5", 1000)
    assert user[-6:] == ["--runas", "1000", "--netns", "/proc/self/fd/4", "--userns", "/proc/self/fd/5"]


def test_wanted_ports() -> None:
    assert network.wanted_ports({}) is None
    assert network.wanted_ports({network.NETWORK_ENV: "8000,8001"}) == (8000, 8001)
    assert network.wanted_ports({network.NETWORK_ENV: "eight"}) is None


def test_mode_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert network.mode({container.CONTAINER_ENV: "0"}) == ("host", "--no-container")
    monkeypatch.setenv("PATH", str(tmp_path))  # no pasta here
    kind, why = network.mode({})
    if container.mode({})[0] == "container":
        assert kind == "host" and "apt install passt" in why
    else:
        assert kind == "host" and why == container.mode({})[1]


# --- for real ---------------------------------------------------------------------------------------------

needs_own_network = pytest.mark.skipif(
    network.mode()[0] != "own",
    reason=f"no network of its own here: {network.mode()[1]}",
)


class _Says(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.server.body  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def host_server(body: bytes, port: int = 0) -> Iterator[int]:
    """A server of the host's on its loopback, answering `body`; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Says)
    server.body = body  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _app(folder: Path) -> Path:
    for name in ("net_app.py", "net_server.py"):
        shutil.copy(FIXTURES / name, folder / name)
    return folder / "net_app.py"


def _pastas(served: Served) -> set[int]:
    out = set()
    for pid in served.tree_pids():
        try:
            if psutil.Process(pid).name().startswith(("pasta", "passt")):
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(scope="module")
def fixed() -> Iterator[tuple[int, int]]:
    """The app's fixed port, held on the host by a process of its own, and another host service."""
    with host_server(b"the host's own server") as port, host_server(b"a host service") as other:
        yield port, other


@pytest.fixture(scope="module")
def net_served(tmp_path_factory: pytest.TempPathFactory, fixed: tuple[int, int]) -> Iterator[Served]:
    if network.mode()[0] != "own":
        pytest.skip(f"no network of its own here: {network.mode()[1]}")
    served = start_serve(_app(tmp_path_factory.mktemp("net")), env={"MWTUI_TEST_PORT": str(fixed[0])})
    try:
        served.wait_status("two replicas ready", lambda rows: rows["srv"]["replicas"]["ready"] == 2)
        yield served
    finally:
        stop_serve(served)


@needs_own_network
def test_two_replicas_on_a_port_a_host_process_holds(net_served: Served, fixed: tuple[int, int]) -> None:
    port, _ = fixed
    rows = net_served.by_name()
    srv = rows["srv"]
    assert srv["state"] == "running" and srv["replicas"]["ready"] == 2
    assert srv["replicas"]["max_source"] != "web_server"  # no one-replica cap
    # Its network is made before the import: each replica imports the app, and the screen says why.
    assert srv["snapshot"]["mode"] == "fresh import" and "network of its own" in srv["snapshot"]["reason"]
    tasks = {r["id"] for r in srv["replica_list"]}
    assert len(tasks) == 2
    # Each replica answers on its own port 8000-alike; the host's process on that port is untouched.
    seen = net_served.get("net-srv").json()
    assert seen["version"] == "v1" and seen["task"].startswith("ta-")
    assert httpx.get(f"http://127.0.0.1:{port}/").text == "the host's own server"
    app = httpx.get(f"http://127.0.0.1:{net_served.port}/api/app").json()
    assert (app["network"], app["network_why"]) == ("own", None)


@needs_own_network
def test_a_replica_reaches_the_hosts_loopback(net_served: Served, fixed: tuple[int, int]) -> None:
    port, other = fixed
    # A service on the host's loopback, and the gateway's own URL (what get_web_url() calls use).
    assert net_served.get("net-srv", "/fetch", params={"url": f"http://127.0.0.1:{other}/"}).text == "a host service"
    app = net_served.get("net-srv", "/fetch", params={"url": f"http://localhost:{net_served.port}/api/app"})
    assert app.status_code == 200 and app.json()["name"] == "net"
    # Its own port is its own, inside: 127.0.0.1:PORT is the replica's server, not the host's.
    own = net_served.get("net-srv", "/fetch", params={"url": f"http://127.0.0.1:{port}/"})
    assert own.json()["version"] == "v1"


@needs_own_network
def test_reload_under_load_drops_nothing_and_leaves_no_pasta(tmp_path: Path) -> None:
    port = free_port()
    app = _app(tmp_path)
    served = start_serve(app, env={"MWTUI_TEST_PORT": str(port)})
    failures: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with served.client(f"net-srv.localhost:{served.port}") as c:
            while not stop.is_set():
                try:
                    r = c.get("/")
                    if r.status_code != 200:
                        failures.append(f"{r.status_code}: {r.text[:200]}")
                    else:
                        versions.append(r.json()["version"])
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    try:
        served.wait_status("two replicas ready", lambda rows: rows["srv"]["replicas"]["ready"] == 2)
        pastas = _pastas(served)
        assert len(pastas) == 2  # one per replica
        threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # on purpose: load builds up (and v1 is served) before the save
        app.write_text(app.read_text().replace('VERSION = "v1"', 'VERSION = "v2"'))
        eventually(lambda: versions[-20:] == ["v2"] * 20, 60, lambda: f"v2 alone served; last: {versions[-20:]}")
        served.wait_status("the old replicas gone", lambda rows: len(rows["srv"]["replica_list"]) == 2)
        stop.set()
        for t in threads:
            t.join(10)
        assert not failures, failures[:5]
        assert "v1" in versions and versions[-1] == "v2"
        # Blue/green: the old version served until the new one was ready, beside it.
        assert versions.index("v2") > 0
        pastas |= _pastas(served)
        assert len(pastas) == 4  # two per version
    finally:
        stop.set()
        stop_serve(served)
    eventually(lambda: not alive_pids(pastas), 10, lambda: f"every pasta gone; alive: {alive_pids(pastas)}")


def test_no_container_shares_the_hosts_network_one_replica_at_a_time(tmp_path: Path) -> None:
    port = free_port()
    served = start_serve(_app(tmp_path), "--no-container", env={"MWTUI_TEST_PORT": str(port)})
    try:
        rows = served.wait_status("running", lambda rows: rows["srv"]["state"] == "running")
        assert rows["srv"]["replicas"]["max"] == 1 and rows["srv"]["replicas"]["max_source"] == "web_server"
        served.wait_for_line(r"web_server replicas run on the host's network, one at a time per pool \(--no-container\)")
        app = httpx.get(f"http://127.0.0.1:{served.port}/api/app").json()
        assert (app["network"], app["network_why"]) == ("host", "--no-container")
        # On the host's network the port is the host's: the replica's server is right there.
        assert httpx.get(f"http://127.0.0.1:{port}/").json()["version"] == "v1"
    finally:
        stop_serve(served)


@needs_own_network
def test_replicas_port_is_not_on_the_host(net_served: Served, fixed: tuple[int, int]) -> None:
    """Nothing of the replicas listens on the host: the gateway reaches them through Unix sockets."""
    port, _ = fixed
    listeners = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN
                 and c.pid in net_served.tree_pids()}
    assert port not in listeners
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # the host's server still holds it
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):  # HTTP/1.0: the server closes after its answer
            answer += chunk
        assert answer.endswith(b"the host's own server")



UNPRIVILEGED_PROBE = """
import json, os, socket, sys, urllib.request
from mwtui.engine.worker import network
port, other = int(sys.argv[1]), int(sys.argv[2])
inside = network.enter(network.prepare_from_env({network.NETWORK_ENV: str(port)}))
s = socket.socket()
s.bind(("127.0.0.1", port))  # the host's process holds it outside
s.listen()
body = urllib.request.urlopen(f"http://127.0.0.1:{other}/", timeout=5).read().decode()
print(json.dumps({"inside": inside, "uid": os.getuid(), "fetched": body}))
"""


def test_a_network_of_its_own_as_an_unprivileged_user(fixed: tuple[int, int]) -> None:
    """Not root: the replica's network namespace belongs to a user namespace of its own, and pasta joins
    both; the fixed port the host holds is free inside, the host's loopback is reached."""
    nobody = as_nobody_or_skip("n", "the host's network")
    why = subprocess.run([*nobody, sys.executable, "-c", "from mwtui.engine.worker import network; "
                          "print(network.mode()[1])"], capture_output=True, text=True).stdout.strip()
    if why:
        pytest.skip(f"as nobody: {why}")
    port, other = fixed
    done = subprocess.run([*nobody, sys.executable, "-c", UNPRIVILEGED_PROBE, str(port), str(other)],
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == {"inside": True, "uid": 65534, "fetched": "a host service"}, done.stderr
