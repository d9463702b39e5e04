"""mwtui's temp folders: named for their owner, removed by the next mwtui once that owner is gone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mwtui.engine import scratch

from .conftest import start_serve, stop_serve


def test_owner_is_read_only_from_names_mwtui_made() -> None:
    assert scratch.owner_of("mwtui-sock-4242-ab_c12xy") == 4242
    assert scratch.owner_of("mwtui-zygote-7-q") == 7
    for foreign in ("mwtui-abc123", "mwtui-home-x1y2", "mwtui-sock-notapid-xyz", "other-sock-1-x", "mwtui--1-x"):
        assert scratch.owner_of(foreign) is None, foreign


def test_a_pid_reused_after_the_folder_was_made_is_not_its_owner() -> None:
    assert scratch.owner_alive(os.getpid(), time.time())
    assert not scratch.owner_alive(os.getpid(), time.time() - 3600)  # we started long after that change


def test_sweep_removes_only_folders_whose_owner_is_gone(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.1)  # it has started (its start time is what owner_alive compares)
        orphan = tmp_path / f"mwtui-sock-{dead.pid}-abc"
        kept = tmp_path / f"mwtui-zygote-{live.pid}-def"
        foreign = tmp_path / "mwtui-xyz123"  # made by an older mwtui, or by someone else: not ours to judge
        for d in (orphan, kept, foreign):
            d.mkdir()
            (d / "replica.sock").write_text("")
        link = tmp_path / f"mwtui-sock-{dead.pid}-lnk"
        link.symlink_to(kept)
        assert scratch.sweep(str(tmp_path)) == [str(orphan)]
        assert not orphan.exists() and kept.exists() and foreign.exists() and link.is_symlink()
    finally:
        live.kill()
        live.wait()


# --- end to end: a mwtui killed with SIGKILL ------------------------------------------------------


@pytest.fixture
def tmpdir_env() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="mwt", dir="/tmp"))  # short: replicas' sockets live in there
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _entries(folder: Path) -> set[str]:
    return {name for name in os.listdir(folder) if name.startswith("mwtui-")}


APP = """import modal
app = modal.App("tmp")

@app.function()
@modal.fastapi_endpoint()
def v():
    return {"v": 1}
"""


def test_the_next_mwtui_removes_the_folders_of_one_killed(tmp_path: Path, tmpdir_env: Path) -> None:
    app = tmp_path / "tmpapp.py"
    app.write_text(APP)
    env = {"TMPDIR": str(tmpdir_env), "MWTUI_HOME": str(tmp_path / "home")}
    killed = start_serve(app, env=env)
    alive = third = None
    try:
        killed.wait_running()
        killed_folders = _entries(tmpdir_env)
        assert killed_folders, "its socket folder and its zygote's"
        alive = start_serve(app, env=env)
        alive.wait_running()
        alive_folders = _entries(tmpdir_env) - killed_folders
        assert alive_folders
        stop_serve(killed, signal.SIGKILL)
        assert _entries(tmpdir_env) == killed_folders | alive_folders  # nobody could remove them
        third = start_serve(app, env=env)
        third.wait_running()
        assert _entries(tmpdir_env) & killed_folders == set()
        assert alive_folders <= _entries(tmpdir_env)  # a running mwtui's are its own
        assert alive.get("tmp-v").json() == {"v": 1}
        third.wait_for_line(r"removed 2 temporary folder\(s\) left by mwtui processes that were killed")
    finally:
        for s in (alive, third):
            if s is not None:
                stop_serve(s)


def test_a_socket_folder_stays_short_under_a_deep_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest's own temp dirs are deep enough that `<dir>/mwtui-sock-.../<replica>.sock` passes the
    kernel's 107-byte limit for a Unix socket's path: the folder goes in /tmp, and a replica whose
    name is still too long listens under a hashed name; either way a real socket binds there."""
    import socket

    from mwtui.engine.worker.replica import UNIX_PATH_MAX, socket_path

    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    folder = scratch.make("sock", short=True)
    try:
        assert folder.startswith(scratch.SHORT_BASE + "/mwtui-sock-")
        for replica in ("hello.0", "Some" + "VeryLong" * 12 + ".method.0"):
            path = socket_path(folder, replica)
            assert len(path.encode()) <= UNIX_PATH_MAX
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(path)
        assert socket_path(folder, "a" * 200) != socket_path(folder, "b" * 200)
        assert not scratch.make("other").startswith(scratch.SHORT_BASE + "/mwtui-")  # only when asked
    finally:
        shutil.rmtree(folder, ignore_errors=True)
