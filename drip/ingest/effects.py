"""What new events do to subscribers, a batch at a time: suppress, stop, unsubscribe.

- ``suppress`` ("bounce" or "complaint"): the address joins the suppression list (salted hash,
  first reason kept) and the subscriber's active enrollments stop; the send path also checks the
  list right before every send, so a queued email to that address is skipped.
- every suppressing event is also an outgoing webhook event, ``email.bounced`` or
  ``email.complained`` (:mod:`drip.outgoing`), written in the same transaction.
- ``unsubscribe``: the subscriber is unsubscribed through
  :func:`drip.subscribers.preferences.unsubscribe_many`, the one path that records the consent
  change.

A few statements per batch whatever its size: a SendGrid batch of 1,000 events may carry dozens
of bounces.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from drip.engine.consent import unsubscribe_many  # the one unsubscribe path
from drip.engine.enrollments import stop_enrollments_of
from drip.outgoing import EMAIL_BOUNCED, EMAIL_COMPLAINED, emit_many, subscriber_data
from drip.suppress import normalize_email, suppress_addresses

if TYPE_CHECKING:
    from drip.engagement import First
    from drip.ingest.events import Event

log = logging.getLogger(__name__)
# The outgoing webhook event of each kind of suppression.
_WEBHOOK_EVENTS = {"bounce": EMAIL_BOUNCED, "complaint": EMAIL_COMPLAINED}


def apply_effects(
    session: Session, events: Sequence[Event], now: datetime, firsts: list[First]
) -> tuple[int, int]:
    """Apply the effects of newly stored ``events``; returns (suppressed, unsubscribed).

    The emails that unsubscribes are credited to add their firsts to ``firsts``, which the
    caller records with the batch's own (:func:`drip.engagement.record_firsts`).
    """
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
    for kind, event_type in _WEBHOOK_EVENTS.items():
        emit_many(session, None, event_type, _webhook_data(events, kind), now)
    for reason, ids in sorted(to_stop.items()):
        stop_enrollments_of(session, ids, reason)
    unsubscribed = len(unsubscribe_many(session, to_unsubscribe, now, "provider-event", firsts))
    return suppressed, unsubscribed


def _webhook_data(events: Sequence[Event], kind: str) -> Iterator[dict[str, Any]]:
    """The data of the outgoing webhook events of one kind of suppression (lazily: nothing is
    built when no endpoint wants them)."""
    for e in events:
        if e.suppress == kind and e.email:
            yield subscriber_data(
                e.subscriber_id,
                normalize_email(e.email),
                reason=e.reason,
                provider=e.provider,
                message_key=e.message_key,
                occurred_at=e.occurred_at,
            )
