"""Replica start: forked from the zygote versus a cold `python -m mwtui.engine.worker`, in the same run.

    .venv/bin/python bench/replica_start.py [--runs 10] [--scale-runs 10]

1. Spawn-to-ready: for a fastapi_endpoint hello, an asgi_app (FastAPI) and a wsgi_app (Flask, under
   gunicorn), the time from `Spawner.spawn()` to the replica's "ready" line on its ready pipe, as the
   supervisor sees it; then the memory the idle replica costs (USS: pages only it holds; RSS). Zygote and
   cold starts alternate, so that both see the same machine load.
2. The container view (engine/worker/container.py): the same fastapi_endpoint with an `add_local_dir` at
   /assets and a volume at /data in its pool plan, in host mode (MWTUI_CONTAINER=0, as `--no-container`)
   against its own mount namespace, forked and cold, alternating. Needs root (or user namespaces).
3. A web_server replica (a ThreadingHTTPServer started in a thread of the replica, on a fixed port) on
   the host's network (MWTUI_CONTAINER=0, as `--no-container`) against a network of its own
   (MWTUI_OWN_NETWORK: a network namespace, pasta joined, a Unix-socket relay to the port), forked and
   cold, alternating; p50, p90 and own/host. Skipped, saying why, when `network.mode()` is not "own".
4. Scale from zero: a whole engine (gateway included) serving the FastAPI hello; its pool is scaled to
   zero, then back to one while a request arrives through the gateway, which holds it until the replica
   is ready. Time to the response's first byte.

The zygote's own start (once per mwtui, on the first spawn) is printed apart: it is not in the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
from mwtui.engine.facade import Engine
from mwtui.engine.lifeline import Lifeline
from mwtui.engine.loader import AppRef
from mwtui.engine.spawner import ColdSpawner, ReplicaProcess, Spawner, ZygoteSpawner
from mwtui.engine.worker import network

APPS = {
    "fastapi_endpoint": ("hello", """import modal
app = modal.App("bench")

@app.function()
@modal.fastapi_endpoint()
def hello():
    return {"hello": "world"}
"""),
    "asgi_app (FastAPI)": ("web", """import modal
app = modal.App("bench")

@app.function()
@modal.asgi_app()
def web():
    from fastapi import FastAPI
    api = FastAPI()

    @api.get("/")
    def hello():
        return {"hello": "world"}

    return api
"""),
    "wsgi_app (Flask)": ("web", """import modal
app = modal.App("bench")

@app.function()
@modal.wsgi_app()
def web():
    from flask import Flask
    api = Flask(__name__)

    @api.get("/")
    def hello():
        return {"hello": "world"}

    return api
"""),
}


async def ready_line(fd: int) -> dict:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                os.fdopen(fd, "rb", buffering=0))
    try:
        return json.loads(await reader.readline())
    finally:
        transport.close()


async def drain(proc: ReplicaProcess) -> None:
    assert proc.stdout is not None
    async for _ in proc.stdout:
        pass


def memory(pid: int) -> tuple[float, float]:
    """USS and RSS in MB of the replica's whole tree (gunicorn's worker included)."""
    root = psutil.Process(pid)
    uss = rss = 0
    for p in [root, *root.children(recursive=True)]:
        info = p.memory_full_info()
        uss += info.uss
        rss += info.rss
    return uss / 2**20, rss / 2**20


async def start_once(spawner: Spawner, app: Path, pool: str, lifeline: Lifeline, sock_dir: str,
                     n: int, env_extra: dict[str, str] | None = None) -> tuple[float, float, float]:
    ready_r, ready_w = os.pipe()
    env = {**os.environ, **lifeline.env(), "MWTUI_READY_FD": str(ready_w), "PYTHONUNBUFFERED": "1",
           **(env_extra or {})}
    argv = [str(app), "--pool", pool, "--socket-dir", sock_dir, "--replica", f"{pool}.{n}"]
    t0 = time.perf_counter()
    try:
        proc = await spawner.spawn(argv, env, str(app.parent), (ready_w, lifeline.child_fd))
    finally:
        os.close(ready_w)
    pump = asyncio.create_task(drain(proc))
    msg = await asyncio.wait_for(ready_line(ready_r), 60)
    ms = (time.perf_counter() - t0) * 1000
    if msg.get("event") != "ready":
        raise SystemExit(f"{app.name}: {msg}")
    await asyncio.sleep(0.3)  # idle, as between requests
    uss, rss = memory(proc.pid)
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 30)
    await asyncio.wait_for(pump, 5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return ms, uss, rss


async def spawn_to_ready(runs: int, folder: Path) -> list[tuple[str, dict[str, list[tuple[float, float, float]]]]]:
    lifeline = Lifeline()
    sock_dir = tempfile.mkdtemp(prefix="mwb")
    zygote = ZygoteSpawner()
    cold = ColdSpawner()
    results = []
    try:
        first = folder / "warm.py"
        first.write_text(APPS["fastapi_endpoint"][1])
        first_ms, _, _ = await start_once(zygote, first, "hello", lifeline, sock_dir, 0)  # starts the zygote
        z = zygote._zygote
        info = z.info if z else {}
        print(f"zygote start (once per mwtui, not in the figures): its first replica ready in {first_ms:.0f} ms; "
              f"the zygote's own imports {info.get('preload_ms')} ms, {info.get('modules')} modules")
        for kind, (pool, source) in APPS.items():
            app = folder / f"bench_{pool}_{len(results)}.py"
            app.write_text(source)
            times: dict[str, list[tuple[float, float, float]]] = {"zygote": [], "cold": []}
            for i in range(runs):
                for mode, spawner in (("zygote", zygote), ("cold", cold)) if i % 2 == 0 else (
                        ("cold", cold), ("zygote", zygote)):
                    times[mode].append(await start_once(spawner, app, pool, lifeline, sock_dir, i))
            if zygote.cold_reason:
                raise SystemExit(f"the zygote fell back to cold starts: {zygote.cold_reason}")
            results.append((kind, times))
    finally:
        await zygote.close()
        lifeline.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
    return results


CONTAINER_APP = """import modal
app = modal.App("bench")

