"""Scheduling: at an absolute time, or at a wall-clock time in each subscriber's own zone.

A local-time send is split into **zone groups**: every zone of the audience whose wall-clock
time falls on the same UTC instant shares one :class:`~drip.models.BroadcastZone` row, with its
own checkpoint, so groups go out one after the other as their instants come (beat checks every
minute; nothing is queued with an ETA). DST is the schedule module's: 09:00 is 09:00 local on
either side of a change, a time in a spring-forward gap moves forward by the gap, a repeated
autumn time takes its first occurrence.

Zones whose wall-clock time has already passed when the broadcast is scheduled go out at once
(``past_zones="now"``) or at that time the next local day (``"tomorrow"``), as the marketer
chooses. A time that has passed in *every* zone of the audience is refused, like an absolute time
in the past and an empty audience. Subscribers without a (valid) zone are in the default zone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, delete, func, select
from sqlalchemy.orm import Session

from drip.broadcasts.segments import (
    audience_count,
    context_of,
    parse_segment,
    segment_filter,
)
from drip.broadcasts.status import EDITABLE, BroadcastStatus, get_broadcast, require, transition
from drip.errors import InvalidInput
from drip.models import Broadcast, BroadcastZone, Subscriber
from drip.schedule import local_to_utc, resolve_zone

if TYPE_CHECKING:
    from drip.runtime import Runtime

PAST_ZONES = ("now", "tomorrow")
GRACE = timedelta(minutes=1)  # "now" typed by a person is a little in the past on arrival
NO_ZONE = ""  # how subscribers without a time zone appear in a group's list


@dataclass(frozen=True)
class ZoneGroup:
    send_at: datetime
    zones: tuple[str, ...]


def parse_time(value: str | datetime, *, local: bool, field: str = "at") -> datetime:
    """``value`` as a UTC instant (absolute; a time without an offset is UTC) or as a naive
    wall-clock time (local; an offset is refused: it would contradict "each one's own zone")."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace(" ", "T", 1))
        except ValueError:
            raise InvalidInput(
                field, f"{value!r} is not a time like 2026-03-09T09:00 (ISO 8601)"
            ) from None
    if local:
        if value.tzinfo is not None:
            raise InvalidInput(field, "a local time takes no UTC offset: 09:00 in each zone")
        return value.replace(second=0, microsecond=0)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def plan_groups(
    zones: Iterable[str], wall: datetime, now: datetime, *, past_zones: str, fallback: str
) -> tuple[list[ZoneGroup], bool]:
    """Group ``zones`` by the UTC instant of ``wall`` in each; also say whether the time had
    passed in every one of them. Passed zones move to ``now`` or to the next local day."""
    if past_zones not in PAST_ZONES:
        raise InvalidInput("past_zones", f"must be one of: {', '.join(PAST_ZONES)}")
    by_instant: dict[datetime, list[str]] = defaultdict(list)
    all_passed = True
    for raw in zones:
        tz = resolve_zone(raw or None, fallback)
        at = local_to_utc(wall.date(), wall.hour, wall.minute, tz)
        if at < now:
            if past_zones == "now":
                at = now
            else:
                at = local_to_utc(wall.date() + timedelta(days=1), wall.hour, wall.minute, tz)
        else:
            all_passed = False
        by_instant[at].append(raw)
    groups = [ZoneGroup(at, tuple(sorted(z))) for at, z in sorted(by_instant.items())]
    return groups, all_passed


def audience_zones(
    session: Session, rt: Runtime, broadcast: Broadcast, now: datetime, max_id: int | None = None
) -> list[str]:
    """The distinct raw time zones of the broadcast's audience (``""`` for none)."""
    where = segment_filter(session, parse_segment(broadcast.segment), context_of(rt), now)
    if max_id is not None:
        where = and_(where, Subscriber.id <= max_id)
    zone = func.coalesce(Subscriber.time_zone, NO_ZONE)
    return list(session.scalars(select(zone).where(where).group_by(zone)))


