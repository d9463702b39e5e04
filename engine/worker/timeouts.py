"""A function's `timeout`, enforced where the work runs: nothing of a request runs on past it.

The gateway answers the client 504 once a request has run `timeout` seconds on its replica. That alone
would leave the handler running, so the replica stops the work itself:

- Async code is cancelled at `timeout` (CancelledError at its next await), and the replica answers
  504 with the gateway's words if the gateway has not already.
- What cannot be cancelled keeps its thread: a sync FastAPI/Starlette route (run in the thread pool),
  a WSGI app (a2wsgi's threads, gunicorn's). So do async handlers that block the event loop or swallow
  the cancellation. Each gets TIMEOUT_GRACE_S more to end by itself. If it has not ended by then, the
  replica *retires*: it tells the supervisor (which starts a fresh replica at once, and counts no
  crash) and kills itself and everything it started. Requests that were running on it alongside fail
  with it (the gateway answers 502).

`Overruns` does the watching from a thread of its own, so that it fires even while the event loop is
blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..sdk.calls import Input, serving
from .lifespan import ASGIApp, Message, Receive, Scope, Send

# Longer than the gateway's sweep (0.5 s at most), so that its 504 is always out before a retiring
# replica takes its connections down; short, since user code runs this long past `timeout` at most.
TIMEOUT_GRACE_S = 1.0

# What starts an answer: after one of these, a 504 can no longer be sent.
_STARTS = frozenset({"http.response.start", "websocket.accept", "websocket.close", "websocket.http.response.start"})


def timed_out_text(name: str, timeout: float) -> bytes:
    """The gateway's own 504 page (gateway/pages.py), word for word: the client cannot tell who sent it."""
    return (
        f"mwtui: endpoint {name} did not answer within its timeout of {timeout:g}s "
        "(@app.function(timeout=...)); the request was cancelled.\n"
    ).encode()


class Overruns:
    """Requests running on this replica, each with the time by which it must be over (its `timeout`
    plus TIMEOUT_GRACE_S). `on_overrun(what)` is called once, from a thread of its own, when one is
    still running then. One `timeout` per replica (a pool has one), so deadlines come in order."""

    def __init__(self, timeout: float, on_overrun: Callable[[str], None], grace: float = TIMEOUT_GRACE_S) -> None:
        self.timeout = timeout
        self._budget = timeout + grace
        self._on_overrun = on_overrun
        self._cond = threading.Condition(threading.Lock())
        self._running: dict[int, tuple[float, str]] = {}  # insertion order is deadline order
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def begin(self, what: str) -> int:
        token = next(self._ids)
        with self._cond:
            was_empty = not self._running
            self._running[token] = (time.monotonic() + self._budget, what)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="mwtui-timeouts", daemon=True)
                self._thread.start()
            elif was_empty:
                self._cond.notify()  # else it already sleeps until an earlier deadline than this one
        return token

    def end(self, token: int) -> None:
        with self._cond:
            self._running.pop(token, None)

    def _watch(self) -> None:
        with self._cond:
            while True:
                if not self._running:
                    self._cond.wait()
                    continue
                deadline, what = next(iter(self._running.values()))
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)  # an earlier end only makes this wake-up a spare one
                    continue
                break
        self._on_overrun(what)


def _runs_in_thread(scope: Scope) -> bool:
    """Whether the route that took this request runs its handler in a thread (a sync function under
    Starlette or FastAPI, which put it in their thread pool): cancelling the request would only
    abandon that thread. The router names the route's endpoint in the scope; other ASGI apps do not,
    and are taken for async."""
    endpoint = scope.get("endpoint")
    if endpoint is None or scope.get("type") != "http":
        return False
    if inspect.isclass(endpoint):  # a Starlette HTTPEndpoint: the method's handler runs
        endpoint = getattr(endpoint, str(scope.get("method", "")).lower(), None)
        if endpoint is None:
            return False
    while isinstance(endpoint, functools.partial):
        endpoint = endpoint.func
    # As Starlette's own is_async_callable decides it.
    return not (inspect.iscoroutinefunction(endpoint)
                or (callable(endpoint) and inspect.iscoroutinefunction(endpoint.__call__)))


