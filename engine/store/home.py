"""Where mwtui keeps its state, and how private files are written there."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

# Modal's rule for the names of its objects (secrets, volumes, dicts, ...).
NAME_RE = re.compile(r"^[a-zA-Z0-9._-]{1,64}$")

HOME_ENV = "MWTUI_HOME"


def mwtui_home() -> Path:
    """`$MWTUI_HOME`, else ~/.config/mwtui. Read on every call: tests point it elsewhere."""
    return Path(os.environ.get(HOME_ENV) or os.path.expanduser("~/.config/mwtui"))


def private_dir(path: Path) -> Path:
    """A folder only its owner can enter (created 0700 if missing, parents too)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path.lock`, across processes, for read-modify-write of `path`."""
    private_dir(path.parent)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with a file that is 0600 from its first byte."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a stale temporary file may have had other bits
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
