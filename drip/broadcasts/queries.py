"""What the front ends read about broadcasts: the list, one broadcast, its live progress.

The CLI (``drip broadcast list|show``), the admin API (``/api/v1/admin/broadcasts``) and the
dashboard (``/admin/broadcasts``) all read through these functions, so the three cannot drift
apart. Every result is a frozen dataclass; its ``to_json()`` is the admin API's answer (the keys
and their order are part of the API, and ``drip broadcast show --json`` prints the same).
Progress and results come from :mod:`drip.broadcasts.results`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from drip.broadcasts.results import Progress, Results, progress, results
from drip.broadcasts.segments import parse_segment
from drip.broadcasts.status import BroadcastStatus, get_broadcast
from drip.models import Broadcast, BroadcastEvent, BroadcastZone

LIST_MAX = 200  # the most rows one list call reads


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class BroadcastSummary:
    """A broadcast's own fields (no counts: cheap enough for a list)."""

    id: int
    subject: str
    preheader: str
    status: str
    segment: dict[str, Any] | None  # as stored; None or {} = every newsletter subscriber
    segment_text: str  # the segment in words
    scheduled_at: datetime | None  # the first send (the earliest zone group of a local time)
    local_time: bool
    local_wall_time: str | None  # "2026-03-09T09:00" in each zone, for a local-time send
    past_zones: str | None
    quiet_hours: int | None
    created_by: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    total: int | None  # the audience counted when sending started

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subject": self.subject,
            "preheader": self.preheader,
            "status": self.status,
            "segment": self.segment,
            "segment_text": self.segment_text,
            "scheduled_at": _iso(self.scheduled_at),
            "local_time": self.local_time,
            "local_wall_time": self.local_wall_time,
            "past_zones": self.past_zones,
            "quiet_hours": self.quiet_hours,
            "created_by": self.created_by,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "total": self.total,
        }


def summarize(broadcast: Broadcast) -> BroadcastSummary:
    """The summary of a loaded row (e.g. the one a change just returned)."""
    return BroadcastSummary(
        id=broadcast.id,
        subject=broadcast.subject,
        preheader=broadcast.preheader,
        status=broadcast.status,
        segment=broadcast.segment,
        segment_text=parse_segment(broadcast.segment).describe(),
        scheduled_at=broadcast.scheduled_at,
        local_time=broadcast.local_time,
        local_wall_time=broadcast.local_wall_time,
        past_zones=broadcast.past_zones,
        quiet_hours=broadcast.quiet_hours,
        created_by=broadcast.created_by,
        created_at=broadcast.created_at,
        started_at=broadcast.started_at,
        finished_at=broadcast.finished_at,
        total=broadcast.total,
    )


@dataclass(frozen=True)
class BroadcastPage:
    """Broadcasts newest first, and the cursor of the next (older) page."""

    items: tuple[BroadcastSummary, ...]
    next_before: int | None  # pass as ``before`` for the next page; None on the last page


def list_broadcasts(
    session: Session,
    *,
    status: BroadcastStatus | None = None,
    before: int | None = None,
    limit: int = 50,
) -> BroadcastPage:
    """At most ``limit`` (1 to :data:`LIST_MAX`) broadcasts with ``id < before``, newest first,
    only those in ``status`` when given. Keyset pages by id: no OFFSET to scan past."""
    limit = max(1, min(limit, LIST_MAX))
    stmt = select(Broadcast).order_by(Broadcast.id.desc()).limit(limit + 1)
    if before is not None:
        stmt = stmt.where(Broadcast.id < before)
    if status is not None:
        stmt = stmt.where(Broadcast.status == status)
    rows = list(session.scalars(stmt))
    items = tuple(summarize(b) for b in rows[:limit])
    more = len(rows) > limit
    return BroadcastPage(items, next_before=items[-1].id if more else None)


