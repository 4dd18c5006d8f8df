"""Results per sequence: what starts and ends it, who is in it, its funnel, what it sold.

For every sequence of the library (every folder of the content directory):

- ``triggers``: labels of what starts it (:meth:`Automations.triggers_of`, so the legacy
  ``on_complete`` hand-over and the course as the default form's sequence are included);
  ``exits``: its ``[[exits]]`` labels, plus ``purchased`` for an ``upsell`` sequence (any
  purchase stops it, :mod:`drip.webhooks.purchase`); ``priority`` and ``reentry`` as written;
- ``active``, ``completed``, ``stopped`` (per stop reason): enrollments by their status now, one
  per person and sequence (a re-entry reuses its row); ``entries``: times anyone entered it,
  re-entries included (the sum of ``enrollments.entry``);
- ``lessons``: per lesson, in order, the figures of :mod:`drip.reports.stats` (sent, distinct
  human opens, distinct human clicks, unsubscribes) summed over every entry's message key
  (``"slug/3"`` and ``"slug/3#2"``, :func:`drip.models.lesson_key`); ``recipients`` is the first
  lesson's ``sent``;
- ``conversions`` and ``revenue``: purchases credited to a click in one of its emails (the
  ``conversions.attributed_delivery_id`` of the purchase webhook points at a lesson delivery of
  the sequence); ``conversion_rate`` = conversions / recipients.

Cost: three grouped queries for all the sequences together (enrollments, the ``message_stats``
rollup, conversions joined to their credited delivery), whatever the number of sequences.

A subscriber's history (:func:`enrollment_histories`): each enrollment with the lesson
deliveries of its sequence, two queries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from drip.content.types import Sequence
from drip.engine.automations import Automations
from drip.models import (
    Conversion,
    Delivery,
    DeliveryKind,
    Enrollment,
    EnrollmentStatus,
    MessageStats,
    lesson_of_key,
)

__all__ = [
    "EnrollmentHistory",
    "LessonDelivery",
    "LessonFigures",
    "SequenceFigures",
    "as_json",
    "collect",
    "enrollment_histories",
    "find",
]

Revenue = dict[str, int]  # currency -> amount in minor units
NO_REASON = "(none)"  # a stopped enrollment without a stop reason (rows older than the reasons)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass
class LessonFigures:
    """One lesson of a sequence: its figures summed over every entry into the sequence."""

    position: int
    subject: str
    sent: int = 0
    opened: int = 0  # distinct deliveries with a human open
    clicked: int = 0  # distinct deliveries with a human click
    unsubscribed: int = 0

    @property
    def open_rate(self) -> float | None:
        return _rate(self.opened, self.sent)

    @property
    def click_rate(self) -> float | None:
        return _rate(self.clicked, self.sent)


@dataclass
class SequenceFigures:
    slug: str
    name: str
    kind: str
    priority: int
    reentry: bool
    triggers: list[str]
    exits: list[str]
    lessons: list[LessonFigures]
    active: int = 0
    completed: int = 0
    stopped: dict[str, int] = field(default_factory=dict)  # stop reason -> enrollments
    entries: int = 0
    conversions: int = 0
    revenue: Revenue = field(default_factory=dict)

    @property
    def stopped_total(self) -> int:
        return sum(self.stopped.values())

    @property
    def enrolled(self) -> int:
        """People who ever entered it (one enrollment each)."""
        return self.active + self.completed + self.stopped_total

    @property
    def recipients(self) -> int:
        return self.lessons[0].sent if self.lessons else 0

    @property
    def conversion_rate(self) -> float | None:
        return _rate(self.conversions, self.recipients)

    def steps(self) -> list[tuple[str, int]]:
        """The funnel: entered -> reached lesson k (lesson k was sent) -> completed."""
        reached = [(f"reached lesson {item.position}", item.sent) for item in self.lessons]
        return [("entered", self.entries), *reached, ("completed", self.completed)]


def _exits(sequence: Sequence) -> list[str]:
    labels = [rule.label for rule in sequence.exits]
    if sequence.kind == "upsell" and not any(rule.on == "purchased" for rule in sequence.exits):
        labels.append("purchased")  # drip.webhooks.purchase stops upsells on any purchase
    return labels


def _lesson_of(message_key: str) -> tuple[str, int] | None:
    """:func:`drip.models.lesson_of_key`, ``None`` for a key that is not a lesson's."""
    try:
        return lesson_of_key(message_key)
    except ValueError:
        return None


