"""Save-to-served time of a reload under load, and requests lost, for a FastAPI and a Flask app.

    .venv/bin/python bench/reload.py [--saves 10] [--threads 4]

For each app: `mwtui serve` it, keep `--threads` keep-alive clients busy, rewrite the file `--saves`
times, and time each save until every client sees the new version. Prints p50 and max per app, and
how many requests failed (the target is none). Baseline in the same run: the time the same app takes
from a cold `mwtui serve` to its first answer, i.e. what a stop-and-start reload costs at best.
"""

from __future__ import annotations

import argparse
import atexit
import os
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

APPS = {
    "fastapi": """import modal
app = modal.App("bench")

@app.function()
@modal.fastapi_endpoint()
def hello():
    return {{"v": {v}}}
""",
    "flask": """import modal
app = modal.App("bench")

@app.function()
@modal.wsgi_app()
def hello():
    from flask import Flask
    web = Flask(__name__)

    @web.route("/")
    def index():
        return {{"v": {v}}}

    return web
""",
}


class Clients:
    def __init__(self, port: int, threads: int) -> None:
        self.port = port
        self.seen: list[int] = [0] * threads
        self.ok = 0
        self.failed = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

    def run(self, i: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers={"Host": "bench-hello.localhost"},
                          timeout=30) as c:
            while not self.stop.is_set():
                try:
                    r = c.get("/")
                    if r.status_code == 200:
                        self.seen[i] = r.json()["v"]
                        self.ok += 1
                    else:
                        self.failed += 1
                except httpx.HTTPError:
                    self.failed += 1


def start(app: Path) -> tuple[subprocess.Popen[str], int, float]:
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "mwtui.tui.cli", "serve", str(app), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout
    port = 0
    for line in proc.stdout:
        m = re.search(r"gateway http://localhost:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    while True:
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": "bench-hello.localhost"}, timeout=30)
            if r.status_code == 200:
                return proc, port, (time.monotonic() - t0) * 1000
        except httpx.HTTPError:
            pass
        time.sleep(0.01)


def bench(kind: str, saves: int, threads: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="mwtui-bench-"))
    atexit.register(shutil.rmtree, folder, True)  # the app file it rewrote: nothing left in /tmp
    app = folder / "bench.py"
    app.write_text(APPS[kind].format(v=1))
    proc, port, cold_ms = start(app)
    clients = Clients(port, threads)
    for t in clients.threads:
        t.start()
    times = []
    try:
        for v in range(2, saves + 2):
            time.sleep(1.2)  # as between real saves (and outside the reload-loop guard's 1 s window)
            t0 = time.monotonic()
            app.write_text(APPS[kind].format(v=v))
            while min(clients.seen) != v:
                if time.monotonic() - t0 > 60:
                    raise SystemExit(f"{kind}: version {v} never served")
                time.sleep(0.002)
            times.append((time.monotonic() - t0) * 1000)
    finally:
        clients.stop.set()
        for t in clients.threads:
            t.join(5)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    return {
        "p50": statistics.median(times), "max": max(times), "cold": cold_ms,
        "ok": clients.ok, "failed": clients.failed,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--saves", type=int, default=10)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    print(f"save-to-served under load ({args.threads} keep-alive clients, {args.saves} saves per app)")
    print(f"{'app':<8} {'p50 ms':>8} {'max ms':>8} {'cold start ms':>14} {'p50/cold':>9} {'requests':>9} {'failed':>7}")
    for kind in APPS:
        r = bench(kind, args.saves, args.threads)
        print(f"{kind:<8} {r['p50']:>8.0f} {r['max']:>8.0f} {r['cold']:>14.0f} {r['p50'] / r['cold']:>9.2f} "
              f"{r['ok']:>9} {r['failed']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
