"""When a scheduled function runs next: `modal.Period` and `modal.Cron`, as discovery records them.

Pure: the caller passes the time, so every rule is tested without waiting. A Period's first run comes
one period after the function is first served, as a deployed app's does on Modal; a Cron runs at each
minute its five fields match, in its time zone (minute, hour, day of month, month, day of week; `*`,
lists, ranges, steps, and month and day names; as in cron, when both day fields are restricted a day
matching either one runs).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_FIELDS = (("minute", 0, 59, None), ("hour", 0, 23, None), ("day of month", 1, 31, None),
           ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS))
_MAX_STEPS = 20_000  # jumps searched for the next match (a schedule that never matches, like Feb 30, stops)


class ScheduleError(ValueError):
    """A cron string or time zone that cannot be used; the text says which part and why."""


@dataclass(frozen=True)
class CronSpec:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday (7 is folded into 0)
    days_restricted: bool
    weekdays_restricted: bool
    zone: dt.tzinfo

    def matches_day(self, day: dt.date) -> bool:
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_month or in_week
        return in_month and in_week


def _value(text: str, low: int, names: list[str] | None, what: str) -> int:
    if names and text.lower()[:3] in names and not text.isdigit():
        return names.index(text.lower()[:3]) + (1 if names is _MONTHS else 0)
    if not text.isdigit():
        raise ScheduleError(f"cron {what}: {text!r} is not a number")
    return int(text)


def _field(text: str, what: str, low: int, high: int, names: list[str] | None) -> tuple[frozenset[int], bool]:
    out: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ScheduleError(f"cron {what}: bad step in {part!r}")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            start, end = _value(a, low, names, what), _value(b, low, names, what)
        else:
            start = _value(body, low, names, what)
            end = high if step else start
        if not (low <= start <= high and low <= end <= high) or start > end:
            raise ScheduleError(f"cron {what}: {part!r} is outside {low}-{high}")
        out.update(range(start, end + 1, step or 1))
    return frozenset(out), text != "*"


def parse_cron(cron: str, timezone: str = "UTC") -> CronSpec:
    parts = cron.split()
    if len(parts) != 5:
        raise ScheduleError(f"cron {cron!r}: want 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}")
    try:
        zone: dt.tzinfo = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"cron time zone {timezone!r} is not known") from exc
    (mi, _), (ho, _), (da, days_r), (mo, _), (wd, week_r) = (
        _field(p, what, low, high, names) for p, (what, low, high, names) in zip(parts, _FIELDS, strict=True)
    )
    weekdays = frozenset(d % 7 for d in wd)
    return CronSpec(mi, ho, da, mo, weekdays, days_r, week_r, zone)


def next_cron(spec: CronSpec, after: float) -> float | None:
    """The first minute strictly after `after` (time.time()) that the spec matches; None if none is
    found within a few years (a date that never comes)."""
    t = dt.datetime.fromtimestamp(after, spec.zone).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    for _ in range(_MAX_STEPS):
        if t.month not in spec.months:
            t = (t.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
        elif not spec.matches_day(t.date()):
            t = t.replace(hour=0, minute=0) + dt.timedelta(days=1)
        elif t.hour not in spec.hours:
            t = t.replace(minute=0) + dt.timedelta(hours=1)
        elif t.minute not in spec.minutes:
            t += dt.timedelta(minutes=1)
        else:
            return t.timestamp()
    return None


def next_run(schedule: Mapping[str, Any], after: float, served_since: float) -> float | None:
    """When a function with this schedule (discovery's form) runs next, strictly after `after`."""
    period = schedule.get("period_s")
    if period is not None:
        step = max(float(period), 1.0)
        runs = int((after - served_since) // step) + 1
        return served_since + runs * step
    return next_cron(parse_cron(str(schedule.get("cron", "")), str(schedule.get("timezone") or "UTC")), after)


def describe(schedule: Mapping[str, Any]) -> str:
    """`every 5 s`, `every 2 h`, `on cron "0 9 * * 1" (Europe/Paris)`."""
    period = schedule.get("period_s")
    if period is not None:
        seconds = float(period)
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if seconds >= size and seconds % size == 0:
                return f"every {seconds / size:g} {unit}"
        return f"every {seconds:g} s"
    return f"on cron \"{schedule.get('cron')}\" ({schedule.get('timezone') or 'UTC'})"
