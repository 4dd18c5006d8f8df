"""Send claimed deliveries: exit checks, render, hand to the backend, record the outcome.

:func:`send_deliveries` is what a worker's send task runs (and the demo, in-process). Its steps:

1. **Claim** the rows with a compare-and-set from ``queued`` to ``sending`` and commit. A row that
   is not ``queued`` any more (sent by an earlier, redelivered copy of the task) is left alone:
   this is the exactly-once guarantee.
2. **Exit conditions**, right before sending: unsubscribed, erased, suppressed, converted (for
   sales sequences), opted out of this kind of email, or the enrollment stopped since its claim
   (a sequence's ``[[exits]]``: a purchase, a tag) -> ``skipped`` with the reason, and the
   enrollment stopped.
3. **Send** per message (rendered once, cached) in backend-sized batches, each only while the
   provider's shared hold is open (:mod:`drip.engine.throttle`): a held batch goes back to the
   queue.
4. **Record** the three outcomes (:mod:`drip.engine.outcomes`): ``sent``; back to ``queued`` when
   certainly not sent (the task retries with backoff, after the provider's hold); ``unknown``
   when maybe sent; ``failed`` when refused for good or out of retry time.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from drip.content.render import RecipientData, recipient_substitutions, unsubscribe_headers
from drip.engine import pause as engine_state
from drip.engine.enrollments import stop_enrollments
from drip.engine.kinds import MessageSource, source_for
from drip.engine.outcomes import Recorded, Verdict, record
from drip.errors import (
    AmbiguousBackendError,
    PermanentBackendError,
    ThrottledBackendError,
    TransientBackendError,
)
from drip.esp.base import Message, Recipient, SendResult
from drip.models import (
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    SubscriberStatus,
)
from drip.store import one_of
from drip.suppress import hash_with, listed_hashes, salt
from drip.tracking.links import tracking_substitutions
from drip.tracking.tokens import TrackingSigner, signer_for

if TYPE_CHECKING:
    from drip.runtime import Runtime

log = logging.getLogger(__name__)

BACKOFF_BASE = 5.0
BACKOFF_CAP = 300.0  # never a countdown past a few minutes: Redis redelivers long ETAs


@dataclass
class SendReport:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    not_queued: int = 0  # already handled by an earlier run: exactly-once at work
    unknown: int = 0  # maybe sent: left for the provider's events or a person, never re-sent
    retry: list[int] = field(default_factory=list)
    retry_after: float | None = None
    held: bool = False  # the provider asked us to wait: the retry waits for it, uses no attempt
    paused: str | None = None

    def add(self, recorded: Recorded) -> None:
        self.sent += recorded.sent
        self.failed += recorded.failed
        self.unknown += recorded.unknown
        self.retry += recorded.retry
        self.paused = recorded.paused or self.paused


def backoff_seconds(attempt: int, retry_after: float | None, rng: random.Random) -> float:
    """Exponential backoff with full jitter, at least the provider's hint, at most 5 minutes."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(attempt - 1, 0))
    delay = rng.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, BACKOFF_CAP)


def held_retry_seconds(hold: float, rng: random.Random) -> float:
    """When to retry rows the provider's hold kept back: right after it, spread over a moment
    so that the workers don't all knock at once."""
    return min(BACKOFF_CAP, hold + rng.uniform(0.0, 0.1))


def db_retry_seconds(attempt: int, rng: random.Random) -> float:
    """Backoff for a send task that found the database unreachable: at most 30 s, so that
    queued rows go out within a minute of its recovery."""
    ceiling = min(30.0, 1.0 * 2 ** max(attempt - 1, 0))
    return rng.uniform(ceiling / 2, ceiling)


