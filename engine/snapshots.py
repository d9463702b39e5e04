"""Generation snapshots, the engine's side: for each pool and generation, one process that imported the
app (and ran a snapshot class's `@enter(snap=True)`) forks that pool's replicas (see worker/snapshot.py).

`Snapshots.spawner(pool, generation)` is the spawner a replica of that generation is started with. The
first spawn forks the snapshot from the zygote; later ones fork replicas from it, in parallel. When no
snapshot can be taken (the zygote is not there, the import failed, or forking after it is unsafe), the
generation's replicas start as before: each imports the app itself. Why (when it is not the import's own
failure, which the replicas report) is said once in the pool's log and kept for the detail screen.

A snapshot stays while its generation is the one its pool serves, so that scale-ups and restarts fork
the code that is serving even while the file on disk is broken, and while replicas forked from it live
(they are its children); then it exits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import psutil

from . import modal_env
from .memory import held
from .sdk.runtime import POOL_PLAN_ENV
from .spawner import READY_FD_ENV, ForkServer, ReplicaProcess, Spawner, ZygoteSpawner, ZygoteUnavailable
from .worker.network import NETWORK_ENV

SNAPSHOT_TIMEOUT_S = 300.0  # an import and its snap enters may take this long (then: fresh imports)


@dataclass
class SnapshotState:
    """What the screen shows of a pool's snapshot."""

    generation: int
    mode: str = "starting"  # "snapshot" | "fresh import" | "starting"
    reason: str = ""  # why fresh imports, when they are
    import_ms: float | None = None
    snap_enters: int = 0
    pid: int | None = None
    children: set[int] = field(default_factory=set)
    rss_bytes: int = 0  # the snapshot process's own memory (its replicas share most of it)
    memory_bytes: int = 0  # what it holds alone (USS, see memory.py)
    cpu_percent: float = 0.0
    _ps: psutil.Process | None = None

    def sample(self) -> None:
        try:
            if self._ps is None or self._ps.pid != self.pid:
                self._ps = psutil.Process(self.pid)
                self._ps.cpu_percent(None)
            self.cpu_percent = self._ps.cpu_percent(None)
            mem = held(self._ps.pid)
            self.rss_bytes, self.memory_bytes = mem.rss, mem.uss
        except (psutil.Error, ValueError):
            self.cpu_percent, self.rss_bytes, self.memory_bytes = 0.0, 0, 0

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "reason": self.reason or None, "import_ms": self.import_ms,
                "snap_enters": self.snap_enters, "generation": self.generation, "pid": self.pid,
                "rss_bytes": self.rss_bytes, "memory_bytes": self.memory_bytes,
                "cpu_percent": round(self.cpu_percent, 1)}


