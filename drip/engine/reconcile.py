"""Settle ``unknown`` deliveries from the provider's own word, and list what is left for a person.

A delivery is ``unknown`` when its request left and no answer came back (a read timeout, a reset
while reading, a worker killed mid-call): the provider may have it. Re-sending blindly could
send it twice, so drip waits for evidence instead:

- an event about the delivery that proves the provider took it (SendGrid's ``processed``,
  ``delivered``, ``deferred``, ``bounce``; any open, click, spam report or unsubscribe; SendGrid
  events carry our delivery id in ``custom_args``) makes it ``sent``;
- a ``dropped`` event (the provider refused it) makes it ``failed`` with the provider's reason.

:func:`settle_from_events` runs inside every event ingest. Rows with no word after
``DRIP_UNKNOWN_SETTLE_MINUTES`` are listed for a person (``drip deliveries unknown``, the
dashboard), who can resend them with one command (:func:`resend`): the resend is that person's
decision that a duplicate is better than a missing email.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, exists, func, select, update
from sqlalchemy.orm import Session

from drip.engagement import count_sent
from drip.models import Delivery, DeliveryStatus, Subscriber
from drip.store import one_of

# Event types (drip.ingest.events.EventType values) that prove the provider took the email.
PROOF_OF_SENDING = frozenset(
    {
        "queued",  # SendGrid "processed"
        "sent",
        "delivered",
        "deferred",
        "bounced",
        "autoresponded",
        "opened",
        "clicked",
        "complained",
        "unsubscribed",
    }
)
REFUSED = frozenset({"rejected"})  # SendGrid "dropped"

_DELIVERIES = cast(Table, Delivery.__table__)
# A Core statement: executemany of an ORM update would be a bulk update by primary key, which
# cannot carry the status condition that keeps a settled row from changing again.
_SETTLE = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id == bindparam("d_id"), _DELIVERIES.c.status == DeliveryStatus.UNKNOWN)
    .values(
        status=bindparam("d_status"),
        sent_at=bindparam("d_sent_at"),
        error=bindparam("d_error"),
        updated_at=bindparam("d_now"),
    )
)


@dataclass(frozen=True)
class Word:
    """What one event says about one delivery."""

    delivery_id: int
    type: str
    occurred_at: datetime
    reason: str | None = None


def any_unknown(session: Session) -> bool:
    """Whether any delivery is ``unknown`` at all: one look in a small partial index."""
    return bool(session.scalar(select(exists().where(Delivery.status == DeliveryStatus.UNKNOWN))))


def settle_from_events(session: Session, words: Iterable[Word], now: datetime) -> dict[str, int]:
    """Settle the ``unknown`` deliveries that ``words`` speak of; returns counts by new status.

    The cheap case, nothing unknown anywhere, costs one index look-up per batch.
    """
    relevant = [w for w in words if w.type in PROOF_OF_SENDING or w.type in REFUSED]
    if not relevant or not any_unknown(session):
        return {}
    ids = sorted({w.delivery_id for w in relevant})
    unknown = {
        row.id: row.message_key
        for row in session.execute(
            select(Delivery.id, Delivery.message_key).where(
                one_of(Delivery.id, ids, session), Delivery.status == DeliveryStatus.UNKNOWN
            )
        ).all()
    }
    verdicts: dict[int, dict[str, Any]] = {}
    for word in sorted(relevant, key=lambda w: w.occurred_at):
        if word.delivery_id not in unknown:
            continue
        current = verdicts.get(word.delivery_id)
        if word.type in PROOF_OF_SENDING:
            if current is None or current["d_status"] != DeliveryStatus.SENT:
                verdicts[word.delivery_id] = _verdict(word, DeliveryStatus.SENT, None, now)
        elif current is None:  # proof of sending wins over a refusal
            error = f"refused by the provider: {word.reason or 'dropped'}"
            verdicts[word.delivery_id] = _verdict(word, DeliveryStatus.FAILED, error, now)
    if not verdicts:
        return {}
    session.connection().execute(_SETTLE, list(verdicts.values()))
    sent = [unknown[d] for d, v in verdicts.items() if v["d_status"] == DeliveryStatus.SENT]
    count_sent(session, sent)
    return {"sent": len(sent), "failed": len(verdicts) - len(sent)}


def _verdict(word: Word, status: str, error: str | None, now: datetime) -> dict[str, Any]:
    sent_at = word.occurred_at if status == DeliveryStatus.SENT else None
    return {
        "d_id": word.delivery_id,
        "d_status": status,
        "d_sent_at": sent_at,
        "d_error": error,
        "d_now": now,
    }


def waiting_rows(
    session: Session,
    status: str,
    *,
    older_than: datetime | None = None,
    limit: int = 1000,
    newest_first: bool = False,
) -> list[Row[Any]]:
    """Deliveries in ``status`` (``unknown`` or ``failed``), oldest first (or newest first),
    with their address."""
    order: tuple[Any, ...] = (Delivery.updated_at, Delivery.id)
    if newest_first:
        order = (Delivery.updated_at.desc(), Delivery.id.desc())
    stmt = (
        select(
            Delivery.id,
            Subscriber.email,
            Delivery.message_key,
            Delivery.kind,
            Delivery.error,
            Delivery.updated_at,
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.status == status)
        .order_by(*order)
        .limit(limit)
    )
    if older_than is not None:
        stmt = stmt.where(Delivery.updated_at < older_than)
    return list(session.execute(stmt).all())


def counts_by_status(session: Session) -> dict[str, int]:
    """How many deliveries wait, are in flight, maybe went, or failed (the unsettled states)."""
    states = [
        DeliveryStatus.QUEUED,
        DeliveryStatus.SENDING,
        DeliveryStatus.UNKNOWN,
        DeliveryStatus.FAILED,
    ]
    found = dict(
        session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.status.in_(states))
            .group_by(Delivery.status)
        )
        .tuples()
        .all()
    )
    return {str(s): int(found.get(s, 0)) for s in states}


def settle_cutoff(now: datetime, minutes: int) -> datetime:
    """Unknown rows last touched before this have waited long enough for the provider's word."""
    return now - timedelta(minutes=minutes)


def resend(session: Session, ids: Sequence[int], now: datetime) -> list[int]:
    """Queue ``unknown`` or ``failed`` deliveries again (a person's decision); returns the ids.

    Rows in any other state are left alone: a sent email is never sent again this way.
    """
    if not ids:
        return []
    return list(
        session.scalars(
            update(Delivery)
            .where(
                one_of(Delivery.id, list(ids), session),
                Delivery.status.in_([DeliveryStatus.UNKNOWN, DeliveryStatus.FAILED]),
            )
            .values(
                status=DeliveryStatus.QUEUED,
                attempts=0,
                error=None,
                queued_at=now,
                updated_at=now,
            )
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        )
    )
