"""Per-request cost of a web_server replica's network of its own, against the host's network, in one run.

    .venv/bin/python bench/web_server_network.py [--rounds 3] [--duration 5] [--connections 8]

One app: a `@modal.web_server(PORT)` function (max_inputs 1000, one replica) whose body starts uvicorn
serving a raw ASGI hello on PORT, in a subprocess. Two `mwtui serve APP --port 0` run side by side:
- `--no-container`: the replica on the host's network; the gateway connects to tcp:127.0.0.1:PORT;
- the default: the replica in a network namespace of its own; the gateway asks its Unix socket for a
  connection, and the replica hands over a TCP socket connected to 127.0.0.1:PORT inside (handoff.py).
The baseline, "direct", is wrk straight at the first one's uvicorn on the host (no gateway).
`wrk -t1 -cN -dDs --latency` runs against the three targets in turn, alternating their order each round;
prints the medians of req/s, p50 and p99, the CPU time per request of the gateway, the replica process
(where the handoff runs: ~0 per request, it hands over each connection once) and uvicorn, and the ratios. Exits 2 if wrk or pasta's network is missing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from mwtui.engine.worker import network
from serving import RAW, start_serve, stop

LABEL = "netbench-srv"
# min = max = 1: one replica in both modes (the host network allows no more), never scaled to zero
# between rounds. max_inputs 1000: the gateway must not queue the wrk connections one at a time.
APP = '''import subprocess
import sys

import modal

app = modal.App("netbench")


@app.function(min_containers=1, max_containers=1)
@modal.concurrent(max_inputs=1000)
@modal.web_server({port}, startup_timeout=60)
def srv():
    subprocess.Popen([sys.executable, "-m", "uvicorn", "raw:app", "--app-dir", {folder!r}, "--port", "{port}",
                      "--host", "0.0.0.0", "--log-level", "warning", "--no-access-log", "--lifespan", "off"])
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_answering(port: int, host: str | None, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": host} if host else {}, timeout=5)
            if r.status_code == 200:
                return
            last = r.status_code
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.2)
    raise SystemExit(f"127.0.0.1:{port} (Host {host}) does not answer 200 after {timeout:g}s: {last}")


def processes(serve: subprocess.Popen[str]) -> dict[str, list[psutil.Process]]:
    """The processes whose CPU we time: the gateway, the replica (the relay's thread lives in it, and pasta
    beside it) and uvicorn, the user's server (the replica's child)."""
    out: dict[str, list[psutil.Process]] = {"gateway": [], "replica": [], "uvicorn": []}
    for p in psutil.Process(serve.pid).children(recursive=True):
        try:
            line = " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "mwtui.engine.gateway" in line:
            out["gateway"].append(p)
        elif "uvicorn" in line and "raw:app" in line:
            out["uvicorn"].append(p)
            out["replica"].append(p.parent())
    if len(out["uvicorn"]) != 1:
        raise SystemExit(f"expected one uvicorn under mwtui serve, found {len(out['uvicorn'])}")
    return out


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()  # the process's own threads only, not its children's
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def run_wrk(port: int, host: str | None, connections: int, duration: int) -> tuple[float, float, float, int, int]:
    """(req/s, p50 ms, p99 ms, non-2xx and socket errors, requests) of one wrk run."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", f"http://127.0.0.1:{port}/"]
    if host:
        cmd[1:1] = ["-H", f"Host: {host}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if errors:
        print(f"  wrk: {errors.group(0)}", file=sys.stderr)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, latency("50"), latency("99"), (int(bad.group(1)) if bad else 0) + (1 if errors else 0), requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds of each wrk run")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian/Ubuntu: apt-get install wrk); cannot benchmark", file=sys.stderr)
        return 2
    kind, why = network.mode()
    if kind != "own":
        print(f"web_server replicas would not get a network of their own here ({why}); nothing to compare",
              file=sys.stderr)
        return 2

    serves: list[subprocess.Popen[str]] = []
    results: dict[str, list[tuple[float, float, float, int]]] = {}
    cpu_us: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="mwtui-bench-") as tmp:
        folder = Path(tmp)
        port = free_port()  # the server's fixed port, free on the host for the host-network replica
        (folder / "raw.py").write_text(RAW)
        app = folder / "netbench.py"
        app.write_text(APP.format(port=port, folder=str(folder)))
        try:
            # name -> (port wrk connects to, Host header, the serve whose processes we time)
            targets: dict[str, tuple[int, str | None, subprocess.Popen[str]]] = {}
            host_serve, host_gw = start_serve(app, "--no-container")
            serves.append(host_serve)
            wait_answering(host_gw, f"{LABEL}.localhost:{host_gw}")
            own_serve, own_gw = start_serve(app)
            serves.append(own_serve)
            wait_answering(own_gw, f"{LABEL}.localhost:{own_gw}")
            targets["direct (host network)"] = (port, None, host_serve)
            targets["gateway, host network"] = (host_gw, f"{LABEL}.localhost:{host_gw}", host_serve)
            targets["gateway, own network"] = (own_gw, f"{LABEL}.localhost:{own_gw}", own_serve)
            watched = {name: processes(serve) for name, (_, _, serve) in targets.items()}
            for name, (p, host, _) in targets.items():
                run_wrk(p, host, args.connections, 1)  # warm-up: connections, caches, the replica's loop
                if name.startswith("direct"):  # the gateway and the relay idle meanwhile: not theirs
                    watched[name] = {"uvicorn": watched[name]["uvicorn"]}
                cpu_us[name] = {group: [] for group in watched[name]}
            print(f"wrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} rounds, alternating; "
                  f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
            for i in range(args.rounds):
                order = list(targets) if i % 2 == 0 else list(reversed(targets))
                for name in order:
                    p, host, _ = targets[name]
                    before = {g: cpu_seconds(ps) for g, ps in watched[name].items()}
                    rps, p50, p99, bad, requests = run_wrk(p, host, args.connections, args.duration)
                    for g, ps in watched[name].items():
                        cpu_us[name][g].append((cpu_seconds(ps) - before[g]) / max(requests, 1) * 1e6)
                    results.setdefault(name, []).append((rps, p50, p99, bad))
                    print(f"  round {i + 1} {name:<22} {rps:>9.0f} req/s  p50 {p50:.3f} ms  p99 {p99:.3f} ms"
                          + (f"  ERRORS {bad}" if bad else ""), file=sys.stderr)
        finally:
            for serve in serves:
                if serve.poll() is None:
                    os.killpg(serve.pid, signal.SIGTERM)  # both at once, then wait for each
            for serve in serves:
                stop(serve)

    med = {name: tuple(statistics.median(r[k] for r in rs) for k in range(3)) for name, rs in results.items()}
    print(f"\nweb_server (uvicorn, raw ASGI hello), wrk -t1 -c{args.connections} -d{args.duration}s --latency; "
          f"median of {args.rounds} rounds, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at the end\n")
    print(f"| {'target':<22} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'CPU us/request':<40} |")
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 42}|")
    for name in targets:
        rps, p50, p99 = med[name]
        cpu = ", ".join(f"{g} {statistics.median(v):.1f}" for g, v in cpu_us[name].items())
        print(f"| {name:<22} | {rps:>8.0f} | {p50:>7.3f} | {p99:>7.3f} | {cpu:<40} |")
    own, host, direct = med["gateway, own network"], med["gateway, host network"], med["direct (host network)"]
    print()
    print(f"{'own network / host network (via gateway) req/s':<50} {own[0] / host[0]:6.2f}  "
          f"p50 {own[1] / host[1]:.2f}x  p99 {own[2] / host[2]:.2f}x")
    print(f"{'host network via gateway / direct req/s':<50} {host[0] / direct[0]:6.2f}")
    print(f"{'own network via gateway / direct req/s':<50} {own[0] / direct[0]:6.2f}")
    relay = statistics.median(cpu_us["gateway, own network"]["replica"])
    base = statistics.median(cpu_us["gateway, host network"]["replica"])
    print(f"{'replica process CPU per request (handoff)':<50} {relay:6.1f} us, against {base:.1f} us "
          "on the host network")
    if any(r[3] for rs in results.values() for r in rs):
        print("some requests failed (non-2xx or socket errors): the figures are not valid", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
