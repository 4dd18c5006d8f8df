"""Results: per-email figures, per-sequence conversions and the course funnel.

What each figure means (docs/tracking.md, "Stats"):

- ``sent``: deliveries the backend accepted; ``delivered``, ``bounced``, ``complained``: distinct
  deliveries with such a provider event; ``opened``: distinct deliveries with a *human* open (a
  human click counts as an open too); ``clicked``: distinct deliveries with a human click;
  ``click_to_open`` = clicked / opened.
- ``unsubscribed``: unsubscribes credited to the last email sent to the person at or before they
  left (our own link names the person, not the email); :func:`drip.engagement.credit_unsubscribe`.
- ``conversions`` and ``revenue``: purchases credited to the email (last human click within the
  attribution window); ``conversion_rate`` = conversions / sent.
- Funnel: signed up -> confirmed -> reached lesson k (lesson k was sent) -> completed (the course
  enrollment finished) -> clicked the upsell (distinct people with a human click on an upsell
  email) -> converted (distinct buyers who are subscribers).
- Per sequence (:mod:`drip.reports.sequences`): what starts and ends each sequence, who is in it,
  completed it or left it (per reason), its funnel per lesson, and the purchases credited to it.

- Sending (:mod:`drip.reports.sending_health`): whether sending is paused, how many deliveries are
  queued, sending, unknown (maybe sent) and failed, and which command to run about them.

Everything comes from the rollups (:mod:`drip.engagement`) plus a few counts over subscribers,
enrollments, conversions and the partial indexes of unsettled deliveries, so the cost does not
grow with the number of events.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from drip.content.types import Sequence
from drip.engagement import COUNTERS
from drip.engine.automations import Automations
from drip.models import (
    Conversion,
    DeliveryEngagement,
    Enrollment,
    EnrollmentStatus,
    MessageStats,
    Subscriber,
)
from drip.reports import sending_health
from drip.reports import sequences as sequence_reports
from drip.reports.sending_health import SendingHealth
from drip.reports.sequences import SequenceFigures
from drip.settings import Settings
from drip.store import one_of

Revenue = dict[str, int]  # currency -> amount in minor units
# DRIP_UNKNOWN_SETTLE_MINUTES when the caller has no settings at hand (one source of truth).
DEFAULT_SETTLE_MINUTES: int = Settings.model_fields["unknown_settle_minutes"].default


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass
class EmailStats:
    message_key: str
    sequence: str | None
    position: int | None
    subject: str | None
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    opened: int = 0
    clicked: int = 0
    unsubscribed: int = 0
    complained: int = 0
    conversions: int = 0
    revenue: Revenue = field(default_factory=dict)

    @property
    def click_to_open(self) -> float | None:
        return _rate(self.clicked, self.opened)

    @property
    def conversion_rate(self) -> float | None:
        return _rate(self.conversions, self.sent)


@dataclass
class SequenceStats:
    slug: str
    name: str
    kind: str
    recipients: int  # got its first email
    conversions: int
    revenue: Revenue

    @property
    def conversion_rate(self) -> float | None:
        return _rate(self.conversions, self.recipients)


@dataclass
class Funnel:
    sequence: str
    signed_up: int
    confirmed: int
    reached: list[int]  # reached[k - 1]: lesson k was sent
    completed: int
    clicked_upsell: int
    converted: int

    def steps(self) -> list[tuple[str, int]]:
        lessons = [(f"reached lesson {k}", n) for k, n in enumerate(self.reached, start=1)]
        return [
            ("signed up", self.signed_up),
            ("confirmed", self.confirmed),
            *lessons,
            ("completed", self.completed),
            ("clicked the upsell", self.clicked_upsell),
            ("converted", self.converted),
        ]


@dataclass
class Stats:
    generated_at: datetime
    emails: list[EmailStats]  # sequence emails in order, then any other message keys
    sequences: list[SequenceStats]
    funnel: Funnel
    unattributed_conversions: int  # credited to no email (no click in the window)
    unattributed_revenue: Revenue
    unknown_buyers: int  # buyers who are not subscribers
    sending: SendingHealth  # the pause and the unsettled deliveries
    # Every sequence with its triggers, enrollments, funnel and conversions.
    per_sequence: list[SequenceFigures] = field(default_factory=list)


_CONVERSIONS = text(
    """
    SELECT d.message_key, c.currency, count(*), sum(c.amount_cents),
        sum(CASE WHEN c.subscriber_id IS NULL THEN 1 ELSE 0 END)
    FROM conversions c LEFT JOIN deliveries d ON d.id = c.attributed_delivery_id
    GROUP BY d.message_key, c.currency
    """
)


def _emails(session: Session, library: dict[str, Sequence]) -> dict[str, EmailStats]:
    emails: dict[str, EmailStats] = {}
    for sequence in library.values():
        for lesson in sequence.lessons:
            emails[lesson.key] = EmailStats(
                lesson.key, sequence.slug, lesson.position, lesson.subject
            )
    for row in session.scalars(select(MessageStats)):
        item = emails.setdefault(row.message_key, EmailStats(row.message_key, None, None, None))
        for name in COUNTERS:
            setattr(item, name, getattr(row, name))
    return emails


def collect(
    session: Session,
    library: dict[str, Sequence],
    course: str,
    now: datetime,
    *,
    unknown_settle_minutes: int = DEFAULT_SETTLE_MINUTES,
    automations: Automations | None = None,
) -> Stats:
    """All the figures, in a handful of queries (read-only).

    ``unknown_settle_minutes`` is ``DRIP_UNKNOWN_SETTLE_MINUTES``: unknown deliveries older than
    that are counted as needing a person. ``automations`` is the runtime's index of triggers
    (``rt.automations``); without it, the library's own (``course`` as the default form's).
    """
    index = automations if automations is not None else Automations.of(library, course)
    emails = _emails(session, library)
    unattributed: Revenue = defaultdict(int)
    unattributed_count = unknown_buyers = 0
    for key, currency, count, amount, unknown in session.execute(_CONVERSIONS):
        unknown_buyers += int(unknown or 0)
        if key is None:
            unattributed_count += int(count)
            unattributed[currency] += int(amount or 0)
            continue
        item = emails.setdefault(key, EmailStats(key, None, None, None))
        item.conversions += int(count)
        item.revenue[currency] = item.revenue.get(currency, 0) + int(amount or 0)
    sequences = [_sequence(seq, emails) for seq in library.values()]
    ordered = [emails[lesson.key] for seq in library.values() for lesson in seq.lessons]
    others = sorted((e for e in emails.values() if e.sequence is None), key=lambda e: e.message_key)
    return Stats(
        generated_at=now,
        emails=ordered + others,
        sequences=sequences,
        funnel=_funnel(session, library, course, emails),
        unattributed_conversions=unattributed_count,
        unattributed_revenue=dict(unattributed),
        unknown_buyers=unknown_buyers,
        sending=sending_health.collect(session, now, unknown_settle_minutes),
        per_sequence=sequence_reports.collect(session, library, index),
    )


def _sequence(sequence: Sequence, emails: dict[str, EmailStats]) -> SequenceStats:
    items = [emails[lesson.key] for lesson in sequence.lessons]
    revenue: Revenue = defaultdict(int)
    for item in items:
        for currency, amount in item.revenue.items():
            revenue[currency] += amount
    return SequenceStats(
        slug=sequence.slug,
        name=sequence.name,
        kind=sequence.kind,
        recipients=items[0].sent if items else 0,
        conversions=sum(item.conversions for item in items),
        revenue=dict(revenue),
    )


def _funnel(
    session: Session, library: dict[str, Sequence], course: str, emails: dict[str, EmailStats]
) -> Funnel:
    signed_up, confirmed = session.execute(
        select(func.count(), func.count(Subscriber.confirmed_at))
    ).one()
    completed = session.scalar(
        select(func.count())
        .select_from(Enrollment)
        .where(Enrollment.sequence == course, Enrollment.status == EnrollmentStatus.COMPLETED)
    )
    upsell_keys = [
        lesson.key for seq in library.values() if seq.kind == "upsell" for lesson in seq.lessons
    ]
    clicked = session.scalar(
        select(func.count(func.distinct(DeliveryEngagement.subscriber_id))).where(
            one_of(DeliveryEngagement.message_key, upsell_keys, session),
            DeliveryEngagement.clicked_at.is_not(None),
        )
    )
    converted = session.scalar(
        select(func.count(func.distinct(Conversion.subscriber_id))).where(
            Conversion.subscriber_id.is_not(None)
        )
    )
    lessons = library[course].lessons if course in library else []
    return Funnel(
        sequence=course,
        signed_up=int(signed_up),
        confirmed=int(confirmed),
        reached=[emails[lesson.key].sent for lesson in lessons],
        completed=int(completed or 0),
        clicked_upsell=int(clicked or 0),
        converted=int(converted or 0),
    )


def as_json(stats: Stats) -> dict[str, Any]:
    """The JSON of ``drip stats --json`` and ``GET /api/v1/admin/stats``."""
    emails = []
    for item in stats.emails:
        entry = asdict(item)
        entry["click_to_open"] = item.click_to_open
        entry["conversion_rate"] = item.conversion_rate
        emails.append(entry)
    sequences = []
    for seq in stats.sequences:
        entry = asdict(seq)
        entry["conversion_rate"] = seq.conversion_rate
        sequences.append(entry)
    funnel = stats.funnel
    steps = [{"step": name, "count": count} for name, count in funnel.steps()]
    return {
        "generated_at": stats.generated_at.isoformat(),
        "emails": emails,
        "sequences": sequences,
        "funnel": {
            "sequence": funnel.sequence,
            "steps": steps,
            "conversion_rate": _rate(funnel.converted, funnel.confirmed),
        },
        "unattributed": {
            "conversions": stats.unattributed_conversions,
            "revenue": stats.unattributed_revenue,
        },
        "unknown_buyers": stats.unknown_buyers,
        "sending": sending_health.as_json(stats.sending),
        "per_sequence": [sequence_reports.as_json(item) for item in stats.per_sequence],
    }
