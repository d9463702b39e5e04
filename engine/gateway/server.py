"""The gateway's state and its listeners: routing, own ports, waiting requests, ticks.

`client.ClientConn` parses requests (httptools) and hands each to `Gateway.route`, which answers it
itself (mwtui's pages, 401/404/503) or attaches it to an upstream (`proxy.Exchange`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Any, Final, cast

from ..params import ParamError, from_query, variant_name
from ..ports import port_holder
from . import native, pages
from .auth import TokenCheck, load_token_check
from .client import BODY_TIMEOUT, LINGER_S, ClientConn
from .control import Control
from .limits import Limits
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
from .wire import HTML, JSON, PROMETHEUS

TICK_S: Final = 0.5
RETRY_AFTER: Final = b"retry-after: 5\r\n"
ACCESS_CAP: Final = 1000  # access lines per tick; beyond that they are counted per endpoint, not sent
HOST_CACHE_MAX: Final = 1024
OWN_PORT_TRIES: Final = 20

_BARE = object()  # host-cache marker: mwtui's own pages


def _sockets(server: asyncio.Server) -> Any:
    """uvloop gives a list where typeshed says tuple: read it untyped (compiled, a wrong declared
    type is a TypeError)."""
    return cast(Any, server).sockets


class OwnListener:
    __slots__ = ("requested", "port", "server")

    def __init__(self, requested: int, port: int, server: asyncio.Server) -> None:
        self.requested = requested
        self.port = port
        self.server = server


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
        # Requests waiting for a replica, per endpoint, in arrival order. Entries that stopped waiting
        # (answered, client gone) are skipped when reached; `nwaiting` counts the live ones.
        self.waiting: dict[str, deque[Exchange]] = {}
        self.nwaiting = 0
        self.own: dict[str, OwnListener] = {}
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
        self._ports_lock = asyncio.Lock()
        self._ports_again = False

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
        if ep.plain and not self.nwaiting:  # the common case, in short: see proxy()
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

    def _last_error(self, ex: Exchange, name: str) -> Any:
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
        if not self.nwaiting or ep.name not in self.waiting:  # nobody ahead of it
            up = ep.pick()
            if up is not None:
                ex.attach(up)
                return
        if state == "failed" and not ep.upstreams:
            ex.reply(503, pages.failed(ep.name, self._last_error(ex, ep.name)))
        else:
            self.enqueue(ex, ep)

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

    # ----- requests waiting for a replica: none ready yet, or every one at max_inputs
    def enqueue(self, ex: Exchange, ep: Endpoint) -> None:
        stats = ep.stats
        if stats.queued >= self.limits.max_queue:
            ex.reply(503, pages.queue_full(ep.name, stats.queued), extra=RETRY_AFTER)
            return
        queue = self.waiting.get(ep.name)
        if queue is None:
            queue = self.waiting[ep.name] = deque()
        elif len(queue) > 2 * stats.queued + 64:
            self.waiting[ep.name] = queue = deque(x for x in queue if x.waiting)  # drop the dead
        queue.append(ex)
        ex.waiting = True
        stats.queued += 1
        self.nwaiting += 1
        ex.timer = self.loop.call_later(self._wait_bound(ep), self._wait_expired, ex, self.loop.time())
        if not ep.upstreams and self.control is not None and stats.queued & (stats.queued - 1) == 0:
            # A pool at zero: tell the engine now rather than at the next metrics tick, so that its
            # autoscaler starts a replica half a second sooner (at 1, 2, 4, 8... waiting: a burst
            # is seen growing without one event per request).
            msg: dict[str, Any] = {"type": "wake", "endpoint": ep.name, "queued": stats.queued}
            if ep.parent is not None:  # a parameter set the engine may not have a pool for yet
                msg["parent"], msg["values"] = ep.parent, ep.values
            self.control.emit(msg)

    @staticmethod
    def _wait_bound(ep: Endpoint) -> float:
        """How long a request may wait: the startup budget while no replica is ready; while all are
        busy, also the function's own timeout (by then a running request ended or got its 504)."""
        return ep.hold_s if not ep.upstreams else max(ep.hold_s, ep.timeout)

    def unwait(self, ex: Exchange) -> None:
        ex.waiting = False
        self.nwaiting -= 1
        ep = ex.ep
        if ep is not None:
            ep.stats.queued -= 1
        if ex.timer is not None:
            ex.timer.cancel()
            ex.timer = None

    def _wait_expired(self, ex: Exchange, since: float) -> None:
        ex.timer = None
        if ex.done or not ex.waiting:
            return
        try:
            assert ex.ep is not None
            ep = self.table.endpoints.get(ex.ep.name, ex.ep)
            waited = self.loop.time() - since
            left = self._wait_bound(ep) - waited
            if left > 0.01:  # the endpoint changed meanwhile (replicas arrived, all busy): wait on
                ex.timer = self.loop.call_later(left, self._wait_expired, ex, since)
                return
            if ep.upstreams:
                body = pages.all_busy(ep.name, len(ep.upstreams), ep.max_inputs, round(waited, 1))
            else:
                body = pages.not_ready(ep.name, ep.state, round(waited, 1))
            ex.reply(503, body, extra=RETRY_AFTER)
        except Exception:
            log_bug("answering a request that waited too long")

    def slot_freed(self, pool: UpstreamPool) -> None:
        for name in pool.endpoints:
            if name in self.waiting:
                self.dispatch(name)

    def dispatch(self, name: str) -> None:
        """Hand waiting requests of `name`, oldest first, to replicas with a free slot."""
        queue = self.waiting.get(name)
        ep = self.table.endpoints.get(name)
        if queue is None or ep is None:
            return
        while queue:
            ex = queue[0]
            if not ex.waiting or ex.done:
                queue.popleft()
                continue
            up = ep.pick()
            if up is None:
                break
            queue.popleft()
            self.unwait(ex)
            ex.ep = ep  # the table may be newer than the one it arrived under
            ex.t_run = perf_counter()
            try:
                ex.attach(up)
            except Exception:
                log_bug("sending a waiting request to a replica")
        if not queue and self.waiting.get(name) is queue:
            del self.waiting[name]

    def _release_waiters(self) -> None:
        """After new routes: answer the waiting requests that can no longer be served, send on the
        ones that now can; the rest keep waiting (their bound is checked again when it runs out)."""
        for name in list(self.waiting):
            ep = self.table.endpoints.get(name)
            if ep is not None and ep.state != "stopped" and (ep.upstreams or ep.state != "failed"):
                self.dispatch(name)
                continue
            queue = self.waiting.pop(name)
            for ex in queue:
                if ex.done or not ex.waiting:
                    continue
                self.unwait(ex)
                if ep is None and "?" in name:
                    ex.reply(503, pages.variant_gone(name))
                elif ep is None:
                    ex.reply(503, f"mwtui: endpoint {name} is no longer part of the app\n".encode())
                elif ep.state == "stopped":
                    ex.reply(503, pages.stopped(name))
                else:
                    ex.reply(503, pages.failed(name, self._last_error(ex, name)))

    # ----- mwtui's own pages
    def view(self) -> pages.View:
        return pages.View(
            self.table, self.status, self.metrics.endpoints, {n: o.port for n, o in self.own.items()},
            self.host, self.port, self.app_status,
        )

    def page(self, ex: Exchange) -> None:
        path = ex.url.split(b"?", 1)[0]
        if not ex.client.local_peer:
            ex.reply(403, pages.BARE_LOCAL_ONLY)
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
        carry_variants(self.table, table, self.waiting, self.metrics)
        self.table = table
        self._host_cache = {}
        self._own_ok = {}
        self._release_waiters()
        # From here on no new request goes to a replica missing from this table: the engine waits
        # for this before it stops replicas that left it.
        if self.control is not None and "seq" in msg:
            self.control.emit({"type": "routes_applied", "seq": msg["seq"]})
        task = self.loop.create_task(self.reconcile_ports())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ----- listeners
    def client_factory(self, endpoint: str | None) -> Callable[[], ClientConn]:
        return lambda: ClientConn(self, endpoint)

    async def listen_main(self, port: int) -> asyncio.Server:
        server = await self.loop.create_server(self.client_factory(None), self.host, port, backlog=2048)
        self.port = _sockets(server)[0].getsockname()[1]
        return server

    async def reconcile_ports(self) -> None:
        """Bind, move or close endpoints' own listeners to match the table; report what changed."""
        if self._ports_lock.locked():
            self._ports_again = True  # the run in progress will look again
            return
        async with self._ports_lock:
            changed = False
            warnings: list[str] = []
            while True:
                self._ports_again = False
                desired = {ep.name: ep.port for ep in self.table.endpoints.values() if ep.port}
                for name in list(self.own):
                    if desired.get(name) != self.own[name].requested:
                        self.own.pop(name).server.close()
                        changed = True
                for name, port in desired.items():
                    if name in self.own:
                        continue
                    listener, warning = await self._bind_own(name, port)
                    if warning:
                        warnings.append(warning)
                    if listener is not None:
                        self.own[name] = listener
                    changed = True
                if not self._ports_again:
                    break
            if changed or warnings:
                assert self.control is not None
                self.control.emit({
                    "type": "ports",
                    "endpoints": {name: o.port for name, o in self.own.items()},
                    "warnings": warnings,
                })

    async def _bind_own(self, name: str, port: int) -> tuple[OwnListener | None, str | None]:
        tries = [port] + [p for p in range(port + 1, port + 1 + OWN_PORT_TRIES) if p < 65536] + [0]
        first_error: OSError | None = None
        for candidate in tries:
            try:
                server = await self.loop.create_server(self.client_factory(name), self.host, candidate, backlog=1024)
            except OSError as e:
                first_error = first_error or e
                continue
            actual = _sockets(server)[0].getsockname()[1]
            warning = None
            if candidate != port:
                assert first_error is not None
                if first_error.errno == errno.EADDRINUSE:
                    why = f"is busy (held by {port_holder(port)})"
                else:
                    why = f"cannot be used ({first_error.strerror or first_error})"
                warning = f"port {port} for {name} {why}; using {actual}"
            return OwnListener(port, actual, server), warning
        return None, f"no port could be opened for {name}: {first_error}"

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
        for listener in self.own.values():
            listener.server.close()
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
        server = await gw.listen_main(port)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            message = f"port {port} on {host} is busy (held by {port_holder(port)}); pick another with --port"
        else:
            message = f"cannot listen on {host}:{port}: {e.strerror or e}"
        control.write_blocking({"type": "error", "message": message})
        print(f"mwtui gateway: {message}", file=sys.stderr)
        return 2
    await control.open()
    sock_host = _sockets(server)[0].getsockname()[0]
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

