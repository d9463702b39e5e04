"""`@modal.web_server(port)`: the user's function starts its own server; we wait for the port.

As Modal does: call the function once, then poll the port with TCP connects (attempts of
min(startup_timeout, 1.0) s, 10 ms apart) until one succeeds, or fail after `startup_timeout` with
Modal's TimeoutError text. Differences, because this runs on the user's machine:
- 127.0.0.1 counts as ready (Modal polls the container's external address); the text is kept.
- The function runs in a daemon thread, so that a blocking server (`web.run_app`, `uvicorn.run`,
  `subprocess.run`) works as well as Modal's intended `subprocess.Popen` style.
- A port that already accepts before the function runs is somebody else's: fail naming its holder.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from ..ports import port_holder

TIMEOUT_MESSAGE = (
    "Waited too long for port {port} to start accepting connections. Make sure the web server is bound "
    "to 0.0.0.0 (rather than localhost or 127.0.0.1), or adjust `startup_timeout`."
)
POLL_INTERVAL = 0.01
MONITOR_INTERVAL = 2.0
MONITOR_REFUSALS = 3  # consecutive refused connects before the server counts as gone


class PortBusy(Exception):
    def __init__(self, port: int, holder: str) -> None:
        super().__init__(f"port {port} is already in use by {holder}")
        self.port = port
        self.holder = holder


class FunctionFailed(Exception):
    """The web_server function raised; `original` is its exception."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


class StopRequested(Exception):
    pass


def probe(port: int, timeout: float) -> str:
    """"ok", "refused" (nothing listens) or "timeout" (no answer: maybe just busy)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
        return "ok"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return "refused" if e.errno == errno.ECONNREFUSED else "timeout"


def _signals_stay_with_main_thread() -> None:
    """aiohttp's `web.run_app` (and code like it) installs SIGINT/SIGTERM handlers on its event loop
    and skips that only on NotImplementedError (as on Windows). In our thread asyncio raises
    RuntimeError instead, so make it NotImplementedError: these signals belong to the replica's
    main thread anyway."""
    loop_cls: Any = asyncio.SelectorEventLoop
    original = loop_cls.add_signal_handler
    if getattr(original, "_mwtui_patched", False):
        return

    def add_signal_handler(self: Any, sig: int, callback: Any, *args: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise NotImplementedError("signals are handled by the replica's main thread")
        return original(self, sig, callback, *args)

    add_signal_handler._mwtui_patched = True  # type: ignore[attr-defined]
    loop_cls.add_signal_handler = add_signal_handler


class WebServer:
    """One web_server endpoint: start it, wait for its port, then watch that it stays up."""

    def __init__(self, name: str, fn: Callable[[], Any], port: int, startup_timeout: float) -> None:
        self.name = name
        self.fn = fn
        self.port = port
        self.startup_timeout = startup_timeout
        self._error: BaseException | None = None
        self._returned_at: float | None = None
        self._ready = False

    def _run(self) -> None:
        try:
            self.fn()
            self._returned_at = time.monotonic()
        except BaseException as e:  # noqa: BLE001 - reported to the supervisor or to stderr
            self._error = e
            if self._ready:
                print(f"mwtui: endpoint `{self.name}`: the @modal.web_server function raised:", file=sys.stderr)
                traceback.print_exception(e)

    def start(self, should_stop: Callable[[], bool]) -> None:
        """Return once the port accepts; raise PortBusy, FunctionFailed, TimeoutError or StopRequested."""
        if probe(self.port, 0.5) == "ok":
            raise PortBusy(self.port, port_holder(self.port))
        _signals_stay_with_main_thread()
        threading.Thread(target=self._run, name=f"web_server:{self.name}", daemon=True).start()
        attempt = min(self.startup_timeout, 1.0)
        deadline = time.monotonic() + self.startup_timeout
        restarted = False
        while True:
            if self._error is not None:
                raise FunctionFailed(self._error)
            if should_stop():
                raise StopRequested()
            if probe(self.port, attempt) == "ok":
                self._ready = True
                return
            if self._returned_at is not None and not restarted:
                # Modal starts the clock once the function has returned; a blocking function never
                # returns, so for it the clock started with the thread.
                deadline = self._returned_at + self.startup_timeout
                restarted = True
            if time.monotonic() >= deadline:
                raise TimeoutError(TIMEOUT_MESSAGE.format(port=self.port))
            time.sleep(POLL_INTERVAL)

    def watch(self, on_lost: Callable[[str], None]) -> None:
        """In a daemon thread: when nothing listens on the port any more, call `on_lost(reason)`
        once. As on Modal, where a web_server connection failure winds the container down."""

        def loop() -> None:
            refused = 0
            while True:
                time.sleep(MONITOR_INTERVAL)
                result = probe(self.port, MONITOR_INTERVAL)
                refused = refused + 1 if result == "refused" else 0
                if refused >= MONITOR_REFUSALS:
                    on_lost(f"endpoint `{self.name}`: nothing accepts connections on port {self.port} any more")
                    return

        threading.Thread(target=loop, name=f"web_server-watch:{self.name}", daemon=True).start()
