"""The gateway's own CPU per proxied request, in one process, with no sockets: the figure to watch
while changing the hot path (wrk's runs swing by ±5%, this by ±2%).

    .venv/bin/python bench/gateway_inproc.py [--requests 200000]
    MWTUI_PURE_GATEWAY=1 .venv/bin/python bench/gateway_inproc.py     # the sources, not the compiled build
    .venv/bin/python bench/gateway_inproc.py --no-inspect              # the request inspector off

A `ClientConn` and an `UpstreamConn` get fake transports; each round feeds the client one GET (as wrk
sends it) and the upstream connection one 4-header, 17-byte response (as uvicorn sends it), so the
whole path runs: parse, route, pool, forward, relay, metrics, access line. Prints µs per request for
10 rounds and the best, and beside it httptools alone with empty callbacks (the floor).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import uvloop
from httptools import HttpRequestParser, HttpResponseParser
from mwtui.engine.gateway import native
from mwtui.engine.gateway.client import ClientConn
from mwtui.engine.gateway.limits import Limits
from mwtui.engine.gateway.server import Gateway
from mwtui.engine.gateway.upstream import UpstreamConn

REQUEST = b"GET / HTTP/1.1\r\nHost: bench-raw.localhost:8470\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\ndate: Tue, 24 Nov 2026 15:00:00 GMT\r\nserver: uvicorn\r\n"
            b"content-type: application/json\r\ncontent-length: 17\r\n\r\n{\"hello\":\"world\"}")


class FakeTransport:
    def __init__(self) -> None:
        self.last = b""

    def write(self, data: bytes) -> None:
        self.last = data

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if key == "peername" else default

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Silent:
    """Stands in for the control link: the engine is not there to read events."""

    def emit(self, *args: Any, **kwargs: Any) -> None:
        pass


class Floor:
    """httptools with a Python callback per event and nothing in them."""

    def __init__(self, parser: type) -> None:
        self.parser = parser(self)

    def on_url(self, url: bytes) -> None: pass
    def on_status(self, status: bytes) -> None: pass
    def on_header(self, name: bytes, value: bytes) -> None: pass
    def on_headers_complete(self) -> None: pass
    def on_body(self, body: bytes) -> None: pass
    def on_message_complete(self) -> None: pass


def rounds(step: Any, n: int) -> list[float]:
    out = []
    for _ in range(10):
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        out.append((time.perf_counter() - t0) / n * 1e6)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--no-inspect", action="store_true", help="with the request inspector off")
    args = parser.parse_args()
    n = args.requests

    loop = uvloop.new_event_loop()
    gw = Gateway(loop, "127.0.0.1", check_token=lambda k, s: True, limits=Limits(inspect_ring=0 if args.no_inspect else Limits().inspect_ring))
    gw.control = Silent()  # type: ignore[assignment]
    gw.apply_routes({"type": "routes", "endpoints": [{
        "name": "raw", "label": "bench-raw", "state": "running", "hold_s": 30, "max_inputs": 1000,
        "timeout": 300, "upstreams": [{"id": "raw.0", "address": "unix:/nonexistent.sock"}],
    }]})
    for task in list(gw.tasks):  # the own-port listener task apply_routes starts: nothing to bind
        task.cancel()
    loop.run_until_complete(loop.shutdown_asyncgens())
    pool = gw.pools["unix:/nonexistent.sock"]
    upstream = UpstreamConn(gw, pool)
    up_t = FakeTransport()
    upstream.connection_made(up_t)
    pool.release(upstream)
    client = ClientConn(gw, None)
    client_t = FakeTransport()
    client.connection_made(client_t)  # type: ignore[arg-type]

    def one() -> None:
        client.data_received(REQUEST)
        upstream.data_received(RESPONSE)

    one()
    if client_t.last != RESPONSE or not up_t.last.startswith(b"GET / HTTP/1.1\r\n"):
        print(f"the request did not go through: upstream got {up_t.last!r}, client got {client_t.last!r}",
              file=sys.stderr)
        return 1
    gateway = rounds(one, n)
    req, resp = Floor(HttpRequestParser), Floor(HttpResponseParser)

    def floor() -> None:
        req.parser.feed_data(REQUEST)
        resp.parser.feed_data(RESPONSE)

    base = rounds(floor, n)
    build = "compiled" if native.running_compiled() else "from sources"
    print(f"gateway ({build}) µs/request: " + " ".join(f"{x:.2f}" for x in gateway) + f"   best {min(gateway):.2f}")
    print("httptools floor µs/request:  " + " ".join(f"{x:.2f}" for x in base) + f"   best {min(base):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
