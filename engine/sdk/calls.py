"""Function calls as inputs: their ids, their place in the call graph, and how they end.

Under mwtui a call's target is a `call_route.CallRoute` (the callee's own pool, through the gateway);
outside it, the function itself in this process, given its own environment and mounts first
(`runtime.prepare_call`). `.remote()` makes the call in the caller's thread; `.spawn()` in a background
thread, recording the outcome in mwtui's store so that `FunctionCall.from_id(id).get()` works from any
replica; `.map()` on a bounded thread pool, MAP_WORKERS inputs in flight.

A spawned call that reaches another pool is taken over there (`adopt`): that replica records how it
ends, and if it stops first, `get()` says so with Modal's `InternalFailure`. One run in process lives in
the replica that spawned it, with the same consequence. A replica that stops normally (SIGTERM:
rollout, reload, stop) marks the calls it runs lost on the way out; one killed outright is noticed by
whoever waits, since each call records its owner's pid and start time.

Generator functions cannot be spawned, as in Modal 1.x (`Cannot `spawn` a generator function.`).

The call graph (`FunctionCall.get_call_graph()`, `modal.call_graph`): every input has an id (`in-` + a
ULID, as Modal's ids) and a function call id: a web request gets both when a replica starts serving it
(`serving`), a spawned or remote call when it is made. A call records the input that made it (its
parent), so the tree can be read back from the store by any replica. An input that made no call is
not written at all: a web request is recorded only when it first makes one, which keeps the store off
the request path.
"""

from __future__ import annotations

import atexit
import builtins
import concurrent.futures as cf
import contextlib
import os
import pickle
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from . import exception
from .call_graph import FunctionCallNode, InputInfo, InputNode, InputStatus, reconstruct_call_graph
from .context import FUNCTION_CALL_ID, INPUT_ID

SPAWN_WORKERS = 64
MAP_WORKERS = 16  # inputs of one .map() in flight at once
POLL_MIN_S = 0.005
POLL_MAX_S = 0.1