@app.function()
@modal.fastapi_endpoint()
def hello():
    import os
    return {"hello": open("/assets/a.txt").read() if os.path.exists("/assets") else "host"}
"""


async def alternate(app: Path, pool: str, modes: dict[str, dict[str, str]], runs: int,
                    spawners: tuple[str, ...] = ("zygote", "cold")) -> dict[str, dict[str, list[float]]]:
    """Spawn-to-ready per spawner and mode, the modes alternating (each run reverses their order), so
    that all see the same machine load. The zygote's own start (on a first spawn) is not counted."""
    lifeline = Lifeline()
    sock_dir = tempfile.mkdtemp(prefix="mwb")
    zygote, cold = ZygoteSpawner(), ColdSpawner()
    by_name: dict[str, Spawner] = {"zygote": zygote, "cold": cold}
    first = next(iter(modes.values()))
    out: dict[str, dict[str, list[float]]] = {}
    try:
        await start_once(zygote, app, pool, lifeline, sock_dir, 0, first)  # starts the zygote
        for spawn_name in spawners:
            times: dict[str, list[float]] = {m: [] for m in modes}
            for i in range(runs):
                for mode in (list(modes) if i % 2 == 0 else list(reversed(modes))):
                    ms, _, _ = await start_once(by_name[spawn_name], app, pool, lifeline, sock_dir, i + 1,
                                                modes[mode])
                    times[mode].append(ms)
            out[spawn_name] = times
        if zygote.cold_reason:
            raise SystemExit(f"the zygote fell back to cold starts: {zygote.cold_reason}")
    finally:
        await zygote.close()
        lifeline.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
    return out


async def container_view(runs: int, folder: Path) -> dict[str, dict[str, list[float]]]:
    """Spawn-to-ready per spawner and mode: host mode against the container view, same plan."""
    (folder / "site").mkdir(exist_ok=True)
    (folder / "site" / "a.txt").write_text("asset")
    app = folder / "bench_container.py"
    app.write_text(CONTAINER_APP)
    plan = json.dumps({"version": 1, "env": [], "mounts": [
        {"path": "/assets", "target": str(folder / "site"), "what": "add_local_dir('site')", "env_var": None,
         "note": ""},
        {"path": "/data", "target": str(folder / "home" / "volumes" / "v"), "what": "volume `v`",
         "env_var": "MWTUI_VOLUME_V", "note": ""},
    ]})
    modes = {"host mode": {"MWTUI_POOL_PLAN": plan, "MWTUI_CONTAINER": "0"},
             "container view": {"MWTUI_POOL_PLAN": plan, "MWTUI_CONTAINER": "1"}}
    return await alternate(app, "hello", modes, runs)


