"""Spawned function calls and their outcomes, so that `FunctionCall.from_id(id).get()` works from any
replica, not only the one that spawned the call.

Each call records the process that runs it (pid and that process's start time, so a reused pid is not
mistaken for it): a pending call whose process is gone, killed with SIGKILL say, reads as lost at once.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from .db import transaction

KEEP_S = 7 * 24 * 3600  # finished calls older than this are forgotten
PENDING, DONE, FAILED, CANCELLED, LOST = "pending", "done", "failed", "cancelled", "lost"
START_SLACK_S = 1.0  # start times read twice may differ by rounding; a reused pid starts later than this


@dataclass(frozen=True)
class CallRecord:
    id: str
    function: str
    state: str  # pending | done | failed | cancelled | lost
    payload: bytes | None  # the pickled result (done) or exception (failed)
    pid: int | None
    pid_started: float | None = None  # the owning process's start time (seconds since the epoch)

    @property
    def finished(self) -> bool:
        return self.state != PENDING


_own: tuple[int, float | None] | None = None  # (pid, start time) of this process; a fork has its own

_INSERT = "INSERT INTO calls (id, function, state, pid, pid_started, created) VALUES (?, ?, ?, ?, ?, ?)"
_SELECT = "SELECT id, function, state, payload, pid, pid_started FROM calls WHERE id=?"


def _own_start() -> float | None:
    global _own
    pid = os.getpid()
    if _own is None or _own[0] != pid:
        try:
            _own = (pid, psutil.Process(pid).create_time())
        except psutil.Error:
            _own = (pid, None)
    return _own[1]


def _add_owner_column(c: sqlite3.Connection) -> None:
    """A store file made before calls recorded their owner's start time gets the column."""
    try:
        c.execute("ALTER TABLE calls ADD COLUMN pid_started REAL")
    except sqlite3.OperationalError as e:
        if "duplicate column" not in str(e):
            raise


def _missing_column(e: sqlite3.OperationalError) -> bool:
    return "pid_started" in str(e)


def create(call_id: str, function: str) -> None:
    now = time.time()
    row = (call_id, function, PENDING, os.getpid(), _own_start(), now)
    with transaction() as c:
        c.execute("DELETE FROM calls WHERE finished IS NOT NULL AND finished < ?", (now - KEEP_S,))
        try:
            c.execute(_INSERT, row)
        except sqlite3.OperationalError as e:
            if not _missing_column(e):
                raise
            _add_owner_column(c)
            c.execute(_INSERT, row)


def finish(call_id: str, state: str, payload: bytes | None) -> None:
    """Record the outcome, unless the call was cancelled (or found lost) meanwhile."""
    with transaction() as c:
        c.execute(
            "UPDATE calls SET state=?, payload=?, finished=? WHERE id=? AND state=?",
            (state, payload, time.time(), call_id, PENDING),
        )


def _read(call_id: str) -> tuple | None:
    try:
        with transaction(write=False) as c:
            return c.execute(_SELECT, (call_id,)).fetchone()
    except sqlite3.OperationalError as e:
        if not _missing_column(e):
            raise
    with transaction() as c:
        _add_owner_column(c)
        return c.execute(_SELECT, (call_id,)).fetchone()


def get(call_id: str) -> CallRecord | None:
    """The call's record. A pending call whose process is gone (its replica died mid-call) is recorded
    as lost, and read so."""
    row = _read(call_id)
    if row is None:
        return None
    record = CallRecord(*row)
    if record.state == PENDING and record.pid is not None and not owner_alive(record.pid, record.pid_started):
        lost = CallRecord(record.id, record.function, LOST, None, record.pid, record.pid_started)
        try:
            finish(call_id, LOST, None)  # a no-op if it finished just before its process went
        except sqlite3.Error:
            return lost
        return CallRecord(*row) if (row := _read(call_id)) is not None else lost
    return record


def cancel(call_id: str) -> None:
    finish(call_id, CANCELLED, None)


def mark_lost(pid: int | None = None, path: Path | None = None) -> None:
    """The calls this process (or `pid`) was running will never finish (it is stopping)."""
    with transaction(path=path) as c:
        c.execute(
            "UPDATE calls SET state=?, finished=? WHERE pid=? AND state=?",
            (LOST, time.time(), os.getpid() if pid is None else pid, PENDING),
        )


def owner_alive(pid: int, started: float | None) -> bool:
    """Whether process `pid` still runs and is the one that started at `started` (when known): not a
    zombie (killed, not yet reaped), not a later process that was given the same pid."""
    if pid == os.getpid():
        own = _own_start()
        return started is None or own is None or abs(own - started) <= START_SLACK_S
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - started) <= START_SLACK_S
    except psutil.NoSuchProcess:  # ZombieProcess is one too: gone
        return False
    except psutil.Error:  # AccessDenied and the like: it exists, and that is all we can tell
        return True
