"""Progress and results of a broadcast, from the delivery and tracking tables.

Same figures and meanings as ``drip stats`` (drip.reports.stats, docs/tracking.md), read from the
same per-message rollup, :class:`~drip.models.MessageStats` for ``broadcast/<id>``, kept up to
date by the event ingest: ``delivered``, ``bounces``, ``complaints`` = distinct deliveries with
such an event; ``opens`` = distinct deliveries with a *human* open (a human click counts as one);
``clicks`` = distinct deliveries with a human click; ``unsubscribes`` = people whose last email
before they left was this one. ``sent`` is counted from the deliveries themselves (accepted by
the backend), ``conversions`` from the purchases credited to one of its deliveries
(``conversions.attributed_delivery_id``). Test sends have no delivery and no tracking, so they
appear nowhere here.

Both are frozen dataclasses; ``to_json()`` is what the admin API answers (its keys and their
order are part of the API).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from drip.broadcasts.message import message_key
from drip.models import Broadcast, Delivery, MessageStats

STATUSES = ("queued", "sending", "sent", "failed", "skipped", "unknown")
_CONVERSIONS = text(
    """
    SELECT c.currency, count(*), sum(c.amount_cents) FROM conversions c
    JOIN deliveries d ON d.id = c.attributed_delivery_id
    WHERE d.broadcast_id = :broadcast_id GROUP BY c.currency
    """
)


@dataclass(frozen=True)
class Progress:
    """How far a send is: its deliveries by status (every one of :data:`STATUSES`, in that
    order, 0 if none)."""

    total: int | None  # the audience counted when sending started; None before
    written: int  # delivery rows written so far
    by_status: Mapping[str, int]
    all_pages_written: bool  # every page of the audience has its delivery rows

    @property
    def done(self) -> int:
        """Deliveries no longer queued or sending."""
        return self.written - self.by_status["queued"] - self.by_status["sending"]

    @property
    def percent(self) -> float | None:
        """``done`` of ``total`` in percent, one decimal; None while ``total`` is unknown or 0."""
        return round(100 * self.done / self.total, 1) if self.total else None

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "written": self.written,
            "done": self.done,
            "percent": self.percent,
            "by_status": dict(self.by_status),
            "all_pages_written": self.all_pages_written,
        }


@dataclass(frozen=True)
class Results:
    """The results of a broadcast (see the module docstring for what each figure means)."""

    sent: int
    delivered: int
    opens: int
    clicks: int
    unsubscribes: int
    bounces: int
    complaints: int
    conversions: int
    revenue: Mapping[str, int]  # currency -> minor units

    @property
    def open_rate(self) -> float | None:
        """Opens per email sent, four decimals; None before anything was sent."""
        return round(self.opens / self.sent, 4) if self.sent else None

    @property
    def click_rate(self) -> float | None:
        return round(self.clicks / self.sent, 4) if self.sent else None

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "delivered": self.delivered,
            "opens": self.opens,
            "clicks": self.clicks,
            "unsubscribes": self.unsubscribes,
            "bounces": self.bounces,
            "complaints": self.complaints,
            "conversions": self.conversions,
            "revenue": dict(self.revenue),
            "open_rate": self.open_rate,
            "click_rate": self.click_rate,
        }


def progress(session: Session, broadcast: Broadcast) -> Progress:
    """Deliveries by status, and how far the send is."""
    counts = dict.fromkeys(STATUSES, 0)
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.broadcast_id == broadcast.id)
        .group_by(Delivery.status)
    ).tuples()
    for status, count in rows:
        counts[status] = int(count)
    return Progress(
        total=broadcast.total,
        written=sum(counts.values()),
        by_status=counts,
        all_pages_written=broadcast.queued_all_at is not None,
    )


def results(session: Session, broadcast_id: int) -> Results:
    """The results of broadcast ``broadcast_id`` (see the module docstring for what each figure
    means); all zeros for an unknown id."""
    sent = session.scalar(
        select(func.count()).where(Delivery.broadcast_id == broadcast_id, Delivery.status == "sent")
    )
    rollup = session.get(MessageStats, message_key(broadcast_id))

    def counter(name: str) -> int:
        return int(getattr(rollup, name) or 0) if rollup is not None else 0

    revenue: dict[str, int] = {}
    conversions = 0
    for currency, count, amount in session.execute(_CONVERSIONS, {"broadcast_id": broadcast_id}):
        conversions += int(count)
        revenue[currency] = int(amount or 0)
    return Results(
        sent=int(sent or 0),
        delivered=counter("delivered"),
        opens=counter("opened"),
        clicks=counter("clicked"),
        unsubscribes=counter("unsubscribed"),
        bounces=counter("bounced"),
        complaints=counter("complained"),
        conversions=conversions,
        revenue=revenue,
    )
