"""The zygote: one process that has already imported what replicas run on (uvicorn, uvloop, httptools,
FastAPI/Starlette/pydantic, gunicorn, a2wsgi, Flask, psutil, mwtui's worker) but never any user code,
and forks a replica per request. A forked replica skips the ~0.5 s of imports a fresh interpreter pays.
The user's file is imported by each child, fresh: the zygote never imports anything of the app's.

    python -m mwtui.engine.zygote --fd N [--lifeline M]

It is started (and spoken to) by `spawner.ZygoteSpawner` over a SOCK_SEQPACKET socketpair (fd N), one
JSON object per message:

    → {"id", "argv", "env", "cwd", "pass_fds", "started", "main", "stderr"}
                                   with fds [stdout write end, (stderr write end if "stderr"), *pass_fds]
    ← {"hello": pid, "preload_ms", "modules", "threads"}  once, when the first imports are done
    ← {"id", "pid"} or {"id", "error"}                     per request, right after the fork
    ← {"exit": pid, "code"}                                when a replica ends (code as asyncio's)

Forking is only safe from a single-threaded process, so the zygote runs no thread at all: it watches
the socket, SIGCHLD (through a wakeup pipe) and mwtui's lifeline in one poll loop, and exits when the
socket or the lifeline closes, killing every replica's whole tree on its way out.

The zygote is a child subreaper (see proctree): when a replica dies, however it died, what it started
is reparented here, not to init. Anything of ours that we did not fork is such an orphan, and is killed
at once (its own children arrive in turn, and are killed in turn).

Each forked child is made to look like a fresh `python -m mwtui.engine.worker` started by the cold
spawner (see `_become_child`): own session, the received fds on 0/1/2 and nothing else open, the
request's cwd, env, argv and sys.path[0], default signals, fresh stdio objects, a reseeded random, and
no event loop (the worker creates its own).

A request's "main" says what the child runs: "worker" (the default, a replica), "discovery" (`python
-m mwtui.engine.import_child --fd N --job JOB <ref>`, which imports the user's file in the child and
writes its JOB's JSON to fd N; see import_child.py) or "snapshot" (a generation's snapshot, which
imports the file and then forks replicas itself; see worker/snapshot.py). With "stderr" the child's stderr gets a pipe of its own
instead of sharing stdout's. An argv value after "--fd" that names a passed fd is renumbered, as the env's
*_FD variables are.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import importlib.util
import io
import json
import os
import random
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from .proctree import become_subreaper, kill_all, kill_tree

# A new spare is forked once the zygote has been idle this long: not while the replica it just gave
# away starts (they would share the CPU), nor in the middle of a burst (which forks directly).
SPARE_AFTER_MS = 30
MAX_MESSAGE = 1 << 20  # a request is mostly its env; the spawner cold-starts anything bigger
FDS_PER_REQUEST = 16
CHILD_SETUP_FAILED = 70  # EX_SOFTWARE: the child died before the worker's own main ran
# What a child may run.
MAINS = {"worker": "mwtui.engine.worker", "discovery": "mwtui.engine.import_child",
         "snapshot": "mwtui.engine.worker.snapshot"}

# Imported once here so that no replica pays for them. None of them may start a thread or an event
# loop at import; optional ones may be missing (the worker then reports what it needs). What FastAPI
# and uvicorn replicas need comes first, before the zygote says hello; the rest (gunicorn, Flask, …)
# is imported one module at a time while no request waits, so the first replica is not delayed by it.
PRELOAD = (
    "json",
    "mwtui.engine.worker.__main__",
    "mwtui.engine.worker.replica",
    "mwtui.engine.worker.fastapi_app",
    "mwtui.engine.sdk",
    "mwtui.engine.loader",
    "mwtui.engine.discovery",
    "mwtui.engine.import_child",
    "uvloop",
    "httptools",
    "uvicorn",
    "uvicorn.config",
    "uvicorn.server",
    "uvicorn.middleware.proxy_headers",
    "mwtui.engine.worker.uvicorn_server",
    "fastapi",
    "fastapi.middleware.cors",
    "fastapi.responses",
    "starlette.responses",
    "pydantic",
    "anyio",
    "anyio._backends._asyncio",
)
PRELOAD_WHEN_IDLE = (
    "email.utils",
    "encodings.idna",
    "logging.config",
    "gunicorn",
    "gunicorn.glogging",
    "gunicorn.http",
    "gunicorn.http.wsgi",
    "gunicorn.sock",
    "gunicorn.workers.gthread",
    "mwtui.engine.worker.gunicorn_server",
    "mwtui.engine.worker.forward",
    "a2wsgi",
    "flask",
    "psutil",
)


def _import(name: str) -> None:
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken optional package is the replica's to report
        pass


def _warm_up() -> None:
    """Do once what every replica would otherwise do first: the imports FastAPI and uvicorn make lazily
    while an app is built and a server configured (pydantic.v1 and friends). Builds objects only: no
    loop, no socket, no thread, nothing of the user's."""
    with contextlib.suppress(Exception):
        from mwtui.engine.worker.fastapi_app import build_fastapi_app

        def hello(name: str = "world") -> dict[str, str]:
            return {"hello": name}

        build_fastapi_app(hello, "GET", True)
    with contextlib.suppress(Exception):
        from uvicorn.config import HTTP_PROTOCOLS, LIFESPAN, WS_PROTOCOLS
        from uvicorn.importer import import_from_string

        for ref in (HTTP_PROTOCOLS["httptools"], WS_PROTOCOLS["auto"], LIFESPAN["off"]):
            import_from_string(ref)


