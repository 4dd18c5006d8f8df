"""Listing and counting subscribers for the admin API and the dashboard: filters and keyset
pagination by id, counts per status, signups and confirmations per day."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, exists, func, or_, select
from sqlalchemy.orm import Session

from drip.errors import InvalidInput
from drip.models import (
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    SubscriberStatus,
    SubscriberTag,
    Suppression,
    Tag,
)
from drip.store import store_for

PAGE_MAX = 200


@dataclass(frozen=True)
class Page:
    items: list[Subscriber]
    next_after: int | None  # pass as ``after`` for the next page; None on the last page
    previous_before: int | None = None  # pass as ``before`` for the page before; None on the first


# Where a subscriber stands in the course (any subscriber status; see drip.models.Enrollment).
COURSE_STATES = {
    "not_started": "never entered the course",
    "in_course": "taking the course",
    "completed_course": "finished the course",
    "stopped": "course stopped (unsubscribed, preferences, erased...)",
    "in_upsell": "in a Runners Lab sequence",
    "converted": "bought The Runners Lab",
}


def _enrolled(sequences: Sequence[str], status: str) -> ColumnElement[bool]:
    return exists().where(
        Enrollment.subscriber_id == Subscriber.id,
        Enrollment.sequence.in_(list(sequences)),
        Enrollment.status == status,
    )


def course_state_filter(state: str, course: str, upsells: Sequence[str]) -> ColumnElement[bool]:
    """The ``WHERE`` for one of :data:`COURSE_STATES` (a broadcast segment's states too, see
    drip.broadcasts.segments); :class:`InvalidInput` on ``state`` otherwise. Each is an indexed
    probe per subscriber (enrollments are unique per subscriber and sequence)."""
    if state == "not_started":
        return ~exists().where(
            Enrollment.subscriber_id == Subscriber.id, Enrollment.sequence == course
        )
    if state == "in_course":
        return _enrolled([course], EnrollmentStatus.ACTIVE)
    if state == "completed_course":
        return _enrolled([course], EnrollmentStatus.COMPLETED)
    if state == "stopped":
        return _enrolled([course], EnrollmentStatus.STOPPED)
    if state == "in_upsell":
        return _enrolled(upsells, EnrollmentStatus.ACTIVE)
    if state == "converted":
        return Subscriber.converted_at.is_not(None)
    raise InvalidInput("state", f"unknown course state (known: {', '.join(COURSE_STATES)})")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_subscribers(
    session: Session,
    *,
    status: str | None = None,
    tag: str | None = None,
    q: str | None = None,
    state: str | None = None,
    course: str = "",
    upsells: Sequence[str] = (),
    after: int = 0,
    before: int | None = None,
    limit: int = 50,
) -> Page:
    """Subscribers with ``id > after`` (or, given ``before``, the last ones with ``id < before``)
    in id order, filtered by status, tag, course state (see :func:`course_state_filter`;
    ``course`` and ``upsells`` name the sequences) and a search text (case-insensitive substring
    of the address or the first name). Keyset pages both ways: no OFFSET to scan past."""
    limit = max(1, min(limit, PAGE_MAX))
    conditions = _conditions(status, tag, q, state, course, upsells)
    backwards = before is not None
    edge = Subscriber.id < before if backwards else Subscriber.id > after
    order = Subscriber.id.desc() if backwards else Subscriber.id
    page = select(Subscriber).where(*conditions, edge).order_by(order).limit(limit + 1)
    rows = list(session.scalars(page))
    more = len(rows) > limit  # past the far end of this page, in the direction read
    items = rows[:limit][::-1] if backwards else rows[:limit]
    if backwards:
        earlier = more
        later = bool(items) and _any(session, conditions, Subscriber.id > items[-1].id)
    else:
        later = more
        earlier = bool(items) and after > 0 and _any(session, conditions, Subscriber.id < after)
    return Page(
        items,
        next_after=items[-1].id if later else None,
        previous_before=items[0].id if earlier else None,
    )


def _any(
    session: Session, conditions: list[ColumnElement[bool]], edge: ColumnElement[bool]
) -> bool:
    """Whether any subscriber matches ``conditions`` past ``edge`` (one row at most is read)."""
    found = session.scalar(select(Subscriber.id).where(*conditions, edge).limit(1))
    return found is not None


def _conditions(
    status: str | None,
    tag: str | None,
    q: str | None,
    state: str | None,
    course: str,
    upsells: Sequence[str],
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if status:
        conditions.append(Subscriber.status == status)
    if state:
        conditions.append(course_state_filter(state, course, upsells))
    if tag:
        conditions.append(
            Subscriber.id.in_(
                select(SubscriberTag.subscriber_id)
                .join(Tag, Tag.id == SubscriberTag.tag_id)
                .where(Tag.name == tag.strip().lower())
            )
        )
    if q:
        pattern = f"%{_like_escape(q.strip().lower())}%"
        conditions.append(
            or_(
                Subscriber.email.like(pattern, escape="\\"),
                Subscriber.first_name.ilike(pattern, escape="\\"),
            )
        )
    return conditions


def status_counts(session: Session) -> dict[str, int]:
    """Subscribers per status (every status present, 0 if none), plus ``suppressed``: the
    addresses on the suppression list. One grouped count: callers at scale cache it."""
    counts = dict.fromkeys((s.value for s in SubscriberStatus), 0)
    rows = session.execute(
        select(Subscriber.status, func.count()).group_by(Subscriber.status)
    ).tuples()
    for status, count in rows:
        counts[status] = int(count)
    counts["suppressed"] = int(session.scalar(select(func.count()).select_from(Suppression)) or 0)
    return counts


@dataclass(frozen=True)
class DayCount:
    day: date
    signups: int
    confirmations: int


_UTC = ZoneInfo("UTC")


def _per_day(session: Session, column: Any, since: datetime, zone: ZoneInfo) -> dict[date, int]:
    """Rows with ``column >= since`` per calendar day in ``zone``."""
    return store_for(session).count_per_day(session, column, since, zone)


def daily_growth(
    session: Session, since: datetime, until: datetime, zone: ZoneInfo = _UTC
) -> list[DayCount]:
    """Signups (``created_at``) and confirmations (``confirmed_at``) per calendar day in
    ``zone``, every day from ``since``'s to ``until``'s included, zeros where none. Both columns
    are indexed, so the cost is the rows of the window, not the table."""
    signups = _per_day(session, Subscriber.created_at, since, zone)
    confirmations = _per_day(session, Subscriber.confirmed_at, since, zone)
    first, last = since.astimezone(zone).date(), until.astimezone(zone).date()
    return [
        DayCount(d, signups.get(d, 0), confirmations.get(d, 0))
        for d in (first + timedelta(days=n) for n in range((last - first).days + 1))
    ]


def find_subscriber(session: Session, subscriber_id: int) -> Subscriber | None:
    """The subscriber with this id, or None (an erased one too: erasing keeps the row)."""
    return session.get(Subscriber, subscriber_id)


def tag_names(session: Session, limit: int) -> list[str]:
    """The first ``limit`` tag names in alphabetical order (for a filter's choices)."""
    return list(session.scalars(select(Tag.name).order_by(Tag.name).limit(limit)))


@dataclass(frozen=True)
class FormCount:
    """Subscribers who came through one signup form, and how many of them confirmed."""

    signups: int
    confirmations: int


def form_counts(session: Session) -> dict[str | None, FormCount]:
    """Per signup form slug (``subscribers.form``), in one grouped query; ``None`` holds those
    with no form recorded: imported, or signed up before forms existed. Every status counts (a
    signup that later left was a signup); a confirmation is a ``confirmed_at``."""
    rows = session.execute(
        select(Subscriber.form, func.count(), func.count(Subscriber.confirmed_at)).group_by(
            Subscriber.form
        )
    )
    return {form: FormCount(signups, confirmed) for form, signups, confirmed in rows}
