"""Progress and results of a broadcast, from the delivery and tracking tables.

Same figures and meanings as ``drip stats`` (drip.reports.stats, docs/tracking.md), read from the
same
per-message rollup, :class:`~drip.models.MessageStats` for ``broadcast/<id>``, kept up to date
by the event ingest: ``delivered``, ``bounces``, ``complaints`` = distinct deliveries with such an
event; ``opens`` = distinct deliveries with a *human* open (a human click counts as one);
``clicks`` = distinct deliveries with a human click; ``unsubscribes`` = people whose last email
before they left was this one. ``sent`` is counted from the deliveries themselves (accepted by
the backend), ``conversions`` from the purchases credited to one of its deliveries
(``conversions.attributed_delivery_id``). Test sends have no delivery and no tracking, so they
appear nowhere here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from drip.broadcasts.message import message_key
from drip.broadcasts.segments import parse_segment
from drip.models import Broadcast, BroadcastEvent, BroadcastZone, Delivery, MessageStats

STATUSES = ("queued", "sending", "sent", "failed", "skipped", "unknown")
_CONVERSIONS = text(
    """
    SELECT c.currency, count(*), sum(c.amount_cents) FROM conversions c
    JOIN deliveries d ON d.id = c.attributed_delivery_id
    WHERE d.broadcast_id = :broadcast_id GROUP BY c.currency
    """
)


def progress(session: Session, broadcast: Broadcast) -> dict[str, Any]:
    """Deliveries by status, and how far the send is (``done`` = no longer queued/sending)."""
    counts = dict.fromkeys(STATUSES, 0)
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.broadcast_id == broadcast.id)
        .group_by(Delivery.status)
    ).tuples()
    for status, count in rows:
        counts[status] = int(count)
    written = sum(counts.values())
    done = written - counts["queued"] - counts["sending"]
    total = broadcast.total if broadcast.total is not None else None
    return {
        "total": total,
        "written": written,
        "done": done,
        "percent": round(100 * done / total, 1) if total else None,
        "by_status": counts,
        "all_pages_written": broadcast.queued_all_at is not None,
    }


def results(session: Session, broadcast: Broadcast) -> dict[str, Any]:
    """The results of a broadcast (see the module docstring for what each figure means)."""
    sent = int(
        session.scalar(
            select(func.count()).where(
                Delivery.broadcast_id == broadcast.id, Delivery.status == "sent"
            )
        )
        or 0
    )
    rollup = session.get(MessageStats, message_key(broadcast.id))

    def counter(name: str) -> int:
        return int(getattr(rollup, name) or 0) if rollup is not None else 0

    revenue: dict[str, int] = {}
    conversions = 0
    for currency, count, amount in session.execute(_CONVERSIONS, {"broadcast_id": broadcast.id}):
        conversions += int(count)
        revenue[currency] = int(amount or 0)
    opens, clicks = counter("opened"), counter("clicked")
    return {
        "sent": sent,
        "delivered": counter("delivered"),
        "opens": opens,
        "clicks": clicks,
        "unsubscribes": counter("unsubscribed"),
        "bounces": counter("bounced"),
        "complaints": counter("complained"),
        "conversions": conversions,
        "revenue": revenue,
        "open_rate": round(opens / sent, 4) if sent else None,
        "click_rate": round(clicks / sent, 4) if sent else None,
    }


def summary(broadcast: Broadcast) -> dict[str, Any]:
    """The broadcast's own fields, JSON-ready (for lists)."""

    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": broadcast.id,
        "subject": broadcast.subject,
        "preheader": broadcast.preheader,
        "status": broadcast.status,
        "segment": broadcast.segment,
        "segment_text": parse_segment(broadcast.segment).describe(),
        "scheduled_at": iso(broadcast.scheduled_at),
        "local_time": broadcast.local_time,
        "local_wall_time": broadcast.local_wall_time,
        "past_zones": broadcast.past_zones,
        "quiet_hours": broadcast.quiet_hours,
        "created_by": broadcast.created_by,
        "created_at": iso(broadcast.created_at),
        "started_at": iso(broadcast.started_at),
        "finished_at": iso(broadcast.finished_at),
        "total": broadcast.total,
    }


def detail(session: Session, broadcast: Broadcast) -> dict[str, Any]:
    """Everything ``show`` displays: fields, body, progress, zone groups, results, history."""
    zones = session.scalars(
        select(BroadcastZone)
        .where(BroadcastZone.broadcast_id == broadcast.id)
        .order_by(BroadcastZone.send_at)
    )
    events = session.scalars(
        select(BroadcastEvent)
        .where(BroadcastEvent.broadcast_id == broadcast.id)
        .order_by(BroadcastEvent.at, BroadcastEvent.id)
    )
    return {
        **summary(broadcast),
        "body_md": broadcast.body_md,
        "progress": progress(session, broadcast),
        "zone_groups": [
            {
                "send_at": z.send_at.isoformat(),
                "zones": z.zones,
                "status": z.status,
                "checkpoint": z.last_subscriber_id,
            }
            for z in zones
        ],
        "results": results(session, broadcast),
        "history": [
            {
                "at": ev.at.isoformat(),
                "actor": ev.actor,
                "action": ev.action,
                "from": ev.from_status,
                "to": ev.to_status,
                "note": ev.note,
            }
            for ev in events
        ],
    }
