"""Autoscaling end to end: a burst scales the pool out, idleness takes it to zero, a request wakes it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .conftest import Served, hammering, start_serve, stop_serve

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
        assert any("-> 4" in ev or "-> " in ev for ev in peak["scale_events"])
        assert codes and set(codes) == {200}

        idle = _wait(served, "scaled to zero", lambda e: e["replicas"]["ready"] == 0 and e["state"] == "idle")
        assert idle["replicas"]["desired"] == 0
        assert any("-> 0" in ev for ev in idle["scale_events"])

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
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                e = engine.snapshot().endpoints[0]
                if e.ready == 3:
                    break
                await asyncio.sleep(0.05)
            e = engine.snapshot().endpoints[0]
            assert e.ready == 3 and e.pinned == 3
            before = {r.pid for r in e.replicas}
            assert await engine.restart_endpoint("work") is None  # rolling: same count, all new
            e = engine.snapshot().endpoints[0]
            assert e.ready == 3 and not before & {r.pid for r in e.replicas if r.state == "ready"}
            await asyncio.sleep(3)  # longer than scaledown_window: pinned, so nothing moves
            assert engine.snapshot().endpoints[0].desired == 3
            engine.unpin("work")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and engine.snapshot().endpoints[0].desired != 0:
                await asyncio.sleep(0.05)
            e = engine.snapshot().endpoints[0]
            assert e.desired == 0 and e.pinned is None
            assert any("pinned" in ev for ev in e.scale_events)
        finally:
            await engine.close()

    asyncio.run(scenario())
