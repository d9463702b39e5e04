"""The hot path: one request forwarded to one replica, its response streamed back.

Everything is asyncio Protocol callbacks driven by httptools; no streams, no tasks per request.
Writes made while a `data_received` runs are collected per connection and flushed once at its end
(`Gateway.batching`), so a small response goes out in one write: head, body and terminator.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import traceback
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

from . import pages
from .inspector import Capture
from .routes import Endpoint, Upstream
from .wire import CHUNK_END, CONTINUE, CRLF, RESPONSE_HOP, TEXT, response, status_line

if TYPE_CHECKING:
    from .client import ClientConn
    from .server import Gateway
    from .upstream import UpstreamConn, UpstreamPool

# Why a connection's reading is paused; reading resumes when no reason is left.
PAUSE_PEER: Final = 1  # the other side's transport buffer is full
PAUSE_PIPELINE: Final = 2  # a pipelined request waits for the response before it
PAUSE_BUFFER: Final = 4  # request bytes are piling up while no upstream connection is attached yet

BUFFER_LIMIT: Final = 256 * 1024
CONNECT_TIMEOUT: Final = 10.0
# Reuse idle connections only while younger than the replica's keep-alive timeout (uvicorn 5 s,
# gunicorn 2 s), so that we rarely pick one it is closing. The gateway's sweep retires them, so one
# may live up to a sweep interval (at most 0.5 s) longer.
POOL_IDLE_S: Final = 1.0
POOL_MAX_IDLE: Final = 256

BODY_NONE: Final = 0  # request body framing
BODY_LENGTH: Final = 1
BODY_CHUNKED: Final = 2
RESP_NONE: Final = 0  # response body framing towards the client
RESP_RAW: Final = 1
RESP_CHUNKED: Final = 2
CLOSE: Final = 1  # how a connection ends once its writes are out: see Conn.close
HALF_CLOSE: Final = 2

HEAD: Final = b"HEAD"
# Methods a client may repeat without asking (RFC 9110 §9.2.2): only these are retried on a fresh
# connection when a pooled one turns out to be closed.
IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
# How a response head we may pass on as it came begins (llhttp allows only three-digit statuses).
# bytes methods called through these skip a lookup by name per call once compiled (see Conn.twrite)
LOWER: Final = bytes.lower
STARTSWITH: Final = bytes.startswith
FIND: Final = bytes.find
COUNT: Final = bytes.count
STATUS_PREFIX: Final = {status: b"HTTP/1.1 %d " % status for status in range(100, 1000)}


class Reject(ValueError):
    """Raised inside a parser callback: answer `status` with `body`, then close the connection."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def log_bug(what: str) -> None:
    """Our own bug on a request path: say so on stderr, keep serving."""
    print(f"mwtui gateway: internal error {what}:\n{traceback.format_exc()}", file=sys.stderr)


def _not_connected(data: bytes) -> None:
    raise RuntimeError("no transport yet")


