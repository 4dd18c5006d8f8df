"""Posting the outbox: beat's task claims the due rows, attempts them at once, records each.

One run (:func:`deliver_due`, every ``DRIP_OUTGOING_WEBHOOK_SECONDS``):

1. **claim** at most ``DRIP_OUTGOING_WEBHOOK_BATCH`` pending rows whose ``next_attempt_at`` has
   come, with a compare-and-set that pushes ``next_attempt_at`` past the attempt (a lease): a
   second run, or a run overlapping this one, finds nothing left to claim; a worker that dies
   mid-attempt leaves rows that come due again when the lease ends;
2. **attempt** them all at once, one thread each, each under the total deadline
   ``DRIP_OUTGOING_WEBHOOK_TIMEOUT``, signed as Standard Webhooks says
   (:mod:`drip.outgoing.signing`): a run lasts about one deadline, however many receivers hang;
3. **record** each attempt (status code or error, duration) as an
   :class:`~drip.models.OutgoingWebhookAttempt` row and a log line. A 2xx delivers the row.
   Anything else schedules the next attempt with exponential backoff and jitter
   (:func:`retry_delay`); once the next attempt would fall more than :data:`RETRY_WINDOW`
   after the event, the row is ``failed``. A row whose endpoint is no longer configured fails
   at once, without a request.

Delivery is at least once: a receiver may see a retry of an event it took (a lost answer, a
worker that died after posting), with the same ``webhook-id``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.client import HTTPException
from typing import TYPE_CHECKING, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from drip.models import OutgoingWebhook, OutgoingWebhookAttempt, OutgoingWebhookStatus
from drip.outgoing.http import Post, post_json
from drip.outgoing.outbox import endpoints_of
from drip.outgoing.signing import signed_headers
from drip.outgoing_endpoints import Endpoint
from drip.store import one_of

if TYPE_CHECKING:
    from drip.runtime import Runtime

log = logging.getLogger(__name__)

RETRY_WINDOW = timedelta(hours=24)  # after the event: then the row is failed
FIRST_RETRY_SECONDS = 10.0  # the ceiling of the first wait; it doubles each attempt
MAX_RETRY_SECONDS = 2 * 3600.0  # ... up to this
LEASE_MARGIN = timedelta(seconds=60)  # a claimed row comes due again after the deadline + this
ERROR_MAX = 500  # characters of an error kept
GONE = "the endpoint is no longer configured"
PENDING = OutgoingWebhookStatus.PENDING


@dataclass(frozen=True)
class Due:
    """A claimed row: what to post, where, and how many attempts it had."""

    id: int
    message_id: str
    event_type: str
    endpoint_url: str
    body: str
    attempts: int
    created_at: datetime


@dataclass(frozen=True)
class Outcome:
    """One attempt: the status code if an answer came, else the error; its duration."""

    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class RunReport:
    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0


def retry_delay(attempt: int, rng: random.Random) -> float:
    """Seconds before the attempt after attempt number ``attempt`` (1-based): exponential
    (10 s, 20 s, 40 s ... at most 2 h), with jitter: uniform between half and all of it."""
    ceiling = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** min(attempt - 1, 30))
    return rng.uniform(ceiling / 2, ceiling)


def claim_due(session: Session, now: datetime, limit: int, lease: timedelta) -> list[Due]:
    """Claim at most ``limit`` due rows, oldest due first (see module doc, step 1)."""
    table = cast(Table, OutgoingWebhook.__table__)
    due = OutgoingWebhook.next_attempt_at <= now
    pending = OutgoingWebhook.status == PENDING
    ids = list(
        session.scalars(
            select(OutgoingWebhook.id)
            .where(pending, due)
            .order_by(OutgoingWebhook.next_attempt_at, OutgoingWebhook.id)
            .limit(limit)
        )
    )
    if not ids:
        return []
    claimed = session.execute(
        update(table)
        .where(one_of(table.c.id, ids, session), table.c.status == PENDING, due)
        .values(next_attempt_at=now + lease)
        .returning(
            table.c.id,
            table.c.message_id,
            table.c.event_type,
            table.c.endpoint_url,
            table.c.body,
            table.c.attempts,
            table.c.created_at,
        )
    ).all()
    return sorted((Due(*row) for row in claimed), key=lambda d: d.id)


def attempt(
    due: Due, endpoint: Endpoint | None, now: datetime, timeout: float, post: Post = post_json
) -> Outcome:
    """Post ``due`` to its endpoint, signed at ``now``; never raises for the receiver's sake."""
    if endpoint is None:
        return Outcome(None, GONE, 0)
    body = due.body.encode()
    headers = signed_headers(endpoint.key, due.message_id, int(now.timestamp()), body)
    started = time.monotonic()
    try:
        status = post(due.endpoint_url, body, headers, timeout)
    except TimeoutError as err:
        outcome = Outcome(None, f"timed out: {err}", _ms_since(started))
    except (OSError, HTTPException, ValueError) as err:
        outcome = Outcome(None, f"{type(err).__name__}: {err}"[:ERROR_MAX], _ms_since(started))
    else:
        error = None if 200 <= status < 300 else f"HTTP {status}"
        outcome = Outcome(status, error, _ms_since(started))
    return outcome


