"""The status machine of a broadcast, and its audit trail.

::

    draft ──schedule──> scheduled ──(due, beat)──> sending ──(all sent)──> sent
      ^                  │   │  ^                   │  ^
      └───unschedule─────┘   │  └──resume── paused ─┘  └─resume─ (paused after it started)
                             └──pause──────> paused
    cancel: from draft, scheduled, sending or paused -> cancelled

``sent`` and ``cancelled`` are final. Every change, and every edit or test send, is one
:class:`~drip.models.BroadcastEvent` row: who, when, which action, the status before and after.
A change the machine does not allow raises :class:`IllegalTransition`, which names the broadcast,
its status, the refused action and what is possible instead.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy.orm import Session

from drip.errors import DripError
from drip.models import Broadcast, BroadcastEvent


class BroadcastStatus(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    SENT = "sent"
    PAUSED = "paused"
    CANCELLED = "cancelled"


S = BroadcastStatus
TRANSITIONS: dict[str, frozenset[str]] = {
    S.DRAFT: frozenset({S.SCHEDULED, S.CANCELLED}),
    # scheduled -> scheduled is a reschedule: a new time, recorded like any change.
    S.SCHEDULED: frozenset({S.SCHEDULED, S.DRAFT, S.SENDING, S.PAUSED, S.CANCELLED}),
    S.SENDING: frozenset({S.PAUSED, S.CANCELLED, S.SENT}),
    S.PAUSED: frozenset({S.SCHEDULED, S.SENDING, S.CANCELLED}),
    S.SENT: frozenset(),
    S.CANCELLED: frozenset(),
}
EDITABLE = frozenset({S.DRAFT, S.SCHEDULED})  # content may change until the first page goes out
FINAL = frozenset({S.SENT, S.CANCELLED})
SCHEDULER = "scheduler"  # the actor of changes made by beat
# Audit actions are past tense; an error says what could not be done.
_IMPERATIVE = {
    "scheduled": "schedule",
    "rescheduled": "reschedule",
    "unscheduled": "unschedule",
    "started": "start",
    "paused": "pause",
    "resumed": "resume",
    "cancelled": "cancel",
    "finished": "finish",
}


class BroadcastError(DripError):
    """Base of the broadcast errors that are not bad input."""


class BroadcastNotFound(BroadcastError, LookupError):
    def __init__(self, broadcast_id: int) -> None:
        self.broadcast_id = broadcast_id
        super().__init__(f"no broadcast {broadcast_id}")


class IllegalTransition(BroadcastError, ValueError):
    """The status machine refuses ``action`` for a broadcast in status ``current``."""

    def __init__(self, broadcast_id: int, current: str, action: str) -> None:
        self.broadcast_id = broadcast_id
        self.current = current
        self.action = action
        allowed = sorted(TRANSITIONS.get(current, frozenset()))
        hint = f"from {current} it can go to: {', '.join(allowed)}" if allowed else "it is final"
        verb = _IMPERATIVE.get(action, action)
        super().__init__(f"broadcast {broadcast_id} is {current}: cannot {verb} it ({hint})")


def get_broadcast(session: Session, broadcast_id: int, *, lock: bool = False) -> Broadcast:
    """The broadcast, row-locked on PostgreSQL when ``lock`` (SQLite transactions are already
    single-writer); :class:`BroadcastNotFound` if there is none."""
    broadcast = session.get(Broadcast, broadcast_id, with_for_update=lock)
    if broadcast is None:
        raise BroadcastNotFound(broadcast_id)
    return broadcast


def record(
    session: Session,
    broadcast: Broadcast,
    *,
    action: str,
    actor: str,
    now: datetime,
    from_status: str | None,
    note: str | None = None,
) -> BroadcastEvent:
    """Append one audit row (the broadcast must have an id: flush it first)."""
    event = BroadcastEvent(
        broadcast_id=broadcast.id,
        at=now,
        actor=actor[:100] or "unknown",
        action=action,
        from_status=from_status,
        to_status=broadcast.status,
        note=note,
    )
    session.add(event)
    return event


def require(broadcast: Broadcast, allowed: frozenset[str], action: str) -> None:
    """Raise :class:`IllegalTransition` unless the broadcast's status is in ``allowed``."""
    if broadcast.status not in allowed:
        raise IllegalTransition(broadcast.id, broadcast.status, action)


def transition(
    session: Session,
    broadcast: Broadcast,
    to: BroadcastStatus,
    *,
    action: str,
    actor: str,
    now: datetime,
    note: str | None = None,
) -> None:
    """Move ``broadcast`` to ``to`` and record who did it, or raise :class:`IllegalTransition`."""
    current = broadcast.status
    if to not in TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(broadcast.id, current, action)
    broadcast.status = to
    record(session, broadcast, action=action, actor=actor, now=now, from_status=current, note=note)
