"""`modal.Queue`: a named FIFO (one per partition) that every replica shares, in mwtui's local store.

A get removes items atomically, so two replicas never receive the same one. Blocking gets poll the
store, briefly at first, then every POLL_MAX_S.
"""

from __future__ import annotations

import queue as std_queue
import time
from collections.abc import Iterator
from typing import Any

from .aio import blocking, blocking_gen
from .dicts import _Named, dumps, loads
from .exception import InvalidError

POLL_MIN_S = 0.002
POLL_MAX_S = 0.05


def _partition(partition: str | None) -> str:
    if partition is None:
        return ""
    if not isinstance(partition, str) or not 0 < len(partition.encode()) <= 64:
        raise InvalidError("Queue partition key must be between 1 and 64 bytes.")
    return partition


class Queue(_Named):
    KIND = "queue"

    @property
    def _store(self) -> Any:
        from ..store.kv import QueueStore

        return QueueStore(self._store_name)

    @blocking
    def put(self, v: Any, block: bool = True, timeout: float | None = None, *, partition: str | None = None,
            partition_ttl: int = 24 * 3600) -> None:
        self._store.put_many([dumps(v)], _partition(partition))

    @blocking
    def put_many(self, vs: list[Any], block: bool = True, timeout: float | None = None, *,
                 partition: str | None = None, partition_ttl: int = 24 * 3600) -> None:
        self._store.put_many([dumps(v) for v in vs], _partition(partition))

    def _take(self, n: int, block: bool, timeout: float | None, partition: str | None) -> list[Any]:
        key = _partition(partition)
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = POLL_MIN_S
        while True:
            got = self._store.get_many(n, key)
            if got or not block:
                return [loads(v) for v in got]
            if deadline is not None and time.monotonic() >= deadline:
                raise std_queue.Empty()
            wait = pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
            pause = min(POLL_MAX_S, pause * 2)

    @blocking
    def get(self, block: bool = True, timeout: float | None = None, *, partition: str | None = None) -> Any:
        """The next item; None at once if empty and not `block`; queue.Empty when `timeout` passes."""
        got = self._take(1, block, timeout, partition)
        return got[0] if got else None

    @blocking
    def get_many(self, n_values: int, block: bool = True, timeout: float | None = None, *,
                 partition: str | None = None) -> list[Any]:
        """Up to n_values items, waiting (if `block`) until there is at least one."""
        return self._take(n_values, block, timeout, partition)

    @blocking
    def len(self, *, partition: str | None = None, total: bool = False) -> int:
        if partition is not None and total:
            raise InvalidError("Partition must be null when requesting total length.")
        return self._store.len(None if total else _partition(partition))

    @blocking
    def clear(self, *, partition: str | None = None, all: bool = False) -> None:  # noqa: A002 - Modal's name
        if partition is not None and all:
            raise InvalidError("Partition must be null when requesting to clear all.")
        self._store.clear(None if all else _partition(partition))

    @blocking_gen
    def iterate(self, *, partition: str | None = None, item_poll_timeout: float = 0.0) -> Iterator[Any]:
        """Every item, oldest first, without removing any; waits `item_poll_timeout` for more."""
        key = _partition(partition)
        last = 0
        deadline = time.monotonic() + item_poll_timeout
        while True:
            batch = self._store.after(last, key)
            for item_id, value in batch:
                last = item_id
                yield loads(value)
            if batch:
                deadline = time.monotonic() + item_poll_timeout
            elif time.monotonic() >= deadline:
                return
            else:
                time.sleep(POLL_MAX_S)
