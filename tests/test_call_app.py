"""A pool's call app under real uvicorn on a Unix socket: what a caller sends and gets back, as Modal's
client handles it (results, exceptions with their type and the callee's traceback, what cannot travel)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mwtui.engine.loader import install_sdk
from mwtui.engine.sdk.call_client import call as call_through
from mwtui.engine.sdk.call_wire import CONTENT_TYPE, REMOTE_TRACEBACK, Call, decode_reply, encode_call
from mwtui.engine.sdk.exception import ExecutionError, FunctionTimeoutError, RemoteError, SerializationError

from .eventually import eventually
from .fixtures.gateway_harness import Upstream, running_gateway

SERVER = '''
import asyncio, threading, time
from mwtui.engine.loader import install_sdk
from mwtui.engine.worker.call_app import CallApp

install_sdk()  # as in a replica: Modal's exceptions are `modal.exception`'s


class ServerOnlyError(Exception):
    """Defined in a module the caller cannot import."""


def square(x, f=None):
    return (f or (lambda v: v * v))(x)


def fails(message):
    raise ValueError(message)


def server_only():
    raise ServerOnlyError("only here")


def holds_a_lock():
    error = RuntimeError("with a lock")
    error.lock = threading.Lock()
    raise error


def returns_a_lock():
    return threading.Lock()


def slow(seconds):
    start = time.monotonic()  # CLOCK_MONOTONIC: the same clock in the caller's process
    time.sleep(seconds)
    return threading.current_thread().name, start, time.monotonic()


async def twice(x):
    await asyncio.sleep(0)
    return 2 * x


app = CallApp({None: square, "fails": fails, "server_only": server_only, "holds_a_lock": holds_a_lock,
               "returns_a_lock": returns_a_lock, "slow": slow, "twice": twice}, "calls", max_inputs=4)
'''


@pytest.fixture(scope="module")
def callee(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    folder = tmp_path_factory.mktemp("calls")
    (folder / "callee.py").write_text(SERVER)
    sock = folder / "calls.sock"
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "callee:app", "--app-dir", str(folder),
                             "--uds", str(sock), "--log-level", "warning", "--lifespan", "on"])
    try:
        eventually(lambda: sock.exists() or None, 20, "uvicorn on its socket")
        yield Upstream(f"unix:{sock}", proc)  # type: ignore[arg-type]
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def replica(callee: Upstream) -> Iterator[httpx.Client]:
    """Straight to the callee's socket."""
    with callee.client() as client:
        yield client


install_sdk()  # as in a calling replica: what comes back as `modal.exception.X` is ours


def call(client: httpx.Client, method: str | None, *args: object, **kwargs: object) -> object:
    r = client.post("/", content=encode_call(Call(method, args, kwargs)), headers={"content-type": CONTENT_TYPE})
    assert r.status_code == 200, r.text
    return decode_reply(r.content)


def test_a_result_comes_back_and_a_lambda_goes_there(replica: httpx.Client) -> None:
    assert call(replica, None, 7) == 49
    assert call(replica, None, 3, f=lambda v: v + 100) == 103  # pickled by value, as cloudpickle does
    assert call(replica, "twice", 21) == 42  # async, on the replica's loop


def test_an_exception_is_raised_with_its_type_and_the_callees_traceback(replica: httpx.Client) -> None:
    with pytest.raises(ValueError, match="boom") as info:
        call(replica, "fails", "boom")
    notes = "".join(getattr(info.value, "__notes__", []))
    assert notes.startswith(REMOTE_TRACEBACK) and "in fails" in notes and "ValueError: boom" in notes
    assert "call_app.py" not in notes and "concurrent/futures" not in notes  # the user's frames only


def test_what_cannot_travel_reads_as_modal_says_it(replica: httpx.Client) -> None:
    with pytest.raises(ExecutionError, match="Could not deserialize remote exception due to local error") as info:
        call(replica, "server_only")
    assert "No module named 'callee'" in str(info.value) and "ServerOnlyError: only here" in str(info.value)
    with pytest.raises(RemoteError, match=r"RuntimeError\('with a lock'\)"):
        call(replica, "holds_a_lock")
    with pytest.raises(SerializationError, match="Failed to serialize the function's result"):
        call(replica, "returns_a_lock")


def at_once(runs: list[Any]) -> int:
    """The most of the (name, start, end) runs that overlapped."""
    return max(sum(1 for _, s, e in runs if s <= start < e) for _, start, _ in runs)


def test_synchronous_calls_run_side_by_side(replica: httpx.Client) -> None:
    runs: list[Any] = []
    threads = [threading.Thread(target=lambda: runs.append(call(replica, "slow", 0.3))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(runs) == 4 and at_once(runs) == 4 and all(n.startswith("call-calls") for n, _, _ in runs), runs


def test_what_is_not_a_call_is_told_so(replica: httpx.Client) -> None:
    # Only a call's own content type: a browser cannot send it to another site without asking first.
    assert replica.post("/", content=b"hello", headers={"content-type": "text/plain"}).status_code == 415
    call_type = {"content-type": CONTENT_TYPE}
    assert replica.post("/", content=b"hello", headers=call_type).status_code == 400
    assert "not a call" in replica.post("/", content=b"hello", headers=call_type).text
    r = replica.post("/", content=encode_call(Call("nope", (), {})), headers=call_type)
    assert r.status_code == 404 and "no method `nope`" in r.text
    assert replica.get("/").status_code == 405


# --- through the gateway, as a replica calls another pool ------------------------------------------


def test_calls_through_the_gateway_wait_their_turn_at_max_inputs(callee: Upstream) -> None:
    with running_gateway(upstreams=[callee], max_inputs=2) as g:
        where = ("127.0.0.1", g.port)
        assert call_through("demo-hello.localhost", Call(None, (9,), {}), address=where) == 81
        with pytest.raises(ValueError, match="through"):
            call_through("demo-hello.localhost", Call("fails", ("through",), {}), address=where)
        # Six calls of 0.3 s from six threads: the gateway lets two at a time through (max_inputs=2),
        # the others wait their turn; none fails.
        runs: list[Any] = []
        threads = [threading.Thread(target=lambda: runs.append(call_through(
            "demo-hello.localhost", Call("slow", (0.3,), {}), address=where))) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert len(runs) == 6 and at_once(runs) == 2, runs


def test_a_call_past_its_timeout_is_modals_function_timeout(callee: Upstream) -> None:
    with running_gateway(upstreams=[callee], timeout=1) as g:
        with pytest.raises(FunctionTimeoutError, match="hit its timeout of 1s"):
            call_through("demo-hello.localhost", Call("slow", (3,), {}), address=("127.0.0.1", g.port), timeout_s=1)


def test_a_stopped_pool_says_so(callee: Upstream) -> None:
    with running_gateway(upstreams=[], state="stopped") as g:
        with pytest.raises(RemoteError, match="stopped"):
            call_through("demo-hello.localhost", Call(None, (1,), {}), address=("127.0.0.1", g.port))
