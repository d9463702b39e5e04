"""The life of one replica, in Modal's container order (MODAL_SEMANTICS §3.6):

import the file → (class) make the instance, run `@enter` → build every web endpoint in method order
(FastAPI wrapper, ASGI/WSGI factory, web_server function and its port) → start every ASGI lifespan in
order → serve → on SIGTERM/SIGINT: drain, lifespan shutdowns in order, `@exit` → exit 0.

Any error before serving is reported as {"event": "failed", ...} and the replica exits 3. Each startup
step is announced ({"event": "starting", ...}) so that the supervisor can enforce `startup_timeout` and
say which step hung. User code that is synchronous runs in the main thread with no event loop running
(as in a plain script), and async user code runs on the replica's one loop, the same loop that later
serves requests. Requests are bounded by the function's `timeout` (see timeouts.py).

The replica is a child subreaper (see proctree): whatever user code starts stays below it, even what
leaves its process group, and every way out of the replica takes all of that down with it.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import functools
import hashlib
import io
import os
import signal
import socket
import sys
import time
import traceback
import types
from collections.abc import Awaitable
from typing import Any, NoReturn

from .. import lifeline
from ..labels import default_label
from ..loader import AppRef
from ..proctree import TERM_GRACE_S, become_subreaper, kill_tree
from ..sdk import runtime
from . import container, network, snapshot
from .dispatch import Dispatcher
from .fastapi_app import FastAPIMissing, build_fastapi_app
from .lifespan import ASGIApp, Lifespan, LifespanFailed, WithState
from .listen import GRACEFUL_SECONDS, KEEPALIVE_SECONDS, Listen, bind_tcp, bind_unix
from .pool import Endpoint, Pool, callable_methods, import_app, params_arg
from .report import (
    FAILED_EXIT_CODE,
    HEARTBEAT_S,
    RETIRED_EXIT_CODE,
    Reporter,
    StartupFailure,
    Upstream,
    failure,
    format_traceback,
    summary,
)
from .stop import Stop
from .timeouts import TIMEOUT_GRACE_S, Overruns, Timeout, WSGITimeout
from .web_server import FunctionFailed, PortBusy, StopRequested, WebServer

# Modal bridges WSGI with a2wsgi on an effectively unbounded pool; concurrency is limited upstream
# (by Modal's input scheduler there, by the gateway here), not by the thread count.
A2WSGI_WORKERS = 10_000
# Gunicorn's gthread pool for a lone WSGI function: at least max_inputs. With the default
# max_inputs=1 we still give it 4 threads: the gateway already holds requests at max_inputs, and a
# few spare threads keep one slow or abandoned request (client gone, gateway timeout) from stalling
# the next; Modal's own WSGI pool is unbounded for the same reason.
MIN_WSGI_THREADS = 4


class _Stopped(Exception):
    """A stop arrived during startup: unwind what started and exit 0."""


@functools.cache
def worker_parser() -> argparse.ArgumentParser:
    """Made once (in a snapshot, before it forks: making one costs a forked replica about 1 ms)."""
    p = argparse.ArgumentParser(prog="python -m mwtui.engine.worker", description="Run one replica of a pool.")
    p.add_argument("app_ref", help="path/to/app.py or path/to/app.py::app_variable")
    p.add_argument("--pool", required=True, help="a web function's tag or a class's name")
    p.add_argument("--params", type=params_arg, metavar="JSON",
                   help='a parametrized class\'s parameter values, e.g. \'{"name": "a"}\'')
    p.add_argument("--socket-dir", help="folder for this replica's unix socket (unix mode)")
    p.add_argument("--replica", help="replica id, e.g. hello.0 (names the socket; unix mode)")
    p.add_argument(
        "--listen", default="unix", metavar="unix|tcp:HOST:PORT",
        help="unix (default): DIR/ID.sock behind the gateway; tcp:HOST:PORT: serve the pool on its own",
    )
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = worker_parser()
    args = p.parse_args(argv)
    try:
        args.listen = Listen.parse(args.listen)
    except ValueError as e:
        p.error(str(e))
    if not args.listen.tcp and not (args.socket_dir and args.replica):
        p.error("--socket-dir and --replica are required unless --listen tcp:HOST:PORT")
    return args


def unbuffer_stdio() -> None:
    """User prints and server logs reach the supervisor as they happen (what `python -u` does)."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")  # and the user's own Python subprocesses
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            fd = stream.fileno()
            stream.flush()
        except (AttributeError, OSError, ValueError):
            continue
        raw = io.FileIO(fd, "w", closefd=False)
        setattr(sys, name, io.TextIOWrapper(raw, encoding=stream.encoding, errors=stream.errors,
                                            write_through=True))


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # so sync user code asking for "the" loop gets ours
    return loop