def _warm_up_flask() -> None:
    with contextlib.suppress(Exception):
        import flask

        flask.Flask(__name__)


class Zygote:
    def __init__(self, sock: socket.socket, lifeline: int | None, spares: int = 0) -> None:
        self.sock = sock
        self.lifeline = lifeline
        self.children: set[int] = set()
        # With spares (a snapshot), children are forked ahead, waiting for their requests: a replica
        # asked for skips the fork (2-3 ms for a process this size) and the shedding. At first as many
        # as a rollout will ask for at once; one from then on.
        self.spares = spares
        self.spare: list[tuple[int, socket.socket]] = []  # each one's pid, our end of its socket
        # SIGCHLD wakes poll() through this pipe; the handler itself does nothing.
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.sock.send(json.dumps(message).encode())
        except OSError:
            self.exit()  # the spawner is gone: so is our purpose

    def exit(self) -> NoReturn:
        """mwtui is gone or done with us: no replica (nor anything it started) may outlive it. Each has
        its own lifeline too, but one stuck in user code holding the GIL would never act on it."""
        for pid in list(self.children) + [pid for pid, _ in self.spare]:
            with contextlib.suppress(Exception):
                kill_tree(pid, include_root=True)
        with contextlib.suppress(Exception):
            kill_tree(os.getpid())  # the orphans of replicas that died meanwhile
        os._exit(0)

    def serve(self, idle_imports: bool = True) -> NoReturn:
        poller = select.poll()  # not epoll: no fd of its own that a forked child would inherit
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        if self.lifeline is not None:
            poller.register(self.lifeline, select.POLLIN)
        later: list[Callable[[], None]] = [
            *(functools.partial(_import, name) for name in PRELOAD_WHEN_IDLE), _warm_up_flask,
        ] if idle_imports else []
        while True:
            wants_spare = len(self.spare) < self.spares
            events = poller.poll(0 if later else SPARE_AFTER_MS if wants_spare else None)
            if not events and later:
                later.pop(0)()  # one module at a time: a request waits for one import at most
                continue
            if not events and wants_spare:
                self.fork_spare()
                continue
            for fd, _ in events:
                if fd == self.lifeline:
                    self.exit()  # mwtui is gone
                elif fd == self.wake_r:
                    with contextlib.suppress(OSError):
                        while os.read(self.wake_r, 512):
                            pass
                    self.reap()
                else:
                    self.receive()
            self.reap()  # cheap, and covers a SIGCHLD that came while we were busy forking

    def receive(self) -> None:
        try:
            data, fds, flags, _ = socket.recv_fds(self.sock, MAX_MESSAGE, FDS_PER_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.exit()
        if not data:
            self.exit()  # the spawner closed its end: mwtui is done with us
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            self._close(fds)
            with contextlib.suppress(ValueError):
                self.send({"id": json.loads(data).get("id"), "error": "request too large"})
            return
        try:
            request = json.loads(data)
        except ValueError:
            self._close(fds)
            return
        self.spawn(request, fds)

    def spawn(self, request: dict[str, Any], fds: list[int]) -> None:
        rid = request.get("id")
        expected = 1 + bool(request.get("stderr")) + len(request.get("pass_fds", ()))
        if len(fds) != expected:
            self._close(fds)
            self.send({"id": rid, "error": f"expected {expected} fds, got {len(fds)}"})
            return
        if request.get("main", "worker") not in MAINS:
            self._close(fds)
            self.send({"id": rid, "error": f"unknown main {request.get('main')!r}"})
            return
        while self.spare:
            if self._hand_to_spare(request, fds):
                return
        if threading.active_count() != 1:
            # Something started a thread in here: forking now could leave a child holding a lock forever.
            self._close(fds)
            self.send({"id": rid, "error": f"the zygote has {threading.active_count()} threads; cannot fork"})
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        gc.freeze()
        try:
            pid = os.fork()
        except OSError as e:
            self._close(fds)
            self.send({"id": rid, "error": f"fork failed: {e}"})
            return
        if pid == 0:
            try:
                _become_child(self, request, fds)
            except BaseException:  # noqa: BLE001 - nothing may return into the zygote's loop
                with contextlib.suppress(Exception):
                    os.write(2, traceback.format_exc().encode(errors="replace"))
            os._exit(CHILD_SETUP_FAILED)
        self.children.add(pid)
        self._close(fds)  # the child has its own copies; ours would keep its pipes open
        self.send({"id": rid, "pid": pid})

    def fork_spare(self) -> None:
        """One more spare child waiting (with fewer than wanted, when forking is safe)."""
        if len(self.spare) >= self.spares or threading.active_count() != 1:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return
        if pid == 0:
            try:
                ours.close()
                _wait_as_spare(self, theirs)
            except BaseException:  # noqa: BLE001 - nothing may return into the zygote's loop
                with contextlib.suppress(Exception):
                    os.write(2, traceback.format_exc().encode(errors="replace"))
            os._exit(CHILD_SETUP_FAILED)
        theirs.close()
        self.spare.append((pid, ours))

    def _hand_to_spare(self, request: dict[str, Any], fds: list[int]) -> bool:
        """Give the request (and its fds) to the spare waiting longest; False if it is gone."""
        pid, sock = self.spare.pop(0)
        self.spares = max(1, self.spares - 1)  # the first rollout's are handed out: one from now on
        try:
            socket.send_fds(sock, [json.dumps(request).encode()], fds)
        except OSError:
            return False
        finally:
            sock.close()
        self.children.add(pid)
        self._close(fds)
        self.send({"id": request.get("id"), "pid": pid})
        return True  # the next spare is forked once no request has come for SPARE_AFTER_MS

    def reap(self) -> None:
        reaped = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == 0:
                break
            reaped = True
            if pid in self.children:  # else an orphan of a dead replica (see kill_orphans)
                self.children.discard(pid)
                self.send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})
            else:
                for spare in [s for s in self.spare if s[0] == pid]:
                    spare[1].close()  # a spare died waiting: it is forked again when idle
                    self.spare.remove(spare)
        if reaped:
            self.kill_orphans()

    def kill_orphans(self) -> None:
        """Whatever dead replicas left behind was reparented to us (a subreaper) before we learnt of
        their deaths: any child of ours that we did not fork. Its children come here when it dies, and
        that death brings us back here."""
        with contextlib.suppress(Exception):
            import psutil

            ours = self.children | {pid for pid, _ in self.spare}
            kill_all([p for p in psutil.Process().children() if p.pid not in ours])

    @staticmethod
    def _close(fds: list[int]) -> None:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


