"""The tick: claim due enrollments, write their delivery rows, and say which to send.

Run by beat once a minute (and by the demo's simulated clock). For each due enrollment, in one
transaction: a ``queued`` delivery row for its next lesson (unique per subscriber and message key,
so a second tick, or a second beat process, can never create another), and the enrollment
advanced: position + 1 and ``next_send_at`` moved to the next allowed local day, or completed
and the follow-on sequence entered. The caller enqueues the returned delivery ids only after the
commit (pretix's outbox pattern), so a worker never sees a row that isn't there yet.

On PostgreSQL the claim uses ``FOR UPDATE SKIP LOCKED`` so two ticks split the work; on SQLite
every transaction takes the write lock up front (``BEGIN IMMEDIATE``, see drip.db), which makes
the tick a single writer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from drip.engine import pause as engine_state
from drip.engine.enrollments import due_after_send
from drip.errors import BackendError
from drip.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus, Subscriber
from drip.store import store_for

if TYPE_CHECKING:
    from drip.runtime import Runtime

log = logging.getLogger(__name__)
Enqueue = Callable[[list[int]], None]


@dataclass
class TickReport:
    claimed: int = 0
    completed: int = 0
    requeued: int = 0
    unknown: list[int] = field(default_factory=list)
    paused: str | None = None
    batches: int = 0


@dataclass
class Claim:
    delivery_ids: list[int]
    completed: int  # enrollments that reached their last lesson
    processed: int  # enrollments claimed, including any whose delivery row existed already


@dataclass(frozen=True)
class _Step:
    """What claiming does to every enrollment at one (sequence, position, time zone)."""

    lesson: int | None  # the lesson to send now, or None: nothing left (sequence shortened)
    next_send_at: datetime | None  # None: the enrollment is completed by this claim
    follow_on: dict[str, object] | None  # the enrollment to create on completion


def claim_due(rt: Runtime, session: Session, now: datetime, limit: int) -> Claim:
    """Claim up to ``limit`` due enrollments, write their deliveries and advance them."""
    rows = session.execute(
        select(
            Enrollment.id,
            Enrollment.subscriber_id,
            Enrollment.sequence,
            Enrollment.position,
            Subscriber.time_zone,
        )
        .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
        .where(Enrollment.next_send_at <= now)
        .order_by(Enrollment.next_send_at)
        .limit(limit)
        .with_for_update(of=Enrollment, skip_locked=True)
    ).all()
    if not rows:
        return Claim([], 0, 0)
    # Everyone at the same sequence, position and zone gets the same step: computed once each
    # (a chunk holds a handful of combinations, not thousands).
    steps: dict[tuple[str, int, str | None], _Step] = {}
    deliveries: list[tuple[int, str, int]] = []  # (subscriber_id, sequence, position)
    advanced: list[tuple[int, int, datetime | None]] = []  # (enrollment id, position, next)
    follow_ons: list[dict[str, object]] = []
    for enrollment_id, subscriber_id, slug, position, zone in rows:
        step = steps.get((slug, position, zone))
        if step is None:
            step = steps[(slug, position, zone)] = _step(rt, slug, position, zone, now)
        if step.lesson is None:
            advanced.append((enrollment_id, position, None))
            continue
        deliveries.append((subscriber_id, slug, step.lesson))
        advanced.append((enrollment_id, step.lesson, step.next_send_at))
        if step.follow_on is not None:
            follow_ons.append({**step.follow_on, "subscriber_id": subscriber_id})
    # A lesson's delivery row exists already when another tick wrote it (then nothing is sent
    # again), or when it was skipped while the subscriber was out or failed, and the enrollment
    # was set back to send it again (drip.subscribers.store.resume_enrollments,
    # drip.engine.outcomes.step_back): the store queues that same row again, so the unique
    # (subscriber, message key) pair still holds.
    store = store_for(session)
    ids = store.insert_lesson_deliveries(session, deliveries, now) if deliveries else []
    if advanced:
        store.advance_enrollments(session, advanced, now)
    if follow_ons:
        stmt = store.insert_ignore(Enrollment, ["subscriber_id", "sequence"])
        session.execute(stmt, follow_ons)
    completed = sum(1 for _, _, due in advanced if due is None)
    return Claim(ids, completed, len(rows))


def _step(rt: Runtime, slug: str, position: int, zone: str | None, now: datetime) -> _Step:
    sequence = rt.library.get(slug)
    nxt = position + 1
    if sequence is None or sequence.lesson_at(nxt) is None:
        # The sequence was removed or shortened since: nothing left to send.
        return _Step(None, None, None)
    fallback = rt.settings.default_timezone
    if nxt < sequence.length:
        return _Step(nxt, due_after_send(sequence, nxt + 1, now, zone, fallback), None)
    follow_on = rt.library.get(sequence.on_complete or "")
    if follow_on is None:
        return _Step(nxt, None, None)
    # Entered on completion: never the same local day as the last lesson.
    due = (
        now
        if follow_on.first_lesson_immediately
        else due_after_send(follow_on, 1, now, zone, fallback)
    )
    enrollment: dict[str, object] = {
        "sequence": follow_on.slug,
        "position": 0,
        "status": EnrollmentStatus.ACTIVE,
        "next_send_at": due,
        "enrolled_at": now,
    }
    return _Step(nxt, None, enrollment)


def reap(
    session: Session, now: datetime, *, stale_sending: timedelta, stale_queued: timedelta
) -> tuple[list[int], list[int]]:
    """Settle rows a crash left behind; returns (ids now ``unknown``, queued ids to re-enqueue).

    A row still ``sending`` long after its claim belonged to a worker that died mid-call: the
    provider may or may not have the email, so it becomes ``unknown`` and is reported, never
    re-sent blindly. A row still ``queued`` long after it was written lost its task (a worker
    killed with prefetched messages): sending it again is safe, because the send claims rows
    with a compare-and-set on ``queued``.
    """
    unknown = list(
        session.scalars(
            update(Delivery)
            .where(
                Delivery.status == DeliveryStatus.SENDING,
                Delivery.updated_at < now - stale_sending,
            )
            .values(status=DeliveryStatus.UNKNOWN, updated_at=now)
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        )
    )
    requeue = list(
        session.scalars(
            update(Delivery)
            .where(
                Delivery.status == DeliveryStatus.QUEUED,
                Delivery.updated_at < now - stale_queued,
            )
            .values(updated_at=now)
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        )
    )
    return unknown, requeue


def requeue_waiting(rt: Runtime, now: datetime, enqueue: Enqueue) -> int:
    """Enqueue every ``queued`` delivery now (after a pause lifts); returns how many.

    Their tasks may have ended while sending was paused, or wait on a long backoff: sending a
    row twice is harmless (the send claims it with a compare-and-set on ``queued``).
    """
    with rt.transaction() as session:
        ids = list(
            session.scalars(
                update(Delivery)
                .where(Delivery.status == DeliveryStatus.QUEUED)
                .values(updated_at=now)
                .returning(Delivery.id)
                .execution_options(synchronize_session=False)
            )
        )
    _enqueue_in_batches(sorted(ids), rt.settings.send_batch_size, enqueue)
    return len(ids)


def probe_and_resume(rt: Runtime, now: datetime, enqueue: Enqueue) -> bool:
    """While paused, ask the provider (no email sent) whether it would send again; if it would,
    resume and enqueue what waited. Asks at most every ``DRIP_SENDING_PROBE_SECONDS``."""
    with rt.transaction() as session:
        if not engine_state.probe_due(session, now, rt.settings.sending_probe_seconds):
            return False
    try:
        rt.backend.probe()
    except BackendError as err:
        with rt.transaction() as session:
            engine_state.note_probe(session, now, str(err))
        log.warning("sending stays paused: the provider still refuses: %s", err)
        return False
    with rt.transaction() as session:
        engine_state.resume(session)
    requeued = requeue_waiting(rt, now, enqueue)
    log.warning("sending resumed by itself: the provider answers again (%d queued)", requeued)
    return True


def tick(
    rt: Runtime,
    now: datetime,
    enqueue: Enqueue,
    *,
    max_claims: int = 200_000,
    stale_sending: timedelta = timedelta(minutes=15),
    stale_queued: timedelta = timedelta(minutes=10),
) -> TickReport:
    """One beat tick: reap, then claim due work chunk by chunk and enqueue it after each commit.

    While sending is paused it only probes the provider (:func:`probe_and_resume`).
    """
    report = TickReport()
    with rt.transaction() as session:
        report.paused = engine_state.paused_reason(session)
    if report.paused:
        if not probe_and_resume(rt, now, enqueue):
            return report
        report.paused = None
    with rt.transaction() as session:
        report.unknown, requeue = reap(
            session, now, stale_sending=stale_sending, stale_queued=stale_queued
        )
    report.requeued = len(requeue)
    report.batches += _enqueue_in_batches(requeue, rt.settings.send_batch_size, enqueue)
    chunk = rt.settings.claim_chunk
    while report.claimed < max_claims:
        with rt.transaction() as session:
            claim = claim_due(rt, session, now, min(chunk, max_claims - report.claimed))
        report.completed += claim.completed
        report.claimed += claim.processed
        report.batches += _enqueue_in_batches(
            claim.delivery_ids, rt.settings.send_batch_size, enqueue
        )
        if claim.processed < chunk:
            break
    return report


def _enqueue_in_batches(ids: Sequence[int], size: int, enqueue: Enqueue) -> int:
    batches = 0
    for start in range(0, len(ids), size):
        enqueue(list(ids[start : start + size]))
        batches += 1
    return batches
