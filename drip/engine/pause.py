"""Switches shared by every worker: the failure streak and the sending pause.

Too many sends refused in a row for reasons a retry can't fix (a revoked API key, requests the
provider refuses as malformed) pause all sending with the reason recorded, instead of burning
through the whole list (listmonk's ``MaxSendErrors``). Throttles (429, 5xx), outages and
refusals of one address never count (:mod:`drip.engine.outcomes`). A paused sender asks the provider
every ``DRIP_SENDING_PROBE_SECONDS`` whether it would take email again (:func:`probe_due`,
:func:`note_probe`) and resumes by itself when it would; ``drip sending resume`` clears the pause
at once. Either way the emails that waited are queued again at once
(drip.engine.claim.requeue_waiting).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from drip.models import EngineState

PAUSED = "sending_paused"
STREAK = "failure_streak"


def paused_reason(session: Session) -> str | None:
    """Why sending is paused, or None when it is not."""
    value = session.scalar(select(EngineState.value).where(EngineState.key == PAUSED))
    return str(value["reason"]) if value else None


def probe_due(session: Session, now: datetime, interval: float) -> bool:
    """True when sending is paused and the provider was last asked ``interval`` seconds ago."""
    value = session.scalar(select(EngineState.value).where(EngineState.key == PAUSED))
    if not value:
        return False
    last = value.get("probed_at") or value.get("since")
    return not last or (now - datetime.fromisoformat(last)).total_seconds() >= interval


def note_probe(session: Session, now: datetime, error: str) -> None:
    """Record a probe that found the provider still refusing."""
    row = session.get(EngineState, PAUSED, with_for_update=True)
    if row is not None:
        row.value = {**row.value, "probed_at": now.isoformat(), "probe_error": error}
        session.flush()


def pause(session: Session, reason: str, now: datetime) -> None:
    row = session.get(EngineState, PAUSED)
    if row is None:
        session.add(EngineState(key=PAUSED, value={"reason": reason, "since": now.isoformat()}))
    else:
        row.value = {"reason": reason, "since": now.isoformat()}
    session.flush()


def resume(session: Session) -> bool:
    """Lift the pause and reset the streak; False if sending was not paused."""
    row = session.get(EngineState, PAUSED)
    streak = session.get(EngineState, STREAK)
    if streak is not None:
        streak.value = {"count": 0}
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def record_outcome(
    session: Session,
    *,
    succeeded: int,
    failed: int,
    last_error: str | None,
    limit: int,
    now: datetime,
) -> str | None:
    """Update the streak of consecutive failures; pause and return the reason past ``limit``."""
    if succeeded:
        # The common case, a healthy batch: skip the row lock unless there is a streak to reset.
        current = session.scalar(select(EngineState.value).where(EngineState.key == STREAK))
        if not current or not current.get("count"):
            return None
    row = session.get(EngineState, STREAK, with_for_update=True)
    if row is None:
        row = EngineState(key=STREAK, value={"count": 0})
        session.add(row)
    count = 0 if succeeded else int(row.value.get("count", 0)) + failed
    row.value = {"count": count, "last_error": last_error}
    session.flush()
    if count >= limit:
        reason = f"{count} sends failed in a row; last error: {last_error}"
        pause(session, reason, now)
        return reason
    return None