# ------------------------------------------------------------------------------------------- the child


def _shed(zygote: Zygote) -> None:
    """What every child sheds of the zygote, whatever it is asked to run."""
    # Signals first: the zygote's SIGCHLD handler and wakeup fd must not fire in here.
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in a fresh interpreter, until the worker's Stop
    signal.signal(signal.SIGINT, signal.default_int_handler)
    zygote.sock.detach()  # the number is closed below; the object must never close it again later
    for _, sibling in zygote.spare:
        sibling.detach()  # a sibling's socket: closed below too
    os.setsid()  # its own session and process group, killed as one (as ColdSpawner's start_new_session)


def _wait_as_spare(zygote: Zygote, sock: socket.socket) -> NoReturn:
    """A spare: shed now, then wait for a request (the zygote's end closing means: exit)."""
    _shed(zygote)
    _close_all_but({0, 1, 2, sock.fileno()})
    try:
        data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, FDS_PER_REQUEST)
    except OSError:
        os._exit(0)
    if not data:
        os._exit(0)
    sock.close()
    _become_child(zygote, json.loads(data), fds, shed=False)


def _become_child(zygote: Zygote, request: dict[str, Any], fds: list[int], shed: bool = True) -> NoReturn:
    """In the forked child: shed everything of the zygote, then run the worker's (or discovery's) main."""
    if shed:
        _shed(zygote)

    separate_stderr = bool(request.get("stderr"))
    stdout_w = fds[0]
    stderr_w = fds[1] if separate_stderr else stdout_w
    passed = fds[2:] if separate_stderr else fds[1:]
    os.dup2(stdout_w, 1)
    os.dup2(stderr_w, 2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    _close_all_but({0, 1, 2, *passed})
    for fd in passed:
        os.set_inheritable(fd, True)  # as pass_fds leaves them

    cwd = request["cwd"]
    os.chdir(cwd)
    # The env names the fds by the spawner's numbers; here they arrived under other numbers.
    renumber = {str(old): str(new) for old, new in zip(request.get("pass_fds", ()), passed, strict=True)}
    env: dict[str, str] = {
        k: renumber.get(v, v) if k.endswith("_FD") else v for k, v in request["env"].items()
    }
    # Only what differs: each change is a putenv/unsetenv, and most of a replica's env is ours already.
    for key in [k for k in os.environ if k not in env]:
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value
    argv = [
        renumber.get(a, a) if i > 0 and request["argv"][i - 1] == "--fd" else a
        for i, a in enumerate(request["argv"])
    ]
    main = request.get("main", "worker")
    with contextlib.suppress(AttributeError):
        time.tzset()  # TZ may differ from the zygote's

    _reopen_stdio(env)
    _look_like_python_m(cwd, argv, MAINS[main])
    importlib.invalidate_caches()  # directory listings cached in the zygote predate the user's last save
    random.seed()  # os.fork reseeds too; never share a sequence with a sibling

    gc.enable()
    if main == "discovery":
        _run_discovery(argv)
    if main == "snapshot":
        from mwtui.engine.worker.snapshot import main as snapshot_main

        snapshot_main(argv)
    from mwtui.engine.worker.__main__ import run

    run(argv, float(request.get("started") or time.monotonic()))


def _run_discovery(argv: list[str]) -> NoReturn:
    """What `python -m mwtui.engine.import_child ARGV` does once imported (its `if __name__` block)."""
    from mwtui.engine.import_child import exit_after

    exit_after(argv)
    raise AssertionError("exit_after returned")  # pragma: no cover


def _close_all_but(keep: set[int]) -> None:
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            open_fds = [int(name) for name in os.listdir(folder)]
        except (OSError, ValueError):
            continue
        for fd in open_fds:
            if fd not in keep:
                with contextlib.suppress(OSError):
                    os.close(fd)  # the listing's own fd is already closed: EBADF, ignored
        return
    top = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536
    lo = 0
    for fd in sorted(keep) + [top]:
        if fd > lo:
            os.closerange(lo, fd)
        lo = fd + 1


def _reopen_stdio(env: dict[str, str]) -> None:
    """sys.stdout and friends were made by the zygote (for its own fds, buffered or not as its env said):
    make new ones on fds 0/1/2, unbuffered, as `python -u` would have."""
    encoding, _, errors = (env.get("PYTHONIOENCODING") or "").partition(":")
    encoding = encoding or sys.stdout.encoding or "utf-8"

    def writer(fd: int, default_errors: str) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "w", closefd=False)
        return io.TextIOWrapper(raw, encoding=encoding, errors=errors or default_errors,
                                line_buffering=True, write_through=True)

    sys.stdin = sys.__stdin__ = io.TextIOWrapper(
        io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding=encoding, errors=errors or "strict"
    )
    sys.stdout = sys.__stdout__ = writer(1, "strict")
    sys.stderr = sys.__stderr__ = writer(2, "backslashreplace")


