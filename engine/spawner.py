"""How a replica process comes to be. The supervisor asks a spawner; it does not care how.

`ColdSpawner` starts a fresh interpreter (`python -m mwtui.engine.worker …`): slow (every replica
imports uvicorn, FastAPI, pydantic again) but simple, and the fallback for everything else.

`ZygoteSpawner` asks a zygote (see zygote.py), started on the first spawn, to fork the replica from a
process that has all of that imported already: tens of milliseconds instead of half a second. The
replica is the zygote's child, so its exit code comes back over the zygote's socket. When the zygote
cannot start, or keeps dying, it falls back to cold starts and says so once, in the log of the first
replica started cold.

The same zygote also forks discovery (`ZygoteSpawner.fork_discovery`): the child imports the user's file
and writes the manifest, as `python -m mwtui.engine.import_child` would, without paying for a fresh
interpreter on every save. discovery.py falls back to its own cold subprocess when that returns None.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from . import modal_env, scratch
from .zygote import TITLE_ROOM

LIFELINE_ENV = "MWTUI_LIFELINE_FD"
READY_FD_ENV = "MWTUI_READY_FD"
# Exit code reported for a replica whose zygote died before it: its real status went to init.
UNKNOWN_EXIT_CODE = 255


class ReplicaProcess(Protocol):
    """What the supervisor needs of a running replica: asyncio.subprocess.Process has all of it."""

    @property
    def pid(self) -> int: ...

    @property
    def stdout(self) -> AsyncIterator[bytes] | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...


class Spawner(Protocol):
    async def spawn(
        self, worker_argv: list[str], env: dict[str, str], cwd: str, pass_fds: tuple[int, ...]
    ) -> ReplicaProcess:
        """Start `mwtui.engine.worker` with `worker_argv`, in a new session (its own process group),
        stdout and stderr merged into `stdout`, stdin empty."""
        ...

    async def close(self) -> None: ...


class ColdSpawner:
    async def spawn(
        self, worker_argv: list[str], env: dict[str, str], cwd: str, pass_fds: tuple[int, ...]
    ) -> ReplicaProcess:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mwtui.engine.worker", *worker_argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
            env=env,
            pass_fds=pass_fds,
            start_new_session=True,  # its own process group, killed as one
        )

    async def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------ zygote


class ZygoteUnavailable(Exception):
    """The zygote could not fork this replica (it is gone, or refused): start it cold instead."""


def _interpreter_env(env: dict[str, str]) -> dict[str, str]:
    """The variables a Python interpreter reads only at its start (PYTHONPATH, PYTHONHASHSEED, …): a
    forked replica has the zygote's, so a request asking for others must start cold."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON") and k != "PYTHONUNBUFFERED"}


