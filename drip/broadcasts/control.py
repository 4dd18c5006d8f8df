"""Pause, resume and cancel: effective within one batch.

**Pause** stops the page chain (its next page sees the status) and *holds* every delivery of the
broadcast that is still ``queued``: they become ``skipped`` with the error :data:`HELD`, so the
send tasks already in the queue find nothing to claim (dispatch claims ``queued`` rows only).
What still goes out after a pause is what a worker had claimed already: at most one batch per
worker process. **Resume** un-holds them (``queued`` again, marked :data:`~drip.broadcasts.
control.RESUMED` so that the next page re-enqueues them) and lets a new chain take over at once.
**Cancel** is final: held and queued deliveries become ``skipped`` ("broadcast cancelled").

Each function runs in the caller's transaction and holds the broadcast's row lock, so it waits
for a page being written and the page after it sees the new status.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy import CursorResult, and_, or_, update
from sqlalchemy.orm import Session

from drip.broadcasts import zones
from drip.broadcasts.status import (
    SCHEDULER,
    BroadcastStatus,
    get_broadcast,
    require,
    transition,
)
from drip.errors import InvalidInput
from drip.models import Broadcast, Delivery, DeliveryStatus

if TYPE_CHECKING:
    from drip.runtime import Runtime

HELD = "held: broadcast paused"
RESUMED = "resumed"  # error mark of rows a resume released, until a page re-queues them
CANCELLED = "broadcast cancelled"


def _changed(session: Session, stmt: Any) -> int:
    result = session.execute(stmt.execution_options(synchronize_session=False))
    return cast(CursorResult[Any], result).rowcount or 0


def pause(session: Session, broadcast_id: int, *, actor: str, now: datetime) -> Broadcast:
    """``scheduled``/``sending`` -> ``paused``; queued deliveries are held."""
    broadcast = get_broadcast(session, broadcast_id, lock=True)
    held = _changed(
        session,
        update(Delivery)
        .where(Delivery.broadcast_id == broadcast_id, Delivery.status == DeliveryStatus.QUEUED)
        .values(status=DeliveryStatus.SKIPPED, error=HELD, updated_at=now),
    )
    transition(
        session,
        broadcast,
        BroadcastStatus.PAUSED,
        action="paused",
        actor=actor,
        now=now,
        note=f"{held} queued emails held",
    )
    return broadcast


def resume(session: Session, broadcast_id: int, *, actor: str, now: datetime) -> Broadcast:
    """``paused`` -> ``sending`` (or ``scheduled`` if it had not started); held deliveries go
    back to ``queued``. The caller (or beat, within a minute) starts a new page chain."""
    broadcast = get_broadcast(session, broadcast_id, lock=True)
    require(broadcast, frozenset({BroadcastStatus.PAUSED}), "resume")
    target = BroadcastStatus.SENDING if broadcast.started_at else BroadcastStatus.SCHEDULED
    released = _changed(
        session,
        update(Delivery)
        .where(
            Delivery.broadcast_id == broadcast_id,
            Delivery.status == DeliveryStatus.SKIPPED,
            Delivery.error == HELD,
        )
        .values(status=DeliveryStatus.QUEUED, error=RESUMED, updated_at=now),
    )
    transition(
        session,
        broadcast,
        target,
        action="resumed",
        actor=actor,
        now=now,
        note=f"{released} held emails released",
    )
    broadcast.runner, broadcast.heartbeat_at = None, None  # any new chain may take over now
    return broadcast


def cancel(session: Session, broadcast_id: int, *, actor: str, now: datetime) -> Broadcast:
    """Any unfinished status -> ``cancelled``; nothing more of it is sent. (An illegal
    transition raises after the update: the caller's transaction rolls both back.)"""
    broadcast = get_broadcast(session, broadcast_id, lock=True)
    dropped = _changed(
        session,
        update(Delivery)
        .where(
            Delivery.broadcast_id == broadcast_id,
            or_(
                Delivery.status == DeliveryStatus.QUEUED,
                and_(Delivery.status == DeliveryStatus.SKIPPED, Delivery.error == HELD),
            ),
        )
        .values(status=DeliveryStatus.SKIPPED, error=CANCELLED, updated_at=now),
    )
    transition(
        session,
        broadcast,
        BroadcastStatus.CANCELLED,
        action="cancelled",
        actor=actor,
        now=now,
        note=f"{dropped} unsent emails dropped",
    )
    broadcast.finished_at = now
    return broadcast


def halt(rt: Runtime, broadcast_id: int, err: InvalidInput, now: datetime) -> None:
    """Pause a broadcast whose segment no longer compiles, saying why in its audit trail."""
    with rt.transaction() as session:
        b = get_broadcast(session, broadcast_id, lock=True)
        if b.status in (BroadcastStatus.SCHEDULED, BroadcastStatus.SENDING):
            transition(
                session,
                b,
                BroadcastStatus.PAUSED,
                action="paused",
                actor=SCHEDULER,
                now=now,
                note=f"segment no longer valid: {err}",
            )


class Action(Protocol):
    def __call__(
        self, session: Session, broadcast_id: int, *, actor: str, now: datetime
    ) -> Broadcast: ...


# The status changes a person can ask for by name (CLI, admin API, dashboard): one table for all.
ACTIONS: dict[str, Action] = {
    "unschedule": zones.unschedule,
    "pause": pause,
    "resume": resume,
    "cancel": cancel,
}
