"""GDPR: a copy of everything stored about a subscriber, and erasure.

Erasure removes the personal data and keeps the rows that aggregate statistics count
(deliveries, tracking events, conversions, enrollments), stripped of anything personal. The
address survives only as a salted hash on the suppression list (reason ``erased``), so a later
signup or import of the same address is refused instead of silently resubscribing the person.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from drip.engine.enrollments import stop_enrollments
from drip.models import (
    Consent,
    Conversion,
    Delivery,
    Enrollment,
    Subscriber,
    SubscriberStatus,
    TrackingEvent,
)
from drip.suppress import is_suppressed, suppress

log = logging.getLogger(__name__)
EXPORT_FORMAT = "drip-subscriber-export/1"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def subscriber_summary(subscriber: Subscriber) -> dict[str, Any]:
    """The subscriber's own fields, as the admin API and the export show them."""
    return {
        "id": subscriber.id,
        "email": subscriber.email,
        "first_name": subscriber.first_name,
        "time_zone": subscriber.time_zone,
        "status": subscriber.status,
        "source": subscriber.source,
        "course_emails": subscriber.course_emails,
        "newsletter": subscriber.newsletter,
        "tags": sorted(t.name for t in subscriber.tags),
        "created_at": _iso(subscriber.created_at),
        "confirmed_at": _iso(subscriber.confirmed_at),
        "unsubscribed_at": _iso(subscriber.unsubscribed_at),
        "converted_at": _iso(subscriber.converted_at),
    }


def export_subscriber(session: Session, subscriber: Subscriber, now: datetime) -> dict[str, Any]:
    """Everything stored about ``subscriber`` (GDPR Art. 15 and 20), as JSON-ready data."""
    sid = subscriber.id
    consents = session.scalars(select(Consent).where(Consent.subscriber_id == sid).order_by("id"))
    enrollments = session.scalars(
        select(Enrollment).where(Enrollment.subscriber_id == sid).order_by("id")
    )
    deliveries = session.scalars(
        select(Delivery).where(Delivery.subscriber_id == sid).order_by("id")
    )
    events = session.scalars(
        select(TrackingEvent).where(TrackingEvent.subscriber_id == sid).order_by("id")
    )
    conversions = session.scalars(
        select(Conversion).where(Conversion.subscriber_id == sid).order_by("id")
    )
    return {
        "format": EXPORT_FORMAT,
        "exported_at": now.isoformat(),
        "subscriber": subscriber_summary(subscriber),
        "suppressed": bool(subscriber.email) and is_suppressed(session, subscriber.email or ""),
        "consents": [
            {
                "action": c.action,
                "at": _iso(c.created_at),
                "source": c.source,
                "ip": c.ip,
                "user_agent": c.user_agent,
                "text": c.text,
            }
            for c in consents
        ],
        "enrollments": [
            {
                "sequence": e.sequence,
                "entry": e.entry,
                "trigger": e.trigger,
                "status": e.status,
                "position": e.position,
                "stop_reason": e.stop_reason,
                "enrolled_at": _iso(e.enrolled_at),
                "next_send_at": _iso(e.next_send_at),
                "last_sent_at": _iso(e.last_sent_at),
                "completed_at": _iso(e.completed_at),
            }
            for e in enrollments
        ],
        "emails": [
            {
                "message": d.message_key,
                "kind": d.kind,
                "status": d.status,
                "created_at": _iso(d.created_at),
                "sent_at": _iso(d.sent_at),
            }
            for d in deliveries
        ],
        "events": [
            {
                "type": ev.type,
                "at": _iso(ev.occurred_at),
                "url": ev.url,
                "machine": ev.machine,
                "ip": ev.ip,
                "user_agent": ev.user_agent,
            }
            for ev in events
        ],
        "purchases": [
            {
                "product": cv.product,
                "amount_cents": cv.amount_cents,
                "currency": cv.currency,
                "at": _iso(cv.occurred_at),
            }
            for cv in conversions
        ],
    }


def erase_subscriber(session: Session, subscriber: Subscriber, now: datetime) -> bool:
    """Erase ``subscriber``'s personal data (GDPR Art. 17); False if already erased."""
    if subscriber.status == SubscriberStatus.ERASED and subscriber.email is None:
        return False
    sid = subscriber.id
    if subscriber.email:
        suppress(session, subscriber.email, "erased")
    stop_enrollments(session, sid, "erased")
    subscriber.email = None
    subscriber.first_name = ""
    subscriber.time_zone = None
    subscriber.status = SubscriberStatus.ERASED
    subscriber.unsubscribed_at = subscriber.unsubscribed_at or now
    subscriber.tags = []
    session.flush()
    opts = {"synchronize_session": False}
    session.execute(
        update(Consent)
        .where(Consent.subscriber_id == sid)
        .values(ip=None, user_agent=None, text="")
        .execution_options(**opts)
    )
    session.execute(
        update(TrackingEvent)
        .where(TrackingEvent.subscriber_id == sid)
        .values(ip=None, user_agent=None, raw=None, reason=None)
        .execution_options(**opts)
    )
    # Provider error texts often quote the address ("550 <ana@...> unknown").
    session.execute(
        update(Delivery)
        .where(Delivery.subscriber_id == sid, Delivery.error.is_not(None))
        .values(error="(erased)")
        .execution_options(**opts)
    )
    session.execute(
        update(Conversion)
        .where(Conversion.subscriber_id == sid)
        .values(raw=None)
        .execution_options(**opts)
    )
    log.info("subscriber %s erased", sid)
    return True
