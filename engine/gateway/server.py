"""The gateway's state: routing, control messages, timeouts and ticks.

`client.ClientConn` parses requests (httptools) and hands each to `Gateway.route`, which answers it
itself (mwtui's pages, 401/404/503), attaches it to an upstream (`proxy.Exchange`), or queues it
(`waiting.Waiting`). Its sockets are in `listeners`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import signal
import sys
import time
from time import perf_counter
from typing import Any, Final
from urllib.parse import parse_qs

from ..params import ParamError, from_query, variant_name
from ..ports import loopback_host, port_holder
from . import native, pages
from .auth import TokenCheck, load_token_check
from .client import BODY_TIMEOUT, LINGER_S, ClientConn
from .control import Control
from .inspector import Capture, Inspector
from .limits import Limits
from .listeners import Listeners, sockets
from .metrics import Metrics
from .proxy import (
    HALF_CLOSE,
    Conn,
    Exchange,
    log_bug,
)
from .routes import (
    Endpoint,
    RouteError,
    RouteTable,
    build_table,
    carry_variants,
    host_key,
    is_local_name,
    is_loopback_host,
    own_port_accepts,
    valid_host,
)
from .upstream import UpstreamPool
from .waiting import RETRY_AFTER, Waiting
from .wire import HTML, JSON, PROMETHEUS

TICK_S: Final = 0.5
ACCESS_CAP: Final = 1000  # access lines per tick; beyond that they are counted per endpoint, not sent
HOST_CACHE_MAX: Final = 1024

_BARE = object()  # host-cache marker: mwtui's own pages


class Gateway:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        check_token: TokenCheck | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = 0
        self.limits = limits or Limits()
        self.check_token = check_token or load_token_check()
        self.control: Control | None = None
        self.metrics = Metrics()
        self.table = RouteTable()
        self.status: list[dict[str, Any]] = []
        self.app_status: dict[str, Any] = {}  # the app as a whole (/api/app), from the engine
        self.status_by_name: dict[str, dict[str, Any]] = {}
        self.pools: dict[str, UpstreamPool] = {}
        self.wait = Waiting(self)
        self.inspector = Inspector(self.limits.inspect_ring)  # recent requests per endpoint (inspector.py)
        self.listeners = Listeners(self)
        self.clients: set[ClientConn] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.batching = False
        self.dirty: list[Conn] = []
        self.access: list[Exchange] = []  # finished requests whose access lines go out at the next tick
        self.access_cap = ACCESS_CAP
        self.access_dropped: dict[str, int] = {}  # endpoint -> requests past ACCESS_CAP this tick
        self.wall_offset = time.time() - time.perf_counter()  # request times are perf_counter()
        self.now = loop.time()  # the sweep's clock, for what needs no finer one (idle upstream connections)
        self._host_cache: dict[bytes, Any] = {}
        self._own_ok: dict[bytes, bool] = {}  # Host values an own port has accepted (see _check_own_host)
        self.allowed_hosts = frozenset(
            host_key(h.encode("idna") if not h.isascii() else h.encode()) for h in self.limits.allowed_hosts())

    # ----- hot path
    def flush_dirty(self) -> None:
        self.batching = False
        dirty = self.dirty
        if dirty:
            try:
                for conn in dirty:
                    conn.flush()
            finally:
                dirty.clear()

    def route(self, ex: Exchange) -> None:
        name = ex.client.endpoint
        if name is None:
            target = self._host_cache.get(ex.host)
            if target is None:
                target = self._resolve_host(ex)
                if target is None:
                    return
            if target is _BARE:
                self.page(ex)
                return
            ep: Endpoint = target
        else:
            if self._own_ok.get(ex.host) is None and not self._check_own_host(ex):
                return
            found = self.table.endpoints.get(name)
            if found is None:
                ex.reply(404, f"mwtui: endpoint {name} is no longer served\n".encode())
                return
            ep = found
        ex.ep = ep
        ep.stats.inflight += 1
        if ep.plain and not self.wait.count:  # the common case, in short: see proxy()
            up = ep.pick()
            if up is not None:
                ex.attach(up)
                return
        self.proxy(ex, ep)

    def _resolve_host(self, ex: Exchange) -> Any:
        """The endpoint (or _BARE) for a Host header not seen yet; None once answered (400, 404)."""
        host = ex.host
        if not valid_host(host):
            ex.reply(400, pages.invalid_host(host))
            return None
        key = host_key(host)
        # No Host at all is only possible in HTTP/1.0 (the parser refuses it in 1.1): no browser.
        target = _BARE if not key or is_loopback_host(key) else self.table.by_host.get(key)
        if target is None:
            # The list of labels, domains and ports is for the person at this machine, asking by a
            # local name; not for other machines, nor a page whose foreign name rebinds to loopback.
            if ex.client.local_peer and is_local_name(key):
                ex.reply(404, pages.unknown_host(self.view(), host))
            else:
                ex.reply(404, pages.unknown_host_short(host))
            return None
        cache = self._host_cache
        if len(cache) >= HOST_CACHE_MAX:
            cache.clear()
        cache[host] = target
        return target

    def _check_own_host(self, ex: Exchange) -> bool:
        """An endpoint's own port answers only to Hosts that are ours (see own_port_accepts); the
        verdict per Host value is kept until the next table. False once answered (400, 403)."""
        host = ex.host
        if not valid_host(host):
            ex.reply(400, pages.invalid_host(host))
            return False
        ok = own_port_accepts(host_key(host), self.table, self.allowed_hosts)
        if not ok:
            ex.reply(403, pages.host_not_allowed(host))
            return False
        if len(self._own_ok) >= HOST_CACHE_MAX:
            self._own_ok.clear()
        self._own_ok[host] = True
        return True

    def last_error(self, ex: Exchange, name: str) -> Any:
        """An endpoint's last error (a traceback) for a client on this machine; others learn only
        that it failed."""
        if not ex.client.local_peer:
            return pages.SEE_MWTUI
        return self.status_by_name.get(name, {}).get("last_error")

    def proxy(self, ex: Exchange, ep: Endpoint) -> None:
        """Everything between a request's endpoint and a replica: proxy auth, a stopped endpoint, the
        parameter set of a parametrized class, and waiting (none ready, all at max_inputs, or others
        waiting ahead of it). `ex` already counts as in flight at `ep`."""
        if ep.requires_proxy_auth:
            key, secret = ex.auth_key, ex.auth_secret
            if not key or not secret:
                ex.reply(401, pages.MISSING_CREDENTIALS)
                return
            try:
                ok = self.check_token(key.decode("latin-1").strip(), secret.decode("latin-1").strip())
            except Exception:
                log_bug("checking proxy-auth credentials")
                ok = False
            if not ok:
                ex.reply(401, pages.INVALID_CREDENTIALS)
                return
        state = ep.state
        if state == "stopped":
            ex.reply(503, pages.stopped(ep.name))
            return
        if ep.params is not None:
            variant = self.variant(ex, ep)
            if variant is None:
                return
            ep, state = variant, variant.state
        wait = self.wait
        if not wait.count or ep.name not in wait.queues:  # nobody ahead of it
            up = ep.pick()
            if up is not None:
                ex.attach(up)
                return
        if state == "failed" and not ep.upstreams:
            ex.reply(503, pages.failed(ep.name, self.last_error(ex, ep.name)))
        else:
            wait.enqueue(ex, ep)

    def variant(self, ex: Exchange, ep: Endpoint) -> Endpoint | None:
        """The entry serving this request's set of class parameters (from its query string); made
        here, with no replica yet, the first time a set is asked for. None once answered: a
        missing or malformed value is the client's error, told before any user code runs."""
        assert ep.params is not None
        try:
            values = from_query(ep.params, ex.url.partition(b"?")[2])
        except ParamError as e:
            ex.reply(e.status, f"mwtui: {ep.name}: {e.text}\n".encode())
            return None
        name = variant_name(ep.name, values)
        table = self.table
        variant = table.endpoints.get(name)
        if variant is None:
            if table.variants_of(ep.name) >= ep.max_variants:
                ex.reply(503, pages.too_many_variants(ep.name, ep.max_variants), extra=RETRY_AFTER)
                return None
            variant = table.add_variant(ep, name, values, self.metrics)
        ep.stats.inflight -= 1
        variant.stats.inflight += 1
        ex.ep = variant
        return variant

    # ----- mwtui's own pages
    def view(self) -> pages.View:
        return pages.View(
            self.table, self.status, self.metrics.endpoints, self.listeners.ports(),
            self.host, self.port, self.app_status,
        )

    def page(self, ex: Exchange) -> None:
        path = ex.url.split(b"?", 1)[0]
        if not ex.client.local_peer:
            ex.reply(403, pages.BARE_LOCAL_ONLY)
        elif path.startswith(b"/api/requests"):
            self.requests_page(ex, path)
        elif ex.method not in (b"GET", b"HEAD"):
            ex.reply(405, b"mwtui: only GET and HEAD here\n", extra=b"allow: GET, HEAD\r\n")
        elif path == b"/":
            ex.reply(200, pages.index_html(self.view()), content_type=HTML)
        elif path == b"/api/endpoints":
            ex.reply(200, pages.api_endpoints(self.view()), content_type=JSON)
        elif path == b"/api/app":
            ex.reply(200, pages.api_app(self.app_status), content_type=JSON)
        elif path == b"/metrics":
            ex.reply(200, pages.prometheus(self.view()), content_type=PROMETHEUS)
        else:
            ex.reply(404, pages.bare_not_found(path))

    # ----- the request inspector's API (loopback only, like the rest of mwtui's pages)
    def requests_page(self, ex: Exchange, path: bytes) -> None:
        """`GET /api/requests?endpoint=&status=&limit=`, `GET /api/requests/ID`, `POST .../ID/replay`."""
        parts = path.rstrip(b"/").split(b"/")[3:]  # after /api/requests
        if not self.inspector.on:
            ex.reply(404, b"mwtui: the request inspector is off (--no-inspect)\n")
            return
        if not parts:
            if ex.method not in (b"GET", b"HEAD"):
                ex.reply(405, b"mwtui: only GET here\n", extra=b"allow: GET, HEAD\r\n")
                return
            query = parse_qs(ex.url.partition(b"?")[2].decode("latin-1"))
            limit = query.get("limit", ["100"])[0]
            entries = self.inspector.query(query.get("endpoint", [""])[0] or None, query.get("status", [""])[0] or None,
                                           int(limit) if limit.isdigit() else 100)
            ex.reply(200, json.dumps([c.to_json(self.port) for c in entries]).encode(), content_type=JSON)
            return
        cap = self.inspector.find(int(parts[0])) if parts[0].isdigit() else None
        if cap is None:
            ex.reply(404, b"mwtui: no such request (or it left the inspector's ring)\n")
        elif len(parts) == 1 and ex.method in (b"GET", b"HEAD"):
            ex.reply(200, json.dumps(cap.to_json(self.port)).encode(), content_type=JSON)
        elif parts[1:] == [b"replay"] and ex.method == b"POST":
            if not cap.replayable():
                ex.reply(409, b"mwtui: its body was larger than the inspector keeps (64 KB): it cannot be replayed\n")
                return
            task = self.loop.create_task(self.replay(ex, cap))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            ex.reply(405, b"mwtui: GET /api/requests/ID or POST /api/requests/ID/replay\n")

    async def replay(self, ex: Exchange, cap: Capture) -> None:
        """Send a kept request through this gateway again, as it came (credentials included); answer
        with the new entry's id once its response is in."""
        new_id = self.inspector.new_id()
        self.inspector.replaying.add(new_id)
        host = loopback_host(self.host)
        port = self.port
        if self.table.lookup(cap.host) is None:  # it came to the endpoint's own port, by an address
            port = self.listeners.ports().get(cap.endpoint, port)
        try:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(cap.raw_request(new_id))
                head = await reader.readuntil(b"\r\n")
                with contextlib.suppress(ConnectionError):
                    await reader.read()  # the rest, until the gateway closes (connection: close)
            finally:
                writer.close()
        except (OSError, asyncio.IncompleteReadError) as e:
            self.inspector.replaying.discard(new_id)
            ex.reply(502, f"mwtui: the replay could not be sent: {e}\n".encode())
            return
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
        ex.reply(200, json.dumps({"id": new_id, "replay_of": cap.id, "status": status}).encode(), content_type=JSON)

    # ----- control messages
    def on_control(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        try:
            if kind == "routes":
                self.apply_routes(msg)
            elif kind == "status":
                endpoints = msg.get("endpoints")
                if isinstance(endpoints, list):
                    self.status = [e for e in endpoints if isinstance(e, dict)]
                    self.status_by_name = {e["name"]: e for e in self.status if isinstance(e.get("name"), str)}
                app = msg.get("app")
                if isinstance(app, dict):
                    self.app_status = app
            else:
                print(f"mwtui gateway: unknown control message type {kind!r}", file=sys.stderr)
        except Exception:
            log_bug(f"applying a {kind!r} message")

    def apply_routes(self, msg: dict[str, Any]) -> None:
        try:
            table, warnings = build_table(msg, self.metrics)
        except RouteError as e:
            print(f"mwtui gateway: routes ignored: {e}", file=sys.stderr)
            return
        for w in warnings:
            print(f"mwtui gateway: routes: {w}", file=sys.stderr)
        # Pools by address, shared by every endpoint a replica serves; drop those no route uses.
        used: set[str] = set()
        for old in self.pools.values():
            old.endpoints = []
        for ep in table.endpoints.values():
            for up in ep.upstreams:
                pool = self.pools.get(up.address)
                if pool is None:
                    pool = self.pools[up.address] = UpstreamPool(self, up.address)
                up.pool = pool
                if ep.name not in pool.endpoints:
                    pool.endpoints.append(ep.name)
                used.add(up.address)
        for address in [a for a in self.pools if a not in used]:
            self.pools.pop(address).close()
        carry_variants(self.table, table, self.wait.queues, self.metrics)
        inspector = self.inspector
        inspector.forget(set(table.endpoints))
        if inspector.on:
            for ep in table.endpoints.values():
                ep.ring = inspector.ring(ep.name)
        self.table = table
        self._host_cache = {}
        self._own_ok = {}
        self.wait.release()
        # From here on no new request goes to a replica missing from this table: the engine waits
        # for this before it stops replicas that left it.
        if self.control is not None and "seq" in msg:
            self.control.emit({"type": "routes_applied", "seq": msg["seq"]})
        task = self.loop.create_task(self.listeners.reconcile())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ----- periodic work
    async def run_ticks(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.tick()
            except Exception:
                log_bug("in the metrics tick")

    def sweep_interval(self) -> float:
        """Often enough that a timeout fires within a quarter of itself (and endpoint timeouts, whole
        seconds, within half a second); one pass over every client connection costs ~0.1 µs each."""
        lim = self.limits
        timeouts = (lim.header_timeout, lim.keepalive_timeout, lim.body_timeout)
        shortest = min([t for t in timeouts if t > 0] or [2.0])
        return max(0.05, min(0.5, shortest / 4))

    async def run_sweeps(self) -> None:
        interval = self.sweep_interval()
        while True:
            await asyncio.sleep(interval)
            self.batching = True
            try:
                self.sweep()
            except Exception:
                log_bug("sweeping connections")
            finally:
                self.flush_dirty()

    def sweep(self) -> None:
        """Timeouts, checked by one pass rather than a timer per request (which would cost on the hot
        path): a request past its endpoint's `timeout` gets 504; a request head not complete within
        --header-timeout gets 408, and so does a request body that sent nothing for --body-timeout;
        an idle keep-alive connection closes after --keepalive-timeout (a fresh one that never sent a
        byte, after --header-timeout); a half-closed one after LINGER_S."""
        now = self.now = self.loop.time()
        for pool in self.pools.values():
            if pool.idle:
                pool.retire_idle(now)
        pc = perf_counter()
        lim = self.limits
        header_t, idle_t, body_t = lim.header_timeout, lim.keepalive_timeout, lim.body_timeout
        for client in list(self.clients):
            if client.closed:
                continue
            cur = client.cur
            if cur is not None and not cur.req_done and not cur.upgrade and not client.dead and not client.close_after:
                # A body on its way. Progress is read from counters (no clock on the body path): a new
                # request or new body bytes since the last sweep, or reading paused by us (a replica
                # slow to take the body, requests ahead of it), restart its clock. So it fires a sweep
                # interval late at most, never early.
                mark = client.requests + client.body_bytes  # both only grow: the sum moves if either does
                if client.paused or mark != client.body_mark:
                    client.body_mark = mark
                    client.body_t = now
                elif now - client.body_t > body_t:
                    # Held: it never reached a replica. Streamed: the replica sees its client go.
                    client.fail(408, BODY_TIMEOUT)
                    continue
            ex = client.active
            if ex is not None:
                ep = ex.ep
                if ex.up is not None and ep is not None and ep.timeout and not ex.done and pc - ex.t_run > ep.timeout:
                    ex.timed_out()
                continue
            if client.close_after == HALF_CLOSE:
                if now - client.last > LINGER_S:
                    client._close_now()
            elif client.dead or client.close_after:
                continue
            elif client.in_head:
                if header_t and now - client.head_t0 > header_t:
                    client.fail(408, b"mwtui: the request head did not arrive in time (--header-timeout)\n")
            elif client.requests == 0:
                if header_t and now - client.last > header_t:
                    client.close()  # nothing was asked: nothing to answer
            elif client.swept != client.requests:
                # Requests came since the last sweep, all answered by now: idle from here on (a sweep
                # interval late at most, never early; finished() stamps no clock on the hot path).
                client.swept = client.requests
                client.last = now
            elif idle_t and now - client.last > idle_t:
                client.close()

    def tick(self) -> None:
        now = self.loop.time()
        self.wall_offset = time.time() - time.perf_counter()
        out: dict[str, Any] = {}
        for name, ep in self.table.endpoints.items():
            st = ep.stats
            st.tick(now)
            entry = st.live()
            entry["upstreams"] = {
                up.id: {"inflight": up.stats.inflight, "requests_total": up.stats.requests_total}
                for up in ep.upstreams
            }
            out[name] = entry
        control = self.control
        assert control is not None
        control.emit({"type": "metrics", "endpoints": out}, droppable=True)
        if self.access or self.access_dropped:
            offset = self.wall_offset
            lines = [
                {
                    "t": round(offset + ex.t0 + ex.ms / 1000.0, 3), "endpoint": ex.ep.name,  # type: ignore[union-attr]
                    "upstream": ex.up.id if ex.up else None, "method": ex.method.decode("latin-1"),
                    "path": ex.url.decode("latin-1"), "status": ex.status, "ms": round(ex.ms, 2),
                }
                for ex in self.access
            ]
            msg: dict[str, Any] = {"type": "access", "lines": lines}
            if self.access_dropped:
                msg["dropped"] = self.access_dropped
            control.emit(msg, droppable=True)
            self.access = []
            self.access_dropped = {}

    def close(self) -> None:
        self.listeners.close()
        for pool in self.pools.values():
            pool.close()
        for client in list(self.clients):
            client.close()


async def serve(
    host: str,
    port: int,
    limits: Limits | None = None,
    check_token: TokenCheck | None = None,
    open_files: int | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[int] = loop.create_future()

    def finish(code: int) -> None:
        if not stop.done():
            stop.set_result(code)

    gw = Gateway(loop, host, check_token, limits)
    control = gw.control = Control(loop, gw.on_control, lambda: finish(0))
    try:
        server = await gw.listeners.listen_main(port)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            message = f"port {port} on {host} is busy (held by {port_holder(port)}); pick another with --port"
        else:
            message = f"cannot listen on {host}:{port}: {e.strerror or e}"
        control.write_blocking({"type": "error", "message": message})
        print(f"mwtui gateway: {message}", file=sys.stderr)
        return 2
    await control.open()
    sock_host = sockets(server)[0].getsockname()[0]
    control.emit({
        "type": "listening", "host": host or sock_host, "port": gw.port, "open_files": open_files,
        "native": native.running_compiled(),
    })
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, finish, 0)
    ticker = loop.create_task(gw.run_ticks())
    sweeper = loop.create_task(gw.run_sweeps())
    try:
        return await stop
    finally:
        ticker.cancel()
        sweeper.cancel()
        server.close()
        gw.close()
        await control.close()

