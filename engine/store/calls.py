"""Spawned function calls and their outcomes, so that `FunctionCall.from_id(id).get()` works from any
replica, not only the one that spawned the call."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .db import transaction

KEEP_S = 7 * 24 * 3600  # finished calls older than this are forgotten
PENDING, DONE, FAILED, CANCELLED, LOST = "pending", "done", "failed", "cancelled", "lost"


@dataclass(frozen=True)
class CallRecord:
    id: str
    function: str
    state: str  # pending | done | failed | cancelled | lost
    payload: bytes | None  # the pickled result (done) or exception (failed)
    pid: int | None

    @property
    def finished(self) -> bool:
        return self.state != PENDING


def create(call_id: str, function: str) -> None:
    now = time.time()
    with transaction() as c:
        c.execute("DELETE FROM calls WHERE finished IS NOT NULL AND finished < ?", (now - KEEP_S,))
        c.execute(
            "INSERT INTO calls (id, function, state, pid, created) VALUES (?, ?, ?, ?, ?)",
            (call_id, function, PENDING, os.getpid(), now),
        )


def finish(call_id: str, state: str, payload: bytes | None) -> None:
    """Record the outcome, unless the call was cancelled meanwhile."""
    with transaction() as c:
        c.execute(
            "UPDATE calls SET state=?, payload=?, finished=? WHERE id=? AND state=?",
            (state, payload, time.time(), call_id, PENDING),
        )


def get(call_id: str) -> CallRecord | None:
    with transaction(write=False) as c:
        row = c.execute("SELECT id, function, state, payload, pid FROM calls WHERE id=?", (call_id,)).fetchone()
    if row is None:
        return None
    record = CallRecord(*row)
    if record.state == PENDING and record.pid is not None and not _alive(record.pid):
        return CallRecord(record.id, record.function, LOST, None, record.pid)  # its replica died mid-call
    return record


def cancel(call_id: str) -> None:
    finish(call_id, CANCELLED, None)


def mark_lost(pid: int | None = None, path: Path | None = None) -> None:
    """The calls this process was running will never finish (it is stopping)."""
    with transaction(path=path) as c:
        c.execute(
            "UPDATE calls SET state=?, finished=? WHERE pid=? AND state=?",
            (LOST, time.time(), os.getpid() if pid is None else pid, PENDING),
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
