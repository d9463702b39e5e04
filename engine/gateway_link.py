"""The engine's side of the gateway process: start it, feed it routes and status, read its events,
and start it again on the same port if it dies.

The gateway runs in its own process so that neither the screen nor the supervisor slows traffic; this
is the only code that talks to it. It remembers the last `routes` and `status` it sent, so that a
gateway started again serves exactly what the one before did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from .gateway.limits import Limits
from .lifeline import Lifeline
from .ports import loopback_host

RESTART_DELAYS_S = (0.0, 0.5, 1.0, 2.0, 5.0)  # after the 1st, 2nd, ... death in a row; then the last
STABLE_S = 30.0  # a gateway that ran this long resets the series


class GatewayError(Exception):
    """The gateway could not start; the message is for a person (a busy port names its holder)."""


def _how(code: int | None) -> str:
    if code is None:
        return "for an unknown reason"
    if code < 0:
        try:
            return f"by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"by signal {-code}"
    return f"with exit code {code}"


class GatewayLink:
    def __init__(
        self,
        host: str,
        port: int,
        lifeline: Lifeline,
        on_event: Callable[[dict[str, Any]], None],
        limits: Limits | None = None,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.lifeline = lifeline
        self.on_event = on_event
        self.limits = limits or Limits()
        self.port: int | None = None
        self.endpoint_ports: dict[str, int] = {}
        self.open_files: int | None = None  # the gateway's open-file limit, as it reported it
        self.native: bool | None = None  # whether it runs its compiled hot path (engine/gateway/native.py)
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._reader: asyncio.Task[None] | None = None
        self._listening: asyncio.Future[int] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False
        self._last: dict[str, dict[str, Any]] = {}  # type -> the latest routes / status message
        self._routes_seq = 0  # routes tables sent, numbered; the gateway acknowledges each it applies
        self._routes_acked = 0
        self._routes_event = asyncio.Event()

    @property
    def base_url(self) -> str:
        return f"http://localhost:{self.port}"

    async def request(self, method: str, path: str, *, host: str = "localhost", headers: str = "",
                      body: bytes = b"", timeout: float | None = 10.0) -> tuple[int, bytes]:
        """One request through the gateway over loopback, as the engine's own client (its pages, a
        scheduled function's call); its status and body. Every answer it gives has a Content-Length."""
        if self.port is None:
            raise GatewayError("the gateway is not listening")
        port = self.port

        async def exchange() -> bytes:
            reader, writer = await asyncio.open_connection(loopback_host(self.host), port)
            try:
                writer.write(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {len(body)}\r\n"
                             "Connection: close\r\n\r\n".encode() + body)
                return await reader.read()
            finally:
                writer.close()

        raw = await asyncio.wait_for(exchange(), timeout)
        head, _, payload = raw.partition(b"\r\n\r\n")
        return (int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0), payload

    async def ask(self, method: str, path: str, timeout: float = 10.0) -> tuple[int, Any]:
        """A request to the gateway's own pages (`/api/requests` and the like); its status and its JSON
        body (its text when it is not JSON)."""
        status, body = await self.request(method, path, timeout=timeout)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode("utf-8", "replace").strip()

    def argv(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "mwtui.engine.gateway", "--host", self.host, "--port", str(port),
            *self.limits.argv(),
        ]

    async def start(self, timeout: float = 15.0) -> int:
        self.port = await self._launch(self.requested_port, timeout)
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return self.port

    async def _launch(self, port: int, timeout: float) -> int:
        """Start a gateway process on `port`, hand it the last routes and status, wait until it listens."""
        loop = asyncio.get_running_loop()
        self._listening = loop.create_future()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv(port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # its diagnostics go where ours go
            env={**os.environ, **self.lifeline.env(), "PYTHONUNBUFFERED": "1"},
            pass_fds=(self.lifeline.child_fd,),
            start_new_session=True,
            limit=16 * 1024 * 1024,  # one metrics line can be long with many endpoints
        )
        self._reader = loop.create_task(self._read_events(self.proc, self._listening))
        # Queued in the pipe until it reads stdin, which it does once it listens.
        for kind in ("routes", "status"):
            if kind in self._last:
                self._write(self._last[kind])
        try:
            return await asyncio.wait_for(asyncio.shield(self._listening), timeout)
        except asyncio.TimeoutError:
            await self._kill()
            raise GatewayError(f"the gateway did not start listening on {self.host}:{port}") from None
        except GatewayError:
            await self._kill()
            raise

    async def _read_events(self, proc: asyncio.subprocess.Process, listening: asyncio.Future[int]) -> None:
        assert proc.stdout
        async for raw in proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            kind = msg.get("type")
            if kind == "listening" and not listening.done():
                self.open_files = msg.get("open_files")
                self.native = msg.get("native")
                listening.set_result(int(msg["port"]))
            elif kind == "ports":
                self.endpoint_ports = {k: int(v) for k, v in msg.get("endpoints", {}).items()}
            elif kind == "routes_applied":
                self._routes_acked = max(self._routes_acked, int(msg.get("seq", 0)))
                self._routes_event.set()
            elif kind == "error" and not listening.done():
                listening.set_exception(GatewayError(msg.get("message", "the gateway failed")))
            self.on_event(msg)
        if not listening.done():
            listening.set_exception(GatewayError("the gateway exited before it was listening"))

    async def _watch(self) -> None:
        """Supervise: when the gateway process ends without being asked, start it again on the port it
        had (clients keep their URLs), with the last routes and status."""
        deaths = 0
        while True:
            proc = self.proc
            assert proc is not None
            started = time.monotonic()
            code = await proc.wait()
            if self._reader:
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(self._reader), 1.0)  # its last events first
            if self._closing:
                return
            deaths = 1 if time.monotonic() - started >= STABLE_S else deaths + 1
            why = f"the gateway process ended {_how(code)}"
            while not self._closing:
                delay = RESTART_DELAYS_S[min(deaths, len(RESTART_DELAYS_S)) - 1]
                self._warn(f"{why}; starting it again on port {self.port}" + (f" in {delay:g}s" if delay else ""))
                await asyncio.sleep(delay)
                if self._closing:
                    return
                try:
                    assert self.port is not None
                    await self._launch(self.port, 15.0)
                except (GatewayError, OSError) as e:
                    deaths += 1
                    why = f"the gateway could not start again ({e})"
                    continue
                self.restarts += 1
                self.on_event({"type": "gateway_restarted", "port": self.port, "restarts": self.restarts})
                break

    def _warn(self, text: str) -> None:
        # Sent as a `ports` warning: the engine already shows those in its log.
        self.on_event({"type": "ports", "endpoints": dict(self.endpoint_ports), "warnings": [text]})

    def send_routes(self, endpoints: list[dict[str, Any]]) -> None:
        self._routes_seq += 1
        self.send({"type": "routes", "seq": self._routes_seq, "endpoints": endpoints})

    async def routes_applied(self, timeout: float = 2.0) -> None:
        """Until the gateway runs on the routes sent so far, so that no request goes to a replica that
        is about to stop. Bounded: a gateway that never answers must not block a reload."""
        want = self._routes_seq
        deadline = time.monotonic() + timeout
        while self._routes_acked < want and time.monotonic() < deadline:
            self._routes_event.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._routes_event.wait(), max(0.0, deadline - time.monotonic()))

    def send(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind in ("routes", "status"):
            self._last[kind] = msg
        self._write(msg)

    def _write(self, msg: dict[str, Any]) -> None:
        proc = self.proc
        if proc and proc.stdin and not proc.stdin.is_closing() and proc.returncode is None:
            with contextlib.suppress(OSError, RuntimeError):  # it just died: the watcher re-sends
                proc.stdin.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")

    async def _kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()

    async def close(self, timeout: float = 5.0) -> None:
        self._closing = True
        if self._watcher:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if not self.proc:
            return
        if self.proc.stdin and not self.proc.stdin.is_closing():
            self.proc.stdin.close()  # EOF: the gateway's cue to exit
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            await self.proc.wait()
        if self._reader:
            self._reader.cancel()
