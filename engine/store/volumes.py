"""Volumes as local folders, and how a container path (`volumes={"/data": vol}`, `add_local_dir(...,
"/assets")`) is made to reach a local one.

Each named volume is the folder `$MWTUI_HOME/volumes/<name>` (network file systems and cloud buckets get
folders of their own kind). Every replica of every pool sees the same folder live, so `commit()` and
`reload()` have nothing to do.

On Linux each replica normally gets its own container view (`mwtui.engine.worker.container`), where
mount paths are real mounts and none of the below is needed. In host mode (`--no-container`, or where
the kernel refuses), a mount path is provided by a symlink from the container path to the local folder, but only where that
costs the machine nothing: the path must not exist yet (or be our own link), its parent must be an
existing folder we may write in, and that folder must be a temporary one or the app's own, unless
`MWTUI_MOUNT_LINKS=any` allows links anywhere writable. So `/data` is never created on a machine where
mwtui runs as root by accident. mwtui never creates folders outside its own, never replaces anything but
a dangling link to a folder of its kind, and leaves its links in place (they point at stable folders,
and other replicas use them). Where a link cannot be made, the caller reports it and exposes the folder
as `MWTUI_VOLUME_<NAME>`.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .home import NAME_RE, mwtui_home

KIND_FOLDERS = {"volume": "volumes", "nfs": "network_file_systems", "bucket": "cloud_buckets"}
LINKS_ENV = "MWTUI_MOUNT_LINKS"  # "any": make a link wherever the machine allows


def folder_for(name: str, kind: str = "volume", *, create: bool = True) -> Path:
    """The local folder of a named volume (created if missing, as `create_if_missing=True` would:
    locally there is nothing to look up first)."""
    safe = name if NAME_RE.match(name) else re.sub(r"[^a-zA-Z0-9._-]", "_", name)[:64] or "_"
    path = mwtui_home() / KIND_FOLDERS[kind] / safe
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def env_var(name: str) -> str:
    """`MWTUI_VOLUME_<NAME>`: where user code can find a volume whose mount path could not be made."""
    return "MWTUI_VOLUME_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


@dataclass(frozen=True)
class LinkCheck:
    ok: bool
    reason: str = ""  # why not, for a person
    exists: bool = False  # already there (ours, or the very same place)


def _same(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _link_allowed(parent: Path) -> bool:
    if os.environ.get(LINKS_ENV) == "any":
        return True
    real = os.path.realpath(parent)
    roots = {os.path.realpath(r) for r in (tempfile.gettempdir(), "/tmp", os.getcwd())}
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _stale_link_of_ours(path: Path) -> bool:
    """A dangling symlink into a volume folder of some mwtui home that is gone (a test's, say)."""
    if not path.is_symlink() or path.exists():
        return False
    kind_folder = os.path.dirname(os.readlink(path))
    home = os.path.basename(os.path.dirname(kind_folder))
    return os.path.basename(kind_folder) in KIND_FOLDERS.values() and "mwtui" in home


def check_link(mount_path: str, target: str | Path) -> LinkCheck:
    """Can `mount_path` be made to lead to `target`? Looks only; changes nothing."""
    path = Path(mount_path)
    if os.path.lexists(path) and not _stale_link_of_ours(path):
        if _same(path, target):
            return LinkCheck(True, exists=True)
        return LinkCheck(False, f"{mount_path} already exists on this machine and is something else")
    parent = path.parent
    if not parent.is_dir():
        return LinkCheck(False, f"its folder {parent} does not exist on this machine")
    if not os.access(parent, os.W_OK | os.X_OK):
        return LinkCheck(False, f"{parent} is not writable here")
    if not _link_allowed(parent):
        return LinkCheck(False, f"mwtui makes links only in temporary folders and the app's folder; set "
                                f"{LINKS_ENV}=any to let it create {mount_path}")
    return LinkCheck(True)


def link(mount_path: str, target: str | Path) -> LinkCheck:
    """Make `mount_path` a symlink to `target` if `check_link` allows it."""
    check = check_link(mount_path, target)
    if not check.ok or check.exists:
        return check
    if _stale_link_of_ours(Path(mount_path)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(mount_path)
    try:
        os.symlink(target, mount_path, target_is_directory=os.path.isdir(target))
    except FileExistsError:
        pass  # another replica made it a moment ago: fine if it leads to the same place
    except OSError as e:
        return LinkCheck(False, f"cannot create {mount_path}: {e.strerror or e}")
    if _same(mount_path, target):
        return LinkCheck(True)
    return LinkCheck(False, f"{mount_path} already exists on this machine and is something else")
