"""Owns replica processes: spawn, readiness, restart with backoff, drain, stop; CPU and memory.

One `Pool` per function or class. Its reconcile loop is the one writer of the pool's state, as in
gunicorn's arbiter: the tasks that watch each replica only post what they saw (a report on its pipe, its
exit) to the pool's inbox, and the loop applies the posts in order before it compares the replicas it
wants with the ones it has and acts. Everything that happens (ready, crash, a log line) is told through
one callback, so the engine facade never touches a process itself.

A replica that is not ready within its function's `startup_timeout` is failed, saying which startup
step it was still in. A replica that retires (a request's work could not be stopped at its `timeout`,
see worker/timeouts.py) is replaced at once, and that counts as no crash. Nothing a replica started
outlives it: a replica kills its own descendants on the way out (it is a subreaper, see proctree), and
when the supervisor has to kill it, it takes the replica's whole tree, and then whatever it last saw
below it (which covers what escaped to init).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import psutil

from . import caps, modal_env
from .events import Event, LogLine, PoolChanged
from .lifeline import Lifeline
from .loader import AppRef
from .manifest import PoolSpec
from .memory import Held, held
from .params import pool_key, query_of, variant_id, variant_name
from .proctree import kill_all, kill_tree
from .project import local_name, scope_of, scoped
from .replica_env import POOL as POOL_ENV
from .spawner import ColdSpawner, ReplicaProcess, Spawner
from .worker import network
from .worker.report import Beat, Failed, Ready, Report, Retire, Starting, Upstream, decode

ReplicaState = Literal["starting", "ready", "stopping", "exited"]
PoolState = Literal["starting", "running", "idle", "stopped", "failed"]

UNRESPONSIVE_S = 3.0  # a ready replica's loop silent this long is blocked (it beats every second)
STOP_GRACE_S = 10.0  # in-flight requests get this long to finish when a replica stops
RETIRE_GRACE_S = 2.0  # a retiring replica kills itself; past this, the supervisor does it
WEB_SERVER_SETTLE_S = 0.25  # out of the routes, a web_server replica is stopped this much later


@dataclass(frozen=True)
class Variant:
    """Which set of class parameters a pool serves (see engine/params.py for the three forms)."""

    name: str  # "Greeter?name=ann&times=1": what the screen, the logs and the routes call it
    id: str  # "Greeter~1a2b3c4d": names its replicas (and so their sockets)
    key: str  # canonical JSON of the values: what --params takes
    suffix: str  # "?name=ann&times=1": endpoint `Greeter.greet` is routed as `Greeter.greet?name=ann&times=1`
    values: dict[str, Any]

    @classmethod
    def of(cls, pool: str, values: dict[str, Any]) -> Variant:
        return cls(variant_name(pool, values), variant_id(pool, values), pool_key(values),
                   "?" + query_of(values), dict(values))




class RestartPolicy:
    """Exponential backoff between restarts, reset by a stable run; gives up after repeated failures.

    Pure: the caller passes the clock, so it is tested on simulated time.
    """

    def __init__(self, base_s: float = 0.25, cap_s: float = 15.0, stable_s: float = 10.0, max_failures: int = 4):
        self.base_s, self.cap_s, self.stable_s, self.max_failures = base_s, cap_s, stable_s, max_failures
        self.failures = 0

    def on_exit(self, ran_for_s: float, was_ready: bool) -> float | None:
        """A replica ended unasked. Returns the delay before the next start, or None to give up."""
        if was_ready and ran_for_s >= self.stable_s:
            self.failures = 0
        self.failures += 1
        if self.failures >= self.max_failures:
            return None
        return min(self.cap_s, self.base_s * 2 ** (self.failures - 1))

    def reset(self) -> None:
        self.failures = 0


@dataclass(frozen=True)
class Exited:
    """The replica's process ended (its logs and reports are read to the end first)."""

    code: int


@dataclass(frozen=True)
class SpawnFailed:
    """Its process could not be made."""

    error: str