def collect(
    session: Session, library: Mapping[str, Sequence], automations: Automations
) -> list[SequenceFigures]:
    """Every sequence of ``library``, in its order, with its figures (read-only)."""
    figures = {
        slug: SequenceFigures(
            slug=slug,
            name=seq.name,
            kind=seq.kind,
            priority=seq.priority,
            reentry=seq.reentry,
            triggers=automations.triggers_of(slug),
            exits=_exits(seq),
            lessons=[LessonFigures(lesson.position, lesson.subject) for lesson in seq.lessons],
        )
        for slug, seq in library.items()
    }
    if not figures:
        return []
    _add_enrollments(session, figures)
    _add_lessons(session, figures)
    _add_conversions(session, figures)
    return list(figures.values())


def find(
    session: Session, library: Mapping[str, Sequence], automations: Automations, slug: str
) -> SequenceFigures | None:
    """The figures of one sequence; ``None`` when the library has no such slug."""
    if slug not in library:
        return None
    return collect(session, {slug: library[slug]}, automations)[0]


def _add_enrollments(session: Session, figures: dict[str, SequenceFigures]) -> None:
    rows = session.execute(
        select(
            Enrollment.sequence,
            Enrollment.status,
            Enrollment.stop_reason,
            func.count(),
            func.sum(Enrollment.entry),
        )
        .where(Enrollment.sequence.in_(list(figures)))
        .group_by(Enrollment.sequence, Enrollment.status, Enrollment.stop_reason)
    )
    for slug, status, reason, count, entries in rows:
        item = figures[slug]
        item.entries += int(entries or 0)
        if status == EnrollmentStatus.ACTIVE:
            item.active += int(count)
        elif status == EnrollmentStatus.COMPLETED:
            item.completed += int(count)
        else:
            key = reason or NO_REASON
            item.stopped[key] = item.stopped.get(key, 0) + int(count)
    for item in figures.values():
        item.stopped = dict(sorted(item.stopped.items(), key=lambda kv: (-kv[1], kv[0])))


def _add_lessons(session: Session, figures: dict[str, SequenceFigures]) -> None:
    # Slugs are lowercase words joined by '-' (drip.content.triggers): no LIKE wildcard in them.
    prefixes = [MessageStats.message_key.like(f"{slug}/%") for slug in figures]
    rows = session.execute(
        select(
            MessageStats.message_key,
            MessageStats.sent,
            MessageStats.opened,
            MessageStats.clicked,
            MessageStats.unsubscribed,
        ).where(or_(*prefixes))
    )
    by_position = {
        (slug, item.position): item for slug, seq in figures.items() for item in seq.lessons
    }
    for key, sent, opened, clicked, unsubscribed in rows:
        found = _lesson_of(key)
        item = by_position.get(found) if found is not None else None
        if item is None:
            continue  # a lesson removed from the folder since it was sent
        item.sent += int(sent)
        item.opened += int(opened)
        item.clicked += int(clicked)
        item.unsubscribed += int(unsubscribed)


def _add_conversions(session: Session, figures: dict[str, SequenceFigures]) -> None:
    rows = session.execute(
        select(
            Delivery.sequence, Conversion.currency, func.count(), func.sum(Conversion.amount_cents)
        )
        .join(Delivery, Delivery.id == Conversion.attributed_delivery_id)
        .where(Delivery.sequence.in_(list(figures)))
        .group_by(Delivery.sequence, Conversion.currency)
    )
    for slug, currency, count, amount in rows:
        item = figures[slug]
        item.conversions += int(count)
        item.revenue[currency] = item.revenue.get(currency, 0) + int(amount or 0)


