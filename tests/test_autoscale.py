"""Autoscaling end to end: a burst scales the pool out, idleness takes it to zero, a request wakes it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .conftest import Served, hammering, start_serve, stop_serve
from .eventually import eventually_async

CROWD_APP = """import modal
app = modal.App("crowd")

@app.function(scaledown_window=2)
@modal.fastapi_endpoint(method="POST")
def upload(item: dict):
    return {"keys": len(item)}

@app.function(max_containers=3)
@modal.fastapi_endpoint()
def capped():
    return "ok"
"""

APP = """import time
import modal
app = modal.App("auto")

@app.function(max_containers=4, scaledown_window=2)
@modal.fastapi_endpoint()
def work(s: float = 0.3):
    time.sleep(s)
    return {"slept": s}
"""


def _status(served: Served) -> dict:
    return served.by_name()["work"]


def _wait(served: Served, what: str, cond: Callable[[dict], object]) -> dict:
    return served.wait_status(what, lambda rows: cond(rows["work"]))["work"]


def test_burst_scales_out_idle_scales_to_zero_and_a_request_wakes_it(tmp_path: Path) -> None:
    app = tmp_path / "auto.py"
    app.write_text(APP)
    served = start_serve(app)
    try:
        served.wait_running()
        with hammering(served, "auto-work.localhost", clients=8) as codes:
            peak = _wait(served, "scaled out to 4", lambda e: e["replicas"]["ready"] == 4)
        assert peak["replicas"]["desired"] == 4  # max_containers caps the 8 in flight
        # Events read "HH:MM:SS <from> -> <to>: <reason>": one of them is the step to 4.
        assert any(" -> 4: " in ev for ev in peak["scale_events"]), peak["scale_events"]
        assert codes and set(codes) == {200}

        idle = _wait(served, "scaled to zero", lambda e: e["replicas"]["ready"] == 0 and e["state"] == "idle")
        assert idle["replicas"]["desired"] == 0
        assert any(" -> 0: " in ev for ev in idle["scale_events"]), idle["scale_events"]

        r = served.get("auto-work", params={"s": 0})  # wakes the pool and waits for it
        assert r.status_code == 200 and r.json() == {"slept": 0.0}
        assert _status(served)["replicas"]["ready"] >= 1
    finally:
        stop_serve(served)


def test_pinning_overrides_the_policy_until_released(tmp_path: Path) -> None:
    """The screen's +/- and a keys go through Engine.scale/unpin; here through the same engine
    calls, in process."""
    import asyncio

    from mwtui.engine.facade import Engine
    from mwtui.engine.loader import AppRef

    app = tmp_path / "auto.py"
    app.write_text(APP.replace("scaledown_window=2", "scaledown_window=2, min_containers=0"))

    async def scenario() -> None:
        engine = Engine(AppRef.parse(str(app)), port=0, reload=False, own_ports=False)
        await engine.start()
        try:
            assert await engine.wait_ready(30)
            engine.scale("work", 3)
            await eventually_async(lambda: engine.snapshot().endpoints[0].ready == 3, 30,
                                   lambda: f"3 ready: {engine.snapshot().endpoints[0]}")
            e = engine.snapshot().endpoints[0]
            assert e.ready == 3 and e.pinned == 3
            before = {r.pid for r in e.replicas}
            assert await engine.restart_endpoint("work") is None  # rolling: same count, all new
            e = engine.snapshot().endpoints[0]
            assert e.ready == 3 and not before & {r.pid for r in e.replicas if r.state == "ready"}
            await asyncio.sleep(3)  # longer than scaledown_window: pinned, so nothing moves
            assert engine.snapshot().endpoints[0].desired == 3
            engine.unpin("work")
            await eventually_async(lambda: engine.snapshot().endpoints[0].desired == 0, 30,
                                   lambda: f"desired back to 0: {engine.snapshot().endpoints[0]}")
            e = engine.snapshot().endpoints[0]
            assert e.desired == 0 and e.pinned is None
            assert any("pinned" in ev for ev in e.scale_events)
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_a_crowd_of_slow_uploads_scales_no_further_than_the_default_cap(tmp_path: Path) -> None:
    """The adversarial run: slow clients each pinning a replica, on an endpoint without max_containers,
    once scaled it to 49 replicas. Bodies over --buffer-body (64 KiB) still stream to a replica and
    so still pin one each; --max-replicas caps the pool, and the status says so and why."""
    import socket

    app = tmp_path / "crowd.py"
    app.write_text(CROWD_APP)
    served = start_serve(app, "--max-replicas", "2", "--no-reload")
    crowd: list[socket.socket] = []
    try:
        rows = served.wait_running()
        by_name = {e["name"]: e for e in rows}
        assert by_name["capped"]["replicas"]["max"] == 3  # an app's own max_containers wins
        assert by_name["capped"]["replicas"]["max_source"] == "max_containers"
        head = (b"POST / HTTP/1.1\r\nHost: crowd-upload.localhost\r\ncontent-type: application/json\r\n"
                b"Content-Length: 200000\r\n\r\n{\"a\": \"" + b"x" * 1000)
        for _ in range(6):  # then nothing more: each waits for a replica or holds one
            s = socket.create_connection(("127.0.0.1", served.port), timeout=30)
            s.sendall(head)
            crowd.append(s)
        most = 0

        def capped(e: dict) -> bool:
            nonlocal most
            most = max(most, e["replicas"]["desired"], e["replicas"]["ready"] + e["replicas"]["starting"])
            return e["inflight"] == 6 and any("cap --max-replicas=2" in ev for ev in e["scale_events"])

        e = _wait_upload(served, "the crowd's scale-out capped at 2", capped)
        assert e["replicas"]["max"] == 2 and e["replicas"]["max_source"] == "--max-replicas"
        e = _wait_upload(served, "two replicas ready", lambda e: capped(e) and e["replicas"]["ready"] == 2)
        assert e["replicas"]["desired"] == 2 and most == 2
    finally:
        for s in crowd:
            s.close()
        stop_serve(served)


def _wait_upload(served: Served, what: str, cond: Callable[[dict], bool]) -> dict:
    return served.wait_status(what, lambda rows: cond(rows["upload"]))["upload"]
