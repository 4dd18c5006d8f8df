"""Small builders shared by the engine tests."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from drip.engine.claim import tick
from drip.engine.dispatch import SendReport, send_deliveries
from drip.engine.enrollments import enroll
from drip.models import Subscriber, SubscriberStatus
from drip.runtime import Runtime
from drip.subscribers.store import ensure_tags


def add_subscriber(
    rt: Runtime,
    email: str,
    *,
    zone: str | None = "America/New_York",
    name: str = "Ana",
    enroll_now: bool = True,
    status: str = SubscriberStatus.ACTIVE,
    tags: Iterable[str] = (),
    newsletter: bool = True,
    created_at: datetime | None = None,
    converted_at: datetime | None = None,
) -> int:
    """A confirmed subscriber (active unless ``status`` says otherwise), enrolled in the course
    at the clock's time unless ``enroll_now`` is false; returns the id."""
    now = rt.clock()
    with rt.transaction() as session:
        sub = Subscriber(
            email=email,
            first_name=name,
            time_zone=zone,
            status=status,
            newsletter=newsletter,
            created_at=created_at or now,
            confirmed_at=now,
            converted_at=converted_at,
        )
        session.add(sub)
        session.flush()
        if tags:
            sub.tags = ensure_tags(session, list(tags))
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
        total.unknown += report.unknown
        total.retry += report.retry
        total.held = total.held or report.held
        total.paused = total.paused or report.paused
    return batches, total
