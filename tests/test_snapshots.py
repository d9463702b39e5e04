"""Generation snapshots: the app is imported once per save, `@enter(snap=True)` runs once, replicas are
forked ready; scale-ups during a broken save fork the code that serves; an unsafe import falls back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from .conftest import Served, alive_pids, start_serve, stop_serve
from .eventually import eventually

COUNTED = '''import os, threading, time
import modal

def note(what):
    with open(os.environ["COUNT_FILE"], "a") as f:
        f.write(f"{{what}} {{os.getpid()}}\\n")

note("import")
{extra}
app = modal.App("snaps")


@app.cls(enable_memory_snapshot=True, min_containers={n})
class Model:
    @modal.enter(snap=True)
    def load(self):
        note("snap")
        self.weights = "v{v}"

    @modal.enter()
    def warm(self):
        note("enter")

    @modal.fastapi_endpoint()
    def predict(self):
        return {{"v": self.weights, "pid": os.getpid()}}
'''

BURSTY = '''import time
import modal

app = modal.App("burst")


@app.function(max_containers=3, scaledown_window=60)
@modal.fastapi_endpoint()
def slow():
    time.sleep(1.0)
    return {{"v": {v}}}
'''


def counts(path: Path) -> dict[str, int]:
    words = [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []
    return {w: words.count(w) for w in ("import", "snap", "enter")}


def snapshot_pids(served: Served) -> set[int]:
    """The snapshot processes (not the spare child each keeps forked ahead, which looks the same)."""
    found = set()
    for pid in served.tree_pids():
        try:
            if "mwtui.engine.worker.snapshot" in " ".join(psutil.Process(pid).cmdline()):
                found.add(pid)
        except psutil.Error:
            pass
    return {pid for pid in found if _parent(pid) not in found}


def _parent(pid: int) -> int | None:
    try:
        return psutil.Process(pid).ppid()
    except psutil.Error:
        return None


def serve_counted(tmp_path: Path, extra: str = "", n: int = 3) -> tuple[Served, Path, Path]:
    app, count = tmp_path / "snaps.py", tmp_path / "count.txt"
    app.write_text(COUNTED.format(v=1, extra=extra, n=n))
    served = start_serve(app, env={"COUNT_FILE": str(count)})
    served.wait_status(f"{n} replicas ready", lambda e: e["Model.predict"]["replicas"]["ready"] == n)
    return served, app, count


@pytest.mark.parametrize("n", [1, 3])
def test_one_import_per_generation_and_snap_enter_once(tmp_path: Path, n: int) -> None:
    served, app, count = serve_counted(tmp_path, n=n)
    try:
        # Discovery's import, the snapshot's, whatever the replica count; then @enter(snap=True) once,
        # the other @enter once per replica.
        assert counts(count) == {"import": 2, "snap": 1, "enter": n}
        status = served.by_name()["Model.predict"]
        assert status["snapshot"]["mode"] == "snapshot" and status["snapshot"]["snap_enters"] == 1
        pids = {served.get("snaps-model-predict").json()["pid"] for _ in range(6)}
        assert served.get("snaps-model-predict").json()["v"] == "v1"
        assert pids <= {r["pid"] for r in status["replica_list"]}
        first = snapshot_pids(served)
        assert len(first) == 1

        app.write_text(COUNTED.format(v=2, extra="", n=n))
        served.wait_status("the new version served", lambda e: e["Model.predict"]["generation"] == 2
                           and e["Model.predict"]["replicas"]["ready"] == n)
        assert served.get("snaps-model-predict").json()["v"] == "v2"
        assert counts(count) == {"import": 4, "snap": 2, "enter": 2 * n}
        # The old generation's snapshot exits with its last replica; the new one is its own process.
        eventually(lambda: len(snapshot_pids(served)) == 1 and not (snapshot_pids(served) & first) or None,
                   20, lambda: f"snapshots: {snapshot_pids(served)} (first: {first})")
    finally:
        stop_serve(served)


def test_a_thread_started_at_import_falls_back_to_fresh_imports(tmp_path: Path) -> None:
    thread = "threading.Thread(target=time.sleep, args=(3600,), name='poller', daemon=True).start()"
    served, _, count = serve_counted(tmp_path, extra=thread)
    try:
        status = served.by_name()["Model.predict"]["snapshot"]
        assert status["mode"] == "fresh import" and "1 thread(s)" in status["reason"] and "poller" in status["reason"]
        served.wait_for_line(r"forking after its import is unsafe: the app started 1 thread\(s\).*poller")
        # Discovery, the snapshot that gave up, and each replica's own import; @enter(snap=True) per replica.
        assert counts(count) == {"import": 5, "snap": 3, "enter": 3}
        assert served.get("snaps-model-predict").json()["v"] == "v1"
    finally:
        stop_serve(served)


def test_scale_up_during_a_broken_save_forks_the_serving_code(tmp_path: Path) -> None:
    app = tmp_path / "burst.py"
    app.write_text(BURSTY.format(v=1))
    served = start_serve(app)
    try:
        served.wait_running()
        app.write_text(BURSTY.format(v=1).replace("def slow():", "def slow(:"))
        served.wait_for_line(r"SyntaxError|invalid syntax|does not load|could not load")
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: served.get("burst-slow"), range(8)))
        assert [r.status_code for r in answers] == [200] * 8
        assert {r.json()["v"] for r in answers} == {1}
        # It scaled out while the file on disk does not even parse, and every new replica serves.
        status = served.wait_status("3 ready", lambda e: e["slow"]["replicas"]["ready"] == 3)["slow"]
        assert status["generation"] == 1 and status["restarts"] == 0
    finally:
        stop_serve(served)


def test_nothing_is_left_after_sigkill(tmp_path: Path) -> None:
    served, _, _ = serve_counted(tmp_path)
    pids = served.tree_pids()
    assert snapshot_pids(served)
    os.kill(served.proc.pid, signal.SIGKILL)
    served.proc.wait(10)
    eventually(lambda: not alive_pids(pids) or None, 20, lambda: f"still running: {alive_pids(pids)}")


def test_what_makes_a_fork_unsafe_is_named() -> None:
    """In a fresh interpreter (pytest's own threads would count): nothing, then a thread, then a loop."""
    probe = (
        "import asyncio, threading, time\n"
        "from mwtui.engine.worker.snapshot import unsafe_reason\n"
        "print(unsafe_reason())\n"
        "asyncio.set_event_loop(asyncio.new_event_loop())\n"
        "print(unsafe_reason())\n"
        "threading.Thread(target=time.sleep, args=(5,), name='poller', daemon=True).start()\n"
        "print(unsafe_reason())\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        "None",
        "the app made an event loop while it was imported (its file descriptors would be shared)",
        "the app started 1 thread(s) while it was imported (poller)",
    ]