def as_json(item: SequenceFigures, *, detail: bool = True) -> dict[str, Any]:
    """One sequence for ``GET /api/v1/admin/sequences[/{slug}]`` and ``drip stats --json``;
    ``detail`` adds its ``lessons`` and ``funnel``."""
    data: dict[str, Any] = {
        "slug": item.slug,
        "name": item.name,
        "kind": item.kind,
        "priority": item.priority,
        "reentry": item.reentry,
        "triggers": item.triggers,
        "exits": item.exits,
        "active": item.active,
        "completed": item.completed,
        "stopped": item.stopped,
        "stopped_total": item.stopped_total,
        "enrolled": item.enrolled,
        "entries": item.entries,
        "recipients": item.recipients,
        "conversions": item.conversions,
        "conversion_rate": item.conversion_rate,
        "revenue": item.revenue,
    }
    if detail:
        data["lessons"] = [
            {
                "position": lesson.position,
                "subject": lesson.subject,
                "sent": lesson.sent,
                "opened": lesson.opened,
                "clicked": lesson.clicked,
                "unsubscribed": lesson.unsubscribed,
                "open_rate": lesson.open_rate,
                "click_rate": lesson.click_rate,
            }
            for lesson in item.lessons
        ]
        data["funnel"] = [{"step": name, "count": count} for name, count in item.steps()]
    return data


# --------------------------------------------------------------------------- one subscriber


@dataclass(frozen=True)
class LessonDelivery:
    """A lesson email of the subscriber: which lesson, in which entry, where it stands."""

    message_key: str
    position: int
    entry: int
    status: str
    created_at: datetime
    sent_at: datetime | None

    @property
    def at(self) -> datetime:
        """When it went, or when it was written if it has not (yet)."""
        return self.sent_at or self.created_at


@dataclass(frozen=True)
class EnrollmentHistory:
    """One enrollment as it stands now, with every lesson delivery of its sequence (all entries,
    oldest first). ``enrolled_at`` is the start of the latest entry."""

    sequence: str
    entry: int
    trigger: str | None
    status: str
    stop_reason: str | None
    position: int
    enrolled_at: datetime
    completed_at: datetime | None
    next_send_at: datetime | None
    deliveries: list[LessonDelivery]


def enrollment_histories(session: Session, subscriber_id: int) -> list[EnrollmentHistory]:
    """Every enrollment of the subscriber, oldest first, with its lesson deliveries."""
    deliveries: dict[str, list[LessonDelivery]] = defaultdict(list)
    rows = session.execute(
        select(
            Delivery.sequence,
            Delivery.message_key,
            Delivery.position,
            Delivery.status,
            Delivery.created_at,
            Delivery.sent_at,
        )
        .where(Delivery.subscriber_id == subscriber_id, Delivery.kind == DeliveryKind.LESSON)
        .order_by(Delivery.id)
    )
    for slug, key, position, status, created_at, sent_at in rows:
        entry = key.partition("#")[2]
        deliveries[slug or ""].append(
            LessonDelivery(
                message_key=key,
                position=int(position or 0),
                entry=int(entry) if entry.isdigit() else 1,
                status=status,
                created_at=created_at,
                sent_at=sent_at,
            )
        )
    enrollments = session.scalars(
        select(Enrollment)
        .where(Enrollment.subscriber_id == subscriber_id)
        .order_by(Enrollment.enrolled_at, Enrollment.id)
    )
    return [
        EnrollmentHistory(
            sequence=e.sequence,
            entry=e.entry,
            trigger=e.trigger,
            status=e.status,
            stop_reason=e.stop_reason,
            position=e.position,
            enrolled_at=e.enrolled_at,
            completed_at=e.completed_at,
            next_send_at=e.next_send_at,
            deliveries=deliveries.get(e.sequence, []),
        )
        for e in enrollments
    ]
