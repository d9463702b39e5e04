"""mwtui's folders in the temp dir, and their removal once whoever made them is gone.

A folder is made as `mwtui-<kind>-<pid>-<random>`: the pid is its owner's (mwtui for its socket folder
and the zygote's working folder, a replica for an ephemeral Volume). The owner removes it on the way
out; a SIGKILL gives it no way out, so every mwtui sweeps at its start: a folder whose owner is no
longer running is removed. Only folders of this user, and only by the name above: an older or foreign
`mwtui-*` folder is never touched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

PREFIX = "mwtui-"
# The owner started before it made the folder, hence before the folder's last change (ctime); clocks
# read from different places (the kernel's process start, the file system) may disagree by a tick.
CLOCK_SLACK_S = 1.0


# A folder for Unix sockets must leave room for their names under the kernel's 107-byte path limit;
# under a deeper temp dir (pytest's, a macOS-style one) it goes in /tmp instead.
SHORT_BASE = "/tmp"
SHORT_LEN = 48


def make(kind: str, short: bool = False) -> str:
    """A new folder in the temp dir, owned by this process (removed by a later sweep if we die);
    `short`: one whose path stays short enough for the sockets in it."""
    base = tempfile.gettempdir()
    if short and len(os.fsencode(base)) > SHORT_LEN and os.access(SHORT_BASE, os.W_OK | os.X_OK):
        base = SHORT_BASE
    return tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-{os.getpid()}-", dir=base)


def places() -> list[str]:
    """Where `make` puts folders: the temp dir, and /tmp for short ones."""
    return list(dict.fromkeys((tempfile.gettempdir(), SHORT_BASE)))


@dataclass(frozen=True)
class Leftover:
    path: str
    owner: int


def owner_of(name: str) -> int | None:
    """The owner's pid from a folder name made by `make`; None for any other name."""
    if not name.startswith(PREFIX):
        return None
    parts = name[len(PREFIX):].rsplit("-", 2)  # mkdtemp's random part has no "-"; a kind may
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2]:
        return None
    return int(parts[1])


def owner_alive(pid: int, changed_at: float) -> bool:
    """Whether process `pid` runs and could have made a folder last changed at `changed_at` (a pid
    reused by a process started after that is somebody else)."""
    import psutil  # here: `make` runs in replicas too (ephemeral Volumes), which need none of it

    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # it exists, but we may not look: keep its folder
        return True
    return started <= changed_at + CLOCK_SLACK_S


def leftovers(folder: str | None = None) -> list[Leftover]:
    """Folders in `folder` (the temp dir) made by `make` whose owner is gone."""
    folder = folder or tempfile.gettempdir()
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    out = []
    uid = os.getuid()
    for name in names:
        owner = owner_of(name)
        if owner is None or owner == os.getpid():
            continue
        path = os.path.join(folder, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != uid:
            continue
        if not owner_alive(owner, st.st_ctime):
            out.append(Leftover(path, owner))
    return out


def sweep(folder: str | None = None) -> list[str]:
    """Remove the leftovers of owners that are gone, in `folder` or every place `make` uses; returns
    their paths."""
    gone = []
    found = leftovers(folder) if folder else [left for place in places() for left in leftovers(place)]
    for left in found:
        shutil.rmtree(left.path, ignore_errors=True)
        if not os.path.exists(left.path):
            gone.append(left.path)
    return gone
