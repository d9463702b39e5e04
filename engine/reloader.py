"""Reload: watch the app's files, import a saved version, hand it to the engine to roll out.

The rules (which paths count, when a path that keeps re-triggering is silenced) are pure and tested
without a file system; `watch()` is the thin I/O loop around watchfiles; `Reloader` is the orchestration
(the first import, coalescing saves, stopping a stale import, following the app's imports). What a new
version means for the pools is the engine's business: `Reloader` calls its `apply`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import sys
import sysconfig
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# Folders whose changes never mean "the app changed": tooling, caches, environments, build outputs.
IGNORED_DIRS = frozenset({
    ".git", ".hg", ".svn", ".venv", "venv", "env", ".env", "__pycache__", "node_modules", ".mypy_cache",
    ".pytest_cache", ".ruff_cache", ".tox", ".nox", ".idea", ".vscode", "build", "dist", ".eggs",
    "site-packages", ".ipynb_checkpoints", ".hypothesis", ".cache", ".mwtui",
})
# Files editors and tools write next to real ones.
IGNORED_FILES = ("*.pyc", "*.pyo", "*.swp", "*.swx", "*~", ".#*", "#*#", "*.tmp", ".DS_Store", "*.log")
DEFAULT_INCLUDE = ("*.py",)


@dataclass(frozen=True)
class WatchRules:
    """Which changed paths trigger a reload: like `uvicorn --reload`, Python files by default, plus
    `--reload-include` patterns, minus `--reload-exclude` patterns and the usual junk."""

    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = ()
    ignored_dirs: frozenset[str] = IGNORED_DIRS
    extra_ignored_paths: tuple[str, ...] = ()  # absolute folders, e.g. MWTUI_HOME

    def counts(self, path: str) -> bool:
        parts = path.replace("\\", "/").split("/")
        if any(p in self.ignored_dirs or p.endswith(".egg-info") for p in parts[:-1]):
            return False
        if any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.extra_ignored_paths):
            return False
        name = parts[-1]
        if any(fnmatch.fnmatch(name, pat) for pat in IGNORED_FILES):
            return False
        if any(fnmatch.fnmatch(name, pat) or fnmatch.fnmatch(path, pat) for pat in self.exclude):
            return False
        return any(fnmatch.fnmatch(name, pat) or fnmatch.fnmatch(path, pat) for pat in self.include)


class Verdict(NamedTuple):
    keep: list[str]  # paths whose change should reload
    silenced: list[str]  # paths silenced by this batch
    released: list[str]  # silenced paths watched again: a change to one of them came while the app was quiet
    looping: list[str]  # protected paths that keep changing with every reload: reloaded anyway, said once


@dataclass
class ReloadGuard:
    """Stops a reload loop: a file the app writes itself (a cache, a log, generated code) changes again
    whenever the app starts, each reload then causes the next. Pure: the caller gives the clock and says
    when the app is busy (a reload running, a replica starting) and which paths are protected.

    A change counts as a strike when it arrives while the app is busy or within `window_s` after: that is
    when the app's code runs (import, @enter). After `strikes` strikes in a row the path is silenced, and
    the caller says so on screen. A change that arrives while the app is quiet is a person's save: it
    resets the count, and a silenced path is watched again at once. A silenced path that has not changed
    for `quiet_s` is watched again too, one strike from being silenced again (so that the loop costs no
    further reload). The app file and the modules it imports are never silenced: a person edits those,
    often quickly. An imported module that changes with every reload (generated code?) keeps reloading
    and is reported once; the app file never is (a person saving it during reloads is no loop)."""

    window_s: float = 1.0
    strikes: int = 4
    quiet_s: float = 30.0
    app_file: str = ""
    protected: frozenset[str] = frozenset()
    silenced: set[str] = field(default_factory=set)
    _busy_until: float = -1e9
    _counts: dict[str, int] = field(default_factory=dict)
    _last_change: dict[str, float] = field(default_factory=dict)  # of each silenced path
    _looping_said: set[str] = field(default_factory=set)

    def protect(self, paths: Iterable[str]) -> None:
        """The modules the app imported (after each good load): a person edits those."""
        self.protected = frozenset(paths) | {self.app_file}
        self.silenced -= self.protected

    def busy(self, now: float) -> None:
        """The app's code is running or just ran (a reload started or ended, a replica started)."""
        self._busy_until = max(self._busy_until, now + self.window_s)

    def filter(self, paths: Iterable[str], now: float, busy: bool = False) -> Verdict:
        """Sort one batch of changed paths; `busy`: the app's code runs right now."""
        in_window = busy or now <= self._busy_until
        out = Verdict([], [], [], [])
        for p in paths:
            if p == self.app_file:
                out.keep.append(p)
                continue
            if not in_window:  # nothing of ours runs: a person's save
                self._counts.pop(p, None)
                if p in self.silenced:
                    self._release(p)
                    out.released.append(p)
                out.keep.append(p)
                continue
            if p in self.silenced:
                self._last_change[p] = now
                continue
            self._counts[p] = self._counts.get(p, 0) + 1
            if self._counts[p] < self.strikes:
                out.keep.append(p)
            elif p in self.protected:
                if p not in self._looping_said:
                    self._looping_said.add(p)
                    out.looping.append(p)
                out.keep.append(p)
            else:
                self.silenced.add(p)
                self._last_change[p] = now
                out.silenced.append(p)
        return out

    def expire(self, now: float) -> list[str]:
        """Silenced paths quiet for `quiet_s`, watched again from now on."""
        quiet = [p for p in self.silenced if now - self._last_change.get(p, now) >= self.quiet_s]
        for p in quiet:
            self._release(p)
            self._counts[p] = self.strikes - 1  # the app may still write it: one more strike silences
        return quiet

    def _release(self, path: str) -> None:
        self.silenced.discard(path)
        self._last_change.pop(path, None)


