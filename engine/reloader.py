"""Watch the app's files and say when to reload. What to do on a change is the facade's business.

The rules (which paths count, when a path that keeps re-triggering is silenced) are pure and tested
without a file system; `watch()` is the thin I/O loop around watchfiles.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import sys
import sysconfig
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

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
    # usually lands as 1-3 events within a few ms, so a 20 ms step is picked up well under 100 ms.
    async for changes in watchfiles.awatch(
        *folders,
        watch_filter=lambda _change, path: rules.counts(path),
        step=20,
        debounce=400,
        stop_event=stop,
        recursive=True,
    ):
        await on_change(sorted({path for _, path in changes}))
