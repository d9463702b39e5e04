"""`mwtui serve` whose stdout's reader goes away (`mwtui serve app.py | head -2`): it stops as on SIGTERM,
leaving no process and no temporary folder, and exits 0."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO

import httpx
import psutil
import pytest

from .conftest import alive_pids

APP = (
    "import modal\napp = modal.App('piped')\n"
    "@app.function()\n@modal.fastapi_endpoint()\ndef hello():\n    return {'ok': True}\n"
)


@pytest.mark.parametrize("stdout_kind", ["pipe", "socket"])
def test_serve_stops_cleanly_when_its_stdout_is_closed(tmp_path: Path, stdout_kind: str) -> None:
    app = tmp_path / "piped.py"
    app.write_text(APP)
    tmp = tmp_path / "tmp"  # the engine's temporary folders land here (TMPDIR), to be counted
    tmp.mkdir()
    ours, theirs = socket.socketpair() if stdout_kind == "socket" else (None, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mwtui.tui.cli", "serve", str(app), "--port", "0", "--no-reload"],
        stdout=theirs if theirs is not None else subprocess.PIPE,
        stderr=(tmp_path / "stderr.txt").open("w"),
        text=True, start_new_session=True,
        env={**os.environ, "TMPDIR": str(tmp), "MWTUI_HOME": str(tmp_path / "home")},
    )
    out: IO[str] = ours.makefile("r") if ours is not None else proc.stdout  # type: ignore[assignment]
    try:
        if theirs is not None:
            theirs.close()
        head = [out.readline() for _ in range(2)]  # `| head -2`
        while "gateway http://" not in head[-1]:
            head.append(out.readline())
        port = int(re.search(r"localhost:(\d+)", head[-1]).group(1))  # type: ignore[union-attr]
        host = {"Host": f"piped-hello.localhost:{port}"}
        assert httpx.get(f"http://127.0.0.1:{port}/", headers=host, timeout=30).status_code == 200
        pids = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        assert pids, "expected a gateway and a replica"
        out.close()
        if ours is not None:
            ours.close()
            # A socket's closed reader shows only on the next write: make serve print an access line.
            try:
                httpx.get(f"http://127.0.0.1:{port}/", headers=host, timeout=30)
            except httpx.TransportError:
                pass  # already stopping
        assert proc.wait(timeout=60) == 0, (tmp_path / "stderr.txt").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    assert alive_pids(pids) == set()
    assert list(tmp.iterdir()) == []
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "stdout was closed: stopping" in stderr and "Traceback" not in stderr
