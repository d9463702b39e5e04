"""Generation snapshots (issue 17): what a save costs beyond the import, many replicas against one,
the memory replicas share, and a replica's start once the snapshot is there. One run, its own baseline.

    .venv/bin/python bench/snapshots.py [--saves 6]

1. Baseline: a bare `import fastapi` in a fresh interpreter (median of 5), measured now.
2. Save-to-served: the file is rewritten `--saves` times and each save is timed until each endpoint
   answers the new version. First an app with one FastAPI endpoint and one replica: "beyond the import"
   subtracts the module's own import time (the snapshot's `import_ms` for that generation, from
   /api/endpoints); target <= 0.35x the baseline. Then an app with two, `one` (min_containers=1) and
   `eight` (min_containers=8), in the same saves: target eight / one <= 1.5.
3. Memory: a class with enable_memory_snapshot whose `@enter(snap=True)` loads 64 MB (random bytes), 3
   replicas; the sum of their USS (pages each holds alone). Target: < 1.5 x 64 MB.
4. Spawn-to-ready after the snapshot: an engine (in this process) serving a FastAPI hello is scaled
   up one replica at a time (as the autoscaler or `+` does), and each new replica's `startup_ms` (from the
   supervisor's spawn request to the replica's ready line) is read. Target: p50 <= 10 ms. For contrast,
   the same for the eight replicas a save starts at once (they share 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from mwtui.engine.facade import Engine
from mwtui.engine.loader import AppRef
from serving import start_serve, stop

ALONE = '''import modal
app = modal.App("snapbench")


@app.function()
@modal.fastapi_endpoint()
def one():
    return {{"v": {v}}}
'''

APP = '''import modal
app = modal.App("snapbench")


@app.function(min_containers=1)
@modal.fastapi_endpoint()
def one():
    return {{"v": {v}}}


@app.function(min_containers=8)
@modal.fastapi_endpoint()
def eight():
    return {{"v": {v}}}
'''

HEAVY = '''import os
import modal
app = modal.App("heavy")


@app.cls(enable_memory_snapshot=True, min_containers=3)
class Model:
    @modal.enter(snap=True)
    def load(self):
        self.weights = os.urandom(64 << 20)

    @modal.fastapi_endpoint()
    def size(self):
        return {"n": len(self.weights), "pid": os.getpid()}
'''


def bare_fastapi_ms() -> float:
    code = "import time; t = time.perf_counter(); import fastapi; print((time.perf_counter() - t) * 1000)"
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(5)]
    return statistics.median(runs)


def endpoints(port: int) -> dict[str, dict]:
    return {e["name"]: e for e in httpx.get(f"http://127.0.0.1:{port}/api/endpoints", timeout=10).json()}


def wait_for(what: str, cond, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = cond()
        except (httpx.HTTPError, KeyError, ValueError, TypeError):
            got = None
        if got:
            return got
        time.sleep(0.005)
    raise SystemExit(f"timed out waiting for {what}")


def version(client: httpx.Client, label: str) -> int | None:
    r = client.get("/", headers={"Host": f"snapbench-{label}.localhost"})
    return r.json()["v"] if r.status_code == 200 else None


def saves(folder: Path, count: int, text: str, labels: tuple[str, ...]) -> tuple[dict[str, list[float]], list[float], list[float]]:
    app = folder / "snapbench.py"
    app.write_text(text.format(v=1))
    proc, port = start_serve(app)
    took: dict[str, list[float]] = {label: [] for label in labels}
    imports, starts = [], []
    last = labels[-1]
    want = 8 if last == "eight" else 1
    try:
        wait_for("all ready", lambda: endpoints(port)[last]["replicas"]["ready"] == want)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            for v in range(2, count + 2):
                time.sleep(1.2)  # as between real saves (and outside the reload guard's window)
                t0 = time.monotonic()
                app.write_text(text.format(v=v))
                done: dict[str, float] = {}
                while len(done) < len(labels):
                    for label in labels:
                        if label not in done and version(c, label) == v:
                            done[label] = (time.monotonic() - t0) * 1000
                    if time.monotonic() - t0 > 60:
                        raise SystemExit(f"version {v} never served")
                for label in labels:
                    took[label].append(done[label])
                status = wait_for("all ready", lambda v=v: (s := endpoints(port)[last])["replicas"]["ready"] == want
                                  and s["generation"] == v and s)
                imports.append(float(status["snapshot"]["import_ms"] or 0))
                starts += [r["startup_ms"] for r in status["replica_list"] if r["startup_ms"] is not None]
    finally:
        stop(proc)
    return took, imports, starts


def memory(folder: Path) -> tuple[int, int]:
    app = folder / "heavy.py"
    app.write_text(HEAVY)
    proc, port = start_serve(app)
    try:
        status = wait_for("3 ready", lambda: (s := endpoints(port)["Model.size"])["replicas"]["ready"] == 3 and s)
        uss = sum(psutil.Process(r["pid"]).memory_full_info().uss for r in status["replica_list"])
        rss = sum(psutil.Process(r["pid"]).memory_info().rss for r in status["replica_list"])
    finally:
        stop(proc)
    return uss, rss


async def scale_ups(folder: Path, count: int = 7) -> list[float]:
    app = folder / "hello.py"
    app.write_text(APP.format(v=1).replace("min_containers=8", "min_containers=0"))
    engine = Engine(AppRef.parse(str(app)), port=0, reload=False, own_ports=False, max_replicas=count + 1)
    await engine.start()
    times: list[float] = []
    try:
        pool = engine.pools["one"]
        for n in range(2, count + 2):
            engine.scale("one", n)
            while len(pool.ready_replicas()) < n:
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.3)  # the snapshot forks its next spare once idle
            newest = max(pool.ready_replicas(), key=lambda r: r.started_at)
            times.append(float(newest.startup_ms or 0))
    finally:
        await engine.close()
    return times


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--saves", type=int, default=6)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mwtui-bench-"))
    atexit.register(shutil.rmtree, folder, True)
    base = bare_fastapi_ms()
    alone, imports, _ = saves(folder, args.saves, ALONE, ("one",))
    both, _, starts = saves(folder, args.saves, APP, ("one", "eight"))
    one, eight = both["one"], both["eight"]
    uss, rss = memory(folder)
    single = asyncio.run(scale_ups(folder))
    p50_alone, p50_import = statistics.median(alone["one"]), statistics.median(imports)
    p50_one, p50_eight = statistics.median(one), statistics.median(eight)
    beyond = p50_alone - p50_import
    mb = 1 << 20
    print(f"bare `import fastapi` (fresh interpreter, median of 5): {base:.0f} ms")
    print(f"save-to-served p50, one endpoint, one replica: {p50_alone:.0f} ms (max {max(alone['one']):.0f}); "
          f"module import in the snapshot p50: {p50_import:.0f} ms")
    print(f"  beyond the import / bare import fastapi: {beyond / base:.2f}  (target <= 0.35)")
    print(f"the same saves of an app with a pool of 1 and a pool of 8: {p50_one:.0f} ms and {p50_eight:.0f} ms p50 "
          f"(max {max(one):.0f}, {max(eight):.0f})")
    print(f"  pool of 8 / pool of 1:                   {p50_eight / p50_one:.2f}  (target <= 1.5)")
    print(f"3 replicas holding a 64 MB snap=True load: USS {uss / mb:.1f} MB together, RSS {rss / mb:.1f} MB; "
          f"USS / 64 MB: {uss / (64 * mb):.2f}  (target < 1.5)")
    print(f"spawn-to-ready after the snapshot, one scale-up at a time: p50 {statistics.median(single):.1f} ms, "
          f"max {max(single):.1f} ms over {len(single)}  (target p50 <= 10)")
    print(f"  the eight a save starts at once: p50 {statistics.median(starts):.1f} ms, "
          f"p90 {statistics.quantiles(starts, n=10)[-1]:.1f} ms over {len(starts)} replicas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
