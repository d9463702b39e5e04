"""Replicas forked by the zygote (engine/zygote.py, spawner.ZygoteSpawner), spawned as the supervisor
spawns them: a ready pipe and mwtui's lifeline passed by fd, stdout read as lines, real HTTP.

The zygote path must serve exactly what the cold path serves, never hold user code across spawns, and
survive its own death; when it cannot start, replicas start cold."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from mwtui.engine.lifeline import Lifeline
from mwtui.engine.spawner import (
    UNKNOWN_EXIT_CODE,
    ColdSpawner,
    ReplicaProcess,
    Spawner,
    ZygoteSpawner,
    default_spawner,
)

from .eventually import eventually_async

FIXTURES = Path(__file__).parent / "fixtures"
TIMEOUT = 30.0

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the zygote needs os.fork")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Spawned:
    proc: ReplicaProcess
    message: dict[str, Any]
    lines: list[str] = field(default_factory=list)
    pump: asyncio.Task[None] | None = None

    def client(self, endpoint: str | None = None) -> httpx.AsyncClient:
        ups = self.message["upstreams"]
        up = ups[endpoint] if endpoint else next(iter(ups.values()))
        kind, _, where = up["address"].partition(":")
        headers = {"x-mwtui-endpoint": up["dispatch"]} if up["dispatch"] else {}
        if kind == "unix":
            transport = httpx.AsyncHTTPTransport(uds=where)
            return httpx.AsyncClient(transport=transport, base_url="http://replica", headers=headers, timeout=10)
        return httpx.AsyncClient(base_url=f"http://{where}", headers=headers, timeout=10)

    async def stop(self) -> int:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), TIMEOUT)
        if self.pump:
            await asyncio.wait_for(self.pump, TIMEOUT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # as the supervisor does, after every exit
        return code


class Harness:
    """What Pool._run_replica does around a spawner, without the pool."""

    def __init__(self, lifeline: Lifeline) -> None:
        self.lifeline = lifeline
        self.sock_dir = tempfile.mkdtemp(prefix="mwz")  # AF_UNIX paths must stay short
        self.count = 0
        self.spawned: list[Spawned] = []

    async def spawn(self, spawner: Spawner, app: str | Path, pool: str, env: dict[str, str] | None = None,
                    cwd: str | Path | None = None, expect: str = "ready") -> Spawned:
        app = Path(app) if os.path.isabs(app) else FIXTURES / app
        ready_r, ready_w = os.pipe()
        full_env = {**os.environ, **self.lifeline.env(), "MWTUI_READY_FD": str(ready_w), "PYTHONUNBUFFERED": "1",
                    **(env or {})}
        self.count += 1
        argv = [str(app), "--pool", pool, "--socket-dir", self.sock_dir, "--replica", f"{pool}.{self.count}"]
        try:
            proc = await spawner.spawn(argv, full_env, str(cwd or app.parent), (ready_w, self.lifeline.child_fd))
        finally:
            os.close(ready_w)
        spawned = Spawned(proc, {})
        self.spawned.append(spawned)

        async def pump() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                spawned.lines.append(raw.decode(errors="replace").rstrip())

        spawned.pump = asyncio.create_task(pump())
        try:
            spawned.message = await asyncio.wait_for(_first_line(ready_r), TIMEOUT)
        finally:
            os.close(ready_r)
        assert spawned.message.get("event") == expect, f"{spawned.message}\n{spawned.lines}"
        return spawned

    async def close(self) -> None:
        for s in self.spawned:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.stop(), TIMEOUT)
        shutil.rmtree(self.sock_dir, ignore_errors=True)


async def _first_line(fd: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(fd), "rb", buffering=0)
    )
    try:
        line = await reader.readline()
        assert line, "ready pipe closed without a message"
        return json.loads(line)
    finally:
        transport.close()


@pytest.fixture
async def lifeline() -> AsyncIterator[Lifeline]:
    lf = Lifeline()
    yield lf
    lf.close()


@pytest.fixture
async def harness(lifeline: Lifeline) -> AsyncIterator[Harness]:
    h = Harness(lifeline)
    yield h
    await h.close()


@pytest.fixture
async def zygote() -> AsyncIterator[ZygoteSpawner]:
    spawner = ZygoteSpawner()
    yield spawner
    await spawner.close()


def parent_of(pid: int) -> int:
    return psutil.Process(pid).ppid()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --- the same answers as a cold start, for every kind ---------------------------------------------

Request = tuple[str, str, Any]  # method, path, json body
KINDS: dict[str, tuple[str, str, str | None, list[Request]]] = {
    "fastapi": ("worker_fastapi.py", "hello", None, [("GET", "/?name=zygote", None), ("GET", "/nope", None)]),
    "fastapi-post": ("worker_fastapi.py", "echo", None, [("POST", "/", {"a": [1, 2]}), ("GET", "/", None)]),
    "fastapi-stream": ("worker_fastapi.py", "stream", None, [("GET", "/?n=4", None)]),
    "asgi": ("worker_asgi.py", "api", None, [("GET", "/items/7", None), ("GET", "/state", None)]),
    "asgi-raw": ("worker_asgi.py", "raw", None, [("GET", "/", None)]),
    "wsgi-gunicorn": ("worker_wsgi.py", "flask_app", None, [("GET", "/", None), ("POST", "/echo", {"x": 1})]),
    "class": ("worker_cls.py", "MyAPI", "MyAPI.web", [("GET", "/", None), ("GET", "/headers", None)]),
    "class-wsgi": ("worker_cls.py", "MyAPI", "MyAPI.legacy", [("GET", "/", None)]),
    "web_server": ("worker_web_server.py", "files", None, [("GET", "/", None)]),
}


async def _answers(s: Spawned, endpoint: str | None, requests: list[Request]) -> list[tuple[int, str, bytes]]:
    out = []
    async with s.client(endpoint) as c:
        for method, path, body in requests:
            r = await c.request(method, path, json=body)
            out.append((r.status_code, r.headers.get("content-type", ""), r.content))
    return out


@pytest.mark.parametrize("kind", list(KINDS))
async def test_serves_what_a_cold_start_serves(kind: str, harness: Harness, zygote: ZygoteSpawner,
                                               tmp_path: Path) -> None:
    app, pool, endpoint, requests = KINDS[kind]
    env = {"MWTUI_TEST_PORT": str(free_port())}
    # The web_server lists its cwd: one that nothing else writes to (a __pycache__, say) meanwhile.
    (tmp_path / "index.txt").write_text("listed\n")
    answers = []
    for spawner in (ColdSpawner(), zygote):
        s = await harness.spawn(spawner, app, pool, env, cwd=tmp_path)
        answers.append(await _answers(s, endpoint, requests))
        assert await s.stop() == 0, s.lines  # web_server: its port is free again for the next one
    cold, forked = answers
    assert forked == cold
    assert all(status < 500 for status, _, _ in forked)
    assert zygote.cold_reason is None


async def test_forked_replica_is_the_zygotes_child_in_its_own_session(harness: Harness, zygote: ZygoteSpawner) -> None:
    s = await harness.spawn(zygote, "worker_fastapi.py", "hello")
    assert zygote.zygote_pid is not None
    assert parent_of(s.proc.pid) == zygote.zygote_pid
    assert os.getsid(s.proc.pid) == s.proc.pid
    assert s.message["pid"] == s.proc.pid
    # ps and psutil show what it runs, not the zygote's command line
    cmdline = psutil.Process(s.proc.pid).cmdline()
    assert cmdline[1:3] == ["-m", "mwtui.engine.worker"] and "--pool" in cmdline and "hello" in cmdline
    assert await s.stop() == 0


async def test_looks_like_a_fresh_interpreter(harness: Harness, zygote: ZygoteSpawner) -> None:
    seen = []
    for spawner in (ColdSpawner(), zygote, zygote):
        s = await harness.spawn(spawner, "zygote_probe.py", "probe", {"ZYGOTE_PROBE": f"#{len(seen)}"})
        async with s.client() as c:
            seen.append((await c.get("/")).json())
        assert await s.stop() == 0
    cold, forked, forked_again = seen
    for key in ("path0", "cwd", "main_name", "main_spec", "main_file", "own_session", "own_group", "stdin",
                "sigpipe", "sigchld", "ready_fd_in_env", "lifeline", "loop", "stdout_write_through",
                "threads_at_import"):
        assert forked[key] == cold[key], key
    assert forked["argv"][0] == cold["argv"][0]
    assert forked["argv"][1:4] == [str(FIXTURES / "zygote_probe.py"), "--pool", "probe"]
    assert forked["path0"] == str(FIXTURES)
    assert forked["lifeline"] == "pipe" and forked["loop"] == "uvloop"
    assert (cold["probe_env"], forked["probe_env"], forked_again["probe_env"]) == ("#0", "#1", "#2")
    assert forked["random"] != forked_again["random"]  # reseeded in each child


def _fd_links(pid: int | None) -> set[str]:
    """What the process's open descriptors point at. One it closes between the listing and the
    reading (a pipe of a fork it just made) is skipped: it no longer holds it."""
    links = set()
    for n in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            links.add(os.readlink(f"/proc/{pid}/fd/{n}"))
    return links


async def test_only_the_passed_fds_are_inherited(harness: Harness, zygote: ZygoteSpawner) -> None:
    s = await harness.spawn(zygote, "zygote_probe.py", "fds")
    assert zygote._zygote is not None
    zfd = zygote._zygote.sock.fileno()  # our end; the zygote's end is the same socketpair
    ours = os.readlink(f"/proc/self/fd/{zfd}")
    zygote_fds = _fd_links(zygote.zygote_pid)
    async with s.client() as c:
        child = set((await c.get("/")).json().values())
    # The zygote's own sockets and pipes (its control socket, SIGCHLD wakeup pipe, output pipe) are
    # not in the replica; only what it opened itself (its socket, loop, threads' pipes) and what it was given.
    shared = {link for link in zygote_fds & child if link.startswith(("socket:", "pipe:"))}
    assert ours not in child
    lifeline_link = os.readlink(f"/proc/self/fd/{harness.lifeline.child_fd}")
    assert shared <= {lifeline_link}, shared
    assert await s.stop() == 0


# --- readiness, output, exit codes ----------------------------------------------------------------


async def test_stdout_and_stderr_lines_arrive(harness: Harness, zygote: ZygoteSpawner) -> None:
    s = await harness.spawn(zygote, "worker_fastapi.py", "shout")
    async with s.client() as c:
        assert (await c.get("/")).text == '"ok"'
    assert await s.stop() == 0
    assert "no newline yet" in s.lines  # stdout, written without a newline: the line ends at EOF
    failed = await harness.spawn(zygote, "worker_asgi.py", "bad_shutdown")
    assert await failed.stop() == 1
    assert any("could not flush the cache" in line for line in failed.lines)  # a traceback, on stderr


async def test_sigterm_gives_0_and_a_crash_its_code(harness: Harness, zygote: ZygoteSpawner) -> None:
    ok = await harness.spawn(zygote, "worker_fastapi.py", "hello")
    assert await ok.stop() == 0
    failed = await harness.spawn(zygote, "worker_fail.py", "boom", expect="failed")
    assert "factory exploded" in failed.message["message"]
    assert await asyncio.wait_for(failed.proc.wait(), TIMEOUT) == 3
    killed = await harness.spawn(zygote, "worker_fastapi.py", "hello")
    os.kill(killed.proc.pid, signal.SIGKILL)
    assert await asyncio.wait_for(killed.proc.wait(), TIMEOUT) == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        killed.proc.send_signal(signal.SIGTERM)  # reaped: never signal a pid that may be reused


async def test_the_lifeline_takes_down_forked_replicas_and_their_groups(zygote: ZygoteSpawner) -> None:
    lifeline = Lifeline()  # closed once, here: never twice, its fd numbers may be reused meanwhile
    harness = Harness(lifeline)
    try:
        s = await harness.spawn(zygote, "worker_web_server.py", "files", {"MWTUI_TEST_PORT": str(free_port())})
        server = psutil.Process(s.proc.pid).children()
        assert server, "the web_server's own process"
        zpid = zygote.zygote_pid
        assert zpid is not None
        lifeline.close()  # as if mwtui were killed: the write end goes away
        pids = [s.proc.pid, zpid, *(p.pid for p in server)]
        await eventually_async(lambda: all(gone(pid) for pid in pids), 10,
                               lambda: f"every process gone; left: {[p for p in pids if not gone(p)]}")
        # Its exit still resolves wait(), whoever reaped it.
        await asyncio.wait_for(s.proc.wait(), TIMEOUT)
    finally:
        await harness.close()


# --- no user code in the zygote -------------------------------------------------------------------

APP_V = """import os

