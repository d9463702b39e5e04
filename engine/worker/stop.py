"""SIGTERM and SIGINT, owned by the replica from its first line.

The handlers only record the request (and forward it to whatever is serving, through callbacks): the
replica checks between startup steps, and the server stops on its own schedule. A stop can also come
from inside, e.g. a web_server whose port went away.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from types import FrameType


class Stop:
    def __init__(self) -> None:
        self.requested = False
        self.count = 0
        self.exit_code = 0
        self._callbacks: list[Callable[[int], None]] = []

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.request()

    def request(self, exit_code: int = 0) -> None:
        if not self.requested:
            self.exit_code = exit_code
        self.requested = True
        self.count += 1
        for cb in list(self._callbacks):
            cb(self.count)

    def on_request(self, cb: Callable[[int], None]) -> None:
        """`cb(count)` on every request from now on; at once if one is already pending."""
        self._callbacks.append(cb)
        if self.requested:
            cb(self.count)

    def wait(self) -> None:
        # A short sleep loop rather than an Event: signal handlers run in this (main) thread, and
        # waking from sleep is the one wait that is always safe to interrupt.
        while not self.requested:
            time.sleep(0.05)
