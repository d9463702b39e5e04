"""What several benchmarks share: a raw ASGI hello, and `mwtui serve` started and stopped.

The scripts run as `python bench/NAME.py`, so this folder is on their path: `from serving import ...`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

# A bare ASGI app: no framework between the server and the bytes, so a proxy's own cost shows.
RAW = '''
BODY = b'{"hello":"world"}'
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]}
END = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send(START)
    await send(END)
'''


def start_serve(app: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    """`mwtui serve APP --port 0` and its gateway's port (read from "gateway http://localhost:PORT")."""
    proc = subprocess.Popen([sys.executable, "-m", "mwtui.tui.cli", "serve", str(app), "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout
    for line in proc.stdout:
        m = re.search(r"gateway http://localhost:(\d+)", line)
        if m:
            # Keep draining its output, so that it never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            return proc, int(m.group(1))
    stop(proc)  # whatever it left behind in its group
    raise SystemExit(f"mwtui serve {' '.join(extra)} exited ({proc.returncode}) before printing its gateway URL")


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to its whole group (mwtui, gateway, zygote, replicas), then wait; SIGKILL if it hangs."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
