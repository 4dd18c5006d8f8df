"""Beat's broadcast step: start due broadcasts, restart silent page chains, close finished ones.

**Start**: a due ``scheduled`` broadcast becomes ``sending`` with a snapshot of the highest
subscriber id (people who sign up later are not in it), its recipient count, and groups for zones
that appeared since scheduling; then its first page task is queued (drip.broadcasts.sending).
**Restart**: a ``sending`` broadcast whose chain has been silent for
:data:`~drip.broadcasts.sending.STALE` and has work due gets a new runner. **Finish**: once every
page is written and no delivery is queued or in flight, the broadcast is ``sent``. While sending
is paused for everyone (too many failures, drip.engine.pause) the tick does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from drip.broadcasts.control import halt
from drip.broadcasts.segments import audience_count, context_of, parse_segment
from drip.broadcasts.sending import IN_FLIGHT, STALE, Kick, has_due_work, new_runner
from drip.broadcasts.status import SCHEDULER, BroadcastStatus, get_broadcast, transition
from drip.broadcasts.zones import add_new_zones
from drip.engine import pause as engine_state
from drip.errors import InvalidInput
from drip.models import Broadcast, Delivery, Subscriber

if TYPE_CHECKING:
    from drip.runtime import Runtime


def start(session: Session, rt: Runtime, broadcast_id: int, now: datetime) -> str | None:
    """Move a due ``scheduled`` broadcast to ``sending``: snapshot the max subscriber id, count
    the recipients, add zones that appeared since scheduling. Returns the new runner token."""
    b = get_broadcast(session, broadcast_id, lock=True)
    if b.status != BroadcastStatus.SCHEDULED or b.scheduled_at is None or b.scheduled_at > now:
        return None
    if b.max_subscriber_id is None:  # a broadcast paused before it started keeps none
        b.max_subscriber_id = session.scalar(select(func.max(Subscriber.id))) or 0
        b.total = audience_count(
            session, parse_segment(b.segment), context_of(rt), now, max_id=b.max_subscriber_id
        )
        if b.local_time:
            add_new_zones(session, rt, b, now)
    b.started_at = b.started_at or now
    b.runner, b.heartbeat_at = new_runner(), now
    transition(
        session,
        b,
        BroadcastStatus.SENDING,
        action="started",
        actor=SCHEDULER,
        now=now,
        note=f"{b.total} recipients up to subscriber {b.max_subscriber_id}",
    )
    return b.runner


def finish_if_sent(session: Session, b: Broadcast, now: datetime) -> bool:
    """``sending`` -> ``sent`` once every page is written and no delivery is still in flight."""
    if b.status != BroadcastStatus.SENDING or b.queued_all_at is None:
        return False
    busy = session.scalar(
        select(exists().where(and_(Delivery.broadcast_id == b.id, Delivery.status.in_(IN_FLIGHT))))
    )
    if busy:
        return False
    b.finished_at = now
    transition(session, b, BroadcastStatus.SENT, action="finished", actor=SCHEDULER, now=now)
    return True


@dataclass
class TickReport:
    started: list[int] = field(default_factory=list)
    kicked: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    paused: str | None = None  # sending is paused for everyone (drip.engine.pause)


def broadcasts_tick(rt: Runtime, now: datetime, kick: Kick) -> TickReport:
    """Beat's step: start due broadcasts, restart silent chains, mark finished sends ``sent``.

    Safe to run twice at once: every change happens under the broadcast's row lock and is
    re-checked there; a duplicate chain stops itself at its first page.
    """
    report = TickReport()
    with rt.sessions() as session:
        report.paused = engine_state.paused_reason(session)
        if report.paused:  # after too many failures: nothing starts, nothing restarts
            return report
        due = list(
            session.scalars(
                select(Broadcast.id).where(
                    Broadcast.status == BroadcastStatus.SCHEDULED, Broadcast.scheduled_at <= now
                )
            )
        )
        sending = list(
            session.scalars(select(Broadcast.id).where(Broadcast.status == BroadcastStatus.SENDING))
        )
    for broadcast_id in due:
        try:
            with rt.transaction() as session:
                runner = start(session, rt, broadcast_id, now)
        except InvalidInput as err:
            halt(rt, broadcast_id, err, now)
            continue
        if runner:
            report.started.append(broadcast_id)
            kick(broadcast_id, runner, 0.0)
    for broadcast_id in sending:
        with rt.transaction() as session:
            b = get_broadcast(session, broadcast_id, lock=True)
            if finish_if_sent(session, b, now):
                report.finished.append(broadcast_id)
                continue
            silent = b.heartbeat_at is None or b.heartbeat_at < now - STALE
            if b.status != BroadcastStatus.SENDING or not silent:
                continue
            if b.queued_all_at is None and not has_due_work(session, b, now):
                continue
            # Beat's verdict is final: the new runner owns the send from now on, and a chain
            # that was only slow stops itself at its next page.
            runner = new_runner()
            if b.runner is not None:  # None (a resume) stays: the first page re-queues held rows
                b.runner, b.heartbeat_at = runner, now
        report.kicked.append(broadcast_id)
        kick(broadcast_id, runner, 0.0)
    return report
