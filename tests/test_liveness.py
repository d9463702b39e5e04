"""A replica whose event loop is blocked is seen (heartbeats over the readiness pipe), marked
`unresponsive`, left running as on Modal, and `ready` again once it answers."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from .conftest import start_serve, stop_serve
from .eventually import eventually

APP = """
import time
import modal

app = modal.App("block")


@app.function()
@modal.concurrent(max_inputs=4)
@modal.fastapi_endpoint()
async def stall(seconds: float = 0.0):
    time.sleep(seconds)  # blocks the event loop: what the liveness check is for
    return "ok"
"""


def test_a_blocked_event_loop_is_marked_and_forgiven(tmp_path: Path) -> None:
    app = tmp_path / "block.py"
    app.write_text(APP)
    served = start_serve(app)
    try:
        served.wait_running()

        def states() -> list[str]:
            return [r["state"] for r in served.by_name()["stall"]["replica_list"]]

        assert states() == ["ready"]
        answers: list[int] = []
        blocker = threading.Thread(
            target=lambda: answers.append(served.get("block-stall", "/", params={"seconds": "6"}).status_code))
        blocker.start()
        eventually(lambda: states() == ["unresponsive"], 20, lambda: f"the replica marked: {states()}")
        served.wait_for_line(r"stall\.0 .*replica stall\.0 has not answered for 3 s: its event loop is blocked")
        eventually(lambda: states() == ["ready"], 20, lambda: f"the replica ready again: {states()}")
        served.wait_for_line(r"replica stall\.0 answers again")
        blocker.join(30)
        assert answers == [200]  # left running: the blocked request itself still completes
        assert served.by_name()["stall"]["restarts"] == 0
        assert httpx.get(f"http://127.0.0.1:{served.port}/api/endpoints", timeout=10).status_code == 200
    finally:
        stop_serve(served)
