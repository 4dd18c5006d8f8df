"""Sending a broadcast: a chain of page steps writes its deliveries (drip.broadcasts.tick
starts it).

**Page** (:func:`run_page`, one task each; listmonk's pipe): in one transaction, with the
broadcast row locked, take the next page of the segment by id (``id > checkpoint AND id <=
snapshot ORDER BY id LIMIT page``), write one ``queued`` delivery per subscriber (``ON CONFLICT DO
NOTHING`` on (subscriber, ``broadcast/<id>``)) and move the checkpoint to the page's last id.
After the commit the delivery ids go to the ordinary send tasks (drip.engine.dispatch, the same path
and exit checks as lessons), and the next page is queued. A crash before the commit loses
nothing (the checkpoint did not move); after it, the rows exist and the drip tick's reaper sends
any whose task was lost. Hence exactly one delivery per subscriber per broadcast.

**One chain at a time.** Each page task carries a ``runner`` token; the broadcast remembers the
runner of the last page and when it ran (``heartbeat_at``). A page from another runner stops,
unless the remembered one has been silent for :data:`STALE`: then it takes over. Beat hands a
``sending`` broadcast whose chain went silent (a worker died, a rate window is full, the next zone
group was not due yet) to a new runner, so chains never multiply and never die out.

**Rate.** With a limiter, a page first takes its budget (:mod:`drip.broadcasts.ratelimit`): it
waits up to a second in the task, else re-queues itself with a countdown of at most 5 s. A
wait longer than a minute ends the chain; beat restarts it.

**Quiet rule.** With ``quiet_hours`` (the broadcast's, else ``DRIP_BROADCAST_QUIET_HOURS``), a
subscriber who was sent a lesson within that many hours gets a ``skipped`` delivery
("quiet hours") instead: skipped, not delayed, so the send still ends.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from drip.broadcasts.control import RESUMED, halt
from drip.broadcasts.message import message_key
from drip.broadcasts.ratelimit import RateLimiter, page_quota
from drip.broadcasts.segments import context_of, parse_segment, segment_filter
from drip.broadcasts.status import BroadcastStatus, get_broadcast
from drip.broadcasts.zones import NO_ZONE
from drip.engine import pause as engine_state
from drip.errors import InvalidInput
from drip.models import Broadcast, BroadcastZone, Delivery, DeliveryKind, DeliveryStatus, Subscriber
from drip.store import one_of, store_for

if TYPE_CHECKING:
    from drip.runtime import Runtime

Enqueue = Callable[[list[int]], None]  # delivery ids -> one send task
Kick = Callable[[int, str, float], None]  # (broadcast id, runner, countdown s) -> one page task

STALE = timedelta(seconds=90)
INLINE_WAIT = 1.0  # seconds a page task may sleep for its rate budget
COUNTDOWN_MAX = 5.0  # never a longer countdown: Redis redelivers long ETAs
CHAIN_GIVE_UP = 60.0  # a longer wait ends the chain; beat restarts it
QUIET = "quiet hours: a lesson went out within {h} h"
IN_FLIGHT = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)


def new_runner() -> str:
    return uuid.uuid4().hex


@dataclass
class PageResult:
    """What one page step did. ``next_in`` is the countdown for the next page (None: no next
    page from this chain: done, stopped, or idle until beat finds more due work)."""

    state: str  # more, throttled, idle, done, stopped
    written: int = 0
    quiet: int = 0
    delivery_ids: list[int] = field(default_factory=list)
    next_in: float | None = None


def _owns(b_runner: str | None, heartbeat: datetime | None, runner: str, now: datetime) -> bool:
    return b_runner in (None, runner) or heartbeat is None or heartbeat < now - STALE


def _take_budget(
    limiter: RateLimiter | None, wanted: int, sleep: Callable[[float], None]
) -> tuple[int, float]:
    """(granted, wait): sleeps in the task for waits up to :data:`INLINE_WAIT` seconds."""
    if limiter is None:
        return wanted, 0.0
    slept = 0.0
    while True:
        grant = limiter.acquire(wanted)
        wait = max(grant.wait, 0.001)  # never a busy loop, whatever a limiter answers
        if grant.granted or wait + slept > INLINE_WAIT:
            return grant.granted, wait
        sleep(wait)
        slept += wait


@dataclass
class _Lane:
    """Where the next page comes from: the whole audience, or one zone group."""

    checkpoint: int
    zone: BroadcastZone | None


def _next_lane(session: Session, b: Broadcast, now: datetime) -> _Lane | bool | None:
    """The lane to page, ``None`` if no lane is due yet, ``False`` if every lane is done."""
    if not b.local_time:
        return _Lane(b.last_subscriber_id, None) if b.queued_all_at is None else False
    rows = session.scalars(
        select(BroadcastZone)
        .where(BroadcastZone.broadcast_id == b.id, BroadcastZone.status != "done")
        .order_by(BroadcastZone.send_at)
    ).all()
    if not rows:
        return False
    if rows[0].send_at > now:
        return None
    return _Lane(rows[0].last_subscriber_id, rows[0])


def has_due_work(session: Session, b: Broadcast, now: datetime) -> bool:
    return isinstance(_next_lane(session, b, now), _Lane)


def run_page(
    rt: Runtime,
    broadcast_id: int,
    runner: str,
    now: datetime,
    *,
    enqueue: Enqueue,
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PageResult:
    """Write the next page of deliveries of a ``sending`` broadcast and enqueue them."""
    with rt.sessions() as session:  # a cheap look first: no budget spent on a stopped chain
        row = session.execute(
            select(Broadcast.status, Broadcast.runner, Broadcast.heartbeat_at).where(
                Broadcast.id == broadcast_id
            )
        ).one_or_none()
    if row is None or row.status != BroadcastStatus.SENDING:
        return PageResult("stopped")
    if not _owns(row.runner, row.heartbeat_at, runner, now):
        return PageResult("stopped")
    granted, wait = _take_budget(limiter, page_quota(rt.settings), sleep)
    if not granted:
        return PageResult("throttled", next_in=_countdown(wait))
    try:
        with rt.transaction() as session:
            result = _page(rt, session, broadcast_id, runner, now, granted)
    except InvalidInput as err:  # the segment broke since scheduling (a tag was deleted)
        halt(rt, broadcast_id, err, now)
        return PageResult("stopped")
    size = rt.settings.send_batch_size
    for start in range(0, len(result.delivery_ids), size):
        enqueue(result.delivery_ids[start : start + size])
    return result


def _countdown(wait: float) -> float | None:
    return None if wait > CHAIN_GIVE_UP else min(max(wait, 0.0), COUNTDOWN_MAX)


def _page(
    rt: Runtime, session: Session, broadcast_id: int, runner: str, now: datetime, limit: int
) -> PageResult:
    b = get_broadcast(session, broadcast_id, lock=True)
    if b.status != BroadcastStatus.SENDING or not _owns(b.runner, b.heartbeat_at, runner, now):
        return PageResult("stopped")
    if engine_state.paused_reason(session):  # sending is paused for everyone: write nothing
        return PageResult("idle")  # beat restarts the chain once sending resumes
    # No runner at all means a resume: the rows it released need their send tasks. (Only then:
    # this query reads every delivery of the broadcast, too slow for every page of a million.)
    restored = _restored(session, broadcast_id, now) if b.runner is None else []
    b.runner, b.heartbeat_at = runner, now
    lane = _next_lane(session, b, now)
    if lane is None:
        return PageResult("idle", delivery_ids=restored)
    if lane is False:
        b.queued_all_at = b.queued_all_at or now
        return PageResult("done", delivery_ids=restored)
    assert isinstance(lane, _Lane)
    where = [
        segment_filter(session, parse_segment(b.segment), context_of(rt), now),
        Subscriber.id > lane.checkpoint,
        Subscriber.id <= (b.max_subscriber_id or 0),
    ]
    if lane.zone is not None:
        where.append(func.coalesce(Subscriber.time_zone, NO_ZONE).in_(lane.zone.zones))
    ids = list(
        session.scalars(select(Subscriber.id).where(*where).order_by(Subscriber.id).limit(limit))
    )
    if not ids:
        if lane.zone is None:
            b.queued_all_at = now
            return PageResult("done", delivery_ids=restored)
        lane.zone.status, lane.zone.finished_at = "done", now
        return PageResult("more", delivery_ids=restored, next_in=0.0)
    hours = b.quiet_hours if b.quiet_hours is not None else rt.settings.broadcast_quiet_hours
    quiet = _recent_lesson(session, ids, now - timedelta(hours=hours)) if hours else set()
    written = _write(session, b.id, [i for i in ids if i not in quiet], now)
    if quiet:
        _write(session, b.id, sorted(quiet), now, skipped=QUIET.format(h=hours))
    if lane.zone is None:
        b.last_subscriber_id = ids[-1]
    else:
        lane.zone.last_subscriber_id = ids[-1]
        lane.zone.started_at = lane.zone.started_at or now
    return PageResult(
        "more", written=len(written), quiet=len(quiet), delivery_ids=restored + written, next_in=0.0
    )


def _restored(session: Session, broadcast_id: int, now: datetime) -> list[int]:
    return list(
        session.scalars(
            update(Delivery)
            .where(
                Delivery.broadcast_id == broadcast_id,
                Delivery.status == DeliveryStatus.QUEUED,
                Delivery.error == RESUMED,
            )
            .values(error=None, updated_at=now)
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        )
    )


def _recent_lesson(session: Session, ids: Sequence[int], since: datetime) -> set[int]:
    return set(
        session.scalars(
            select(Delivery.subscriber_id)
            .where(
                one_of(Delivery.subscriber_id, ids, session),
                Delivery.kind == DeliveryKind.LESSON,
                Delivery.status == DeliveryStatus.SENT,
                Delivery.sent_at >= since,
            )
            .distinct()
        )
    )


def _write(
    session: Session, broadcast_id: int, ids: list[int], now: datetime, skipped: str | None = None
) -> list[int]:
    """Insert one delivery per subscriber (queued, or skipped with a reason); the new ids."""
    if not ids:
        return []
    status = DeliveryStatus.SKIPPED if skipped else DeliveryStatus.QUEUED
    key = message_key(broadcast_id)
    return store_for(session).insert_broadcast_deliveries(
        session, broadcast_id, key, ids, status.value, skipped, now
    )
