"""An app with many endpoints, all starting at once: time to all-running, and memory per replica.

    .venv/bin/python bench/many_endpoints.py [--endpoints 100] [--runs 1] [--cold-start]

Generates an app file with N `@modal.fastapi_endpoint` functions (one pool, hence one replica, each),
runs `mwtui serve` on it and polls `/api/endpoints` until every endpoint is running. Prints the time
from the command's start to its gateway line (the engine is up), and to all-running; then the memory of
each idle replica (USS: the pages only it holds, i.e. what one more replica costs; RSS for comparison)
and of mwtui's own processes. Every replica is forked by the zygote unless --cold-start.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ENDPOINT = """
@app.function()
@modal.fastapi_endpoint()
def e{i}():
    return {{"endpoint": {i}}}
"""


def write_app(folder: Path, n: int) -> Path:
    app = folder / "many.py"
    app.write_text('import modal\n\napp = modal.App("many")\n' + "".join(ENDPOINT.format(i=i) for i in range(n)))
    return app


def tree_memory(pid: int) -> tuple[int, int]:
    """(USS, RSS) in bytes of a process and its descendants."""
    uss = rss = 0
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            info = p.memory_full_info()
            uss += info.uss
            rss += info.rss
    except psutil.Error:
        pass
    return uss, rss


def run_once(n: int, cold: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-many-") as tmp:
        folder = Path(tmp)
        app = write_app(folder, n)
        env = {**os.environ, "MWTUI_HOME": str(folder / "home")}
        argv = [sys.executable, "-m", "mwtui.tui.cli", "serve", str(app), "--port", "0", "--no-reload"]
        t0 = time.monotonic()
        proc = subprocess.Popen(argv + (["--cold-start"] if cold else []), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
        port: list[int] = []
        up = threading.Event()

        def pump() -> None:  # read everything, so that the pipe never fills
            assert proc.stdout is not None
            for line in proc.stdout:
                m = re.search(r"gateway http://localhost:(\d+)", line)
                if m and not port:
                    port.append(int(m.group(1)))
                    up.set()

        threading.Thread(target=pump, daemon=True).start()
        try:
            if not up.wait(120):
                raise SystemExit("mwtui serve printed no gateway line within 120 s")
            t_gateway = time.monotonic() - t0
            status: list[dict] = []
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                status = httpx.get(f"http://127.0.0.1:{port[0]}/api/endpoints", timeout=10).json()
                if len(status) == n and all(e["state"] == "running" for e in status):
                    break
                time.sleep(0.05)
            else:
                states = {e["state"] for e in status}
                raise SystemExit(f"not all running after 300 s: {len(status)} endpoints, states {states}")
            t_running = time.monotonic() - t0
            time.sleep(1.0)  # idle: first-request allocations aside, what a replica holds while it waits
            pids = [r["pid"] for e in status for r in e["replica_list"] if r["state"] == "ready"]
            per = [tree_memory(pid) for pid in pids]
            replica_pids = set(pids)
            ours = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.pid not in replica_pids
                    and not any(a.pid in replica_pids for a in p.parents())]
            own_uss = tree_memory(proc.pid)[0] - sum(u for u, _ in per)
            return {
                "gateway_s": t_gateway,
                "running_s": t_running,
                "replicas": len(pids),
                "uss_median_mb": statistics.median(u for u, _ in per) / 2**20,
                "uss_mean_mb": statistics.mean(u for u, _ in per) / 2**20,
                "rss_median_mb": statistics.median(r for _, r in per) / 2**20,
                "uss_total_mb": sum(u for u, _ in per) / 2**20,
                "mwtui_uss_mb": own_uss / 2**20,
                "mwtui_processes": 1 + len(ours),
            }
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoints", type=int, default=100)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--cold-start", action="store_true", help="every replica a fresh interpreter")
    args = p.parse_args()
    how = "cold" if args.cold_start else "zygote"
    print(f"{args.endpoints} fastapi_endpoint endpoints, one replica each, {how} starts, {os.cpu_count()} CPUs")
    for i in range(args.runs):
        r = run_once(args.endpoints, args.cold_start)
        print(f"run {i + 1}: gateway up {r['gateway_s']:.2f} s, all {args.endpoints} running "
              f"{r['running_s']:.2f} s after `mwtui serve` started ({int(r['replicas'])} replicas)")
        print(f"  per replica: USS median {r['uss_median_mb']:.1f} MiB (mean {r['uss_mean_mb']:.1f}), "
              f"RSS median {r['rss_median_mb']:.1f} MiB; all replicas USS {r['uss_total_mb']:.0f} MiB")
        print(f"  mwtui itself ({int(r['mwtui_processes'])} processes: the engine, the gateway, the zygote if any): "
              f"USS {r['mwtui_uss_mb']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
