"""Unsubscribe, resubscribe and email preferences, all reached through a signed link.

The link's token (:func:`drip.tokens.subscriber_token`, purpose ``unsubscribe``) never expires and
names one subscriber. An unsubscribe takes effect at once: the status changes in this transaction
and :mod:`drip.dispatch` checks it right before every send, so a queued email is skipped.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, insert, update
from sqlalchemy.orm import Session

from drip.db import one_of
from drip.engagement import First, credit_unsubscribes
from drip.enrollments import stop_enrollments, stop_enrollments_of
from drip.models import Consent, Subscriber, SubscriberStatus
from drip.runtime import UNSUBSCRIBE_PURPOSE, Runtime
from drip.subscribers.signup import queue_confirmation, send_now
from drip.subscribers.store import consent_row, record_consent, resume_enrollments
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
    if subscriber.id is None:
        session.flush()
    changed = bool(unsubscribe_many(session, [subscriber.id], now, source))
    if changed:  # written by unsubscribe_many's UPDATE: read again on next use
        session.expire(subscriber, ["status", "unsubscribed_at"])
    return changed


def unsubscribe_many(
    session: Session,
    subscriber_ids: Iterable[int],
    now: datetime,
    source: str,
    firsts: list[First] | None = None,
) -> list[int]:
    """Unsubscribe these subscribers; returns the ids that changed, in order (not those already
    unsubscribed or erased).

    The one path of every unsubscribe (our link, the List-Unsubscribe POST, the admin, an import,
    a provider's event): the status, a consent row, the enrollments stopped and the last email
    credited. Plain statements, a few whatever the number: a provider's batch may hold dozens,
    and loading each subscriber as an object cost more than all the rest of the batch's effects.
    Objects of these subscribers already in the session are not refreshed (``unsubscribe`` does).
    ``firsts``: see :func:`drip.engagement.credit_unsubscribes`.
    """
    ids = sorted(set(subscriber_ids))
    if not ids:
        return []
    table = cast(Table, Subscriber.__table__)
    changed = sorted(
        session.scalars(
            update(table)
            .where(
                one_of(table.c.id, ids, session),
                table.c.status.not_in([SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.ERASED]),
            )
            .values(status=SubscriberStatus.UNSUBSCRIBED, unsubscribed_at=now)
            .returning(table.c.id)
        )
    )
    if not changed:
        return []
    session.execute(
        insert(cast(Table, Consent.__table__)),
        [consent_row(sid, "unsubscribe", now, source=source) for sid in changed],
    )
    stop_enrollments_of(session, changed, "unsubscribed")
    credit_unsubscribes(session, changed, now, firsts)  # per-email unsubscribes (issue 5 stats)
    for subscriber_id in changed:
        log.info("subscriber %s unsubscribed (%s)", subscriber_id, source)
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
