"""The terminal app in a real pseudo-terminal: a polite kill (SIGTERM) leaves as `q` does, and a
terminal that goes away (SIGHUP: its window closed, `tmux kill-server`) too, without hanging on the
dead terminal. Either way no process and no temporary folder of its is left."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import psutil
import pytest

from .conftest import alive_pids
from .eventually import eventually

pytestmark = pytest.mark.timeout(90)
APP = Path(__file__).parent / "fixtures" / "tui_app.py"


def _scratch(pid: int) -> list[str]:
    import tempfile

    root = Path(tempfile.gettempdir())
    return [p.name for p in root.glob(f"mwtui-*-{pid}-*")]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGHUP, 129), (signal.SIGTERM, 0)])
def test_the_app_leaves_cleanly_on_a_signal(tmp_path: Path, sig: int, code: int) -> None:
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 35, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mwtui.tui.cli", str(APP), "--port", "0", "--no-reload"],
        stdin=secondary, stdout=secondary, stderr=secondary, start_new_session=True,
        env={**os.environ, "TERM": "xterm-256color", "MWTUI_HOME": str(tmp_path / "home")},
    )
    os.close(secondary)
    reading = threading.Thread(target=lambda: [None for _ in iter(lambda: _read(primary), b"")], daemon=True)
    reading.start()  # a terminal that reads what the app draws, until it is closed
    try:
        root = psutil.Process(proc.pid)
        # Running: its gateway and replicas are up (the fixture has four endpoints).
        eventually(lambda: len(root.children(recursive=True)) >= 5, 60, "the app's processes")
        time.sleep(1.0)
        tree = {p.pid for p in root.children(recursive=True)} | {proc.pid}
        assert _scratch(proc.pid)
        if sig == signal.SIGHUP:
            os.close(primary)  # the terminal goes away first, as when its window closes
        proc.send_signal(sig)
        assert proc.wait(60) == code
        eventually(lambda: not alive_pids(tree), 20, "no process of its left")
        assert _scratch(proc.pid) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if sig != signal.SIGHUP:
            os.close(primary)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""
