"""How a child process learns that mwtui is gone, however it went (even SIGKILL).

mwtui opens one pipe and keeps its write end; every child it starts (replicas, the gateway) gets the
read end. Nothing is ever written, so a child's read returns only at end-of-file, which the kernel
delivers the moment the last write end closes: when mwtui exits or is killed. The child then kills
everything below it (see proctree: a replica is a subreaper, so that includes processes of the user's
that left its group) and its own process group (gunicorn workers, a web_server's process).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from .proctree import kill_tree

ENV_FD = "MWTUI_LIFELINE_FD"


class Lifeline:
    """The parent's side: create once per mwtui process, pass `child_fd` to every child."""

    def __init__(self) -> None:
        # os.pipe() fds are non-inheritable, so only children given child_fd explicitly hold it,
        # and no child ever holds the write end (which would keep the pipe open after we die).
        self.child_fd, self._write_fd = os.pipe()

    def env(self) -> dict[str, str]:
        return {ENV_FD: str(self.child_fd)}

    def close(self) -> None:
        for fd in (self.child_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def watch_parent(fd: int | None = None) -> threading.Thread | None:
    """The child's side: call early. Returns the watching thread, or None without a lifeline."""
    if fd is None:
        raw = os.environ.get(ENV_FD)
        if not raw:
            return None
        fd = int(raw)

    def wait_for_eof() -> None:
        while True:
            try:
                if os.read(fd, 1) == b"":
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        # The parent is gone: nobody will ever stop us, so take everything we started down now:
        # descendants first (those that left our group too), then the group. Only a group leader
        # kills its group, so that a child started without its own group never kills its caller's.
        try:
            with contextlib.suppress(Exception):
                kill_tree(os.getpid())
            if os.getpgid(0) == os.getpid():
                os.killpg(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)

    t = threading.Thread(target=wait_for_eof, name="mwtui-lifeline", daemon=True)
    t.start()
    return t
