"""Spawned calls and the replica that runs them: a call dies with its replica, and whoever waits for it
from another process hears so at once (Modal's InternalFailure), whether the replica was SIGKILLed or
stopped normally (SIGTERM). Also the refusals Modal 1.6.4 gives generator functions for spawn and map."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from mwtui.engine import sdk as modal
from mwtui.engine.sdk.exception import InvalidError
from mwtui.engine.store import calls, db

from .test_modal_api import Replica, replica

GETTER = textwrap.dedent("""
    import sys
    from mwtui.engine import sdk as modal

    call = modal.FunctionCall.from_id(sys.argv[1])
    try:
        call.get(timeout=0)
    except TimeoutError:
        print("pending", flush=True)
    try:
        print("result", call.get(), flush=True)  # no timeout: only the owner's death can end this
    except modal.exception.InternalFailure as e:
        print("lost", e, flush=True)
""")


def _row(call_id: str) -> tuple:
    """The call's row as stored, read without `calls.get` (which would record a dead owner itself)."""
    with db.transaction(write=False) as c:
        return c.execute("SELECT state, pid, pid_started, finished FROM calls WHERE id=?", (call_id,)).fetchone()


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no line within {timeout}s"
    return proc.stdout.readline().strip()


@pytest.fixture
def spawner(mwtui_home: Path) -> Iterator[tuple[Replica, str]]:
    """A real replica (the worker, as the supervisor starts it) that has spawned a 60-second call."""
    with replica("calls_spawner.py", "spawn", {"MWTUI_HOME": str(mwtui_home)}) as r, r.client("spawn") as c:
        response = c.get("/", params={"seconds": 60})
        assert response.status_code == 200, f"{response.text}\n--- replica output ---\n{r.log()}"
        yield r, response.json()["call_id"]


def test_a_sigkilled_replicas_call_is_lost_for_a_waiter_in_another_process(
        spawner: tuple[Replica, str], mwtui_home: Path) -> None:
    r, call_id = spawner
    state, pid, started, _ = _row(call_id)
    assert (state, pid) == (calls.PENDING, r.proc.pid)
    assert started == pytest.approx(psutil.Process(r.proc.pid).create_time(), abs=calls.START_SLACK_S)
    getter = subprocess.Popen([sys.executable, "-c", GETTER, call_id], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "MWTUI_HOME": str(mwtui_home)})
    try:
        assert _readline(getter, 30) == "pending"  # it is waiting in get(), with no timeout
        os.kill(r.proc.pid, signal.SIGKILL)  # not reaped yet: a zombie, until the fixture's close()
        out, err = getter.communicate(timeout=30)
    finally:
        if getter.poll() is None:
            getter.kill()
            getter.wait()
    assert getter.returncode == 0, err
    assert out.startswith(f"lost {call_id} was lost: the replica that ran it (slow, pid {r.proc.pid})"), out + err
    assert _row(call_id)[0] == calls.LOST  # recorded, for later readers


def test_a_sigtermed_replica_marks_its_pending_calls_lost_on_the_way_out(spawner: tuple[Replica, str]) -> None:
    r, call_id = spawner
    assert _row(call_id)[0] == calls.PENDING
    r.proc.send_signal(signal.SIGTERM)  # a normal stop (rollout, reload, `mwtui` quitting)
    assert r.proc.wait(30) == 0, r.log()
    state, _, _, finished = _row(call_id)
    assert state == calls.LOST and finished is not None, r.log()
    with pytest.raises(modal.exception.InternalFailure, match="was lost"):
        modal.FunctionCall.from_id(call_id).get(timeout=5)


def test_a_reused_pid_is_not_taken_for_the_calls_owner(mwtui_home: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(other.pid).create_time()
        with db.transaction() as c:
            for call_id, when in (("fc-owner", started), ("fc-earlier", started - 3600), ("fc-unknown", None)):
                c.execute("INSERT INTO calls (id, function, state, pid, created) VALUES (?, 'f', 'pending', ?, 0)",
                          (call_id, other.pid))
                c.execute("UPDATE calls SET pid_started=? WHERE id=?", (when, call_id))
        assert calls.get("fc-owner").state == calls.PENDING  # type: ignore[union-attr]
        assert calls.get("fc-unknown").state == calls.PENDING  # type: ignore[union-attr]  # an old row: pid only
        # The same pid, but a process that started an hour after the call's owner: the owner is gone.
        assert calls.get("fc-earlier").state == calls.LOST  # type: ignore[union-attr]
    finally:
        other.kill()
        other.wait()
    assert calls.get("fc-owner").state == calls.LOST  # type: ignore[union-attr]


def test_an_old_store_file_gets_the_owner_column(mwtui_home: Path) -> None:
    with db.transaction() as c:
        c.execute("DROP TABLE calls")
        c.execute("CREATE TABLE calls (id TEXT PRIMARY KEY, function TEXT NOT NULL, state TEXT NOT NULL, "
                  "payload BLOB, pid INTEGER, created REAL NOT NULL, finished REAL)")
        c.execute("INSERT INTO calls (id, function, state, pid, created) VALUES ('fc-old', 'f', 'done', 1, 0)")
    assert calls.get("fc-old").state == calls.DONE  # type: ignore[union-attr]
    calls.create("fc-new", "f")
    record = calls.get("fc-new")
    assert record is not None and record.state == calls.PENDING and record.pid == os.getpid()
    assert record.pid_started == pytest.approx(psutil.Process().create_time(), abs=calls.START_SLACK_S)


def test_generator_functions_refuse_spawn_and_map_as_modal_does(mwtui_home: Path) -> None:
    app = modal.App("gen-refusals")

    def gen(n: int) -> Iterator[int]:
        yield from range(n)

    g = app.function(serialized=True)(gen)
    with pytest.raises(InvalidError) as e:
        g.spawn(3)
    assert str(e.value) == "Cannot `spawn` a generator function."
    for how, call in (("map", lambda: g.map([1])), ("map", lambda: g.starmap([(1,)])),
                      ("map", lambda: g.for_each([1])), ("spawn_map", lambda: g.spawn_map([1]))):
        with pytest.raises(InvalidError) as e:
            call()
        assert str(e.value) == f"A generator function cannot be called with `.{how}(...)`."
    assert list(g.remote_gen(2)) == [0, 1]
    assert not hasattr(modal.FunctionCall, "get_gen")  # gone from Modal 1.x along with spawning generators
