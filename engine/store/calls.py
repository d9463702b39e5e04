"""Spawned function calls and their outcomes, so that `FunctionCall.from_id(id).get()` works from any
replica, not only the one that spawned the call.

Each call records the process that runs it (pid and that process's start time, so a reused pid is not
mistaken for it): a pending call whose process is gone, killed with SIGKILL say, reads as lost at once.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from .db import transaction

KEEP_S = 7 * 24 * 3600  # finished calls older than this are forgotten
PENDING, DONE, FAILED, CANCELLED, LOST = "pending", "done", "failed", "cancelled", "lost"
TIMED_OUT = "timeout"  # a web request (an input of the call graph) that ran past its function's timeout
START_SLACK_S = 1.0  # start times read twice may differ by rounding; a reused pid starts later than this


@dataclass(frozen=True)
class CallRecord:
    id: str
    function: str
    state: str  # pending | done | failed | cancelled | lost
    payload: bytes | None  # the pickled result (done) or exception (failed)
    pid: int | None
    pid_started: float | None = None  # the owning process's start time (seconds since the epoch)
    # Its place in the call graph (`FunctionCall.get_call_graph()`): its one input, the input that made
    # the call (None: made outside any input), the callee's module, the task (replica) that runs it.
    input_id: str | None = None
    parent_input_id: str | None = None
    module: str | None = None
    task_id: str | None = None

    @property
    def finished(self) -> bool:
        return self.state != PENDING


_own: tuple[int, float | None] | None = None  # (pid, start time) of this process; a fork has its own

_INSERT = ("INSERT INTO calls (id, function, state, pid, pid_started, created, input_id, parent_input_id, module, "
           "task_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_COLUMNS = "id, function, state, payload, pid, pid_started, input_id, parent_input_id, module, task_id"
_SELECT = f"SELECT {_COLUMNS} FROM calls WHERE id=?"
# Columns added after the table was first made: an older store file gets them on first use.
_LATER_COLUMNS = {"pid_started": "REAL", "input_id": "TEXT", "parent_input_id": "TEXT", "module": "TEXT",
                  "task_id": "TEXT"}


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
    """A store file made before calls recorded their owner's start time (or their place in the call
    graph) gets the columns."""
    have = {row[1] for row in c.execute("PRAGMA table_info(calls)")}
    for name, kind in _LATER_COLUMNS.items():
        if name not in have:
            c.execute(f"ALTER TABLE calls ADD COLUMN {name} {kind}")


def _missing_column(e: sqlite3.OperationalError) -> bool:
    return "no such column" in str(e) or "has no column named" in str(e)


def create(call_id: str, function: str, *, input_id: str | None = None, parent_input_id: str | None = None,
           module: str | None = None, task_id: str | None = None) -> None:
    now = time.time()
    row = (call_id, function, PENDING, os.getpid(), _own_start(), now, input_id, parent_input_id, module, task_id)
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


def adopt(call_id: str, task_id: str | None = None) -> None:
    """This process runs the pending call from now on (it was spawned by another): its death, not the
    caller's, makes the call lost."""
    with transaction() as c:
        c.execute("UPDATE calls SET pid=?, pid_started=?, task_id=COALESCE(?, task_id) WHERE id=? AND state=?",
                  (os.getpid(), _own_start(), task_id, call_id, PENDING))


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
        lost = dataclasses.replace(record, state=LOST, payload=None)
        try:
            finish(call_id, LOST, None)  # a no-op if it finished just before its process went
        except sqlite3.Error:
            return lost
        return CallRecord(*row) if (row := _read(call_id)) is not None else lost
    return record


def call_graph(call_id: str) -> list[CallRecord]:
    """Every call in the tree `call_id` belongs to: from the topmost call up its chain of parent inputs,
    down through all that call's descendants, in the order they were made. Empty for an unknown id.
    Pending calls whose process is gone read as lost, as `get` reads them."""
    if _read(call_id) is None:  # also adds the graph's columns to an older store file
        return []
    with transaction(write=False) as c:
        top = c.execute("SELECT id, parent_input_id FROM calls WHERE id=?", (call_id,)).fetchone()
        seen = {top[0]}
        while top[1]:
            parent = c.execute("SELECT id, parent_input_id FROM calls WHERE input_id=?", (top[1],)).fetchone()
            if parent is None or parent[0] in seen:
                break  # the parent input is not recorded: the graph starts at the highest one known
            seen.add(parent[0])
            top = parent
        ids = [top[0]]
        frontier = [top[0]]
        seen = {top[0]}  # now the calls already in the tree (a cycle, of ids reused, cannot loop)
        while frontier:
            marks = ",".join("?" * len(frontier))
            rows = c.execute(
                f"SELECT id FROM calls WHERE parent_input_id IN (SELECT input_id FROM calls WHERE id IN ({marks}))"
                " ORDER BY created, rowid", frontier,
            ).fetchall()
            frontier = [r[0] for r in rows if r[0] not in seen]
            seen.update(frontier)
            ids.extend(frontier)
    return [r for r in map(get, ids) if r is not None]


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
