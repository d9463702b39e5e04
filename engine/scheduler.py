"""Runs scheduled functions while they are served: one call, with no arguments, at each time their
`modal.Period` or `modal.Cron` names (the rules are schedules.py's), and one more whenever asked.

A run is a call like any other pool's call: a POST through the gateway to the function's call host,
with this run's token, so that waking the pool from zero, `max_inputs`, its `timeout`, metrics and
the function's log all apply. It comes `from schedule`, which is what its row lists among its callers.
The reply is read only for what went wrong (the outer pickle holds plain text beside the exception's
own bytes, which the engine never unpickles: it has none of the app's classes).
"""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from .manifest import EndpointSpec
from .schedules import ScheduleError, describe, next_run

CONTENT_TYPE = "application/x-mwtui-call"  # as sdk/call_wire.py (the engine does not import the sdk)
TOKEN_HEADER = "x-mwtui-call-token"
CALLER = "schedule"


@dataclass
class _Entry:
    spec: EndpointSpec
    since: float  # when it was first served with this schedule (a Period counts from there)
    next: float | None


class Scheduler:
    def __init__(self, request: Callable[..., Awaitable[tuple[int, bytes]]], token: str, say: Callable[[str], None],
                 paused: Callable[[str], bool] = lambda name: False) -> None:
        self.request = request  # GatewayLink.request: one request through the gateway
        self.token = token
        self.say = say
        self.paused = paused  # a function stopped by hand skips its runs
        self.entries: dict[str, _Entry] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[None]] = set()

    def update(self, specs: Iterable[EndpointSpec], now: float | None = None) -> None:
        """The functions served now (after a start or a reload): a schedule that is unchanged keeps
        its next run; a new or changed one starts counting now."""
        now = time.time() if now is None else now
        fresh: dict[str, _Entry] = {}
        for spec in specs:
            if spec.kind != "function" or not spec.schedule:
                continue
            old = self.entries.get(spec.name)
            if old is not None and old.spec.schedule == spec.schedule:
                fresh[spec.name] = _Entry(spec, old.since, old.next)
                continue
            try:
                fresh[spec.name] = _Entry(spec, now, next_run(spec.schedule, now, now))
            except ScheduleError as exc:
                self.say(f"{spec.name}: its schedule cannot run: {exc}")
                continue
            self.say(f"{spec.name}: runs {describe(spec.schedule)}")
        self.entries = fresh
        self._wake.set()

    def next_run(self, name: str) -> float | None:
        entry = self.entries.get(name)
        return entry.next if entry else None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="scheduler")

    async def close(self) -> None:
        for task in [self._task, *self._runs]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in [self._task, *self._runs] if t is not None), return_exceptions=True)

    def run_now(self, spec: EndpointSpec, what: str = "run from mwtui", caller: str = "mwtui") -> None:
        """One run of function `spec` now, whatever its schedule (it must take no arguments)."""
        task = asyncio.get_running_loop().create_task(self._run(spec, what, caller))
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    async def _loop(self) -> None:
        while True:
            now = time.time()
            for name, entry in list(self.entries.items()):
                if entry.next is None or entry.next > now:
                    continue
                entry.next = next_run(entry.spec.schedule or {}, now, entry.since)
                if self.paused(name):
                    self.say(f"{name}: stopped, so its scheduled run is skipped")
                    continue
                self.run_now(entry.spec, "scheduled run", CALLER)
            due = [e.next for e in self.entries.values() if e.next is not None]
            wait = max(0.05, min(due) - time.time()) if due else 3600.0
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=min(wait, 60.0))
            except asyncio.TimeoutError:
                pass

    async def _run(self, spec: EndpointSpec, what: str, caller: str) -> None:
        name = spec.name
        call = pickle.dumps({"method": None, "args": (), "kwargs": {}})
        try:
            status, body = await self.request(
                "POST", f"/from/{caller}/{name}", host=f"{spec.label}.localhost", body=call, timeout=None,
                headers=f"Content-Type: {CONTENT_TYPE}\r\n{TOKEN_HEADER}: {self.token}\r\n")
        except Exception as exc:  # noqa: BLE001 - OSError, or the gateway not listening (yet)
            self.say(f"{name}: {what} could not be sent: {exc}")
            return
        problem = _problem(status, body)
        if problem:
            self.say(f"{name}: {what} failed: {problem}")


def _problem(status: int, body: bytes) -> str | None:
    """What went wrong with a call, from its reply; None when it returned."""
    if status != 200:
        return f"HTTP {status}: {body.decode('utf-8', 'replace').strip()[:300]}"
    try:
        reply = pickle.loads(body)  # noqa: S301 - our own replica's reply; only its outer dict is read
    except Exception:  # noqa: BLE001
        return "an unreadable reply"
    if isinstance(reply, dict) and "value" not in reply:
        return str(reply.get("exception") or "it raised")
    return None
