"""Every function and class of an app is a pool, and `.remote()`, `.map()`, `.spawn()` and
`Cls().method.remote()` from a web endpoint go to it through the gateway: its own process, secrets,
`@enter` state, timeout and retries; its row in /api/endpoints (kind, no URL, callers, replicas).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import Served, start_serve, stop_serve
from .eventually import eventually

pytestmark = pytest.mark.timeout(120)

APP = '''
import os, time
import modal

app = modal.App("calls")


@app.function(secrets=[modal.Secret.from_dict({"ONLY_HERE": "sesame"})])
def holder(x):
    return {"pid": os.getpid(), "secret": os.environ.get("ONLY_HERE"), "x": x}


@app.function(max_containers=4)
def nap(x):
    start = time.monotonic()
    time.sleep(0.5)
    return {"x": x, "pid": os.getpid(), "start": start, "end": time.monotonic()}


@app.function(timeout=1)
def too_slow():
    time.sleep(3)


@app.function(retries=modal.Retries(max_retries=2, initial_delay=0.0))
def flaky(path):
    with open(path, "a") as f:
        f.write("x")
    if len(open(path).read()) < 3:
        raise RuntimeError("not yet")
    return len(open(path).read())


@app.function()
def fails():
    raise KeyError("no such thing")


@app.function()
def slow(seconds):
    time.sleep(seconds)
    return {"slept": seconds, "pid": os.getpid()}


@app.function()
def spawn_and_die():
    """Spawns a call, then its replica dies at once: the call goes on in its own pool."""
    import signal, threading

    call_id = slow.spawn(1.0).object_id
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGKILL)).start()
    return call_id


@app.function()
async def long_nap(path):
    import asyncio

    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        open(path, "w").close()
        raise


@app.function()
def cancel_call(call_id):
    modal.FunctionCall.from_id(call_id).cancel()


@app.function()
def fetch(call_id):
    return {"pid": os.getpid(), "result": modal.FunctionCall.from_id(call_id).get(timeout=30)}


@app.function()
def never_called():
    return 1


@app.function(schedule=modal.Period(seconds=1))
def tick():
    with open(os.environ["TICKS"], "a") as f:
        f.write(f"{os.getpid()} ")


@app.function()
@modal.batched(max_batch_size=4, wait_ms=200)
def doubled(xs: list[int]) -> list[dict]:
    return [{"y": 2 * x, "batch": len(xs)} for x in xs]


@app.cls(scaledown_window=2)
class Model:
    @modal.enter()
    def load(self):
        self.loaded = getattr(self, "loaded", 0) + 1

    @modal.exit()
    def unload(self):
        with open(os.environ["TICKS"] + ".exits", "a") as f:
            f.write(f"{os.getpid()} ")

    @modal.method()
    def predict(self, x):
        return {"y": x * 2, "loaded": self.loaded, "pid": os.getpid()}


@app.function()
@modal.fastapi_endpoint()
def api(what: str, arg: str = ""):
    if what == "secret":
        return {"pid": os.getpid(), "secret": os.environ.get("ONLY_HERE"), "callee": holder.remote(3)}
    if what == "map":
        return list(nap.map(range(4)))
    if what == "timeout":
        try:
            too_slow.remote()
        except modal.exception.FunctionTimeoutError as e:
            return {"type": type(e).__name__, "message": str(e)}
    if what == "retries":
        return flaky.remote(arg)
    if what == "raises":
        try:
            fails.remote()
        except KeyError as e:
            return {"type": type(e).__name__, "args": list(e.args), "notes": getattr(e, "__notes__", [])}
    if what == "model":
        m = Model()
        return [m.predict.remote(i) for i in range(3)]
    if what == "spawn":
        return {"id": holder.spawn(5).object_id, "pid": os.getpid()}
    if what == "fetch":
        return fetch.remote(arg)
    if what == "batched":
        return list(doubled.map(range(4)))
    if what == "spawn-and-die":
        return spawn_and_die.remote()
    if what == "spawn-nap":
        return long_nap.spawn(arg).object_id
    if what == "cancel":
        cancel_call.remote(arg)  # from another pool's replica
        try:
            modal.FunctionCall.from_id(arg).get(timeout=20)
        except Exception as e:
            return {"type": type(e).__name__, "message": str(e)}
    return None
'''


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("calls")
    app = folder / "calls.py"
    app.write_text(APP)
    s = start_serve(app, "--no-reload", env={"MWTUI_HOME": str(folder / "home"), "TICKS": str(folder / "ticks")})
    s.ticks = folder / "ticks"  # type: ignore[attr-defined]
    try:
        s.wait_status("the web endpoint running", lambda rows: rows["api"]["state"] == "running")
        yield s
    finally:
        stop_serve(s)


def api(served: Served, what: str, arg: str = "") -> object:
    r = served.get("calls-api", "/", params={"what": what, "arg": arg})
    assert r.status_code == 200, r.text
    return r.json()


def test_functions_are_pools_without_a_url_and_start_at_zero(served: Served) -> None:
    rows = served.by_name()
    assert rows["holder"]["kind"] == "function" and rows["Model"]["kind"] == "cls"
    never = rows["never_called"]
    assert never["url"] is None and never["own_url"] is None
    assert never["replicas"]["desired"] == 0 and never["replicas"]["min"] == 0 and never["state"] == "idle"
    assert never["app"] == "calls"
    # The call path is not for people: no label page lists it, and a stranger's call is refused.
    index = httpx.get(f"http://127.0.0.1:{served.port}/nowhere", headers={"Host": "x.localhost"}).text
    assert "never_called" not in index
    r = served.post("never-called.calls.call", "/", content=b"x", headers={"content-type": "application/x-mwtui-call"})
    assert r.status_code == 403, r.text


def test_a_remote_call_runs_in_the_callees_process_with_its_own_secret(served: Served) -> None:
    out = api(served, "secret")
    assert out["secret"] is None  # the caller never sees the callee's secret
    assert out["callee"]["secret"] == "sesame" and out["callee"]["x"] == 3
    assert out["callee"]["pid"] != out["pid"]
    rows = served.wait_status("holder's caller listed", lambda rows: "api" in rows["holder"]["callers"])
    assert rows["holder"]["replicas"]["ready"] == 1 and rows["holder"]["requests_total"] >= 1


def test_a_class_enters_once_across_calls_and_exits_when_its_replica_stops(served: Served) -> None:
    results = api(served, "model")
    assert [r["y"] for r in results] == [0, 2, 4]
    assert {r["loaded"] for r in results} == {1} and len({r["pid"] for r in results}) == 1
    # Idle for its scaledown_window (2 s), the pool scales to zero: the replica runs @exit on its way out.
    exits: Path = Path(str(served.ticks) + ".exits")  # type: ignore[attr-defined]
    eventually(lambda: exits.exists() and str(results[0]["pid"]) in exits.read_text().split(), 30, "@exit to run")


def test_map_spreads_inputs_over_replicas_that_run_at_once(served: Served) -> None:
    results = api(served, "map")
    assert [r["x"] for r in results] == [0, 1, 2, 3]
    assert len({r["pid"] for r in results}) == 4  # max_containers=4, one input each (max_inputs=1)
    # All four ran side by side: each started before any of them ended.
    assert max(r["start"] for r in results) < min(r["end"] for r in results)


def test_a_call_past_its_timeout_raises_function_timeout_error(served: Served) -> None:
    out = api(served, "timeout")
    assert out == {"type": "FunctionTimeoutError", "message": "Task's current input hit its timeout of 1s"}


def test_retries_send_a_failed_call_again(served: Served, tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    assert api(served, "retries", str(attempts)) == 3  # two failures, then the third attempt returns


def test_an_exception_keeps_its_type_and_the_callees_traceback(served: Served) -> None:
    out = api(served, "raises")
    assert out["type"] == "KeyError" and out["args"] == ["no such thing"]
    assert any('raise KeyError("no such thing")' in note for note in out["notes"])


def test_a_spawned_call_is_found_from_another_pools_replica(served: Served) -> None:
    spawned = api(served, "spawn")
    fetched = api(served, "fetch", spawned["id"])
    assert fetched["result"]["x"] == 5 and fetched["result"]["secret"] == "sesame"
    assert fetched["pid"] != spawned["pid"]


def test_a_scheduled_function_runs_on_its_schedule(served: Served) -> None:
    ticks: Path = served.ticks  # type: ignore[attr-defined]
    eventually(lambda: ticks.exists() and len(ticks.read_text().split()) >= 2, 20, "two scheduled runs")
    row = served.by_name()["tick"]
    assert row["schedule"] == {"period_s": 1.0} and "schedule" in row["callers"]
    assert row["next_run"] is not None
    assert any("tick: runs every 1 s" in line for line in served.lines)


def test_a_spawned_call_outlives_the_replica_that_spawned_it(served: Served) -> None:
    call_id = api(served, "spawn-and-die")
    fetched = api(served, "fetch", call_id)  # waits for the call: it runs on in slow's own replica
    assert fetched["result"]["slept"] == 1.0
    rows = served.by_name()
    assert rows["spawn_and_die"]["restarts"] >= 1 or rows["spawn_and_die"]["last_error"] is not None


def test_batched_calls_arrive_in_one_batch(served: Served) -> None:
    results = api(served, "batched")
    assert [r["y"] for r in results] == [0, 2, 4, 6]
    assert {r["batch"] for r in results} == {4}  # four calls within wait_ms: one call of the function
    assert served.by_name()["doubled"]["replicas"]["ready"] == 1


def test_a_spawned_call_cancelled_from_another_replica_stops(served: Served, tmp_path: Path) -> None:
    marker = tmp_path / "cancelled"
    call_id = api(served, "spawn-nap", str(marker))
    out = api(served, "cancel", call_id)
    assert out == {"type": "RemoteError", "message": f"{call_id} was cancelled"}
    eventually(marker.exists, 10, "the coroutine to be cancelled in its own pool's replica")
