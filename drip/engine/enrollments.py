"""Putting subscribers into sequences and computing when their next lesson is due."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from drip.content.types import Lesson, Sequence
from drip.models import Enrollment, EnrollmentStatus, Subscriber
from drip.schedule import SendWindow, first_due, next_due, resolve_zone
from drip.store import one_of


def lesson_window(sequence: Sequence, lesson: Lesson | None) -> SendWindow:
    """The sequence's send window, with the lesson's own hour and minute if it sets them."""
    if lesson is None or (lesson.send_hour is None and lesson.send_minute is None):
        return sequence.window
    return replace(
        sequence.window,
        hour=lesson.send_hour if lesson.send_hour is not None else sequence.window.hour,
        minute=lesson.send_minute if lesson.send_minute is not None else 0,
    )


def due_after_send(
    sequence: Sequence, next_position: int, sent_at: datetime, zone: str | None, fallback: str
) -> datetime:
    """When lesson ``next_position`` is due, the previous one having gone out at ``sent_at``."""
    window = lesson_window(sequence, sequence.lesson_at(next_position))
    return next_due(sent_at, resolve_zone(zone, fallback), window)


def first_lesson_due(
    sequence: Sequence,
    now: datetime,
    zone: str | None,
    fallback: str,
    *,
    immediately: bool | None = None,
) -> datetime:
    window = lesson_window(sequence, sequence.lesson_at(1))
    at_once = sequence.first_lesson_immediately if immediately is None else immediately
    return first_due(now, resolve_zone(zone, fallback), window, immediately=at_once)


def enroll(
    session: Session, subscriber: Subscriber, sequence: Sequence, now: datetime, fallback_tz: str
) -> Enrollment:
    """Enroll ``subscriber`` (idempotent: an existing enrollment is returned unchanged)."""
    existing = session.scalar(
        select(Enrollment).where(
            Enrollment.subscriber_id == subscriber.id, Enrollment.sequence == sequence.slug
        )
    )
    if existing is not None:
        return existing
    enrollment = Enrollment(
        subscriber_id=subscriber.id,
        sequence=sequence.slug,
        position=0,
        status=EnrollmentStatus.ACTIVE,
        next_send_at=first_lesson_due(sequence, now, subscriber.time_zone, fallback_tz),
        enrolled_at=now,
    )
    session.add(enrollment)
    session.flush()
    return enrollment


def stop_enrollments_of(session: Session, subscriber_ids: Iterable[int], reason: str) -> None:
    """Stop every active enrollment of these subscribers, in one statement (ids in order)."""
    ids = sorted(set(subscriber_ids))
    if not ids:
        return
    session.execute(
        update(Enrollment)
        .where(
            one_of(Enrollment.subscriber_id, ids, session),
            Enrollment.status == EnrollmentStatus.ACTIVE,
        )
        .values(status=EnrollmentStatus.STOPPED, stop_reason=reason, next_send_at=None)
        .execution_options(synchronize_session=False)
    )


def stop_enrollments(
    session: Session, subscriber_id: int, reason: str, *, sequence: str | None = None
) -> int:
    """Stop the subscriber's active enrollments (all, or one sequence's); returns how many."""
    stmt = (
        update(Enrollment)
        .where(
            Enrollment.subscriber_id == subscriber_id,
            Enrollment.status == EnrollmentStatus.ACTIVE,
        )
        .values(status=EnrollmentStatus.STOPPED, stop_reason=reason, next_send_at=None)
    )
    if sequence is not None:
        stmt = stmt.where(Enrollment.sequence == sequence)
    result = session.execute(stmt.execution_options(synchronize_session=False))
    return cast(CursorResult[Any], result).rowcount or 0
