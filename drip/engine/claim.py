"""The tick: claim due enrollments, write their delivery rows, and say which to send.

Run by beat once a minute (and by the demo's simulated clock). For each due enrollment, in one
transaction: a ``queued`` delivery row for its next lesson (unique per subscriber and message key,
so a second tick, or a second beat process, can never create another), and the enrollment
advanced: position + 1 and ``next_send_at`` moved to the next allowed local day, or completed
and the sequences its completion triggers entered. A subscriber gets at most one sequence email
per local day (:func:`one_a_day`). The caller enqueues the returned delivery ids only after the
commit (pretix's outbox pattern), so a worker never sees a row that isn't there yet.

On PostgreSQL the claim uses ``FOR UPDATE SKIP LOCKED`` so two ticks split the work; on SQLite
every transaction takes the write lock up front (``BEGIN IMMEDIATE``, see drip.db), which makes
the tick a single writer.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import Row, or_, select, update
from sqlalchemy.orm import Session

from drip import outgoing
from drip.content.types import Sequence as SequenceDef
from drip.engine import automations
from drip.engine import pause as engine_state
from drip.engine.enrollments import due_after_send
from drip.errors import BackendError
from drip.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus, Subscriber
from drip.schedule import resolve_zone
from drip.store import one_of, store_for

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
    # The enrollments to create on completion (``completed`` triggers), and the sequences
    # among them that allow re-entry (started through drip.engine.automations.start).
    follow_ons: tuple[dict[str, object], ...] = ()
    again: tuple[SequenceDef, ...] = ()


def claim_due(rt: Runtime, session: Session, now: datetime, limit: int) -> Claim:
    """Claim up to ``limit`` due enrollments, write their deliveries and advance them.

    A subscriber gets at most one sequence email per local day (:func:`one_a_day`): the other
    due enrollments are claimed too, and moved to their next allowed day.
    """
    rows = session.execute(
        select(
            Enrollment.id,
            Enrollment.subscriber_id,
            Enrollment.sequence,
            Enrollment.position,
            Enrollment.entry,
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
    sending, waiting = one_a_day(rt, session, rows, now)
    # Everyone at the same sequence, position and zone gets the same step: computed once each
    # (a chunk holds a handful of combinations, not thousands).
    steps: dict[tuple[str, int, str | None], _Step] = {}
    deliveries: list[tuple[int, str, int, int]] = []  # (subscriber_id, sequence, position, entry)
    advanced: list[tuple[int, int, datetime | None]] = []  # (enrollment id, position, next)
    follow_ons: list[dict[str, object]] = []
    again: dict[tuple[str, str], tuple[SequenceDef, list[int]]] = {}  # (completed, target)
    finished: dict[str, list[int]] = defaultdict(list)  # sequence -> subscribers completing it
    for enrollment_id, subscriber_id, slug, position, entry, zone in sending:
        step = steps.get((slug, position, zone))
        if step is None:
            step = steps[(slug, position, zone)] = _step(rt, slug, position, zone, now)
        if step.next_send_at is None:
            finished[slug].append(subscriber_id)
        if step.lesson is None:
            advanced.append((enrollment_id, position, None))
            continue
        deliveries.append((subscriber_id, slug, step.lesson, entry))
        advanced.append((enrollment_id, step.lesson, step.next_send_at))
        follow_ons.extend({**f, "subscriber_id": subscriber_id} for f in step.follow_ons)
        for target in step.again:
            again.setdefault((slug, target.slug), (target, []))[1].append(subscriber_id)
    # A lesson's delivery row exists already when another tick wrote it (then nothing is sent
    # again), or when it was skipped while the subscriber was out or failed, and the enrollment
    # was set back to send it again (drip.subscribers.store.resume_enrollments,
    # drip.engine.outcomes.step_back): the store queues that same row again, so the unique
    # (subscriber, message key) pair still holds.
    store = store_for(session)
    # Ids in message order: a send task of consecutive ids then holds one or two messages
    # (one provider request each) instead of one per sequence in the chunk.
    deliveries.sort(key=lambda d: (d[1], d[2], d[3]))
    ids = store.insert_lesson_deliveries(session, deliveries, now) if deliveries else []
    if advanced:
        store.advance_enrollments(session, advanced, now)
    if waiting:
        session.execute(update(Enrollment).execution_options(synchronize_session=False), waiting)
    if follow_ons:
        stmt = store.insert_ignore(Enrollment, ["subscriber_id", "sequence"])
        session.execute(stmt, follow_ons)
    fallback = rt.settings.default_timezone
    for (done, _), (target, subscriber_ids) in again.items():
        automations.start(session, subscriber_ids, target, now, fallback, f"completed:{done}")
    for slug, subscriber_ids in finished.items():  # nothing is read unless an endpoint wants it
        outgoing.emit_for_subscribers(
            session, None, outgoing.SEQUENCE_COMPLETED, subscriber_ids, now, {"sequence": slug}
        )
    completed = sum(1 for _, _, due in advanced if due is None)
    return Claim(ids, completed, len(rows))


def one_a_day(
    rt: Runtime, session: Session, rows: Sequence[Row[Any]], now: datetime
) -> tuple[list[Row[Any]], list[dict[str, object]]]:
    """Split due enrollments into those to send now and those that wait for another day.

    At most one sequence email per subscriber and local day: of a subscriber's due
    enrollments, the sequence with the highest ``priority`` goes (then the alphabetically
    first); the others, and any whose subscriber already got a sequence email this local day
    from another enrollment, move to their next allowed day (``{"id", "next_send_at"}`` rows),
    never lost. The first email of a ``first_lesson = "immediately"`` sequence always goes (it
    is what the subscriber just asked for) and counts as the day's email.
    """
    library = rt.library
    if len(library) < 2:  # one sequence: nothing can share a day with it
        return list(rows), []
    fallback = rt.settings.default_timezone

    def rank(row: Row[Any]) -> tuple[int, int, str]:
        sequence = library.get(row.sequence)
        if sequence is None:
            return (0, 0, row.sequence)
        at_once = row.position == 0 and sequence.first_lesson_immediately
        return (0 if at_once else 1, -sequence.priority, row.sequence)

    best: dict[int, Row[Any]] = {}
    for row in rows:
        held = best.get(row.subscriber_id)
        if held is None or rank(row) < rank(held):
            best[row.subscriber_id] = row
    sent_today = _sent_today(session, list(best.values()), now, fallback)
    sending, waiting = [], []
    for row in rows:
        first = best[row.subscriber_id]
        immediate = rank(row)[0] == 0
        if immediate or (row is first and row.subscriber_id not in sent_today):
            sending.append(row)
            continue
        sequence = library.get(row.sequence)
        if sequence is None:
            sending.append(row)  # removed: the claim completes it without sending
            continue
        due = due_after_send(sequence, row.position + 1, now, row.time_zone, fallback)
        waiting.append({"id": row.id, "next_send_at": due})
    return sending, waiting


def _sent_today(session: Session, rows: list[Row[Any]], now: datetime, fallback: str) -> set[int]:
    """The subscribers of ``rows`` who got a sequence email this local day from an enrollment
    that is not due now (the due ones are being claimed: their last send was another day).

    Each zone's local date is worked out once, and the query reads only sends since the
    earliest local midnight of the chunk's zones (less an hour, for a DST change), so
    yesterday's sends, one per subscriber in a running course, are not read at all."""
    zones = {row.subscriber_id: row.time_zone for row in rows}
    today: dict[str | None, tuple[date, ZoneInfo]] = {}
    earliest = now
    for name in set(zones.values()):
        zone = resolve_zone(name, fallback)
        local = now.astimezone(zone)
        today[name] = (local.date(), zone)
        midnight = datetime.combine(local.date(), dtime(0), zone).astimezone(UTC)
        earliest = min(earliest, midnight - timedelta(hours=1))  # an hour's margin for DST
    recent = session.execute(
        select(Enrollment.subscriber_id, Enrollment.last_sent_at).where(
            one_of(Enrollment.subscriber_id, sorted(zones), session),
            Enrollment.last_sent_at >= earliest,
            or_(Enrollment.next_send_at.is_(None), Enrollment.next_send_at > now),
        )
    ).all()
    sent: set[int] = set()
    for subscriber_id, last_sent_at in recent:
        day, zone = today[zones[subscriber_id]]
        if last_sent_at.astimezone(zone).date() == day:
            sent.add(subscriber_id)
    return sent


def _step(rt: Runtime, slug: str, position: int, zone: str | None, now: datetime) -> _Step:
    sequence = rt.library.get(slug)
    nxt = position + 1
    if sequence is None or sequence.lesson_at(nxt) is None:
        # The sequence was removed or shortened since: nothing left to send.
        return _Step(None, None)
    fallback = rt.settings.default_timezone
    if nxt < sequence.length:
        return _Step(nxt, due_after_send(sequence, nxt + 1, now, zone, fallback))
    follow_ons: list[dict[str, object]] = []
    again: list[SequenceDef] = []
    for target in rt.automations.started_by("completed", slug):
        if target.reentry:
            again.append(target)
            continue
        # Entered on completion: never the same local day as the last lesson.
        due = (
            now
            if target.first_lesson_immediately
            else due_after_send(target, 1, now, zone, fallback)
        )
        follow_ons.append(
            {
                "sequence": target.slug,
                "position": 0,
                "entry": 1,
                "trigger": f"completed:{slug}",
                "status": EnrollmentStatus.ACTIVE,
                "next_send_at": due,
                "enrolled_at": now,
            }
        )
    return _Step(nxt, None, tuple(follow_ons), tuple(again))


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
