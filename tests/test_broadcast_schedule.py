"""Scheduling: absolute and local-time sends, zone groups across DST, and refused times.

The clock starts on Monday 2026-03-02 00:00 UTC: US daylight saving starts on Sunday 03-08,
Europe's on 03-29, Sydney's ends on 04-05.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from drip.broadcasts import zones
from drip.broadcasts.tick import broadcasts_tick
from drip.broadcasts.zones import plan_groups
from drip.clock import FrozenClock
from drip.errors import InvalidInput
from drip.models import BroadcastZone
from drip.runtime import Runtime
from tests.broadcast_support import (
    add_sub,
    broadcast_row,
    make_rt,
    new_broadcast,
    recipients,
    run_pages,
    send_all,
)

NY, LONDON, TOKYO, SYDNEY = "America/New_York", "Europe/London", "Asia/Tokyo", "Australia/Sydney"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def brt(engine: Engine, tmp_path: Path, clock: FrozenClock) -> Runtime:
    return make_rt(engine, tmp_path, clock)[0]


def _schedule(rt: Runtime, broadcast_id: int, at: str, **kw: object) -> None:
    with rt.transaction() as session:
        zones.schedule(session, rt, broadcast_id, at=at, actor="ana", now=rt.clock(), **kw)  # type: ignore[arg-type]


def _groups(rt: Runtime, broadcast_id: int) -> list[tuple[datetime, list[str]]]:
    with rt.sessions() as session:
        rows = session.scalars(
            select(BroadcastZone)
            .where(BroadcastZone.broadcast_id == broadcast_id)
            .order_by(BroadcastZone.send_at)
        )
        return [(r.send_at, r.zones) for r in rows]


def test_local_time_splits_the_audience_into_zone_groups_across_dst(brt: Runtime) -> None:
    for zone in (NY, LONDON, TOKYO, SYDNEY, None):
        add_sub(brt, f"{zone or 'nozone'}@example.com".replace("/", "-"), zone=zone)
    after_us_dst = new_broadcast(brt)
    before_us_dst = new_broadcast(brt)

    _schedule(brt, after_us_dst, "2026-03-09T09:00", local_time=True)
    _schedule(brt, before_us_dst, "2026-03-06 09:00", local_time=True)

    assert _groups(brt, after_us_dst) == [
        (utc(2026, 3, 8, 22), [SYDNEY]),  # AEDT, UTC+11
        (utc(2026, 3, 9, 0), [TOKYO]),
        (utc(2026, 3, 9, 9), [LONDON]),  # still GMT
        (utc(2026, 3, 9, 13), ["", NY]),  # EDT since 03-08; no zone = the default zone
    ]
    assert _groups(brt, before_us_dst)[-1] == (utc(2026, 3, 6, 14), ["", NY])  # EST
    b = broadcast_row(brt, after_us_dst)
    assert (b.status, b.scheduled_at, b.local_wall_time) == (
        "scheduled",
        utc(2026, 3, 8, 22),
        "2026-03-09T09:00",
    )


def test_dst_gaps_and_repeats_follow_the_schedule_rules() -> None:
    now = utc(2026, 3, 1)
    gap, _ = plan_groups([NY], datetime(2026, 3, 8, 2, 30), now, past_zones="now", fallback=NY)
    repeat, _ = plan_groups([NY], datetime(2026, 11, 1, 1, 30), now, past_zones="now", fallback=NY)

    assert gap[0].send_at == utc(2026, 3, 8, 7, 30)  # 02:30 does not exist: 03:30 EDT
    assert repeat[0].send_at == utc(2026, 11, 1, 5, 30)  # the first 01:30 (EDT)


def test_zones_already_past_go_at_once_or_tomorrow_as_chosen(
    brt: Runtime, clock: FrozenClock
) -> None:
    for zone in (NY, TOKYO, SYDNEY):
        add_sub(brt, f"{zone.split('/')[1].lower()}@example.com", zone=zone)
    clock.set(utc(2026, 3, 9, 5))  # 09:00 has passed in Sydney and Tokyo, not in New York
    now_id, tomorrow_id = new_broadcast(brt), new_broadcast(brt)

    _schedule(brt, now_id, "2026-03-09T09:00", local_time=True, past_zones="now")
    _schedule(brt, tomorrow_id, "2026-03-09T09:00", local_time=True, past_zones="tomorrow")

    assert _groups(brt, now_id) == [
        (utc(2026, 3, 9, 5), [TOKYO, SYDNEY]),
        (utc(2026, 3, 9, 13), [NY]),
    ]
    assert _groups(brt, tomorrow_id) == [
        (utc(2026, 3, 9, 13), [NY]),
        (utc(2026, 3, 9, 22), [SYDNEY]),  # 09:00 on 03-10 in Sydney
        (utc(2026, 3, 10, 0), [TOKYO]),
    ]


def test_a_local_time_past_in_every_zone_is_refused(brt: Runtime, clock: FrozenClock) -> None:
    add_sub(brt, "ny@example.com", zone=NY)
    add_sub(brt, "tokyo@example.com", zone=TOKYO)
    clock.set(utc(2026, 3, 9, 14))
    broadcast_id = new_broadcast(brt)

    with pytest.raises(InvalidInput) as err:
        _schedule(brt, broadcast_id, "2026-03-09T09:00", local_time=True, past_zones="tomorrow")

    assert (err.value.field, err.value.message) == (
        "at",
        "2026-03-09 09:00 has already passed in every zone of the audience",
    )
    assert broadcast_row(brt, broadcast_id).status == "draft"


def test_an_absolute_time_in_the_past_is_refused(brt: Runtime, clock: FrozenClock) -> None:
    add_sub(brt, "a@example.com")
    broadcast_id = new_broadcast(brt)

    with pytest.raises(InvalidInput, match="is in the past") as err:
        _schedule(brt, broadcast_id, "2026-03-01T22:00:00+00:00")
    assert err.value.field == "at"

    _schedule(brt, broadcast_id, (clock() - timedelta(seconds=30)).isoformat())  # typing "now"
    assert broadcast_row(brt, broadcast_id).scheduled_at == clock()


def test_bad_times_are_refused_clearly(brt: Runtime) -> None:
    add_sub(brt, "a@example.com")
    broadcast_id = new_broadcast(brt)

    with pytest.raises(InvalidInput, match="is not a time like"):
        _schedule(brt, broadcast_id, "next friday")
    with pytest.raises(InvalidInput, match="takes no UTC offset"):
        _schedule(brt, broadcast_id, "2026-03-09T09:00+01:00", local_time=True)
    with pytest.raises(InvalidInput, match="past_zones"):
        _schedule(brt, broadcast_id, "2026-03-09T09:00", local_time=True, past_zones="later")


def test_an_empty_segment_cannot_be_scheduled(brt: Runtime) -> None:
    add_sub(brt, "a@example.com", tags=["5k"], newsletter=False)
    broadcast_id = new_broadcast(brt, segment={"tags_any": ["5k"]})

    with pytest.raises(InvalidInput) as err:
        _schedule(brt, broadcast_id, "2026-03-09T09:00Z")

    assert (err.value.field, err.value.message) == (
        "segment",
        "matches no one (0 subscribers): nothing to send",
    )


def _beat(rt: Runtime) -> list[tuple[int, str, float]]:
    kicks: list[tuple[int, str, float]] = []
    broadcasts_tick(rt, rt.clock(), kick=lambda *k: kicks.append(k))
    return kicks


def _run_kicks(rt: Runtime, kicks: list[tuple[int, str, float]]) -> None:
    for broadcast_id, runner, _ in kicks:
        _, batches = run_pages(rt, broadcast_id, runner)
        send_all(rt, batches)


def test_each_zone_group_goes_out_when_its_local_time_comes(
    brt: Runtime, clock: FrozenClock
) -> None:
    for zone in (NY, LONDON, TOKYO):
        add_sub(brt, f"{zone.split('/')[1].lower()}@example.com", zone=zone)
    broadcast_id = new_broadcast(brt)
    _schedule(brt, broadcast_id, "2026-03-09T09:00", local_time=True)
    add_sub(brt, "berlin@example.com", zone="Europe/Berlin")  # a zone new since scheduling

    seen: list[set[str]] = []
    for moment in (
        utc(2026, 3, 8, 23, 59),
        utc(2026, 3, 9, 0, 0),
        utc(2026, 3, 9, 8, 0),
        utc(2026, 3, 9, 9, 0),
        utc(2026, 3, 9, 12, 59),
        utc(2026, 3, 9, 13, 0),
    ):
        clock.set(moment)
        if moment == utc(2026, 3, 9, 8, 0):
            add_sub(brt, "late@example.com", zone=LONDON)  # after the start: not in the snapshot
        _run_kicks(brt, _beat(brt))  # a chain idles between groups; beat restarts it when due
        seen.append(set(recipients(brt, broadcast_id)))

    assert seen == [
        set(),
        {"tokyo@example.com"},
        {"tokyo@example.com", "berlin@example.com"},  # 09:00 CET
        {"tokyo@example.com", "berlin@example.com", "london@example.com"},
        {"tokyo@example.com", "berlin@example.com", "london@example.com"},
        {"tokyo@example.com", "berlin@example.com", "london@example.com", "new_york@example.com"},
    ]
    assert set(recipients(brt, broadcast_id).values()) == {1}
    clock.advance(timedelta(minutes=1))
    _beat(brt)
    b = broadcast_row(brt, broadcast_id)
    assert (b.status, b.total) == ("sent", 4)
