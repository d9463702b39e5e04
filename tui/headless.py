"""`mwtui serve`: the engine without a screen. URLs first, like `modal serve`, then prefixed logs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from mwtui.engine.events import Event, LogLine, PoolChanged
from mwtui.engine.facade import AppRef, Engine, GatewayError, LoadFailed
from mwtui.engine.manifest import EndpointSpec
from mwtui.engine.status import Snapshot

WIDTH = 16  # of the prefix column: replica id or `mwtui`


class Output:
    """Where `serve` writes. A write that fails never reaches the engine (its tasks call us).

    When stdout's reader goes away (`mwtui serve app.py | head -2`), serve stops as on SIGTERM: it
    drains, stops every process, removes its temporary folders and exits 0. Serving on with nobody
    reading would leave the pipeline hanging (the shell waits for every member) for no one's benefit;
    the reader ending is the person's way of saying they are done, as with `tail -f | head`. A closed
    stderr only silences the warnings.
    """

    def __init__(self, on_stdout_closed: Callable[[], None]) -> None:
        self.on_stdout_closed = on_stdout_closed
        self.stdout_closed = False
        self._watch: tuple[asyncio.AbstractEventLoop, int] | None = None  # see watch_stdout

    def say(self, text: str = "", err: bool = False) -> None:
        stream = sys.stderr if err else sys.stdout
        try:
            stream.write(text + "\n")
            stream.flush()
        except (OSError, ValueError):  # EPIPE, EIO of a hung-up terminal; ValueError: a closed file
            self._lost(stream)

    def _lost(self, stream: TextIO) -> None:
        if stream is sys.stdout and self._watch is not None:
            # Before the dup2 below: epoll could not unregister the pipe by its descriptor any more,
            # and would keep reporting the error while another process (2>&1) holds the pipe.
            loop, fd = self._watch
            self._watch = None
            loop.remove_reader(fd)
        # As the Python docs advise for EPIPE: point the descriptor at /dev/null, so that what is still
        # buffered, later writes and the flush at exit all go nowhere instead of raising again.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        if stream is sys.stdout and not self.stdout_closed:
            self.stdout_closed = True
            self.on_stdout_closed()

    def watch_stdout(self, loop: asyncio.AbstractEventLoop) -> None:
        """Notice at once when a pipe's reader goes away, not at the next log line (which may never
        come while the app is idle). The write end of a pipe never becomes readable; epoll and kqueue
        report its reader's close as an error event, which wakes a reader callback."""
        try:
            fd = sys.stdout.fileno()
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                return  # a terminal or socket can be readable (typing, data): no such signal there
            loop.add_reader(fd, self._lost, sys.stdout)
            self._watch = (loop, fd)
        except (OSError, ValueError, NotImplementedError):
            pass  # then the next write finds out


def display_path(path: str) -> str:
    """Relative to where the user stands if that is shorter, else as given."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def print_endpoints(snap: Snapshot, say: Callable[..., None]) -> None:
    files = ", ".join(display_path(file) for _, file in snap.apps) or display_path(snap.file)
    say(f"✓ mwtui serving {snap.app_name} ({files})")
    say(f"  gateway {snap.gateway_url}  (index, /api/endpoints, /metrics)")
    width = max((len(e.name) for e in snap.endpoints), default=4)
    for e in snap.endpoints:
        s = e.spec
        kind = f"{s.kind} {s.method}" if s.kind == "fastapi" else s.kind
        if s.is_call:  # no URL: reached by .remote(), .spawn(), .map() from the app's code
            say(f"  {e.name:<{width}}  {kind:<12}    {call_note(s)}")
            continue
        auth = "  (proxy auth)" if s.requires_proxy_auth else ""
        say(f"  {e.name:<{width}}  {kind:<12} => {e.url}{auth}")
        port = e.url.rsplit(":", 1)[1]
        for domain in s.custom_domains:
            say(f"  {'':<{width}}  {'':<12}    custom domain: http://{domain}:{port}")
    for w in snap.warnings:
        say(f"warning: {w}", err=True)


def call_note(s: EndpointSpec) -> str:
    """How a function or class without a URL is reached, for `serve`'s list."""
    from mwtui.engine.schedules import describe

    if s.schedule:
        return f"runs {describe(s.schedule)}, and on calls"
    return "called by the app's code"


async def serve(ref: AppRef | Sequence[AppRef], options: dict[str, Any]) -> int:
    stop = asyncio.Event()
    out = Output(on_stdout_closed=stop.set)
    say = out.say
    loop = asyncio.get_running_loop()
    out.watch_stdout(loop)
    engine = Engine(ref, **options)
    width = WIDTH
    announced: set[tuple[str, str]] = set()

    def on_event(ev: Event) -> None:
        if isinstance(ev, LogLine):
            say(f"{ev.replica:<{width}} | {ev.text}")
        elif isinstance(ev, PoolChanged):
            pool = engine.pool_brief(ev.pool)
            if pool and pool.state in ("running", "failed") and (ev.pool, pool.state) not in announced:
                announced.add((ev.pool, pool.state))
                word = "ready" if pool.state == "running" else "FAILED"
                say(f"{'mwtui':<{width}} | {', '.join(pool.endpoints)}: {word}")

    engine.subscribe(on_event)
    try:
        snap = await engine.start()
    except LoadFailed as e:
        say(f"mwtui: {e.error.message}", err=True)
        await engine.close()
        return 1
    except GatewayError as e:
        say(f"mwtui: {e}", err=True)
        await engine.close()
        return 1
    if snap.error is not None:
        # Reload is on: the next good save brings the endpoints up (and their URLs get printed then).
        say(f"mwtui: {snap.error.message}", err=True)
        say(f"  gateway {snap.gateway_url}  (index, /api/endpoints, /metrics)")
        say(f"{'mwtui':<{width}} | waiting for a save that loads ({display_path(snap.file)})")

        async def announce_when_loaded() -> None:
            while engine.manifest is None:
                await asyncio.sleep(0.05)
            print_endpoints(engine.snapshot(), say)

        announcer = loop.create_task(announce_when_loaded())
    else:
        print_endpoints(snap, say)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # A closed terminal sends SIGHUP: stop as on SIGTERM (drain, stop every process, remove temp
    # folders) rather than die on the spot. Under `nohup` it is ignored, and stays so.
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        loop.add_signal_handler(signal.SIGHUP, stop.set)
    await stop.wait()
    if snap.error is not None:
        announcer.cancel()
    if out.stdout_closed:
        say(f"{'mwtui':<{width}} | stdout was closed: stopping, draining in-flight requests", err=True)
    else:
        say(f"{'mwtui':<{width}} | stopping: draining in-flight requests")
    await engine.close()
    return 0
