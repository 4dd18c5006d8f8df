"""Preview and test sends of a broadcast.

Both are compiled with tracking off: no open pixel, no rewritten links, and no delivery row. A
test send therefore cannot touch any statistic: there is nothing to attribute an event to (its
``delivery_id`` is 0, which no delivery has), and it never counts towards the failure streak
that pauses sending (drip.engine.pause).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from drip.broadcasts.message import CATEGORY, compile_broadcast
from drip.broadcasts.segments import context_of, parse_segment, segment_filter
from drip.broadcasts.status import record
from drip.content.render import RecipientData, recipient_substitutions, unsubscribe_headers
from drip.errors import InvalidInput
from drip.esp.base import Recipient, SendResult, personalize
from drip.models import Broadcast, Subscriber
from drip.subscribers.validation import normalize_address

if TYPE_CHECKING:
    from drip.runtime import Runtime

TEST_PREFIX = "[TEST] "
MAX_TEST_ADDRESSES = 10
SAMPLE_NAME = "Sam"


@dataclass(frozen=True)
class Preview:
    subject: str
    html: str
    text: str
    to: str
    subscriber_id: int | None


def _substitutions(rt: Runtime, sub: Subscriber | None) -> tuple[dict[str, str], str]:
    """The per-recipient values of ``sub`` (or the sample reader) and its unsubscribe URL."""
    unsubscribe = rt.unsubscribe_url(sub.id if sub else 0)
    name = sub.first_name if sub else SAMPLE_NAME
    return recipient_substitutions(RecipientData(first_name=name, unsubscribe_url=unsubscribe)), (
        unsubscribe
    )


def preview(
    rt: Runtime, session: Session, broadcast: Broadcast, subscriber_id: int | None = None
) -> Preview:
    """The email as ``subscriber_id`` would get it; without one, as the segment's first
    subscriber would (or a made-up reader called Sam when the segment is empty)."""
    if subscriber_id is not None:
        sub = session.get(Subscriber, subscriber_id)
        if sub is None or sub.email is None:
            raise InvalidInput("subscriber_id", f"no subscriber {subscriber_id}")
    else:
        where = segment_filter(
            session, parse_segment(broadcast.segment), context_of(rt), rt.clock()
        )
        sub = session.scalar(select(Subscriber).where(where).order_by(Subscriber.id).limit(1))
    message = compile_broadcast(
        rt, broadcast.id, broadcast.subject, broadcast.preheader, broadcast.body_md, tracked=False
    )
    subs, _ = _substitutions(rt, sub)
    return Preview(
        subject=personalize(message.subject, subs),
        html=personalize(message.html, subs),
        text=personalize(message.text, subs),
        to=(sub.email or "") if sub else "sample@example.com",
        subscriber_id=sub.id if sub else None,
    )


def clean_test_addresses(addresses: Sequence[str]) -> list[str]:
    """Normalized, unique addresses; :class:`InvalidInput` on ``to`` otherwise."""
    if not addresses:
        raise InvalidInput("to", "give at least one address")
    cleaned: list[str] = []
    for raw in addresses:
        try:
            address = normalize_address(raw)
        except InvalidInput as err:
            raise InvalidInput("to", f"{raw!r} {err.message}") from None
        if address not in cleaned:
            cleaned.append(address)
    if len(cleaned) > MAX_TEST_ADDRESSES:
        raise InvalidInput("to", f"at most {MAX_TEST_ADDRESSES} test addresses")
    return cleaned


def send_test(
    rt: Runtime, session: Session, broadcast: Broadcast, addresses: Sequence[str]
) -> list[SendResult]:
    """Send the broadcast to ``addresses`` now, ``[TEST]`` in the subject, through the backend.

    No delivery row, no tracking, no failure streak. An address that belongs to a subscriber gets
    that subscriber's name and unsubscribe link; others get the sample reader's. A whole-request
    failure raises the backend's error (:class:`drip.errors.BackendError`).
    """
    emails = clean_test_addresses(addresses)
    message = compile_broadcast(
        rt, broadcast.id, broadcast.subject, broadcast.preheader, broadcast.body_md, tracked=False
    )
    message = replace(message, subject=TEST_PREFIX + message.subject, category=f"{CATEGORY}-test")
    known = {
        s.email: s for s in session.scalars(select(Subscriber).where(Subscriber.email.in_(emails)))
    }
    recipients = []
    for email in emails:
        sub = known.get(email)
        subs, unsubscribe = _substitutions(rt, sub)
        recipients.append(
            Recipient(
                delivery_id=0,
                email=email,
                name=sub.first_name if sub else "",
                substitutions=subs,
                headers=unsubscribe_headers(unsubscribe),
            )
        )
    return rt.backend.send_batch(message, recipients)


def record_test(
    session: Session,
    broadcast: Broadcast,
    results: Sequence[SendResult],
    *,
    actor: str,
    now: datetime,
) -> None:
    """The audit row of a test send (how many addresses, how many accepted; not who)."""
    accepted = sum(1 for r in results if r.ok)
    record(
        session,
        broadcast,
        action="tested",
        actor=actor,
        now=now,
        from_status=broadcast.status,
        note=f"test send to {len(results)} address(es), {accepted} accepted",
    )