Post = Report | Exited | SpawnFailed  # what a replica's watchers hand to the reconcile loop


@dataclass
class Replica:
    id: str  # "<pool>.<n>"
    generation: int  # the engine's reload generation it runs (for the screen)
    version: int = 0  # the pool's own counter: replicas of the version being served have pool.version
    plan: str = ""  # its version's environment plan (see PoolSpec.plan), applied before user code runs
    ports: tuple[int, ...] = ()  # its version's fixed ports (web_server), in a network of its own if any
    proc: ReplicaProcess | None = None
    state: ReplicaState = "starting"
    started_at: float = field(default_factory=time.time)
    ready_at: float | None = None
    startup_ms: float | None = None
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    failure: Failed | None = None  # the worker's own account of why it failed (or the supervisor's)
    exit_message: str | None = None  # why it ended, when it ended unasked
    stop_requested: bool = False
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # set when ready or exited
    # Startup, as the replica reports it: what it is doing, its function's startup_timeout, and when
    # (time.monotonic()) its first report came, which starts the clock.
    doing: str | None = None
    startup_timeout: float | None = None
    startup_began: float | None = None
    startup_news: asyncio.Event = field(default_factory=asyncio.Event)  # any of the above, or settled
    # Liveness, once ready: when its event loop last said so (time.monotonic()); a replica that beats
    # and then falls silent for UNRESPONSIVE_S is marked, not stopped (as on Modal), until it beats again.
    last_beat: float | None = None
    unresponsive: bool = False
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    memory_bytes: int = 0  # what its process tree holds alone (USS, see memory.py)
    inflight: int = 0  # from the gateway's metrics
    idle_since: float = field(default_factory=time.time)
    _ps: psutil.Process | None = None
    _children: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def sample(self, children_of: dict[int, list[int]]) -> None:
        """CPU and memory of the replica's whole process tree (gunicorn workers, a web_server's own
        process), so the numbers mean what the user thinks they mean. `children_of` is one scan of
        the process table shared by every replica: a scan per replica cost 1.5 ms each, every second."""
        if self.pid is None or self.state == "exited":
            self.cpu_percent, self.rss_bytes, self.memory_bytes = 0.0, 0, 0
            return
        try:
            if self._ps is None:
                self._ps = psutil.Process(self.pid)
                self._ps.cpu_percent(None)
            procs = [self._ps]
            todo = list(children_of.get(self.pid, ()))
            while todo:
                pid = todo.pop()
                todo.extend(children_of.get(pid, ()))
                # Keep one psutil.Process per pid: cpu_percent measures since that object's last call.
                if pid not in self._children:
                    with contextlib.suppress(psutil.Error):
                        self._children[pid] = psutil.Process(pid)
                if pid in self._children:
                    procs.append(self._children[pid])
            cpu, mem = 0.0, Held()
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    cpu += p.cpu_percent(None)
                mem += held(p.pid)
            self.cpu_percent, self.rss_bytes, self.memory_bytes = cpu, mem.rss, mem.uss
        except psutil.Error:
            self.cpu_percent, self.rss_bytes, self.memory_bytes = 0.0, 0, 0


