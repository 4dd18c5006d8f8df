"""Unsubscribe, resubscribe and email preferences, all reached through a signed link.

The link's token (:func:`drip.tokens.subscriber_token`, purpose ``unsubscribe``) never expires and
names one subscriber. An unsubscribe takes effect at once: the status changes in this transaction
and :mod:`drip.engine.dispatch` checks it right before every send, so a queued email is skipped.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from drip.engine.consent import record_consent, unsubscribe
from drip.engine.enrollments import stop_enrollments
from drip.engine.handover import Enqueue
from drip.models import Subscriber, SubscriberStatus
from drip.subscribers.signup import hand_confirmation, queue_confirmation
from drip.subscribers.store import resume_enrollments
from drip.suppress import is_suppressed
from drip.tokens import UNSUBSCRIBE_PURPOSE, BadToken, read_subscriber_token

if TYPE_CHECKING:
    from drip.runtime import Runtime

log = logging.getLogger(__name__)


def subscriber_from_token(session: Session, secret: str, token: str) -> Subscriber | None:
    """The subscriber an unsubscribe token names, or None if the token is not genuine."""
    try:
        subscriber_id = read_subscriber_token(secret, UNSUBSCRIBE_PURPOSE, token)
    except BadToken:
        return None
    return session.get(Subscriber, subscriber_id)


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


def after_resubscribe(outcome: ResubscribeOutcome, enqueue: Enqueue) -> None:
    """Hand over the confirmation a never-confirmed resubscriber needs (after the commit)."""
    hand_confirmation(enqueue, outcome.delivery_id)


def update_preferences(
    rt: Runtime,
    session: Session,
    subscriber: Subscriber,
    *,
    course_emails: bool,
    newsletter: bool,
    ip: str | None = None,
    user_agent: str | None = None,
) -> bool:
    """Store the two choices; neither ticked means unsubscribe from everything (returns True),
    recorded with the request's ``ip`` and ``user_agent``.

    Turning course emails off stops the course and upsell at once; turning them back on resumes
    them at the next send hour.
    """
    now = rt.clock()
    if subscriber.status == SubscriberStatus.ERASED:
        return False
    if not course_emails and not newsletter:
        unsubscribe(session, subscriber, now, "preferences-page", ip=ip, user_agent=user_agent)
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
