"""Send claimed deliveries: exit checks, render, hand to the backend, record the outcome.

:func:`send_deliveries` is what a worker's send task runs (and the demo, in-process). Its steps:

1. **Claim** the rows with a compare-and-set from ``queued`` to ``sending`` and commit. A row that
   is not ``queued`` any more (sent by an earlier, redelivered copy of the task) is left alone:
   this is the exactly-once guarantee.
2. **Exit conditions**, right before sending: unsubscribed, erased, suppressed, converted (for
   sales sequences) or opted out of this kind of email -> ``skipped`` with the reason, and the
   enrollment stopped.
3. **Send** per message (rendered once, cached) in backend-sized batches.
4. **Record**: ``sent`` with the provider's id, ``failed`` with its message, or back to ``queued``
   for a transient error (the task retries with backoff) until the attempts run out.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, text, update
from sqlalchemy.orm import Session

from drip import engine_state
from drip.broadcasts.message import broadcast_message
from drip.db import int_array, is_postgres, one_of, text_array
from drip.engagement import count_sent
from drip.enrollments import stop_enrollments
from drip.errors import PermanentBackendError, TransientBackendError
from drip.esp.base import Message, Recipient, SendResult
from drip.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus
from drip.render import RecipientData, recipient_substitutions, unsubscribe_headers
from drip.runtime import Runtime
from drip.suppress import hash_with, listed_hashes, salt
from drip.tokens import expiring_token
from drip.tracking.links import tracking_substitutions
from drip.tracking.tokens import TrackingSigner, signer_for

log = logging.getLogger(__name__)

CONFIRM_PURPOSE = "confirm"
BACKOFF_BASE = 5.0
BACKOFF_CAP = 300.0  # never a countdown past a few minutes: Redis redelivers long ETAs


@dataclass
class SendReport:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    not_queued: int = 0  # already handled by an earlier run: exactly-once at work
    retry: list[int] = field(default_factory=list)
    retry_after: float | None = None
    paused: str | None = None


def backoff_seconds(attempt: int, retry_after: float | None, rng: random.Random) -> float:
    """Exponential backoff with full jitter, at least the provider's hint, at most 5 minutes."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(attempt - 1, 0))
    delay = rng.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, BACKOFF_CAP)


def send_deliveries(rt: Runtime, ids: Sequence[int], now: datetime) -> SendReport:
    """Send the deliveries ``ids`` (any that are still ``queued``). Never sends a row twice."""
    report = SendReport()
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
            error = f"render failed: {err}"
            failures = [SendResult(row.id, False, error=error) for row, _ in pairs]
            _record(rt, failures, {row.id: row.attempts for row, _ in pairs}, report, now)
            continue
        signer = None
        if message.links or message.open_tracking:  # signed open/click URLs per recipient
            signer = signer_for(rt.secret, rt.settings.public_url)
        items = [(row, _recipient(rt, row, sub, now, message, signer)) for row, sub in pairs]
        size = rt.backend.max_batch
        for start in range(0, len(items), size):
            _send_batch(rt, message, items[start : start + size], report, now)
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
    rt: Runtime,
    sub: Row[Any] | None,
    kind: str,
    seq: str | None,
    suppressed: bool,
) -> str | None:
    if sub is None or sub.email is None or sub.status == SubscriberStatus.ERASED:
        return "erased"
    allowed = {SubscriberStatus.ACTIVE}
    if kind == "confirm":
        allowed = {SubscriberStatus.PENDING, SubscriberStatus.ACTIVE}
    if sub.status not in allowed:
        return str(sub.status)
    if suppressed:
        return "suppressed"
    if kind == "lesson":
        sequence = rt.library.get(seq or "")
        if sequence is None:
            return "sequence removed"
        if sub.converted_at is not None and sequence.kind == "upsell":
            return "converted"
        if not sub.course_emails:
            return "preferences"
    if kind == "broadcast" and not sub.newsletter:
        return "preferences"
    return None


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
    ready = []
    skipped: list[dict[str, object]] = []
    for row in rows:
        sub = subs.get(row.subscriber_id)
        blocked = hashes.get(row.subscriber_id) in suppressed
        reason = _exit_reason(rt, sub, row.kind, row.sequence, blocked)
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


def _recipient(
    rt: Runtime,
    row: Row[Any],
    sub: Row[Any],
    now: datetime,
    message: Message,
    signer: TrackingSigner | None,
) -> Recipient:
    unsubscribe = rt.unsubscribe_url(sub.id)
    confirm = ""
    if row.kind == "confirm":
        token = expiring_token(rt.secret, CONFIRM_PURPOSE, str(sub.id), now=now)
        confirm = f"{rt.settings.public_url}/confirm/{token}"
    data = RecipientData(
        first_name=sub.first_name, unsubscribe_url=unsubscribe, confirm_url=confirm
    )
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
    if kind == "confirm":
        return rt.renderer.confirmation()
    if kind == "broadcast":  # "broadcast/<id>": compiled once per version (drip.broadcasts)
        return broadcast_message(rt, int(key.rpartition("/")[2]))
    slug, _, position = key.rpartition("/")
    sequence = rt.library[slug]
    lesson = sequence.lesson_at(int(position))
    if lesson is None:
        raise LookupError(f"no lesson {key}")
    return rt.renderer.lesson(sequence, lesson)


