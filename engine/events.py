"""What the engine tells its subscribers (the screen, `serve`'s printer) as things happen.

Two kinds: a log line (a replica's output, an access line, the engine's own words) and a pool whose
state changed (the snapshot in engine/status.py says what it is now). Subscribers get them through
`Engine.subscribe`; nothing else of the engine's machinery is theirs to read.
"""

from __future__ import annotations

from dataclasses import dataclass

ENGINE_LOG = "mwtui"  # the pool name of the engine's own log lines (reloads, warnings)


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

__all__ = ["ENGINE_LOG", "Event", "LogLine", "PoolChanged"]