def _look_like_python_m(cwd: str, argv: list[str], package: str = "mwtui.engine.worker") -> None:
    """What `python -m PACKAGE ARGV` run in `cwd` would show: sys.argv, sys.path[0] (the cwd, as -m puts
    it there), its command line in `ps`, and a `__main__` module that is PACKAGE's (for code that inspects
    it, e.g. multiprocessing's spawn)."""
    try:
        spec = importlib.util.find_spec(package + ".__main__")
    except ModuleNotFoundError:  # a module run by -m, not a package
        spec = importlib.util.find_spec(package)
    main_file = spec.origin if spec and spec.origin else "-m"
    sys.argv = [main_file, *argv]
    set_title([sys.executable, "-m", package, *argv])  # for ps, and psutil's cmdline()
    if sys.path and sys.path[0] == _start_dir:
        sys.path[0] = os.path.abspath(cwd)
    else:
        sys.path.insert(0, os.path.abspath(cwd))
    if spec is not None:
        module = importlib.util.module_from_spec(spec)  # its code is not run: `run` below is what it would do
        module.__name__ = "__main__"
        sys.modules["__main__"] = module


_start_dir = ""  # sys.path[0] in here: the empty folder the spawner starts us in
TITLE_ROOM = 2048  # bytes of argv the spawner pads our command line with, for the replicas' titles
_title_area: tuple[int, int] | None = None  # (address, size) of our argv strings, once checked