class Conn(asyncio.Protocol):
    """A transport with batched writes and reasons to pause reading."""

    __slots__ = ("gw", "transport", "twrite", "out", "closed", "close_after", "paused")

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.transport: Any = None
        # transport.write, bound once: compiled, a call through a stored bound method skips the
        # method lookup by name that `self.transport.write(...)` makes on every call.
        self.twrite: Callable[[bytes], object] = _not_connected
        self.out: list[bytes] = []
        self.closed = False
        self.close_after = 0  # CLOSE or HALF_CLOSE once asked for; nothing is written after that
        self.paused = 0

    def write(self, data: bytes) -> None:
        if self.closed or self.close_after:
            return
        if self.gw.batching:
            if not self.out:
                self.gw.dirty.append(self)
            self.out.append(data)
        else:
            self._send(data)

    def send(self, data: bytes) -> None:
        """Write a message that is complete as it stands (a bodiless request's head, a whole small
        response): straight to the transport, one syscall, unless earlier writes of this batch wait
        in `out` (order first) or the connection is closing."""
        if self.out or self.closed or self.close_after:
            self.write(data)
            return
        try:
            self.twrite(data)
        except (RuntimeError, OSError):
            self.closed = True

    def _send(self, data: bytes) -> None:
        try:
            self.twrite(data)
        except (RuntimeError, OSError):
            # uvloop raises if the peer vanished before we heard of it; connection_lost follows.
            self.closed = True

    def flush(self) -> None:
        out = self.out
        if out:
            if not self.closed:
                try:  # _send, inlined: this runs twice per proxied request
                    self.twrite(out[0] if len(out) == 1 else b"".join(out))
                except (RuntimeError, OSError):
                    self.closed = True
            out.clear()
        if self.close_after:
            self._do_close()

    def close(self, mode: int = CLOSE) -> None:
        """Close after whatever was written so far has gone out. HALF_CLOSE sends our FIN but keeps
        reading (and dropping) what the peer still sends, until it closes or the gateway's sweep
        gives up: closing outright with unread bytes makes the kernel answer with a reset, which can
        destroy an error response (400, 413, 408) before the client has read it."""
        if self.closed or self.close_after:
            return
        self.close_after = mode
        if self.gw.batching:
            if not self.out:
                self.gw.dirty.append(self)
        else:
            self._do_close()

    def _do_close(self) -> None:
        if self.close_after != HALF_CLOSE:
            self._close_now()
            return
        if self.closed:
            return
        t = self.transport
        try:
            if not t.can_write_eof():
                raise RuntimeError("no half-close")
            t.write_eof()
        except (RuntimeError, OSError):
            self._close_now()
            return
        if self.paused:
            self.paused = 0
            with contextlib.suppress(RuntimeError):
                t.resume_reading()

    def _close_now(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def pause(self, reason: int) -> None:
        if not self.paused and not self.closed:
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed:
                with contextlib.suppress(RuntimeError):
                    self.transport.resume_reading()


class Exchange:
    """One request and its response; lives from the request head to the end of the response."""

    __slots__ = (
        "client", "ep", "up", "conn", "method", "url", "host", "http10", "keep_alive", "upgrade", "expect",
        "body", "fwd", "auth_key", "auth_secret", "req_done", "pending", "pending_size", "head",
        "t0", "status", "resp_mode", "resp_started", "done", "recorded", "tunnel", "timer", "reused",
        "retried", "t_run", "waiting", "body_seen", "ms", "cap",
    )

    def __init__(
        self,
        client: ClientConn,
        method: bytes,
        url: bytes,
        host: bytes,
        http10: bool,
        keep_alive: bool,
        body: int,
        fwd: list[bytes],
        t0: float,
    ) -> None:
        self.client = client
        self.ep: Endpoint | None = None
        self.up: Upstream | None = None
        self.conn: UpstreamConn | None = None
        self.method = method
        self.url = url
        self.host = host
        self.http10 = http10
        self.keep_alive = keep_alive
        self.body = body
        # The request line and forwarded headers, X-Forwarded-* included; the upstream's dispatch line
        # and the final CRLF are added, and the whole joined, once an upstream is chosen (bind).
        self.fwd = fwd
        self.t0 = t0
        self.t_run = t0  # when it reached a replica: the endpoint's `timeout` counts from here
        # The rest are rare on the request side; the client connection sets them when they apply.
        self.upgrade = False
        self.expect = False  # Expect: 100-continue with a body to come
        self.auth_key: bytes | None = None
        self.auth_secret: bytes | None = None
        self.req_done = False
        self.pending: list[bytes] | None = None  # framed request bytes waiting for a connection
        self.pending_size = 0
        self.head: bytes | None = None
        self.waiting = False  # in the gateway's queue for a replica
        self.body_seen = 0  # chunked request body bytes so far (a Content-Length is checked up front)
        self.status = 0
        self.resp_mode = RESP_NONE
        self.resp_started = False
        self.done = False
        self.recorded = False
        self.tunnel = False
        self.timer: asyncio.TimerHandle | None = None
        self.reused = False
        self.retried = False
        self.ms = 0.0  # its duration, once recorded: the access line reads it at the next tick
        self.cap: Capture | None = None  # what the inspector keeps of it, while inspection is on

    # ----- request side (called by the client connection)
    def req_body(self, data: bytes) -> None:
        if self.done:
            return  # answered early (say, 401): the rest of the body is read and dropped
        cap = self.cap
        if cap is not None:
            cap.req_data(data)
        if self.body == BODY_CHUNKED:
            seen = self.body_seen = self.body_seen + len(data)
            limit = self.client.gw.limits.max_body
            if limit and seen > limit:
                raise Reject(413, b"mwtui: request body larger than the gateway's limit (--max-body)\n")
        conn = self.conn
        if conn is not None:
            if self.body == BODY_CHUNKED:
                conn.write(b"%x\r\n" % len(data))
                conn.write(data)
                conn.write(CRLF)
            else:
                conn.write(data)
            return
        if self.body == BODY_CHUNKED:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        self._buffer(data)

    def req_end(self) -> None:
        self.req_done = True
        if self.done or self.body != BODY_CHUNKED:
            return
        if self.conn is not None:
            self.conn.write(CHUNK_END)
        else:
            self._buffer(CHUNK_END)

    def upgrade_data(self, data: bytes) -> None:
        """Bytes the client sent after its upgrade request: they go to the replica once tunnelled."""
        if not self.done:
            self._buffer(data)

    def _buffer(self, data: bytes) -> None:
        if self.pending is None:
            self.pending = [data]
        else:
            self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > BUFFER_LIMIT and self.client.held is not self:
            # (A held body is bounded by --buffer-body instead: pausing it would stall it for good.)
            self.client.pause(PAUSE_BUFFER)

    # ----- choosing and reaching an upstream
    def attach(self, up: Upstream) -> None:
        self.up = up
        cap = self.cap
        if cap is not None:
            # Straight from its head (the common case) it waited for nothing: no clock read for that.
            cap.t_attach = perf_counter() if cap.queued else self.t0
        up.stats.inflight += 1
        pool: UpstreamPool = up.pool
        pool.inflight += 1
        idle = pool.idle
        while idle:  # the most recently used idle connection (the sweep retires old ones)
            conn = idle.pop()
            if not conn.closed:
                self.bind(conn, True)
                return
        pool.connect(self)

    def bind(self, conn: UpstreamConn, reused: bool) -> None:
        self.conn = conn
        cap = self.cap
        if cap is not None:  # a pooled connection is taken at once: no clock read for that
            cap.t_bind = cap.t_attach if reused and not self.retried else perf_counter()
        conn.ex = self
        self.reused = reused
        head = self.head
        if head is None:
            fwd = self.fwd
            up = self.up
            assert up is not None
            if up.dispatch_line:
                fwd.append(up.dispatch_line)
            fwd.append(CRLF)
            head = self.head = b"".join(fwd)
        if self.body == BODY_NONE and not self.upgrade:
            conn.send(head)  # the whole request: out now, in one write
        else:
            client = self.client
            if self.expect and not self.req_done and not self.retried:
                client.write(CONTINUE)  # the replica is reachable: now the client may send its body
            pending = self.pending
            if pending and not self.upgrade:
                pending.insert(0, head)
                conn.write(b"".join(pending))
                self.pending = None
                self.pending_size = 0
                client.resume(PAUSE_BUFFER)
            else:
                conn.write(head)
        if self.client.write_paused:
            conn.pause(PAUSE_PEER)

    def connect_failed(self, err: BaseException) -> None:
        if self.done:
            return
        up, ep = self.up, self.ep
        assert up is not None and ep is not None
        self.reply(502, pages.connect_failed(ep.name, up.id, up.address, err))

    # ----- response side (called by the upstream connection)
    def resp_head(self, status: int, phrase: bytes, headers: list[tuple[bytes, bytes]], conn: UpstreamConn) -> None:
        raw = conn.chunk
        cap = self.cap
        if (
            raw is not None and self.keep_alive and not self.http10 and status >= 200 and status != 204
            and status != 304 and self.method != HEAD and STARTSWITH(raw, STATUS_PREFIX[status])
        ):
            # The common case: a head we would pass on unchanged (all end-to-end headers, framed by
            # Content-Length) is forwarded as the replica sent it, body too if it came in this chunk.
            length: bytes | None = None
            for name, value in headers:
                lname = LOWER(name)
                if lname in RESPONSE_HOP:
                    break
                if lname == b"content-length":
                    length = value
            else:
                # llhttp requires CRLF line ends and no folding, so the head ends at the first blank
                # line. Exactly one line per header, plus the status line and that blank line, before
                # it proves the chunk begins with this response's head and holds all of it (not an
                # interim response's, nor the tail of a head split across chunks).
                end = FIND(raw, b"\r\n\r\n") + 4
                if length is not None and COUNT(raw, b"\r\n", 0, end) == len(headers) + 2:
                    self.status = status
                    self.resp_started = True
                    if len(raw) == end + int(length):  # llhttp let through only digits (and blanks)
                        self.client.send(raw)  # the whole response is this chunk: one write, nothing joined
                        self.resp_mode = RESP_NONE  # its body went out with the head; on_body drops its copy
                        if cap is not None:
                            cap.whole_response(status, raw, end)
                    else:
                        self.client.write(raw[:end])
                        self.resp_mode = RESP_RAW
                        if cap is not None:
                            cap.response(status, headers)
                    return
        if cap is not None:
            cap.response(status, headers)
        line = status_line(status, phrase)
        parts = [line]
        has_length = False
        te: bytes | None = None
        upgrade: bytes | None = None
        for name, value in headers:
            lname = name.lower()
            if lname in RESPONSE_HOP:
                if lname == b"transfer-encoding":
                    te = value
                elif lname == b"upgrade":
                    upgrade = value
                continue
            if lname == b"content-length":
                has_length = True
            parts.extend((name, b": ", value, CRLF))
        if status == 101:
            if upgrade is not None:
                parts.extend((b"upgrade: ", upgrade, CRLF))
            parts.append(b"connection: upgrade\r\n\r\n")
            self.client.write(b"".join(parts))
            self.status = 101
            self.resp_started = True
            return
        no_body = self.method == HEAD or status in (204, 304)
        if no_body:
            mode = RESP_NONE
            conn.head_only = self.method == HEAD  # httptools cannot be told the response has no body
        elif has_length and te is None:
            mode = RESP_RAW
        elif not self.http10:
            mode = RESP_CHUNKED
            parts.append(b"transfer-encoding: chunked\r\n")
        else:
            mode = RESP_RAW  # an HTTP/1.0 client: close-delimited
            self.keep_alive = False
        if not no_body and not has_length and te is None:
            conn.close_delim = True  # the body ends when the replica closes
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        elif self.http10:
            parts.append(b"connection: keep-alive\r\n")
        parts.append(CRLF)
        self.client.write(b"".join(parts))
        self.status = status
        self.resp_mode = mode
        self.resp_started = True

    def resp_body(self, data: bytes) -> None:
        mode = self.resp_mode
        client = self.client
        cap = self.cap
        if cap is not None and mode != RESP_NONE:
            cap.resp_data(data)
        if mode == RESP_RAW:
            client.write(data)
        elif mode == RESP_CHUNKED:
            client.write(b"%x\r\n" % len(data))
            client.write(data)
            client.write(CRLF)

    def resp_end(self) -> None:
        if self.resp_mode == RESP_CHUNKED:
            self.client.write(CHUNK_END)
        conn = self._detach_upstream()
        if conn is not None:
            if conn.reusable and self.req_done and not conn.close_delim:
                conn.pool.release(conn)
            else:
                conn.close()
        self._finish()

    def start_tunnel(self, tail: bytes) -> None:
        """After a 101: bytes flow both ways untouched until either side closes."""
        conn = self.conn
        assert conn is not None
        client = self.client
        self.tunnel = True
        client.tunnel = conn
        if tail:
            client.write(tail)
        if self.pending:
            conn.write(b"".join(self.pending))
            self.pending = None
            self.pending_size = 0
        client.resume(PAUSE_BUFFER)
        self._record()

    def upstream_lost(self, conn: UpstreamConn) -> None:
        self.conn = None
        if self.done:
            return
        if self.tunnel:
            self.client.close()
            self._finish()
            return
        if self.resp_started:
            if conn.close_delim:
                self.resp_end()  # a close-delimited body ends exactly like this
                return
            self.fail_midway()
            return
        up, ep = self.up, self.ep
        assert up is not None and ep is not None
        if self.reused and self.body == BODY_NONE and not self.retried and self.method in IDEMPOTENT:
            # A pooled connection the replica closed just as we picked it: nothing reached user
            # code that a bodiless request would not repeat, so try once on a fresh connection.
            self.retried = True
            up.pool.connect(self)
            return
        self.reply(502, pages.upstream_closed(ep.name, up.id))

    def upstream_garbage(self) -> None:
        self._close_upstream()
        if self.done:
            return
        if self.resp_started:
            self.fail_midway()
            return
        up, ep = self.up, self.ep
        assert up is not None and ep is not None
        self.reply(502, pages.bad_upstream(ep.name, up.id))

    def _detach_upstream(self) -> UpstreamConn | None:
        """Let go of the upstream connection (it no longer reports to this exchange); returns it."""
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.ex = None
        return conn

    def _close_upstream(self) -> None:
        conn = self._detach_upstream()
        if conn is not None:
            conn.close()

    def fail_midway(self, status: int = 502) -> None:
        """The response broke after its head went out: the client can only learn it by a close."""
        self._close_upstream()
        self.status = status
        self.keep_alive = False
        self.client.close()
        self._finish()

    # ----- answers of our own
    def reply(self, status: int, body: bytes, extra: bytes = b"", content_type: bytes = TEXT) -> None:
        if self.done:
            return
        if self.resp_started:
            self.fail_midway()
            return
        self._close_upstream()
        if self.upgrade or (self.expect and not self.req_done):
            # The client may never send the body it announced; we cannot find the next request.
            self.keep_alive = False
        self.client.write(response(
            status, body, content_type=content_type, extra=extra, close=not self.keep_alive,
            keep_alive_10=self.http10 and self.keep_alive, head=self.method == HEAD,
        ))
        self.status = status
        cap = self.cap
        if cap is not None:  # the gateway's own answer: why, in its first line
            cap.response(status, [(b"content-type", content_type)])
            cap.resp_data(body)
            if status >= 500:
                cap.error = body.split(b"\n", 1)[0].decode("utf-8", "replace")
        self._finish()

    def timed_out(self) -> None:
        """Ran longer on its replica than the endpoint's `timeout`: 504 (or a close, if the response
        had begun), and the replica's slot is free again. The replica sees its client disconnect."""
        if self.done:
            return
        ep = self.ep
        assert ep is not None
        if self.tunnel:
            self._close_upstream()
            self.client.close()
            self._finish()
        elif self.resp_started:
            self.fail_midway(504)
        else:
            self.reply(504, pages.timed_out(ep.name, ep.timeout))

    def client_gone(self) -> None:
        if self.done:
            return
        if not self.tunnel:
            self.status = 499  # nginx's "client closed request"
        self._close_upstream()  # the replica sees the disconnect, as a direct client would make it
        self._finish()

    # ----- bookkeeping
    def _record(self) -> None:
        """Its latency into the endpoint's figures, and its access line (kept as this object, read at
        the next tick) unless the tick's lines are full: then it is only counted."""
        self.recorded = True
        ep = self.ep
        if ep is None:
            return
        ms = self.ms = (perf_counter() - self.t0) * 1000.0
        ep.stats.observe(self.status, ms)
        up = self.up
        if up is not None:
            up.stats.requests_total += 1
        gw = self.client.gw
        cap = self.cap
        if cap is not None:
            cap.req_head = self.head or b"".join(self.fwd)  # what was (or would have been) forwarded
            cap.endpoint = ep.name
            cap.duration_ms = ms
            cap.status = self.status
            if up is not None:
                cap.replica = up.id
                cap.generation = up.generation
            ring = ep.ring
            if ring is None:  # a parameter set the gateway made itself, between two tables
                ring = ep.ring = gw.inspector.ring(ep.name)
            gw.inspector.keep(cap, ring)
        access = gw.access
        if len(access) < gw.access_cap:
            access.append(self)
        else:
            dropped = gw.access_dropped
            dropped[ep.name] = dropped.get(ep.name, 0) + 1

    def _finish(self) -> None:
        self.done = True
        client = self.client
        if self.waiting:
            client.gw.wait.unwait(self)
        ep = self.ep
        if ep is not None:
            if not self.recorded:
                self._record()
            ep.stats.inflight -= 1
        up = self.up
        if up is not None:
            up.stats.inflight -= 1
            pool = up.pool
            pool.inflight -= 1
            wait = client.gw.wait
            if wait.count:
                wait.slot_freed(pool)  # a request waiting for this replica may go now
        client.finished(self)