import modal

import helper

with open(os.path.join(os.environ["MWTUI_TEST_MARKERS"], "imports.txt"), "a") as f:
    f.write(f"{{os.getpid()}}\\n")

app = modal.App("changing")


@app.function()
@modal.fastapi_endpoint()
def version():
    return {{"app": "{v}", "helper": helper.VALUE}}
"""


async def test_a_changed_file_is_seen_by_the_next_replica(harness: Harness, zygote: ZygoteSpawner,
                                                          tmp_path: Path) -> None:
    app, helper, markers = tmp_path / "changing.py", tmp_path / "helper.py", tmp_path / "markers"
    markers.mkdir()
    env = {"MWTUI_TEST_MARKERS": str(markers)}
    seen, pids = [], []
    for v in ("one", "two", "three"):
        app.write_text(APP_V.format(v=v))
        helper.write_text(f"VALUE = {v!r}\n")
        s = await harness.spawn(zygote, app, "version", env)
        async with s.client() as c:
            seen.append((await c.get("/")).json())
        pids.append(s.proc.pid)
        assert await s.stop() == 0
    assert seen == [{"app": v, "helper": v} for v in ("one", "two", "three")]
    importers = [int(line) for line in (markers / "imports.txt").read_text().split()]
    assert importers == pids  # each replica imported the file itself, and only they did
    assert zygote.zygote_pid not in importers


async def test_a_different_python_environment_starts_cold(harness: Harness, zygote: ZygoteSpawner,
                                                          tmp_path: Path) -> None:
    await harness.spawn(zygote, "worker_fastapi.py", "hello")  # the zygote runs with our PYTHONPATH
    s = await harness.spawn(zygote, "worker_fastapi.py", "hello", {"PYTHONPATH": str(tmp_path)})
    assert parent_of(s.proc.pid) == os.getpid()  # a fresh interpreter: ours, not the zygote's, child
    assert await s.stop() == 0


# --- when the zygote fails ------------------------------------------------------------------------


async def test_a_dead_zygote_is_survived(harness: Harness, zygote: ZygoteSpawner) -> None:
    before = await harness.spawn(zygote, "worker_fastapi.py", "hello")
    first = zygote.zygote_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await eventually_async(lambda: zygote.zygote_pid is None, 10, "the spawner to notice")
    async with before.client() as c:  # its replicas keep serving: own group, own lifeline
        assert (await c.get("/")).status_code == 200
    after = await harness.spawn(zygote, "worker_fastapi.py", "hello")
    assert zygote.zygote_pid not in (None, first)
    assert parent_of(after.proc.pid) == zygote.zygote_pid
    assert zygote.restarts == 1
    # The orphan's status went to init: wait() still resolves once it ends.
    assert await before.stop() == UNKNOWN_EXIT_CODE
    assert await after.stop() == 0


async def test_a_zygote_that_keeps_dying_gives_way_to_cold_starts(harness: Harness) -> None:
    spawner = ZygoteSpawner(max_restarts=0)
    try:
        first = await harness.spawn(spawner, "worker_fastapi.py", "hello")
        zpid = spawner.zygote_pid
        assert zpid is not None
        os.kill(zpid, signal.SIGKILL)
        await eventually_async(lambda: spawner.zygote_pid is None, 10, "the spawner to notice")
        cold = await harness.spawn(spawner, "worker_fastapi.py", "hello")
        assert parent_of(cold.proc.pid) == os.getpid()
        assert spawner.cold_reason == "the zygote died 1 time"
        assert await cold.stop() == 0
        assert cold.lines[0] == "mwtui: warning: the zygote died 1 time; replicas start cold (slower)"
        assert await first.stop() == UNKNOWN_EXIT_CODE
    finally:
        await spawner.close()


async def test_a_zygote_that_cannot_start_falls_back_to_cold(harness: Harness) -> None:
    spawner = ZygoteSpawner(start_timeout=0.001)
    try:
        s = await harness.spawn(spawner, "worker_fastapi.py", "hello")
        assert spawner.cold_reason and "could not start" in spawner.cold_reason
        assert parent_of(s.proc.pid) == os.getpid()
        async with s.client() as c:
            assert (await c.get("/")).text == '"Hello, world"'
        assert await s.stop() == 0
        assert s.lines[0].startswith("mwtui: warning: the zygote could not start"), s.lines
        again = await harness.spawn(spawner, "worker_fastapi.py", "hello")
        assert await again.stop() == 0
        assert not any("warning" in line for line in again.lines)  # said once
    finally:
        await spawner.close()


async def test_a_zygote_with_threads_is_never_forked(harness: Harness, tmp_path: Path) -> None:
    # A sitecustomize that starts a thread, as some APM agents do: forking that process is unsafe.
    (tmp_path / "sitecustomize.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
    )
    spawner = ZygoteSpawner()
    try:
        s = await harness.spawn(spawner, "worker_fastapi.py", "hello", {"PYTHONPATH": str(tmp_path)})
        assert spawner.cold_reason and "threads" in spawner.cold_reason
        assert parent_of(s.proc.pid) == os.getpid()
        assert await s.stop() == 0
        assert "forking it is unsafe" in s.lines[0]
    finally:
        await spawner.close()


# --- wiring ---------------------------------------------------------------------------------------


def test_the_zygote_is_the_default_and_cold_start_a_flag() -> None:
    from mwtui.tui.cli import build_parser, engine_options

    assert isinstance(default_spawner(), ZygoteSpawner)
    assert "spawner" not in engine_options(build_parser().parse_args(["serve", "app.py"]))
    options = engine_options(build_parser().parse_args(["serve", "app.py", "--cold-start"]))
    assert isinstance(options["spawner"], ColdSpawner)


# --- a burst of spawns ----------------------------------------------------------------------------


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


async def test_a_burst_of_spawns_loses_none_and_leaks_no_fd(lifeline: Lifeline) -> None:
    # Requests big enough that a few fill the socket's buffer: most senders must wait for room, all at
    # once, on the same fd (as 100 replicas starting together do).
    spawner = ZygoteSpawner()
    env = {**os.environ, **lifeline.env(), "MWTUI_TEST_PAD": "x" * 60_000}
    try:
        first = await spawner.spawn(["--no-such-flag"], env, str(FIXTURES), (lifeline.child_fd,))
        await asyncio.wait_for(first.wait(), TIMEOUT)  # the zygote is up: from here on, count fds
        before = _open_fds()
        procs = await asyncio.wait_for(asyncio.gather(*(
            spawner.spawn(["--no-such-flag"], env, str(FIXTURES), (lifeline.child_fd,)) for _ in range(40)
        )), TIMEOUT)
        assert len({p.pid for p in procs}) == 40
        assert all(parent_of(p.pid) == spawner.zygote_pid for p in procs if not gone(p.pid))
        codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), TIMEOUT)
        assert all(codes), codes
        for p in procs:
            assert p.stdout is not None
            assert b"usage:" in await p.stdout.read()  # each ran the worker, which refused the flag
            p.close_pipes()  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        assert _open_fds() == before
    finally:
        await spawner.close()


async def test_spawns_cancelled_mid_burst_leak_no_fd_and_leave_no_child(lifeline: Lifeline) -> None:
    spawner = ZygoteSpawner()
    env = {**os.environ, **lifeline.env(), "MWTUI_TEST_PAD": "x" * 60_000}
    try:
        first = await spawner.spawn(["--no-such-flag"], env, str(FIXTURES), (lifeline.child_fd,))
        await asyncio.wait_for(first.wait(), TIMEOUT)
        zygote = spawner._zygote
        assert zygote is not None
        before = _open_fds()
        tasks = [asyncio.create_task(spawner.spawn(["--no-such-flag"], env, str(FIXTURES), (lifeline.child_fd,)))
                 for _ in range(20)]
        await asyncio.sleep(0)  # each has sent its request or waits for room to
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results), results
        # Answers to requests that were sent still come: each such child is killed and forgotten.
        await eventually_async(lambda: not zygote._pending and not zygote.children, TIMEOUT,
                               lambda: f"no pending request or child: {zygote._pending}, {zygote.children}")
        assert _open_fds() == before
    finally:
        await spawner.close()
