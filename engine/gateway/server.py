"""The gateway's state and its listeners: client connections in, routing, own ports, ticks.

`ClientConn` parses requests (httptools) and hands each to `Gateway.route`, which answers it itself
(mwtui's pages, 401/404/503) or attaches it to an upstream (`proxy.Exchange`).
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
from typing import Any

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from . import pages
from .auth import TokenCheck, load_token_check
from .control import Control
from .metrics import Metrics
from .proxy import (
    BODY_CHUNKED,
    BODY_LENGTH,
    BODY_NONE,
    PAUSE_PEER,
    PAUSE_PIPELINE,
    Conn,
    Exchange,
    UpstreamConn,
    UpstreamPool,
    log_bug,
)
from .routes import BARE_HOSTS, Endpoint, RouteError, RouteTable, build_table, host_key
from .wire import BAD_REQUEST, CRLF, HTML, JSON, PROMETHEUS, REQUEST_SPECIAL

TICK_S = 0.5
SWEEP_S = 5.0
CLIENT_IDLE_S = 75.0  # keep-alive timeout for idle client connections (nginx's default)
MAX_HEAD = 64 * 1024  # request line plus headers; more is malformed for us
ACCESS_CAP = 1000  # access lines per flush; beyond that they are counted, not sent
HOST_CACHE_MAX = 1024
OWN_PORT_TRIES = 20

_BARE = object()  # host-cache marker: mwtui's own pages


def port_holder(port: int) -> str:
    """'held by pid 99 python3 -m http.server' for whoever listens on `port`, as far as we may know."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="inet"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                try:
                    proc = psutil.Process(conn.pid)
                    cmd = " ".join(proc.cmdline()) or proc.name()
                except psutil.Error:
                    cmd = "?"
                return f"held by pid {conn.pid} {cmd[:120]}"
    except Exception:  # psutil missing, or not allowed to look
        pass
    return "held by another process"


