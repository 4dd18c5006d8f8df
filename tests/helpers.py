"""Small builders shared by the engine tests."""

from __future__ import annotations

from datetime import datetime

from drip.claim import tick
from drip.dispatch import SendReport, send_deliveries
from drip.enrollments import enroll
from drip.models import Subscriber, SubscriberStatus
from drip.runtime import Runtime


def add_subscriber(
    rt: Runtime,
    email: str,
    *,
    zone: str | None = "America/New_York",
    name: str = "Ana",
    enroll_now: bool = True,
    status: str = SubscriberStatus.ACTIVE,
) -> int:
    """An active subscriber, enrolled in the course at the clock's time; returns the id."""
    now = rt.clock()
    with rt.transaction() as session:
        sub = Subscriber(
            email=email,
            first_name=name,
            time_zone=zone,
            status=status,
            created_at=now,
            confirmed_at=now,
        )
        session.add(sub)
        session.flush()
        if enroll_now:
            enroll(session, sub, rt.course(), now, rt.settings.default_timezone)
        return sub.id


def run_tick(rt: Runtime, now: datetime | None = None) -> tuple[list[list[int]], SendReport]:
    """One tick at ``now`` (default: the clock), then every enqueued batch sent in-process."""
    moment = now or rt.clock()
    batches: list[list[int]] = []
    tick(rt, moment, enqueue=batches.append)
    total = SendReport()
    for batch in batches:
        report = send_deliveries(rt, batch, moment)
        total.sent += report.sent
        total.failed += report.failed
        total.skipped += report.skipped
        total.not_queued += report.not_queued
        total.retry += report.retry
        total.paused = total.paused or report.paused
    return batches, total