class ZygoteChild:
    """A replica forked by the zygote: not our child, so its exit code arrives as a message."""

    def __init__(self, pid: int, stdout_fd: int, stderr_fd: int | None = None) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdout = asyncio.StreamReader()  # asyncio.subprocess's default line limit, as ColdSpawner's
        # Only for a child asked to keep stderr apart (discovery); a replica's goes to stdout.
        self.stderr = asyncio.StreamReader() if stderr_fd is not None else None
        self._stdout_fd: int | None = stdout_fd
        self._stderr_fd: int | None = stderr_fd
        self._transport: asyncio.BaseTransport | None = None
        self._stderr_transport: asyncio.BaseTransport | None = None
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pidfd: int | None = None

    async def _connect_stdout(self) -> None:
        assert self._stdout_fd is not None
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(self._stdout_fd, "rb", buffering=0)
        self._stdout_fd = None
        self._transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self.stdout), pipe)
        if self._stderr_fd is not None and self.stderr is not None:
            stderr = self.stderr
            pipe = os.fdopen(self._stderr_fd, "rb", buffering=0)
            self._stderr_fd = None
            self._stderr_transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(stderr), pipe
            )

    def _discard_stdout(self) -> None:
        for fd in (self._stdout_fd, self._stderr_fd):
            if fd is not None:
                os.close(fd)
        self._stdout_fd = self._stderr_fd = None
        self.stdout.feed_eof()
        if self.stderr is not None:
            self.stderr.feed_eof()

    def close_pipes(self) -> None:
        """Stop reading its output (a process that escaped its group may hold the pipes open forever)."""
        for transport in (self._transport, self._stderr_transport):
            if transport is not None:
                transport.close()

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None:
            raise ProcessLookupError(self.pid)  # reaped: the pid may be somebody else's by now
        os.kill(self.pid, sig)

    def _set_exit(self, code: int) -> None:
        self._unwatch()
        if self.returncode is None:
            self.returncode = code
            self._exited.set_result(code)

    def _orphaned(self) -> None:
        """The zygote died: the replica lives on (its own group, its own lifeline), reparented to init.
        Learn of its end from a pidfd (its status is init's to read now), else by polling."""
        if self.returncode is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            self._set_exit(UNKNOWN_EXIT_CODE)
            return
        except (AttributeError, OSError):
            loop.create_task(self._poll_gone())
            return
        loop.add_reader(self._pidfd, self._set_exit, UNKNOWN_EXIT_CODE)

    async def _poll_gone(self) -> None:
        while self.returncode is None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self._set_exit(UNKNOWN_EXIT_CODE)
                return
            except PermissionError:
                pass
            await asyncio.sleep(0.2)

    def _unwatch(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


class ForkServer:
    """One running zygote process and our end of its socket: the zygote itself, or a generation's
    snapshot that the zygote forked (see snapshots.py), which speaks the same protocol."""

    def __init__(self, proc: ReplicaProcess, sock: socket.socket, workdir: str | None,
                 interpreter_env: dict[str, str], on_output: Callable[[str], None] | None = None) -> None:
        self.proc = proc
        self.sock = sock
        self.workdir = workdir
        self.interpreter_env = interpreter_env
        self.alive = True
        self.info: dict[str, Any] = {}
        self.output: deque[str] = deque(maxlen=40)  # its own stdout/stderr, for a failure message
        self.on_output = on_output  # and to whom each line goes as it comes (a snapshot's prints)
        self.children: dict[int, ZygoteChild] = {}
        self._ids = itertools.count(1)
        loop = asyncio.get_running_loop()
        self._hello: asyncio.Future[dict[str, Any]] = loop.create_future()
        # id → (future, stdout read end, stderr read end or None)
        self._pending: dict[int, tuple[asyncio.Future[ZygoteChild], int, int | None]] = {}
        # The loop keeps one writer callback per fd: concurrent senders waiting for room would replace
        # each other's (and the first to finish would remove them all), so they take turns instead.
        self._send_lock = asyncio.Lock()
        self._writable: asyncio.Future[None] | None = None  # the waiting sender's, while one waits
        loop.add_reader(sock.fileno(), self._on_readable)
        self._drain = loop.create_task(self._drain_output())

    @classmethod
    async def start(cls, env: dict[str, str], pass_fds: tuple[int, ...], timeout: float) -> ForkServer:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Its lifeline is the first replica's: mwtui's, the same for every replica.
        raw = env.get(LIFELINE_ENV, "")
        lifeline = int(raw) if raw.isdigit() and int(raw) in pass_fds else None
        argv = [sys.executable, "-m", "mwtui.engine.zygote", "--fd", str(theirs.fileno())]
        if lifeline is not None:
            argv += ["--lifeline", str(lifeline)]
        argv.append("--title-room=" + "." * TITLE_ROOM)  # rewritten at once (see zygote.set_title)
        # Nor the first replica's container variables (MODAL_TASK_ID, ...): each fork gets its own.
        zenv = {k: v for k, v in env.items() if k not in (LIFELINE_ENV, READY_FD_ENV) and k not in modal_env.RESERVED}
        # An empty folder as cwd, hence as its sys.path[0]: nothing there can shadow a package, and
        # nothing of the user's can be imported by accident.
        workdir = scratch.make("zygote")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, cwd=workdir, env=zenv,
                pass_fds=(theirs.fileno(), *(() if lifeline is None else (lifeline,))),
                start_new_session=True,  # never in a replica's group, nor in mwtui's
            )
        except BaseException:
            ours.close()
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        zygote = cls(proc, ours, workdir, _interpreter_env(env))
        try:
            zygote.info = await asyncio.wait_for(asyncio.shield(zygote._hello), timeout)
        except BaseException as e:
            await zygote.close()
            if isinstance(e, asyncio.TimeoutError):
                raise ZygoteUnavailable(f"no answer within {timeout:g} s{zygote.last_words()}") from None
            raise
        if zygote.info.get("threads", 1) != 1:
            # Something it imported (a sitecustomize, a .pth file, an APM agent) started a thread: a
            # child forked now could inherit a lock held by it, forever.
            await zygote.close()
            raise ZygoteUnavailable(f"{zygote.info['threads']} threads were running after its imports, "
                                    "so forking it is unsafe")
        return zygote

    def last_words(self) -> str:
        lines = [line for line in self.output if line.strip()]
        return (": " + " | ".join(lines[-5:])) if lines else ""

    def compatible(self, env: dict[str, str]) -> bool:
        return _interpreter_env(env) == self.interpreter_env

    async def spawn(self, argv: list[str], env: dict[str, str], cwd: str, pass_fds: tuple[int, ...], *,
                    main: str = "worker", separate_stderr: bool = False) -> ZygoteChild:
        if not self.alive:
            raise ZygoteUnavailable("the zygote is gone")
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe() if separate_stderr else (None, None)
        rid = next(self._ids)
        future: asyncio.Future[ZygoteChild] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (future, out_r, err_r)
        request = {
            "id": rid, "argv": argv, "env": env, "cwd": cwd, "pass_fds": list(pass_fds),
            "started": time.monotonic(),  # CLOCK_MONOTONIC is system-wide: the child's startup_ms starts here
            "main": main, "stderr": separate_stderr,
        }
        try:
            await self._send(json.dumps(request).encode(), [out_w, *([err_w] if err_w is not None else []), *pass_fds])
        except BaseException as e:  # too big (EMSGSIZE), the zygote just went, or we were cancelled
            # Never sent, so never answered: its read ends are ours to close.
            if self._pending.pop(rid, None) is not None:
                _close_fds(out_r, err_r)
            if isinstance(e, OSError):
                raise ZygoteUnavailable(f"could not ask the zygote: {e}") from e
            raise
        finally:
            _close_fds(out_w, err_w)  # the zygote got its own copies with the message
        child = await future  # raises ZygoteUnavailable if it refused or died meanwhile
        await child._connect_stdout()
        return child

    async def _send(self, data: bytes, fds: list[int]) -> None:
        """One message, whole (SOCK_SEQPACKET): waits for room in the socket's buffer, in turn with
        other senders (FIFO), and fails with OSError once the zygote is gone."""
        loop = asyncio.get_running_loop()
        async with self._send_lock:
            while True:
                if not self.alive:
                    raise BrokenPipeError("the zygote is gone")
                try:
                    socket.send_fds(self.sock, [data], fds)
                    return
                except BlockingIOError:
                    pass
                fd = self.sock.fileno()
                writable = self._writable = loop.create_future()
                loop.add_writer(fd, _resolve, writable)
                try:
                    await writable
                finally:
                    self._writable = None
                    if self.alive:  # else _died removed it, and the number may be another file's now
                        loop.remove_writer(fd)

    def _on_readable(self) -> None:
        while self.alive:
            try:
                data = self.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._died()
                return
            try:
                self._handle(json.loads(data))
            except (ValueError, KeyError, TypeError):
                continue

    def _handle(self, msg: dict[str, Any]) -> None:
        if "exit" in msg:
            child = self.children.pop(msg["exit"], None)
            if child is not None:
                child._set_exit(int(msg["code"]))
        elif "id" in msg:
            future, out_r, err_r = self._pending.pop(msg["id"], (None, -1, None))
            if future is None:
                return
            if "pid" in msg:
                # Registered now, not when spawn() resumes: its exit may be the very next message.
                child = ZygoteChild(int(msg["pid"]), out_r, err_r)
                self.children[child.pid] = child
                if future.done():  # the spawn was cancelled: nobody will ever stop this one
                    child._discard_stdout()
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGKILL)
                else:
                    future.set_result(child)
            else:
                _close_fds(out_r, err_r)
                if not future.done():
                    future.set_exception(ZygoteUnavailable(f"the zygote refused: {msg.get('error')}"))
        elif "hello" in msg and not self._hello.done():
            self._hello.set_result(msg)

    def _died(self) -> None:
        if not self.alive:
            return
        self.alive = False
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.sock.fileno())
        if self._writable is not None:  # a sender waits for room that will never come: wake it to fail
            loop.remove_writer(self.sock.fileno())
            _resolve(self._writable)
        self.sock.close()
        gone = ZygoteUnavailable(f"the zygote ended{self.last_words()}")
        if not self._hello.done():
            self._hello.set_exception(gone)
        for future, out_r, err_r in self._pending.values():
            _close_fds(out_r, err_r)
            if not future.done():
                future.set_exception(gone)
        self._pending.clear()
        for child in self.children.values():
            child._orphaned()
        self.children.clear()

    async def _drain_output(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            if self.on_output is not None:
                self.on_output(line)

    async def close(self) -> None:
        self._died()  # closing our end is what tells it to exit
        try:
            await asyncio.wait_for(self.proc.wait(), 5.0)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._drain, 1.0)
        if isinstance(self.proc, ZygoteChild):
            self.proc.close_pipes()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # a writer callback may fire again before its waiter has removed it
        future.set_result(None)