def _send_batch(
    rt: Runtime,
    message: Message,
    items: list[tuple[Row[Any], Recipient]],
    report: SendReport,
    now: datetime,
) -> None:
    recipients = [r for _, r in items]
    try:
        results = rt.backend.send_batch(message, recipients)
    except TransientBackendError as err:
        results = [
            SendResult(r.delivery_id, False, error=str(err), transient=True) for r in recipients
        ]
        if err.retry_after is not None:
            report.retry_after = max(report.retry_after or 0.0, err.retry_after)
    except PermanentBackendError as err:
        results = [SendResult(r.delivery_id, False, error=str(err)) for r in recipients]
    attempts = {row.id: row.attempts for row, _ in items}
    keys = {row.id: row.message_key for row, _ in items}
    _record(rt, results, attempts, report, now, message_keys=keys)


# The outcomes of a SendGrid batch are few (one provider message id per request, one error per
# failed request): one UPDATE per distinct outcome, its ids as one array literal. Backends that
# give each email its own id (SMTP, the outbox) take one UPDATE over arrays instead.
_RECORD_ONE_OUTCOME_PG = text(
    """
    UPDATE deliveries
    SET status = :status, provider_message_id = :provider_message_id, error = :error,
        sent_at = :sent_at, backend = :backend, updated_at = :now
    WHERE id = ANY(CAST(:ids AS bigint[]))
    """
)
_RECORD_MANY_OUTCOMES_PG = text(
    """
    UPDATE deliveries AS d
    SET status = v.status, provider_message_id = v.provider_message_id, error = v.error,
        sent_at = CASE WHEN v.status = 'sent' THEN CAST(:now AS timestamptz) END,
        backend = :backend, updated_at = :now
    FROM unnest(
        CAST(:ids AS bigint[]), CAST(:status AS varchar[]),
        CAST(:provider_message_id AS varchar[]), CAST(:error AS text[])
    ) AS v(id, status, provider_message_id, error)
    WHERE d.id = v.id
    """
)
_FEW_OUTCOMES = 4


def _record(
    rt: Runtime,
    results: list[SendResult],
    attempts: dict[int, int],
    report: SendReport,
    now: datetime,
    message_keys: dict[int, str] | None = None,
) -> None:
    """Store each result: sent, failed, or queued again for a retry while attempts remain."""
    limit = rt.settings.max_send_retries + 1
    changes: list[dict[str, Any]] = []
    last_error = None
    for res in results:
        change: dict[str, object] = {
            "id": res.delivery_id,
            "status": DeliveryStatus.SENT,
            "provider_message_id": res.provider_message_id,
            "error": None,
            "sent_at": now,
        }
        if not res.ok:
            last_error = res.error
            change.update(provider_message_id=None, sent_at=None, error=res.error)
            if res.transient and attempts[res.delivery_id] < limit:
                report.retry.append(res.delivery_id)
                change["status"] = DeliveryStatus.QUEUED
            else:
                report.failed += 1
                change["status"] = DeliveryStatus.FAILED
                if res.transient:
                    change["error"] = f"gave up after {limit} attempts: {res.error}"
        changes.append(change)
    ok = sum(1 for res in results if res.ok)
    report.sent += ok
    with rt.transaction() as session:
        if is_postgres(session):
            _record_pg(session, changes, rt.backend.name, now)
        else:
            extra = {"backend": rt.backend.name, "updated_at": now}
            session.execute(update(Delivery), [{**ch, **extra} for ch in changes])
        if message_keys:  # the stats' "sent" counters (drip.engagement)
            count_sent(session, [message_keys[r.delivery_id] for r in results if r.ok])
        reason = engine_state.record_outcome(
            session,
            succeeded=ok,
            failed=len(results) - ok,
            last_error=last_error,
            limit=rt.settings.max_consecutive_failures,
            now=now,
        )
    if reason:
        log.error("sending paused: %s", reason)
        report.paused = reason


def _record_pg(
    session: Session, changes: list[dict[str, Any]], backend: str, now: datetime
) -> None:
    outcomes: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for ch in changes:
        outcome = (ch["status"], ch["provider_message_id"], ch["error"], ch["sent_at"])
        outcomes[outcome].append(ch["id"])
        if len(outcomes) > _FEW_OUTCOMES:
            break
    if len(outcomes) <= _FEW_OUTCOMES:
        for (status, message_id, error, sent_at), ids in outcomes.items():
            params = {
                "ids": int_array(ids),
                "status": status,
                "provider_message_id": message_id,
                "error": error,
                "sent_at": sent_at,
                "backend": backend,
                "now": now,
            }
            session.execute(_RECORD_ONE_OUTCOME_PG, params)
        return
    session.execute(
        _RECORD_MANY_OUTCOMES_PG,
        {
            "ids": int_array(ch["id"] for ch in changes),
            "status": text_array(ch["status"] for ch in changes),
            "provider_message_id": text_array(ch["provider_message_id"] for ch in changes),
            "error": text_array(ch["error"] for ch in changes),
            "backend": backend,
            "now": now,
        },
    )
