"""The gateway's only link to mwtui: JSON lines in on stdin, JSON lines out on stdout.

stdin is read by a thread (a blocking read works for pipes, files and terminals alike, and holds no
lock while it waits); each line is handed to the event loop. End of file means mwtui is gone.
stdout is written without blocking the loop: if mwtui stops reading, droppable events (metrics,
access) are dropped instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import sys
import threading
from collections.abc import Callable
from typing import Any

MAX_BUFFERED = 8 * 1024 * 1024  # bytes of unread events after which droppable ones are skipped


def _encode(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False, default=str).encode() + b"\n"


class Control:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[dict[str, Any]], None],
        on_eof: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.on_message = on_message
        self.on_eof = on_eof
        # Keep the real stdout for events, and point fd 1 at stderr so that a stray print from any
        # library can never corrupt the event stream.
        self._out_fd = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._transport: asyncio.WriteTransport | None = None
        self._broken = False

    async def open(self) -> None:
        mode = os.fstat(self._out_fd).st_mode
        # Pipes (the normal case), sockets and terminals get a non-blocking transport. A regular file
        # (stdout redirected by hand) gets plain writes: uvloop aborts the process if handed one.
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode):
            out = os.fdopen(self._out_fd, "wb", buffering=0)
            self._transport, _ = await self.loop.connect_write_pipe(asyncio.Protocol, out)
        threading.Thread(target=self._read_stdin, name="mwtui-gateway-stdin", daemon=True).start()

    def _read_stdin(self) -> None:
        # os.read on fd 0, not sys.stdin: a daemon thread blocked inside a BufferedReader holds its
        # lock, and the interpreter aborts at exit when it cannot take that lock to close stdin.
        buf = b""
        while True:
            try:
                chunk = os.read(0, 65536)
            except InterruptedError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self._handle_line(line)
        if buf:
            self._handle_line(buf)
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self.loop.call_soon_threadsafe(self.on_eof)

    def _handle_line(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            msg = json.loads(line)
        except ValueError as e:
            print(f"mwtui gateway: ignoring a line that is not JSON: {e}", file=sys.stderr)
            return
        if isinstance(msg, dict):
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.on_message, msg)

    def emit(self, msg: dict[str, Any], droppable: bool = False) -> None:
        if self._broken:
            return
        t = self._transport
        if t is not None:
            if t.is_closing():
                self._broken = True
                return
            if droppable and t.get_write_buffer_size() > MAX_BUFFERED:
                return
            t.write(_encode(msg))
            return
        try:
            os.write(self._out_fd, _encode(msg))
        except OSError:
            self._broken = True

    def write_blocking(self, msg: dict[str, Any]) -> None:
        """Before `open()` (say, the port is busy and we are about to exit): a plain blocking write."""
        with contextlib.suppress(OSError):
            os.write(self._out_fd, _encode(msg))

    async def close(self, timeout: float = 1.0) -> None:
        """Let queued events reach mwtui (if it still reads) before the process ends."""
        t = self._transport
        if t is None or t.is_closing():
            return
        deadline = self.loop.time() + timeout
        while t.get_write_buffer_size() and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        t.close()
