"""The rollups behind the stats: per-delivery firsts and per-message counters.

Two small tables (see :class:`~drip.models.DeliveryEngagement` and
:class:`~drip.models.MessageStats`) are kept up to date as events are stored, so that
``drip stats`` reads a few hundred rows whatever the number of events:

- :func:`count_sent` adds to ``message_stats.sent``; the send path calls it in the transaction
  that marks deliveries sent.
- :func:`record_firsts` sets a delivery's ``opened_at`` (say) only if it was still NULL, in one
  ``INSERT ... ON CONFLICT DO UPDATE ... WHERE col IS NULL RETURNING``: the rows returned are
  exactly the deliveries for which this was the first such event, and only those add 1 to the
  message's counter. The row lock of the upsert makes this exact with concurrent ingests.
- :func:`rebuild` recomputes both tables from ``deliveries`` and ``tracking_events`` (after a
  restore, or to check the counters); run it while no ingest is running.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from drip.models import Delivery, DeliveryStatus, TrackingEvent
from drip.store import one_of, store_for

# Engagement column -> the message_stats counter it feeds.
METRICS = {
    "delivered_at": "delivered",
    "opened_at": "opened",
    "clicked_at": "clicked",
    "bounced_at": "bounced",
    "complained_at": "complained",
    "unsubscribed_at": "unsubscribed",
}
COUNTERS = ("sent", *METRICS.values())


@dataclass(frozen=True)
class First:
    """A candidate first: ``column`` of ``delivery_id`` happened at ``at``."""

    delivery_id: int
    message_key: str
    subscriber_id: int
    column: str  # a key of METRICS
    at: datetime


def add_counts(session: Session, deltas: Mapping[str, Mapping[str, int]]) -> None:
    """Add ``deltas[message_key][counter]`` to the counters (rows created as needed)."""
    rows = []
    for key in sorted(deltas):  # a fixed lock order: two ingests never deadlock on counters
        counts = deltas[key]
        if any(counts.values()):
            rows.append({"message_key": key, **{c: int(counts.get(c, 0)) for c in COUNTERS}})
    if rows:
        store_for(session).add_counts(session, rows)


def count_sent(session: Session, message_keys: Iterable[str]) -> None:
    """One more delivery of each of ``message_keys`` (repeats allowed) went out."""
    counts = Counter(message_keys)
    if counts:
        add_counts(session, {key: {"sent": n} for key, n in counts.items()})


def record_firsts(session: Session, firsts: Iterable[First]) -> dict[str, Counter[str]]:
    """Store the firsts that are new; returns the counter increments they make.

    The caller adds them with :func:`add_counts`, last in its transaction: the counter rows are
    shared by every batch, so they are held for as short a time as possible.
    """
    by_column: dict[str, dict[int, First]] = defaultdict(dict)
    for first in firsts:
        seen = by_column[first.column].get(first.delivery_id)
        if seen is None or first.at < seen.at:
            by_column[first.column][first.delivery_id] = first
    deltas: dict[str, Counter[str]] = defaultdict(Counter)
    if not by_column:
        return deltas
    for column, key in store_for(session).record_firsts(session, by_column):
        deltas[key][METRICS[column]] += 1
    return deltas


def credit_unsubscribe(session: Session, subscriber_id: int, at: datetime) -> int | None:
    """Credit an unsubscribe to the last email sent to the subscriber at or before ``at``.

    Called by :func:`drip.subscribers.preferences.unsubscribe`, the one path every unsubscribe
    takes (our link, the List-Unsubscribe POST, the admin, a provider's event): the link names
    the person, not the email, so the last email before they left is the one credited. Stores an
    ``unsubscribed`` event (provider "drip", what :func:`rebuild` counts) and bumps the email's
    counter once per email. Returns the credited delivery id (None: we never mailed them).
    """
    return credit_unsubscribes(session, [subscriber_id], at).get(subscriber_id)


def credit_unsubscribes(
    session: Session,
    subscriber_ids: Iterable[int],
    at: datetime,
    firsts: list[First] | None = None,
) -> dict[int, int]:
    """:func:`credit_unsubscribe` for many subscribers at once, in a few statements.

    Returns subscriber id -> credited delivery id, for those we have mailed. With ``firsts``,
    the credited emails' ``unsubscribed_at`` firsts are appended there for the caller to record
    with its own (an event batch: one statement, one lock order) instead of recorded here.
    """
    ids = sorted(set(subscriber_ids))
    if not ids:
        return {}
    rank = (
        func.row_number()
        .over(
            partition_by=Delivery.subscriber_id,
            order_by=(Delivery.sent_at.desc(), Delivery.id.desc()),
        )
        .label("rank")
    )
    ranked = (
        select(Delivery.id, Delivery.subscriber_id, Delivery.message_key, rank)
        .where(
            one_of(Delivery.subscriber_id, ids, session),
            Delivery.status == DeliveryStatus.SENT,
            Delivery.sent_at <= at,
        )
        .subquery()
    )
    last = session.execute(
        select(ranked.c.id, ranked.c.subscriber_id, ranked.c.message_key)
        .where(ranked.c.rank == 1)
        .order_by(ranked.c.subscriber_id)
    ).all()
    if not last:
        return {}
    session.execute(
        store_for(session).insert_ignore(TrackingEvent, ["provider_event_id"]),
        [
            {
                "type": "unsubscribed",
                "occurred_at": at,
                "received_at": at,
                "delivery_id": row.id,
                "subscriber_id": row.subscriber_id,
                "provider": "drip",
                "provider_event_id": f"drip:unsubscribe:{row.subscriber_id}:{at.timestamp():.6f}",
                "machine": False,
            }
            for row in last
        ],
    )
    credited = [
        First(row.id, row.message_key, row.subscriber_id, "unsubscribed_at", at) for row in last
    ]
    if firsts is not None:
        firsts.extend(credited)
    else:
        add_counts(session, record_firsts(session, credited))
    return {int(row.subscriber_id): int(row.id) for row in last}


_REBUILD = (
    "DELETE FROM delivery_engagement",
    """
    INSERT INTO delivery_engagement (delivery_id, message_key, subscriber_id, delivered_at,
        opened_at, clicked_at, bounced_at, complained_at, unsubscribed_at)
    SELECT d.id, d.message_key, d.subscriber_id,
        min(CASE WHEN e.type = 'delivered' THEN e.occurred_at END),
        min(CASE WHEN e.type IN ('opened', 'clicked') AND NOT e.machine THEN e.occurred_at END),
        min(CASE WHEN e.type = 'clicked' AND NOT e.machine THEN e.occurred_at END),
        min(CASE WHEN e.type = 'bounced' THEN e.occurred_at END),
        min(CASE WHEN e.type = 'complained' THEN e.occurred_at END),
        min(CASE WHEN e.type = 'unsubscribed' AND e.provider = 'drip' THEN e.occurred_at END)
    FROM tracking_events e JOIN deliveries d ON d.id = e.delivery_id
    WHERE e.type IN ('delivered', 'opened', 'clicked', 'bounced', 'complained', 'unsubscribed')
    GROUP BY d.id, d.message_key, d.subscriber_id
    """,
    "DELETE FROM message_stats",
    """
    INSERT INTO message_stats (message_key, sent, delivered, bounced, opened, clicked, complained,
        unsubscribed)
    SELECT message_key, sum(sent), sum(delivered), sum(bounced), sum(opened), sum(clicked),
        sum(complained), sum(unsubscribed)
    FROM (
        SELECT message_key, count(*) AS sent, 0 AS delivered, 0 AS bounced, 0 AS opened,
            0 AS clicked, 0 AS complained, 0 AS unsubscribed
        FROM deliveries WHERE status = 'sent' GROUP BY message_key
        UNION ALL
        SELECT message_key, 0, count(delivered_at), count(bounced_at), count(opened_at),
            count(clicked_at), count(complained_at), count(unsubscribed_at)
        FROM delivery_engagement GROUP BY message_key
    ) AS parts
    GROUP BY message_key
    """,
)


def rebuild(session: Session) -> None:
    """Recompute both rollup tables from the raw rows (same results as the incremental path)."""
    for statement in _REBUILD:
        session.execute(text(statement))
