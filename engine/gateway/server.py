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
from typing import Any, Final, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from ..params import ParamError, from_query, variant_name
from ..ports import port_holder
from . import native, pages
from .auth import TokenCheck, load_token_check
from .control import Control
from .limits import MAX_HEAD, Limits
from .metrics import Metrics
from .proxy import (
    BODY_CHUNKED,
    BODY_LENGTH,
    BODY_NONE,
    HALF_CLOSE,
    LOWER,
    PAUSE_PEER,
    PAUSE_PIPELINE,
    Conn,
    Exchange,
    Reject,
    UpstreamConn,
    UpstreamPool,
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
from .wire import CONNECTION_NEVER, CONTINUE, CRLF, HTML, JSON, PROMETHEUS, REQUEST_SPECIAL, response

TICK_S: Final = 0.5
LINGER_S: Final = 5.0  # a half-closed connection is closed outright after this (nginx's lingering_time is 30)
MALFORMED: Final = b"mwtui: malformed HTTP request\n"
BODY_TIMEOUT: Final = b"mwtui: the request body stopped arriving (--body-timeout)\n"
RETRY_AFTER: Final = b"retry-after: 5\r\n"
ACCESS_CAP: Final = 1000  # access lines per tick; beyond that they are counted per endpoint, not sent
HOST_CACHE_MAX: Final = 1024
OWN_PORT_TRIES: Final = 20

_BARE = object()  # host-cache marker: mwtui's own pages


def is_loopback_peer(ip: str) -> bool:
    """A client address on this machine (once per connection): 127.0.0.0/8, ::1, or either mapped."""
    if ip.startswith("127.") or ip == "::1":
        return True
    if ip.startswith("::ffff:"):
        return ip[7:].startswith("127.")
    return False


def _origin_form(method: bytes, url: bytes, host: bytes) -> bytes:
    """The request target as the replica gets it: a path. An absolute-form target (`http://a/b`) is
    taken only when its authority is the Host it came with (the Host routes it; the replica must
    not see another), and sent on as its path; `*` only with OPTIONS."""
    if url == b"*" and method == b"OPTIONS":
        return url
    lower = url.lower()
    scheme = 7 if lower.startswith(b"http://") else 8 if lower.startswith(b"https://") else 0
    if not scheme:
        raise Reject(400, b"mwtui: a request target must be a path (/...)\n")
    rest = url[scheme:]
    end = len(rest)
    for sep in (b"/", b"?"):
        i = rest.find(sep)
        if 0 <= i < end:
            end = i
    authority, path = rest[:end], rest[end:]
    if not valid_host(authority) or host_key(authority) != host_key(host):
        raise Reject(400, b"mwtui: the request target names another host than the Host header\n")
    return path if path.startswith(b"/") else b"/" + path


class ClientConn(Conn):
    """One client connection: HTTP/1.1 keep-alive, pipelining answered in order, or a tunnel."""

    __slots__ = ("parser", "feed", "p_method", "p_keep", "endpoint", "peer_ip", "url", "headers", "cur", "active", "queue",
                 "tunnel", "upgrading", "write_paused", "last", "broken", "_draining", "dead", "in_head",
                 "head_t0", "head_bytes", "head_partial", "requests", "swept", "forwarded", "local_peer",
                 "held", "body_bytes", "body_mark", "body_t")

    def __init__(self, gw: Gateway, endpoint: str | None) -> None:
        super().__init__(gw)
        self.endpoint = endpoint  # set on an endpoint's own port: every request goes there
        parser = self.parser = HttpRequestParser(self)
        # Its methods bound once (see Conn.twrite).
        self.feed: Callable[[bytes], None] = parser.feed_data
        self.p_method: Callable[[], bytes] = parser.get_method
        self.p_keep: Callable[[], bool] = parser.should_keep_alive
        self.peer_ip = b"127.0.0.1"
        self.local_peer = True  # the client is on this machine: it may see labels and tracebacks
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.cur: Exchange | None = None  # the request whose body is being parsed
        self.active: Exchange | None = None  # the request whose response is being written
        self.queue: deque[Exchange] = deque()  # pipelined requests waiting for `active`
        self.tunnel: UpstreamConn | None = None
        self.upgrading: Exchange | None = None
        self.write_paused = False
        self.last = 0.0  # loop time it was opened, began to linger, or (by the sweep) was seen idle
        self.swept = 0  # `requests` as the sweep last saw it idle
        self.broken: bytes | None = None  # an error response to send once the requests before it are answered
        self._draining = False
        self.dead = False  # the parser failed or we are closing: further bytes are dropped
        self.in_head = False  # a request head has begun and is not complete yet
        self.head_t0 = 0.0  # loop time it began
        self.head_bytes = 0  # bytes received for it, beyond the first chunk (see data_received)
        self.head_partial = False
        self.requests = 0
        self.held: Exchange | None = None  # a request whose body is gathered before it is routed
        self.body_bytes = 0  # request body bytes read on this connection: --body-timeout's progress
        self.body_mark = -1  # requests + body_bytes as the sweep last saw them
        self.body_t = 0.0  # loop time the sweep last saw a body make progress
        self.forwarded = b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n"  # see on_headers_complete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.twrite = transport.write  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer_ip = str(peer[0]).encode()
            self.local_peer = is_loopback_peer(str(peer[0]))
            self.forwarded = b"x-forwarded-for: %b\r\nx-forwarded-proto: http\r\n" % self.peer_ip
        self.last = self.gw.loop.time()
        self.gw.clients.add(self)

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.write(data)
            return
        upgrading = self.upgrading  # a local: narrowing the attribute would outlive the callbacks below
        if upgrading is not None:
            upgrading.upgrade_data(data)
            return
        if self.dead:
            return
        gw = self.gw
        gw.batching = True
        try:
            self.feed(data)
            if self.in_head:
                # httptools keeps a header line until it ends, so a head that never ends would grow
                # without bound before on_header could count it. Count raw bytes instead, skipping the
                # chunk the head began in (it may hold the end of the previous request).
                if self.head_partial:
                    self.head_partial = False
                    # Stamped here rather than in on_url: only a head left incomplete needs it (for
                    # --header-timeout), and loop.time() is the same within one callback.
                    self.head_t0 = gw.loop.time()
                else:
                    self.head_bytes += len(data)
                    if self.head_bytes > MAX_HEAD:
                        self.fail(431, b"mwtui: request headers larger than 64 KB\n")
        except HttpParserUpgrade as e:
            ex = self.upgrading  # set by the callbacks of this very feed
            tail = data[e.args[0]:]
            if ex is not None and tail:
                ex.upgrade_data(tail)
        except HttpParserError as e:
            self.parse_error(e)
        except Reject as e:  # raised outside a parser callback (say, by fail() paths); same answer
            self.fail(e.status, e.body)
        except Exception:
            log_bug("handling a request")
            self.fail(400, MALFORMED)
        finally:
            gw.batching = False
            if gw.dirty:
                gw.flush_dirty()

    def parse_error(self, e: HttpParserError) -> None:
        cause = e.__context__
        if isinstance(cause, Reject):
            self.fail(cause.status, cause.body)
            return
        if cause is not None and not isinstance(cause, ValueError):
            log_bug("handling a request")
        if str(e) == "Invalid HTTP version":
            self.fail(505, b"mwtui: only HTTP/1.0 and HTTP/1.1 are served here\n")
        else:
            self.fail(400, MALFORMED)

    # ----- httptools callbacks. No on_message_begin: a request's first on_url begins it (a callback
    # less per request; a client that stalls after the method alone is closed as an idle one is).
    def on_url(self, url: bytes) -> None:
        if self.in_head:  # the target goes on in a later read
            url = self.url = self.url + url
        else:
            self.in_head = True
            self.url = url
            self.head_bytes = 0
            self.head_partial = True
        if len(url) > MAX_HEAD:
            raise Reject(414, b"mwtui: request target longer than 64 KB\n")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Its size is checked once the head is complete (on_headers_complete): one read (at most
        # 256 KB with uvloop) can pile up no more than that; data_received counts a head across reads.
        # Outside a head it is a trailer (after a chunked body): dropped, so that it can neither pile
        # up nor join the next request's headers.
        if self.in_head:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.requests += 1
        parser = self.parser
        method = self.p_method()
        headers = self.headers
        host = b""
        hosts = 0
        xff: bytes | None = None
        key: bytes | None = None
        secret: bytes | None = None
        te: bytes | None = None
        upgrade: bytes | None = None
        connection: bytes | None = None
        length: bytes | None = None
        expect = False
        body = BODY_NONE
        url = self.url
        fwd = [method, b" ", url, b" HTTP/1.1\r\n"]
        size = len(url)
        for name, value in headers:
            size += len(name) + len(value) + 4
            lname = LOWER(name)
            if lname not in REQUEST_SPECIAL:
                # A WSGI bridge reads `X_Forwarded_Proto` as X-Forwarded-Proto: the ones we set
                # cannot be spelled with underscores either.
                if b"_" not in lname or lname.replace(b"_", b"-") not in REQUEST_SPECIAL:
                    fwd.extend((name, b": ", value, CRLF))
            elif lname == b"host":
                hosts += 1
                if hosts == 1:
                    host = value
                    fwd.extend((name, b": ", value, CRLF))  # 4 items per header: see _drop_connection_tokens
            elif lname == b"content-length":
                if value.strip() not in (b"0", b""):
                    body = BODY_LENGTH
                    length = value
                fwd.extend((name, b": ", value, CRLF))
            elif lname == b"transfer-encoding":
                te = value if te is None else te + b", " + value
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
                secret = value  # checked here, never forwarded: user code cannot log what it never sees
            # the rest (keep-alive, te, trailer, proxy-connection, x-forwarded-proto/-host,
            # x-mwtui-endpoint) is hop-by-hop or ours to set
        headers.clear()
        if size > MAX_HEAD:
            raise Reject(431, b"mwtui: request headers larger than 64 KB\n")
        # llhttp takes only HTTP/0.9, 1.0, 1.1 and 2.0 (see test_gateway_limits); with no Connection
        # header, keep-alive by default means 1.1, which spares get_http_version's string formatting.
        keep_alive = self.p_keep()
        if connection is None and keep_alive:
            http10 = False
        else:
            version = parser.get_http_version()
            http10 = version == "1.0"
            if not http10 and version != "1.1":
                raise Reject(505, b"mwtui: only HTTP/1.0 and HTTP/1.1 are served here\n")
        # Framing and routing ambiguities a proxy must refuse (RFC 9112 §3.2, §6.1): they are how
        # requests get smuggled past one parser to another. llhttp already refuses CL with TE.
        if hosts != 1 and (hosts or not http10):
            raise Reject(400, b"mwtui: a request needs exactly one Host header\n")
        if te is not None and http10:
            raise Reject(400, b"mwtui: Transfer-Encoding is not allowed in an HTTP/1.0 request\n")
        if method == b"CONNECT":
            raise Reject(405, b"mwtui: CONNECT is not supported; this is not a forward proxy\n")
        if length is not None and self.gw.limits.max_body and int(length) > self.gw.limits.max_body:
            raise Reject(413, b"mwtui: request body larger than the gateway's limit (--max-body)\n")
        if url[:1] != b"/":  # absolute-form or `*`: rare, and never forwarded as it came
            url = self.url = _origin_form(method, url, host)
            fwd[2] = url
        if te is not None:
            codings = [c.strip() for c in te.lower().split(b",")]
            if codings[-1] != b"chunked":  # RFC 9112 §6.3: the body's length is unknowable
                raise Reject(400, b"mwtui: a request's Transfer-Encoding must end in chunked\n")
            if len(codings) > 1:
                # We frame the body ourselves, as chunks; a coding under them (gzip) would go on
                # unread, for the replica to interpret its own way. 501 as RFC 9112 §6.1 and nginx.
                raise Reject(501, b"mwtui: a request body's Transfer-Encoding may only be chunked\n")
        if connection is not None:
            fwd = self._drop_connection_tokens(fwd, connection)
        if te is not None:
            fwd.append(b"transfer-encoding: chunked\r\n")
        is_upgrade = upgrade is not None and parser.should_upgrade()
        if is_upgrade:
            fwd.extend((b"upgrade: ", upgrade, CRLF, b"connection: upgrade\r\n"))  # type: ignore[arg-type]
        if not xff:  # none, or only empty ones
            fwd.append(self.forwarded)  # the same two lines for every request of a connection
        else:
            fwd.append(b"x-forwarded-for: %b, %b\r\nx-forwarded-proto: http\r\n" % (xff, self.peer_ip))
        if host:
            fwd += (b"x-forwarded-host: ", host, CRLF)
        ex = Exchange(self, method, url, host, http10, keep_alive and not is_upgrade, body, fwd, perf_counter())
        self.cur = ex
        if is_upgrade:
            ex.upgrade = True
            self.upgrading = ex
        held = False
        if body != BODY_NONE:  # a bodiless request pays this one comparison
            held = self._hold(ex, expect, length, is_upgrade)
        if key is not None:
            ex.auth_key = key
        if secret is not None:
            ex.auth_secret = secret
        if self.active is None:
            self.active = ex
            if held:
                self._gather(ex)
            else:
                self.gw.route(ex)
        else:
            self.queue.append(ex)
            self.pause(PAUSE_PIPELINE)

    @staticmethod
    def _drop_connection_tokens(fwd: list[bytes], connection: bytes) -> list[bytes]:
        """Headers a client names in Connection are hop-by-hop too (rare: rebuild the list). Never the
        ones that frame or route the request: dropping Content-Length while the body still goes on
        would let the replica read that body as a request of its own (smuggling), so such a
        request is refused."""
        tokens = {t.strip().lower() for t in connection.split(b",")} - {b"keep-alive", b"close", b"upgrade", b""}
        if not tokens:
            return fwd
        if not tokens.isdisjoint(CONNECTION_NEVER):
            raise Reject(400, b"mwtui: Connection may not name Host, Content-Length or Transfer-Encoding\n")
        out = fwd[:4]
        for i in range(4, len(fwd), 4):
            if fwd[i].lower() not in tokens:
                out.extend(fwd[i:i + 4])
        return out

    def on_body(self, data: bytes) -> None:
        self.body_bytes += len(data)
        ex = self.cur
        if ex is not None:
            ex.req_body(data)
            if ex is self.held and ex.body_seen > self.gw.limits.buffer_body:
                self._release(ex)  # a chunked body outgrew --buffer-body: the rest streams

    def on_message_complete(self) -> None:
        ex = self.cur
        if ex is not None:
            self.cur = None
            body = ex.body
            if body == BODY_NONE:
                ex.req_done = True  # all req_end does for a request without a body
                return
            if body == BODY_CHUNKED:
                ex.req_end()
            else:
                ex.req_done = True
            if ex is self.held:
                self._release(ex)

    # ----- request bodies gathered before routing (--buffer-body): a slow upload holds no replica
    def _hold(self, ex: Exchange, expect: bool, length: bytes | None, upgrade: bool) -> bool:
        """Whether `ex`'s body is gathered here before `ex` is routed: a body of known length up to
        --buffer-body, or a chunked one until it is whole or outgrows that. Until then it holds no
        replica slot and counts as no load; only --body-timeout bounds how slowly it may come."""
        if expect:
            ex.expect = True
        limit = self.gw.limits.buffer_body
        if not limit or upgrade or (length is not None and int(length) > limit):
            return False
        self.held = ex
        return True

    def _gather(self, ex: Exchange) -> None:
        """Held `ex` is the request being answered now: if it waits for our go-ahead, give it (no
        replica is needed to take a body we keep ourselves)."""
        if ex.expect and not ex.http10:  # an HTTP/1.0 client's Expect is ignored (RFC 9110 §10.1.1)
            ex.expect = False  # answered: bind() must not ask again
            self.write(CONTINUE)

    def _release(self, ex: Exchange) -> None:
        """Held `ex`'s body is whole (or too big to keep): now it may take a replica. If requests
        before it are still being answered, finished() routes it in its turn."""
        self.held = None
        if ex is self.active and not ex.done:
            ex.t_run = perf_counter()  # its endpoint's `timeout` counts from now, not from the head
            self.gw.route(ex)

    # ----- lifecycle
    def finished(self, ex: Exchange) -> None:
        """`ex` has been answered (or abandoned); go on with the next request, or close."""
        if self.closed:
            return
        if ex is not self.active:
            return
        self.active = None
        if self.paused:  # resume() tests the reason itself; this saves the call on the common path
            self.resume(PAUSE_PEER)
        if not ex.keep_alive:
            # Unread request bytes may follow (a body we refused): half-close so our answer survives.
            self.close() if ex.req_done and self.broken is None else self.linger()
            return
        if self._draining:
            return  # an outer call is already walking the queue
        if self.queue:  # pipelined requests (rare)
            self._draining = True
            try:
                while self.active is None and self.queue and not self.closed:
                    nxt = self.active = self.queue.popleft()
                    if nxt is self.held:
                        self._gather(nxt)  # routed once its body is whole (see _release)
                    else:
                        self.gw.route(nxt)
            finally:
                self._draining = False
        if self.active is None and self.broken is not None:
            self.write(self.broken)  # everything before the bad request is answered: now say why
            self.linger()
            return
        if not self.queue and self.paused:
            self.resume(PAUSE_PIPELINE)

    def fail(self, status: int, body: bytes) -> None:
        """The bytes from the client cannot be used (malformed, too big, too slow): answer `status`,
        after any requests before the bad one, and close. Nothing of a broken request stays with a
        replica."""
        self.dead = True
        self.in_head = False
        self.held = None
        self.headers.clear()
        ex = self.cur
        if ex is not None and not ex.done:
            if ex is self.active:
                ex.keep_alive = False
                ex.reply(status, body)  # closes (half) through finished()
                self.linger()
                return
            # a pipelined request not routed yet: it never started, drop it
            with contextlib.suppress(ValueError):
                self.queue.remove(ex)
            ex.done = True
        self.cur = None
        if self.active is not None and not self.active.done:
            self.broken = response(status, body, close=True)
            self.pause(PAUSE_PIPELINE)
            return
        self.write(response(status, body, close=True))
        self.linger()

    def linger(self) -> None:
        self.dead = True
        self.last = self.gw.loop.time()
        self.close(HALF_CLOSE)

    def eof_received(self) -> bool | None:
        cur = self.cur
        if cur is not None and not cur.req_done and not cur.done:
            return None  # its body can never arrive now: give up on it (the replica sees a disconnect)
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
            gw.batching = False
            if gw.dirty:
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

