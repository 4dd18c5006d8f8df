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

from sqlalchemy import select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from drip.db import int_array, is_postgres, text_array, timestamp_array
from drip.engine import pause as engine_state
from drip.engine.enrollments import due_after_send
from drip.errors import BackendError
from drip.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
)

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


def dialect_insert(
    session: Session, table: type[Delivery] | type[Enrollment]
) -> postgresql.Insert | sqlite.Insert:
    """INSERT with ON CONFLICT support on both databases."""
    if is_postgres(session):
        return postgresql.insert(table)
    return sqlite.insert(table)


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
    ids = _insert_deliveries(session, deliveries, now)
    _advance(session, advanced, now)
    if follow_ons:
        stmt = dialect_insert(session, Enrollment).on_conflict_do_nothing(
            index_elements=["subscriber_id", "sequence"]
        )
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


# On PostgreSQL a chunk is written with one small statement over arrays: compiling and parsing a
# thousand-row VALUES list costs more than the work itself (measured in bench/dispatch.py). The
# arrays travel as text literals (drip.db.int_array): the driver's list adapter runs a regex
# per element, which made it the tick's largest Python cost.
_INSERT_DELIVERIES_PG = text(
    """
    INSERT INTO deliveries (subscriber_id, message_key, kind, sequence, position, status,
                            attempts, created_at, updated_at)
    SELECT v.subscriber_id, v.sequence || '/' || v.position, 'lesson', v.sequence, v.position,
           'queued', 0, :now, :now
    FROM unnest(
        CAST(:subscriber_id AS bigint[]), CAST(:sequence AS varchar[]),
        CAST(:position AS integer[])
    ) AS v(subscriber_id, sequence, position)
    ON CONFLICT (subscriber_id, message_key) DO UPDATE
    SET status = 'queued', error = NULL, backend = NULL, attempts = 0, updated_at = :now,
        queued_at = :now
    WHERE deliveries.status IN ('skipped', 'failed')
    RETURNING id
    """
)

# next_send_at NULL means the claim completed the enrollment.
_ADVANCE_PG = text(
    """
    UPDATE enrollments AS e
    SET position = v.position, next_send_at = v.next_send_at, last_sent_at = :now,
        status = CASE WHEN v.next_send_at IS NULL THEN 'completed' ELSE 'active' END,
        completed_at = CASE WHEN v.next_send_at IS NULL THEN CAST(:now AS timestamptz) END
    FROM unnest(
        CAST(:id AS bigint[]), CAST(:position AS integer[]), CAST(:next_send_at AS timestamptz[])
    ) AS v(id, position, next_send_at)
    WHERE e.id = v.id
    """
)


def _insert_deliveries(
    session: Session, deliveries: list[tuple[int, str, int]], now: datetime
) -> list[int]:
    """Write queued lesson deliveries; returns the ids to send.

    A row that exists already is left alone (a second tick creates nothing), unless it was
    ``skipped`` (the subscriber was out when it was due and the enrollment, resumed since, was
    set back to send it again: :func:`drip.subscribers.store.resume_enrollments`) or ``failed``
    (the enrollment stepped back to send it again: :func:`drip.engine.outcomes.step_back`). Then the
    same row is queued again, so the unique (subscriber, message key) pair still holds.
    """
    if not deliveries:
        return []
    subscriber_ids, slugs, positions = zip(*deliveries, strict=True)
    if is_postgres(session):
        params = {
            "subscriber_id": int_array(subscriber_ids),
            "sequence": text_array(slugs),
            "position": int_array(positions),
            "now": now,
        }
        return list(session.scalars(_INSERT_DELIVERIES_PG, params))
    insert = sqlite.insert(Delivery)
    stmt = insert.on_conflict_do_update(
        index_elements=["subscriber_id", "message_key"],
        set_={
            "status": DeliveryStatus.QUEUED,
            "error": None,
            "backend": None,
            "attempts": 0,
            "updated_at": insert.excluded.updated_at,
            "queued_at": insert.excluded.updated_at,
        },
        # Spelled out: an IN list would expand per call, which executemany can't do.
        where=(Delivery.status == DeliveryStatus.SKIPPED)
        | (Delivery.status == DeliveryStatus.FAILED),
    )
    rows = [
        {
            "subscriber_id": subscriber_id,
            "message_key": f"{slug}/{position}",
            "kind": DeliveryKind.LESSON,
            "sequence": slug,
            "position": position,
            "status": DeliveryStatus.QUEUED,
            "created_at": now,
            "updated_at": now,
        }
        for subscriber_id, slug, position in deliveries
    ]
    return list(session.scalars(stmt.returning(Delivery.id), rows))


def _advance(
    session: Session, advanced: list[tuple[int, int, datetime | None]], now: datetime
) -> None:
    """Move each enrollment on: one statement on PostgreSQL, executemany elsewhere."""
    if not advanced:
        return
    if is_postgres(session):
        ids, positions, dues = zip(*advanced, strict=True)
        params = {
            "id": int_array(ids),
            "position": int_array(positions),
            "next_send_at": timestamp_array(dues),
            "now": now,
        }
        session.execute(_ADVANCE_PG, params)
        return
    updates = [
        {
            "id": enrollment_id,
            "position": position,
            "last_sent_at": now,
            "next_send_at": due,
            "status": EnrollmentStatus.ACTIVE if due is not None else EnrollmentStatus.COMPLETED,
            "completed_at": None if due is not None else now,
        }
        for enrollment_id, position, due in advanced
    ]
    session.execute(update(Enrollment), updates)


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
