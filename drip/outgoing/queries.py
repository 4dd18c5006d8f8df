"""What ``drip webhooks log`` and the dashboard's Webhooks page show: recent deliveries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from drip.models import OutgoingWebhook, OutgoingWebhookAttempt, OutgoingWebhookStatus


@dataclass(frozen=True)
class WebhookRow:
    """One event for one endpoint, as a person reads it."""

    id: int
    created_at: datetime
    event_type: str
    endpoint_url: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None

    @property
    def last_result(self) -> str:
        """The last attempt's answer or error ("-" before the first attempt)."""
        if self.last_error:
            return self.last_error
        return f"HTTP {self.last_status_code}" if self.last_status_code is not None else "-"


@dataclass(frozen=True)
class AttemptRow:
    number: int
    at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None


def recent_webhooks(
    session: Session, *, limit: int = 100, status: str | None = None
) -> list[WebhookRow]:
    """The newest rows first, at most ``limit``; only those of ``status`` if given."""
    query = select(
        OutgoingWebhook.id,
        OutgoingWebhook.created_at,
        OutgoingWebhook.event_type,
        OutgoingWebhook.endpoint_url,
        OutgoingWebhook.status,
        OutgoingWebhook.attempts,
        OutgoingWebhook.last_status_code,
        OutgoingWebhook.last_error,
        OutgoingWebhook.next_attempt_at,
        OutgoingWebhook.delivered_at,
    )
    if status is not None:
        query = query.where(OutgoingWebhook.status == status)
    rows = session.execute(query.order_by(OutgoingWebhook.id.desc()).limit(limit))
    return [WebhookRow(*row) for row in rows]


def status_counts(session: Session) -> dict[str, int]:
    """How many rows are pending, delivered and failed (every status, zero included)."""
    counts = dict.fromkeys(OutgoingWebhookStatus, 0)
    rows = session.execute(
        select(OutgoingWebhook.status, func.count()).group_by(OutgoingWebhook.status)
    )
    for status, count in rows:
        counts[OutgoingWebhookStatus(status)] = count
    return {str(status): count for status, count in counts.items()}


def attempts_of(session: Session, webhook_id: int) -> list[AttemptRow]:
    """Every attempt of one row, first first."""
    rows = session.execute(
        select(
            OutgoingWebhookAttempt.number,
            OutgoingWebhookAttempt.at,
            OutgoingWebhookAttempt.duration_ms,
            OutgoingWebhookAttempt.status_code,
            OutgoingWebhookAttempt.error,
        )
        .where(OutgoingWebhookAttempt.webhook_id == webhook_id)
        .order_by(OutgoingWebhookAttempt.number, OutgoingWebhookAttempt.id)
    )
    return [AttemptRow(*row) for row in rows]
