"""A process and everything it started, however it started it.

User code may start processes that leave the replica's process group (`setsid`, `start_new_session`,
a double fork) and ignore SIGTERM, so killing the group is not enough. Each replica, and the zygote
that forks replicas, is made a *child subreaper* (Linux, PR_SET_CHILD_SUBREAPER): a process orphaned
below it is reparented to it instead of to init, so while it lives its whole tree stays findable as
its descendants, and `kill_tree` takes them all down. Elsewhere (no prctl) orphans still go to init:
`kill_tree` then gets what it can still see.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
TERM_GRACE_S = 2.0  # on a replica's own stop, its descendants get this long after SIGTERM before SIGKILL
KILLED_WAIT_S = 1.0  # a SIGKILLed process is gone in microseconds; this only bounds a round
_ROUNDS = 20  # each round kills what the last one's deaths reparented; a fork bomb does not hold us forever


def become_subreaper() -> bool:
    """Orphaned descendants of this process are reparented to it (not to init) from now on. Call before
    any user code runs; not inherited by children. False where the platform has no such thing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def descendants(pid: int) -> list[psutil.Process]:
    """Every live process below `pid` (zombies are dead already), never the calling process."""
    import psutil  # imported when first needed: most replicas never kill anything

    try:
        found = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    me = os.getpid()
    return [p for p in found if p.pid != me and _alive(p)]


def _alive(p: psutil.Process) -> bool:
    import psutil

    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    left = [p for p in procs if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.01)
        left = [p for p in left if _alive(p)]


def _signal(procs: list[psutil.Process], sig: int) -> None:
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.Error, OSError):
            p.send_signal(sig)  # psutil checks the pid still names the same process


def kill_tree(root: int, *, grace: float = 0.0, include_root: bool = False) -> None:
    """Every descendant of `root` gone. With `grace`, they get SIGTERM and up to that long to exit
    first; then SIGKILL, round after round, since a dying process's children are reparented (to `root`
    when it is a subreaper) and show up only then. With `include_root`, `root` is frozen (SIGSTOP)
    first, so that it starts nothing new meanwhile, and killed last. Never signals the caller itself."""
    me = os.getpid()
    if include_root and root != me:
        with contextlib.suppress(OSError):
            os.kill(root, signal.SIGSTOP)
    if grace > 0:
        procs = descendants(root)
        if procs:
            _signal(procs, signal.SIGTERM)
            _wait_gone(procs, grace)
    for _ in range(_ROUNDS):
        procs = descendants(root)
        if not procs:
            break
        _signal(procs, signal.SIGKILL)
        _wait_gone(procs, KILLED_WAIT_S)
    if include_root and root != me:
        with contextlib.suppress(OSError):
            os.kill(root, signal.SIGKILL)


def kill_all(procs: list[psutil.Process]) -> None:
    """SIGKILL each of `procs` that is still the process it was (they may have been reparented out of
    any tree we could walk now, e.g. to init after their parent died)."""
    _signal([p for p in procs if _alive(p)], signal.SIGKILL)
