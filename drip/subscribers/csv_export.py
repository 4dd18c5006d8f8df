"""``drip subscribers export``: every subscriber with an address, as CSV our import reads back.

A suppressed subscriber (bounce, complaint...) carries its reason and date in ``suppressed_reason``
and ``suppressed_at``, so the list it moves to doesn't take it for a healthy one. Erased
subscribers have no address and are not written; nor is a suppression without a subscriber: the
list keeps only salted hashes of addresses (:mod:`drip.suppress`).

``course_emails`` and ``newsletter`` say whether the subscriber gets those emails: both ``false``
for someone unsubscribed or suppressed, whatever they had chosen before (an unsubscribe keeps the
old choices, and a resubscribe resets them). So the file never shows a person who gets no mail as
wanting it, and drip's import reads it back without conflicts.
"""

from __future__ import annotations

import csv
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from drip.models import Subscriber, SubscriberStatus
from drip.subscribers.csvmap import FORMULA_START
from drip.suppress import suppressions_of

COLUMNS = (
    "email",
    "first_name",
    "status",
    "tags",
    "time_zone",
    "source",
    "course_emails",
    "newsletter",
    "created_at",
    "confirmed_at",
    "unsubscribed_at",
    "suppressed_reason",
    "suppressed_at",
)


def _safe(value: str) -> str:
    """Text a spreadsheet would run as a formula gets a leading apostrophe (CSV injection)."""
    return "'" + value if value.startswith(FORMULA_START) else value


def write_csv(session: Session, out: TextIO, page: int = 1000) -> int:
    """Write the header and one row per subscriber with an address; returns the row count."""
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    count = 0
    after = 0
    while True:
        batch = list(
            session.scalars(
                select(Subscriber)
                .where(Subscriber.id > after, Subscriber.email.is_not(None))
                .order_by(Subscriber.id)
                .limit(page)
            )
        )
        if not batch:
            return count
        suppressed = suppressions_of(session, [sub.email for sub in batch if sub.email])
        for sub in batch:
            listed = suppressed.get(sub.email or "")
            mailable = listed is None and sub.status != SubscriberStatus.UNSUBSCRIBED
            writer.writerow(
                [
                    sub.email,
                    _safe(sub.first_name),
                    sub.status,
                    ",".join(sorted(t.name for t in sub.tags)),
                    sub.time_zone or "",
                    _safe(sub.source),
                    str(mailable and sub.course_emails).lower(),
                    str(mailable and sub.newsletter).lower(),
                    sub.created_at.isoformat(),
                    sub.confirmed_at.isoformat() if sub.confirmed_at else "",
                    sub.unsubscribed_at.isoformat() if sub.unsubscribed_at else "",
                    listed.reason if listed else "",
                    listed.created_at.isoformat() if listed else "",
                ]
            )
        count += len(batch)
        after = batch[-1].id
        session.expunge_all()
