"""Gateway throughput: wrk against uvicorn directly (TCP) versus through the mwtui gateway (Unix socket).

    .venv/bin/python bench/gateway.py [--runs 3] [--duration 5] [--connections 32]

Starts a FastAPI hello (`@app.get("/")` returning a dict) under uvicorn twice, on a TCP port and on a
Unix socket, and the gateway routing `bench-hello.localhost` to the socket. Runs
`wrk -t1 -c32 -d5s --latency` against each, alternating, and prints medians and the ratio.
Exits 2 if wrk is missing (Debian/Ubuntu: apt-get install wrk).
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

APP = '''
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def hello():
    return {"hello": "world"}
'''
LABEL = "bench-hello"


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


def uvicorn(folder: Path, *bind: str, log_level: str = "warning", stderr: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(folder), "--log-level", log_level,
         "--no-access-log", *bind],
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


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def run_wrk(url: str, host: str | None, args: argparse.Namespace) -> tuple[float, float, int, int]:
    """(req/s, p50 ms, non-2xx count, requests) of one wrk run."""
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency", url]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian/Ubuntu: apt-get install wrk); cannot benchmark", file=sys.stderr)
        return 2

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="mwtui-bench-") as tmp:
        folder = Path(tmp)
        (folder / "app.py").write_text(APP)
        sock_path = folder / "hello.sock"
        try:
            # --port, not --fd: uvicorn wraps a passed fd as AF_UNIX and then never sets TCP_NODELAY,
            # which costs ~40 ms a request (Nagle + delayed ACK) and would flatter the gateway.
            direct = uvicorn(folder, "--port", "0", log_level="info", stderr=subprocess.PIPE)
            procs.append(direct)
            direct_port = bound_port(direct)
            via = uvicorn(folder, "--uds", str(sock_path))
            procs.append(via)
            gateway = subprocess.Popen(
                [sys.executable, "-m", "mwtui.engine.gateway", "--host", "127.0.0.1", "--port", "0"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
            )
            procs.append(gateway)
            assert gateway.stdin and gateway.stdout
            first = json.loads(gateway.stdout.readline())
            if first.get("type") != "listening":
                print(f"gateway did not start: {first}", file=sys.stderr)
                return 1
            gw_port = int(first["port"])
            # Keep reading its events so that it never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in gateway.stdout], daemon=True).start()  # type: ignore[union-attr]
            gateway.stdin.write(json.dumps({"type": "routes", "endpoints": [{
                "name": "hello", "label": LABEL, "domains": [], "port": None, "requires_proxy_auth": False,
                "state": "running", "hold_s": 30,
                # What the engine sends for @modal.concurrent(max_inputs=1000) and the default timeout:
                # the per-replica cap and the timeout sweep are on the measured path.
                "max_inputs": 1000, "timeout": 300,
                "upstreams": [{"id": "hello.0", "address": f"unix:{sock_path}", "dispatch": None}],
            }]}).encode() + b"\n")
            gateway.stdin.flush()
            wait_connectable(socket.AF_UNIX, str(sock_path))
            wait_connectable(socket.AF_INET, ("127.0.0.1", direct_port))

            targets = {
                "direct uvicorn (tcp)": (f"http://127.0.0.1:{direct_port}/", None),
                "through gateway (unix)": (f"http://127.0.0.1:{gw_port}/", f"{LABEL}.localhost:{gw_port}"),
            }
            # CPU seconds per request, per process: unlike req/s, barely moved by other load on the box.
            watched = {"direct uvicorn (tcp)": {"uvicorn": direct.pid},
                       "through gateway (unix)": {"gateway": gateway.pid, "uvicorn": via.pid}}
            # Warm up both paths (imports, first-request work, the gateway's pool).
            for url, host in targets.values():
                deadline = time.monotonic() + 10
                while True:
                    cmd = ["curl", "-sf", "-o", "/dev/null", url] + (["-H", f"Host: {host}"] if host else [])
                    if shutil.which("curl") is None or subprocess.run(cmd).returncode == 0:
                        break
                    if time.monotonic() > deadline:
                        print(f"{url} does not answer", file=sys.stderr)
                        return 1
                    time.sleep(0.1)
                warm = argparse.Namespace(**{**vars(args), "duration": 1})
                run_wrk(url, host, warm)

            results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in targets}
            cpu_us: dict[str, dict[str, list[float]]] = {n: {p: [] for p in w} for n, w in watched.items()}
            for i in range(args.runs):
                for name, (url, host) in targets.items():
                    before = {p: cpu_seconds([pid]) for p, pid in watched[name].items()}
                    rps, p50, bad, requests = run_wrk(url, host, args)
                    for p, pid in watched[name].items():
                        cpu_us[name][p].append((cpu_seconds([pid]) - before[p]) / max(requests, 1) * 1e6)
                    results[name].append((rps, p50, bad))
                    print(f"  run {i + 1} {name:<24} {rps:>10.0f} req/s  p50 {p50:.2f} ms"
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

    medians = {name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
               for name, rs in results.items()}
    cmd = f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency"
    print(f"\n{cmd}, median of {args.runs} runs, {os.cpu_count()} CPUs\n")
    print(f"| {'target':<24} | {'req/s':>9} | {'p50 ms':>7} | {'CPU us/request':<30} |")
    print(f"|{'-' * 26}|{'-' * 11}|{'-' * 9}|{'-' * 32}|")
    for name, (rps, p50) in medians.items():
        cpu = ", ".join(f"{p} {statistics.median(v):.0f}" for p, v in cpu_us[name].items())
        print(f"| {name:<24} | {rps:>9.0f} | {p50:>7.2f} | {cpu:<30} |")
    direct, through = medians["direct uvicorn (tcp)"], medians["through gateway (unix)"]
    print(f"\nratio gateway/direct: {through[0] / direct[0]:.2f} (req/s), {through[1] / direct[1]:.2f} (p50)")
    if any(r[2] for rs in results.values() for r in rs):
        print("some responses were not 2xx/3xx: the figures are not valid", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
