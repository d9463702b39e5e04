"""A function's `timeout` stops the work, not only the wait: past it the client gets 504, an async
handler is cancelled, and a replica whose sync handler (FastAPI's thread pool, a WSGI app under
gunicorn) runs on is replaced, so that nothing of the request runs on. A hung `@enter` fails the
replica after the function's `startup_timeout`, saying what it was still doing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from .conftest import Served, start_serve, stop_serve
from .eventually import eventually

pytestmark = pytest.mark.timeout(90)

APP = '''
import asyncio, os, time
import modal

app = modal.App("tmo")


@app.function(timeout=1)
@modal.fastapi_endpoint()
async def slow_async(path: str):
    try:
        await asyncio.sleep(3)
    except asyncio.CancelledError:
        open(path + ".cancelled", "w").close()
        raise
    open(path, "w").close()


@app.function(timeout=1)
@modal.fastapi_endpoint()
def slow_sync(path: str = ""):
    if path:
        time.sleep(3)
        open(path, "w").close()
    return os.getpid()


@app.function(timeout=1)
@modal.wsgi_app()
def slow_wsgi():
    def wsgi(environ, start_response):
        path = environ["QUERY_STRING"]
        if path:
            time.sleep(3)
            open(path, "w").close()
        start_response("200 OK", [("content-type", "text/plain")])
        return [str(os.getpid()).encode()]
    return wsgi


@app.cls(startup_timeout=1)
class Stuck:
    @modal.enter()
    def load(self):
        time.sleep(1000)

    @modal.fastapi_endpoint()
    def web(self):
        return "never"


# No startup_timeout: Modal's default is the function's `timeout`. The autoscaler wants no replica
# after scaledown_window without traffic, well before that.
@app.cls(timeout=4, scaledown_window=2)
class Unset:
    @modal.enter()
    def load(self):
        time.sleep(1000)

    @modal.fastapi_endpoint()
    def web(self):
        return "never"
'''


def dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("timeouts")
    app = folder / "tmo.py"
    app.write_text(APP)
    s = start_serve(app, "--no-reload", env={"MWTUI_HOME": str(folder / "home")})
    try:
        s.wait_status("the functions running", lambda rows: all(
            rows[n]["state"] == "running" for n in ("slow_async", "slow_sync", "slow_wsgi")))
        yield s
    finally:
        stop_serve(s)


def test_an_async_handler_past_its_timeout_is_cancelled(served: Served, tmp_path: Path) -> None:
    path = tmp_path / "written"
    r = served.get("tmo-slow-async", params={"path": str(path)})
    assert r.status_code == 504 and "timeout of 1s" in r.text
    # Cancelled where it waited: the line after the sleep can never run.
    eventually(lambda: (tmp_path / "written.cancelled").exists(), 20, "cancelled")
    assert not path.exists()
    # The same replica serves on.
    assert served.get("tmo-slow-async", params={"path": str(tmp_path / "again")}).status_code == 504


@pytest.mark.parametrize("label", ["tmo-slow-sync", "tmo-slow-wsgi"])
def test_a_sync_handler_past_its_timeout_ends_with_its_replica(served: Served, tmp_path: Path, label: str) -> None:
    before = int(served.get(label).text.strip('"'))
    path = tmp_path / "written"
    key = {"tmo-slow-sync": {"params": {"path": str(path)}}, "tmo-slow-wsgi": {"params": str(path)}}[label]
    r = served.get(label, **key)
    assert r.status_code == 504 and "timeout of 1s" in r.text
    # Its thread could not be stopped, so its process was: it can never write the file.
    eventually(lambda: dead(before), 20, "the process running the handler gone")
    assert not path.exists()
    after = int(served.get(label).text.strip('"'))  # a fresh replica serves
    assert after != before


def test_a_hung_enter_fails_the_replica_after_startup_timeout(served: Served) -> None:
    rows = served.wait_status("Stuck failed", lambda rows: rows["Stuck.web"]["state"] == "failed")
    error = rows["Stuck.web"]["last_error"]
    assert "class `Stuck` (endpoints `Stuck.web`) did not finish starting within its startup_timeout of 1s" in error
    assert "still running @modal.enter method `load`" in error


def test_a_hung_enter_without_startup_timeout_fails_after_timeout_not_silently(served: Served) -> None:
    rows = served.wait_status("Unset's startup failure shown", lambda rows: rows["Unset.web"]["last_error"])
    error = rows["Unset.web"]["last_error"]
    assert "did not finish starting within its startup_timeout of 4s" in error
    assert "still running @modal.enter method `load`" in error