def send_deliveries(rt: Runtime, ids: Sequence[int], now: datetime) -> SendReport:
    """Send the deliveries ``ids`` (any that are still ``queued``). Never sends a row twice."""
    report = SendReport()
    hold = rt.throttle.remaining()
    if hold > 0:  # the provider asked every sender to wait: claim nothing, come back after it
        report.retry, report.held, report.retry_after = list(ids), True, hold
        return report
    with rt.transaction() as session:
        report.paused = engine_state.paused_reason(session)
        if report.paused:
            return report
        rows = _claim(session, ids, now)
        report.not_queued = len(set(ids)) - len(rows)
        ready = _apply_exit_conditions(rt, session, rows, report, now)
    by_message: dict[str, list[tuple[Row[Any], Row[Any]]]] = defaultdict(list)
    for row, sub in ready:
        by_message[row.message_key].append((row, sub))
    for key, pairs in by_message.items():
        try:
            message = _message_for(rt, key, pairs[0][0].kind)
        except Exception as err:  # a broken message must not leave rows stuck in "sending"
            log.exception("cannot render %s", key)
            # A database hiccup while loading a broadcast is not a broken message: retry it.
            retry = isinstance(err, DBAPIError)
            error = f"render failed: {err}"
            failures = [SendResult(row.id, False, error=error, transient=retry) for row, _ in pairs]
            report.add(record(rt, key, pairs, failures, Verdict(), now))
            continue
        signer = None
        if message.links or message.open_tracking:  # signed open/click URLs per recipient
            signer = signer_for(rt.secret, rt.settings.public_url)
        recipients = [_recipient(rt, row, sub, now, message, signer) for row, sub in pairs]
        size = rt.backend.max_batch
        for start in range(0, len(recipients), size):
            batch = slice(start, start + size)
            _send_batch(rt, message, pairs[batch], recipients[batch], report, now)
    return report


def _claim(session: Session, ids: Sequence[int], now: datetime) -> list[Row[Any]]:
    stmt = (
        update(Delivery)
        .where(one_of(Delivery.id, ids, session), Delivery.status == DeliveryStatus.QUEUED)
        .values(status=DeliveryStatus.SENDING, attempts=Delivery.attempts + 1, updated_at=now)
        .returning(
            Delivery.id,
            Delivery.subscriber_id,
            Delivery.message_key,
            Delivery.kind,
            Delivery.sequence,
            Delivery.attempts,
        )
        .execution_options(synchronize_session=False)
    )
    return list(session.execute(stmt).all())


def _exit_reason(
    source: MessageSource,
    rt: Runtime,
    sub: Row[Any] | None,
    seq: str | None,
    suppressed: bool,
) -> str | None:
    if sub is None or sub.email is None or sub.status == SubscriberStatus.ERASED:
        return "erased"
    if sub.status not in source.receivers:
        return str(sub.status)
    if suppressed:
        return "suppressed"
    return source.exit_reason(rt, sub, seq)


def _apply_exit_conditions(
    rt: Runtime,
    session: Session,
    rows: list[Row[Any]],
    report: SendReport,
    now: datetime,
) -> list[tuple[Row[Any], Row[Any]]]:
    """The rows that may be sent, each with its subscriber; the others marked ``skipped``."""
    subs = {
        s.id: s
        for s in session.execute(
            select(
                Subscriber.id,
                Subscriber.email,
                Subscriber.first_name,
                Subscriber.status,
                Subscriber.time_zone,
                Subscriber.course_emails,
                Subscriber.newsletter,
                Subscriber.converted_at,
            ).where(one_of(Subscriber.id, [r.subscriber_id for r in rows], session))
        )
    }
    key = salt(session)
    hashes = {s.id: hash_with(key, s.email) for s in subs.values() if s.email}
    suppressed = listed_hashes(session, hashes.values())
    exited = _exited(session, rows)
    ready = []
    skipped: list[dict[str, object]] = []
    for row in rows:
        sub = subs.get(row.subscriber_id)
        blocked = hashes.get(row.subscriber_id) in suppressed
        reason = _exit_reason(source_for(rt.sources, row.kind), rt, sub, row.sequence, blocked)
        if reason is None and row.sequence:
            reason = exited.get((row.subscriber_id, row.sequence))
        if reason is not None or sub is None:
            skipped.append({"id": row.id, "status": DeliveryStatus.SKIPPED, "error": reason})
            if row.sequence:
                stop_enrollments(
                    session, row.subscriber_id, reason or "erased", sequence=row.sequence
                )
            continue
        ready.append((row, sub))
    if skipped:
        session.execute(update(Delivery), skipped)
    report.skipped += len(skipped)
    return ready


