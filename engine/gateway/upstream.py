"""The replica's side of an exchange: one pooled connection to a replica (`UpstreamConn`, its response
parsed with httptools and handed to its `proxy.Exchange`), and each replica's pool of idle ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from . import handoff
from .routes import parse_address

if TYPE_CHECKING:
    from .proxy import Exchange
    from .server import Gateway

# Why a connection's reading is paused; reading resumes when no reason is left.
from .proxy import (
    CONNECT_TIMEOUT,
    PAUSE_PEER,
    POOL_IDLE_S,
    POOL_MAX_IDLE,
    Conn,
    log_bug,
)


class UpstreamConn(Conn):
    """One keep-alive connection to a replica; serves one exchange at a time."""

    __slots__ = ("pool", "parser", "feed", "p_status", "p_keep", "ex", "phrase", "rheaders", "status",
                 "interim", "head_only", "close_delim", "reusable", "idle_since", "chunk")

    def __init__(self, gw: Gateway, pool: UpstreamPool) -> None:
        super().__init__(gw)
        self.pool = pool
        self._new_parser()
        self.ex: Exchange | None = None
        self.phrase = b""
        self.rheaders: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.interim = False
        self.head_only = False
        self.close_delim = False
        self.reusable = False
        self.idle_since = 0.0
        self.chunk: bytes | None = None  # the bytes being parsed, for Exchange.resp_head's fast path

    def _new_parser(self) -> None:
        """A fresh parser, and its methods bound once (see Conn.twrite)."""
        parser = self.parser = HttpResponseParser(self)
        self.feed: Callable[[bytes], None] = parser.feed_data
        self.p_status: Callable[[], int] = parser.get_status_code
        self.p_keep: Callable[[], bool] = parser.should_keep_alive

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.twrite = transport.write  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:
            self.close()  # bytes nobody asked for: this connection cannot be trusted any more
            return
        if ex.tunnel:
            ex.client.write(data)
            if ex.cap is not None:
                ex.cap.ws_data(False, data)
            return
        gw = self.gw
        gw.batching = True
        self.chunk = data
        try:
            self.feed(data)
        except HttpParserUpgrade as e:
            if self.status == 101 and ex.upgrade and not ex.done:
                ex.start_tunnel(data[e.args[0]:])
            else:
                ex.upstream_garbage()
        except HttpParserError as e:
            if e.__context__ is not None:
                log_bug("relaying a replica's response")
            if ex is self.ex:
                ex.upstream_garbage()
            else:
                self.close()
        except Exception:
            log_bug("reading a replica's response")
            ex.upstream_garbage()
        else:
            if self.head_only:
                # A response to HEAD ends with its head; start afresh for the next response.
                self.head_only = False
                self._new_parser()
                if self.ex is ex:
                    ex.resp_end()
        finally:
            self.chunk = None
            gw.batching = False
            if gw.dirty:
                gw.flush_dirty()

    # httptools callbacks. No on_message_begin: the per-response state is reset once its head has
    # been read (below), which saves a callback per response; nothing reads it in between.
    def on_status(self, phrase: bytes) -> None:
        if self.ex is None:
            # A response after the one asked for, in the same read (its exchange is finished and
            # this connection back in the pool): nothing can tell where the next one would begin.
            self.close()
            return
        self.phrase += phrase

    def on_header(self, name: bytes, value: bytes) -> None:
        self.rheaders.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.status = self.p_status()
        phrase, headers = self.phrase, self.rheaders
        self.phrase = b""
        self.rheaders = []
        self.close_delim = False  # resp_head sets it for this response
        ex = self.ex
        if ex is None:
            self.close()  # a response nobody asked for (see on_status)
            return
        if status < 200 and status != 101:
            self.interim = True  # 100/103: we answer Expect ourselves and do not relay hints
            return
        self.interim = False
        self.reusable = self.p_keep()
        ex.resp_head(status, phrase, headers, self)

    def on_body(self, data: bytes) -> None:
        ex = self.ex
        if ex is not None and ex.resp_mode and not self.interim:  # RESP_NONE: nothing (more) to send
            ex.resp_body(data)

    def on_message_complete(self) -> None:
        if self.rheaders:
            self.rheaders = []  # trailers of a chunked response: not relayed, and not the next head's
        if self.interim or self.status == 101:
            return
        ex = self.ex
        if ex is not None and not self.head_only:
            ex.resp_end()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.ex
        if ex is None:
            self.pool.forget(self)
            return
        self.ex = None
        gw = self.gw
        gw.batching = True
        try:
            ex.upstream_lost(self)
        except Exception:
            log_bug("after a replica connection closed")
        finally:
            gw.flush_dirty()

    def pause_writing(self) -> None:
        ex = self.ex
        if ex is not None:
            ex.client.pause(PAUSE_PEER)

    def resume_writing(self) -> None:
        ex = self.ex
        if ex is not None:
            ex.client.resume(PAUSE_PEER)


class UpstreamPool:
    """One replica address: its idle keep-alive connections (most recently used first), and the
    requests in flight on it, which `max_inputs` caps."""

    __slots__ = ("gw", "address", "kind", "target", "idle", "closed", "_factory", "inflight", "endpoints")

    def __init__(self, gw: Gateway, address: str) -> None:
        self.gw = gw
        self.address = address
        self.inflight = 0
        self.endpoints: list[str] = []  # names of the endpoints this replica serves
        self.kind, self.target = parse_address(address)
        self.idle: list[UpstreamConn] = []
        self.closed = False
        self._factory: Callable[[], UpstreamConn] = lambda: UpstreamConn(gw, self)

    def release(self, conn: UpstreamConn) -> None:
        if self.closed or conn.closed or len(self.idle) >= POOL_MAX_IDLE:
            conn.close()
            return
        if conn.paused:
            conn.resume(PAUSE_PEER)
        conn.idle_since = self.gw.now  # the sweep's clock: never later than now, so never kept too long
        self.idle.append(conn)

    def retire_idle(self, now: float) -> None:
        """Close idle connections older than POOL_IDLE_S (they are oldest first)."""
        idle = self.idle
        n = 0
        for conn in idle:
            if now - conn.idle_since < POOL_IDLE_S:
                break
            conn.close()
            n += 1
        if n:
            del idle[:n]

    def forget(self, conn: UpstreamConn) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def connect(self, ex: Exchange) -> None:
        gw = self.gw
        task = gw.loop.create_task(self._connect(ex))
        gw.tasks.add(task)
        task.add_done_callback(gw.tasks.discard)

    async def _connect(self, ex: Exchange) -> None:
        loop = self.gw.loop
        try:
            if self.kind == "unix":
                coro = loop.create_unix_connection(self._factory, self.target)  # type: ignore[arg-type]
            elif self.kind == "netns":
                path: str = self.target  # type: ignore[assignment]
                sock = await asyncio.wait_for(handoff.receive(loop, path), CONNECT_TIMEOUT)
                coro = loop.create_connection(self._factory, sock=sock)
            else:
                host, port = self.target  # type: ignore[misc]
                coro = loop.create_connection(self._factory, host, port)
            _, conn = await asyncio.wait_for(coro, CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as e:
            ex.connect_failed(e)
            return
        except Exception as e:
            log_bug("connecting to a replica")
            ex.connect_failed(e)
            return
        if ex.done:
            self.release(conn)  # the client left meanwhile; the connection is still good
            return
        try:
            ex.bind(conn, False)
        except Exception:
            log_bug("sending a request to a replica")
            conn.close()

    def close(self) -> None:
        self.closed = True
        for conn in self.idle:
            conn.close()
        self.idle.clear()
