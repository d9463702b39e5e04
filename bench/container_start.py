"""Replica start with and without its container view (engine/worker/container.py), in the same run.

    .venv/bin/python bench/container_start.py [--runs 10]

Spawn-to-ready (from `Spawner.spawn()` to the ready line) of a fastapi_endpoint whose pool plan mounts an
`add_local_dir` at /assets and a volume at /data: host mode (MWTUI_CONTAINER=0, as `--no-container`)
against the container view, forked from the zygote and cold, alternating so both see the same load.
Needs root (or user namespaces) for the container view.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mwtui.engine.lifeline import Lifeline
from mwtui.engine.spawner import ColdSpawner, Spawner, ZygoteSpawner

sys.path.insert(0, os.path.dirname(__file__))
from replica_start import drain, ready_line  # noqa: E402

APP = """import modal
app = modal.App("bench")

@app.function()
@modal.fastapi_endpoint()
def hello():
    return {"hello": open("/assets/a.txt").read() if __import__("os").path.exists("/assets") else "host"}
"""


async def start_once(spawner: Spawner, app: Path, env_extra: dict[str, str], lifeline: Lifeline,
                     sock_dir: str, n: int) -> float:
    ready_r, ready_w = os.pipe()
    env = {**os.environ, **lifeline.env(), "MWTUI_READY_FD": str(ready_w), "PYTHONUNBUFFERED": "1", **env_extra}
    argv = [str(app), "--pool", "hello", "--socket-dir", sock_dir, "--replica", f"hello.{n}"]
    t0 = time.perf_counter()
    try:
        proc = await spawner.spawn(argv, env, str(app.parent), (ready_w, lifeline.child_fd))
    finally:
        os.close(ready_w)
    pump = asyncio.create_task(drain(proc))
    msg = await asyncio.wait_for(ready_line(ready_r), 60)
    ms = (time.perf_counter() - t0) * 1000
    if msg.get("event") != "ready":
        raise SystemExit(f"{msg}")
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 30)
    await asyncio.wait_for(pump, 5)
    return ms


async def main(runs: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="mwtui-bench-ctr-"))
    (folder / "site").mkdir()
    (folder / "site" / "a.txt").write_text("asset")
    app = folder / "app.py"
    app.write_text(APP)
    plan = json.dumps({"version": 1, "env": [], "mounts": [
        {"path": "/assets", "target": str(folder / "site"), "what": "add_local_dir('site')", "env_var": None,
         "note": ""},
        {"path": "/data", "target": str(folder / "home" / "volumes" / "v"), "what": "volume `v`",
         "env_var": "MWTUI_VOLUME_V", "note": ""},
    ]})
    modes = {"host mode": {"MWTUI_POOL_PLAN": plan, "MWTUI_CONTAINER": "0"},
             "container view": {"MWTUI_POOL_PLAN": plan, "MWTUI_CONTAINER": "1"}}
    lifeline = Lifeline()
    sock_dir = tempfile.mkdtemp(prefix="mwb")
    zygote, cold = ZygoteSpawner(), ColdSpawner()
    try:
        await start_once(zygote, app, modes["host mode"], lifeline, sock_dir, 0)  # starts the zygote
        for spawn_name, spawner in (("zygote", zygote), ("cold", cold)):
            times: dict[str, list[float]] = {m: [] for m in modes}
            for i in range(runs):
                order = list(modes) if i % 2 == 0 else list(reversed(modes))
                for mode in order:
                    times[mode].append(await start_once(spawner, app, modes[mode], lifeline, sock_dir, i + 1))
            for mode, ts in times.items():
                print(f"{spawn_name:6} {mode:15} spawn-to-ready median {statistics.median(ts):6.1f} ms  "
                      f"min {min(ts):6.1f}  max {max(ts):6.1f}  (n={len(ts)})")
    finally:
        await zygote.close()
        lifeline.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=10)
    asyncio.run(main(p.parse_args().runs))
