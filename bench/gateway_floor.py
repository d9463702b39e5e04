"""How far the gateway is from what Python and uvloop can do: its CPU per request against two floors.

    .venv/bin/python bench/gateway_floor.py [--runs 3] [--duration 5]

One raw ASGI replica (uvicorn on a Unix socket, the `bench/gateway.py` app) behind three proxies, each
loaded in turn with `wrk -t1 -c32`:
- the mwtui gateway, as the engine drives it;
- "floor": a uvloop proxy that pairs each client connection with its own replica connection and copies
  bytes both ways, nothing else: the least a Python/uvloop proxy can cost;
- "floor+parse": the same, also feeding every byte through httptools' request and response parsers
  with (empty) Python callbacks, as the gateway does.
Prints req/s and the proxy's user and system CPU per request (psutil), and the gateway's user time over
each floor's: the gateway's own Python per request. The floors are not products: they route nothing,
count nothing and handle none of the cases the gateway must.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
import gateway as bench  # noqa: E402 - the sibling benchmark: its replica app and helpers

FLOOR = '''
import asyncio, json, sys
import uvloop
from httptools import HttpRequestParser, HttpResponseParser

SOCK, PARSE = sys.argv[1], sys.argv[2] == "parse"


class Up(asyncio.Protocol):
    def __init__(self, client):
        self.client = client
        self.parser = HttpResponseParser(self) if PARSE else None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.parser:
            self.parser.feed_data(data)
        self.client.transport.write(data)

    def connection_lost(self, exc):
        self.client.transport.close()

    def on_status(self, s): pass
    def on_header(self, n, v): pass
    def on_headers_complete(self): pass
    def on_body(self, b): pass
    def on_message_complete(self): pass


class Client(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.up, self.pending = transport, None, []
        self.parser = HttpRequestParser(self) if PARSE else None
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self):
        _, self.up = await asyncio.get_running_loop().create_unix_connection(lambda: Up(self), SOCK)
        for data in self.pending:
            self.up.transport.write(data)

    def data_received(self, data):
        if self.parser:
            self.parser.feed_data(data)
        if self.up is None:
            self.pending.append(data)
        else:
            self.up.transport.write(data)

    def connection_lost(self, exc):
        if self.up:
            self.up.transport.close()

    def on_url(self, u): pass
    def on_header(self, n, v): pass
    def on_headers_complete(self): pass
    def on_message_complete(self): pass


async def main():
    server = await asyncio.get_running_loop().create_server(Client, "127.0.0.1", 0)
    print(json.dumps({"type": "listening", "port": server.sockets[0].getsockname()[1]}), flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
'''


def start_floor(folder: Path, sock: Path, mode: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen([sys.executable, str(folder / "floor.py"), str(sock), mode],
                            stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout
    return proc, int(json.loads(proc.stdout.readline())["port"])


def load(port: int, pid: int, duration: int) -> tuple[float, float, float]:
    """req/s, user µs and system µs of `pid` per request, under wrk -t1 -c32."""
    ps = psutil.Process(pid)
    before = ps.cpu_times()
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{duration}s", "-H", "Host: bench-raw.localhost", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True,
    ).stdout
    after = ps.cpu_times()
    n = int(out.split(" requests in")[0].split()[-1])
    rps = float(next(line for line in out.splitlines() if "Requests/sec" in line).split()[-1])
    return rps, 1e6 * (after.user - before.user) / n, 1e6 * (after.system - before.system) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="mwtui-floor-") as tmp:
        folder = Path(tmp)
        (folder / "raw.py").write_text(bench.RAW)
        (folder / "floor.py").write_text(FLOOR)
        sock = folder / "raw.sock"
        try:
            replica = bench.uvicorn(folder, "raw:app", "--uds", str(sock))
            procs.append(replica)
            bench.wait_connectable(socket.AF_UNIX, str(sock))
            targets = {
                "gateway": bench.start_gateway({"raw": sock}),
                "floor": start_floor(folder, sock, "copy"),
                "floor+parse": start_floor(folder, sock, "parse"),
            }
            procs += [p for p, _ in targets.values()]
            for _, port in targets.values():
                bench.warm(f"http://127.0.0.1:{port}/", "bench-raw.localhost")
            results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in targets}
            for run in range(args.runs):
                for name, (proc, port) in targets.items():
                    rps, user, system = load(port, proc.pid, args.duration)
                    results[name].append((rps, user, system))
                    print(f"  run {run + 1}  {name:<12} {rps:8.0f} req/s  user {user:5.1f} µs  sys {system:5.1f} µs",
                          file=sys.stderr)
                time.sleep(0.2)
        finally:
            for p in procs:
                p.kill()
    med = {name: tuple(statistics.median(r[i] for r in rows) for i in range(3)) for name, rows in results.items()}
    print(f"\nwrk -t1 -c32 -d{args.duration}s against a raw ASGI replica; median of {args.runs} runs\n")
    print("| proxy        |    req/s | user µs/request | sys µs/request |")
    print("|--------------|----------|-----------------|----------------|")
    for name, (rps, user, system) in med.items():
        print(f"| {name:<12} | {rps:8.0f} | {user:15.1f} | {system:14.1f} |")
    gw_user = med["gateway"][1]
    print(f"\ngateway user time over floor: +{gw_user - med['floor'][1]:.1f} µs/request; "
          f"over floor+parse: +{gw_user - med['floor+parse'][1]:.1f} µs/request (the gateway's own Python)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