def _close_fds(*fds: int | None) -> None:
    for fd in fds:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class _Announced:
    """A cold-started replica whose log begins with a line of ours (why it was started cold)."""

    def __init__(self, proc: ReplicaProcess, line: str) -> None:
        self._proc = proc
        self._line = line.encode() + b"\n"
        self.stdout: AsyncIterator[bytes] = self._lines()  # one iterator: the line is read once

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def _lines(self) -> AsyncIterator[bytes]:
        yield self._line
        if self._proc.stdout is not None:
            async for raw in self._proc.stdout:
                yield raw

    async def wait(self) -> int:
        return await self._proc.wait()

    def send_signal(self, sig: int) -> None:
        self._proc.send_signal(sig)


class ZygoteSpawner:
    """Forks replicas from a zygote started on the first spawn; cold-starts when it cannot.

    A request whose interpreter variables (PYTHONPATH, …) differ from the zygote's starts cold. A zygote
    that dies is restarted on the next spawn, up to `max_restarts` times; one that cannot start makes
    every later replica start cold."""

    def __init__(self, *, start_timeout: float = 30.0, max_restarts: int = 5, fallback: Spawner | None = None) -> None:
        self.start_timeout = start_timeout
        self.max_restarts = max_restarts
        self.fallback: Spawner = fallback or ColdSpawner()
        self.cold_reason: str | None = None  # set once we gave up on the zygote for good
        self.restarts = 0
        self._zygote: ForkServer | None = None
        self._lock: asyncio.Lock | None = None
        self._announced = False
        self._closed = False

    @property
    def zygote_pid(self) -> int | None:
        z = self._zygote
        return z.proc.pid if z is not None and z.alive else None

    async def spawn(
        self, worker_argv: list[str], env: dict[str, str], cwd: str, pass_fds: tuple[int, ...]
    ) -> ReplicaProcess:
        zygote = await self._running(env, pass_fds)
        if zygote is not None and zygote.compatible(env):
            try:
                return await zygote.spawn(worker_argv, env, cwd, pass_fds)
            except ZygoteUnavailable:
                pass  # this one starts cold; if it died, the next spawn starts a new one
        proc = await self.fallback.spawn(worker_argv, env, cwd, pass_fds)
        if self.cold_reason is not None and not self._announced:
            self._announced = True
            return _Announced(proc, f"mwtui: warning: {self.cold_reason}; replicas start cold (slower)")
        return proc

    async def fork_discovery(
        self, argv: list[str], env: dict[str, str], cwd: str, pass_fds: tuple[int, ...]
    ) -> ZygoteChild | None:
        """Fork `python -m mwtui.engine.import_child ARGV` from the zygote (starting it if need be): in a
        new session, stdout and stderr on pipes of their own, stdin empty, `pass_fds` inherited (an
        "--fd N" in ARGV naming one of them is renumbered in the child). None when the zygote cannot:
        the caller then starts discovery cold."""
        zygote = await self._running(env, pass_fds)
        if zygote is None or not zygote.compatible(env):
            return None
        try:
            return await zygote.spawn(argv, env, cwd, pass_fds, main="discovery", separate_stderr=True)
        except ZygoteUnavailable:
            return None

    async def fork_snapshot(
        self, argv: list[str], env: dict[str, str], cwd: str, pass_fds: tuple[int, ...], timeout: float,
        on_output: Callable[[str], None] | None = None,
    ) -> tuple[ForkServer | None, dict[str, Any]]:
        """Fork a generation's snapshot (`worker/snapshot.py` with ARGV) and wait for its hello. Returns
        the snapshot, ready to fork replicas, and its hello; (None, hello) when it could not take one
        (hello then says why: "failed", "unsafe"), or (None, {"error": ...}) when the zygote cannot."""
        zygote = await self._running(env, pass_fds)
        if zygote is None or not zygote.compatible(env):
            return None, {"error": "no zygote"}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            child = await zygote.spawn([*argv, "--fd", str(theirs.fileno())], env, cwd,
                                       (*pass_fds, theirs.fileno()), main="snapshot")
        except ZygoteUnavailable as e:
            ours.close()
            return None, {"error": str(e)}
        finally:
            theirs.close()
        ours.setblocking(False)
        snap = ForkServer(child, ours, None, zygote.interpreter_env, on_output)
        try:
            hello = await asyncio.wait_for(asyncio.shield(snap._hello), timeout)
        except (asyncio.TimeoutError, ZygoteUnavailable) as e:
            await snap.close()
            return None, {"error": str(e) or f"no answer within {timeout:g} s"}
        except asyncio.CancelledError:
            # Not wanted any more, its import perhaps stuck in a loop: its whole group goes now.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            snap._died()
            raise
        if "snapshot" not in hello:
            await snap.close()
            return None, hello
        snap.info = hello
        return snap, hello

    async def _running(self, env: dict[str, str], pass_fds: tuple[int, ...]) -> ForkServer | None:
        if self.cold_reason is not None or self._closed:
            return None
        if self._zygote is not None and self._zygote.alive:
            return self._zygote
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # concurrent first spawns share one start
            if self._zygote is not None and self._zygote.alive:
                return self._zygote
            if self._zygote is not None:
                await self._zygote.close()
                self._zygote = None
                self.restarts += 1
                if self.restarts > self.max_restarts:
                    self.cold_reason = f"the zygote died {self.restarts} time{'s' if self.restarts > 1 else ''}"
                    return None
            try:
                self._zygote = await ForkServer.start(env, pass_fds, self.start_timeout)
            except (OSError, ZygoteUnavailable) as e:
                self.cold_reason = f"the zygote could not start ({e})"
                return None
            return self._zygote

    async def close(self) -> None:
        self._closed = True
        if self._zygote is not None:
            await self._zygote.close()
            self._zygote = None
        await self.fallback.close()


def zygote_supported() -> bool:
    """fork, and fds over a SOCK_SEQPACKET Unix socket (Linux; not macOS, which lacks SEQPACKET)."""
    if not (hasattr(os, "fork") and hasattr(socket, "send_fds") and hasattr(socket, "SOCK_SEQPACKET")):
        return False
    try:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError:
        return False
    a.close()
    b.close()
    return True


def default_spawner() -> Spawner:
    """The zygote where the platform supports it, else cold starts."""
    return ZygoteSpawner() if zygote_supported() else ColdSpawner()