class ClientConn(Conn):
    """One client connection: HTTP/1.1 keep-alive, pipelining answered in order, or a tunnel."""

    __slots__ = ("parser", "endpoint", "peer_ip", "url", "headers", "head_size", "cur", "active", "queue",
                 "tunnel", "upgrading", "write_paused", "last", "broken", "_draining")

    def __init__(self, gw: Gateway, endpoint: str | None) -> None:
        super().__init__(gw)
        self.endpoint = endpoint  # set on an endpoint's own port: every request goes there
        self.parser = HttpRequestParser(self)
        self.peer_ip = b"127.0.0.1"
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.cur: Exchange | None = None  # the request whose body is being parsed
        self.active: Exchange | None = None  # the request whose response is being written
        self.queue: deque[Exchange] = deque()  # pipelined requests waiting for `active`
        self.tunnel: UpstreamConn | None = None
        self.upgrading: Exchange | None = None
        self.write_paused = False
        self.last = 0.0
        self.broken = False
        self._draining = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer_ip = str(peer[0]).encode()
        self.last = self.gw.loop.time()
        self.gw.clients.add(self)

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.write(data)
            return
        if self.upgrading is not None:
            self.upgrading.upgrade_data(data)
            return
        gw = self.gw
        self.last = gw.loop.time()
        gw.batching = True
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as e:
            ex = self.upgrading
            tail = data[e.args[0]:]
            if ex is not None and tail:
                ex.upgrade_data(tail)
        except HttpParserError as e:
            if e.__context__ is not None and not isinstance(e.__context__, ValueError):
                log_bug("handling a request")
            self.bad_request()
        except Exception:
            log_bug("handling a request")
            self.bad_request()
        finally:
            gw.flush_dirty()

    # ----- httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.head_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_HEAD:
            raise ValueError("request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.head_size += len(name) + len(value)
        if self.head_size > MAX_HEAD:
            raise ValueError("request head too large")

    def on_headers_complete(self) -> None:
        parser = self.parser
        method = parser.get_method()
        headers = self.headers
        host = b""
        xff: bytes | None = None
        key: bytes | None = None
        secret: bytes | None = None
        te: bytes | None = None
        upgrade: bytes | None = None
        connection: bytes | None = None
        expect = False
        body = BODY_NONE
        fwd = [method, b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in headers:
            lname = name.lower()
            if lname not in REQUEST_SPECIAL:
                fwd.extend((name, b": ", value, CRLF))
            elif lname == b"host":
                if not host:
                    host = value
                    fwd.extend((name, b": ", value, CRLF))  # 4 items per header: see _drop_connection_tokens
            elif lname == b"content-length":
                if value.strip() not in (b"0", b""):
                    body = BODY_LENGTH
                fwd.extend((name, b": ", value, CRLF))
            elif lname == b"transfer-encoding":
                te = value
                body = BODY_CHUNKED  # llhttp accepts a request TE only when it ends in chunked
            elif lname == b"x-forwarded-for":
                xff = value if xff is None else xff + b", " + value
            elif lname == b"expect":
                expect = value.strip().lower() == b"100-continue"
            elif lname == b"upgrade":
                upgrade = value
            elif lname == b"connection":
                connection = value if connection is None else connection + b"," + value
            elif lname == b"modal-key":
                key = value
                fwd.extend((name, b": ", value, CRLF))
            elif lname == b"modal-secret":
                secret = value
                fwd.extend((name, b": ", value, CRLF))
            # the rest (keep-alive, te, trailer, proxy-connection, x-forwarded-proto/-host,
            # x-mwtui-endpoint) is hop-by-hop or ours to set
        if connection is not None:
            fwd = self._drop_connection_tokens(fwd, connection)
        if te is not None:
            fwd.extend((b"transfer-encoding: ", te, CRLF))
        is_upgrade = upgrade is not None and parser.should_upgrade()
        if is_upgrade:
            fwd.extend((b"upgrade: ", upgrade, CRLF, b"connection: upgrade\r\n"))  # type: ignore[arg-type]
        headers.clear()
        ex = Exchange(
            self, method, self.url, host, parser.get_http_version() == "1.0",
            parser.should_keep_alive() and not is_upgrade, is_upgrade, expect and body != BODY_NONE, body,
            fwd, xff, key, secret, perf_counter(),
        )
        self.cur = ex
        if is_upgrade:
            self.upgrading = ex
        if self.active is None:
            self.active = ex
            self.gw.route(ex)
        else:
            self.queue.append(ex)
            self.pause(PAUSE_PIPELINE)

    @staticmethod
    def _drop_connection_tokens(fwd: list[bytes], connection: bytes) -> list[bytes]:
        """Headers a client names in Connection are hop-by-hop too (rare: rebuild the list)."""
        tokens = {t.strip().lower() for t in connection.split(b",")} - {b"keep-alive", b"close", b"upgrade", b""}
        if not tokens:
            return fwd
        out = fwd[:4]
        for i in range(4, len(fwd), 4):
            if fwd[i].lower() not in tokens:
                out.extend(fwd[i:i + 4])
        return out

    def on_body(self, data: bytes) -> None:
        ex = self.cur
        if ex is not None:
            ex.req_body(data)

    def on_message_complete(self) -> None:
        ex = self.cur
        if ex is not None:
            self.cur = None
            ex.req_end()

    # ----- lifecycle
    def finished(self, ex: Exchange) -> None:
        """`ex` has been answered (or abandoned); go on with the next request, or close."""
        if self.closed:
            return
        if ex is not self.active:
            return
        self.active = None
        self.last = self.gw.loop.time()
        self.resume(PAUSE_PEER)
        if self.broken:
            self.write(BAD_REQUEST)
            self.close()
            return
        if not ex.keep_alive:
            self.close()
            return
        if self._draining:
            return  # an outer call is already walking the queue
        self._draining = True
        try:
            while self.active is None and self.queue and not self.closed:
                nxt = self.active = self.queue.popleft()
                self.gw.route(nxt)
        finally:
            self._draining = False
        if not self.queue:
            self.resume(PAUSE_PIPELINE)

    def bad_request(self) -> None:
        ex = self.cur
        if ex is not None and not ex.done:
            # The request being read is broken: whatever part reached a replica is void.
            ex.keep_alive = False
            ex.reply(400, b"mwtui: malformed HTTP request\n")
            self.close()
            return
        if self.active is not None and not self.active.done:
            self.broken = True  # answer what came before, then say 400 and close
            self.pause(PAUSE_PIPELINE)
            return
        self.write(BAD_REQUEST)
        self.close()

    def eof_received(self) -> bool | None:
        ex = self.active
        if ex is not None and not ex.done and not ex.tunnel:
            ex.keep_alive = False  # a half-closed client still gets its response, then we close
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        gw = self.gw
        gw.clients.discard(self)
        pending = [self.active, self.cur, *self.queue]
        self.queue.clear()
        self.active = self.cur = None
        gw.batching = True
        try:
            for ex in pending:
                if ex is not None:
                    ex.client_gone()
        except Exception:
            log_bug("after a client closed")
        finally:
            gw.flush_dirty()

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.active
        if ex is not None and ex.conn is not None:
            ex.conn.pause(PAUSE_PEER)

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.active
        if ex is not None and ex.conn is not None:
            ex.conn.resume(PAUSE_PEER)


class OwnListener:
    __slots__ = ("requested", "port", "server")

    def __init__(self, requested: int, port: int, server: asyncio.Server) -> None:
        self.requested = requested
        self.port = port
        self.server = server


class Gateway:
    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, check_token: TokenCheck | None = None) -> None:
        self.loop = loop
        self.host = host
        self.port = 0
        self.check_token = check_token or load_token_check()
        self.control: Control | None = None
        self.metrics = Metrics()
        self.table = RouteTable()
        self.status: list[dict[str, Any]] = []
        self.status_by_name: dict[str, dict[str, Any]] = {}
        self.pools: dict[str, UpstreamPool] = {}
        self.waiting: dict[str, list[Exchange]] = {}
        self.own: dict[str, OwnListener] = {}
        self.clients: set[ClientConn] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.batching = False
        self.dirty: list[Conn] = []
        self.access: list[tuple[Any, ...]] = []
        self.access_cap = ACCESS_CAP
        self.access_dropped = 0
        self.wall_offset = time.time() - time.perf_counter()  # request times are perf_counter()
        self.bare_hosts = set(BARE_HOSTS)
        if host not in ("0.0.0.0", "::", ""):
            self.bare_hosts.add(host_key(host.encode()))
        self._host_cache: dict[bytes, Any] = {}
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
        if name is not None:
            ep = self.table.endpoints.get(name)
            if ep is None:
                ex.reply(404, f"mwtui: endpoint {name} is no longer served\n".encode())
                return
            self.proxy(ex, ep)
            return
        host = ex.host
        cache = self._host_cache
        target = cache.get(host)
        if target is None:
            key = host_key(host)
            target = _BARE if not key or key in self.bare_hosts else self.table.by_host.get(key)
            if target is None:
                ex.reply(404, pages.unknown_host(self.view(), host))
                return
            if len(cache) >= HOST_CACHE_MAX:
                cache.clear()
            cache[host] = target
        if target is _BARE:
            self.page(ex)
        else:
            self.proxy(ex, target)

    def proxy(self, ex: Exchange, ep: Endpoint) -> None:
        ex.ep = ep
        ep.stats.inflight += 1
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
        up = ep.pick()
        if up is not None:
            ex.attach(up)
        elif state == "failed":
            ex.reply(503, pages.failed(ep.name, self.status_by_name.get(ep.name, {}).get("last_error")))
        else:
            self.hold(ex, ep)

    # ----- holding requests while replicas start
    def hold(self, ex: Exchange, ep: Endpoint) -> None:
        self.waiting.setdefault(ep.name, []).append(ex)
        ex.timer = self.loop.call_later(ep.hold_s, self._hold_expired, ex)

    def _hold_expired(self, ex: Exchange) -> None:
        try:
            ex.hold_expired()
        except Exception:
            log_bug("answering a held request")

    def unhold(self, ex: Exchange) -> None:
        ep = ex.ep
        if ep is None:
            return
        waiting = self.waiting.get(ep.name)
        if waiting is not None:
            with contextlib.suppress(ValueError):
                waiting.remove(ex)
            if not waiting:
                del self.waiting[ep.name]

    def _release_waiters(self) -> None:
        for name in list(self.waiting):
            ep = self.table.endpoints.get(name)
            if ep is not None and not ep.upstreams and ep.state not in ("stopped", "failed"):
                continue  # still starting: keep holding
            held = self.waiting.pop(name)
            for ex in held:
                if ex.done:
                    continue
                if ex.timer is not None:
                    ex.timer.cancel()
                    ex.timer = None
                if ep is None:
                    ex.reply(503, f"mwtui: endpoint {name} is no longer part of the app\n".encode())
                elif ep.state == "stopped":
                    ex.reply(503, pages.stopped(name))
                else:
                    ex.ep = ep
                    up = ep.pick()
                    if up is not None:
                        ex.attach(up)
                    else:
                        ex.reply(503, pages.failed(name, self.status_by_name.get(name, {}).get("last_error")))

    # ----- mwtui's own pages
    def view(self) -> pages.View:
        return pages.View(
            self.table, self.status, self.metrics.endpoints, {n: o.port for n, o in self.own.items()},
            self.host, self.port,
        )

    def page(self, ex: Exchange) -> None:
        path = ex.url.split(b"?", 1)[0]
        if ex.method not in (b"GET", b"HEAD"):
            ex.reply(405, b"mwtui: only GET and HEAD here\n", extra=b"allow: GET, HEAD\r\n")
        elif path == b"/":
            ex.reply(200, pages.index_html(self.view()), content_type=HTML)
        elif path == b"/api/endpoints":
            ex.reply(200, pages.api_endpoints(self.view()), content_type=JSON)
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
        for ep in table.endpoints.values():
            for up in ep.upstreams:
                pool = self.pools.get(up.address)
                if pool is None:
                    pool = self.pools[up.address] = UpstreamPool(self, up.address)
                up.pool = pool
                used.add(up.address)
        for address in [a for a in self.pools if a not in used]:
            self.pools.pop(address).close()
        self.table = table
        self._host_cache = {}
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
        self.port = server.sockets[0].getsockname()[1]
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
            actual = server.sockets[0].getsockname()[1]
            warning = None
            if candidate != port:
                assert first_error is not None
                if first_error.errno == errno.EADDRINUSE:
                    why = f"is busy ({port_holder(port)})"
                else:
                    why = f"cannot be used ({first_error.strerror or first_error})"
                warning = f"port {port} for {name} {why}; using {actual}"
            return OwnListener(port, actual, server), warning
        return None, f"no port could be opened for {name}: {first_error}"

    # ----- periodic work
    async def run_ticks(self) -> None:
        next_sweep = self.loop.time() + SWEEP_S
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.tick()
                if self.loop.time() >= next_sweep:
                    next_sweep = self.loop.time() + SWEEP_S
                    self.sweep()
            except Exception:
                log_bug("in the metrics tick")

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
            lines = [
                {
                    "t": round(t, 3), "endpoint": ep, "upstream": up, "method": method.decode("latin-1"),
                    "path": url.decode("latin-1"), "status": status, "ms": round(ms, 2),
                }
                for t, ep, up, method, url, status, ms in self.access
            ]
            msg: dict[str, Any] = {"type": "access", "lines": lines}
            if self.access_dropped:
                msg["dropped"] = self.access_dropped
            control.emit(msg, droppable=True)
            self.access = []
            self.access_dropped = 0

    def sweep(self) -> None:
        """Close client connections idle past the keep-alive timeout."""
        limit = self.loop.time() - CLIENT_IDLE_S
        for client in list(self.clients):
            if client.active is None and client.tunnel is None and client.last < limit:
                client.close()

    def close(self) -> None:
        for listener in self.own.values():
            listener.server.close()
        for pool in self.pools.values():
            pool.close()
        for client in list(self.clients):
            client.close()


async def serve(host: str, port: int) -> int:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[int] = loop.create_future()

    def finish(code: int) -> None:
        if not stop.done():
            stop.set_result(code)

    gw = Gateway(loop, host)
    control = gw.control = Control(loop, gw.on_control, lambda: finish(0))
    try:
        server = await gw.listen_main(port)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            message = f"port {port} on {host} is busy ({port_holder(port)}); pick another with --port"
        else:
            message = f"cannot listen on {host}:{port}: {e.strerror or e}"
        control.write_blocking({"type": "error", "message": message})
        print(f"mwtui gateway: {message}", file=sys.stderr)
        return 2
    await control.open()
    sock_host = server.sockets[0].getsockname()[0]
    control.emit({"type": "listening", "host": host or sock_host, "port": gw.port})
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, finish, 0)
    ticker = loop.create_task(gw.run_ticks())
    try:
        return await stop
    finally:
        ticker.cancel()
        server.close()
        gw.close()
        await control.close()

