"""Nothing user code starts outlives its replica, or mwtui: not even a process that left the replica's
session and process group (a double fork and setsid, or a web_server's own server started with
start_new_session) and ignores SIGTERM. Whether the endpoint is scaled down or stopped, mwtui is
stopped with Ctrl-C or killed with SIGKILL (forked replicas or cold-started ones), or the replica itself
is killed, those processes are gone soon after.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from mwtui.engine.facade import Engine
from mwtui.engine.loader import AppRef

from .conftest import Served, free_port, start_serve, stop_serve
from .eventually import eventually

pytestmark = pytest.mark.timeout(90)

APP = '''
import os, subprocess, sys, time
import modal

app = modal.App("strays")

# A double fork: the middle process exits at once, orphaning the last one, which leaves the replica's
# session and group and ignores SIGTERM. It writes its pid where it is told to.
STRAY = """
import os, signal, sys, time
if os.fork():
    os._exit(0)
os.setsid()
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(1000)
"""

# A web_server's own server, in a session of its own and deaf to SIGTERM.
SERVER = """
import http.server, os, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[2], "w") as f:
    f.write(str(os.getpid()))
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


@app.function()
@modal.fastapi_endpoint()
def spawn(path: str) -> int:
    subprocess.run([sys.executable, "-c", STRAY, path], check=True)
    while not os.path.exists(path):
        time.sleep(0.01)
    with open(path) as f:
        return int(f.read())


@app.function()
@modal.web_server({port})
def server():
    subprocess.Popen([sys.executable, "-c", SERVER, "{port}", {server_pid!r}], start_new_session=True)
'''


def gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for whoever adopted it to reap it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float = 20.0) -> None:
    def still_running() -> str:  # who is left, as of the timeout
        alive = []
        for p in pids:
            with contextlib.suppress(psutil.NoSuchProcess):  # gone since the last poll
                if not gone(p):
                    alive.append(psutil.Process(p).as_dict(["pid", "ppid", "status", "cmdline"]))
        return f"{pids} gone; still running: {alive}"

    eventually(lambda: all(gone(p) for p in pids), timeout, still_running)


@pytest.fixture
def app_file(tmp_path: Path) -> Path:
    app = tmp_path / "strays.py"
    app.write_text(APP.format(port=free_port(), server_pid=str(tmp_path / "server.pid")))
    return app


@pytest.fixture
def leftovers() -> Iterator[list[psutil.Process]]:
    """The strays a test made; any still alive at its end (the test failed) are killed, not leaked."""
    procs: list[psutil.Process] = []
    yield procs
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()  # psutil checks it is still the same process


def strays_of(served: Served, app_file: Path, leftovers: list[psutil.Process]) -> list[int]:
    """Start a stray in the `spawn` endpoint's replica; the pids of it and of the web_server's server."""
    pid = served.get("strays-spawn", params={"path": str(app_file.parent / "stray.pid")}).json()
    server_pid = int((app_file.parent / "server.pid").read_text())
    leftovers += [psutil.Process(pid), psutil.Process(server_pid)]
    assert not gone(pid) and not gone(server_pid)
    return [pid, server_pid]


def serving(app_file: Path, *extra: str) -> Served:
    served = start_serve(app_file, "--no-reload", *extra, env={"MWTUI_HOME": str(app_file.parent / "home")})
    served.wait_status("both running", lambda rows: all(e["state"] == "running" for e in rows.values()))
    return served


async def test_scale_down_and_stop_end_what_the_replica_started(app_file: Path, leftovers: list[psutil.Process]) -> None:
    engine = Engine(AppRef.parse(str(app_file)), port=0, own_ports=False, reload=False)
    await engine.start()
    try:
        assert await engine.wait_ready()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{engine.gateway.port}", timeout=30) as c:
            r = await c.get("/", params={"path": str(app_file.parent / "stray.pid")},
                            headers={"host": "strays-spawn.localhost"})
        pid, server_pid = r.json(), int((app_file.parent / "server.pid").read_text())
        leftovers += [psutil.Process(pid), psutil.Process(server_pid)]
        engine.scale("spawn", 0)
        engine.stop_endpoint("server")
        await asyncio.to_thread(wait_gone, [pid, server_pid])  # the engine's loop runs on meanwhile
    finally:
        await engine.close()


def test_ctrl_c_of_serve_ends_every_stray(app_file: Path, leftovers: list[psutil.Process]) -> None:
    served = serving(app_file)
    try:
        pids = strays_of(served, app_file, leftovers)
    finally:
        assert stop_serve(served, signal.SIGINT) == 0
    wait_gone(pids)


@pytest.mark.parametrize("start", ["forked", "cold"])
def test_sigkill_of_serve_ends_every_stray(app_file: Path, leftovers: list[psutil.Process], start: str) -> None:
    served = serving(app_file, *(["--cold-start"] if start == "cold" else []))
    try:
        pids = strays_of(served, app_file, leftovers)
        tree = served.tree_pids()
        served.proc.kill()
        served.proc.wait(10)
        wait_gone(pids)
        wait_gone(list(tree))  # and mwtui's own processes: gateway, zygote, replicas
    finally:
        stop_serve(served)


def test_a_killed_replica_leaves_no_stray(app_file: Path, leftovers: list[psutil.Process]) -> None:
    served = serving(app_file)
    try:
        pid, _ = strays_of(served, app_file, leftovers)
        [spawn] = [e for e in served.status() if e["name"] == "spawn"]
        replica = spawn["replica_list"][0]["pid"]
        assert psutil.Process(pid).ppid() == replica  # adopted by its replica, a subreaper
        psutil.Process(replica).kill()
        wait_gone([pid])
        served.wait_status("spawn replaced", lambda rows: rows["spawn"]["state"] == "running"
                           and rows["spawn"]["replica_list"][0]["pid"] != replica)
    finally:
        stop_serve(served)
