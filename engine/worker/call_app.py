"""The ASGI app through which a function's (or a class's) replica takes calls from other pools.

One POST is one call (see sdk/call_wire.py for what travels): the function, or the named method of the
class's one instance, runs with the arguments sent; a synchronous one in a thread of its own (so that
`max_inputs` of them run at once, as the gateway lets them through), an async one on the replica's loop.
Its result or exception goes back in the reply. The function's `timeout` is the gateway's to enforce,
as it is for web endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hmac
import inspect
import os
import traceback
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..replica_env import CALL_TOKEN as TOKEN_ENV
from ..sdk import calls
from ..sdk.call_wire import (
    CONTENT_TYPE,
    TOKEN_HEADER,
    BadCall,
    Call,
    decode_call,
    encode_error,
    encode_value,
)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_HEADERS = [(b"content-type", CONTENT_TYPE.encode())]


class CallApp:
    def __init__(self, targets: Mapping[str | None, Callable[..., Any]], name: str, max_inputs: int = 1) -> None:
        self.targets = dict(targets)  # None: the function itself; a name: a method of the instance
        self.name = name  # the pool, for messages
        # Synchronous calls each get a thread: as many as the gateway lets in at once, a few spare.
        self.threads = ThreadPoolExecutor(max(4, max_inputs), thread_name_prefix=f"call-{name}")
        # Only the engine's replicas may call (a pickle runs code): they send the run's token. Run by
        # hand (`mwtui worker`, no token in the environment), anyone on the socket may.
        token = os.environ.get(TOKEN_ENV, "")
        self.token = token.encode() if token else None
        for target in self.targets.values():
            if isinstance(target, Batcher):
                target.threads = self.threads

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _reply(send, 405, f"mwtui: {self.name} takes calls (POST), not {scope['method']}\n".encode(), text=True)
            return
        headers = dict(scope.get("headers") or ())
        if self.token is not None and not hmac.compare_digest(headers.get(TOKEN_HEADER.encode(), b""), self.token):
            await _reply(send, 403, f"mwtui: {self.name} takes calls only from mwtui's replicas\n".encode(), text=True)
            return
        if headers.get(b"content-type", b"").split(b";")[0].strip() != CONTENT_TYPE.encode():
            await _reply(send, 415, f"mwtui: {self.name} takes calls ({CONTENT_TYPE}) only\n".encode(), text=True)
            return
        body = await _body(receive)
        try:
            call = decode_call(body)
        except BadCall as exc:
            await _reply(send, 400, f"mwtui: {self.name}: {exc}\n".encode(), text=True)
            return
        target = self.targets.get(call.method)
        if target is None:
            what = f"method `{call.method}`" if call.method else "a function call"
            await _reply(send, 404, f"mwtui: {self.name} has no {what}\n".encode(), text=True)
            return
        # As a router does: the timeout middleware reads it to tell work in a thread (which cannot be
        # cancelled: the replica retires if it runs on) from a coroutine (cancelled at the timeout).
        scope["endpoint"] = target.target if isinstance(target, Batcher) else target
        spawned = call.spawned and call.recorded and call.function_call_id
        if spawned:
            await asyncio.to_thread(calls.adopt, call.function_call_id)
        try:
            with calls.called(call.input_id, call.function_call_id, _tag(self.name, call), call.recorded):
                work = _run(target, call.args, call.kwargs, self.threads)
                value = await (_unless_cancelled(work, call.function_call_id) if spawned else work)
        except Exception as exc:  # noqa: BLE001 - the caller's to handle, as on Modal
            if spawned:
                await asyncio.to_thread(calls.record_outcome, call.function_call_id, error=exc)
            await _reply(send, 200, encode_error(exc, _user_traceback(exc)))
            return
        if spawned:
            await asyncio.to_thread(calls.record_outcome, call.function_call_id, value)
        await _reply(send, 200, encode_value(value))


class Batcher:
    """`@modal.batched`: calls that arrive within `wait_ms` of each other (at most `max_size`) become one
    call of the function with a list per argument; each caller gets its own item of the list it returns
    (or the exception it raised). Runs on the replica's loop; the function itself as any target runs."""

    def __init__(self, target: Callable[..., Any], max_size: int, wait_ms: int) -> None:
        self.target = target
        self.max_size = max_size
        self.wait_s = wait_ms / 1000
        self.signature = inspect.signature(target)
        self.waiting: list[tuple[tuple[Any, ...], dict[str, Any], asyncio.Future[Any]]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.threads: ThreadPoolExecutor | None = None  # the call app's, set when it is served
        self.runs: set[asyncio.Task[None]] = set()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.waiting.append((args, kwargs, future))
        if len(self.waiting) >= self.max_size:
            self._flush()
        elif self.timer is None:
            self.timer = loop.call_later(self.wait_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.waiting = self.waiting[: self.max_size], self.waiting[self.max_size:]
        batch = [b for b in batch if not b[2].done()]  # a caller past its timeout is gone
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self.runs.add(task)
            task.add_done_callback(self.runs.discard)
        if self.waiting:
            self.timer = asyncio.get_running_loop().call_later(self.wait_s, self._flush)

    async def _run(self, batch: list[tuple[tuple[Any, ...], dict[str, Any], asyncio.Future[Any]]]) -> None:
        try:
            bound = [self.signature.bind(*args, **kwargs).arguments for args, kwargs, _ in batch]
            columns = {name: [b[name] for b in bound] for name in self.signature.parameters}
            results = await _run(self.target, (), columns, self.threads or ThreadPoolExecutor(1))
            if not isinstance(results, list) or len(results) != len(batch):
                raise TypeError(f"a @modal.batched function must return a list of {len(batch)} results (one per "
                                f"input), not {type(results).__name__}"
                                f"{f' of {len(results)}' if isinstance(results, list) else ''}")
        except Exception as exc:  # noqa: BLE001 - every input of the batch gets it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def batching(target: Callable[..., Any], max_size: int | None, wait_ms: int) -> Callable[..., Any]:
    """The target as calls reach it: gathered into batches when it is `@modal.batched`."""
    return Batcher(target, max_size, wait_ms) if max_size else target


CANCEL_POLL_S = 0.25  # how often a spawned call running here asks the store whether it was cancelled


class Cancelled(Exception):
    """`FunctionCall.cancel()` was called for the spawned call running here."""


async def _unless_cancelled(work: Awaitable[Any], call_id: str) -> Any:
    """`work`, unless `FunctionCall.cancel()` is called for it meanwhile (from any replica: the store
    says so): then a coroutine is cancelled at its next await. Work in a thread cannot be stopped; it
    runs to its end (or its timeout), and its outcome is not recorded over the cancellation."""
    from ..store import calls as store

    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.wait({task}, timeout=CANCEL_POLL_S)
        if task.done():
            break
        record = await asyncio.to_thread(store.get, call_id)
        if record is not None and record.state == store.CANCELLED:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise Cancelled(f"{call_id} was cancelled")
    return task.result()


def _tag(pool: str, call: Call) -> str:
    return f"{pool}.{call.method}" if call.method else pool


async def _run(target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
               threads: ThreadPoolExecutor) -> Any:
    if isinstance(target, Batcher) or inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
        result = target(*args, **kwargs)
        if inspect.isasyncgen(result):  # `.remote_gen()`: its items travel as one list
            return [item async for item in result]
        return await result
    # In a thread, with this request's context (the input being served, for the call graph).
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    return await loop.run_in_executor(threads, functools.partial(ctx.run, _sync_call, target, args, kwargs))


def _sync_call(target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = target(*args, **kwargs)
    return list(result) if inspect.isgenerator(result) else result


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the called function down: our frames and the thread pool's are not the user's."""
    tb = exc.__traceback__
    ours = (__file__, "concurrent/futures/")
    while tb is not None and tb.tb_next is not None and any(p in tb.tb_frame.f_code.co_filename for p in ours):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _reply(send: Send, status: int, body: bytes, text: bool = False) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8")] if text else _HEADERS
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
