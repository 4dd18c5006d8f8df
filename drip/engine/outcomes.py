"""What a send's results do to the delivery rows: the three outcomes, stored.

A send has three outcomes, not two (see :mod:`drip.esp.base`):

- **sent**: ``sent`` with the provider's id; the failure streak is reset.
- **not sent**: back to ``queued`` for a retry. A throttle (429, 5xx: the provider asked us to
  slow down) or an account-level refusal (401, 403) uses up no attempt and never gives up: the
  email waits for the provider. Other transient failures (refused, connect timeout) retry for
  ``DRIP_SEND_RETRY_HOURS`` after the row was written, then the row is ``failed``.
- **maybe sent**: ``unknown``, never re-sent blindly; the provider's own events settle it
  (:mod:`drip.engine.reconcile`), else a person does (``drip deliveries unknown``).

A request the provider refused for good (400, 413) is ``failed``. A refusal of the address itself
(SMTP 550 no such user) also suppresses the address, as a bounce would. A lesson that ends
``failed`` is not skipped: its enrollment steps back so that the lesson is due again on the next
allowed day (:func:`step_back`), and the failure shows in ``drip deliveries failed``.

Only refusals that a retry cannot fix (the whole request refused permanently, or the account
refused) count toward the sending pause (:mod:`drip.engine.pause`).

Recording is retried through a short database outage (:func:`record`): a worker that has the
provider's answer in hand must not lose it, or a sent email would end ``unknown``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Row, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from drip.engagement import count_sent
from drip.engine import pause as engine_state
from drip.engine.enrollments import due_after_send
from drip.esp.base import SendResult
from drip.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    lesson_of_key,
)
from drip.store import one_of, store_for
from drip.suppress import suppress_addresses

if TYPE_CHECKING:
    from drip.runtime import Runtime

log = logging.getLogger(__name__)

# How long, in all, a worker keeps trying to store results it holds through a database outage
# (a PostgreSQL restart takes seconds); past it the rows stay ``sending`` and the reaper makes
# them ``unknown``, which the provider's events then settle.
RECORD_PATIENCE = 90.0

T = TypeVar("T")


@dataclass(frozen=True)
class Attempt:
    """A claimed row that failed, with what its consequences need (built for failures only:
    the common, successful batch never pays for these objects)."""

    id: int
    subscriber_id: int
    kind: str
    sequence: str | None
    position: int | None
    email: str
    time_zone: str | None


@dataclass(frozen=True)
class Verdict:
    """What a whole request's failure says beyond each recipient's result.

    ``held``: nothing was sent because the provider asked us to wait (a throttle, or our shared
    hold): no attempt used. ``blocked``: the account was refused (401, 403): no attempt used,
    and it counts toward the pause. ``blocking``: a refusal of the request itself (400, 413)
    that counts toward the pause.
    """

    held: bool = False
    blocked: bool = False
    blocking: bool = False


@dataclass
class Recorded:
    """What :func:`record` did, for the send report."""

    sent: int = 0
    failed: int = 0
    unknown: int = 0
    retry: list[int] = field(default_factory=list)
    paused: str | None = None


def outcome_rows(
    rt: Runtime,
    results: Sequence[SendResult],
    verdict: Verdict,
    now: datetime,
    queued_at: Mapping[int, datetime],
) -> tuple[list[dict[str, Any]], Recorded]:
    """The row changes for ``results``, and their summary. ``queued_at``: when each row that
    certainly did not go out (and was not held) was queued, for the retry window."""
    window = timedelta(hours=rt.settings.send_retry_hours)
    changes: list[dict[str, Any]] = []
    summary = Recorded()
    for res in results:
        change: dict[str, Any] = {
            "id": res.delivery_id,
            "status": DeliveryStatus.SENT,
            "provider_message_id": res.provider_message_id,
            "error": None,
            "sent_at": now,
            "uncount": 0,
        }
        if res.ok:
            summary.sent += 1
        else:
            change.update(provider_message_id=None, sent_at=None, error=res.error)
            if res.unknown:
                change["status"] = DeliveryStatus.UNKNOWN
                summary.unknown += 1
            elif _held(res, verdict):
                change.update(status=DeliveryStatus.QUEUED, uncount=1)
                summary.retry.append(res.delivery_id)
            elif res.transient and now - queued_at[res.delivery_id] < window:
                change["status"] = DeliveryStatus.QUEUED
                summary.retry.append(res.delivery_id)
            else:
                change["status"] = DeliveryStatus.FAILED
                summary.failed += 1
                if res.transient:
                    hours = rt.settings.send_retry_hours
                    change["error"] = f"gave up after {hours:g} hours of retries: {res.error}"
        changes.append(change)
    return changes, summary


def _held(res: SendResult, verdict: Verdict) -> bool:
    """Not sent because the provider asked us to wait: no attempt used, never given up."""
    return verdict.held or verdict.blocked or res.retry_after is not None


def record(
    rt: Runtime,
    message_key: str,
    pairs: Sequence[tuple[Row[Any], Row[Any]]],
    results: Sequence[SendResult],
    verdict: Verdict,
    now: datetime,
) -> Recorded:
    """Store ``results`` of ``pairs`` (claimed row, subscriber row; one message) and their
    effects in one transaction, retried through a database outage."""
    failures = [r for r in results if not r.ok]
    windowed = [r.delivery_id for r in failures if r.transient and not _held(r, verdict)]
    attempts = _failed_attempts(pairs, {r.delivery_id for r in failures})
    invalid = {
        attempts[r.delivery_id].email: ("invalid", (r.error or "")[:500])
        for r in failures
        if r.invalid_address
    }
    sent = len(results) - len(failures)
    counted = len(results) if verdict.blocked or verdict.blocking else 0
    last_error = failures[0].error if failures else None
    summary = Recorded()

    def store(session: Session) -> str | None:
        nonlocal summary
        queued_at = _queued_at(session, windowed)
        changes, summary = outcome_rows(rt, results, verdict, now, queued_at)
        write_changes(session, changes, rt.backend.name, now)
        count_sent(session, [message_key] * sent)  # the stats' "sent" counters
        if invalid:
            suppress_addresses(session, invalid, now)
        failed = [attempts[c["id"]] for c in changes if c["status"] == DeliveryStatus.FAILED]
        step_back(rt, session, [a for a in failed if a.email not in invalid], now)
        if not sent and not counted:
            return None  # throttles, retries and unknowns leave the streak as it is
        return engine_state.record_outcome(
            session,
            succeeded=sent,
            failed=counted,
            last_error=last_error,
            limit=rt.settings.max_consecutive_failures,
            now=now,
        )

    paused = with_db_patience(rt, store, what=f"recording {len(results)} results")
    summary.paused = paused
    if paused:
        log.error("sending paused: %s", paused)
    return summary


def _failed_attempts(
    pairs: Sequence[tuple[Row[Any], Row[Any]]], ids: set[int]
) -> dict[int, Attempt]:
    found: dict[int, Attempt] = {}
    if not ids:
        return found
    for row, sub in pairs:
        if row.id in ids:
            found[row.id] = Attempt(
                id=row.id,
                subscriber_id=row.subscriber_id,
                kind=row.kind,
                sequence=row.sequence,
                position=_position(row.message_key) if row.sequence else None,
                email=sub.email,
                time_zone=sub.time_zone,
            )
    return found


def _position(message_key: str) -> int | None:
    """The lesson number of a lesson's message key (drip.models.lesson_key)."""
    try:
        return lesson_of_key(message_key)[1]
    except ValueError:
        return None