def record(session: Session, due: Due, outcome: Outcome, now: datetime, rng: random.Random) -> str:
    """Store one attempt and the row's new state (step 3); returns that state."""
    number = due.attempts + 1
    session.execute(
        insert(cast(Table, OutgoingWebhookAttempt.__table__)).values(
            webhook_id=due.id,
            number=number,
            at=now,
            duration_ms=outcome.duration_ms,
            status_code=outcome.status_code,
            error=outcome.error,
        )
    )
    values: dict[str, object] = {
        "attempts": number,
        "last_attempt_at": now,
        "last_status_code": outcome.status_code,
        "last_error": outcome.error,
    }
    next_at = now + timedelta(seconds=retry_delay(number, rng))
    if outcome.delivered:
        state = OutgoingWebhookStatus.DELIVERED
        values.update(status=state, delivered_at=now, next_attempt_at=None)
    elif outcome.error == GONE or next_at > due.created_at + RETRY_WINDOW:
        state = OutgoingWebhookStatus.FAILED
        values.update(status=state, next_attempt_at=None)
    else:
        state = PENDING
        values.update(next_attempt_at=next_at)
    table = cast(Table, OutgoingWebhook.__table__)
    session.execute(
        update(table).where(table.c.id == due.id, table.c.status == PENDING).values(**values)
    )
    _log(due, number, outcome, state, next_at)
    return state


def deliver_due(
    rt: Runtime, *, post: Post = post_json, rng: random.Random | None = None
) -> RunReport:
    """One run of beat's task (see module doc); the database is not held during the posts."""
    settings = rt.settings
    timeout = settings.outgoing_webhook_timeout
    lease = timedelta(seconds=timeout) + LEASE_MARGIN
    with rt.transaction() as session:
        claimed = claim_due(session, rt.clock(), settings.outgoing_webhook_batch, lease)
        endpoints = {endpoint.url: endpoint for endpoint in endpoints_of(session)}
    report = RunReport(claimed=len(claimed))
    if not claimed:
        return report
    outcomes = _attempt_all(claimed, endpoints, rt, timeout, post)
    chance = rng or random.Random()
    with rt.transaction() as session:
        now = rt.clock()
        for due, outcome in zip(claimed, outcomes, strict=True):
            state = record(session, due, outcome, now, chance)
            if state == OutgoingWebhookStatus.DELIVERED:
                report.delivered += 1
            elif state == OutgoingWebhookStatus.FAILED:
                report.failed += 1
            else:
                report.retrying += 1
    return report


def _attempt_all(
    claimed: Sequence[Due],
    endpoints: Mapping[str, Endpoint],
    rt: Runtime,
    timeout: float,
    post: Post,
) -> list[Outcome]:
    """Every attempt at once, one thread each: the run waits for the slowest, one deadline."""

    def one(due: Due) -> Outcome:
        return attempt(due, endpoints.get(due.endpoint_url), rt.clock(), timeout, post)

    with ThreadPoolExecutor(max_workers=len(claimed), thread_name_prefix="webhook") as pool:
        return list(pool.map(one, claimed))


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _log(due: Due, number: int, outcome: Outcome, state: str, next_at: datetime) -> None:
    what = outcome.status_code if outcome.error is None else outcome.error
    then = f", next attempt at {next_at.isoformat()}" if state == PENDING else ""
    level = logging.INFO if state == OutgoingWebhookStatus.DELIVERED else logging.WARNING
    log.log(
        level,
        "outgoing webhook %s (%s) to %s, attempt %d: %s in %d ms: %s%s",
        due.id,
        due.event_type,
        due.endpoint_url,
        number,
        what,
        outcome.duration_ms,
        state,
        then,
    )