# The kernel's limit on a Unix socket's path (sun_path: 108 bytes with its terminating NUL).
UNIX_PATH_MAX = 107


def socket_path(folder: str, replica: str) -> str:
    """Where replica `replica` listens: `<folder>/<replica>.sock`, or a name made short from it where
    that would be over the kernel's limit (a long function name, a deep temp dir)."""
    path = os.path.join(os.path.abspath(folder), f"{replica}.sock")
    if len(os.fsencode(path)) <= UNIX_PATH_MAX:
        return path
    digest = hashlib.sha256(replica.encode()).hexdigest()[:16]
    return os.path.join(os.path.abspath(folder), f"{digest}.sock")


class Replica:
    def __init__(self, args: argparse.Namespace, reporter: Reporter, stop: Stop) -> None:
        self.ref = AppRef.parse(args.app_ref)
        self.pool_name: str = args.pool
        self.params: dict[str, Any] | None = args.params
        self.listen: Listen = args.listen
        self.replica_id: str = args.replica or args.pool
        self.socket_path = "" if self.listen.tcp else socket_path(args.socket_dir, args.replica)
        self.app_name = self.ref.stem
        self.reporter = reporter
        self.stop = stop
        self.loop: asyncio.AbstractEventLoop | None = None
        self.apps: dict[str, ASGIApp] = {}
        self.upstreams: dict[str, Upstream] = {}
        self.lifespans: list[tuple[Endpoint, Lifespan]] = []
        self.web_servers: list[WebServer] = []
        self.socket_bound = False
        # A network namespace of its own (network.py): each fixed port is reached through a bridge.
        self.own_network = False
        self.bridges: list[tuple[str, Any]] = []  # (socket path, handoff.Handoff)
        self.timeout = 300.0  # the function's `timeout`, once imported
        self.master_pid: int | None = None  # under gunicorn: this process, its master
        self.taken: snapshot.Taken | None = None  # what the snapshot it was forked from holds, if any

    # --- the whole life ---------------------------------------------------------------------------

    def run(self) -> int:
        taken = self.taken = snapshot.taken(self.ref, self.pool_name)
        self.reporter.starting("forked from its generation's snapshot" if taken else
                               f"importing {os.path.basename(self.ref.path)}")
        try:
            pool = self._from_snapshot(taken) if taken else self._load()
        except StartupFailure as f:
            self.reporter.failed(f)
            return FAILED_EXIT_CODE
        # Only now is the function's own startup_timeout known (Modal's default: its `timeout`).
        self.timeout = float(pool.options.timeout)
        startup_timeout = pool.options.startup_timeout or pool.options.timeout
        self.reporter.starting("setting up its environment", float(startup_timeout))
        os.environ.update(pool.environment())
        if pool.server() == "gunicorn":
            return self._run_gunicorn(pool)
        return self._run_in_process(pool)

    def _from_snapshot(self, taken: snapshot.Taken) -> Pool:
        """The app is in memory already (and a plain class's snap=True enters have run): only this
        replica's own part is left."""
        os.environ.pop(runtime.POOL_PLAN_ENV, None)  # applied in the snapshot; user code need not see it
        self.app_name = getattr(taken.app, "name", None) or self.ref.stem
        return taken.pool_for(self.params)

    def _load(self) -> Pool:
        app = import_app(self.ref, self.pool_name, supervised=self.reporter.fd is not None)
        self.app_name = getattr(app, "name", None) or self.ref.stem
        pool = Pool.resolve(app, self.pool_name, self.ref.path, self.params)
        pool.check_image_imports()
        return pool

    def _run_in_process(self, pool: Pool) -> int:
        self.loop = _new_loop()
        try:
            self._start(pool)
            self._serve(pool)
            code = self.stop.exit_code
        except StartupFailure as f:
            self.reporter.failed(f)
            code = FAILED_EXIT_CODE
        except _Stopped:
            code = 0
        if not self._teardown(pool) and code == 0:
            code = 1  # stopped, but a lifespan shutdown or an @exit method failed (see stderr)
        return code

    def _run_async(self, aw: Awaitable[Any]) -> Any:
        assert self.loop is not None
        return self.loop.run_until_complete(aw)

    def _check_stop(self) -> None:
        """Between startup steps: stop if asked to."""
        asyncio.set_event_loop(self.loop)  # user code may have called asyncio.run(), which unsets it
        if self.stop.requested:
            raise _Stopped()

    # --- startup ----------------------------------------------------------------------------------

    def _start(self, pool: Pool) -> None:
        pool.enter(self._run_async, self.reporter.starting)
        self._check_stop()
        # FastAPI wrappers a snapshot built (no user code in them, and no lifespan to run).
        taken = self.taken
        prebuilt = taken.prebuilt if taken is not None and taken.pool is pool else {}
        for ep in pool.endpoints:
            if ep.name in prebuilt:
                self.apps[ep.name] = prebuilt[ep.name]
            elif ep.web.kind == "web_server":
                self.reporter.starting(f"running the @modal.web_server function of {ep.subject} and "
                                       f"waiting for port {ep.web.port}")
                self._start_web_server(ep)
            else:
                self.reporter.starting(f"building {ep.subject}" if ep.web.kind in ("fastapi", "call") else
                                       f"calling the @modal.{ep.web.decorator} factory of {ep.subject}")
                self.apps[ep.name] = self._build(ep, pool)
            self._check_stop()
        for ep in pool.endpoints:
            if ep.name in self.apps and ep.name not in prebuilt:
                self.reporter.starting(f"running the ASGI lifespan startup of {ep.subject}")
                self._start_lifespan(ep, pool)
                self._check_stop()
        self.reporter.starting("starting its server")

    def _build(self, ep: Endpoint, pool: Pool) -> ASGIApp:
        kind = ep.web.kind
        if kind == "call":
            from .call_app import CallApp, batching

            if pool.is_class:
                targets = {m.name: batching(types.MethodType(m.raw_f, pool.instance), m.batch_max_size, m.batch_wait_ms)
                           for m in callable_methods(pool.cls).values()}
            else:
                targets = {None: batching(ep.target, pool.options.batch_max_size, pool.options.batch_wait_ms)}
            return CallApp(targets, ep.name, pool.options.max_inputs)
        try:
            if kind == "fastapi":
                return build_fastapi_app(ep.target, ep.web.method, ep.web.docs)
            app = ep.target()  # the factory, called once per replica
            if kind == "wsgi":
                from a2wsgi import WSGIMiddleware

                return WSGIMiddleware(app, workers=A2WSGI_WORKERS, send_queue_size=1)
            return app
        except FastAPIMissing as exc:
            raise StartupFailure("build", ep.name, f"{ep.subject}: {exc}", format_traceback(exc)) from exc
        except (Exception, SystemExit) as exc:
            lead = ("building its FastAPI route raised" if kind == "fastapi"
                    else f"the @modal.{ep.web.decorator} factory raised")
            raise failure("build", ep.name, ep.subject, lead, exc, pool.app_file) from exc

    def _start_lifespan(self, ep: Endpoint, pool: Pool) -> None:
        app = self.apps[ep.name]
        lifespan = Lifespan(app)
        try:
            self._run_async(lifespan.startup())
        except LifespanFailed as exc:
            raise self._lifespan_failure(ep, pool, exc) from exc
        if lifespan.started:
            self.lifespans.append((ep, lifespan))
        self.apps[ep.name] = WithState(app, lifespan.state)

    @staticmethod
    def _lifespan_failure(ep: Endpoint, pool: Pool, exc: LifespanFailed) -> StartupFailure:
        cause = exc.__cause__
        if cause is not None:
            return failure("lifespan", ep.name, ep.subject, f"{exc.what}:", cause, pool.app_file)
        # The app only sent lifespan.startup.failed with a text: its last line is the gist.
        gist = next((line.strip() for line in reversed(exc.detail.splitlines()) if line.strip()), "")
        message = f"{ep.subject}: {exc.what}" + (f": {gist}" if gist else "")
        return StartupFailure("lifespan", ep.name, message, exc.detail or exc.what)

    def _start_web_server(self, ep: Endpoint) -> None:
        port = ep.web.port
        assert port is not None
        server = WebServer(ep.name, ep.target, port, ep.web.startup_timeout)
        try:
            server.start(lambda: self.stop.requested)
        except PortBusy as exc:
            raise StartupFailure(
                "web_server", ep.name,
                f"{ep.subject}: port {port} is already in use by {exc.holder}, so its web server cannot "
                f"listen there. Stop that process, or change the port in @modal.web_server({port}).",
            ) from exc
        except FunctionFailed as exc:
            raise failure("web_server", ep.name, ep.subject, "the @modal.web_server function raised",
                          exc.original, self.ref.path) from exc
        except TimeoutError as exc:
            raise StartupFailure("web_server", ep.name, f"{ep.subject}: {exc}", f"TimeoutError: {exc}\n") from exc
        except StopRequested as exc:
            raise _Stopped() from exc
        self.web_servers.append(server)
        self.upstreams[ep.name] = Upstream(self._bridge(ep, port) if self.own_network and not self.listen.tcp else f"tcp:127.0.0.1:{port}")

    def _bridge(self, ep: Endpoint, port: int) -> str:
        """The Unix socket through which the gateway gets connections to `port` in this replica's own
        network (handed over: it then talks to the server directly, see handoff.py)."""
        from .handoff import Handoff

        path = socket_path(os.path.dirname(self.socket_path), f"{self.replica_id}.port{port}")
        try:
            handoff = Handoff(bind_unix(path), port)
            handoff.start()
        except OSError as exc:
            raise StartupFailure("web_server", ep.name, f"{ep.subject}: cannot listen on unix socket {path} "
                                 f"for port {port}: {exc}", format_traceback(exc)) from exc
        self.bridges.append((path, handoff))
        return f"netns:{path}"

    def _close_bridges(self) -> None:
        for path, handoff in self.bridges:
            handoff.stop()
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.bridges.clear()

    # --- serving ----------------------------------------------------------------------------------

    def _ready(self, pool: Pool, pid: int | None = None) -> None:
        self.reporter.ready({ep.name: self.upstreams[ep.name] for ep in pool.endpoints}, pid=pid)
        if snapshot.forked():
            # Its own watch on mwtui's lifeline, started off the critical path: until now the snapshot's
            # (which takes its replicas down with it) stood for it.
            lifeline.watch_parent()
        if self.listen.tcp:  # no supervisor reads the ready line: tell the person (or the pod's log)
            print(f"mwtui: {pool.subject} serving on http://{self.listen.host}:{self.listen.port}",
                  file=sys.stderr)
        for server in self.web_servers:
            server.watch(self._server_lost)
        with contextlib.suppress(RuntimeError):  # no loop runs here (a web_server's own process serves)
            if self.reporter.fd is not None:
                self._beat(asyncio.get_running_loop())

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        """Tell the supervisor, from the event loop that serves requests, that it is not blocked."""
        self.reporter.beat()
        loop.call_later(HEARTBEAT_S, self._beat, loop)

    def _server_lost(self, reason: str) -> None:
        print(f"mwtui: {reason}; stopping this replica", file=sys.stderr)
        self.stop.request(exit_code=1)

    def _bind(self) -> tuple[socket.socket, str]:
        """The listening socket and its upstream address; OSError names what failed."""
        if self.listen.tcp:
            try:
                return bind_tcp(self.listen.host, self.listen.port), str(self.listen)
            except OSError as exc:
                raise OSError(f"cannot listen on {self.listen.host}:{self.listen.port}: {exc}") from exc
        try:
            sock = bind_unix(self.socket_path)
        except OSError as exc:
            raise OSError(f"cannot listen on unix socket {self.socket_path}: {exc}") from exc
        self.socket_bound = True
        return sock, f"unix:{self.socket_path}"

    def _serve_web_servers_only(self, pool: Pool) -> None:
        """Their servers run on their own. In tcp mode the listening port must reach the first one:
        nothing to do when it is its own port, else relay to it."""
        forwarder = None
        target = self.web_servers[0].port if self.web_servers else None
        if self.listen.tcp and target is not None and target != self.listen.port:
            from .forward import Forwarder

            try:
                sock, _ = self._bind()
                forwarder = Forwarder(sock, target)
                forwarder.start()
            except OSError as exc:
                raise StartupFailure("serve", pool.failure_endpoint, f"{pool.subject}: {exc}",
                                     format_traceback(exc)) from exc
        self._ready(pool)
        self.stop.wait()
        if forwarder is not None:
            forwarder.stop()

    def _dispatcher(self, pool: Pool) -> ASGIApp:
        if not self.listen.tcp:
            return Dispatcher(self.apps)
        # No gateway names the method: route by host, else the first web method (see dispatch.py).
        served = [ep for ep in pool.endpoints if ep.name in self.apps]
        return Dispatcher(
            self.apps,
            hosts={d: ep.name for ep in served for d in ep.web.custom_domains},
            labels={(ep.web.label or default_label(self.app_name, ep.name)): ep.name for ep in served},
            default=served[0].name,
        )

    def _serve(self, pool: Pool) -> None:
        if not self.apps:
            self._serve_web_servers_only(pool)
            return
        try:
            sock, address = self._bind()
        except OSError as exc:
            raise StartupFailure(
                "serve", pool.failure_endpoint, f"{pool.subject}: {exc}", format_traceback(exc),
            ) from exc
        # A class's methods share one socket and are told apart by header; a function needs none.
        for name in self.apps:
            self.upstreams[name] = Upstream(address, name if pool.is_class else None)
        overruns = Overruns(self.timeout, self._retire)
        kinds = {ep.name: ep.web.kind for ep in pool.endpoints}
        # WSGI apps work in threads: past their timeout they cannot be cancelled (a call says per call).
        self.apps = {name: Timeout(app, name, overruns, threaded=kinds[name] == "wsgi")
                     for name, app in self.apps.items()}
        app: ASGIApp = self._dispatcher(pool) if pool.is_class else next(iter(self.apps.values()))
        from .uvicorn_server import make_server  # imported only by the pools that use it: startup time

        server = make_server(app, on_started=lambda: self._ready(pool))
        self.stop.on_request(lambda n: setattr(server, "force_exit" if n > 1 else "should_exit", True))
        try:
            self._run_async(server.serve(sockets=[sock]))
        except Exception as exc:
            if not server.started:
                raise StartupFailure("serve", pool.failure_endpoint,
                                     f"{pool.subject}: uvicorn could not start: {summary(exc)}",
                                     format_traceback(exc)) from exc
            print(f"mwtui: {pool.subject}: uvicorn stopped with an error:", file=sys.stderr)
            traceback.print_exception(exc)
            self.stop.exit_code = self.stop.exit_code or 1

    def _run_gunicorn(self, pool: Pool) -> int:
        from . import gunicorn_server  # imported only by the pools that use it: startup time

        ep = pool.endpoints[0]
        try:
            sock, address = self._bind()
        except OSError as exc:
            self.reporter.failed(StartupFailure("serve", ep.name, f"{ep.subject}: {exc}", format_traceback(exc)))
            return FAILED_EXIT_CODE
        self.upstreams[ep.name] = Upstream(address)

        def load() -> Any:  # runs in gunicorn's worker process
            try:
                # The watching thread is started in here: threads do not survive gunicorn's fork.
                return WSGITimeout(ep.target(), ep.name, Overruns(self.timeout, self._retire))
            except (Exception, SystemExit) as exc:
                self.reporter.failed(failure("build", ep.name, ep.subject,
                                             f"the @modal.{ep.web.decorator} factory raised", exc, pool.app_file))
                _flush()
                os._exit(FAILED_EXIT_CODE)  # gunicorn's master halts on it (its WORKER_BOOT_ERROR is 3)

        self.reporter.starting(f"starting gunicorn, which calls the @modal.{ep.web.decorator} factory of {ep.subject}")
        self.master_pid = os.getpid()
        try:
            gunicorn_server.serve(
                fd=sock.detach(),
                load=load,
                threads=max(pool.options.max_inputs, MIN_WSGI_THREADS),
                on_ready=lambda master_pid: self._ready(pool, pid=master_pid),
                should_stop=lambda: self.stop.requested,
                graceful_seconds=GRACEFUL_SECONDS,
                keepalive_seconds=KEEPALIVE_SECONDS,
                name=f"mwtui {self.replica_id}",
            )
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return 0

    # --- stopping ---------------------------------------------------------------------------------

    def _retire(self, what: str) -> None:
        """From the timeout watcher: `what` (a request) still runs TIMEOUT_GRACE_S past its `timeout` and
        nothing can stop it but the end of this process. Say so, then take the replica down at once
        (no drain, no @exit: that would let the work run on); the supervisor starts a fresh one."""
        reason = (f"{what} ran past its timeout of {self.timeout:g}s and was still running {TIMEOUT_GRACE_S:g}s "
                  f"later (code in a thread cannot be cancelled): replica {self.replica_id} was replaced")
        with contextlib.suppress(Exception):
            print(f"mwtui: {reason}", file=sys.stderr)
            self.reporter.retire(reason)
        for path in [self.socket_path] * self.socket_bound + [path for path, _ in self.bridges]:
            with contextlib.suppress(OSError):
                os.unlink(path)
        # In gunicorn's worker the replica is its master (our parent): it goes too, with all below it.
        me = os.getpid()
        root = self.master_pid if self.master_pid is not None else me
        with contextlib.suppress(Exception):
            kill_tree(root, include_root=root != me)
        _flush()
        os._exit(RETIRED_EXIT_CODE)

    def _teardown(self, pool: Pool) -> bool:
        """Lifespan shutdowns in order, then `@exit`; each runs even if one before it failed."""
        ok = True
        self._close_bridges()  # the gateway sends nothing new by now
        for ep, lifespan in self.lifespans:
            try:
                self._run_async(lifespan.shutdown())
            except LifespanFailed as exc:
                ok = False
                print(f"mwtui: {ep.subject}: {exc.what}", file=sys.stderr)
                if exc.__cause__ is not None:
                    traceback.print_exception(exc.__cause__)
                elif exc.detail:
                    print(exc.detail, file=sys.stderr)
            except Exception as exc:
                ok = False
                print(f"mwtui: {ep.subject}: ASGI lifespan shutdown failed: {summary(exc)}", file=sys.stderr)
                traceback.print_exception(exc)
        if not pool.exit(self._run_async):
            ok = False
        if self.socket_bound:
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)
        return ok


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _terminate_group() -> None:
    """Ask what the user's code started (a web_server's process, say) to stop with us. Only as the
    group leader: the supervisor gives each replica its own group, and a worker run by hand must not
    signal its caller's."""
    pid = os.getpid()
    try:
        if os.getpgid(0) != pid:
            return
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        pass