def process_children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from one pass over the process table."""
    out: dict[int, list[int]] = {}
    for p in psutil.process_iter(["ppid"]):
        ppid = p.info.get("ppid")
        if ppid:
            out.setdefault(ppid, []).append(p.pid)
    return out


class Pool:
    """The replicas of one function or class, kept at `desired`."""

    def __init__(
        self,
        spec: PoolSpec,
        ref: AppRef,
        socket_dir: str,
        lifeline: Lifeline,
        emit: Callable[[Event], None],
        generation: int = 1,
        before_drain: Callable[[], Awaitable[None]] | None = None,
        spawner: Spawner | None = None,
        extra_env: dict[str, str] | None = None,
        variant: Variant | None = None,
        own_network: bool = False,
        spawner_for: Callable[[int], Spawner] | None = None,
    ) -> None:
        self.spec = spec
        # Replicas of a pool with fixed ports (web_server) each get a network of their own: they may be
        # many, and roll out side by side. Without one they share the host's ports: one at a time.
        self.own_network = own_network
        # One set of a parametrized class's values: its replicas get them with --params, and the
        # pool goes by its own name (`Greeter?name=ann`) in events, logs and routes.
        self.variant = variant
        self.name = variant.name if variant else spec.name
        self.replica_prefix = variant.id if variant else spec.name
        self.extra_env = extra_env or {}  # for every replica: e.g. the gateway's URLs
        self.ref = ref
        self.socket_dir = socket_dir
        self.lifeline = lifeline
        self.emit = emit
        self.generation = generation  # the engine's reload generation being served (for the screen)
        # Replicas of the version being served carry this number; others are on their way in or out.
        # A restart makes a new version of the same code, so it is the pool's own counter.
        self.version = 1
        self.before_drain = before_drain  # awaited after new routes are out, before old replicas stop
        self.spawner: Spawner = spawner or ColdSpawner()
        # A generation's replicas are forked from its snapshot (snapshots.py), when there is one.
        self.spawner_for = spawner_for
        # A web pool starts warm (one replica even when min_containers is 0) so that a broken factory
        # shows at once; the autoscaler takes it to zero after scaledown_window without traffic. A pool
        # only called by others starts at min_containers, as on Modal: its first call wakes it.
        floor = 1 if spec.serves_web else 0
        self.desired = self._clamp(max(floor, spec.knobs.min_containers))
        self.pinned: int | None = None  # set from the screen (+/-): the autoscaler stands aside
        self.panic = False  # the autoscaler's panic mode, shown on screen
        self.started_monotonic = time.monotonic()
        self.scale_events: deque[tuple[float, str]] = deque(maxlen=50)
        self.replicas: list[Replica] = []
        self.stopped = False  # the user stopped it
        self.failed = False  # it kept crashing: wait for a restart or a new version
        self.ever_ready = False  # a replica of it has been ready (its startup is known to work)
        self.last_error: str | None = None
        self.policy = RestartPolicy()
        self.restarts = 0
        self._next_index = 0
        self._wake = asyncio.Event()
        self._inbox: deque[tuple[Replica, Post, float]] = deque()  # posts, with when they came (monotonic)
        self._tasks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._not_before = 0.0  # backoff: no new replica before this time

    # ----- state for the screen and the gateway
    @property
    def state(self) -> PoolState:
        if self.stopped:
            return "stopped"
        if any(r.state == "ready" for r in self.replicas):
            return "running"
        if self.failed:
            return "failed"
        if self.desired == 0:
            return "idle"
        return "starting"

    def ready_replicas(self) -> list[Replica]:
        return [r for r in self.replicas if r.state == "ready" and r.version == self.version]

    def starting_replicas(self) -> list[Replica]:
        return [r for r in self.replicas if r.state == "starting" and r.version == self.version]

    # ----- commands
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._reconcile_loop(), name=f"pool-{self.name}")

    def resume(self) -> None:
        """Start again after a stop or a failure."""
        self.stopped = False
        self.failed = False
        self.policy.reset()
        self._not_before = 0.0
        self._poke()

    def pause(self) -> None:
        self.stopped = True
        self._poke()

    def shares_ports(self, spec: PoolSpec | None = None) -> bool:
        """Do its replicas listen on fixed ports of the host's own network (so one at a time)?"""
        return caps.shares_ports(spec or self.spec, self.own_network)

    def note_load(self, per_replica: Mapping[str, int], now: float) -> None:
        """The gateway's requests in flight per replica: which one to stop first when scaling down."""
        for r in self.replicas:
            busy = per_replica.get(r.id, 0)
            if r.inflight and not busy:
                r.idle_since = now
            r.inflight = busy

    def _clamp(self, n: int) -> int:
        return max(0, min(n, 1) if self.shares_ports() else n)

    def set_desired(self, n: int, reason: str) -> None:
        """The autoscaler's (or the user's) new target; the reconcile loop does the rest."""
        n = self._clamp(n)
        if n == self.desired:
            return
        self.scale_events.append((time.time(), f"{self.desired} -> {n}: {reason}"))
        self.desired = n
        self.emit(PoolChanged(self.name))
        self._poke()

    def scale(self, n: int) -> None:
        """Pin the replica count by hand; `unpin()` hands it back to the autoscaler."""
        self.pinned = self._clamp(n)
        self.set_desired(self.pinned, "pinned from mwtui")

    def unpin(self) -> None:
        self.pinned = None
        self.scale_events.append((time.time(), "back to autoscaling"))
        self.emit(PoolChanged(self.name))

    async def restart(self) -> str | None:
        """Rolling: fresh replicas of the same code beside the old ones, which drain once the new
        ones are ready (a web_server's fixed port is freed first)."""
        self.resume()
        return await self.rollout(self.spec, self.generation)

    async def rollout(self, spec: PoolSpec, generation: int) -> str | None:
        """Serve a new version of the code. Its replicas start beside the old ones; only when all are
        ready do routes switch to them and the old ones drain. If one fails, the old version keeps
        serving and the failure is returned (and kept as `last_error`)."""
        old = [r for r in self.replicas if r.version == self.version and r.state in ("starting", "ready")]
        version = self.version + 1
        if self.shares_ports() or self.shares_ports(spec):
            # A fixed port cannot be held by two versions at once: the old one must go first, and
            # the gateway holds requests meanwhile.
            await asyncio.gather(*(self._stop_replica(r) for r in old))
            self.spec, self.generation, self.version = spec, generation, version
            self.desired = self._clamp(max(1, self.desired))
            self.resume()
            return None
        floor = 1 if spec.serves_web else 0  # a called pool at zero stays there: its next call wakes it
        count = max(floor, len(old)) if not (self.stopped or self.failed) else self.desired
        news = [self._spawn(generation, version, spec) for _ in range(count)]
        await asyncio.gather(*(r.settled.wait() for r in news))
        broken = [r for r in news if r.state != "ready"]
        if broken:
            await asyncio.gather(*(self._stop_replica(r) for r in news))
            self.last_error = broken[0].exit_message or "the new version did not start"
            self.emit(PoolChanged(self.name))
            return self.last_error
        self.spec, self.generation, self.version = spec, generation, version
        self.failed, self.stopped, self.last_error = False, False, None
        self.policy.reset()
        self.emit(PoolChanged(self.name))  # routes now point at the new replicas only
        if self.before_drain:
            await self.before_drain()
        await asyncio.gather(*(self._stop_replica(r) for r in old))
        self._poke()
        return None

    async def close(self) -> None:
        """Stop everything and end the loop; in-flight requests get STOP_GRACE_S to finish."""
        self.stopped = True
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._apply_posts()  # what came before the loop ended; later posts apply themselves
        await asyncio.gather(*(self._stop_replica(r) for r in list(self.replicas)))

    # ----- the loop
    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        # The loop keeps only weak references to tasks: hold them until they finish.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _poke(self) -> None:
        self._wake.set()

    def _post(self, r: Replica, post: Post) -> None:
        """From a replica's watchers: the loop applies it. Once the loop has ended (close), whoever
        posts applies it: nothing else writes then."""
        self._inbox.append((r, post, time.monotonic()))
        if self._task is None or self._task.done():
            self._apply_posts()
        elif not (isinstance(post, Beat) and not r.unresponsive):
            self._poke()  # a routine beat waits for the loop's next pass (at most a second)

    def _apply_posts(self) -> None:
        while self._inbox:
            r, post, at = self._inbox.popleft()
            self._apply(r, post, at)

    def _apply(self, r: Replica, post: Post, at: float) -> None:
        match post:
            case Ready():
                self._on_ready(r, post)
            case Starting(doing, timeout):
                r.doing = doing or r.doing
                if r.startup_began is None:
                    r.startup_began = at
                if timeout is not None:
                    r.startup_timeout = timeout
                r.startup_news.set()
            case Failed():
                r.failure = post
            case Retire():
                self._retired(r)
            case Beat():
                r.last_beat = at
                if r.unresponsive:
                    r.unresponsive = False
                    self._say(r, f"replica {r.id} answers again")
            case Exited(code):
                self._on_exit(r, code)
            case SpawnFailed(error):
                r.state = "exited"
                r.exit_message = self.last_error = f"could not start a replica of {self.name}: {error}"
                self.replicas.remove(r)
                self.failed = True
                r.settled.set()
                self.emit(PoolChanged(self.name))

    def _on_ready(self, r: Replica, ready: Ready) -> None:
        if r.state != "starting":
            return  # being stopped already
        scope = scope_of(self.spec.name)  # the replica names its endpoints within its app
        r.upstreams = {scoped(name, scope): up for name, up in ready.upstreams.items()}
        r.state = "ready"
        r.ready_at = time.time()
        r.startup_ms = ready.startup_ms
        self.ever_ready = True
        r.settled.set()
        r.startup_news.set()
        if r.version == self.version:
            self.failed = False
            self.emit(PoolChanged(self.name))

    def _on_exit(self, r: Replica, code: int) -> None:
        r.startup_news.set()
        was_ready = r.ready_at is not None
        r.state = "exited"
        self.replicas.remove(r)
        if not r.stop_requested:
            r.exit_message = self._exit_message(r, code, was_ready)
            if r.version == self.version:
                self._on_unexpected_exit(r, was_ready)
            # A replica of a version on its way in reports through rollout() instead.
        r.settled.set()
        self.emit(PoolChanged(self.name))

    async def _reconcile_loop(self) -> None:
        while True:
            try:
                self._apply_posts()
                self._reconcile()
            except Exception:  # noqa: BLE001 - a bug here must not leave the pool unsupervised
                self.emit(LogLine(self.name, self.name, f"mwtui internal error:\n{traceback.format_exc()}", time.time()))
            self._wake.clear()
            delay = max(0.05, self._not_before - time.monotonic()) if self._not_before else None
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that arrives as the event is set
            # (a `+` just before quitting), and this loop would then never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay if delay is not None else 1.0):
                    await self._wake.wait()

    def _watch_liveness(self, now: float) -> None:
        for r in self.replicas:
            if r.state == "ready" and not r.unresponsive and r.last_beat is not None and now - r.last_beat > UNRESPONSIVE_S:
                r.unresponsive = True
                self._say(r, f"replica {r.id} has not answered for {UNRESPONSIVE_S:g} s: its event loop is blocked "
                             "(time.sleep or blocking I/O in an async def?); it is left running, as on Modal")

    def _say(self, r: Replica, text: str) -> None:
        self.emit(LogLine(self.name, r.id, f"mwtui: {text}", time.time()))
        self.emit(PoolChanged(self.name))

    def _reconcile(self) -> None:
        self._watch_liveness(time.monotonic())
        live = [
            r for r in self.replicas
            if r.state in ("starting", "ready") and not r.stop_requested and r.version == self.version
        ]
        # A failed pool starts nothing more, but keeps the replicas that still serve: a scale-up that
        # fails (say, the file on disk is broken just now) must not take the working ones down.
        want = 0 if self.stopped else self.desired
        if len(live) < want and not self.failed and time.monotonic() >= self._not_before:
            for _ in range(want - len(live)):
                self._spawn()
        elif len(live) > want:
            # Surplus: replicas still starting go first, then idle ones, the most recently idle first;
            # a busy one only when nothing else is left (and even then it drains before it stops).
            candidates = live
            if self.pinned is None and not self.stopped and not self.ever_ready:
                # Until one replica has been ready, the autoscaler does not take away one that is
                # still starting: a hung @enter must end in its startup_timeout's message, not
                # silently idle. Stopping or scaling by hand still does.
                candidates = [r for r in live if r.state != "starting"]
            surplus = sorted(
                candidates, key=lambda r: (r.state == "ready", r.inflight > 0, -r.idle_since)
            )[: len(live) - want]
            for r in surplus:
                r.stop_requested = True  # now, so the next pass does not count it again
                self._background(self._stop_replica(r))

    def _spawn(self, generation: int | None = None, version: int | None = None, spec: PoolSpec | None = None) -> Replica:
        spec = spec or self.spec
        r = Replica(
            id=f"{self.replica_prefix}.{self._next_index}",
            generation=generation or self.generation,
            version=version or self.version,
            plan=spec.plan,
            ports=spec.fixed_ports,
        )
        self._next_index += 1
        self.replicas.append(r)
        self._background(self._run_replica(r))
        self.emit(PoolChanged(self.name))
        return r

    async def _run_replica(self, r: Replica) -> None:
        ready_r, ready_w = os.pipe()
        ports = r.ports
        env = {
            **os.environ,
            **self.lifeline.env(),
            "MWTUI_READY_FD": str(ready_w),
            "MWTUI_REPORT_STARTING": "1",  # its startup steps too: startup_timeout is enforced here
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
            POOL_ENV: self.name,  # what its calls to other pools say they come from
            **({"MWTUI_POOL_PLAN": r.plan} if r.plan else {}),
            **({network.NETWORK_ENV: ",".join(map(str, ports))} if self.own_network and ports else {}),
            # Modal's container variables, fresh per replica, in its environment from the start.
            **modal_env.replica_env(r.plan),
            # `python` in user code means the replica's interpreter, as it means the image's on Modal.
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        }
        # The replica knows its pool by its app's own name for it (`hello`, not the project's `a:hello`).
        argv = [str(self.ref), "--pool", local_name(self.spec.name), "--socket-dir", self.socket_dir, "--replica", r.id]
        if self.variant:
            argv += ["--params", self.variant.key]
        spawner = self.spawner_for(r.generation) if self.spawner_for is not None else self.spawner
        try:
            r.proc = await spawner.spawn(
                argv, env, self.ref.cwd, (ready_w, self.lifeline.child_fd)
            )
        except OSError as e:
            os.close(ready_r)
            self._post(r, SpawnFailed(str(e)))
            return
        finally:
            with contextlib.suppress(OSError):
                os.close(ready_w)
        if r.stop_requested:  # stopped while it was being spawned
            self._background(self._stop_replica(r))
        logs = asyncio.create_task(self._pump_logs(r))
        reports = asyncio.create_task(self._read_reports(r, ready_r))
        self._background(self._watch_startup(r))
        code = await r.proc.wait()
        await asyncio.wait({logs, reports}, timeout=1.0)
        self._kill_group(r)
        # Its descendants died with it unless it was killed outright: then they were reparented, to
        # the zygote (which kills them) or, from a cold start, to init. Kill those we last saw.
        kill_all(list(r._children.values()))
        self._post(r, Exited(code))

    @staticmethod
    def _exit_message(r: Replica, code: int, was_ready: bool) -> str:
        if r.failure:
            return (r.failure.message + "\n\n" + r.failure.traceback).strip()
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        return f"replica {r.id} ended unexpectedly ({how})" + ("" if was_ready else " before it was ready")

    def _on_unexpected_exit(self, r: Replica, was_ready: bool) -> None:
        self.last_error = r.exit_message
        self.emit(LogLine(self.name, r.id, self.last_error or "", time.time()))
        delay = self.policy.on_exit(time.time() - r.started_at, was_ready)
        if delay is None:
            self.failed = True
            self._not_before = 0.0
        else:
            self.restarts += 1
            self._not_before = time.monotonic() + delay

    async def _read_reports(self, r: Replica, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            async for raw in reader:
                report = decode(raw)
                if report is not None:
                    self._post(r, report)
        finally:
            transport.close()

    def _retired(self, r: Replica) -> None:
        """The replica is going (it said why in its log): out of the routes now, and a fresh one in its
        place at once. Its end is no crash."""
        r.stop_requested = True
        if r.state == "ready":
            r.state = "stopping"
        self.emit(PoolChanged(self.name))
        self._poke()
        self._background(self._reap_retired(r))

    async def _reap_retired(self, r: Replica) -> None:
        assert r.proc is not None
        try:
            await asyncio.wait_for(r.proc.wait(), timeout=RETIRE_GRACE_S)
        except asyncio.TimeoutError:
            await asyncio.to_thread(kill_tree, r.proc.pid, include_root=True)

    async def _watch_startup(self, r: Replica) -> None:
        """Fail the replica if it is not ready within its function's `startup_timeout`, as Modal fails a
        container that does not start in time. The clock starts at its first report (our own
        interpreter's start is not the user's); until the import has told it, the budget is the pool's
        `timeout`, Modal's default for `startup_timeout`."""
        spawned = time.monotonic()
        while r.state == "starting" and not r.stop_requested:
            r.startup_news.clear()
            budget = r.startup_timeout if r.startup_timeout is not None else float(self.spec.knobs.timeout)
            began = r.startup_began if r.startup_began is not None else spawned
            left = began + budget - time.monotonic()
            if left <= 0:
                await self._startup_timed_out(r, budget)
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):  # not wait_for: see _reconcile_loop
                    await r.startup_news.wait()

    async def _startup_timed_out(self, r: Replica, budget: float) -> None:
        if r.proc is None:
            return
        names = ", ".join(f"`{e.name}`" for e in self.spec.endpoints)
        is_class = any("." in e.name for e in self.spec.endpoints)
        subject = f"class `{self.name}` (endpoints {names})" if is_class else f"endpoint {names}"
        step = f"it was still {r.doing}" if r.doing else "it had not begun to start"
        decorator = "@app.cls" if is_class else "@app.function"
        self._post(r, Failed("startup", None, (
            f"{subject} did not finish starting within its startup_timeout of {budget:g}s: {step}, so "
            f"the replica was stopped. Make that step finish sooner, or give it more time with "
            f"{decorator}(startup_timeout=...) (when unset it is the function's `timeout`)."
        )))
        await asyncio.to_thread(kill_tree, r.proc.pid, include_root=True)  # its exit reports the failure

    async def _pump_logs(self, r: Replica) -> None:
        assert r.proc and r.proc.stdout
        async for raw in r.proc.stdout:
            self.emit(LogLine(self.name, r.id, raw.decode(errors="replace").rstrip(), time.time()))

    async def _stop_replica(self, r: Replica) -> None:
        r.stop_requested = True
        if r.state in ("exited", "stopping"):
            return
        if r.proc is None:
            return  # still being spawned: _run_replica stops it as soon as it exists
        was = r.state
        r.state = "stopping"
        if was == "ready":
            self.emit(PoolChanged(self.name))  # take it out of the routes before it stops accepting
            if self.before_drain:
                await self.before_drain()
            if r.ports:
                # A web_server cannot drain itself (its SIGTERM goes to the user's server): give the
                # requests the gateway sent it just before the switch a moment to be answered.
                await asyncio.sleep(WEB_SERVER_SETTLE_S)
        r.startup_news.set()  # a replica being stopped is no longer timed for its startup
        with contextlib.suppress(ProcessLookupError):
            r.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(r.proc.wait(), timeout=STOP_GRACE_S)
        except asyncio.TimeoutError:
            # Its whole tree, found while it still holds it (a subreaper keeps its orphans), then it.
            await asyncio.to_thread(kill_tree, r.proc.pid, include_root=True)
            self._kill_group(r)
            await r.proc.wait()
        self._kill_group(r)

    @staticmethod
    def _kill_group(r: Replica) -> None:
        # The leader may be gone while its group (a web_server's process, gunicorn workers) lives on.
        if r.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(r.pid, signal.SIGKILL)
