"""Shared fixtures: a real `mwtui serve` process on an ephemeral port, and HTTP by Host header."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from .eventually import eventually
from .fixtures.gateway_harness import Gateway, Upstream
from .fixtures.gateway_harness import unix_upstream as unix_upstream_at

FIXTURES = Path(__file__).parent / "fixtures"


# ----------------------------------------------------------------------------- a gateway driven by hand
@pytest.fixture(scope="module")
def unix_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """A uvicorn replica on a Unix socket, shared by a module's tests."""
    with unix_upstream_at(tmp_path_factory.mktemp("up") / "replica.sock") as u:
        yield u


@pytest.fixture
def gw() -> Iterator[Gateway]:
    """A fresh gateway process on an ephemeral port, driven through its stdin as mwtui drives it."""
    g = Gateway().started()
    try:
        yield g
    finally:
        g.close()


def alive_pids(pids: set[int]) -> set[int]:
    """Those of `pids` still running (a zombie has ended: its parent just has not reaped it yet)."""
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def as_nobody_or_skip(namespaces: str, fallback: str) -> list[str]:
    """The command prefix that runs as the unprivileged user nobody, or skip saying why this machine
    cannot: not root, no setpriv, this Python unreadable to others, or no user namespaces (`unshare
    -U` plus `namespaces`, e.g. "m" or "n"; `fallback` names what is tested instead)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("switching to an unprivileged user needs root and setpriv (util-linux)")
    if subprocess.run([*NOBODY, sys.executable, "-c", "import mwtui"], capture_output=True).returncode != 0:
        pytest.skip("the user nobody cannot run this Python (its folders are not readable to others)")
    if subprocess.run([*NOBODY, "unshare", f"-Ur{namespaces}", "true"], capture_output=True).returncode != 0:
        pytest.skip(f"unprivileged user namespaces are off on this machine: {fallback}, tested elsewhere")
    return NOBODY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    """A running `mwtui serve`: its process, its gateway port, and everything it printed."""

    proc: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)
    _q: queue.Queue[str] = field(default_factory=queue.Queue)

    def client(self, host: str, **kw: object) -> httpx.Client:
        """A client that talks to the gateway with the given Host (as `<label>.localhost` would)."""
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", headers={"Host": host}, timeout=30, **kw  # type: ignore[arg-type]
        )

    def get(self, label: str, path: str = "/", **kw: object) -> httpx.Response:
        with self.client(f"{label}.localhost:{self.port}") as c:
            return c.get(path, **kw)  # type: ignore[arg-type]

    def post(self, label: str, path: str = "/", **kw: object) -> httpx.Response:
        with self.client(f"{label}.localhost:{self.port}") as c:
            return c.post(path, **kw)  # type: ignore[arg-type]

    def status(self) -> list[dict]:
        return httpx.get(f"http://127.0.0.1:{self.port}/api/endpoints", timeout=10).json()

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> str:
        rx = re.compile(pattern)
        for line in self.lines:
            if rx.search(line):
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self._q.empty():
                    break
                continue
            if rx.search(line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; output was:\n" + "\n".join(self.lines))

    def wait_running(self, timeout: float = 60.0) -> list[dict]:
        """Until no endpoint is still starting; returns the status list."""
        seen: list[dict] = []

        def settled() -> list[dict] | None:
            seen[:] = self.status()
            return list(seen) if seen and all(e["state"] != "starting" for e in seen) else None

        return eventually(settled, timeout, lambda: f"endpoints to stop starting: {seen}")

    def by_name(self) -> dict[str, dict]:
        """The status entries, by endpoint name."""
        return {e["name"]: e for e in self.status()}

    def wait_status(self, what: str, cond: Callable[[dict[str, dict]], object], timeout: float = 30.0) -> dict[str, dict]:
        """Until `cond(entries by name)` holds; returns those entries. Fails naming `what`."""
        seen: dict[str, dict] = {}

        def holds() -> dict[str, dict] | None:
            rows = self.by_name()
            seen.clear()
            seen.update(rows)
            return rows if cond(rows) else None

        return eventually(holds, timeout, lambda: f"{what}: {list(seen.values())}")

    def tree_pids(self) -> set[int]:
        """Every process mwtui started: replica groups and the gateway (own sessions) and theirs."""
        root = psutil.Process(self.proc.pid)
        return {p.pid for p in root.children(recursive=True)} | {self.proc.pid}


@contextlib.contextmanager
def hammering(served: Served, host: str, path: str = "/", clients: int = 4) -> Iterator[list[int]]:
    """Clients on keep-alive connections sending `GET path` to `host` until the block ends; yields the
    status codes so far (complete once the block has ended)."""
    stop = threading.Event()
    codes: list[int] = []

    def client() -> None:
        with served.client(host) as c:
            while not stop.is_set():
                codes.append(c.get(path).status_code)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield codes
    finally:
        stop.set()
        for t in threads:
            t.join(10)


def start_serve(app: str | Path | list[Path] | None, *extra: str, env: dict[str, str] | None = None,
                cwd: str | Path | None = None, module: bool = False) -> Served:
    """`mwtui serve APP` (or `serve -m APP` with `module`, as found from `cwd`; several app files
    together; with None, bare `mwtui serve`, which serves what cwd's pyproject.toml lists) on a free port."""
    if isinstance(app, list):
        target = [str(a) for a in app]
    else:
        target = [] if app is None else ["-m", str(app)] if module else [str(app)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mwtui.tui.cli", "serve", *target, "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
        cwd=cwd,
    )
    served = Served(proc, 0)

    def pump() -> None:
        assert proc.stdout
        for line in proc.stdout:
            line = line.rstrip("\n")
            served.lines.append(line)
            served._q.put(line)

    threading.Thread(target=pump, daemon=True).start()
    line = served.wait_for_line(r"gateway http://localhost:\d+")
    served.port = int(re.search(r"localhost:(\d+)", line).group(1))  # type: ignore[union-attr]
    return served


def stop_serve(served: Served, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    if served.proc.poll() is None:
        served.proc.send_signal(sig)
    try:
        return served.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(served.proc.pid, signal.SIGKILL)
        return served.proc.wait()


@pytest.fixture
def mwtui_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "mwtui-home"
    home.mkdir()
    monkeypatch.setenv("MWTUI_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def seed_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The seed's examples, served once for the whole module."""
    folder = tmp_path_factory.mktemp("seed")
    text = (FIXTURES / "seed_app.py").read_text()
    text = text.replace("FILE_SERVER_PORT = 8000", f"FILE_SERVER_PORT = {free_port()}")
    text = text.replace("START_SERVER_PORT = 8001", f"START_SERVER_PORT = {free_port()}")
    app = folder / "seed.py"
    app.write_text(text)
    served = start_serve(app, env={"MWTUI_HOME": str(folder / "home")})
    served.wait_running()
    yield served
    stop_serve(served)
