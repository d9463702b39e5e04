"""When scheduled functions run next: Modal's Period and Cron, on a given clock (no waiting)."""

from __future__ import annotations

import datetime as dt

import pytest
from mwtui.engine.schedules import ScheduleError, describe, next_run, parse_cron


def at(text: str, zone: str = "UTC") -> float:
    from zoneinfo import ZoneInfo

    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def test_a_period_counts_from_when_it_was_first_served() -> None:
    assert next_run({"period_s": 5.0}, 100.0, 100.0) == 105.0
    assert next_run({"period_s": 5.0}, 104.9, 100.0) == 105.0
    assert next_run({"period_s": 5.0}, 105.0, 100.0) == 110.0  # strictly after
    assert next_run({"period_s": 5.0}, 123.0, 100.0) == 125.0  # a run missed while busy is not made up


@pytest.mark.parametrize(("cron", "after", "expected"), [
    ("* * * * *", "2026-12-04 10:00:30", "2026-12-04 10:01:00"),
    ("*/15 * * * *", "2026-12-04 10:01:00", "2026-12-04 10:15:00"),
    ("0 9 * * *", "2026-12-04 09:00:00", "2026-12-05 09:00:00"),
    ("30 8 * * mon-fri", "2026-12-04 09:00:00", "2026-12-07 08:30:00"),  # Friday after 8:30: Monday
    ("0 0 1 jan *", "2026-12-04 00:00:00", "2027-01-01 00:00:00"),
    ("0 12 13 * 5", "2026-12-04 13:00:00", "2026-12-11 12:00:00"),  # both day fields: either matches
    ("0 0 * * 7", "2026-12-04 00:00:00", "2026-12-06 00:00:00"),  # 7 is Sunday too
    ("5,10-12 3 * * *", "2026-12-04 03:10:00", "2026-12-04 03:11:00"),
])
def test_cron_next_minute(cron: str, after: str, expected: str) -> None:
    assert next_run({"cron": cron, "timezone": "UTC"}, at(after), 0) == at(expected)


def test_cron_runs_in_its_time_zone() -> None:
    got = next_run({"cron": "0 9 * * *", "timezone": "America/New_York"}, at("2026-12-04 12:00:00"), 0)
    assert got == at("2026-12-04 09:00:00", "America/New_York") == at("2026-12-04 14:00:00")


def test_a_date_that_never_comes_has_no_next_run() -> None:
    assert next_run({"cron": "0 0 30 feb *", "timezone": "UTC"}, at("2026-12-04 00:00:00"), 0) is None


@pytest.mark.parametrize(("cron", "message"), [
    ("* * * *", "want 5 fields"),
    ("61 * * * *", "outside 0-59"),
    ("* * * * funday", "not a number"),
    ("*/0 * * * *", "bad step"),
])
def test_bad_cron_strings_say_what_is_wrong(cron: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_cron(cron)


def test_an_unknown_time_zone_is_named() -> None:
    with pytest.raises(ScheduleError, match="Mars/Olympus"):
        parse_cron("* * * * *", "Mars/Olympus")


def test_describe() -> None:
    assert describe({"period_s": 5.0}) == "every 5 s"
    assert describe({"period_s": 7200.0}) == "every 2 h"
    assert describe({"period_s": 86400.0}) == "every 1 d"
    assert describe({"cron": "0 9 * * 1", "timezone": "UTC"}) == 'on cron "0 9 * * 1" (UTC)'
