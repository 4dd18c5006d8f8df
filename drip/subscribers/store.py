"""Small shared pieces: finding subscribers, tags, consent rows, resuming enrollments."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from drip.content.types import Sequence
from drip.engine.enrollments import due_after_send
from drip.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    Tag,
)
from drip.store import store_for

# Enrollments stopped for these reasons start again when the subscriber comes back.
RESUMABLE = ("unsubscribed", "preferences")


def find_by_email(session: Session, email: str) -> Subscriber | None:
    """The subscriber with this (already normalized) address, if any."""
    return session.scalar(select(Subscriber).where(Subscriber.email == email))


def ensure_tags(session: Session, names: Iterable[str]) -> list[Tag]:
    """The :class:`Tag` rows for ``names``, created if missing (safe under concurrent signups)."""
    wanted = list(dict.fromkeys(n for n in names if n))
    if not wanted:
        return []
    stmt = store_for(session).insert_ignore(Tag, ["name"])
    session.execute(stmt.values([{"name": n} for n in wanted]))
    found = {t.name: t for t in session.scalars(select(Tag).where(Tag.name.in_(wanted)))}
    return [found[n] for n in wanted]


def add_tags(session: Session, subscriber: Subscriber, names: Iterable[str]) -> list[str]:
    """Give ``subscriber`` the tags ``names``; returns those they did not have before."""
    have = {t.name for t in subscriber.tags}
    added = ensure_tags(session, [n for n in names if n not in have])
    subscriber.tags.extend(added)
    return [t.name for t in added]


def remove_tags(subscriber: Subscriber, names: Iterable[str]) -> None:
    drop = set(names)
    subscriber.tags = [t for t in subscriber.tags if t.name not in drop]


def set_tags(session: Session, subscriber: Subscriber, names: Iterable[str]) -> None:
    subscriber.tags = ensure_tags(session, names)


def resume_enrollments(
    session: Session,
    subscriber: Subscriber,
    library: dict[str, Sequence],
    now: datetime,
    fallback_tz: str,
) -> int:
    """Restart enrollments stopped by an unsubscribe or a preference; returns how many.

    The next lesson is due at the next send hour (never in a burst right away). A lesson that
    was due while they were out and skipped for it is that next lesson: the enrollment steps
    back one position, and the tick queues the skipped delivery again.
    """
    rows = list(
        session.scalars(
            select(Enrollment).where(
                Enrollment.subscriber_id == subscriber.id,
                Enrollment.status == EnrollmentStatus.STOPPED,
                Enrollment.stop_reason.in_(RESUMABLE),
            )
        )
    )
    skipped = set(
        session.scalars(
            select(Delivery.message_key).where(
                Delivery.subscriber_id == subscriber.id,
                Delivery.kind == DeliveryKind.LESSON,
                Delivery.status == DeliveryStatus.SKIPPED,
            )
        )
    )
    resumed = 0
    for enrollment in rows:
        sequence = library.get(enrollment.sequence)
        if sequence is None:
            continue
        if f"{enrollment.sequence}/{enrollment.position}" in skipped:
            enrollment.position -= 1
        if enrollment.position >= sequence.length:
            continue
        enrollment.status = EnrollmentStatus.ACTIVE
        enrollment.stop_reason = None
        enrollment.next_send_at = due_after_send(
            sequence, enrollment.position + 1, now, subscriber.time_zone, fallback_tz
        )
        resumed += 1
    return resumed
