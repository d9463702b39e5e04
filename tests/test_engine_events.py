"""The engine's handling of what happens to it, with a real engine and gateway: access lines in the
endpoint's log (requests the gateway only counted, past its cap per tick, said as a count), and a bug
of ours in an event handler or a pool's loop reported without stopping what follows."""

from __future__ import annotations

from pathlib import Path

import httpx
from mwtui.engine.facade import Engine
from mwtui.engine.loader import AppRef
from mwtui.engine.supervisor import Event, LogLine

from .eventually import eventually_async

APP = str(Path(__file__).parent / "fixtures" / "tui_app.py")


async def test_listed_requests_and_counted_ones_reach_the_endpoints_log() -> None:
    engine = Engine(AppRef.parse(APP), port=0, own_ports=False, reload=False)
    await engine.start()
    try:
        assert await engine.wait_ready()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{engine.gateway.port}", timeout=30) as c:
            r = await c.get("/listed-here", headers={"host": "tuiapp-hello.localhost"})
        assert r.status_code in (200, 404)
        await eventually_async(lambda: any("GET /listed-here" in line.text for line in engine.logs["hello"]), 10,
                               lambda: f"the access line in hello's log: {[line.text for line in engine.logs['hello']]}")
        # What the gateway sends when a tick had more requests than it lists (ACCESS_CAP).
        engine._on_gateway_event({"type": "access", "lines": [], "dropped": {"hello": 1234, "nope": 1}})
        assert engine.logs["hello"][-1].text == "… and 1234 more requests"
        assert engine.logs["hello"][-1].endpoint == "hello"
        # An event we cannot handle (our bug) is reported in mwtui's own log; the next one is handled.
        engine._on_gateway_event({"type": "access", "lines": [{"endpoint": "hello"}]})
        assert "internal error handling the gateway's 'access' event" in engine.logs["mwtui"][-1].text
        engine._on_gateway_event({"type": "access", "lines": [], "dropped": {"hello": 7}})
        assert engine.logs["hello"][-1].text == "… and 7 more requests"
    finally:
        await engine.close()


async def test_a_failing_reconcile_pass_is_logged_and_the_pool_stays_supervised() -> None:
    engine = Engine(AppRef.parse(APP), port=0, own_ports=False, reload=False)
    await engine.start()
    try:
        assert await engine.wait_ready()
        pool = engine.pools["hello"]
        real = pool._reconcile
        calls = 0

        def broken_once() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug in reconcile")
            real()

        pool._reconcile = broken_once  # type: ignore[method-assign]
        engine.scale("hello", 2)  # wakes the loop: the first pass raises, the next one starts the replica
        await eventually_async(lambda: len(pool.ready_replicas()) >= 2, 30,
                               lambda: f"2 ready replicas: {[line.text for line in engine.logs['hello']]}")
        assert any("mwtui internal error" in line.text and "a bug in reconcile" in line.text
                   for line in engine.logs["hello"])
    finally:
        await engine.close()


async def test_a_subscriber_that_raises_is_dropped_and_the_engine_goes_on() -> None:
    engine = Engine(AppRef.parse(APP), port=0, own_ports=False, reload=False)
    await engine.start()
    try:
        assert await engine.wait_ready()
        seen: list[str] = []

        def broken(ev: Event) -> None:  # what `mwtui serve | head -2` printed with, once head had gone
            raise BrokenPipeError(32, "Broken pipe")

        engine.subscribe(broken)
        engine.subscribe(lambda ev: seen.append(ev.text) if isinstance(ev, LogLine) else None)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{engine.gateway.port}", timeout=30) as c:
            # The gateway's access lines arrive through its event reader, a task of the engine: the
            # second one arrives only if the first one's failing subscriber did not end that task.
            for path in ("/first", "/second"):
                await c.get(path, headers={"host": "tuiapp-hello.localhost"})
                # (B023: each wait ends within its own iteration, so `path` is the current one.)
                await eventually_async(lambda: any(f"GET {path}" in text for text in seen), 10,  # noqa: B023
                                       lambda: f"GET {path} seen by the subscriber: {seen}")  # noqa: B023
        assert broken not in engine.hub._listeners
        assert any("a subscriber to the engine's events failed" in line.text and "BrokenPipeError" in line.text
                   for line in engine.logs["mwtui"])
    finally:
        await engine.close()
