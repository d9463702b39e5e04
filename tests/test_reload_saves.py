"""Saves, end to end: a person's saves always reload, quickly; a file the app writes itself at import is
silenced, says so, and is watched again when a person saves it; a save stops an import still stuck."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import psutil

from .conftest import Served, start_serve, stop_serve
from .eventually import eventually

APP = """import modal
app = modal.App("saves")

@app.function()
@modal.fastapi_endpoint()
def v():
    return {{"v": {v}}}
"""

WRITER = """import os, time
import modal

# Generated at import, differently each time: every start of the app rewrites it.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "generated.py"), "w") as f:
    f.write(f"STAMP = {time.time_ns()}\\n")

app = modal.App("writer")

@app.function()
@modal.fastapi_endpoint()
def v():
    return {"v": 1}
"""


def _wait_version(served: Served, label: str, want: int, timeout: float = 30.0) -> None:
    """Until `label` serves version `want`; fails with the last version seen and mwtui's output."""

    def served_version() -> int | None:
        r = served.get(label)
        return r.json().get("v") if r.status_code == 200 else None

    eventually(lambda: served_version() == want, timeout,
               lambda: f"version {want} served:\n" + "\n".join(served.lines))


def test_ten_saves_a_second_apart_all_reload(tmp_path: Path) -> None:
    app = tmp_path / "saves.py"
    app.write_text(APP.format(v=0))
    served = start_serve(app, env={"MWTUI_HOME": str(tmp_path / "home")})
    try:
        served.wait_running()
        for v in range(1, 11):  # an editor's autosave: each save lands during or just after a reload
            time.sleep(0.9)
            app.write_text(APP.format(v=v))
        _wait_version(served, "saves-v", 10)
        assert not any("silenced" in line or "no longer" in line for line in served.lines), served.lines
    finally:
        stop_serve(served)


def _wait_after(served: Served, mark: int, pattern: str, timeout: float = 30.0) -> int:
    """Until a line after the first `mark` ones matches; returns its index."""
    rx = re.compile(pattern)

    def found() -> tuple[int] | None:  # a tuple: index 0 is a match too, but a falsy value
        return next(((i,) for i in range(mark, len(served.lines)) if rx.search(served.lines[i])), None)

    return eventually(found, timeout,
                      lambda: f"a line matching {pattern!r} after line {mark}:\n" + "\n".join(served.lines))[0]


def test_a_file_the_app_writes_at_import_is_silenced_visibly_and_watched_again(tmp_path: Path) -> None:
    app = tmp_path / "writer.py"
    app.write_text(WRITER)
    served = start_serve(app, env={"MWTUI_HOME": str(tmp_path / "home")})
    try:
        served.wait_running()
        # Each start of the app rewrites generated.py, which reloads, which starts the app again…
        _wait_after(
            served, 0, r"generated\.py changed \d+ times in a row while the app started \(written by the app itself")
        # …until silenced: the loop stops (once the reload running then, and one queued meanwhile, end).
        def quiet_since() -> tuple[int] | None:  # the output's length before 3 s without a reload line
            mark = len(served.lines)
            # The quiet stretch, on purpose (it also lets the guard's window after the app's last start pass).
            time.sleep(3.0)
            return None if any("reload" in line for line in served.lines[mark:]) else (mark,)

        (mark,) = eventually(quiet_since, 30,
                             lambda: "the reload loop to stop:\n" + "\n".join(served.lines))
        # A person's save of that file, while nothing reloads, is reloaded: the guard has reset.
        (tmp_path / "generated.py").write_text("STAMP = 'by hand'\n")
        released = _wait_after(served, mark, r"generated\.py changed while nothing was reloading: watched again")
        _wait_after(served, released, r"reloading \(generated\.py changed\)")
    finally:
        stop_serve(served)


STUCK = APP.replace("import modal\n", """import modal
import os

with open(os.environ["MWTUI_TEST_MARKER"], "w") as f:  # not a .py file: no reload for it
    f.write(str(os.getpid()))
while True:  # a loop at import
    pass
""", 1)


def test_a_save_stops_an_import_stuck_in_a_loop_at_once(tmp_path: Path) -> None:
    app = tmp_path / "saves.py"
    app.write_text(APP.format(v=1))
    marker = tmp_path / "stuck.txt"
    served = start_serve(app, env={"MWTUI_HOME": str(tmp_path / "home"), "MWTUI_TEST_MARKER": str(marker)})
    try:
        served.wait_running()
        app.write_text(STUCK.format(v=2))
        pid = eventually(lambda: marker.exists() and marker.read_text(), 30, "the stuck import's marker")
        stuck = psutil.Process(int(pid))  # the import of the looping version, in its loop
        app.write_text(APP.format(v=3))  # the fix
        _wait_version(served, "saves-v", 3)
        # Served while the stuck import would still be running: it was stopped, not waited out (that
        # would have said "did not finish within 30 s" and failed the reload first).
        assert not stuck.is_running() or stuck.status() == psutil.STATUS_ZOMBIE
        assert not any("did not finish" in line for line in served.lines), served.lines
        served.wait_for_line("a newer save came: the import still running was stopped")
    finally:
        stop_serve(served)


def test_a_save_stops_an_import_stuck_at_the_first_start(tmp_path: Path) -> None:
    """mwtui started on a file that loops at import: the fix, saved while that first import runs,
    is imported at once instead of after the discovery timeout."""
    app = tmp_path / "saves.py"
    app.write_text(STUCK.format(v=1))
    marker = tmp_path / "stuck.txt"
    stuck: list[psutil.Process] = []

    def fix_once_stuck() -> None:
        pid = eventually(lambda: marker.exists() and marker.read_text(), 30, "the stuck import's marker")
        stuck.append(psutil.Process(int(pid)))
        app.write_text(APP.format(v=2))

    fixer = threading.Thread(target=fix_once_stuck, daemon=True)
    fixer.start()
    served = start_serve(app, env={"MWTUI_HOME": str(tmp_path / "home"), "MWTUI_TEST_MARKER": str(marker)})
    try:
        fixer.join(30)
        _wait_version(served, "saves-v", 2)
        assert not stuck[0].is_running() or stuck[0].status() == psutil.STATUS_ZOMBIE
        assert not any("did not finish" in line for line in served.lines), served.lines
        served.wait_for_line("saved while the first import ran: importing the new version")
    finally:
        stop_serve(served)


def test_the_header_says_how_many_files_are_silenced() -> None:
    from mwtui.engine.facade import ReloadStatus
    from mwtui.tui.widgets.app_header import reload_text

    assert "silenced" not in reload_text(ReloadStatus(True)).plain
    status = ReloadStatus(True, ignored=("/p/generated.py",))
    assert reload_text(status).plain == "reload: watching ✓, 1 file(s) silenced"
    assert reload_text(status, short=True).plain == "reload ✓ 1 silenced"
