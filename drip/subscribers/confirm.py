"""Double opt-in: the click on the confirmation link activates and enrolls the subscriber."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from drip.dispatch import CONFIRM_PURPOSE
from drip.enrollments import enroll
from drip.models import Subscriber, SubscriberStatus
from drip.runtime import Runtime
from drip.subscribers.store import record_consent, resume_enrollments
from drip.suppress import is_suppressed
from drip.tokens import BadToken, ExpiredToken, read_expiring_token

log = logging.getLogger(__name__)


class ConfirmState(enum.StrEnum):
    CONFIRMED = "confirmed"  # just now
    ALREADY = "already"  # the link was used before: the subscriber is active
    EXPIRED = "expired"  # genuine but too old: ask for a new one
    INVALID = "invalid"  # tampered, unknown, erased, suppressed or unsubscribed since


@dataclass(frozen=True)
class ConfirmOutcome:
    state: ConfirmState
    first_name: str = ""


def confirm(
    rt: Runtime, token: str, *, ip: str | None = None, user_agent: str | None = None
) -> ConfirmOutcome:
    """Check ``token`` and, if it is good and the subscriber pending, activate and enroll them.

    Enrollment follows the course's ``first_lesson`` rule: due at once or at the next send hour
    in the subscriber's zone. A re-confirmation after an unsubscribe resumes where they stopped.
    """
    now = rt.clock()
    try:
        payload = read_expiring_token(
            rt.secret,
            CONFIRM_PURPOSE,
            token,
            now=now,
            max_age_seconds=rt.settings.confirm_max_age_days * 86_400,
        )
    except ExpiredToken:
        return ConfirmOutcome(ConfirmState.EXPIRED)
    except BadToken:
        return ConfirmOutcome(ConfirmState.INVALID)
    if not payload.isdigit():
        return ConfirmOutcome(ConfirmState.INVALID)
    with rt.transaction() as session:
        subscriber = session.get(Subscriber, int(payload), with_for_update=True)
        if subscriber is None or subscriber.email is None:
            return ConfirmOutcome(ConfirmState.INVALID)
        if subscriber.status == SubscriberStatus.ACTIVE:
            return ConfirmOutcome(ConfirmState.ALREADY, subscriber.first_name)
        if subscriber.status != SubscriberStatus.PENDING or is_suppressed(
            session, subscriber.email
        ):
            return ConfirmOutcome(ConfirmState.INVALID)
        subscriber.status = SubscriberStatus.ACTIVE
        subscriber.confirmed_at = now
        subscriber.unsubscribed_at = None
        record_consent(
            session, subscriber, "confirm", now, source="confirm-link", ip=ip, user_agent=user_agent
        )
        session.flush()
        settings = rt.settings
        enroll(session, subscriber, rt.course(), now, settings.default_timezone)
        resume_enrollments(session, subscriber, rt.library, now, settings.default_timezone)
        log.info("subscriber %s confirmed", subscriber.id)
        return ConfirmOutcome(ConfirmState.CONFIRMED, subscriber.first_name)
