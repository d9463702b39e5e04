"""The one SQLite file every replica of every mwtui shares: Dict and Queue contents, spawned calls.

WAL mode lets readers run while one process writes; writers queue on the database lock (`BEGIN
IMMEDIATE`, with a generous busy timeout) rather than fail. Each thread of each process has its own
connection: sqlite3 connections are neither thread- nor fork-safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from .home import mwtui_home, private_dir

DB_NAME = "store.sqlite3"
BUSY_TIMEOUT_S = 30.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS dict_items (
    dict TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (dict, key)
);
CREATE TABLE IF NOT EXISTS queue_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, partition TEXT NOT NULL, value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_order ON queue_items (queue, partition, id);
CREATE TABLE IF NOT EXISTS calls (
    id TEXT PRIMARY KEY, function TEXT NOT NULL, state TEXT NOT NULL, payload BLOB, pid INTEGER,
    created REAL NOT NULL, finished REAL, pid_started REAL,
    input_id TEXT, parent_input_id TEXT, module TEXT, task_id TEXT
);
"""

_local = threading.local()


def db_path() -> Path:
    return mwtui_home() / DB_NAME


def _open(path: Path) -> sqlite3.Connection:
    private_dir(path.parent)
    if not path.exists():
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # private from the first byte
    # Autocommit: transactions are explicit (`transaction()`), so none is left open by accident.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    # Switching a new file to WAL and creating the schema can fail at once with "database is locked"
    # (SQLite does not always call the busy handler there) when several processes open it together:
    # they take turns on a lock file beside it instead.
    lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
    finally:
        os.close(lock_fd)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def connection(path: Path | None = None) -> sqlite3.Connection:
    """This thread's connection to the current MWTUI_HOME's store, or to `path` (a new one after a fork)."""
    path = path or db_path()
    key = (os.getpid(), str(path))
    conns: dict[tuple[int, str], sqlite3.Connection] = getattr(_local, "conns", None) or {}
    _local.conns = conns
    conn = conns.get(key)
    if conn is None:
        conn = conns[key] = _open(path)
    return conn


@contextlib.contextmanager
def transaction(write: bool = True, path: Path | None = None) -> Iterator[sqlite3.Connection]:
    """A transaction; a write one takes the write lock up front, so read-then-write is atomic."""
    conn = connection(path)
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