class _PoolSnapshot:
    """One pool's snapshot of one generation, and the spawner its replicas are started with."""

    def __init__(self, owner: Snapshots, pool: str, generation: int) -> None:
        self.owner = owner
        self.pool = pool
        self.generation = generation
        self.state = SnapshotState(generation)
        self.snap: ForkServer | None = None
        self.tried = False
        self._lock = asyncio.Lock()
        # How it was (or is to be) started: the first replica's (argv, env, cwd, fds), its own pipe left out.
        self.launch: tuple[list[str], dict[str, str], str, tuple[int, ...]] | None = None
        self._ahead: asyncio.Task[Any] | None = None  # taking it ahead of its rollout (see prewarm)
        self.spares = 1  # children it forks ahead at first: as many as its rollout will ask for at once

    async def spawn(self, worker_argv: list[str], env: dict[str, str], cwd: str,
                    pass_fds: tuple[int, ...]) -> ReplicaProcess:
        if NETWORK_ENV in env:
            # Its network is made before the import, from the host's namespaces: no fork of a snapshot.
            self._fresh("a web_server with a network of its own makes it before the import")
            return await self.owner.base.spawn(worker_argv, env, cwd, pass_fds)
        if self.launch is not None and self.launch[1].get(POOL_PLAN_ENV) != env.get(POOL_PLAN_ENV):
            await self._forget()  # taken ahead (prewarm) for an environment the new version no longer has
        snap = await self._snapshot(worker_argv, env, cwd, pass_fds)
        if snap is not None and snap.alive:
            try:
                child = await snap.spawn(worker_argv, env, cwd, pass_fds)
            except ZygoteUnavailable:
                pass
            else:
                self.state.children.add(child.pid)
                self.owner.background(self._reap(child))
                return child
        return await self.owner.base.spawn(worker_argv, env, cwd, pass_fds)

    async def close(self) -> None:
        if self.snap is not None:
            await self.snap.close()
            self.snap = None

    async def _forget(self) -> None:
        async with self._lock:
            await self.close()
            self.tried, self.launch = False, None
            self.state = SnapshotState(self.generation)

    def take_ahead(self, launch: tuple[list[str], dict[str, str], str, tuple[int, ...]]) -> None:
        """Start taking the snapshot now, as the previous generation's was started (see prewarm)."""
        self._ahead = self.owner.background(self._snapshot(*launch))

    def abandon(self) -> None:
        """No rollout will use it: stop its import (at once, however stuck) and close it."""
        if self._ahead is not None:
            self._ahead.cancel()
        self.owner.background(self.close())

    async def _reap(self, child: ReplicaProcess) -> None:
        await child.wait()
        self.state.children.discard(child.pid)
        if not self.state.children:
            self.owner.sweep()

    async def _snapshot(self, worker_argv: list[str], env: dict[str, str], cwd: str,
                        pass_fds: tuple[int, ...]) -> ForkServer | None:
        if self.tried:
            return self.snap
        async with self._lock:  # the first spawns of a rollout share one snapshot
            if self.tried:
                return self.snap
            self.snap = await self._take(worker_argv, env, cwd, pass_fds)
            self.tried = True
            return self.snap

    async def _take(self, worker_argv: list[str], env: dict[str, str], cwd: str,
                    pass_fds: tuple[int, ...]) -> ForkServer | None:
        base = self.owner.base
        if not isinstance(base, ZygoteSpawner):
            self._fresh("replicas start without a zygote here")
            return None
        argv = [worker_argv[0], "--pool", self.pool, "--generation", str(self.generation), "--spares", str(self.spares)]
        # The replica's pipe to the supervisor is its own: the snapshot answers on its socket.
        ready = env.get(READY_FD_ENV, "")
        senv = {k: v for k, v in env.items() if k != READY_FD_ENV}
        fds = tuple(fd for fd in pass_fds if str(fd) != ready)
        self.launch = (worker_argv, senv, cwd, fds)
        # A container of its own, as Modal's snapshot is taken in one: its own task id.
        senv = {**senv, **modal_env.replica_env(env.get(POOL_PLAN_ENV, ""))}
        started = time.monotonic()
        snap, hello = await base.fork_snapshot(argv, senv, cwd, fds, SNAPSHOT_TIMEOUT_S,
                                               lambda line: self.owner.log(self.pool, line))
        if snap is None:
            if "unsafe" in hello:
                self._fresh(str(hello["unsafe"]), tell="forking after its import is unsafe")
            elif "failed" in hello:
                self._fresh("its import failed")  # each replica imports it and reports the error
            else:
                self._fresh(str(hello.get("error", "the zygote refused")), tell="no snapshot")
            return None
        info: dict[str, Any] = hello.get("snapshot") or {}
        self.state.mode = "snapshot"
        self.state.import_ms = info.get("import_ms", round((time.monotonic() - started) * 1000, 1))
        self.state.snap_enters = int(info.get("snap_enters") or 0)
        self.state.pid = snap.proc.pid
        return snap

    def _fresh(self, reason: str, tell: str = "") -> None:
        """No snapshot for this generation: say why (in the log too, after `tell`, unless the replicas
        will say it themselves)."""
        self.state.mode, self.state.reason = "fresh import", reason
        if tell:
            self.owner.log(self.pool, f"mwtui: generation {self.generation}: {tell}: {reason}; each replica "
                                      "imports the app itself (slower)")


