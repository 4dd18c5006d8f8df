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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Row, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from drip.engagement import count_sent
from drip.engine import pause as engine_state
from drip.engine.enrollments import due_after_send
from drip.esp.base import SendResult
from drip.models import DeliveryKind, DeliveryStatus, Enrollment, EnrollmentStatus
from drip.store import store_for
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
    """A claimed row as the send path knows it, with what recording needs of its subscriber."""

    id: int
    subscriber_id: int
    message_key: str
    kind: str
    sequence: str | None
    position: int | None
    queued_at: datetime  # the retry window counts from here
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
    attempts: Sequence[Attempt],
    results: Sequence[SendResult],
    verdict: Verdict,
    now: datetime,
) -> tuple[list[dict[str, Any]], Recorded]:
    """The row changes for ``results`` (one per attempt, same order), and their summary."""
    window = timedelta(hours=rt.settings.send_retry_hours)
    by_id = {a.id: a for a in attempts}
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
            elif verdict.held or verdict.blocked or res.retry_after is not None:
                change.update(status=DeliveryStatus.QUEUED, uncount=1)
                summary.retry.append(res.delivery_id)
            elif res.transient and now - by_id[res.delivery_id].queued_at < window:
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


def record(
    rt: Runtime,
    attempts: Sequence[Attempt],
    results: Sequence[SendResult],
    verdict: Verdict,
    now: datetime,
) -> Recorded:
    """Store ``results`` and their effects in one transaction, retried through a DB outage."""
    changes, summary = outcome_rows(rt, attempts, results, verdict, now)
    by_id = {a.id: a for a in attempts}
    failed = [by_id[c["id"]] for c in changes if c["status"] == DeliveryStatus.FAILED]
    invalid = {
        by_id[r.delivery_id].email: ("invalid", (r.error or "")[:500])
        for r in results
        if not r.ok and r.invalid_address
    }
    sent_keys = [by_id[r.delivery_id].message_key for r in results if r.ok]
    counted = len(results) if verdict.blocked or verdict.blocking else 0
    last_error = next((r.error for r in results if not r.ok), None)

    def store(session: Session) -> str | None:
        write_changes(session, changes, rt.backend.name, now)
        count_sent(session, sent_keys)  # the stats' "sent" counters (drip.engagement)
        if invalid:
            suppress_addresses(session, invalid, now)
        step_back(rt, session, [a for a in failed if a.email not in invalid], now)
        if not summary.sent and not counted:
            return None  # throttles, retries and unknowns leave the streak as it is
        return engine_state.record_outcome(
            session,
            succeeded=summary.sent,
            failed=counted,
            last_error=last_error,
            limit=rt.settings.max_consecutive_failures,
            now=now,
        )

    summary.paused = with_db_patience(rt, store, what=f"recording {len(changes)} results")
    if summary.paused:
        log.error("sending paused: %s", summary.paused)
    return summary


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
    (:func:`drip.engine.claim.claim_due` re-queues ``failed`` and ``skipped`` rows). Enrollments
    that
    are stopped (unsubscribed, converted) stay stopped.
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


def attempts_of(rows: Sequence[tuple[Row[Any], Row[Any]]]) -> list[Attempt]:
    """The :class:`Attempt` of each (claimed row, subscriber row) pair of the send path."""
    return [
        Attempt(
            id=row.id,
            subscriber_id=row.subscriber_id,
            message_key=row.message_key,
            kind=row.kind,
            sequence=row.sequence,
            position=row.position,
            queued_at=row.queued_at,
            email=sub.email,
            time_zone=sub.time_zone,
        )
        for row, sub in rows
    ]
