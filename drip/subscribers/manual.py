"""Starting a sequence by hand: the ``manual`` trigger, for one subscriber and one sequence.

Only a sequence whose sequence.toml lists ``[[triggers]] on = "manual"`` may be started this way
(the others start on what their triggers say). The rules of every start apply
(drip.engine.automations): active subscribers only, once ever unless ``reentry = true``. When
nothing can start, :class:`StartRefused` says why; the caller's transaction is left as it was.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from drip.engine.automations import start
from drip.errors import DripError
from drip.models import Enrollment, EnrollmentStatus, Subscriber, SubscriberStatus

if TYPE_CHECKING:
    from drip.runtime import Runtime

__all__ = ["MANUAL", "Refusal", "StartRefused", "Started", "start_by_hand"]

MANUAL = "manual"


class Refusal(enum.StrEnum):
    UNKNOWN_SEQUENCE = "unknown_sequence"
    NOT_MANUAL = "not_manual"  # the sequence has no manual trigger
    NOT_ACTIVE = "not_active"  # pending, unsubscribed or erased
    IN_IT = "in_it"  # in the sequence now
    DONE = "done"  # went through it (completed or stopped) and it allows no re-entry


class StartRefused(DripError):
    """Nothing started; ``field`` (``slug`` or ``email``) and ``message`` say why."""

    def __init__(self, reason: Refusal, field: str, message: str) -> None:
        self.reason = reason
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Started:
    sequence: str
    entry: int  # 1 the first time, 2 after one re-entry...
    next_send_at: datetime | None


def start_by_hand(
    rt: Runtime, session: Session, subscriber: Subscriber, slug: str, now: datetime
) -> Started:
    """Start ``slug`` for ``subscriber`` now (trigger ``manual``); :class:`StartRefused` if not."""
    sequence = rt.library.get(slug)
    if sequence is None:
        known = ", ".join(sorted(rt.library)) or "none"
        raise StartRefused(
            Refusal.UNKNOWN_SEQUENCE, "slug", f"no sequence {slug!r} (known: {known})"
        )
    if slug not in {s.slug for s in rt.automations.started_by(MANUAL)}:
        raise StartRefused(
            Refusal.NOT_MANUAL,
            "slug",
            f"sequence {slug!r} is not started by hand: its sequence.toml has no "
            '[[triggers]] on = "manual"',
        )
    if subscriber.status != SubscriberStatus.ACTIVE:
        raise StartRefused(
            Refusal.NOT_ACTIVE,
            "email",
            f"the subscriber is {subscriber.status}: sequences start for active subscribers only",
        )
    fallback = rt.settings.default_timezone
    started = start(session, [subscriber.id], sequence, now, fallback, MANUAL)
    enrollment = session.execute(
        select(Enrollment.status, Enrollment.entry, Enrollment.next_send_at).where(
            Enrollment.subscriber_id == subscriber.id, Enrollment.sequence == slug
        )
    ).one_or_none()
    if started and enrollment is not None:
        return Started(slug, enrollment.entry, enrollment.next_send_at)
    if enrollment is not None and enrollment.status == EnrollmentStatus.ACTIVE:
        raise StartRefused(Refusal.IN_IT, "slug", f"the subscriber is in {slug!r} already")
    raise StartRefused(
        Refusal.DONE,
        "slug",
        f"the subscriber went through {slug!r} before and it allows no re-entry "
        "(reentry = true in its sequence.toml would allow it)",
    )
