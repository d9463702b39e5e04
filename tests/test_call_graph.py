"""`FunctionCall.get_call_graph()` (issue 15, item 4): Modal's tree of inputs, `modal.call_graph`'s
InputInfo and InputStatus. The rebuilding of the tree from flat records is pure and tested as such; the
rest on a real `mwtui serve`, whose endpoints run in replicas of their own, so the graph is read by a
replica other than the one that made the calls."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from mwtui.engine import sdk as modal
from mwtui.engine.sdk import calls
from mwtui.engine.sdk.call_graph import (
    FunctionCallNode,
    InputInfo,
    InputNode,
    InputStatus,
    reconstruct_call_graph,
)
from mwtui.engine.store import db

from .conftest import FIXTURES, Served, start_serve, stop_serve
from .eventually import eventually

ULID = r"[0-9A-HJKMNP-TV-Z]{26}"


def test_input_status_has_modals_members_and_values() -> None:
    assert {s.name: int(s) for s in InputStatus} == {
        "PENDING": 0, "SUCCESS": 1, "FAILURE": 2, "INIT_FAILURE": 5, "TERMINATED": 3, "TIMEOUT": 4}
    assert InputStatus(99) is InputStatus.PENDING  # an unknown status reads as pending, as on Modal
    fields = list(InputInfo.__dataclass_fields__)
    assert fields == ["input_id", "function_call_id", "task_id", "status", "function_name", "module_name", "children"]


def test_reconstruct_nests_inputs_under_the_input_that_made_their_call() -> None:
    calls_ = [
        FunctionCallNode("fc-web", "", "web", "app"),
        FunctionCallNode("fc-a", "in-web", "a", "app"),
        FunctionCallNode("fc-b", "in-a", "b", "lib"),
        FunctionCallNode("fc-c", "in-web", "c", "app"),
        FunctionCallNode("fc-lost", "in-unknown", "d", "app"),
    ]
    inputs = [  # a child listed before its parent still lands under it
        InputNode("in-b", "fc-b", "ta-2", InputStatus.FAILURE),
        InputNode("in-web", "fc-web", "ta-1", InputStatus.PENDING),
        InputNode("in-a", "fc-a", "ta-1", InputStatus.SUCCESS),
        InputNode("in-c", "fc-c", "ta-1", InputStatus.TIMEOUT),
        InputNode("in-d", "fc-lost", "ta-1", InputStatus.SUCCESS),
    ]
    roots = reconstruct_call_graph(calls_, inputs)
    assert [r.input_id for r in roots] == ["in-web"]  # in-d's parent is unknown: left out, as on Modal
    web = roots[0]
    assert (web.function_call_id, web.task_id, web.status, web.function_name, web.module_name) == (
        "fc-web", "ta-1", InputStatus.PENDING, "web", "app")
    assert [c.input_id for c in web.children] == ["in-a", "in-c"]
    a = web.children[0]
    assert [(c.input_id, c.status, c.function_name, c.module_name) for c in a.children] == [
        ("in-b", InputStatus.FAILURE, "b", "lib")]
    assert reconstruct_call_graph([], []) == []


def test_calls_made_outside_any_input_are_roots(mwtui_home: Path) -> None:
    app = modal.App("graph-local")

    @app.function(serialized=True)
    def leaf(x: int) -> int:
        return x

    @app.function(serialized=True)
    def parent() -> str:
        return leaf.spawn(1).object_id

    call = parent.spawn()
    child_id = call.get(timeout=10)
    modal.FunctionCall.from_id(child_id).get(timeout=10)
    roots = modal.FunctionCall.from_id(child_id).get_call_graph()
    assert [(r.function_name, r.status) for r in roots] == [(parent.tag, InputStatus.SUCCESS)]
    assert [(c.function_call_id, c.function_name, c.status) for c in roots[0].children] == [
        (child_id, leaf.tag, InputStatus.SUCCESS)]
    assert roots == call.get_call_graph()  # the same tree from any call in it


def test_a_web_request_that_spawns_is_the_root_as_an_input_of_its_own(mwtui_home: Path) -> None:
    app = modal.App("graph-serving")

    @app.function(serialized=True)
    def leaf() -> str:
        return "ok"

    with calls.serving("web") as inp:
        assert modal.current_input_id() == inp.input_id and modal.current_function_call_id() == inp.function_call_id
        call = leaf.spawn()
        leaf.remote()
        pending_root = call.get_call_graph()[0]
    assert modal.current_input_id() is None
    assert (pending_root.input_id, pending_root.function_call_id) == (inp.input_id, inp.function_call_id)
    assert pending_root.status == InputStatus.PENDING  # it was still being served when asked
    call.get(timeout=10)
    root = call.get_call_graph()[0]
    assert root.status == InputStatus.SUCCESS
    assert [(c.function_name, c.status) for c in root.children] == [(leaf.tag, InputStatus.SUCCESS)] * 2


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("graph-home")
    s = start_serve(FIXTURES / "calls_graph.py", "--no-reload", env={"MWTUI_HOME": str(home)})
    try:
        s.wait_running()
        yield s
    finally:
        stop_serve(s)


def _graph(served: Served, call_id: str) -> list[dict]:
    response = served.get("calls-graph-graph", params={"call_id": call_id})
    assert response.status_code == 200, response.text
    return response.json()


def _wait_graph(served: Served, call_id: str, status: str, timeout: float = 30, *, root: bool = False) -> list[dict]:
    """The graph once its first child (or its root) has `status`."""
    seen: list[dict] = []

    def reached() -> list[dict] | None:
        seen[:] = graph = _graph(served, call_id)
        node = graph[0] if graph and root else (graph[0]["children"] or [None])[0] if graph else None
        return graph if node is not None and node["status"] == status else None

    return eventually(reached, timeout, lambda: f"{status}: {seen}")


def test_the_graph_shows_the_request_and_its_spawned_call_pending_then_success(served: Served) -> None:
    started = served.get("calls-graph-start", params={"flag": "one"})
    assert started.status_code == 200, started.text
    ids = started.json()
    graph = _graph(served, ids["call_id"])
    assert len(graph) == 1
    root = graph[0]
    # The root is the web request that spawned the call: the input its replica was serving.
    assert (root["input_id"], root["function_call_id"]) == (ids["input_id"], ids["function_call_id"])
    assert re.fullmatch(f"in-{ULID}", root["input_id"]) and re.fullmatch(f"fc-{ULID}", root["function_call_id"])
    assert (root["function_name"], root["module_name"], root["status"]) == ("start", "calls_graph", "SUCCESS")
    assert root["task_id"].startswith("ta-") and root["status_is_enum"]
    [child] = root["children"]
    assert child["function_call_id"] == ids["call_id"] and re.fullmatch(f"in-{ULID}", child["input_id"])
    assert (child["function_name"], child["module_name"], child["status"], child["status_value"]) == (
        "wait_for_flag", "calls_graph", "PENDING", 0)
    assert child["children"] == []
    # It runs in a replica of its own pool, which takes it over: not the task that spawned it.
    eventually(lambda: _graph(served, ids["call_id"])[0]["children"][0]["task_id"] not in ("", root["task_id"]),
               30, "the call taken over by its own pool's replica")
    assert served.get("calls-graph-release", params={"flag": "one"}).status_code == 200
    done = _wait_graph(served, ids["call_id"], "SUCCESS")
    assert done[0]["children"][0]["status_value"] == 1 and done[0]["input_id"] == root["input_id"]


def test_a_failing_call_shows_failure(served: Served) -> None:
    started = served.get("calls-graph-start", params={"failing": "true"})
    assert started.status_code == 200, started.text
    graph = _wait_graph(served, started.json()["call_id"], "FAILURE")
    child = graph[0]["children"][0]
    assert (child["function_name"], child["status_value"]) == ("fail", 2)


def test_a_request_stopped_at_its_timeout_shows_timeout(served: Served) -> None:
    assert served.get("calls-graph-overrun", params={"flag": "late"}).status_code == 504
    call_id = served.get("calls-graph-lookup", params={"key": "late-call"}).json()["value"]
    graph = _wait_graph(served, call_id, "TIMEOUT", root=True)  # the gateway's 504 may come first
    assert graph[0]["function_name"] == "overrun"
    assert graph[0]["children"][0]["status"] == "PENDING"  # spawned calls outlive the request, as on Modal
    served.get("calls-graph-release", params={"flag": "late"})
    _wait_graph(served, call_id, "SUCCESS")


def test_a_cancelled_call_shows_terminated(mwtui_home: Path) -> None:
    app = modal.App("graph-cancel")
    release = threading.Event()

    @app.function(serialized=True)
    def waits() -> None:
        release.wait(10)

    with calls.serving("web"):
        call = waits.spawn()
    try:
        call.cancel()
        [root] = call.get_call_graph()
        assert [(c.function_call_id, c.status) for c in root.children] == [(call.object_id, InputStatus.TERMINATED)]
    finally:
        release.set()


def test_an_unknown_call_id_has_no_graph(mwtui_home: Path) -> None:
    with pytest.raises(modal.exception.NotFoundError):
        modal.FunctionCall.from_id("fc-unknown").get_call_graph()


def test_remote_calls_are_inputs_too_and_nest_their_own_calls(mwtui_home: Path) -> None:
    app = modal.App("graph-remote")

    @app.function(serialized=True)
    def leaf() -> int:
        return 1

    @app.function(serialized=True)
    async def middle() -> str:
        return leaf.spawn().object_id

    async def handler() -> tuple[str, str]:
        with calls.serving("web"):
            return middle.remote(), await middle.remote.aio()  # sync .remote() from async code, and .aio

    first, second = asyncio.run(handler())
    for call_id in (first, second):
        modal.FunctionCall.from_id(call_id).get(timeout=10)
    [root] = modal.FunctionCall.from_id(first).get_call_graph()
    assert [(c.function_name, c.status) for c in root.children] == [(middle.tag, InputStatus.SUCCESS)] * 2
    assert [[g.function_call_id for g in c.children] for c in root.children] == [[first], [second]]


def test_an_old_store_file_gets_the_graph_columns(mwtui_home: Path) -> None:
    with db.transaction() as c:
        c.execute("DROP TABLE calls")
        c.execute("CREATE TABLE calls (id TEXT PRIMARY KEY, function TEXT NOT NULL, state TEXT NOT NULL, "
                  "payload BLOB, pid INTEGER, created REAL NOT NULL, finished REAL)")
        c.execute("INSERT INTO calls (id, function, state, pid, created) VALUES ('fc-old', 'f', 'done', 1, 0)")
    # A call recorded before calls had inputs has none to show (as on Modal, once its inputs are forgotten).
    assert modal.FunctionCall.from_id("fc-old").get_call_graph() == []
    app = modal.App("graph-old-file")

    @app.function(serialized=True)
    def leaf() -> int:
        return 1

    with calls.serving("web"):
        call = leaf.spawn()
    call.get(timeout=10)
    [root] = call.get_call_graph()
    assert [c.function_call_id for c in root.children] == [call.object_id]