class _Bound:
    """The Spawner protocol for one pool snapshot (what the supervisor holds)."""

    def __init__(self, snapshot: _PoolSnapshot) -> None:
        self.snapshot = snapshot

    async def spawn(self, worker_argv: list[str], env: dict[str, str], cwd: str,
                    pass_fds: tuple[int, ...]) -> ReplicaProcess:
        return await self.snapshot.spawn(worker_argv, env, cwd, pass_fds)

    async def close(self) -> None:
        pass  # the engine closes snapshots (Snapshots.close), not each pool


class Snapshots:
    """Every pool's snapshots, by (pool, generation)."""

    def __init__(self, base: Spawner, serving: Callable[[str], set[int]], log: Callable[[str, str], None]) -> None:
        self.base = base
        self.serving = serving  # pool name -> the generations its pools serve now
        self.log = log  # (pool, line): a snapshot's output and what mwtui says of it
        self.snapshots: dict[tuple[str, int], _PoolSnapshot] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.ahead = 0  # a generation being taken ahead of its rollout (prewarm): not swept meanwhile

    def prewarm(self, generation: int, pools: Callable[[str], bool] = lambda pool: True) -> Callable[[], None]:
        """A save is being imported (as `generation`, if it loads): take each pool's snapshot of it at the
        same time, as its current one was taken, so that the rollout finds it ready. A pool whose
        environment changes with the save takes it again then. Returns what abandons them (the save
        did not load, or a newer one came). `pools`: which pools the save is of (its app's)."""
        self.ahead = generation
        newest: dict[str, _PoolSnapshot] = {}
        for (pool, gen), snap in self.snapshots.items():
            if not pools(pool) or snap.launch is None or gen >= generation:
                continue
            if pool not in newest or gen > newest[pool].generation:
                newest[pool] = snap
        taken: list[_PoolSnapshot] = []
        for pool, current in newest.items():
            stale = self.snapshots.pop((pool, generation), None)
            if stale is not None:  # taken ahead for a save that was superseded
                stale.abandon()
            assert current.launch is not None
            ahead = self.snapshots[(pool, generation)] = _PoolSnapshot(self, pool, generation)
            ahead.spares = max(1, len(current.state.children))  # the rollout replaces each replica running
            ahead.take_ahead(current.launch)
            taken.append(ahead)

        def abandon() -> None:
            for snap in taken:
                if self.snapshots.get((snap.pool, generation)) is snap and not snap.state.children:
                    del self.snapshots[(snap.pool, generation)]
                    snap.abandon()
        return abandon

    def spawner(self, pool: str, generation: int) -> Spawner:
        key = (pool, generation)
        snap = self.snapshots.get(key)
        if snap is None:
            snap = self.snapshots[key] = _PoolSnapshot(self, pool, generation)
        return _Bound(snap)

    def state(self, pool: str, generation: int) -> dict[str, Any] | None:
        snap = self.snapshots.get((pool, generation))
        return snap.state.to_json() if snap is not None else None

    def sample(self) -> None:
        """CPU and memory of each snapshot process (once a second, with the replicas')."""
        for s in self.snapshots.values():
            if s.snap is not None and s.state.pid:
                s.state.sample()

    def sweep(self, rolled_out: bool = False) -> None:
        """Close each snapshot that no pool serves and no replica of which is left. `rolled_out`: the
        generation taken ahead is out now, so what no pool took of it (a pool the save removed) goes too."""
        if rolled_out:
            self.ahead = 0
        for key, snap in list(self.snapshots.items()):
            pool, generation = key
            if snap.state.children or generation in self.serving(pool) or snap._lock.locked() or generation == self.ahead:
                continue
            del self.snapshots[key]
            self.background(snap.close())

    def background(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        snaps, self.snapshots = list(self.snapshots.values()), {}
        await asyncio.gather(*(s.close() for s in snaps), *self._tasks, return_exceptions=True)
