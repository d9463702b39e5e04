"""What the engine tells its subscribers (the screen, `serve`'s printer) as things happen.

Two kinds: a log line (a replica's output, an access line, the engine's own words) and a pool whose
state changed (the snapshot in engine/status.py says what it is now). Subscribers get them through
`Engine.subscribe`; nothing else of the engine's machinery is theirs to read.
"""

from __future__ import annotations

import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from .manifest import EndpointSpec

ENGINE_LOG = "mwtui"  # the pool name of the engine's own log lines (reloads, warnings)
LOG_LINES_KEPT = 2000  # per pool, in memory: what the screen's log pane can scroll back through


@dataclass(frozen=True)
class LogLine:
    pool: str
    replica: str
    text: str
    t: float
    endpoint: str | None = None  # set on access lines: a class's endpoints share one pool log


@dataclass(frozen=True)
class PoolChanged:
    """Readiness or state of a pool changed: routes and status must be republished."""

    pool: str


Event = LogLine | PoolChanged


CALLERS_WINDOW_S = 60.0  # a row lists the pools that called it this recently


class Callers:
    """Which pools called each function or class, and when last: from the call path's access lines."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[str, float]] = {}  # endpoint -> caller -> time.time() of the last call

    def note(self, endpoint: str, caller: str, t: float) -> None:
        self._seen.setdefault(endpoint, {})[caller] = t

    def recent(self, endpoint: str, now: float | None = None) -> tuple[str, ...]:
        """The pools that called `endpoint` in the last minute, most recent first."""
        since = (now if now is not None else time.time()) - CALLERS_WINDOW_S
        seen = self._seen.get(endpoint, {})
        return tuple(c for c, t in sorted(seen.items(), key=lambda kv: -kv[1]) if t >= since)


def call_of(path: str) -> tuple[str, str] | None:
    """(caller, callee) of a call's path, `/from/<caller pool>/<callee>[?values]` (see sdk/call_route.py)."""
    parts = path.partition("?")[0].split("/")
    if len(parts) != 4 or parts[1] != "from":
        return None
    return unquote(parts[2]), unquote(parts[3])


def access_lines(msg: dict[str, Any], spec_of: Callable[[str], EndpointSpec | None],
                 callers: Callers | None = None) -> list[LogLine]:
    """The gateway's "access" event as log lines, each in the log of the pool that served it. A call
    from another pool reads `call Model.predict from api 200 3.1ms`, and its caller is noted."""
    out = []
    for line in msg.get("lines", []):
        spec = spec_of(line.get("endpoint", ""))
        if spec is not None:
            text = f"{line['method']} {line['path']} {line['status']} {line['ms']:.1f}ms"
            call = call_of(line["path"]) if spec.is_call else None
            if call is not None:
                text = f"call {call[1]} from {call[0]} {line['status']} {line['ms']:.1f}ms"
                if callers is not None and line["status"] == 200:  # a refused call (no token) names no caller
                    callers.note(spec.name, call[0], line.get("t", time.time()))
            out.append(LogLine(spec.pool, line.get("upstream") or spec.pool, text, line.get("t", time.time()), spec.name))
    for name, count in (msg.get("dropped") or {}).items():
        # Past 2000 a second the gateway counts requests instead of listing them: say so.
        spec = spec_of(name)
        if spec is not None and isinstance(count, int):
            out.append(LogLine(spec.pool, spec.pool, f"… and {count} more requests", time.time(), spec.name))
    return out


class EventHub:
    """Hands each event to every subscriber and keeps each pool's last LOG_LINES_KEPT log lines."""

    def __init__(self) -> None:
        self.logs: dict[str, deque[LogLine]] = {}
        self._listeners: list[Callable[[Event], None]] = []

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def publish(self, event: Event) -> None:
        if isinstance(event, LogLine):
            self.logs.setdefault(event.pool, deque(maxlen=LOG_LINES_KEPT)).append(event)
        # Listeners run inside the engine's own tasks (replica log readers, the gateway's event reader):
        # one that raises (a closed stdout, a screen's bug) would end those tasks, and with them metrics,
        # autoscaling and cleanup. It is dropped instead, once, with its traceback in mwtui's log.
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - whatever a subscriber does wrong, the engine goes on
                if listener in self._listeners:
                    self._listeners.remove(listener)
                    self.publish(LogLine(ENGINE_LOG, "mwtui", "a subscriber to the engine's events failed and gets "
                                         f"no more of them: {getattr(listener, '__qualname__', listener)!s}\n"
                                         f"{traceback.format_exc()}", time.time()))

    def lines(self, pool: str, with_engine: bool = True) -> list[LogLine]:
        """The kept log lines of `pool`; with mwtui's own lines (reloads, warnings) among them, in time
        order, where `with_engine`: they belong in every endpoint's view."""
        own = list(self.logs.get(pool, ()))
        ours = list(self.logs.get(ENGINE_LOG, ())) if with_engine and pool != ENGINE_LOG else []
        return sorted([*own, *ours], key=lambda ln: ln.t) if ours else own


__all__ = ["ENGINE_LOG", "LOG_LINES_KEPT", "Event", "EventHub", "LogLine", "PoolChanged", "access_lines"]