def forget_bytecode(paths: Iterable[str]) -> None:
    """Delete the cached bytecode of changed Python files. Python trusts a .pyc whose source has the
    same mtime (to the second) and size, so two quick saves of the same length would otherwise serve
    the first one's code."""
    import importlib.util

    for path in paths:
        if not path.endswith(".py"):
            continue
        try:
            cached = importlib.util.cache_from_source(path)
        except (NotImplementedError, ValueError):
            continue
        folder, name = os.path.split(cached)
        stem = name.split(".", 1)[0]
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:  # every optimisation level: x.cpython-311.pyc, x.cpython-311.opt-1.pyc
            if entry.startswith(stem + ".") and entry.endswith(".pyc"):
                try:
                    os.unlink(os.path.join(folder, entry))
                except OSError:
                    pass


def local_folders(app_file: str, sources: Sequence[str]) -> list[str]:
    """The app's folder plus the folders of local modules it imported from elsewhere (not the
    standard library, not installed packages, not mwtui itself)."""
    skip = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    skip |= {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    folders = [os.path.dirname(os.path.abspath(app_file))]
    for src in sources:
        folder = os.path.dirname(os.path.abspath(src))
        if any(folder == s or folder.startswith(s + os.sep) for s in skip):
            continue
        if not any(folder == f or folder.startswith(f + os.sep) for f in folders):
            folders.append(folder)
    return folders


async def watch(
    folders: Sequence[str],
    rules: WatchRules,
    on_change: Callable[[list[str]], Awaitable[None]],
    stop: asyncio.Event,
) -> None:
    """Call `on_change(paths)` for each batch of relevant changes until `stop` is set."""
    import watchfiles

    # step: how long a batch stays open for more events; debounce: the most it stays open. A save
    # usually lands as 1-3 events within a few ms, so a 10 ms step is picked up within about 20 ms (idle,
    # its wakes cost ~0.1% of a core more than a 20 ms step's; a save is served ~15 ms sooner).
    async for changes in watchfiles.awatch(
        *folders,
        watch_filter=lambda _change, path: rules.counts(path),
        step=10,
        debounce=400,
        stop_event=stop,
        recursive=True,
    ):
        await on_change(sorted({path for _, path in changes}))


# --- the orchestration ----------------------------------------------------------------------------------

ReloadState = str  # "watching" | "reloading" | "error" | "off"


class Reloader:
    """Reload as a part of its own: watch the app's folders (following its imports), import a saved
    version through `discover` (the isolated import child), and hand a manifest that loads to `apply`,
    which rolls the engine's pools and returns the pools that kept their previous version. Saves during
    a reload coalesce into one more; a save while an import runs stops that import (it reads a version
    already out of date, and may never end). Files the app writes itself are silenced by the guard."""

    def __init__(
        self,
        app_file: str,
        *,
        enabled: bool,
        rules: WatchRules,
        discover: Callable[[], Awaitable[Any]],  # -> AppManifest
        apply: Callable[[Any], Awaitable[tuple[list[str], int]]],  # AppManifest -> (failures, generation)
        starting: Callable[[], bool],  # does a replica of the app start now (its code runs)?
        say: Callable[[str], None],
        changed: Callable[[], None],  # the reload's state changed: publish it
        mine: Callable[[str], bool] | None = None,  # which changed paths are this app's (several apps served)
    ) -> None:
        self.app_file = app_file
        self.enabled = enabled
        self.rules = rules
        self._discover, self._apply, self._starting = discover, apply, starting
        self._say, self._changed = say, changed
        self._mine = mine
        self.guard = ReloadGuard(app_file=app_file)
        self.state: ReloadState = "watching" if enabled else "off"
        self.error: Any = None  # the latest save's LoadError while it does not load; None once one does
        self.last_ms: float | None = None
        self.reloads = 0
        self._lock = asyncio.Lock()
        self._again = False
        self._discovery: asyncio.Future[Any] | None = None  # the reload's import, while it runs
        self._sources: Sequence[str] = ()  # the modules the last good load imported
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watched: list[str] = []  # the folders being watched now
        self._rewatch = asyncio.Event()  # set to watch again, over the folders the last good load used

    # ----- the first import, and watching
    async def first_load(self) -> Any:
        """The first import. With reload on, a save while it runs (a module stuck in a loop at import,
        then fixed) stops it and imports the new version at once, as a save during a reload does,
        instead of waiting out the discovery timeout."""
        if not self.enabled:
            return await self._discover()
        loop = asyncio.get_running_loop()
        saved = asyncio.Event()
        stop = asyncio.Event()

        async def on_change(paths: list[str]) -> None:
            paths = [p for p in paths if self._mine is None or self._mine(p)]
            verdict = self.guard.filter(paths, time.monotonic(), busy=True)
            self._tell(verdict)
            if verdict.keep:
                forget_bytecode(verdict.keep)
                saved.set()

        watcher = loop.create_task(watch(local_folders(self.app_file, ()), self.rules, on_change, stop))
        try:
            while True:
                saved.clear()
                found = loop.create_task(self._discover())
                again = loop.create_task(saved.wait())
                await asyncio.wait({found, again}, return_when=asyncio.FIRST_COMPLETED)
                again.cancel()
                if found.done():
                    return found.result()
                found.cancel()  # kills the import's process group
                with contextlib.suppress(asyncio.CancelledError):
                    await found
                self._say("saved while the first import ran: importing the new version")
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watcher, 2.0)
            if not watcher.done():
                watcher.cancel()

    def loaded(self, sources: Sequence[str], error: Any) -> None:
        """The first load's outcome: its modules are the app's (never silenced); with an `error` the
        engine waits for a good save."""
        self._sources = sources
        self.guard.protect(sources)
        self.error = error
        if error is not None:
            self.state = "error"

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._watch_loop())

    async def _watch_loop(self) -> None:
        async def on_change(paths: list[str]) -> None:
            if self._mine is not None:  # another app's file: that app reloads, not this one
                paths = [p for p in paths if self._mine(p)]
                if not paths:
                    return
            verdict = self.guard.filter(paths, time.monotonic(), self.busy())
            self._tell(verdict)
            if verdict.keep:
                forget_bytecode(verdict.keep)
                names = ", ".join(self._rel(p) for p in verdict.keep[:3])
                # Not awaited: the watcher goes on at once (a reload that brings a new folder into
                # view restarts it over that folder before the new version serves); reloads coalesce.
                task = asyncio.get_running_loop().create_task(self.reload(f"{names} changed"))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        while not self._stop.is_set():
            self._watched = local_folders(self.app_file, self._sources)
            self._rewatch = asyncio.Event()
            try:
                await watch(self._watched, self.rules, on_change, self._rewatch)
            except Exception as e:  # noqa: BLE001 - a broken watcher must not take the app down
                self.state = "off"
                self._say(f"file watching stopped: {e}")
                return

    @property
    def sources(self) -> Sequence[str]:
        """The modules the last good load imported (the app's own, and every other it loaded)."""
        return self._sources

    def busy(self) -> bool:
        """Whether the app's own code runs now (a reload's import, a replica's start): a file changed
        meanwhile may be one it writes itself."""
        return self._lock.locked() or self._starting()

    def activity(self) -> None:
        """A replica started, became ready or ended: the app's code ran just now."""
        self.guard.busy(time.monotonic())

    def expire(self) -> None:
        """Once a second: files silenced long enough are watched again."""
        for path in self.guard.expire(time.monotonic()):
            self._say(f"{self._rel(path)} has not changed for {self.guard.quiet_s:g} s: watched again")

    # ----- reloading
    async def reload(self, reason: str = "reload requested") -> bool:
        """Load the file again and roll every pool to the new version; True if all of it serves.
        Overlapping calls coalesce: a change during a reload triggers one more afterwards."""
        if self._lock.locked():
            self._again = True
            if self._discovery is not None:
                self._discovery.cancel()  # see the class's docstring
            return False
        async with self._lock:
            ok = await self._once(reason)
            while self._again:
                self._again = False
                ok = await self._once("changed again during the reload")
            return ok

    async def _once(self, reason: str) -> bool:
        t0 = time.monotonic()
        self.state = "reloading"
        self.guard.busy(t0)
        self._say(f"reloading ({reason})")
        self._discovery = asyncio.ensure_future(self._discover())
        try:
            manifest = await self._discovery
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being stopped, not superseded
            self._say("a newer save came: the import still running was stopped")
            return False
        finally:
            self._discovery = None
        if manifest.error:
            self.error = manifest.error
            self.guard.busy(time.monotonic())
            self.state = "error"
            self._say(f"reload failed, the previous version keeps serving: {manifest.error.message}")
            self._changed()
            return False
        self.error = None
        self.guard.protect(manifest.sources)
        self._follow_imports(manifest.sources)
        failures, generation = await self._apply(manifest)
        self.last_ms = (time.monotonic() - t0) * 1000
        self.reloads += 1
        self.guard.busy(time.monotonic())
        self.state = "error" if failures else "watching"
        if failures:
            self._say(f"reload took {self.last_ms:.0f} ms; {len(failures)} pool(s) kept their previous version")
        else:
            self._say(f"reloaded in {self.last_ms:.0f} ms (generation {generation})")
        self._changed()
        return not failures

    def _follow_imports(self, sources: Sequence[str]) -> None:
        """After a good load: if the app now imports local modules from folders not watched yet (or
        no longer from some), watch the new set, so that editing them reloads too."""
        self._sources = sources
        folders = local_folders(self.app_file, sources)
        if self._task is None or folders == self._watched:
            return
        added = [f for f in folders if f not in self._watched]
        if added:
            self._say(f"now also watching {', '.join(added)}")
        self._rewatch.set()

    # ----- words
    def _tell(self, verdict: Verdict) -> None:
        """Say on screen (and in `serve`'s output) what the guard silenced or watches again."""
        for path in verdict.silenced:
            self._say(f"{self._rel(path)} changed {self.guard.strikes} times in a row while the app "
                      "started (written by the app itself?): silenced while the app starts; a save of it "
                      "while nothing reloads still reloads (--reload-exclude silences it for good)")
        for path in verdict.released:
            self._say(f"{self._rel(path)} changed while nothing was reloading: watched again")
        for path in verdict.looping:
            self._say(f"{self._rel(path)} changed {self.guard.strikes} times in a row while the app "
                      "started; the app imports it, so its changes still reload (if the app writes it, "
                      "--reload-exclude it)")

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, os.path.dirname(self.app_file))

    def close(self) -> None:
        self._stop.set()
        self._rewatch.set()
        for task in (self._task, *self._tasks):
            if task:
                task.cancel()
