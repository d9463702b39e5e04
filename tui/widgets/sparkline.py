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
        self._top: dict[int, float] = {}  # width -> the largest bucket of any series (see shared_top)

    def record(self, snap: Snapshot) -> None:
        for e in snap.endpoints:
            self._series.setdefault(e.name, deque(maxlen=self.keep)).append(e.rps)
        self._top.clear()

    def push(self, name: str, values: list[float]) -> None:
        """Add samples directly (tests use it for a fixed picture)."""
        self._series.setdefault(name, deque(maxlen=self.keep)).extend(values)
        self._top.clear()

    def shared_top(self, width: int) -> float:
        """The largest bucket of every endpoint's sparkline: one scale for the whole table, so that a
        row with one request does not draw the full bar a row with thousands draws."""
        top = self._top.get(width)
        if top is None:
            top = self._top[width] = max(
                (b for s in self._series.values() for b in buckets(list(s), width, self.keep) if b is not None),
                default=0.0)
        return top

    def series(self, name: str) -> list[float]:
        return list(self._series.get(name, ()))


def buckets(values: list[float], width: int, keep: int = HISTORY_S) -> list[float | None]:
    """The last `keep` samples in `width` buckets, the mean of each; None where no sample is yet."""
    per = max(1, keep // width)
    padded: list[float | None] = [None] * max(0, keep - len(values)) + list(values[-keep:])
    out: list[float | None] = []
    for i in range(0, per * width, per):
        chunk = [v for v in padded[i : i + per] if v is not None]
        out.append(sum(chunk) / len(chunk) if chunk else None)
    return out


def sparkline(values: list[float], width: int = 10, keep: int = HISTORY_S, top: float | None = None) -> Text:
    """The last `keep` samples in `width` buckets (the mean of each), scaled to `top` (the table's
    shared scale), else to the largest bucket. Buckets with no sample yet are blank, so a fresh start
    does not look like a minute of silence; a bucket with any traffic draws at least the lowest bar."""
    bs = buckets(values, width, keep)
    if top is None:
        top = max((b for b in bs if b is not None), default=0.0)
    out = Text()
    for b in bs:
        if b is None:
            out.append(" ")
        elif top <= 0 or b <= 0:
            out.append(BARS[0], style="grey35")  # no traffic: grey, so that a little (the lowest bar) shows
        else:
            out.append(BARS[min(len(BARS) - 1, int(b / top * (len(BARS) - 1) + 0.5))], style="cyan")
    return out
