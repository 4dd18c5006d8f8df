"""Signup with double opt-in, confirmation resends, and the purge of stale pending signups.

:func:`signup` is the whole contract of a form post or a JSON webhook call, inside one
transaction. Whatever the state of the address, the caller answers the visitor the same way:
a signup never reveals whether someone is subscribed.

================  ==============================================================================
address is        what happens
================  ==============================================================================
new               subscriber ``pending``, consent row, tags, a queued confirmation email
pending           name/zone updated if given, tags added, consent row, a new confirmation email
                  (at most one every ``DRIP_CONFIRM_RESEND_MINUTES``, five a day)
unsubscribed      back to ``pending`` with a confirmation email: only the click reactivates
active            tags added and the consent row kept; no email, nothing else changes here
                  (:func:`signup_and_confirm` applies the form and new-tag events)
suppressed/erased nothing stored, nothing sent
================  ==============================================================================

The signup form (``data.form``, drip.content.forms) is stored on a new subscriber, and on a
pending or unsubscribed one, whose confirmation email is then in that form's wording and whose
click starts that form's sequence; an active subscriber keeps the form they came through.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, Result, and_, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from drip.engine.automations import handle
from drip.engine.consent import record_consent
from drip.engine.handover import Enqueue
from drip.models import (
    Consent,
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Subscriber,
    SubscriberStatus,
    TrackingEvent,
)
from drip.outgoing import SUBSCRIBER_SUBSCRIBED, emit, subscriber_data
from drip.store import one_of, store_for
from drip.subscribers.confirm import confirmation_key
from drip.subscribers.store import add_tags, find_by_email
from drip.subscribers.tags import tag_events
from drip.subscribers.validation import SignupData
from drip.suppress import is_suppressed

if TYPE_CHECKING:
    from drip.runtime import Runtime

log = logging.getLogger(__name__)

MAX_CONFIRMATIONS_PER_DAY = 5


@dataclass(frozen=True)
class SignupOutcome:
    """What :func:`signup` did. For logs and tests only: never shown to the visitor."""

    state: str  # new, pending, resubscribing, active, suppressed
    subscriber_id: int | None = None
    delivery_id: int | None = None  # a confirmation email to send now
    added_tags: tuple[str, ...] = ()  # tags the subscriber did not have before


def signup(
    session: Session, data: SignupData, *, now: datetime, channel: str, resend_every: timedelta
) -> SignupOutcome:
    """Store a validated signup (see the module's table). ``channel``: form, api, ..."""
    if is_suppressed(session, data.email):
        return SignupOutcome("suppressed")
    subscriber = find_by_email(session, data.email)
    state = "new" if subscriber is None else str(subscriber.status)
    if subscriber is None:
        subscriber = _create(session, data, now, channel)
        if subscriber is None:  # a concurrent signup of the same address won the insert
            subscriber = find_by_email(session, data.email)
            assert subscriber is not None
            state = str(subscriber.status)
    if subscriber.status == SubscriberStatus.ERASED:
        return SignupOutcome("suppressed")
    source = f"{channel}:{data.source}" if data.source else channel
    record_consent(
        session,
        subscriber,
        "signup",
        now,
        source=source,
        ip=data.ip,
        user_agent=data.user_agent,
        text=data.consent_text,
    )
    added = tuple(add_tags(session, subscriber, data.tags))
    if subscriber.status == SubscriberStatus.ACTIVE:
        subscriber.first_name = subscriber.first_name or data.first_name
        subscriber.time_zone = subscriber.time_zone or data.time_zone
        return SignupOutcome("active", subscriber.id, added_tags=added)
    if subscriber.status == SubscriberStatus.UNSUBSCRIBED:
        state = "resubscribing"
        subscriber.status = SubscriberStatus.PENDING
        subscriber.course_emails = subscriber.newsletter = True
    subscriber.first_name = data.first_name or subscriber.first_name
    subscriber.time_zone = data.time_zone or subscriber.time_zone
    subscriber.form = data.form  # the form their next click confirms
    session.flush()
    if state in ("new", "resubscribing"):  # a repeated signup while pending is no new event
        event = subscriber_data(
            subscriber.id, subscriber.email, first_name=subscriber.first_name, source=source
        )
        event["tags"] = sorted(data.tags)
        emit(session, None, SUBSCRIBER_SUBSCRIBED, event, now)
    delivery_id = queue_confirmation(session, subscriber.id, now, resend_every, form=data.form)
    return SignupOutcome(state, subscriber.id, delivery_id, added)


def _create(session: Session, data: SignupData, now: datetime, channel: str) -> Subscriber | None:
    subscriber = Subscriber(
        email=data.email,
        first_name=data.first_name,
        time_zone=data.time_zone,
        status=SubscriberStatus.PENDING,
        source=(data.source or channel)[:100],
        form=data.form,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(subscriber)
            session.flush()
    except IntegrityError:
        return None
    return subscriber


def queue_confirmation(
    session: Session,
    subscriber_id: int,
    now: datetime,
    resend_every: timedelta,
    *,
    form: str | None = None,
) -> int | None:
    """Write a queued confirmation delivery unless one went out too recently; its id or None.

    Its message key names the subscriber's signup form (``form``, else the stored one), so the
    email says what that form's confirmation says.
    """
    recent = list(
        session.scalars(
            select(Delivery.created_at).where(
                Delivery.subscriber_id == subscriber_id,
                Delivery.kind == DeliveryKind.CONFIRM,
                Delivery.created_at > now - timedelta(days=1),
            )
        )
    )
    if len(recent) >= MAX_CONFIRMATIONS_PER_DAY:
        return None
    if recent and max(recent) > now - resend_every:
        return None
    count = session.scalar(
        select(func.count())
        .select_from(Delivery)
        .where(Delivery.subscriber_id == subscriber_id, Delivery.kind == DeliveryKind.CONFIRM)
    )
    if form is None:
        form = session.scalar(select(Subscriber.form).where(Subscriber.id == subscriber_id))
    stmt = (
        store_for(session)
        .insert_ignore(Delivery, ["subscriber_id", "message_key"])
        .values(
            subscriber_id=subscriber_id,
            message_key=confirmation_key(form, (count or 0) + 1),
            kind=DeliveryKind.CONFIRM,
            status=DeliveryStatus.QUEUED,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        .returning(Delivery.id)
    )
    return session.scalar(stmt)


def hand_confirmation(enqueue: Enqueue, delivery_id: int | None) -> None:
    """Hand a queued confirmation to the workers: the request that signed someone up never
    waits for the email provider (a hanging SendGrid used to hold the form for 10 s). If the
    broker can't take it, the row stays ``queued`` and beat's stale-queue pass hands it over
    within 10 minutes: logged, never raised, the visitor still gets the thank-you page."""
    if delivery_id is None:
        return
    try:
        enqueue([delivery_id])
    except Exception:
        log.exception("confirmation %s not handed to the workers; beat will", delivery_id)


def signup_and_confirm(
    rt: Runtime, data: SignupData, channel: str, enqueue: Enqueue
) -> SignupOutcome:
    """:func:`signup` in its own transaction, then its confirmation email handed to the workers
    (sent within a second when they are up).

    For someone already active, the signup is the form's event and each new tag's (with its
    ``tag.added`` webhook), applied at once (drip.engine.automations): nothing waits for a
    confirmation they gave long ago. A pending subscriber's events wait for the click
    (drip.subscribers.confirm).
    """
    now = rt.clock()
    with rt.transaction() as session:
        outcome = signup(
            session,
            data,
            now=now,
            channel=channel,
            resend_every=timedelta(minutes=rt.settings.confirm_resend_minutes),
        )
        if outcome.state == "active" and outcome.subscriber_id is not None:
            handle(rt, session, "form", data.form, [outcome.subscriber_id], now)
            tag_events(rt, session, outcome.subscriber_id, (), outcome.added_tags, now)
    log.info("signup via %s: %s", channel, outcome.state)
    hand_confirmation(enqueue, outcome.delivery_id)
    return outcome


def resend_confirmation(rt: Runtime, email: str, enqueue: Enqueue) -> bool:
    """A new confirmation link for a pending address (from the expired-link page); True if sent.

    Nothing happens for any other state; the caller answers the same either way.
    """
    with rt.transaction() as session:
        subscriber = find_by_email(session, email)
        if (
            subscriber is None
            or subscriber.status != SubscriberStatus.PENDING
            or is_suppressed(session, email)
        ):
            return False
        delivery_id = queue_confirmation(
            session,
            subscriber.id,
            rt.clock(),
            timedelta(minutes=rt.settings.confirm_resend_minutes),
        )
    hand_confirmation(enqueue, delivery_id)
    return delivery_id is not None


def purge_pending(session: Session, now: datetime, days: int) -> int:
    """Delete signups still pending ``days`` after their last signup; returns how many.

    A never-confirmed signup goes entirely (its consent rows and confirmation deliveries with it).
    Someone who was subscribed before and signed up again without confirming keeps their history
    and goes back to ``unsubscribed``.
    """
    cutoff = now - timedelta(days=days)
    recent_signup = exists().where(
        Consent.subscriber_id == Subscriber.id,
        Consent.action == "signup",
        Consent.created_at >= cutoff,
    )
    stale = and_(
        Subscriber.status == SubscriberStatus.PENDING,
        Subscriber.created_at < cutoff,
        ~recent_signup,
    )
    reverted = _rowcount(
        session.execute(
            update(Subscriber)
            .where(stale, Subscriber.confirmed_at.is_not(None))
            .values(status=SubscriberStatus.UNSUBSCRIBED)
            .execution_options(synchronize_session=False)
        )
    )
    doomed = list(
        session.scalars(
            select(Subscriber.id)
            .where(stale, Subscriber.confirmed_at.is_(None))
            .order_by(Subscriber.id)
            .with_for_update()  # a signup arriving now waits, then finds them gone
        )
    )
    deleted = 0
    for start in range(0, len(doomed), _PURGE_CHUNK):
        deleted += _delete_subscribers(session, doomed[start : start + _PURGE_CHUNK])
    if reverted:
        log.info("purge: %d re-signups never confirmed, back to unsubscribed", reverted)
    return deleted


_PURGE_CHUNK = 1000


def _delete_subscribers(session: Session, ids: list[int]) -> int:
    """Delete these subscribers (their deliveries, consents and enrollments cascade).

    Their tracking events stay, as anonymous counts: ``tracking_events`` holds the delivery and
    subscriber ids without foreign keys (migration 0007), so they are cleared here.
    """
    deliveries = select(Delivery.id).where(one_of(Delivery.subscriber_id, ids, session))
    session.execute(
        update(TrackingEvent)
        .where(
            or_(
                one_of(TrackingEvent.subscriber_id, ids, session),
                TrackingEvent.delivery_id.in_(deliveries.scalar_subquery()),
            )
        )
        .values(delivery_id=None, subscriber_id=None)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(
        session.execute(
            delete(Subscriber)
            .where(one_of(Subscriber.id, ids, session))
            .execution_options(synchronize_session=False)
        )
    )


def _rowcount(result: Result[Any]) -> int:
    return int(cast("CursorResult[Any]", result).rowcount or 0)