def _exited(session: Session, rows: list[Row[Any]]) -> dict[tuple[int, str], str]:
    """Why the enrollments of these lesson rows were stopped since their claim, by (subscriber,
    sequence): an exit (a purchase, a tag), an unsubscribe or an erasure took them out."""
    lessons = [r for r in rows if r.sequence]
    if not lessons:
        return {}
    stopped = session.execute(
        select(Enrollment.subscriber_id, Enrollment.sequence, Enrollment.stop_reason).where(
            one_of(Enrollment.subscriber_id, sorted({r.subscriber_id for r in lessons}), session),
            Enrollment.status == EnrollmentStatus.STOPPED,
        )
    )
    return {(sid, slug): reason or "stopped" for sid, slug, reason in stopped}


def _recipient(
    rt: Runtime,
    row: Row[Any],
    sub: Row[Any],
    now: datetime,
    message: Message,
    signer: TrackingSigner | None,
) -> Recipient:
    unsubscribe = rt.unsubscribe_url(sub.id)
    fields = source_for(rt.sources, row.kind).recipient_fields(rt, sub.id, now)
    data = RecipientData(first_name=sub.first_name, unsubscribe_url=unsubscribe, **fields)
    substitutions = recipient_substitutions(data)
    if signer is not None:
        substitutions.update(tracking_substitutions(signer, message, row.id))
    return Recipient(
        delivery_id=row.id,
        email=sub.email,
        name=sub.first_name,
        substitutions=substitutions,
        headers=unsubscribe_headers(unsubscribe),
        time_zone=sub.time_zone,
    )


def _message_for(rt: Runtime, key: str, kind: str) -> Message:
    return source_for(rt.sources, kind).message(rt, key)


def _send_batch(
    rt: Runtime,
    message: Message,
    pairs: list[tuple[Row[Any], Row[Any]]],
    recipients: list[Recipient],
    report: SendReport,
    now: datetime,
) -> None:
    """Hand one batch to the backend (unless the provider's hold is on) and record the outcome."""
    verdict = Verdict()
    hold = 0.0 if report.paused else rt.throttle.remaining()
    if report.paused:  # an earlier batch of this task paused sending: the rest waits for resume
        results = _all(recipients, f"sending paused: {report.paused}", transient=True)
        verdict = Verdict(held=True)
    elif hold > 0:
        error = f"held back {hold:.1f}s: the provider asked us to slow down"
        results = _all(recipients, error, transient=True)
        verdict = Verdict(held=True)
        _note_hold(report, hold)
    else:
        try:
            results = rt.backend.send_batch(message, recipients)
        except ThrottledBackendError as err:
            results = _all(recipients, str(err), transient=True)
            verdict = Verdict(held=True)
            _note_hold(report, rt.throttle.hold(err.retry_after))
        except TransientBackendError as err:
            results = _all(recipients, str(err), transient=True)
        except AmbiguousBackendError as err:
            results = _all(recipients, str(err), unknown=True)
            log.warning("%d deliveries of %s left unknown: %s", len(results), message, err)
        except PermanentBackendError as err:
            results = _all(recipients, str(err))
            refused = err.status in (401, 403)
            verdict = Verdict(blocked=refused, blocking=not refused)
        else:
            hint = _batch_hint(results)
            if hint is not None:  # a later request of the batch was throttled
                _note_hold(report, rt.throttle.hold(hint))
    report.add(record(rt, message.message_key, pairs, results, verdict, now))


def _all(
    recipients: list[Recipient], error: str, *, transient: bool = False, unknown: bool = False
) -> list[SendResult]:
    return [
        SendResult(r.delivery_id, False, error=error, transient=transient, unknown=unknown)
        for r in recipients
    ]


def _note_hold(report: SendReport, seconds: float) -> None:
    report.held = True
    report.retry_after = max(report.retry_after or 0.0, seconds)


def _batch_hint(results: list[SendResult]) -> float | None:
    """The provider's wait hint carried by the results of a partly throttled batch, if any."""
    hints = [r.retry_after for r in results if not r.ok and r.retry_after is not None]
    return max(hints) if hints else None