class CallTimeout(exception.TimeoutError, builtins.TimeoutError):
    """`FunctionCall.get(timeout)` ran out of time. Both Modal's TimeoutError and Python's, since
    Modal's own examples catch the builtin one. Tracebacks name it as Modal does."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _call_timeout, self.args  # its shown name is Modal's class, which pickle would find instead


def _call_timeout(*args: Any) -> CallTimeout:
    return CallTimeout(*args)


CallTimeout.__module__, CallTimeout.__name__, CallTimeout.__qualname__ = "modal.exception", "TimeoutError", "TimeoutError"


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits at a time: every request makes two ids
_SHIFTS = range(120, -1, -10)


def new_id(prefix: str) -> str:
    """`prefix` + a ULID (48 bits of milliseconds, 80 random), the form of Modal's object ids. Unique,
    not secret: `random` (reseeded in each forked replica) is ten times cheaper than os.urandom."""
    value = (time.time_ns() // 1_000_000) << 80 | random.getrandbits(80)
    return prefix + "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


_task: tuple[int, str] | None = None  # (pid, id): a forked replica makes its own


def task_id() -> str:
    """The task (container) running here: the replica's MODAL_TASK_ID, else one made up per process.
    Read at each call: the variable may be set after this module was imported (a zygote's fork)."""
    env = os.environ.get("MODAL_TASK_ID")
    if env:
        return env
    global _task
    if _task is None or _task[0] != os.getpid():
        _task = (os.getpid(), new_id("ta-"))
    return _task[1]


@dataclass
class Input:
    """The input being served in this context: a web request, a spawned or a remote call."""

    input_id: str
    function_call_id: str
    function_name: str
    module_name: str | None = None  # None: found from the function's name when it is recorded
    recorded: bool = False  # in the store (an input is written when it first makes a call, if not before)
    timed_out: bool = False  # ran past its timeout (a web request the replica stopped)
    spawned: bool = False  # made by .spawn(): whoever runs it records its outcome in the store
    lock: threading.Lock = field(default_factory=threading.Lock)  # its calls may be made from several threads


_SERVING: ContextVar[Input | None] = ContextVar("mwtui_serving_input", default=None)

_executor: cf.ThreadPoolExecutor | None = None
_futures: dict[str, cf.Future[Any]] = {}
_stores: set[Any] = set()  # the store files this process recorded calls in


def _spawn_executor() -> cf.ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = cf.ThreadPoolExecutor(SPAWN_WORKERS, thread_name_prefix="mwtui-spawn")
        _hook_exit()
    return _executor


_exit_hooked = False


def _hook_exit() -> None:
    """Once: on the way out, the calls this process runs are marked lost (see `_on_exit`)."""
    global _exit_hooked
    if not _exit_hooked:
        atexit.register(_on_exit)
        _exit_hooked = True


def _on_exit() -> None:
    from ..store import calls as store

    for path in _stores:
        try:
            store.mark_lost(path=path)
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def _dumps_result(value: Any) -> tuple[str, bytes]:
    from ..store import calls as store

    try:
        return store.DONE, pickle.dumps(value, protocol=4)
    except Exception as e:  # noqa: BLE001 - pickle raises several kinds
        err = exception.SerializationError(
            f"the call's result ({type(value).__name__}) cannot be serialized, so only the replica that "
            f"spawned it can get it: {e}"
        )
        return store.FAILED, pickle.dumps(err, protocol=4)


def _dumps_error(e: BaseException) -> bytes:
    text = "".join(traceback.format_exception(e))
    try:
        copy = pickle.loads(pickle.dumps(e, protocol=4))  # noqa: S301 - just made
        # Pickling drops the traceback: keep it as a note (Python 3.11+), for whoever gets it elsewhere.
        if hasattr(copy, "add_note"):
            copy.add_note(f"Traceback of the spawned call:\n{text}")
        return pickle.dumps(copy, protocol=4)
    except Exception:  # noqa: BLE001 - an exception that does not pickle travels as text
        return pickle.dumps(exception.RemoteError(text), protocol=4)


def _module_of_function(name: str) -> str:
    """The module that defines function (or class method) `name`, for a web request's input."""
    from .app import App

    fn_name, _, method = name.partition(".")
    for app in App._all_apps:
        if not method and fn_name in app._functions:
            return getattr(app._functions[fn_name].raw_f, "__module__", None) or ""
        cls = getattr(app, "_classes", {}).get(fn_name)
        if method and cls is not None:
            return getattr(cls.user_cls, "__module__", None) or ""
    return ""


def _module_of(target: Callable[..., Any]) -> str:
    # A call to another pool (sdk/call_route.py) names the module of the function it reaches.
    return getattr(target, "target_module", None) or getattr(target, "__module__", None) or ""


@contextlib.contextmanager
def _current(inp: Input) -> Iterator[Input]:
    """`inp` is the input being served (modal.current_input_id() and the parent of calls it makes)."""
    t0 = _SERVING.set(inp)
    t1 = INPUT_ID.set(inp.input_id)
    t2 = FUNCTION_CALL_ID.set(inp.function_call_id)
    try:
        yield inp
    finally:
        FUNCTION_CALL_ID.reset(t2)
        INPUT_ID.reset(t1)
        _SERVING.reset(t0)


def current() -> Input | None:
    """The input being served in this context, if any."""
    return _SERVING.get()


@contextlib.contextmanager
def called(input_id: str, function_call_id: str, function_name: str, recorded: bool) -> Iterator[Input]:
    """Serve a call from another pool as the input its caller made (ids "" when it made none). If the
    caller did not record it and it makes calls itself (so it is recorded here), it is finished here."""
    inp = Input(input_id or new_id("in-"), function_call_id or new_id("fc-"), function_name, recorded=recorded)
    ok = False
    try:
        with _current(inp):
            yield inp
        ok = True
    finally:
        if inp.recorded and not recorded:
            from ..store import calls as store

            _finish_input(inp, store.DONE if ok else store.FAILED)


def adopt(function_call_id: str) -> None:
    """A spawned call from another pool starts here: this replica owns it now, so that it outlives its
    caller's replica (which only waits for it), as a spawned call has a container of its own on Modal."""
    from ..store import calls as store
    from ..store.db import db_path

    try:
        store.adopt(function_call_id, task_id())
        _stores.add(db_path())
        _hook_exit()
    except Exception as e:  # noqa: BLE001 - the caller still records the outcome when it gets it
        print(f"mwtui: cannot take over {function_call_id} in the store: {e}")


def record_outcome(function_call_id: str, value: Any = None, error: BaseException | None = None) -> None:
    """How a spawned call that runs here ended, for `FunctionCall.from_id(...).get()` in any replica."""
    from ..store import calls as store

    if error is not None:
        _record(function_call_id, store.FAILED, _dumps_error(error))
    else:
        _record(function_call_id, *_dumps_result(value))


def _parent_input_id() -> str | None:
    """The input making a call now, recorded in the store first if it was not yet (so the call's
    parent can be found); None outside any input."""
    inp = _SERVING.get()
    if inp is None:
        return INPUT_ID.get()
    with inp.lock:
        if not inp.recorded:
            from ..store import calls as store
            from ..store.db import db_path

            module = inp.module_name if inp.module_name is not None else _module_of_function(inp.function_name)
            try:
                store.create(inp.function_call_id, inp.function_name, input_id=inp.input_id, module=module,
                             task_id=task_id())
                _stores.add(db_path())
            except Exception as e:  # noqa: BLE001 - best effort: only the call graph misses it
                print(f"mwtui: cannot record input {inp.input_id} in the store: {e}")
            inp.recorded = True
    return inp.input_id


def _finish_input(inp: Input, state: str, payload: bytes | None = None) -> None:
    """Record how an input that is in the store ended (one that is not needs nothing)."""
    from ..store import calls as store

    if inp.recorded:
        _record(inp.function_call_id, store.TIMED_OUT if inp.timed_out else state, payload)


class serving:  # noqa: N801 - used as a function: `with serving(name) as inp:`
    """Serve one web request to `function_name` as an input of its own, as Modal does: ids for
    modal.current_input_id() and friends, the parent of the calls it makes; recorded (with how it
    ended) only if it made any. Set `timed_out` on what this yields when the request ran too long.
    A class rather than a generator: it runs on every request, and this is half the cost."""

    __slots__ = ("input", "_tokens")

    def __init__(self, function_name: str) -> None:
        self.input = Input(new_id("in-"), new_id("fc-"), function_name)

    def __enter__(self) -> Input:
        inp = self.input
        self._tokens = (_SERVING.set(inp), INPUT_ID.set(inp.input_id), FUNCTION_CALL_ID.set(inp.function_call_id))
        return inp

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        t0, t1, t2 = self._tokens
        FUNCTION_CALL_ID.reset(t2)
        INPUT_ID.reset(t1)
        _SERVING.reset(t0)
        if self.input.recorded:
            from ..store import calls as store

            _finish_input(self.input, store.DONE if kind is None else store.FAILED)


def _new_call(tag: str, target: Callable[..., Any], *, eager: bool) -> Input:
    """A call to `tag` being made now, recorded with the input making it as its parent. One made
    outside any input is recorded only if `eager` (else when it first makes a call itself)."""
    from ..store import calls as store
    from ..store.db import db_path

    inp = Input(new_id("in-"), new_id("fc-"), tag, _module_of(target))
    parent = _parent_input_id()
    if parent is None and not eager:
        return inp
    try:
        store.create(inp.function_call_id, tag, input_id=inp.input_id, parent_input_id=parent,
                     module=inp.module_name, task_id=task_id())
        _stores.add(db_path())
    except Exception as e:  # noqa: BLE001 - still runs; only from_id in other replicas will miss it
        print(f"mwtui: cannot record {inp.function_call_id} in the store: {e}")
    inp.recorded = True
    return inp


def run_remote(tag: str, target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`.remote()`: run the call here, as an input of its own in the call graph."""
    from ..store import calls as store
    from .functions import run_sync

    inp = _new_call(tag, target, eager=False)
    try:
        with _current(inp):
            result = run_sync(target, *args, **kwargs)
    except BaseException as e:
        _finish_input(inp, store.FAILED, _dumps_error(e) if inp.recorded else None)
        raise
    _finish_input(inp, store.DONE)
    return result


async def run_remote_aio(tag: str, target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    from ..store import calls as store
    from .functions import run_async

    if _SERVING.get() is None and INPUT_ID.get() is None:
        inp = _new_call(tag, target, eager=False)  # made outside any input: nothing to write yet
    else:
        inp = await _off_loop(_new_call, tag, target, eager=False)  # it writes to the store
    try:
        with _current(inp):
            result = await run_async(target, *args, **kwargs)
    except BaseException as e:
        if inp.recorded:
            await _off_loop(_finish_input, inp, store.FAILED, _dumps_error(e))
        raise
    if inp.recorded:
        await _off_loop(_finish_input, inp, store.DONE)
    return result


async def _off_loop(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    import asyncio
    import contextvars
    import functools

    # The caller's context goes along: the call's parent is the input this coroutine serves.
    ctx = contextvars.copy_context()
    return await asyncio.to_thread(ctx.run, functools.partial(f, *args, **kwargs))


def _run_spawned(inp: Input, target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    from ..store import calls as store
    from .functions import run_sync

    call_id = inp.function_call_id
    try:
        with _current(inp):
            result = run_sync(target, *args, **kwargs)
    except BaseException as e:
        _record(call_id, store.FAILED, _dumps_error(e))
        raise
    _record(call_id, *_dumps_result(result))
    return result


def _record(call_id: str, state: str, payload: bytes) -> None:
    from ..store import calls as store

    try:
        store.finish(call_id, state, payload)
    except Exception as e:  # noqa: BLE001 - the store is best effort; the in-process future still works
        print(f"mwtui: cannot record the result of {call_id} in the store: {e}")


def spawn(tag: str, target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> FunctionCall:
    inp = _new_call(tag, target, eager=True)  # from_id needs it in the store, parent or not
    inp.spawned = True
    call_id = inp.function_call_id
    _futures[call_id] = _spawn_executor().submit(_run_spawned, inp, target, args, kwargs)
    return FunctionCall(call_id)


class FunctionCall:
    """A handle to a spawned call. `get(timeout)` waits for its result (or raises its exception);
    `get(timeout=0)` asks once. `from_id` finds a call spawned by any replica."""

    def __init__(self, object_id: str) -> None:
        from .functions import Invoker

        self.object_id = object_id
        self.get = Invoker(self._get, self._get_aio)
        self.cancel = Invoker(self._cancel, self._cancel_aio)
        self.get_call_graph = Invoker(self._get_call_graph, self._get_call_graph_aio)

    def _get(self, timeout: float | None = None) -> Any:
        future = _futures.get(self.object_id)
        if future is not None:
            try:
                return future.result(timeout=timeout)
            except cf.TimeoutError:
                raise CallTimeout(f"{self.object_id} has not finished") from None
            except cf.CancelledError:
                raise exception.RemoteError(f"{self.object_id} was cancelled") from None
            except Exception:
                if self._cancelled():  # cancelled from any replica: it ended because of that
                    raise exception.RemoteError(f"{self.object_id} was cancelled") from None
                raise
        return self._get_from_store(timeout)

    def _cancelled(self) -> bool:
        from ..store import calls as store

        try:
            record = store.get(self.object_id)
        except Exception:  # noqa: BLE001 - the store is best effort
            return False
        return record is not None and record.state == store.CANCELLED

    def _get_from_store(self, timeout: float | None) -> Any:
        from ..store import calls as store

        deadline = None if timeout is None else time.monotonic() + timeout
        pause = POLL_MIN_S
        while True:
            record = store.get(self.object_id)
            if record is None:
                raise exception.NotFoundError(f"No function call with id {self.object_id!r}")
            if record.state == store.DONE:
                return pickle.loads(record.payload or pickle.dumps(None))  # noqa: S301 - our own store
            if record.state == store.FAILED:
                if record.payload is None:  # a web request's input: it has no result to give
                    raise exception.RemoteError(f"{self.object_id} failed")
                raise pickle.loads(record.payload)  # noqa: S301
            if record.state == store.TIMED_OUT:
                raise exception.FunctionTimeoutError(f"{self.object_id} ran past its timeout")
            if record.state == store.CANCELLED:
                raise exception.RemoteError(f"{self.object_id} was cancelled")
            if record.state == store.LOST:
                raise exception.InternalFailure(
                    f"{self.object_id} was lost: the replica that ran it ({record.function}, pid {record.pid}) "
                    "stopped before it finished"
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise CallTimeout(f"{self.object_id} has not finished")
            left = POLL_MAX_S if deadline is None else max(0.0, deadline - time.monotonic())
            time.sleep(min(pause, left))
            pause = min(POLL_MAX_S, pause * 2)

    async def _get_aio(self, timeout: float | None = None) -> Any:
        import asyncio

        return await asyncio.to_thread(self._get, timeout)

    def _cancel(self, terminate_containers: bool = False) -> None:
        from ..store import calls as store

        future = _futures.get(self.object_id)
        if future is not None:
            future.cancel()  # only helps if it has not started: a running thread cannot be stopped
        store.cancel(self.object_id)

    async def _cancel_aio(self, terminate_containers: bool = False) -> None:
        self._cancel(terminate_containers)

    def _get_call_graph(self) -> list[InputInfo]:
        """Modal's tree: the input that made the calls (a web request, say) is the root, each call it
        made a child. Read from the store, so any replica can ask about any call."""
        from ..store import calls as store

        records = store.call_graph(self.object_id)
        known = {r.input_id for r in records}
        # A parent input the store lacks (its write failed) would hide the tree: its topmost call is the root.
        calls = [FunctionCallNode(r.id, r.parent_input_id if r.parent_input_id in known else "", r.function,
                                  r.module or "") for r in records]
        inputs = [InputNode(r.input_id or "", r.id, r.task_id or "", _STATUS.get(r.state, InputStatus.PENDING))
                  for r in records if r.input_id]
        return reconstruct_call_graph(calls, inputs)

    async def _get_call_graph_aio(self) -> list[InputInfo]:
        import asyncio

        return await asyncio.to_thread(self._get_call_graph)

    @staticmethod
    def from_id(function_call_id: str, client: Any = None) -> FunctionCall:
        from ..store import calls as store

        if function_call_id not in _futures and store.get(function_call_id) is None:
            raise exception.NotFoundError(f"No function call with id {function_call_id!r}")
        return FunctionCall(function_call_id)

    @staticmethod
    def gather(*calls: FunctionCall) -> list[Any]:
        return [c.get() for c in calls]

    def __repr__(self) -> str:
        return f"<modal.FunctionCall {self.object_id}>"


_STATUS = {  # the store's states as Modal's input statuses
    "pending": InputStatus.PENDING, "done": InputStatus.SUCCESS, "failed": InputStatus.FAILURE,
    "cancelled": InputStatus.TERMINATED, "lost": InputStatus.TERMINATED, "timeout": InputStatus.TIMEOUT,
}


def gather(*calls: FunctionCall) -> list[Any]:
    """`modal.functions.gather`: every call's result, in order."""
    return [c.get() for c in calls]


def run_many(
    call: Callable[..., Any], inputs: Iterable[tuple[tuple[Any, ...], dict[str, Any]]], *, ordered: bool = True,
    return_exceptions: bool = False, workers: int = MAP_WORKERS,
) -> Iterator[Any]:
    """Results of `call(*args, **kwargs)` for each input, MAP_WORKERS at a time, in input order (or as
    they finish). Inputs are read as the window allows, so a long iterator is never read all at once."""
    executor = cf.ThreadPoolExecutor(workers, thread_name_prefix="mwtui-map")
    pending: list[cf.Future[Any]] = []
    it = iter(inputs)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < workers * 2:
                try:
                    args, kwargs = next(it)
                except StopIteration:
                    exhausted = True
                    break
                pending.append(executor.submit(call, *args, **kwargs))
            if not pending:
                return
            if ordered:
                future = pending.pop(0)
            else:
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                future = next(f for f in pending if f in done)
                pending.remove(future)
            try:
                yield future.result()
            except Exception as e:
                if not return_exceptions:
                    raise
                yield e
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
