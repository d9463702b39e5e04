"""Autoscaling as a user feels it: time to scale out under a burst, time back to zero, wake latency.

    .venv/bin/python bench/autoscale.py [--runs 3]

An endpoint that sleeps 0.2 s per request, `max_containers=4`, `scaledown_window=2`. Eight clients start
at once: how long until 4 replicas are ready. They stop: how long until the pool is at zero (the
window is 2 s of that). Then one request: its latency while the pool wakes from zero, against the same
request on a warm pool (the baseline, measured in the same run).
"""

from __future__ import annotations

import argparse
import atexit
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

APP = """import time
import modal
app = modal.App("auto")

@app.function(max_containers=4, scaledown_window=2)
@modal.fastapi_endpoint()
def work(s: float = 0.2):
    time.sleep(s)
    return {"slept": s}
"""
HOST = {"Host": "auto-work.localhost"}


def status(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/api/endpoints", timeout=10).json()[0]


def wait(port: int, cond, timeout: float = 60) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond(status(port)):
            return time.monotonic() - t0
        time.sleep(0.02)
    raise SystemExit("timed out")


def one_run(port: int) -> dict[str, float]:
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=HOST, timeout=60) as c:
            while not stop.is_set():
                c.get("/")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    out = {"scale_out_s": wait(port, lambda e: e["replicas"]["ready"] == 4)}
    stop.set()
    for t in threads:
        t.join(30)
    out["to_zero_s"] = wait(port, lambda e: e["replicas"]["ready"] == 0)
    t0 = time.monotonic()
    httpx.get(f"http://127.0.0.1:{port}/?s=0", headers=HOST, timeout=60)
    out["wake_ms"] = (time.monotonic() - t0) * 1000
    t0 = time.monotonic()
    httpx.get(f"http://127.0.0.1:{port}/?s=0", headers=HOST, timeout=60)
    out["warm_ms"] = (time.monotonic() - t0) * 1000
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mwtui-bench-"))
    atexit.register(shutil.rmtree, folder, True)  # nothing left in /tmp
    app = folder / "auto.py"
    app.write_text(APP)
    proc = subprocess.Popen([sys.executable, "-m", "mwtui.tui.cli", "serve", str(app), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout
    port = next(int(m.group(1)) for line in proc.stdout if (m := re.search(r"localhost:(\d+)", line)))
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        wait(port, lambda e: e["state"] == "running")
        runs = [one_run(port) for _ in range(args.runs)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"autoscaling, medians of {args.runs} runs (8 clients, 0.2 s per request, max 4, scaledown_window 2 s)")
    print(f"  scale out 1 -> 4 ready     {med['scale_out_s']:6.2f} s")
    print(f"  back to zero after load    {med['to_zero_s']:6.2f} s  (window 2 s)")
    print(f"  request waking from zero   {med['wake_ms']:6.0f} ms")
    print(f"  same request, warm         {med['warm_ms']:6.0f} ms")
    print(f"  wake / warm                {med['wake_ms'] / med['warm_ms']:6.1f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