def find_title_area() -> None:
    """Linux: where the kernel reads /proc/self/cmdline from (stat fields 48-49), if it holds exactly
    our original argv (then writing there is safe: nothing else points into it)."""
    global _title_area
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        start, end = int(fields[45]), int(fields[46])
        expected = b"\0".join(os.fsencode(a) for a in sys.orig_argv) + b"\0"
        if end - start == len(expected) and ctypes.string_at(start, end - start) == expected:
            _title_area = (start, end - start)
    except (OSError, ValueError, IndexError, ImportError):
        pass


def set_title(words: list[str]) -> None:
    """What `ps` and psutil show as our command line, as setproctitle does it: the title, a NUL, and a
    last byte that is not NUL (which tells the kernel to read only up to the first NUL)."""
    if _title_area is None:
        return
    import ctypes

    start, size = _title_area
    title = " ".join(words).encode(errors="replace")[: size - 2]
    ctypes.memmove(start, title + b"\0" * (size - len(title) - 1) + b" ", size)


def main(argv: list[str] | None = None) -> NoReturn:
    p = argparse.ArgumentParser(prog="python -m mwtui.engine.zygote")
    p.add_argument("--fd", type=int, required=True, help="the SOCK_SEQPACKET socket to the spawner")
    p.add_argument("--lifeline", type=int, help="read end of mwtui's lifeline: exit at its end-of-file")
    p.add_argument("--title-room", default="", help=argparse.SUPPRESS)  # padding: room for replicas' titles
    args = p.parse_args(argv)
    # Run as `python -m`, this module is __main__: a snapshot (worker/snapshot.py) importing it by name
    # must get this very module, whose title area and start folder are known, not a fresh copy.
    sys.modules["mwtui.engine.zygote"] = sys.modules[__name__]
    global _start_dir
    _start_dir = os.getcwd()
    find_title_area()
    set_title([sys.executable, "-m", "mwtui.engine.zygote", "--fd", str(args.fd),
               *(["--lifeline", str(args.lifeline)] if args.lifeline is not None else [])])
    sock = socket.socket(fileno=args.fd)
    sock.set_inheritable(False)
    become_subreaper()  # before any fork: orphans of replicas come to us (see Zygote.kill_orphans)
    if args.lifeline is not None:
        os.set_inheritable(args.lifeline, False)
    t0 = time.monotonic()
    # As gc.freeze's docs advise for fork without exec: no collection in here (it would leave holes in
    # and write to pages the children share), everything frozen before each fork, gc on in each child.
    gc.disable()
    for name in PRELOAD:
        _import(name)
    _warm_up()
    zygote = Zygote(sock, args.lifeline)
    zygote.send({
        "hello": os.getpid(),
        "preload_ms": round((time.monotonic() - t0) * 1000, 1),
        "modules": len(sys.modules),
        "threads": threading.active_count(),
    })
    zygote.serve()


if __name__ == "__main__":
    main()
