"""A client's connection to the gateway: HTTP/1.1 parsed with httptools, each request handed to
`Gateway.route` (server.py), which answers it itself or attaches it to an upstream (`proxy.Exchange`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Final

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from .inspector import Capture
from .limits import MAX_HEAD
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
    log_bug,
)
from .routes import (
    host_key,
    valid_host,
)
from .upstream import UpstreamConn
from .wire import CONNECTION_NEVER, CONTINUE, CRLF, REQUEST_SPECIAL, response

if TYPE_CHECKING:
    from .server import Gateway

LINGER_S: Final = 5.0  # a half-closed connection is closed outright after this (nginx's lingering_time is 30)
MALFORMED: Final = b"mwtui: malformed HTTP request\n"
BODY_TIMEOUT: Final = b"mwtui: the request body stopped arriving (--body-timeout)\n"


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
            ex = tunnel.ex
            if ex is not None and ex.cap is not None:
                ex.cap.ws_data(True, data)
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
        replay: bytes | None = None
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
            elif lname == b"x-mwtui-replay":
                replay = value  # the gateway's own replay of a request (see inspector.py)
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
        t0 = perf_counter()
        ex = Exchange(self, method, url, host, http10, keep_alive and not is_upgrade, body, fwd, t0)
        if self.gw.inspector.budget:
            ex.cap = cap = Capture(method, url, host, t0, self.gw.wall_offset + t0)
            cap.secret = secret
            if replay is not None and self.local_peer:
                new, _, original = replay.partition(b":")
                replaying = self.gw.inspector.replaying
                if new.isdigit() and original.isdigit() and int(new) in replaying:  # ours, not a forgery
                    replaying.discard(int(new))
                    cap.id, cap.replay_of = int(new), int(original)
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
        if ex.cap is not None:
            ex.cap.queued = True  # it reaches a replica later, once its body is in: time that too
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


