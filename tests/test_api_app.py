"""`/api/app` and `mwtui list --json`: whether the app loads, as data a program can read, also for a
file that is broken when mwtui starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import start_serve, stop_serve
from .eventually import eventually

GOOD = """import modal
app = modal.App("apiapp")

@app.function()
@modal.fastapi_endpoint()
def hello():
    return {"ok": True}
"""
BROKEN = GOOD.replace("def hello():", "def hello(:")  # a syntax error on line 6


def _app(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/api/app", timeout=10).json()


def test_api_app_and_the_index_show_a_file_broken_at_start_then_fixed(tmp_path: Path) -> None:
    app = tmp_path / "apiapp.py"
    app.write_text(BROKEN)
    served = start_serve(app, env={"MWTUI_HOME": str(tmp_path / "home")})
    try:
        got = eventually(lambda: _app(served.port).get("load_error") and _app(served.port), 30,
                         "the load error in /api/app")
        err = got["load_error"]
        assert err["file"].endswith("apiapp.py") and err["line"] == 6, err
        assert "SyntaxError" in err["message"] or "invalid syntax" in err["message"], err
        assert got["reload"]["state"] == "error" and got["endpoints"] == 0
        index = httpx.get(f"http://127.0.0.1:{served.port}/", timeout=10).text
        assert "apiapp.py:6 does not load" in index and "invalid syntax" in index
        app.write_text(GOOD)
        fixed = eventually(lambda: _app(served.port).get("load_error") is None and _app(served.port), 30,
                           "/api/app without a load error")
        assert fixed["name"] == "apiapp" and fixed["load_error"] is None and fixed["endpoints"] == 1
        assert "does not load" not in httpx.get(f"http://127.0.0.1:{served.port}/", timeout=10).text
        # Control pages answer only to a loopback Host
        r = httpx.get(f"http://127.0.0.1:{served.port}/api/app", headers={"Host": "evil.example"}, timeout=10)
        assert r.status_code == 404 and "apiapp" not in r.text
    finally:
        stop_serve(served)


def test_list_json_of_a_broken_file_prints_the_error_as_json(tmp_path: Path) -> None:
    app = tmp_path / "apiapp.py"
    app.write_text(BROKEN)
    done = subprocess.run([sys.executable, "-m", "mwtui.tui.cli", "list", str(app), "--json"],
                          capture_output=True, text=True, timeout=60, env={"MWTUI_HOME": str(tmp_path / "h"),
                                                                           "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    err = json.loads(done.stdout)["error"]
    assert err["file"].endswith("apiapp.py") and err["line"] == 6 and err["message"]
    assert "apiapp.py" in done.stderr  # the person's text still goes to stderr


def test_api_app_and_the_header_say_which_mode_replicas_run_in(tmp_path: Path) -> None:
    import os

    from mwtui.engine.facade import Snapshot
    from mwtui.tui.widgets.app_header import header_text

    app = tmp_path / "apiapp.py"
    app.write_text(GOOD)
    for extra, want in ((("--no-container",), "host"), ((), "container" if os.geteuid() == 0 else None)):
        served = start_serve(app, *extra, env={"MWTUI_HOME": str(tmp_path / "home")})
        try:
            got = eventually(lambda: _app(served.port).get("name") and _app(served.port), 30,  # noqa: B023
                             "the app's name in /api/app")
            if want is not None:
                assert got["mode"] == want, got
            assert (got["mode_why"] == "--no-container") == bool(extra), got
        finally:
            stop_serve(served)
    snap = Snapshot("a", "/x/a.py", "http://localhost:1", mode="host", mode_why="--no-container")
    assert header_text(snap, "/x/a.py").plain.endswith("· host mode")
    assert "container view" in header_text(Snapshot("a", "/x/a.py", "http://localhost:1", mode="container"),
                                            "/x/a.py").plain


def test_the_header_says_when_web_servers_share_the_hosts_network() -> None:
    from dataclasses import replace

    from mwtui.engine.facade import EndpointStatus, Snapshot
    from mwtui.engine.manifest import EndpointSpec
    from mwtui.tui.widgets.app_header import header_text

    spec = EndpointSpec(name="srv", pool="srv", kind="web_server", label="a-srv", port=8000)
    row = EndpointStatus(spec, "http://a-srv.localhost:1", None, "running", 1, 0, 1, 0)
    snap = Snapshot("a", "/x/a.py", "http://localhost:1", endpoints=(row,), mode="container", network="host")
    assert header_text(snap, "/x/a.py").plain.endswith("· container view (host network)")
    assert "(host network)" not in header_text(replace(snap, network="own"), "/x/a.py").plain
    other = replace(row, spec=replace(spec, kind="asgi", port=None))
    assert "(host network)" not in header_text(replace(snap, endpoints=(other,)), "/x/a.py").plain