def schedule(
    session: Session,
    rt: Runtime,
    broadcast_id: int,
    *,
    at: str | datetime,
    local_time: bool = False,
    past_zones: str = "now",
    actor: str,
    now: datetime,
) -> Broadcast:
    """Schedule (or reschedule) a draft. Refuses a past time and an empty audience."""
    broadcast = get_broadcast(session, broadcast_id, lock=True)
    require(broadcast, EDITABLE, "schedule")  # a paused send resumes; it is not rescheduled
    moment = parse_time(at, local=local_time)
    ctx = context_of(rt)
    count = audience_count(session, parse_segment(broadcast.segment), ctx, now)
    if count == 0:
        raise InvalidInput("segment", "matches no one (0 subscribers): nothing to send")
    session.execute(delete(BroadcastZone).where(BroadcastZone.broadcast_id == broadcast_id))
    if local_time:
        groups, all_passed = plan_groups(
            audience_zones(session, rt, broadcast, now),
            moment,
            now,
            past_zones=past_zones,
            fallback=rt.settings.default_timezone,
        )
        if all_passed:
            raise InvalidInput(
                "at", f"{moment:%Y-%m-%d %H:%M} has already passed in every zone of the audience"
            )
        for group in groups:
            session.add(_zone_row(broadcast_id, group))
        broadcast.scheduled_at = groups[0].send_at
        broadcast.local_wall_time = moment.isoformat(timespec="minutes")
        broadcast.past_zones = past_zones
        note = (
            f"{broadcast.local_wall_time} local, {len(groups)} zone groups, "
            f"past zones: {past_zones}"
        )
    else:
        if moment < now - GRACE:
            raise InvalidInput("at", f"{moment.isoformat()} is in the past")
        broadcast.scheduled_at = max(moment, now)
        broadcast.local_wall_time = None
        broadcast.past_zones = None
        note = f"{broadcast.scheduled_at.isoformat()}"
    broadcast.local_time = local_time
    verb = "rescheduled" if broadcast.status == BroadcastStatus.SCHEDULED else "scheduled"
    transition(
        session,
        broadcast,
        BroadcastStatus.SCHEDULED,
        action=verb,
        actor=actor,
        now=now,
        note=f"{note}; audience {count}",
    )
    return broadcast


def unschedule(session: Session, broadcast_id: int, *, actor: str, now: datetime) -> Broadcast:
    """Back to draft (content and segment can change again)."""
    broadcast = get_broadcast(session, broadcast_id, lock=True)
    transition(
        session, broadcast, BroadcastStatus.DRAFT, action="unscheduled", actor=actor, now=now
    )
    session.execute(delete(BroadcastZone).where(BroadcastZone.broadcast_id == broadcast_id))
    broadcast.scheduled_at = None
    return broadcast


def _zone_row(broadcast_id: int, group: ZoneGroup) -> BroadcastZone:
    return BroadcastZone(
        broadcast_id=broadcast_id,
        send_at=group.send_at,
        zones=list(group.zones),
        status="waiting",
        last_subscriber_id=0,
    )


def add_new_zones(session: Session, rt: Runtime, broadcast: Broadcast, now: datetime) -> int:
    """When sending starts: give zones that appeared since scheduling (new subscribers up to the
    id snapshot) a group, by the broadcast's own rules. Returns how many zones were added."""
    rows = list(
        session.scalars(select(BroadcastZone).where(BroadcastZone.broadcast_id == broadcast.id))
    )
    known = {z for row in rows for z in row.zones}
    found = audience_zones(session, rt, broadcast, now, broadcast.max_subscriber_id)
    new = [z for z in found if z not in known]
    if not new or broadcast.local_wall_time is None:
        return 0
    groups, _ = plan_groups(
        new,
        datetime.fromisoformat(broadcast.local_wall_time),
        now,
        past_zones=broadcast.past_zones or "now",
        fallback=rt.settings.default_timezone,
    )
    by_instant = {row.send_at: row for row in rows}
    for group in groups:
        row = by_instant.get(group.send_at)
        if row is None:
            session.add(_zone_row(broadcast.id, group))
        else:
            row.zones = sorted({*row.zones, *group.zones})  # a new list: JSON columns need one
            row.status = "waiting"
    return len(new)