@dataclass(frozen=True)
class ZoneGroup:
    """The zones of a local-time send whose wall-clock time falls on one UTC instant."""

    send_at: datetime
    zones: tuple[str, ...]  # raw subscribers.time_zone values; "" = none
    status: str  # waiting, done
    checkpoint: int  # the last subscriber id this group has written deliveries for

    def to_json(self) -> dict[str, Any]:
        return {
            "send_at": self.send_at.isoformat(),
            "zones": list(self.zones),
            "status": self.status,
            "checkpoint": self.checkpoint,
        }


def zone_groups(session: Session, broadcast_id: int) -> tuple[ZoneGroup, ...]:
    """The zone groups of a local-time broadcast, first send first (none for any other)."""
    rows = session.scalars(
        select(BroadcastZone)
        .where(BroadcastZone.broadcast_id == broadcast_id)
        .order_by(BroadcastZone.send_at)
    )
    return tuple(ZoneGroup(z.send_at, tuple(z.zones), z.status, z.last_subscriber_id) for z in rows)


@dataclass(frozen=True)
class HistoryEntry:
    """One line of the audit trail: who did what, and the status before and after."""

    at: datetime
    actor: str
    action: str  # created, updated, scheduled, paused...
    from_status: str | None  # None for the creation
    to_status: str
    note: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "from": self.from_status,
            "to": self.to_status,
            "note": self.note,
        }


def history(session: Session, broadcast_id: int) -> tuple[HistoryEntry, ...]:
    """The audit trail of a broadcast, oldest first."""
    rows = session.scalars(
        select(BroadcastEvent)
        .where(BroadcastEvent.broadcast_id == broadcast_id)
        .order_by(BroadcastEvent.at, BroadcastEvent.id)
    )
    return tuple(
        HistoryEntry(ev.at, ev.actor, ev.action, ev.from_status, ev.to_status, ev.note)
        for ev in rows
    )


@dataclass(frozen=True)
class BroadcastDetail:
    """Everything ``show`` displays: fields, body, progress, zone groups, results, history."""

    broadcast: BroadcastSummary
    body_md: str
    progress: Progress
    zone_groups: tuple[ZoneGroup, ...]
    results: Results
    history: tuple[HistoryEntry, ...]

    def to_json(self) -> dict[str, Any]:
        """The summary's keys, then ``body_md``, ``progress``, ``zone_groups``, ``results``,
        ``history``."""
        return {
            **self.broadcast.to_json(),
            "body_md": self.body_md,
            "progress": self.progress.to_json(),
            "zone_groups": [z.to_json() for z in self.zone_groups],
            "results": self.results.to_json(),
            "history": [h.to_json() for h in self.history],
        }


def detail_of(session: Session, broadcast: Broadcast) -> BroadcastDetail:
    """The detail of a loaded row (e.g. the one a change just returned, before its commit)."""
    return BroadcastDetail(
        broadcast=summarize(broadcast),
        body_md=broadcast.body_md,
        progress=progress(session, broadcast),
        zone_groups=zone_groups(session, broadcast.id),
        results=results(session, broadcast.id),
        history=history(session, broadcast.id),
    )


def broadcast_detail(session: Session, broadcast_id: int) -> BroadcastDetail:
    """The detail of broadcast ``broadcast_id``; :class:`BroadcastNotFound` if there is none."""
    return detail_of(session, get_broadcast(session, broadcast_id))


@dataclass(frozen=True)
class LiveProgress:
    """What a view following a send polls for: the status, progress and results."""

    status: str
    progress: Progress
    results: Results

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "progress": self.progress.to_json(),
            "results": self.results.to_json(),
        }


def live_progress(session: Session, broadcast_id: int) -> LiveProgress:
    """Status, progress and results of a send; :class:`BroadcastNotFound` for an unknown id."""
    broadcast = get_broadcast(session, broadcast_id)
    return LiveProgress(
        broadcast.status, progress(session, broadcast), results(session, broadcast.id)
    )
