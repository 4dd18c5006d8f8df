"""Double opt-in: the click on the confirmation link activates and enrolls the subscriber."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row

from drip.content.types import DEFAULT_FORM
from drip.engine.automations import handle
from drip.engine.consent import record_consent
from drip.esp.base import Message
from drip.models import DeliveryKind, Subscriber, SubscriberStatus
from drip.outgoing import SUBSCRIBER_CONFIRMED, emit, subscriber_data
from drip.subscribers.store import resume_enrollments
from drip.suppress import is_suppressed
from drip.tokens import BadToken, ExpiredToken, expiring_token, read_expiring_token

if TYPE_CHECKING:
    from drip.runtime import Runtime

log = logging.getLogger(__name__)

CONFIRM_PURPOSE = "confirm"  # the purpose of every confirmation link's token


class ConfirmationSource:
    """The message source of the double opt-in email (see drip.engine.kinds): it goes to
    pending subscribers (and active ones asking again), with their own signed link."""

    kind = DeliveryKind.CONFIRM
    receivers = frozenset({SubscriberStatus.PENDING, SubscriberStatus.ACTIVE})

    def message(self, rt: Runtime, message_key: str) -> Message:
        return rt.renderer.confirmation()

    def exit_reason(self, rt: Runtime, subscriber: Row[Any], sequence: str | None) -> str | None:
        return None

    def recipient_fields(self, rt: Runtime, subscriber_id: int, now: datetime) -> dict[str, str]:
        token = expiring_token(rt.secret, CONFIRM_PURPOSE, str(subscriber_id), now=now)
        return {"confirm_url": f"{rt.settings.public_url}/confirm/{token}"}


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

    Confirming is the ``form`` event of the subscriber's signup form (drip.engine.automations):
    the sequences it starts follow their ``first_lesson`` rule, due at once or at the next send
    hour in the subscriber's zone. A re-confirmation after an unsubscribe resumes where they
    stopped.
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
        # The form's sequences start; so do those of the tags the signup applied (a pending
        # subscriber starts nothing, so their tag events wait for this moment).
        ids = [subscriber.id]
        handle(rt, session, "form", subscriber.form or DEFAULT_FORM, ids, now)
        for tag in sorted(t.name for t in subscriber.tags):
            handle(rt, session, "tag_added", tag, ids, now)
        resume_enrollments(session, subscriber, rt.library, now, rt.settings.default_timezone)
        event = subscriber_data(subscriber.id, subscriber.email, first_name=subscriber.first_name)
        emit(session, None, SUBSCRIBER_CONFIRMED, event, now)
        log.info("subscriber %s confirmed", subscriber.id)
        return ConfirmOutcome(ConfirmState.CONFIRMED, subscriber.first_name)