class _Request:
    __slots__ = ("task", "expired", "started", "cancelled", "input")

    def __init__(self, task: asyncio.Task[Any] | None, inp: Input) -> None:
        self.task = task
        self.input = inp  # the request as an input of the call graph: it says TIMEOUT if it expires
        self.expired = False
        self.started = False
        self.cancelled = False


class Timeout:
    """ASGI middleware: one endpoint's requests (HTTP and WebSocket) bounded by its `timeout`."""

    def __init__(self, app: ASGIApp, name: str, overruns: Overruns, *, threaded: bool = False) -> None:
        self.app = app
        self.name = name
        self.overruns = overruns
        self.timeout = overruns.timeout
        self.threaded = threaded  # a WSGI app: every request runs in a thread
        self._what = f"a request to endpoint `{name}`"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # Each request is an input of its own (modal.current_input_id(), the parent of calls it makes).
        with serving(self.name) as inp:
            await self._serve(scope, receive, send, _Request(asyncio.current_task(), inp))

    async def _serve(self, scope: Scope, receive: Receive, send: Send, req: _Request) -> None:
        async def tracked(message: Message) -> None:
            if req.expired:
                return  # the client has had its 504: what the handler sends now goes nowhere
            if message["type"] in _STARTS:
                req.started = True
            await send(message)

        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.timeout, self._expire, req, scope, send)
        token = self.overruns.begin(self._what)
        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if not req.cancelled:
                raise
            uncancel = getattr(req.task, "uncancel", None)  # 3.11+: this cancellation is handled
            if uncancel is not None:
                uncancel()
            await self._answer(scope, send, req)
        finally:
            timer.cancel()
            self.overruns.end(token)

    def _expire(self, req: _Request, scope: Scope, send: Send) -> None:
        req.expired = True
        req.input.timed_out = True
        print(f"mwtui: endpoint `{self.name}`: a request ran past its timeout of {self.timeout:g}s and was "
              "stopped", file=sys.stderr)
        if req.task is not None and not self.threaded and not _runs_in_thread(scope):
            req.cancelled = True
            req.task.cancel()  # answered once the cancellation has unwound the handler
            return
        # Its thread runs on (Overruns retires the replica if it is not over in time); answer now.
        answer = asyncio.get_running_loop().create_task(self._answer(scope, send, req))
        answer.add_done_callback(_quietly)

    async def _answer(self, scope: Scope, send: Send, req: _Request) -> None:
        with contextlib.suppress(Exception):  # the client (the gateway, past its own 504) may be gone
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1011})
            elif not req.started:
                req.started = True
                body = timed_out_text(self.name, self.timeout)
                await send({
                    "type": "http.response.start",
                    "status": 504,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())],
                })
                await send({"type": "http.response.body", "body": body})


def _quietly(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


class WSGITimeout:
    """WSGI middleware (gunicorn's worker): a request is over when its response has been sent (the
    server closes the body). Nothing here can stop a thread; `Overruns` retires the replica."""

    def __init__(self, app: Callable[..., Any], name: str, overruns: Overruns) -> None:
        self.app = app
        self.name = name
        self.overruns = overruns
        self._what = f"a request to endpoint `{name}`"

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        token = self.overruns.begin(self._what)
        try:
            with serving(self.name):  # an input of its own, as under Timeout (the body is not in it)
                body: Iterable[bytes] = self.app(environ, start_response)
        except BaseException:
            self.overruns.end(token)
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
            self.overruns.end(token)  # the server sends the file itself (sendfile): no user code runs
            return body
        return _Body(body, functools.partial(self.overruns.end, token))


class _Body:
    """A WSGI response body that says when the server has closed it."""

    __slots__ = ("_body", "_done")

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self._body = body
        self._done = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._done()
