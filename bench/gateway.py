"""Gateway throughput: wrk against uvicorn directly (TCP), through the mwtui gateway and through nginx.

    .venv/bin/python bench/gateway.py [--runs 3] [--duration 5] [--connections 32]

Two apps, each under uvicorn on a TCP port (direct) and on a Unix socket (behind the proxies):
- a FastAPI hello (`@app.get("/")` returning a dict): the replica is the bottleneck;
- a raw ASGI hello (a bare `async def app(scope, receive, send)`, no framework): the proxy is.
The mwtui gateway and nginx (one worker, upstream keep-alive; config generated in a temp dir, run
with `nginx -c FILE -g 'daemon off;'`) both front the same Unix-socket replicas. For raw ASGI, nginx
runs twice: bare, and "nginx+fwd" adding the X-Forwarded-For/-Proto/-Host headers the gateway adds (as
Debian's proxy_params does): the same work, the same headers for the replica to parse. The target is
judged against bare nginx, the stricter baseline; nginx+fwd shows what forwarding itself costs. Runs
The gateway runs twice, with the request inspector capturing every request (the default) and with
`--no-inspect`, for the inspector's own cost (raw ASGI, target on/off >= 0.95). Runs
`wrk -t1 -c32 -d5s --latency` against every target, alternating, then `wrk -t1 -c1` (low load) for
the added p50, and prints medians and the ratios: gateway/direct for FastAPI, gateway/nginx for raw
ASGI, and gateway minus direct p50 at low load.
Exits 2 if wrk or nginx is missing (Debian/Ubuntu: apt-get install wrk nginx).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from serving import RAW

APP = '''
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def hello():
    return {"hello": "world"}
'''
NGINX = '''
worker_processes 1;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    upstream fastapi {{ server unix:{tmp}/fastapi.sock; keepalive 64; }}
    upstream raw {{ server unix:{tmp}/raw.sock; keepalive 64; }}
    server {{
        listen 127.0.0.1:{fastapi_port};
        location / {{ proxy_pass http://fastapi; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}
    server {{
        listen 127.0.0.1:{raw_port};
        location / {{ proxy_pass http://raw; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}
    server {{
        listen 127.0.0.1:{raw_fwd_port};
        location / {{
            proxy_pass http://raw; proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
        }}
    }}
}}
'''
APPS = {"fastapi": "app:app", "raw": "raw:app"}


def wait_connectable(family: int, address: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(family) as s:
            try:
                s.connect(address)  # type: ignore[arg-type]
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"nothing listening on {address} after {timeout}s") from None
        time.sleep(0.05)


def uvicorn(folder: Path, app: str, *bind: str, log_level: str = "warning",
            stderr: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--app-dir", str(folder), "--log-level", log_level,
         "--no-access-log", "--lifespan", "off" if app.startswith("raw") else "auto", *bind],
        stderr=stderr, start_new_session=True,
    )


def bound_port(proc: subprocess.Popen[bytes]) -> int:
    """The port uvicorn says it bound ("Uvicorn running on http://127.0.0.1:PORT"); keep draining after."""
    assert proc.stderr is not None
    for raw in proc.stderr:
        m = re.search(rb"running on http://[^:]+:(\d+)", raw, re.I)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
            return int(m.group(1))
    raise SystemExit("uvicorn exited before it was listening")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(pid: int) -> list[int]:
    """The process and its children (nginx: master and worker)."""
    try:
        p = psutil.Process(pid)
        return [pid] + [c.pid for c in p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def run_wrk(url: str, host: str | None, threads: int, connections: int,
            duration: int) -> tuple[float, float, int, int]:
    """(req/s, p50 ms, non-2xx count, requests) of one wrk run."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url]
    if host:
        cmd[1:1] = ["-H", f"Host: {host}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
    p50 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if errors:
        print(f"  wrk: {errors.group(0)}", file=sys.stderr)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, p50, int(bad.group(1)) if bad else 0, requests


def start_gateway(socks: dict[str, Path], *flags: str) -> tuple[subprocess.Popen[bytes], int]:
    gateway = subprocess.Popen(
        [sys.executable, "-m", "mwtui.engine.gateway", "--host", "127.0.0.1", "--port", "0", *flags],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
    )
    assert gateway.stdin and gateway.stdout
    first = json.loads(gateway.stdout.readline())
    if first.get("type") != "listening":
        gateway.kill()
        raise SystemExit(f"gateway did not start: {first}")
    # Keep reading its events so that it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in gateway.stdout], daemon=True).start()  # type: ignore[union-attr]
    gateway.stdin.write(json.dumps({"type": "routes", "endpoints": [{
        "name": name, "label": f"bench-{name}", "domains": [], "port": None, "requires_proxy_auth": False,
        "state": "running", "hold_s": 30,
        # What the engine sends for @modal.concurrent(max_inputs=1000) and the default timeout:
        # the per-replica cap and the timeout sweep are on the measured path.
        "max_inputs": 1000, "timeout": 300,
        "upstreams": [{"id": f"{name}.0", "address": f"unix:{sock}", "dispatch": None}],
    } for name, sock in socks.items()]}).encode() + b"\n")
    gateway.stdin.flush()
    return gateway, int(first["port"])


def warm(url: str, host: str | None) -> None:
    deadline = time.monotonic() + 10
    while True:
        cmd = ["curl", "-sf", "-o", "/dev/null", url] + (["-H", f"Host: {host}"] if host else [])
        if shutil.which("curl") is None or subprocess.run(cmd).returncode == 0:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} does not answer")
        time.sleep(0.1)
    run_wrk(url, host, 1, 32, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--low-duration", type=int, default=3, help="seconds of each -c1 run")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian/Ubuntu: apt-get install {tool}); cannot benchmark",
                  file=sys.stderr)
            return 2

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="mwtui-bench-") as tmp:
        folder = Path(tmp)
        (folder / "app.py").write_text(APP)
        (folder / "raw.py").write_text(RAW)
        socks = {name: folder / f"{name}.sock" for name in APPS}
        try:
            # --port, not --fd: uvicorn wraps a passed fd as AF_UNIX and then never sets TCP_NODELAY,
            # which costs ~40 ms a request (Nagle + delayed ACK) and would flatter the gateway.
            direct_ports: dict[str, int] = {}
            replicas: dict[str, int] = {}
            directs: dict[str, int] = {}
            for name, app in APPS.items():
                d = uvicorn(folder, app, "--port", "0", log_level="info", stderr=subprocess.PIPE)
                procs.append(d)
                direct_ports[name] = bound_port(d)
                directs[name] = d.pid
                r = uvicorn(folder, app, "--uds", str(socks[name]))
                procs.append(r)
                replicas[name] = r.pid
            gateway, gw_port = start_gateway(socks)
            procs.append(gateway)
            # The same gateway with the request inspector off: what capturing every request costs.
            bare_gateway, bare_port = start_gateway(socks, "--no-inspect")
            procs.append(bare_gateway)
            nginx_ports = {name: free_port() for name in [*APPS, "raw_fwd"]}
            conf = folder / "nginx.conf"
            # As root, nginx's worker would switch to `nobody`, who cannot reach sockets in our 0700 temp dir.
            user = "user root;" if os.geteuid() == 0 else ""
            conf.write_text(NGINX.format(user=user, tmp=folder, fastapi_port=nginx_ports["fastapi"],
                                         raw_port=nginx_ports["raw"], raw_fwd_port=nginx_ports["raw_fwd"]))
            nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(folder), "-g", "daemon off;"],
                                     start_new_session=True)
            procs.append(nginx)
            for name in APPS:
                wait_connectable(socket.AF_UNIX, str(socks[name]))
                wait_connectable(socket.AF_INET, ("127.0.0.1", direct_ports[name]))
            for port in nginx_ports.values():
                wait_connectable(socket.AF_INET, ("127.0.0.1", port))

            # name -> (url, Host header, {process label: pid whose tree we time})
            targets: dict[str, tuple[str, str | None, dict[str, int]]] = {}
            for name, title in (("fastapi", "FastAPI"), ("raw", "raw ASGI")):
                targets[f"{title} direct (tcp)"] = (
                    f"http://127.0.0.1:{direct_ports[name]}/", None, {"uvicorn": directs[name]})
                targets[f"{title} via gateway"] = (
                    f"http://127.0.0.1:{gw_port}/", f"bench-{name}.localhost:{gw_port}",
                    {"proxy": gateway.pid, "uvicorn": replicas[name]})
                targets[f"{title} via nginx"] = (
                    f"http://127.0.0.1:{nginx_ports[name]}/", None, {"proxy": nginx.pid, "uvicorn": replicas[name]})
            targets["raw ASGI gw no-inspect"] = (
                f"http://127.0.0.1:{bare_port}/", f"bench-raw.localhost:{bare_port}",
                {"proxy": bare_gateway.pid, "uvicorn": replicas["raw"]})
            # nginx doing the gateway's forwarding too (the X-Forwarded-* lines of Debian's proxy_params):
            # the same work on both sides, and the same headers for the replica to parse.
            targets["raw ASGI via nginx+fwd"] = (
                f"http://127.0.0.1:{nginx_ports['raw_fwd']}/", None, {"proxy": nginx.pid, "uvicorn": replicas["raw"]})
            for url, host, _ in targets.values():
                warm(url, host)

            loads = {"c": (args.connections, args.duration), "c1": (1, args.low_duration)}
            results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
            cpu_us: dict[str, dict[str, list[float]]] = {n: {p: [] for p in w} for n, (_, _, w) in targets.items()}
            for i in range(args.runs):
                for load, (conns, duration) in loads.items():
                    for name, (url, host, watched) in targets.items():
                        trees = {p: tree(pid) for p, pid in watched.items()}
                        before = {p: cpu_seconds(pids) for p, pids in trees.items()}
                        rps, p50, bad, requests = run_wrk(url, host, args.threads, conns, duration)
                        if load == "c":
                            for p, pids in trees.items():
                                cpu_us[name][p].append((cpu_seconds(pids) - before[p]) / max(requests, 1) * 1e6)
                        results.setdefault((load, name), []).append((rps, p50, bad))
                        print(f"  run {i + 1} -c{conns:<3} {name:<22} {rps:>9.0f} req/s  p50 {p50:.3f} ms"
                              + (f"  NON-2XX {bad}" if bad else ""), file=sys.stderr)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()

    med = {key: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
           for key, rs in results.items()}
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency, and -t1 -c1 "
          f"-d{args.low_duration}s; median of {args.runs} runs, {os.cpu_count()} CPUs\n")
    print(f"| {'target':<22} | {'req/s':>8} | {'p50 ms':>7} | {'-c1 req/s':>9} | {'-c1 p50 ms':>10} "
          f"| {'CPU us/request':<24} |")
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 9}|{'-' * 11}|{'-' * 12}|{'-' * 26}|")
    for name in targets:
        rps, p50 = med[("c", name)]
        rps1, p501 = med[("c1", name)]
        cpu = ", ".join(f"{p} {statistics.median(v):.0f}" for p, v in cpu_us[name].items())
        print(f"| {name:<22} | {rps:>8.0f} | {p50:>7.2f} | {rps1:>9.0f} | {p501:>10.3f} | {cpu:<24} |")

    def ratio(a: str, b: str) -> float:
        return med[("c", a)][0] / med[("c", b)][0]

    def added(a: str, b: str) -> float:
        return med[("c1", a)][1] - med[("c1", b)][1]

    checks = [
        ("FastAPI gateway/direct req/s", ratio("FastAPI via gateway", "FastAPI direct (tcp)"), ">= 1.00", 1.0),
        ("FastAPI gateway/nginx req/s", ratio("FastAPI via gateway", "FastAPI via nginx"), "", None),
        ("raw ASGI gateway/nginx req/s", ratio("raw ASGI via gateway", "raw ASGI via nginx"), ">= 0.90", 0.9),
        ("raw ASGI gateway/nginx+fwd req/s", ratio("raw ASGI via gateway", "raw ASGI via nginx+fwd"), "", None),
        ("raw ASGI gateway/direct req/s", ratio("raw ASGI via gateway", "raw ASGI direct (tcp)"), "", None),
        ("raw ASGI inspector on/off req/s", ratio("raw ASGI via gateway", "raw ASGI gw no-inspect"),
         ">= 0.95", 0.95),
    ]
    print()
    for label, value, target, floor in checks:
        verdict = "" if floor is None else ("  met" if value >= floor else "  NOT met")
        print(f"{label:<36} {value:6.2f}  {target}{verdict}")
    for title in ("FastAPI", "raw ASGI"):
        gw = added(f"{title} via gateway", f"{title} direct (tcp)")
        ng = added(f"{title} via nginx", f"{title} direct (tcp)")
        verdict = "met" if gw < 0.3 else "NOT met"
        print(f"{title + ' added p50 at -c1':<36} gateway {gw * 1000:+.0f} us (< 300: {verdict}), "
              f"nginx {ng * 1000:+.0f} us")
    if any(r[2] for rs in results.values() for r in rs):
        print("some responses were not 2xx/3xx: the figures are not valid", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
