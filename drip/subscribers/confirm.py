"""Double opt-in: the click on the confirmation link activates and enrolls the subscriber."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row

from drip.content.forms import Form
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
# What every confirmation email's footer says, whatever the form (as Renderer.confirmation).
CONFIRM_FOOTER = "You are getting this because this address was entered on our form."


def confirmation_key(form: str | None, number: int) -> str:
    """The message key of a subscriber's ``number``-th confirmation email for ``form``:
    ``confirm/<n>`` for the default form (as before forms), ``confirm/<form>/<n>`` otherwise,
    so that the emails of one form share one rendered message."""
    if form is None or form == DEFAULT_FORM:
        return f"confirm/{number}"
    return f"confirm/{form}/{number}"


def form_of_key(message_key: str) -> str:
    """The form a confirmation's message key names (:func:`confirmation_key`)."""
    parts = message_key.split("/")
    return parts[1] if len(parts) == 3 else DEFAULT_FORM


class ConfirmationSource:
    """The message source of the double opt-in email (see drip.engine.kinds): it goes to
    pending subscribers (and active ones asking again), with their own signed link, in the
    wording of the form they signed up through (drip.content.forms); a form that no longer
    exists falls back to the default form's wording."""

    kind = DeliveryKind.CONFIRM
    receivers = frozenset({SubscriberStatus.PENDING, SubscriberStatus.ACTIVE})

    def __init__(self) -> None:
        self._by_form: dict[str, Message] = {}  # rendered once per form, like lessons

    def message(self, rt: Runtime, message_key: str) -> Message:
        form = rt.forms.get(form_of_key(message_key)) or rt.forms[DEFAULT_FORM]
        if form.confirm.is_builtin:
            return rt.renderer.confirmation()  # today's email, byte for byte
        if form.slug not in self._by_form:
            self._by_form[form.slug] = _compile(rt, form)
        return self._by_form[form.slug]

    def exit_reason(self, rt: Runtime, subscriber: Row[Any], sequence: str | None) -> str | None:
        return None

    def recipient_fields(self, rt: Runtime, subscriber_id: int, now: datetime) -> dict[str, str]:
        token = expiring_token(rt.secret, CONFIRM_PURPOSE, str(subscriber_id), now=now)
        return {"confirm_url": f"{rt.settings.public_url}/confirm/{token}"}


def _compile(rt: Runtime, form: Form) -> Message:
    """The confirmation email in ``form``'s wording, in today's layout (email/confirm.*)."""
    wording = form.confirm
    body = wording.intro
    if body is None:
        body = (rt.settings.templates_dir / "email" / "confirm.md").read_text(encoding="utf-8")
    return rt.renderer.compile(
        message_key=f"confirm/{form.slug}",
        template="confirm",
        subject=wording.subject,
        preheader=wording.preheader,
        body_md=body,
        category="confirm",
        brand=str(rt.renderer.shared_context()["course_name"]),
        footer_reason=CONFIRM_FOOTER,
        extra={
            "confirm_days": rt.settings.confirm_max_age_days,
            "confirm_button": wording.button,
        },
        tracked=False,  # transactional: no pixel, and its one link is per recipient
    )


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
