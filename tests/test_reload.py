"""Hot reload under a steady load: every save served, a broken save costs nothing, no request fails."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from .conftest import Served, start_serve, stop_serve
from .eventually import eventually

GOOD = """import modal
app = modal.App("rl")

@app.function()
@modal.fastapi_endpoint()
def api():
    return {{"v": {v}}}

@app.function()
@modal.wsgi_app()
def flask():
    from flask import Flask
    web = Flask(__name__)

    @web.route("/")
    def index():
        return {{"v": {v}}}

    return web
"""
SYNTAX_ERROR = GOOD.replace("def api():", "def api(:")
RAISES_AT_IMPORT = GOOD + "\nraise RuntimeError('half-finished edit')\n"
FACTORY_RAISES = GOOD.replace("    web = Flask(__name__)", "    raise ValueError('factory broke')")


class Load:
    """Clients on keep-alive connections, hammering both endpoints until stopped."""

    def __init__(self, served: Served, threads: int = 4) -> None:
        self.served = served
        self.results: list[tuple[str, int, object]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(label,), daemon=True)
            for i in range(threads)
            for label in (("rl-api", "rl-flask")[i % 2],)
        ]

    def _run(self, label: str) -> None:
        with self.served.client(f"{label}.localhost") as c:
            while not self._stop.is_set():
                try:
                    r = c.get("/")
                    v = r.json().get("v") if r.status_code == 200 else r.text
                    with self._lock:
                        self.results.append((label, r.status_code, v))
                except httpx.HTTPError as e:
                    with self._lock:
                        self.failures.append(f"{label}: {e!r}")

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def latest(self, label: str) -> object:
        with self._lock:
            return next((v for lab, _, v in reversed(self.results) if lab == label), None)

    def wait_version(self, v: int, timeout: float = 60.0) -> None:
        eventually(lambda: self.latest("rl-api") == v and self.latest("rl-flask") == v, timeout,
                   lambda: f"version {v} served; latest {self.latest('rl-api')}, {self.latest('rl-flask')}")


def _wait_error(served: Served, needle: str, name: str = "api", timeout: float = 60.0) -> None:
    served.wait_status(f"{needle!r} reported for {name}",
                       lambda rows: needle in (rows.get(name, {}).get("last_error") or ""), timeout)


def test_saves_under_load_lose_no_request(tmp_path: Path) -> None:
    app = tmp_path / "rl.py"
    app.write_text(GOOD.format(v=1))
    served = start_serve(app)
    try:
        served.wait_running()
        with Load(served) as load:
            load.wait_version(1)
            for v in (2, 3):
                app.write_text(GOOD.format(v=v))
                load.wait_version(v)

            # Broken edits: the last good version keeps serving and the error is reported.
            for broken, needle, name in (
                (SYNTAX_ERROR, "syntax", "api"),
                (RAISES_AT_IMPORT, "half-finished edit", "api"),
                (FACTORY_RAISES.format(v=4), "factory broke", "flask"),
            ):
                app.write_text(broken)
                _wait_error(served, needle, name)
                assert load.latest("rl-api") in (3, 4) and load.latest("rl-flask") == 3
                served.wait_for_line(r"previous version|kept their previous version")

            app.write_text(GOOD.format(v=5))  # the next good save recovers by itself
            load.wait_version(5)
            status = {e["name"]: e for e in served.status()}
            assert status["api"]["last_error"] is None and status["flask"]["last_error"] is None
            assert status["api"]["generation"] > 1
        statuses = Counter(code for _, code, _ in load.results)
        assert load.failures == []
        assert set(statuses) == {200}, statuses
        assert len(load.results) > 100
    finally:
        stop_serve(served)


def test_no_reload_flag(tmp_path: Path) -> None:
    app = tmp_path / "rl.py"
    app.write_text(GOOD.format(v=1))
    served = start_serve(app, "--no-reload")
    try:
        served.wait_running()
        app.write_text(GOOD.format(v=2))
        # Nothing to wait for when nothing happens: check a reload is not even started, after a
        # request that proves the engine has been running since the save.
        time.sleep(0.5)
        assert served.get("rl-api").json() == {"v": 1}
        assert not any("reloading" in line for line in served.lines)
    finally:
        stop_serve(served)


def test_a_file_broken_at_start_comes_up_on_the_first_good_save(tmp_path: Path) -> None:
    app = tmp_path / "rl.py"
    app.write_text(SYNTAX_ERROR)
    served = start_serve(app)
    try:
        served.wait_for_line("waiting for a save that loads")
        assert any("rl.py:6" in line and "syntax" in line for line in served.lines)
        assert served.status() == []
        app.write_text(GOOD.format(v=7))
        served.wait_for_line(r"=> http://rl-api\.localhost")
        served.wait_running()
        assert served.get("rl-api").json() == {"v": 7}
    finally:
        stop_serve(served)


IMPORTS = """import sys
sys.path.insert(0, {lib!r})
{top}
import modal
app = modal.App("rl")

@app.function()
@modal.fastapi_endpoint()
def api():
    {body}
"""


def test_a_folder_the_app_starts_importing_from_is_watched_from_then_on(tmp_path: Path) -> None:
    app_dir, lib = tmp_path / "app", tmp_path / "lib"  # lib is outside the app's folder
    app_dir.mkdir()
    lib.mkdir()
    (lib / "helper.py").write_text("V = 1\n")
    app = app_dir / "rl.py"
    app.write_text(IMPORTS.format(lib=str(lib), top="", body='return {"v": 0}'))
    served = start_serve(app)
    try:
        served.wait_running()
        app.write_text(IMPORTS.format(lib=str(lib), top="import helper", body='return {"v": helper.V}'))
        served.wait_for_line(r"now also watching .*lib")
        eventually(lambda: served.get("rl-api").json().get("v") == 1, 30, lambda: f"v=1 served: {served.lines[-5:]}")
        (lib / "helper.py").write_text("V = 2\n")  # not in the app's folder: seen only if watched
        eventually(lambda: served.get("rl-api").json().get("v") == 2, 30, lambda: f"v=2 served: {served.lines[-5:]}")
    finally:
        assert stop_serve(served) == 0
