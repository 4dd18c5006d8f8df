"""Tests for drip.schedule: local send times across DST, send days, catch-up, zone fallback.

Expected UTC instants are written out by hand (from the published offsets) rather than computed
with zoneinfo, so a wrong conversion in the code cannot hide behind the same conversion here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from drip.schedule import (
    WEEKDAYS,
    SendWindow,
    first_due,
    is_due,
    is_valid_zone,
    local_to_utc,
    next_due,
    parse_send_days,
    resolve_zone,
)

NY = ZoneInfo("America/New_York")
SEVEN = SendWindow(hour=7)
WEEKDAYS_ONLY = SendWindow(hour=7, days=frozenset(range(5)))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(
    tz: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int, *, fold: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=tz, fold=fold)


# --- names, windows, zones -------------------------------------------------------------------


def test_weekdays_number_monday_zero_to_sunday_six_like_date_weekday() -> None:
    assert list(WEEKDAYS) == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    assert WEEKDAYS["mon"] == date(2026, 3, 2).weekday() == 0
    assert WEEKDAYS["sun"] == date(2026, 3, 8).weekday() == 6


def test_parse_send_days_is_case_insensitive_and_ignores_blanks() -> None:
    assert parse_send_days(["Mon", " TUE ", "wed", "fri", "Fri"]) == frozenset({0, 1, 2, 4})


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["mon", "funday"], "'funday'"),
        (["monday"], "'monday'"),
        ([""], "''"),
        ([], "at least one"),
        ("mon", "not the string 'mon'"),
    ],
)
def test_parse_send_days_rejects_bad_input_naming_it(names: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_send_days(names)


def test_send_window_defaults_to_every_day_on_the_hour() -> None:
    window = SendWindow(hour=7)
    assert (window.minute, window.days) == (0, frozenset(range(7)))


def test_send_window_stores_days_as_frozenset_so_it_stays_hashable() -> None:
    window = SendWindow(hour=7, days={0, 2})  # type: ignore[arg-type]
    assert window.days == frozenset({0, 2})
    assert hash(window) == hash(SendWindow(hour=7, days=frozenset({0, 2})))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"hour": -1}, "hour"),
        ({"hour": 24}, "hour"),
        ({"hour": True}, "hour"),
        ({"hour": 7.0}, "hour"),
        ({"hour": 7, "minute": 60}, "minute"),
        ({"hour": 7, "minute": -1}, "minute"),
        ({"hour": 7, "days": frozenset()}, "days"),
        ({"hour": 7, "days": frozenset({7})}, "days"),
        ({"hour": 7, "days": frozenset({-1, 3})}, "days"),
        ({"hour": 7, "days": frozenset({"mon"})}, "days"),
    ],
)
def test_send_window_rejects_bad_field_naming_it(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field} "):
        SendWindow(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Auckland"])
def test_is_valid_zone_accepts_iana_names(name: str) -> None:
    assert is_valid_zone(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Mars/Olympus",
        "America",  # a directory, not a zone
        "america/new_york",  # names are case-sensitive
        " UTC",
        "../etc/passwd",
        "/etc/localtime",
        "America/New_York\x00",
        "zone.tab",  # a data file next to the zones, not TZif
        "localtime",  # the host's own zone: a server setting, not the subscriber's
    ],
)
def test_is_valid_zone_rejects_non_zones_without_raising(name: str) -> None:
    assert not is_valid_zone(name)


def test_resolve_zone_uses_the_subscribers_valid_zone() -> None:
    assert resolve_zone("Asia/Tokyo", "America/New_York") == ZoneInfo("Asia/Tokyo")


@pytest.mark.parametrize("name", [None, "", "Not/AZone", "localtime"])
def test_resolve_zone_falls_back_on_missing_or_invalid_name(name: str | None) -> None:
    assert resolve_zone(name, "Europe/Berlin") == ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize("name", [None, "Asia/Tokyo"])
def test_resolve_zone_rejects_invalid_fallback_even_when_unused(name: str | None) -> None:
    with pytest.raises(ValueError, match="fallback time zone 'Nowhere/Land'"):
        resolve_zone(name, "Nowhere/Land")


# --- local_to_utc: plain days and the two DST edge cases -------------------------------------


def test_local_to_utc_returns_utc_for_an_ordinary_day() -> None:
    result = local_to_utc(date(2026, 1, 15), 7, 0, NY)
    assert result == utc(2026, 1, 15, 12, 0)
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("zone", "day", "hour", "minute", "expected_utc", "expected_local"),
    [
        # spring-forward gaps: the wall time moves forward by the gap
        ("America/New_York", date(2026, 3, 8), 2, 30, utc(2026, 3, 8, 7, 30), (3, 30)),
        ("America/New_York", date(2026, 3, 8), 2, 0, utc(2026, 3, 8, 7, 0), (3, 0)),
        ("Europe/Berlin", date(2026, 3, 29), 2, 30, utc(2026, 3, 29, 1, 30), (3, 30)),
        ("Europe/London", date(2026, 3, 29), 1, 30, utc(2026, 3, 29, 1, 30), (2, 30)),
        ("Australia/Sydney", date(2026, 10, 4), 2, 30, utc(2026, 10, 3, 16, 30), (3, 30)),
    ],
)
def test_nonexistent_local_time_moves_forward_by_the_gap(
    zone: str,
    day: date,
    hour: int,
    minute: int,
    expected_utc: datetime,
    expected_local: tuple[int, int],
) -> None:
    tz = ZoneInfo(zone)
    result = local_to_utc(day, hour, minute, tz)
    assert result == expected_utc
    shown = result.astimezone(tz)
    assert (shown.date(), shown.hour, shown.minute) == (day, *expected_local)


@pytest.mark.parametrize(
    ("zone", "day", "hour", "minute", "first"),
    [
        # fall-back overlaps: the first occurrence (summer time) wins, not the one an hour later
        ("America/New_York", date(2026, 11, 1), 1, 30, utc(2026, 11, 1, 5, 30)),
        ("Europe/Berlin", date(2026, 10, 25), 2, 30, utc(2026, 10, 25, 0, 30)),
        ("Europe/London", date(2026, 10, 25), 1, 30, utc(2026, 10, 25, 0, 30)),
        ("Australia/Sydney", date(2026, 4, 5), 2, 30, utc(2026, 4, 4, 15, 30)),
    ],
)
def test_repeated_local_time_resolves_to_first_occurrence(
    zone: str, day: date, hour: int, minute: int, first: datetime
) -> None:
    tz = ZoneInfo(zone)
    # Both instants really do show the same wall time, so the choice is meaningful.
    second = first + timedelta(hours=1)
    assert first.astimezone(tz).time() == second.astimezone(tz).time()
    assert local_to_utc(day, hour, minute, tz) == first


def test_local_to_utc_refuses_a_datetime_whose_date_may_not_be_local() -> None:
    with pytest.raises(TypeError, match="must be a date"):
        local_to_utc(utc(2026, 3, 3, 2, 0), 7, 0, ZoneInfo("America/Los_Angeles"))


# --- next_due across DST: 07:00 local every day, offset changes on the right day -------------

H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("zone", "change_day", "offset_before", "offset_after"),
    [
        ("America/New_York", date(2026, 3, 8), -5 * H, -4 * H),
        ("America/New_York", date(2026, 11, 1), -4 * H, -5 * H),
        ("Europe/London", date(2026, 3, 29), 0 * H, 1 * H),
        ("Europe/London", date(2026, 10, 25), 1 * H, 0 * H),
        ("Europe/Berlin", date(2026, 3, 29), 1 * H, 2 * H),
        ("Europe/Berlin", date(2026, 10, 25), 2 * H, 1 * H),
        ("Australia/Sydney", date(2026, 4, 5), 11 * H, 10 * H),  # southern autumn: back
        ("Australia/Sydney", date(2026, 10, 4), 10 * H, 11 * H),  # southern spring: forward
        ("Asia/Tokyo", date(2026, 3, 8), 9 * H, 9 * H),  # no DST at all
        ("Asia/Kolkata", date(2026, 3, 29), 5.5 * H, 5.5 * H),  # half-hour offset, no DST
    ],
)
def test_seven_am_local_stays_seven_am_across_dst_change(
    zone: str, change_day: date, offset_before: timedelta, offset_after: timedelta
) -> None:
    tz = ZoneInfo(zone)
    start = change_day - timedelta(days=3)
    sent_at = local_to_utc(start, 7, 0, tz)
    for step in range(1, 7):
        expected_day = start + timedelta(days=step)
        # Every transition here happens before 07:00 local, so the change day has the new offset.
        offset = offset_before if expected_day < change_day else offset_after
        expected = datetime.combine(expected_day, datetime.min.time(), UTC) + 7 * H - offset
        due = next_due(sent_at, tz, SEVEN)
        assert due == expected, f"step {step}"
        assert due.tzinfo is UTC
        shown = due.astimezone(tz)
        assert (shown.date(), shown.hour, shown.minute, shown.utcoffset()) == (
            expected_day,
            7,
            0,
            offset,
        )
        sent_at = due


def test_send_hour_inside_spring_gap_goes_out_after_the_gap_then_returns_to_normal() -> None:
    window = SendWindow(hour=2, minute=30)
    first = next_due(local(NY, 2026, 3, 7, 2, 30), NY, window)
    assert first == utc(2026, 3, 8, 7, 30)  # 03:30 EDT: 02:30 does not exist that day
    assert next_due(first, NY, window) == utc(2026, 3, 9, 6, 30)  # 02:30 EDT again


def test_send_time_inside_repeated_hour_goes_out_once_at_first_occurrence() -> None:
    window = SendWindow(hour=1, minute=30)
    first = next_due(local(NY, 2026, 10, 31, 1, 30), NY, window)
    assert first == utc(2026, 11, 1, 5, 30)  # 01:30 EDT
    # Even if the beat only sends it during the second 01:30 (EST), there's no repeat that day.
    late = local(NY, 2026, 11, 1, 1, 40, fold=1)
    assert late.astimezone(UTC) == utc(2026, 11, 1, 6, 40)
    assert next_due(late, NY, window) == utc(2026, 11, 2, 6, 30)  # 01:30 EST next day


# --- send days -------------------------------------------------------------------------------


def test_friday_send_with_weekdays_only_is_followed_by_monday() -> None:
    friday = local(NY, 2026, 3, 6, 7, 0)
    assert friday.weekday() == 4
    assert next_due(friday, NY, WEEKDAYS_ONLY) == utc(2026, 3, 9, 11, 0)  # Mon 07:00 EDT


def test_weekend_send_with_weekdays_only_is_followed_by_monday() -> None:
    saturday = local(NY, 2026, 3, 7, 9, 15)  # e.g. an enrollment that sent immediately
    assert next_due(saturday, NY, WEEKDAYS_ONLY) == utc(2026, 3, 9, 11, 0)


@pytest.mark.parametrize(
    ("sent_local_day", "expected"),
    [
        (date(2026, 1, 14), utc(2026, 1, 21, 12, 0)),  # Wednesday -> next Wednesday
        (date(2026, 1, 15), utc(2026, 1, 21, 12, 0)),  # Thursday -> coming Wednesday
        (date(2026, 1, 13), utc(2026, 1, 14, 12, 0)),  # Tuesday -> tomorrow
    ],
)
def test_single_allowed_day_schedules_the_next_such_weekday(
    sent_local_day: date, expected: datetime
) -> None:
    wednesdays = SendWindow(hour=7, days=parse_send_days(["wed"]))
    sent_at = local_to_utc(sent_local_day, 7, 0, NY)
    assert next_due(sent_at, NY, wednesdays) == expected


def test_per_lesson_later_hour_still_waits_for_the_next_day() -> None:
    evening = dataclasses.replace(SEVEN, hour=18)
    sent_monday_morning = local(NY, 2026, 1, 12, 7, 0)
    assert next_due(sent_monday_morning, NY, evening) == utc(2026, 1, 13, 23, 0)  # Tue 18:00 EST


# --- catch-up after an outage ----------------------------------------------------------------


def test_send_two_days_late_schedules_next_lesson_for_the_following_day_not_now() -> None:
    # Due Monday 07:00; the beat was down until Wednesday 15:00 local.
    sent_at = local(NY, 2026, 1, 14, 15, 0)
    due = next_due(sent_at, NY, SEVEN)
    assert due == utc(2026, 1, 15, 12, 0)  # Thursday 07:00 EST
    assert not is_due(due, sent_at + timedelta(minutes=1))


def test_late_send_just_after_midnight_counts_for_that_day() -> None:
    # Monday's lesson went out at 00:05 Tuesday: Tuesday has had its lesson, so Wednesday.
    assert next_due(local(NY, 2026, 1, 13, 0, 5), NY, SEVEN) == utc(2026, 1, 14, 12, 0)


def test_late_send_just_before_midnight_still_waits_until_tomorrows_send_time() -> None:
    assert next_due(local(NY, 2026, 1, 12, 23, 59), NY, SEVEN) == utc(2026, 1, 13, 12, 0)


@pytest.mark.parametrize(
    ("zone", "window"),
    [
        ("America/New_York", SendWindow(hour=2, minute=30)),  # lands in both DST edges
        ("America/New_York", SendWindow(hour=1, minute=30, days=frozenset({0, 2, 4}))),
        ("Pacific/Auckland", SendWindow(hour=7)),
        ("Australia/Lord_Howe", SendWindow(hour=2, minute=15)),  # 30-minute DST shift
        ("Asia/Kolkata", SendWindow(hour=23, minute=45)),
    ],
)
def test_chain_of_sends_never_puts_two_lessons_on_one_local_date(
    zone: str, window: SendWindow
) -> None:
    tz = ZoneInfo(zone)
    # A year of beat delays: on time, a minute late, hours late, past midnight, a 2-day outage.
    delays = [timedelta(0), timedelta(minutes=1), 5 * H, 17 * H, 23 * H, 49 * H, 30 * H]
    next_send_at = first_due(utc(2026, 1, 1, 0, 0), tz, window, immediately=True)
    sent_dates: list[date] = []
    for i in range(400):
        sent_at = next_send_at + delays[i % len(delays)]
        assert is_due(next_send_at, sent_at)
        sent_dates.append(sent_at.astimezone(tz).date())
        next_send_at = next_due(sent_at, tz, window)
        assert next_send_at > sent_at
        assert next_send_at.astimezone(tz).date() > sent_dates[-1]
    assert sent_dates == sorted(set(sent_dates))
    assert sent_dates[-1] > date(2027, 1, 1)  # the chain did cross both DST changes


# --- first_due -------------------------------------------------------------------------------


def test_first_due_immediately_is_now_in_utc() -> None:
    now = local(NY, 2026, 1, 12, 5, 17)
    due = first_due(now, NY, SEVEN, immediately=True)
    assert due == utc(2026, 1, 12, 10, 17)
    assert due.tzinfo is UTC


def test_first_due_immediately_ignores_send_days() -> None:
    saturday = local(NY, 2026, 1, 17, 12, 0)
    assert first_due(saturday, NY, WEEKDAYS_ONLY, immediately=True) == utc(2026, 1, 17, 17, 0)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (local(NY, 2026, 1, 12, 5, 0), utc(2026, 1, 12, 12, 0)),  # before: today 07:00
        (local(NY, 2026, 1, 12, 7, 0), utc(2026, 1, 12, 12, 0)),  # exactly: today 07:00
        (local(NY, 2026, 1, 12, 7, 1), utc(2026, 1, 13, 12, 0)),  # after: tomorrow 07:00
        (local(NY, 2026, 1, 16, 9, 0), utc(2026, 1, 19, 12, 0)),  # Friday after: Monday
        (local(NY, 2026, 1, 17, 5, 0), utc(2026, 1, 19, 12, 0)),  # Saturday before: Monday
        (local(NY, 2026, 1, 18, 23, 0), utc(2026, 1, 19, 12, 0)),  # Sunday night: Monday
    ],
)
def test_first_due_at_next_send_time_on_an_allowed_day(now: datetime, expected: datetime) -> None:
    assert first_due(now, NY, WEEKDAYS_ONLY, immediately=False) == expected


def test_first_due_on_spring_forward_day_after_the_gap_time_is_today() -> None:
    window = SendWindow(hour=2, minute=30)
    now = local(NY, 2026, 3, 8, 1, 0)  # 01:00 EST; 02:30 doesn't exist, 03:30 EDT does
    assert first_due(now, NY, window, immediately=False) == utc(2026, 3, 8, 7, 30)


def test_first_due_in_second_occurrence_of_repeated_hour_is_tomorrow() -> None:
    window = SendWindow(hour=1, minute=30)
    now = local(NY, 2026, 11, 1, 1, 15, fold=1)  # 01:15 EST: the 01:30 EDT send already passed
    assert first_due(now, NY, window, immediately=False) == utc(2026, 11, 2, 6, 30)


# --- local date boundaries -------------------------------------------------------------------

AUCKLAND = ZoneInfo("Pacific/Auckland")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")


def test_auckland_weekday_is_judged_locally_not_in_utc() -> None:
    # Thursday 18:30 UTC is Friday 07:30 NZDT: Friday's send passed, weekends off -> Monday
    # 07:00 NZDT, which is still Sunday in UTC.
    sent_at = utc(2026, 3, 5, 18, 30)
    assert sent_at.weekday() == 3
    due = next_due(sent_at, AUCKLAND, WEEKDAYS_ONLY)
    assert due == utc(2026, 3, 8, 18, 0)
    assert due.astimezone(AUCKLAND).weekday() == 0


def test_auckland_first_due_uses_local_today() -> None:
    now = utc(2026, 3, 5, 17, 0)  # Thursday UTC, Friday 06:00 NZDT
    assert first_due(now, AUCKLAND, WEEKDAYS_ONLY, immediately=False) == utc(2026, 3, 5, 18, 0)


def test_los_angeles_evening_send_is_followed_by_next_local_morning() -> None:
    sent_at = utc(2026, 3, 3, 4, 0)  # already Tuesday in UTC, Monday 20:00 PST locally
    assert next_due(sent_at, LOS_ANGELES, SEVEN) == utc(2026, 3, 3, 15, 0)  # Tue 07:00 PST


def test_los_angeles_late_send_hour_is_still_today_when_utc_is_tomorrow() -> None:
    now = utc(2026, 3, 3, 6, 0)  # Tuesday UTC, Monday 22:00 PST
    window = SendWindow(hour=23)
    assert first_due(now, LOS_ANGELES, window, immediately=False) == utc(2026, 3, 3, 7, 0)


# --- is_due and naive datetimes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("next_send_at", "now", "expected"),
    [
        (utc(2026, 1, 12, 12, 0), utc(2026, 1, 12, 11, 59), False),
        (utc(2026, 1, 12, 12, 0), utc(2026, 1, 12, 12, 0), True),
        (utc(2026, 1, 12, 12, 0), utc(2026, 1, 14, 3, 0), True),
        (utc(2026, 1, 12, 12, 0), local(NY, 2026, 1, 12, 7, 0), True),  # same instant
        (utc(2026, 1, 12, 12, 0), local(NY, 2026, 1, 12, 6, 59), False),
    ],
)
def test_is_due_compares_instants(next_send_at: datetime, now: datetime, expected: bool) -> None:
    assert is_due(next_send_at, now) is expected


def test_is_due_is_right_inside_repeated_hour_where_wall_clocks_mislead() -> None:
    # 01:45 EDT (05:45 UTC) comes before 01:15 EST (06:15 UTC), though its wall time is later.
    next_send_at = local(NY, 2026, 11, 1, 1, 45, fold=0)
    now = local(NY, 2026, 11, 1, 1, 15, fold=1)
    assert is_due(next_send_at, now)
    assert not is_due(now, next_send_at)


NAIVE = datetime(2026, 1, 12, 7, 0)
AWARE = utc(2026, 1, 12, 12, 0)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: first_due(NAIVE, NY, SEVEN, immediately=True), "now"),
        (lambda: first_due(NAIVE, NY, SEVEN, immediately=False), "now"),
        (lambda: next_due(NAIVE, NY, SEVEN), "sent_at"),
        (lambda: is_due(NAIVE, AWARE), "next_send_at"),
        (lambda: is_due(AWARE, NAIVE), "now"),
    ],
)
def test_naive_datetimes_are_refused_not_guessed(call: Callable[[], object], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be timezone-aware"):
        call()