def _end_descendants() -> None:
    """Nothing the user's code started outlives the replica, even what left its group (setsid) or
    ignores SIGTERM: SIGTERM, TERM_GRACE_S to go, then SIGKILL (see proctree)."""
    with contextlib.suppress(Exception):
        kill_tree(os.getpid(), grace=TERM_GRACE_S)


def finish(code: int) -> NoReturn:
    """Exit now, whatever non-daemon threads user code left behind; atexit handlers still run."""
    _terminate_group()
    _flush()
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    _end_descendants()  # after the user's atexit handlers, which may stop their processes their way
    _flush()
    os._exit(code)


def main(argv: list[str] | None = None, started: float | None = None) -> NoReturn:
    started = time.monotonic() if started is None else started
    become_subreaper()  # before any user code: what it starts stays below us, whatever it does
    # Before any thread starts (a user namespace needs a single-threaded process) and any user code;
    # pasta's helper is forked before the first unshare, so that it stays in the host's namespaces.
    # A replica forked from a snapshot is in its container view already (and has no network of its own).
    forked = snapshot.forked()
    net = None if forked else network.prepare_from_env()
    if not forked:
        container.setup_from_env()
    own_network = network.enter(net)
    if not forked:
        lifeline.watch_parent()  # (forked from a snapshot: once it is ready, see Replica._ready)
    stop = Stop()
    stop.install()
    args = parse_args(argv)
    reporter = Reporter.from_env(started)
    os.environ["MODAL_IS_REMOTE"] = "1"
    unbuffer_stdio()
    try:
        replica = Replica(args, reporter, stop)
        replica.own_network = own_network
        code = replica.run()
    except Exception as exc:  # a bug of ours: still tell the supervisor, in the same shape
        reporter.failed(StartupFailure("serve", None, f"mwtui's worker failed: {summary(exc)}",
                                       format_traceback(exc)))
        code = FAILED_EXIT_CODE
    finish(code)

