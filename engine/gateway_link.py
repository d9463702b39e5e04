"""The engine's side of the gateway process: start it, feed it routes and status, read its events.

The gateway runs in its own process so that neither the screen nor the supervisor slows traffic; this
is the only code that talks to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from .lifeline import Lifeline


class GatewayError(Exception):
    """The gateway could not start; the message is for a person (a busy port names its holder)."""


class GatewayLink:
    def __init__(
        self, host: str, port: int, lifeline: Lifeline, on_event: Callable[[dict[str, Any]], None]
    ) -> None:
        self.host = host
        self.requested_port = port
        self.lifeline = lifeline
        self.on_event = on_event
        self.port: int | None = None
        self.endpoint_ports: dict[str, int] = {}
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._listening: asyncio.Future[int] | None = None

    @property
    def base_url(self) -> str:
        return f"http://localhost:{self.port}"

    async def start(self, timeout: float = 15.0) -> int:
        loop = asyncio.get_running_loop()
        self._listening = loop.create_future()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mwtui.engine.gateway", "--host", self.host, "--port", str(self.requested_port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # its diagnostics go where ours go
            env={**os.environ, **self.lifeline.env(), "PYTHONUNBUFFERED": "1"},
            pass_fds=(self.lifeline.child_fd,),
            start_new_session=True,
            limit=16 * 1024 * 1024,  # one metrics line can be long with many endpoints
        )
        self._reader = loop.create_task(self._read_events())
        try:
            self.port = await asyncio.wait_for(asyncio.shield(self._listening), timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise GatewayError(f"the gateway did not start listening on {self.host}:{self.requested_port}") from None
        return self.port

    async def _read_events(self) -> None:
        assert self.proc and self.proc.stdout
        async for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            kind = msg.get("type")
            if kind == "listening" and self._listening and not self._listening.done():
                self._listening.set_result(int(msg["port"]))
            elif kind == "ports":
                self.endpoint_ports = {k: int(v) for k, v in msg.get("endpoints", {}).items()}
            elif kind == "error" and self._listening and not self._listening.done():
                self._listening.set_exception(GatewayError(msg.get("message", "the gateway failed")))
            self.on_event(msg)
        if self._listening and not self._listening.done():
            self._listening.set_exception(GatewayError("the gateway exited before it was listening"))

    def send(self, msg: dict[str, Any]) -> None:
        if self.proc and self.proc.stdin and not self.proc.stdin.is_closing():
            self.proc.stdin.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")

    async def close(self, timeout: float = 5.0) -> None:
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
