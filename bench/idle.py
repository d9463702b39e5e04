"""mwtui's own CPU when idle with 20 running endpoints, and memory per idle replica (USS and RSS).

    .venv/bin/python bench/idle.py [--endpoints 20] [--sample 10] [--settle 5]

Writes an app file with `--endpoints` `@modal.fastapi_endpoint` functions (`min_containers=1`, so that
the autoscaler keeps one replica each while idle), runs `mwtui serve FILE --port 0` and waits until
/api/endpoints shows every endpoint running with a ready replica. After `--settle` seconds it samples CPU
time with psutil over `--sample` seconds, no traffic, for: the mwtui process itself, the gateway, the
replicas (summed) and anything else under mwtui (the zygote); printed as % of one core. Then memory per
idle replica (each replica's process tree; psutil `memory_full_info()`): median USS and RSS over the
replicas. Done twice: zygote-forked replicas (the default) and `--cold-start`. Stops mwtui with SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from serving import start_serve, stop

HEAD = 'import modal\n\napp = modal.App("idle")\n'
ENDPOINT = '''

@app.function(min_containers=1)
@modal.fastapi_endpoint()
def hello{i}():
    return {{"hello": {i}}}
'''


def app_file(folder: Path, n: int) -> Path:
    path = folder / "idle_app.py"
    path.write_text(HEAD + "".join(ENDPOINT.format(i=i) for i in range(n)))
    return path


def wait_running(port: int, n: int, timeout: float = 120.0) -> list[int]:
    """Replica pids once all `n` endpoints are running with a ready replica."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            eps = httpx.get(f"http://127.0.0.1:{port}/api/endpoints", timeout=10).json()
        except httpx.HTTPError as e:
            last = e
        else:
            running = [e for e in eps if e.get("state") == "running" and (e.get("replicas") or {}).get("ready")]
            last = f"{len(running)}/{len(eps)} running"
            if len(eps) == n and len(running) == n:
                return [r["pid"] for e in eps for r in e.get("replica_list", [])
                        if r.get("state") == "ready" and r.get("pid")]
        time.sleep(0.2)
    raise SystemExit(f"endpoints not all running after {timeout}s: {last}")


def tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def measure(app: Path, n: int, settle: float, sample: float, extra: list[str]) -> dict[str, float]:
    proc, port = start_serve(app, *extra)
    try:
        replicas = wait_running(port, n)
        if len(replicas) < n:
            raise SystemExit(f"only {len(replicas)} ready replicas for {n} endpoints")
        time.sleep(settle)
        me = psutil.Process(proc.pid)
        groups: dict[str, list[psutil.Process]] = {"mwtui": [me], "gateway": [], "replicas": [], "other": []}
        replica_trees = {pid: tree(pid) for pid in replicas}
        in_replicas = {p.pid for ps in replica_trees.values() for p in ps}
        groups["replicas"] = [p for ps in replica_trees.values() for p in ps]
        for child in me.children(recursive=True):
            if child.pid in in_replicas:
                continue
            try:
                line = " ".join(child.cmdline())
            except psutil.NoSuchProcess:
                continue
            groups["gateway" if "mwtui.engine.gateway" in line else "other"].append(child)
        before = {g: cpu(ps) for g, ps in groups.items()}
        t0 = time.monotonic()
        time.sleep(sample)
        wall = time.monotonic() - t0
        out = {f"cpu {g}": (cpu(ps) - before[g]) / wall * 100 for g, ps in groups.items()}
        out["processes other"] = len(groups["other"])
        uss, rss = [], []
        for ps in replica_trees.values():
            infos = [p.memory_full_info() for p in ps]
            uss.append(sum(i.uss for i in infos) / 2**20)
            rss.append(sum(i.rss for i in infos) / 2**20)
        out["uss MB"] = statistics.median(uss)
        out["rss MB"] = statistics.median(rss)
        out["replicas"] = len(replicas)
        return out
    finally:
        stop(proc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=20)
    ap.add_argument("--sample", type=float, default=10.0, help="seconds of CPU sampling")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds idle before sampling")
    args = ap.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="mwtui-bench-") as tmp:
        app = app_file(Path(tmp), args.endpoints)
        for mode, extra in (("zygote", []), ("cold", ["--cold-start"])):
            results[mode] = r = measure(app, args.endpoints, args.settle, args.sample, extra)
            print(f"  {mode}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()), file=sys.stderr)
    print(f"\nidle, {args.endpoints} fastapi_endpoint endpoints, {args.sample:.0f} s sample after {args.settle:.0f} s "
          f"settle, {os.cpu_count()} CPUs; CPU in % of one core\n")
    print("| replicas | mwtui | gateway | replicas (sum) | zygote etc. | total | USS MB/replica | RSS MB/replica |")
    print("|----------|------:|--------:|---------------:|------------:|------:|---------------:|---------------:|")
    for mode, r in results.items():
        total = sum(v for k, v in r.items() if k.startswith("cpu "))
        print(f"| {mode:<8} | {r['cpu mwtui']:5.2f} | {r['cpu gateway']:7.2f} | {r['cpu replicas']:14.2f} "
              f"| {r['cpu other']:11.2f} | {total:5.2f} | {r['uss MB']:14.1f} | {r['rss MB']:14.1f} |")
    z = results["zygote"]
    own = z["cpu mwtui"] + z["cpu gateway"]
    print(f"\nmwtui's own CPU (mwtui + gateway), zygote mode: {own:.2f}% of one core "
          f"(target < 2%: {'met' if own < 2 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
