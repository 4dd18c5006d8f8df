"""Unsubscribe, resubscribe and email preferences, all reached through a signed link.

The link's token (:func:`drip.tokens.subscriber_token`, purpose ``unsubscribe``) never expires and
names one subscriber. An unsubscribe takes effect at once: the status changes in this transaction
and :mod:`drip.dispatch` checks it right before every send, so a queued email is skipped.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from drip.engagement import credit_unsubscribes
from drip.enrollments import stop_enrollments, stop_enrollments_of
from drip.models import Subscriber, SubscriberStatus
from drip.runtime import UNSUBSCRIBE_PURPOSE, Runtime
from drip.subscribers.signup import queue_confirmation, send_now
from drip.subscribers.store import record_consent, resume_enrollments
from drip.suppress import is_suppressed
from drip.tokens import BadToken, read_subscriber_token

log = logging.getLogger(__name__)


def subscriber_from_token(session: Session, secret: str, token: str) -> Subscriber | None:
    """The subscriber an unsubscribe token names, or None if the token is not genuine."""
    try:
        subscriber_id = read_subscriber_token(secret, UNSUBSCRIBE_PURPOSE, token)
    except BadToken:
        return None
    return session.get(Subscriber, subscriber_id)


def unsubscribe(session: Session, subscriber: Subscriber, now: datetime, source: str) -> bool:
    """Unsubscribe from everything; False if there was nothing to do (already out, or erased)."""
    return bool(unsubscribe_many(session, [subscriber], now, source))


def unsubscribe_many(
    session: Session, subscribers: Sequence[Subscriber], now: datetime, source: str
) -> list[Subscriber]:
    """Unsubscribe each of ``subscribers`` (a provider's batch may hold dozens); returns those
    that changed. The same steps as one unsubscribe, a few statements whatever the number."""
    changed = [
        s
        for s in subscribers
        if s.status not in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.ERASED)
    ]
    for subscriber in changed:
        subscriber.status = SubscriberStatus.UNSUBSCRIBED
        subscriber.unsubscribed_at = now
        record_consent(session, subscriber, "unsubscribe", now, source=source)
    ids = [s.id for s in changed]
    stop_enrollments_of(session, ids, "unsubscribed")
    credit_unsubscribes(session, ids, now)  # per-email unsubscribes (issue 5 stats)
    for subscriber in changed:
        log.info("subscriber %s unsubscribed (%s)", subscriber.id, source)
    return changed


class Resubscribe(enum.StrEnum):
    ACTIVE = "active"  # back on the list at once (they had confirmed before)
    CONFIRM = "confirm"  # never confirmed: a confirmation email is on its way
    REFUSED = "refused"  # erased or suppressed


@dataclass(frozen=True)
class ResubscribeOutcome:
    state: Resubscribe
    delivery_id: int | None = None


def resubscribe(
    rt: Runtime,
    session: Session,
    subscriber: Subscriber,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
) -> ResubscribeOutcome:
    """Undo an unsubscribe. Someone who never confirmed gets a confirmation email instead."""
    now = rt.clock()
    if (
        subscriber.email is None
        or subscriber.status == SubscriberStatus.ERASED
        or is_suppressed(session, subscriber.email)
    ):
        return ResubscribeOutcome(Resubscribe.REFUSED)
    subscriber.course_emails = subscriber.newsletter = True
    if subscriber.confirmed_at is None:
        subscriber.status = SubscriberStatus.PENDING
        session.flush()
        every = timedelta(minutes=rt.settings.confirm_resend_minutes)
        return ResubscribeOutcome(
            Resubscribe.CONFIRM, queue_confirmation(session, subscriber.id, now, every)
        )
    if subscriber.status != SubscriberStatus.ACTIVE:
        subscriber.status = SubscriberStatus.ACTIVE
        subscriber.unsubscribed_at = None
        record_consent(
            session,
            subscriber,
            "resubscribe",
            now,
            source="preferences-page",
            ip=ip,
            user_agent=user_agent,
            text=rt.settings.consent_text,
        )
    resume_enrollments(session, subscriber, rt.library, now, rt.settings.default_timezone)
    return ResubscribeOutcome(Resubscribe.ACTIVE)


def after_resubscribe(rt: Runtime, outcome: ResubscribeOutcome) -> None:
    """Send the confirmation a never-confirmed resubscriber needs (after the commit)."""
    send_now(rt, outcome.delivery_id)


def update_preferences(
    rt: Runtime,
    session: Session,
    subscriber: Subscriber,
    *,
    course_emails: bool,
    newsletter: bool,
) -> bool:
    """Store the two choices; neither ticked means unsubscribe from everything (returns True).

    Turning course emails off stops the course and upsell at once; turning them back on resumes
    them at the next send hour.
    """
    now = rt.clock()
    if subscriber.status == SubscriberStatus.ERASED:
        return False
    if not course_emails and not newsletter:
        unsubscribe(session, subscriber, now, "preferences-page")
        return True
    was_on = subscriber.course_emails
    subscriber.course_emails = course_emails
    subscriber.newsletter = newsletter
    if was_on and not course_emails:
        stop_enrollments(session, subscriber.id, "preferences")
    elif course_emails and not was_on and subscriber.status == SubscriberStatus.ACTIVE:
        session.flush()
        resume_enrollments(session, subscriber, rt.library, now, rt.settings.default_timezone)
    return False
