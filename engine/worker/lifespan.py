"""Driving an ASGI app's lifespan ourselves, as Modal's runtime does (its `LifespanManager`).

Uvicorn runs with lifespan="off" because one replica may serve several apps (a class's web methods)
and each needs its own lifespan, started in method order before serving and shut down in order
before `@exit`.

- Startup: the app is called with {"type": "lifespan", "state": shared} and sent lifespan.startup.
- An app that raises before it ever calls receive (or returns without completing startup) does not
  support lifespan; that is fine and only noted.
- lifespan.startup.failed, or an exception after the app began receiving, fails the replica.
- Every request gets a shallow copy of the shared state in scope["state"] (see `WithState`), so
  `request.state` sees what the lifespan yielded, and no request's changes leak into another's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class LifespanFailed(Exception):
    """`what` is Modal's wording ("ASGI lifespan startup failed"); `detail` the app's message text;
    `__cause__` the app's own exception when it raised one."""

    def __init__(self, what: str, detail: str = "") -> None:
        super().__init__(f"{what}: {detail}" if detail else what)
        self.what = what
        self.detail = detail


class Lifespan:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self.supported = True
        self.started = False  # startup completed; shutdown is owed
        self._queue: asyncio.Queue[Message] | None = None
        self._task: asyncio.Task[None] | None = None
        self._receiving = False
        self._ended = asyncio.Event()
        self._events: dict[str, asyncio.Event] = {}
        self._failed: dict[str, str] = {}
        self._error: BaseException | None = None

    async def _receive(self) -> Message:
        self._receiving = True
        assert self._queue is not None
        return await self._queue.get()

    async def _send(self, message: Message) -> None:
        kind = message.get("type", "")
        for phase in ("startup", "shutdown"):
            if kind == f"lifespan.{phase}.failed":
                self._failed[phase] = str(message.get("message") or "")
            if kind in (f"lifespan.{phase}.complete", f"lifespan.{phase}.failed"):
                self._events[phase].set()

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - any error is the app's, reported by phase
            self._error = e
        finally:
            self._ended.set()

    async def _phase(self, phase: str) -> None:
        """Send lifespan.<phase> and wait for the reply or for the app to end."""
        event = self._events[phase]
        assert self._queue is not None
        await self._queue.put({"type": f"lifespan.{phase}"})
        ended = asyncio.ensure_future(self._ended.wait())
        replied = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({ended, replied}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (ended, replied):
                f.cancel()
        if phase in self._failed:
            # Starlette sends ".failed" and then re-raises: give that exception a moment to arrive,
            # it carries the traceback into the user's code.
            assert self._task is not None
            await asyncio.wait({self._task}, timeout=1.0)
            raise LifespanFailed(f"ASGI lifespan {phase} failed", self._failed[phase]) from self._error
        if not event.is_set() and self._error is not None and self._receiving:
            raise LifespanFailed(f"ASGI lifespan task exited {phase}") from self._error

    async def startup(self) -> None:
        self._queue = asyncio.Queue()
        self._events = {"startup": asyncio.Event(), "shutdown": asyncio.Event()}
        self._task = asyncio.ensure_future(self._main())
        await self._phase("startup")
        if not self._events["startup"].is_set():
            # Raised before receiving, or returned without completing: no lifespan support.
            self.supported = False
            return
        self.started = True

    async def shutdown(self) -> None:
        if not self.started:
            return
        self.started = False
        try:
            if not self._ended.is_set():
                await self._phase("shutdown")
        finally:
            # Like Modal: whatever the app still does after replying is cut short.
            if self._task is not None and not self._task.done():
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task


class WithState:
    """Put a shallow copy of the lifespan's shared state into each request's scope."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope["state"] = self.state.copy()
        await self.app(scope, receive, send)
