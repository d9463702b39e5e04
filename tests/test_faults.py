"""Faults, end to end through `mwtui serve`: a replica killed mid-request, a web_server's own process
killed, a request over its function's timeout, the gateway process killed, and a crash loop. Each
time the client gets a clear status and mwtui recovers (or, for the crash loop, stops and says why).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from .conftest import Served, free_port, start_serve, stop_serve
from .eventually import eventually

pytestmark = pytest.mark.timeout(120)

APP = '''
import subprocess, time
import modal

app = modal.App("faults")


@app.function()
@modal.fastapi_endpoint()
def slow(s: float = 0):
    time.sleep(s)
    return {{"slept": s}}


@app.function(timeout=2)
@modal.fastapi_endpoint()
def limited(s: float = 0):
    time.sleep(s)
    return {{"slept": s}}


@app.function()
@modal.web_server({port})
def srv():
    subprocess.Popen(["python", "-m", "http.server", "{port}"])
'''


def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    """`eventually`, where an HTTP error means "not yet": these tests kill what answers."""
    return eventually(pred, timeout, what, retry_on=(httpx.HTTPError,))


def endpoint(served: Served, name: str) -> dict[str, Any]:
    return {e["name"]: e for e in served.status()}[name]


def in_background(fn: Callable[[], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["r"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            out["r"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    out["thread"] = t
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("faults")
    app = folder / "faults.py"
    app.write_text(APP.format(port=free_port()))
    s = start_serve(app, "--no-reload", env={"MWTUI_HOME": str(folder / "home")})
    try:
        status = s.wait_running()
        assert all(e["state"] == "running" for e in status), status
        yield s
    finally:
        stop_serve(s)


def test_replica_killed_mid_request_is_502_and_replaced(served: Served) -> None:
    before = endpoint(served, "slow")
    pending = in_background(lambda: served.get("faults-slow", params={"s": 30}))
    wait_for(lambda: endpoint(served, "slow")["inflight"] == 1, 10, "the request in flight")
    pid = before["replica_list"][0]["pid"]
    psutil.Process(pid).kill()
    pending["thread"].join(10)
    r = pending["r"]
    assert isinstance(r, httpx.Response) and r.status_code == 502, r
    assert "endpoint slow replica" in r.text, r.text  # the 502 names the endpoint (and replica)
    after = wait_for(lambda: (e := endpoint(served, "slow"))["state"] == "running"
                     and e["restarts"] == before["restarts"] + 1 and e, 30, "a replacement replica")
    assert after["replica_list"][0]["pid"] != pid
    assert served.get("faults-slow").json() == {"slept": 0.0}


def test_web_server_process_killed_is_detected_and_restarted(served: Served) -> None:
    before = endpoint(served, "srv")
    assert served.get("faults-srv").status_code == 200
    replica = psutil.Process(before["replica_list"][0]["pid"])
    [server] = [p for p in replica.children(recursive=True) if "http.server" in " ".join(p.cmdline())]
    server.kill()
    # The replica notices its port refusing connections, exits, and the supervisor starts another.
    wait_for(lambda: endpoint(served, "srv")["restarts"] == before["restarts"] + 1, 30, "the replica to be replaced")
    wait_for(lambda: served.get("faults-srv").status_code == 200, 30, "the web_server to serve again")
    served.wait_for_line(r"nothing accepts connections on port \d+ any more")  # said why, in its log


def test_request_over_timeout_is_504_and_frees_the_slot(served: Served) -> None:
    # max_inputs is Modal's default, 1: the second request can only run once the first lets go.
    first = in_background(lambda: served.get("faults-limited", params={"s": 6}))
    wait_for(lambda: endpoint(served, "limited")["inflight"] == 1, 10, "the request in flight")
    t0 = time.monotonic()
    second = served.get("faults-limited", params={"s": 0})
    first["thread"].join(10)
    r = first["r"]
    assert isinstance(r, httpx.Response) and r.status_code == 504 and "timeout of 2s" in r.text, r
    assert second.status_code == 200 and second.json() == {"slept": 0.0}
    assert time.monotonic() - t0 < 5.5  # it did not wait for the 6 s request to finish


def test_gateway_killed_is_restarted_on_the_same_port(served: Served) -> None:
    assert served.get("faults-slow").status_code == 200
    [gateway] = [p for p in psutil.Process(served.proc.pid).children(recursive=True)
                 if "mwtui.engine.gateway" in " ".join(p.cmdline())]
    gateway.send_signal(signal.SIGKILL)
    wait_for(lambda: served.get("faults-slow").status_code == 200, 20, "the gateway to serve again")
    served.wait_for_line(rf"gateway process ended by signal SIGKILL; starting it again on port {served.port}")
    [again] = [p for p in psutil.Process(served.proc.pid).children(recursive=True)
               if "mwtui.engine.gateway" in " ".join(p.cmdline())]
    assert again.pid != gateway.pid
    # The engine's status reaches the new gateway too.
    wait_for(lambda: endpoint(served, "srv").get("kind") == "web_server", 10, "status re-sent")


def test_crash_loop_ends_in_failed_with_the_traceback(tmp_path: Path) -> None:
    app = tmp_path / "loop.py"
    app.write_text(
        "import modal\napp = modal.App('loop')\n"
        "@app.function()\n@modal.fastapi_endpoint()\ndef fine():\n    return 'ok'\n"
        "@app.function()\n@modal.asgi_app()\ndef crashy():\n"
        "    raise RuntimeError('boom on every start')\n"
    )
    served = start_serve(app, "--no-reload", env={"MWTUI_HOME": str(tmp_path / "home")})
    try:
        crashy = wait_for(lambda: (e := endpoint(served, "crashy"))["state"] == "failed" and e, 60, "failed")
        assert "RuntimeError: boom on every start" in crashy["last_error"]
        assert "Traceback" in crashy["last_error"] and "loop.py" in crashy["last_error"]
        restarts = crashy["restarts"]
        assert restarts >= 1  # it was retried before giving up...
        time.sleep(1)  # ...and then it stays given up: no endless loop
        again = endpoint(served, "crashy")
        assert again["state"] == "failed" and again["restarts"] == restarts
        r = served.get("loop-crashy")
        assert r.status_code == 503 and "boom on every start" in r.text
        assert served.get("loop-fine").status_code == 200
    finally:
        stop_serve(served)