def _queued_at(session: Session, ids: Sequence[int]) -> dict[int, datetime]:
    """When each of ``ids`` was last queued (its retry window's start)."""
    if not ids:
        return {}
    started = func.coalesce(Delivery.queued_at, Delivery.created_at)
    rows = session.execute(
        select(Delivery.id, started).where(one_of(Delivery.id, list(ids), session))
    ).all()
    return {delivery_id: when for delivery_id, when in rows}


def with_db_patience(
    rt: Runtime,
    work: Callable[[Session], T],
    *,
    what: str,
    patience: float = RECORD_PATIENCE,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``work`` in a transaction, again after a lost connection, for ``patience`` seconds.

    Only for work that is safe to run twice (every write here is "set to", not "add to", except
    the sent counters, which a failed transaction never committed).
    """
    deadline = time.monotonic() + patience
    delay = 0.5
    while True:
        try:
            with rt.transaction() as session:
                return work(session)
        except DBAPIError as err:
            if not err.connection_invalidated and not _is_disconnect(err):
                raise
            if time.monotonic() + delay > deadline:
                log.error("%s: database unreachable for %.0fs; giving up", what, patience)
                raise
            log.warning("%s: database unreachable (%s); trying again", what, err.orig)
            sleep(delay)
            delay = min(delay * 2, 10.0)


def _is_disconnect(err: DBAPIError) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(err, OperationalError | InterfaceError)


def step_back(rt: Runtime, session: Session, failed: Sequence[Attempt], now: datetime) -> int:
    """Set each failed lesson's enrollment back so that the lesson is due again; returns how many.

    The enrollment had moved past the lesson when it was claimed. It goes back to just before
    it, due on the next allowed local day, so the subscriber gets every lesson in order and
    never loses one to an outage of ours. The claim then queues the same delivery row again
    (:func:`drip.engine.claim.claim_due` re-queues ``failed`` and ``skipped`` rows).
    Enrollments that are stopped (unsubscribed, converted) stay stopped.
    """
    lessons = [a for a in failed if a.kind == DeliveryKind.LESSON and a.sequence and a.position]
    if not lessons:
        return 0
    fallback = rt.settings.default_timezone
    moved = 0
    for a in lessons:
        sequence = rt.library.get(a.sequence or "")
        if sequence is None or a.position is None:
            continue
        due = due_after_send(sequence, a.position, now, a.time_zone, fallback)
        result = session.execute(
            update(Enrollment)
            .where(
                Enrollment.subscriber_id == a.subscriber_id,
                Enrollment.sequence == a.sequence,
                Enrollment.status.in_([EnrollmentStatus.ACTIVE, EnrollmentStatus.COMPLETED]),
                Enrollment.position >= a.position,
            )
            .values(
                position=a.position - 1,
                next_send_at=due,
                status=EnrollmentStatus.ACTIVE,
                completed_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        moved += getattr(result, "rowcount", 0) or 0
    return moved


def write_changes(
    session: Session, changes: list[dict[str, Any]], backend: str, now: datetime
) -> None:
    """Apply the row changes of :func:`outcome_rows`."""
    if changes:
        store_for(session).record_outcomes(session, changes, backend, now)
