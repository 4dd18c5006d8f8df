"""How sending is doing, for people: the pause, the emails in each unsettled state, what to do.

One read used by ``drip stats``, ``GET /api/v1/admin/stats`` and the dashboard (the overview's
banner, the Sending page), so they never disagree. Every count reads a partial index of
``deliveries`` (in flight: queued, sending; unsettled: unknown, failed), so the cost follows the
few rows that are not settled, not the millions that were sent.

- :func:`attention` is the cheap part, what a person must look at: the pause, unknown rows past
  ``DRIP_UNKNOWN_SETTLE_MINUTES``, failures of the last :data:`RECENT_FAILURES` (the overview
  shows it on every view, uncached, so a pause is never a minute late there).
- :func:`collect` adds the counts per state (queued can be large during a broadcast).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from drip.engine import pause as engine_state
from drip.engine.reconcile import counts_by_status, settle_cutoff, waiting_rows
from drip.models import Delivery, DeliveryStatus, EngineState

RECENT_FAILURES = timedelta(days=7)


@dataclass(frozen=True)
class Pause:
    """Sending is paused (drip.engine.pause): why, since when, the last probe's answer."""

    reason: str
    since: datetime | None
    probed_at: datetime | None
    probe_error: str | None


@dataclass(frozen=True)
class Attention:
    """What needs a person: a pause, unknown rows with no word in time, recent failures."""

    pause: Pause | None
    unknown_due: int  # unknown rows past the settle time: a person decides
    failed_recent: int  # failed rows that failed within RECENT_FAILURES

    @property
    def needed(self) -> bool:
        return self.pause is not None or self.unknown_due > 0 or self.failed_recent > 0


@dataclass(frozen=True)
class SendingHealth:
    """:class:`Attention` plus how many deliveries are in each unsettled state."""

    attention: Attention
    counts: dict[str, int]  # queued, sending, unknown, failed (always all four keys)
    settle_minutes: int

    @property
    def unknown_awaiting(self) -> int:
        """Unknown rows within the settle time: the provider's events may still settle them."""
        return max(0, self.counts[DeliveryStatus.UNKNOWN] - self.attention.unknown_due)

    def advice(self) -> list[str]:
        """One sentence per thing to do, naming the command; empty when all is well."""
        lines = []
        if self.attention.pause is not None:
            lines.append(
                "Sending is paused: `drip sending status` says why; fix the cause, then "
                "`drip sending resume` (or wait: it resumes by itself once the provider answers)."
            )
        if self.attention.unknown_due:
            lines.append(
                f"{self.attention.unknown_due} unknown (maybe sent, no word from the provider "
                f"after {self.settle_minutes} minutes): `drip deliveries unknown` lists them; "
                "check the provider's activity log, then `drip deliveries resend ID...` "
                "(or `--all-unknown`) for those that never arrived."
            )
        elif self.unknown_awaiting:
            lines.append(
                f"{self.unknown_awaiting} unknown still await the provider's events; those with "
                f"no word after {self.settle_minutes} minutes show in `drip deliveries unknown`."
            )
        failed = self.counts[DeliveryStatus.FAILED]
        if failed:
            lines.append(
                f"{failed} failed: `drip deliveries failed` lists them with the reason; "
                "`drip deliveries resend ID...` queues one again (a failed lesson goes again "
                "the next allowed day by itself)."
            )
        return lines


def _pause(session: Session) -> Pause | None:
    value = session.scalar(select(EngineState.value).where(EngineState.key == engine_state.PAUSED))
    if not value:
        return None
    return Pause(
        reason=str(value.get("reason", "")),
        since=_moment(value.get("since")),
        probed_at=_moment(value.get("probed_at")),
        probe_error=value.get("probe_error"),
    )


def _moment(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) and text else None


def _count(session: Session, status: str, *conditions: Any) -> int:
    stmt = select(func.count()).select_from(Delivery).where(Delivery.status == status, *conditions)
    return int(session.scalar(stmt) or 0)


def attention(session: Session, now: datetime, settle_minutes: int) -> Attention:
    """The pause and the unsettled rows a person should look at (two small index counts)."""
    cutoff = settle_cutoff(now, settle_minutes)
    return Attention(
        pause=_pause(session),
        unknown_due=_count(session, DeliveryStatus.UNKNOWN, Delivery.updated_at < cutoff),
        failed_recent=_count(
            session, DeliveryStatus.FAILED, Delivery.updated_at >= now - RECENT_FAILURES
        ),
    )


def collect(session: Session, now: datetime, settle_minutes: int) -> SendingHealth:
    """:func:`attention` and the counts per unsettled state (read-only)."""
    return SendingHealth(
        attention=attention(session, now, settle_minutes),
        counts=counts_by_status(session),
        settle_minutes=settle_minutes,
    )


def newest_rows(session: Session, status: str, limit: int = 100) -> list[Row[Any]]:
    """Deliveries in ``status``, newest first: drip.engine.reconcile.waiting_rows' query."""
    return waiting_rows(session, status, limit=limit, newest_first=True)


def as_json(health: SendingHealth) -> dict[str, Any]:
    """The ``sending`` part of ``drip stats --json`` and ``GET /api/v1/admin/stats``."""
    pause = health.attention.pause
    return {
        "paused": pause is not None,
        "paused_reason": pause.reason if pause else None,
        "paused_since": pause.since.isoformat() if pause and pause.since else None,
        "probe_error": pause.probe_error if pause else None,
        "deliveries": dict(health.counts),
        "unknown_needing_a_person": health.attention.unknown_due,
        "unknown_awaiting_the_provider": health.unknown_awaiting,
        "failed_last_7_days": health.attention.failed_recent,
        "unknown_settle_minutes": health.settle_minutes,
        "advice": health.advice(),
    }
