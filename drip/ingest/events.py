"""One normalized tracking event (anymail-style) and its ingest: match, flag, dedupe, apply.

Every source (our open/click endpoints, SendGrid's Event Webhook) turns what it received into
:class:`Event` objects; :func:`ingest` stores a batch of them in the caller's transaction:

1. **match** each to a delivery and subscriber (:mod:`drip.ingest.match`);
2. **flag** machine opens and clicks (:mod:`drip.tracking.machine`);
3. **dedupe**: ``INSERT ... ON CONFLICT (provider_event_id) DO NOTHING RETURNING`` keeps one
   row per event id, so a provider's retry, or a batch sent twice, changes nothing;
4. **apply**, for the newly stored events only: suppressions (hard bounce, complaint),
   unsubscribes, settling ``unknown`` deliveries the events prove sent or refused
   (:mod:`drip.engine.reconcile`), then the rollups (:mod:`drip.engagement`), each idempotent. The
   rollup rows come last because concurrent batches about the same emails queue on their row
   locks.

Order does not matter: every effect is "set once" (first open, suppression, unsubscribe), so an
open before its delivered event, or a bounce after a click, lands the same as in order.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from drip.engagement import First, add_counts, record_firsts
from drip.engine.reconcile import Word, settle_from_events
from drip.ingest.effects import apply_effects
from drip.ingest.match import match_events
from drip.store import store_for
from drip.tracking.machine import machine_click, machine_open

if TYPE_CHECKING:
    from drip.runtime import Runtime

log = logging.getLogger(__name__)


class EventType(enum.StrEnum):
    """Normalized event types (the set anymail uses for every provider)."""

    QUEUED = "queued"  # accepted by the provider, not yet sent on
    SENT = "sent"
    REJECTED = "rejected"  # refused by the provider before sending (dropped)
    FAILED = "failed"
    BOUNCED = "bounced"  # refused by the recipient's server
    DEFERRED = "deferred"  # delayed; the provider keeps trying
    DELIVERED = "delivered"
    AUTORESPONDED = "autoresponded"
    OPENED = "opened"
    CLICKED = "clicked"
    COMPLAINED = "complained"  # marked as spam
    UNSUBSCRIBED = "unsubscribed"
    SUBSCRIBED = "subscribed"
    UNKNOWN = "unknown"  # anything we don't know yet: kept, never an error


# The engagement column a *human* event of each type sets first (machine opens/clicks set none).
_FIRSTS = {
    EventType.DELIVERED: ("delivered_at",),
    EventType.BOUNCED: ("bounced_at",),
    EventType.COMPLAINED: ("complained_at",),
    EventType.OPENED: ("opened_at",),
    EventType.CLICKED: ("clicked_at", "opened_at"),  # a click implies the email was opened
}


@dataclass
class Event:
    """One event as a source reports it; ``ingest`` fills in the matched fields."""

    type: EventType
    occurred_at: datetime
    provider: str  # "drip" (our endpoints), "sendgrid"
    provider_event_id: str  # unique per provider event: the dedupe key
    delivery_id: int | None = None  # as claimed by the source (a signed token, custom args)
    message_id: str | None = None  # the provider's message id (SendGrid X-Message-Id)
    email: str | None = None
    url: str | None = None
    reason: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    provider_machine: bool = False  # the provider's own flag (sg_machine_open)
    head: bool = False  # a HEAD request: only link scanners send those
    suppress: str | None = None  # "bounce" or "complaint": never mail this address again
    unsubscribe: bool = False
    raw: dict[str, Any] | None = None
    # Filled in by matching and flagging:
    subscriber_id: int | None = None
    message_key: str | None = None
    sent_at: datetime | None = None
    machine: bool = False


@dataclass
class IngestReport:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    unmatched: int = 0  # stored without a delivery (an address we never mailed, say)
    suppressed: int = 0
    unsubscribed: int = 0
    settled: dict[str, int] = field(default_factory=dict)  # unknown deliveries now sent/failed
    new: list[Event] = field(default_factory=list, repr=False)


def flag_machine(event: Event, scanner_click_seconds: int) -> None:
    if event.type == EventType.OPENED:
        # A HEAD request fetches no image: only link scanners and prefetchers send one.
        event.machine = event.head or machine_open(
            event.user_agent, event.ip, provider_flag=event.provider_machine
        )
    elif event.type == EventType.CLICKED:
        event.machine = machine_click(
            event.user_agent,
            head=event.head,
            occurred_at=event.occurred_at,
            sent_at=event.sent_at,
            scanner_seconds=scanner_click_seconds,
        )


def ingest(
    session: Session, events: list[Event], *, now: datetime, scanner_click_seconds: int
) -> IngestReport:
    """Store ``events`` (any order, duplicates allowed) and apply what is new; see module doc."""
    report = IngestReport(received=len(events))
    first_seen: dict[str, Event] = {}
    for event in events:
        first_seen.setdefault(event.provider_event_id, event)
    unique = list(first_seen.values())
    match_events(session, unique)
    for event in unique:
        flag_machine(event, scanner_click_seconds)
    report.new = _insert_new(session, unique, now)
    report.stored = len(report.new)
    report.duplicates = report.received - report.stored
    report.unmatched = sum(1 for e in report.new if e.delivery_id is None)
    firsts = _firsts(report.new)
    report.suppressed, report.unsubscribed = apply_effects(session, report.new, now, firsts)
    report.settled = settle_from_events(session, _words(report.new), now)
    # The rollup rows last, as late as possible before the commit: another batch about the same
    # emails waits for these row locks until this one commits.
    add_counts(session, record_firsts(session, firsts))
    return report


def _row(e: Event) -> dict[str, Any]:
    return {
        "type": str(e.type),
        "occurred_at": e.occurred_at,
        "delivery_id": e.delivery_id,
        "subscriber_id": e.subscriber_id,
        "provider": e.provider,
        "provider_event_id": e.provider_event_id,
        "machine": e.machine,
        "url": e.url,
        "reason": e.reason,
        "ip": e.ip,
        "user_agent": e.user_agent[:512] if e.user_agent else e.user_agent,
        "raw": e.raw,
    }


def store(rt: Runtime, events: list[Event], *, attempts: int = 3) -> IngestReport:
    """:func:`ingest` in a transaction of its own, committed; retried after a deadlock.

    Two batches sharing events or deliveries can still meet in an order the database resolves by
    aborting one of them; running it again is safe (everything is idempotent).
    """
    for attempt in range(1, attempts + 1):
        try:
            with rt.transaction() as session:
                now = rt.clock()
                report = ingest(
                    session,
                    events,
                    now=now,
                    scanner_click_seconds=rt.settings.scanner_click_seconds,
                )
                # Late import: drip.ingest.clicks builds on this module's Event.
                from drip.ingest.clicks import start_from_clicks

                start_from_clicks(rt, session, report.new, now)
                return report
        except OperationalError as err:
            if attempt == attempts or not _retryable(err):
                raise
            log.warning("event batch hit %s; retrying (%d)", type(err.orig).__name__, attempt)
    raise AssertionError("unreachable")


def _retryable(err: OperationalError) -> bool:
    code = getattr(err.orig, "sqlstate", None)
    return code in ("40P01", "40001")  # deadlock_detected, serialization_failure


def _insert_new(session: Session, events: list[Event], now: datetime) -> list[Event]:
    """Insert ``events``; return those that were not there already (by provider_event_id)."""
    if not events:
        return []
    rows = [_row(e) for e in sorted(events, key=lambda e: e.provider_event_id)]
    stored = store_for(session).insert_events(session, rows, now)
    return [e for e in events if e.provider_event_id in stored]


def _words(events: list[Event]) -> list[Word]:
    """What the new events say about their deliveries, for settling ``unknown`` rows."""
    return [
        Word(e.delivery_id, str(e.type), e.occurred_at, e.reason)
        for e in events
        if e.delivery_id is not None
    ]


def _firsts(events: list[Event]) -> list[First]:
    firsts = []
    for e in events:
        if e.delivery_id is None or e.message_key is None or e.subscriber_id is None:
            continue
        if e.machine and e.type in (EventType.OPENED, EventType.CLICKED):
            continue
        for column in _FIRSTS.get(e.type, ()):
            firsts.append(
                First(e.delivery_id, e.message_key, e.subscriber_id, column, e.occurred_at)
            )
    return firsts
