"""What new events do to subscribers, a batch at a time: suppress, stop, unsubscribe.

- ``suppress`` ("bounce" or "complaint"): the address joins the suppression list (salted hash,
  first reason kept) and the subscriber's active enrollments stop; the send path also checks the
  list right before every send, so a queued email to that address is skipped.
- ``unsubscribe``: the subscriber is unsubscribed through
  :func:`drip.subscribers.preferences.unsubscribe_many`, the one path that records the consent
  change.

A few statements per batch whatever its size: a SendGrid batch of 1,000 events may carry dozens
of bounces.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from drip.enrollments import stop_enrollments_of
from drip.models import Suppression
from drip.suppress import hash_with, normalize_email, salt

if TYPE_CHECKING:
    from drip.engagement import First
    from drip.events import Event

log = logging.getLogger(__name__)


_SUPPRESS_PG = text(
    "INSERT INTO suppressions (email_hash, reason, detail, created_at) "
    "SELECT email_hash, reason, detail, CAST(:now AS timestamptz) "
    "FROM json_to_recordset(CAST(:rows AS json)) AS v(email_hash varchar, reason varchar, "
    "detail text) ORDER BY email_hash ON CONFLICT (email_hash) DO NOTHING RETURNING id"
)


def suppress_addresses(session: Session, entries: dict[str, tuple[str, str]], now: datetime) -> int:
    """Add ``{email: (reason, detail)}`` to the suppression list; returns how many were new."""
    if not entries:
        return 0
    key = salt(session)
    rows = sorted(
        (
            {"email_hash": hash_with(key, email), "reason": reason, "detail": detail}
            for email, (reason, detail) in entries.items()
        ),
        key=lambda row: row["email_hash"],  # one lock order for concurrent batches
    )
    if session.get_bind().dialect.name == "postgresql":
        params = {"rows": json.dumps(rows), "now": now}
        return len(list(session.scalars(_SUPPRESS_PG, params)))
    stmt = (
        sqlite.insert(Suppression)
        .values([{**row, "created_at": now} for row in rows])
        .on_conflict_do_nothing(index_elements=["email_hash"])
        .returning(Suppression.id)
    )
    return len(list(session.scalars(stmt)))


def apply_effects(
    session: Session, events: Sequence[Event], now: datetime, firsts: list[First]
) -> tuple[int, int]:
    """Apply the effects of newly stored ``events``; returns (suppressed, unsubscribed).

    The emails that unsubscribes are credited to add their firsts to ``firsts``, which the
    caller records with the batch's own (:func:`drip.engagement.record_firsts`).
    """
    from drip.subscribers.preferences import unsubscribe_many  # the one unsubscribe path

    to_suppress: dict[str, tuple[str, str]] = {}
    to_stop: dict[str, set[int]] = defaultdict(set)
    to_unsubscribe: set[int] = set()
    for e in events:
        if e.suppress and e.email:
            detail = f"{e.provider}: {e.reason or e.type}"
            to_suppress.setdefault(normalize_email(e.email), (e.suppress, detail))
            if e.subscriber_id is not None:
                to_stop[e.suppress].add(e.subscriber_id)
        if e.unsubscribe and e.subscriber_id is not None:
            to_unsubscribe.add(e.subscriber_id)
    suppressed = suppress_addresses(session, to_suppress, now)
    for reason, ids in sorted(to_stop.items()):
        stop_enrollments_of(session, ids, reason)
    unsubscribed = len(unsubscribe_many(session, to_unsubscribe, now, "provider-event", firsts))
    return suppressed, unsubscribed
