"""Match events to the delivery and subscriber they are about, in a few queries per batch.

In order, for each event (the first rule that matches wins):

1. ``delivery_id`` claimed by the source (our signed tokens; SendGrid's ``custom_args``) and
   still in the database;
2. the provider's message id plus the address: SendGrid's ``X-Message-Id`` names one API request
   of up to 1000 recipients, so the address picks the recipient among them;
3. the address alone (async bounces and spam reports often carry neither): the subscriber, and
   the last email sent to them at or before the event, which is the one it is about.

An event that matches nothing is stored all the same, with no delivery (and no subscriber).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from drip.models import Delivery, DeliveryStatus, Subscriber
from drip.store import one_of
from drip.suppress import normalize_email

if TYPE_CHECKING:
    from drip.ingest.events import Event

_CHUNK = 5000


def _set(event: Event, row: Row[Any]) -> None:
    event.delivery_id = row.id
    event.subscriber_id = row.subscriber_id
    event.message_key = row.message_key
    event.sent_at = row.sent_at


def _chunks(values: Sequence[Any]) -> list[list[Any]]:
    items = list(values)
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def match_events(session: Session, events: list[Event]) -> None:
    """Fill in ``delivery_id``, ``subscriber_id``, ``message_key`` and ``sent_at``."""
    _by_delivery_id(session, events)
    pending = [e for e in events if e.delivery_id is None and e.email]
    for event in pending:
        event.email = normalize_email(event.email or "")
    _by_message_id(session, [e for e in pending if e.message_id])
    _by_address(session, [e for e in pending if e.delivery_id is None])


def _by_delivery_id(session: Session, events: list[Event]) -> None:
    wanted = sorted({e.delivery_id for e in events if e.delivery_id is not None})
    rows: dict[int, Row[Any]] = {}
    for chunk in _chunks(wanted):
        for found in session.execute(
            select(
                Delivery.id, Delivery.subscriber_id, Delivery.message_key, Delivery.sent_at
            ).where(one_of(Delivery.id, chunk, session))
        ).all():  # one fetchall: iterating the result fetches row by row
            rows[found.id] = found
    for event in events:
        if event.delivery_id is None:
            continue
        row = rows.get(event.delivery_id)
        if row is None:  # deleted since, or a stale id: try the other rules
            event.delivery_id = None
        else:
            _set(event, row)


def _by_message_id(session: Session, events: list[Event]) -> None:
    if not events:
        return
    ids = sorted({e.message_id for e in events if e.message_id})
    emails = sorted({e.email for e in events if e.email})
    found: dict[tuple[str, str], Row[Any]] = {}
    stmt = (
        select(
            Delivery.id,
            Delivery.subscriber_id,
            Delivery.message_key,
            Delivery.sent_at,
            Delivery.provider_message_id,
            Subscriber.email,
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(
            Delivery.provider_message_id.is_not(None),  # the partial index's condition
            one_of(Delivery.provider_message_id, ids, session),
            one_of(Subscriber.email, emails, session),
        )
    )
    for hit in session.execute(stmt).all():
        found[(hit.provider_message_id, hit.email)] = hit
    for event in events:
        row = found.get((event.message_id or "", event.email or ""))
        if row is not None:
            _set(event, row)


def _by_address(session: Session, events: list[Event]) -> None:
    if not events:
        return
    emails = sorted({e.email for e in events if e.email})
    subscriber_ids: dict[str, int] = {}
    for chunk in _chunks(emails):
        for sub in session.execute(
            select(Subscriber.id, Subscriber.email).where(one_of(Subscriber.email, chunk, session))
        ).all():
            subscriber_ids[sub.email] = sub.id
    sent: dict[int, list[Row[Any]]] = defaultdict(list)
    for chunk in _chunks(sorted(set(subscriber_ids.values()))):
        for row in session.execute(
            select(
                Delivery.id, Delivery.subscriber_id, Delivery.message_key, Delivery.sent_at
            ).where(
                one_of(Delivery.subscriber_id, chunk, session),
                Delivery.status == DeliveryStatus.SENT,
                Delivery.sent_at.is_not(None),
            )
        ).all():
            sent[row.subscriber_id].append(row)
    for event in events:
        subscriber_id = subscriber_ids.get(event.email or "")
        if subscriber_id is None:
            continue
        event.subscriber_id = subscriber_id
        last = _last_before(sent[subscriber_id], event.occurred_at)
        if last is not None:
            _set(event, last)


def _last_before(rows: list[Row[Any]], moment: datetime) -> Row[Any] | None:
    earlier = [r for r in rows if r.sent_at <= moment]
    return max(earlier, key=lambda r: (r.sent_at, r.id)) if earlier else None