# The server runs in a thread of the replica, not a second interpreter, so that the figure is mwtui's
# start (and the namespace's) rather than another Python's imports.
WEB_SERVER_APP = """import modal
app = modal.App("bench")

@app.function()
@modal.web_server({port})
def srv():
    import http.server
    import threading

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

    server = http.server.ThreadingHTTPServer(("0.0.0.0", {port}), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def web_server_network(runs: int, folder: Path) -> dict[str, dict[str, list[float]]]:
    """Spawn-to-ready of a web_server replica: the host's network (as `--no-container`) against a
    network namespace of its own (pasta joined, a Unix-socket relay to its port), alternating."""
    port = free_port()  # free on the host: the host-network replica binds it there
    app = folder / "bench_web_server.py"
    app.write_text(WEB_SERVER_APP.format(port=port))
    # What the supervisor sets: MWTUI_OWN_NETWORK only for "own"; --no-container sets MWTUI_CONTAINER=0,
    # which also keeps a replica out of any network namespace.
    modes = {"host network": {"MWTUI_CONTAINER": "0"},
             "own network": {"MWTUI_CONTAINER": "1", network.NETWORK_ENV: str(port)}}
    return await alternate(app, "srv", modes, runs)


async def first_byte(port: int, host: str) -> float:
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    head = await reader.read(1)
    ms = (time.perf_counter() - t0) * 1000
    rest = await reader.read()
    writer.close()
    if not (head + rest).startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"scale from zero: {(head + rest)[:200]!r}")
    return ms


async def scale_from_zero(runs: int, folder: Path, spawner: Spawner) -> list[float]:
    app = folder / "bench.py"
    app.write_text(APPS["fastapi_endpoint"][1])
    engine = Engine(AppRef.parse(str(app)), port=0, reload=False, own_ports=False, spawner=spawner)
    times = []
    try:
        await engine.start()
        if not await engine.wait_ready(60):
            raise SystemExit("scale from zero: the app did not start")
        port = engine.gateway.port
        assert port
        pool = engine.pools["hello"]
        for _ in range(runs):
            engine.scale("hello", 0)
            while pool.replicas:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            request = asyncio.create_task(first_byte(port, "bench-hello.localhost"))
            await asyncio.sleep(0)  # the request is on its way before the pool wakes
            engine.scale("hello", 1)
            times.append(await request)
    finally:
        await engine.close()
    return times


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10, method="inclusive")[-1] if len(xs) > 1 else xs[0]


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10, help="starts per kind and mode")
    ap.add_argument("--scale-runs", type=int, default=10, help="wake-ups per mode")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mwtui-bench-"))
    atexit.register(shutil.rmtree, folder, True)  # nothing left in /tmp
    try:
        print(f"spawn-to-ready, {args.runs} starts per kind and mode (alternating), "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        results = await spawn_to_ready(args.runs, folder)
        print(f"{'kind':<20} {'zygote p50':>10} {'min':>6} {'max':>6} {'cold p50':>9} {'min':>6} {'max':>6} "
              f"{'cold/zygote':>11}   {'USS MB z/c':>11} {'RSS MB z/c':>11}")
        for kind, times in results:
            z = [t[0] for t in times["zygote"]]
            c = [t[0] for t in times["cold"]]
            zu, cu = p50([t[1] for t in times["zygote"]]), p50([t[1] for t in times["cold"]])
            zr, cr = p50([t[2] for t in times["zygote"]]), p50([t[2] for t in times["cold"]])
            print(f"{kind:<20} {p50(z):>8.1f}ms {min(z):>6.1f} {max(z):>6.1f} {p50(c):>7.1f}ms {min(c):>6.1f} "
                  f"{max(c):>6.1f} {p50(c) / p50(z):>10.1f}x   {zu:>5.1f}/{cu:<5.1f} {zr:>5.1f}/{cr:<5.1f}")
        print()
        print(f"container view against host mode (fastapi_endpoint, /assets and /data mounted), {args.runs} "
              "starts each, alternating")
        print(f"{'spawn':<8} {'host p50':>9} {'container p50':>14} {'min':>6} {'max':>6} {'container/host':>15}")
        for spawn_name, times in (await container_view(args.runs, folder)).items():
            h, v = times["host mode"], times["container view"]
            print(f"{spawn_name:<8} {p50(h):>7.1f}ms {p50(v):>12.1f}ms {min(v):>6.1f} {max(v):>6.1f} "
                  f"{p50(v) / p50(h):>14.2f}x")
        print()
        kind, why = network.mode()
        if kind != "own":
            print(f"web_server: host network vs a network of its own: skipped ({why})")
        else:
            print(f"web_server: host network vs a network of its own (a ThreadingHTTPServer on a fixed port), "
                  f"{args.runs} starts each, alternating")
            print(f"{'spawn':<8} {'host p50':>9} {'p90':>7} {'own p50':>8} {'p90':>7} {'min':>6} {'max':>6} "
                  f"{'own/host':>9} {'own-host':>9}")
            for spawn_name, times in (await web_server_network(args.runs, folder)).items():
                h, o = times["host network"], times["own network"]
                print(f"{spawn_name:<8} {p50(h):>7.1f}ms {p90(h):>7.1f} {p50(o):>6.1f}ms {p90(o):>7.1f} "
                      f"{min(o):>6.1f} {max(o):>6.1f} {p50(o) / p50(h):>8.2f}x {p50(o) - p50(h):>+7.1f}ms")
        print()
        print(f"scale from zero (engine + gateway, fastapi_endpoint), {args.scale_runs} wake-ups per mode: "
              "first byte of a request that wakes the pool")
        z = await scale_from_zero(args.scale_runs, folder, ZygoteSpawner())
        c = await scale_from_zero(args.scale_runs, folder, ColdSpawner())
        print(f"{'mode':<8} {'p50 ms':>8} {'min':>7} {'max':>7}")
        for mode, xs in (("zygote", z), ("cold", c)):
            print(f"{mode:<8} {p50(xs):>8.1f} {min(xs):>7.1f} {max(xs):>7.1f}")
        print(f"cold/zygote: {p50(c) / p50(z):.1f}x")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
