"""Function calls that run "remotely": here, in threads of the calling process.

`.remote()` runs the function in the caller's process (after giving it its own environment and mounts,
see `runtime.prepare_call`), which keeps calls cheap and results unserialized. `.spawn()` runs it in a
background thread and records the outcome in mwtui's store, so `FunctionCall.from_id(id).get()` works
from any replica. `.map()` runs inputs on a bounded thread pool.

Locally a spawned call lives in the replica that spawned it: if that replica stops first, the call is
lost, and `get()` says so with Modal's `InternalFailure` (what Modal raises for an input lost with its
container; on Modal the call would have had a container of its own). A replica that stops normally
(SIGTERM: rollout, reload, stop) marks its pending calls lost on the way out; one killed outright is
noticed by whoever waits, since each call records its owner's pid and start time.

Generator functions cannot be spawned, as in Modal 1.x (`Cannot `spawn` a generator function.`).
"""

from __future__ import annotations

import atexit
import builtins
import concurrent.futures as cf
import pickle
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import exception
from .context import FUNCTION_CALL_ID, INPUT_ID

SPAWN_WORKERS = 64
MAP_WORKERS = 16  # inputs of one .map() in flight at once
POLL_MIN_S = 0.005
POLL_MAX_S = 0.1


class CallTimeout(exception.TimeoutError, builtins.TimeoutError):
    """`FunctionCall.get(timeout)` ran out of time. Both Modal's TimeoutError and Python's, since
    Modal's own examples catch the builtin one."""


_executor: cf.ThreadPoolExecutor | None = None
_futures: dict[str, cf.Future[Any]] = {}
_stores: set[Any] = set()  # the store files this process recorded calls in


def _spawn_executor() -> cf.ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = cf.ThreadPoolExecutor(SPAWN_WORKERS, thread_name_prefix="mwtui-spawn")
        atexit.register(_on_exit)
    return _executor


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


def _run_spawned(call_id: str, tag: str, target: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Any:
    from ..store import calls as store
    from .functions import run_sync

    t1 = FUNCTION_CALL_ID.set(call_id)
    t2 = INPUT_ID.set(f"in-{uuid.uuid4().hex}")
    try:
        result = run_sync(target, *args, **kwargs)
    except BaseException as e:
        _record(call_id, store.FAILED, _dumps_error(e))
        raise
    finally:
        FUNCTION_CALL_ID.reset(t1)
        INPUT_ID.reset(t2)
    _record(call_id, *_dumps_result(result))
    return result


def _record(call_id: str, state: str, payload: bytes) -> None:
    from ..store import calls as store

    try:
        store.finish(call_id, state, payload)
    except Exception as e:  # noqa: BLE001 - the store is best effort; the in-process future still works
        print(f"mwtui: cannot record the result of {call_id} in the store: {e}")


def spawn(tag: str, target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> FunctionCall:
    from ..store import calls as store
    from ..store.db import db_path

    call_id = f"fc-{uuid.uuid4().hex}"
    try:
        store.create(call_id, tag)
        _stores.add(db_path())
    except Exception as e:  # noqa: BLE001 - still runs; only from_id in other replicas will miss it
        print(f"mwtui: cannot record {call_id} in the store: {e}")
    _futures[call_id] = _spawn_executor().submit(_run_spawned, call_id, tag, target, args, kwargs)
    return FunctionCall(call_id)


class FunctionCall:
    """A handle to a spawned call. `get(timeout)` waits for its result (or raises its exception);
    `get(timeout=0)` asks once. `from_id` finds a call spawned by any replica."""

    def __init__(self, object_id: str) -> None:
        from .functions import Invoker

        self.object_id = object_id
        self.get = Invoker(self._get, self._get_aio)
        self.cancel = Invoker(self._cancel, self._cancel_aio)

    def _get(self, timeout: float | None = None) -> Any:
        future = _futures.get(self.object_id)
        if future is not None:
            try:
                return future.result(timeout=timeout)
            except cf.TimeoutError:
                raise CallTimeout(f"{self.object_id} has not finished") from None
            except cf.CancelledError:
                raise exception.RemoteError(f"{self.object_id} was cancelled") from None
        return self._get_from_store(timeout)

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
                raise pickle.loads(record.payload)  # type: ignore[arg-type]  # noqa: S301
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

    def get_call_graph(self) -> list[Any]:
        return []

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
