"""Calls between pools (issue 18): what a `.remote()` costs beside an HTTP request, and how close a
`.map()` comes to its ideal. One `mwtui serve` run, its own baseline.

    .venv/bin/python bench/calls.py [--calls 500] [--inputs 100] [--input-ms 50]

1. Round trip. Baseline: `--calls` sequential GETs of an empty FastAPI endpoint through the gateway,
   from this process on one kept connection (client -> gateway -> replica -> back). Then the same
   number of `.remote()` calls to an empty function, made and timed inside a web replica (replica ->
   gateway -> the function's replica -> back: arguments and result pickled, as Modal does). Both
   warm. p50 and p99 of each; target: `.remote()` p50 <= 1.5x the HTTP request's.
2. `.map()` over `--inputs` inputs of a function that sleeps `--input-ms`, `max_containers=4`: wall
   time against the ideal (inputs x per-input time / 4), cold (the pool at zero: its replicas start
   during the map) and then warm.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from serving import start_serve, stop

APP = '''import time
import modal

app = modal.App("callbench")


@app.function()
def empty():
    return None


@app.function(max_containers=4)
def work(x):
    time.sleep({input_s})
    return x


@app.function()
@modal.fastapi_endpoint()
def hello():
    return None


@app.function(timeout=600)
@modal.fastapi_endpoint()
def remote(n: int):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        empty.remote()
        out.append((time.perf_counter() - t) * 1000)
    return out


@app.function(timeout=600)
@modal.fastapi_endpoint()
def mapped(n: int):
    t = time.perf_counter()
    assert list(work.map(range(n))) == list(range(n))
    return time.perf_counter() - t
'''


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--inputs", type=int, default=100)
    ap.add_argument("--input-ms", type=float, default=50.0)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="callbench-"))
    app = folder / "callbench.py"
    app.write_text(APP.format(input_s=args.input_ms / 1000))
    proc, port = start_serve(app, "--no-reload")
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=600) as c:
            def get(label: str, **params: object) -> httpx.Response:
                r = c.get("/", params=params, headers={"Host": f"callbench-{label}.localhost"})
                r.raise_for_status()
                return r

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # every web endpoint up, and the function woken once
                try:
                    get("hello"), get("remote", n=20)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            http_ms = []
            for _ in range(args.calls):
                t = time.perf_counter()
                get("hello")
                http_ms.append((time.perf_counter() - t) * 1000)
            remote_ms = get("remote", n=args.calls).json()
            ideal = args.inputs * args.input_ms / 1000 / 4
            cold = get("mapped", n=args.inputs).json()
            warm = get("mapped", n=args.inputs).json()
    finally:
        stop(proc)
    h50, h99, r50, r99 = pct(http_ms, 0.5), pct(http_ms, 0.99), pct(remote_ms, 0.5), pct(remote_ms, 0.99)
    print(f"round trip, {args.calls} sequential, warm:")
    print(f"  HTTP GET through the gateway   p50 {h50:6.2f} ms   p99 {h99:6.2f} ms")
    print(f"  .remote() to an empty function p50 {r50:6.2f} ms   p99 {r99:6.2f} ms")
    print(f"  ratio .remote()/HTTP           p50 {r50 / h50:5.2f}x    p99 {r99 / h99:5.2f}x   (target p50 <= 1.5x)")
    print(f".map() of {args.inputs} inputs x {args.input_ms:g} ms, max_containers=4: ideal {ideal:.2f} s")
    print(f"  cold (pool at zero)  {cold:.2f} s = {cold / ideal:.2f}x ideal")
    print(f"  warm                 {warm:.2f} s = {warm / ideal:.2f}x ideal")
    print(f"  (median HTTP GET for scale: {statistics.median(http_ms):.2f} ms)")


if __name__ == "__main__":
    main()
