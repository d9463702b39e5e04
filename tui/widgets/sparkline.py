"""Request-rate history kept by the screen (one sample a second) and its sparkline rendering."""

from __future__ import annotations

from collections import deque

from mwtui.engine.status import Snapshot
from rich.text import Text

BARS = "▁▂▃▄▅▆▇█"
HISTORY_S = 60  # one sample a second: the last minute


class RateHistory:
    """Requests/s per endpoint, sampled from snapshots; the engine keeps no history of its own."""

    def __init__(self, keep: int = HISTORY_S) -> None:
        self.keep = keep
        self._series: dict[str, deque[float]] = {}

    def record(self, snap: Snapshot) -> None:
        for e in snap.endpoints:
            self._series.setdefault(e.name, deque(maxlen=self.keep)).append(e.rps)

    def push(self, name: str, values: list[float]) -> None:
        """Add samples directly (tests use it for a fixed picture)."""
        self._series.setdefault(name, deque(maxlen=self.keep)).extend(values)

    def series(self, name: str) -> list[float]:
        return list(self._series.get(name, ()))


def sparkline(values: list[float], width: int = 10, keep: int = HISTORY_S) -> Text:
    """The last `keep` samples in `width` buckets (the mean of each), scaled to the largest bucket.
    Buckets with no sample yet are blank, so a fresh start does not look like a minute of silence."""
    per = max(1, keep // width)
    padded: list[float | None] = [None] * max(0, keep - len(values)) + list(values[-keep:])
    buckets: list[float | None] = []
    for i in range(0, per * width, per):
        chunk = [v for v in padded[i : i + per] if v is not None]
        buckets.append(sum(chunk) / len(chunk) if chunk else None)
    top = max((b for b in buckets if b is not None), default=0.0)
    out = Text()
    for b in buckets:
        if b is None:
            out.append(" ")
        elif top <= 0:
            out.append(BARS[0], style="grey35")
        else:
            out.append(BARS[min(len(BARS) - 1, int(b / top * (len(BARS) - 1) + 0.5))], style="cyan")
    return out
