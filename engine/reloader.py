"""Watch the app's files and say when to reload. What to do on a change is the facade's business.

The rules (which paths count, when a path that keeps re-triggering is ignored) are pure and tested
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


@dataclass
class ReloadGuard:
    """Stops a reload loop: a path that changes again right after each reload it caused is most
    likely written by the app itself (a log, a cache, generated code). After `strikes` such changes
    in a row it is ignored, and the caller says so on screen. A person saving quickly stops long
    before `strikes`; a loop never stops, so a high count costs a few reloads and no false alarm."""

    window_s: float = 1.0
    strikes: int = 8
    _last_reload_done: float = -1e9
    _counts: dict[str, int] = field(default_factory=dict)
    ignored: set[str] = field(default_factory=set)

    def reload_done(self, now: float) -> None:
        self._last_reload_done = now

    def filter(self, paths: Iterable[str], now: float) -> tuple[list[str], list[str]]:
        """(paths that should trigger a reload, paths newly ignored)."""
        soon_after = now - self._last_reload_done <= self.window_s
        keep, newly_ignored = [], []
        for p in paths:
            if p in self.ignored:
                continue
            if soon_after:
                self._counts[p] = self._counts.get(p, 0) + 1
                if self._counts[p] >= self.strikes:
                    self.ignored.add(p)
                    newly_ignored.append(p)
                    continue
            else:
                self._counts.pop(p, None)
            keep.append(p)
        return keep, newly_ignored


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
