"""The consent log and the one unsubscribe path, below every feature that changes consent.

Every change of consent (a signup's confirmation, an unsubscribe by link, by the admin, by an
import, by a provider's event) writes one row of the consent log, with where it came from.
:func:`unsubscribe_many` is the single path of every unsubscribe, so that the webhook ingest
(:mod:`drip.ingest`) and the subscriber pages share it without importing each other.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, update
from sqlalchemy.orm import Session

from drip.engagement import First, credit_unsubscribes
from drip.engine.enrollments import stop_enrollments_of
from drip.models import Consent, Subscriber, SubscriberStatus
from drip.outgoing import SUBSCRIBER_UNSUBSCRIBED, emit_for_subscribers
from drip.store import one_of

log = logging.getLogger(__name__)

SOURCE_MAX = 100  # Subscriber.source, Consent.source
USER_AGENT_MAX = 512
# C0 and C1 controls, DEL, and the Unicode line/paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def clip(value: str | None, limit: int) -> str | None:
    """Truncate an informational value (user agent) instead of refusing the signup over it."""
    if value is None:
        return None
    return _CONTROL.sub("", value)[:limit] or None


def record_consent(
    session: Session,
    subscriber: Subscriber,
    action: str,
    now: datetime,
    *,
    source: str = "",
    ip: str | None = None,
    user_agent: str | None = None,
    text: str = "",
) -> Consent:
    """One row of the consent log: what happened, when, where, from which IP and browser."""
    consent = Consent(
        **consent_row(
            subscriber.id, action, now, source=source, ip=ip, user_agent=user_agent, text=text
        )
    )
    session.add(consent)
    return consent


def consent_row(
    subscriber_id: int,
    action: str,
    now: datetime,
    *,
    source: str = "",
    ip: str | None = None,
    user_agent: str | None = None,
    text: str = "",
) -> dict[str, Any]:
    """The columns of one consent-log row (for :func:`record_consent` and bulk inserts)."""
    return {
        "subscriber_id": subscriber_id,
        "action": action,
        "created_at": now,
        "source": source[:SOURCE_MAX],
        "ip": ip,
        "user_agent": clip(user_agent, USER_AGENT_MAX),
        "text": text,
    }


def unsubscribe(
    session: Session,
    subscriber: Subscriber,
    now: datetime,
    source: str,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
) -> bool:
    """Unsubscribe from everything; False if there was nothing to do (already out, or erased).
    ``ip`` and ``user_agent``: the request's, kept in the consent row (GDPR Art. 7)."""
    if subscriber.id is None:
        session.flush()
    changed = bool(
        unsubscribe_many(session, [subscriber.id], now, source, ip=ip, user_agent=user_agent)
    )
    if changed:  # written by unsubscribe_many's UPDATE: read again on next use
        session.expire(subscriber, ["status", "unsubscribed_at"])
    return changed


def unsubscribe_many(
    session: Session,
    subscriber_ids: Iterable[int],
    now: datetime,
    source: str,
    firsts: list[First] | None = None,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
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
        [
            consent_row(sid, "unsubscribe", now, source=source, ip=ip, user_agent=user_agent)
            for sid in changed
        ],
    )
    stop_enrollments_of(session, changed, "unsubscribed")
    credit_unsubscribes(session, changed, now, firsts)  # the email that lost them, for stats
    emit_for_subscribers(session, None, SUBSCRIBER_UNSUBSCRIBED, changed, now, {"source": source})
    for subscriber_id in changed:
        log.info("subscriber %s unsubscribed (%s)", subscriber_id, source)
    return changed
