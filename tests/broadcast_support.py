"""Builders shared by the broadcast tests (plain functions, not fixtures)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from drip.broadcasts import compose, sending, zones
from drip.broadcasts.ratelimit import RateLimiter
from drip.broadcasts.tick import broadcasts_tick
from drip.clock import FrozenClock
from drip.engine.dispatch import SendReport, send_deliveries
from drip.esp.memory import MemoryBackend
from drip.models import Broadcast, Delivery, Subscriber, SubscriberStatus
from drip.runtime import Runtime
from tests.conftest import make_settings
from tests.helpers import add_subscriber

BODY = "Hi {{ first_name }},\n\nHill week: **three** short climbs. [Join]({{ runners_lab_url }})\n"


def make_rt(
    engine: Engine, tmp_path: Path, clock: FrozenClock, **overrides: Any
) -> tuple[Runtime, MemoryBackend]:
    backend = MemoryBackend(clock=clock)
    settings = make_settings(tmp_path, **overrides)
    return Runtime.build(settings, engine=engine, backend=backend, clock=clock), backend


def add_sub(
    rt: Runtime,
    email: str,
    *,
    zone: str | None = "America/New_York",
    tags: Iterable[str] = (),
    status: str = SubscriberStatus.ACTIVE,
    newsletter: bool = True,
    created_at: datetime | None = None,
    enrolled: bool = False,
    converted_at: datetime | None = None,
    name: str = "Ana",
) -> int:
    """:func:`tests.helpers.add_subscriber`, not enrolled unless asked (broadcast audiences)."""
    return add_subscriber(
        rt,
        email,
        zone=zone,
        name=name,
        enroll_now=enrolled,
        status=status,
        tags=tags,
        newsletter=newsletter,
        created_at=created_at,
        converted_at=converted_at,
    )


def new_broadcast(
    rt: Runtime,
    *,
    segment: dict[str, Any] | None = None,
    subject: str = "Hill week, {{ first_name }}",
    body_md: str = BODY,
    quiet_hours: int | None = None,
) -> int:
    with rt.transaction() as session:
        b = compose.create_broadcast(
            session,
            rt,
            subject=subject,
            body_md=body_md,
            preheader="Three short climbs and why they work.",
            segment=segment,
            quiet_hours=quiet_hours,
            actor="tester",
            now=rt.clock(),
        )
        return b.id


def start_now(rt: Runtime, broadcast_id: int) -> str:
    """Schedule at the clock's time and run beat's tick: the broadcast is ``sending``."""
    with rt.transaction() as session:
        zones.schedule(session, rt, broadcast_id, at=rt.clock(), actor="tester", now=rt.clock())
    kicks: list[tuple[int, str, float]] = []
    broadcasts_tick(rt, rt.clock(), kick=lambda *k: kicks.append(k))
    assert kicks and kicks[-1][0] == broadcast_id, "the tick did not start the broadcast"
    return kicks[-1][1]


def run_pages(
    rt: Runtime,
    broadcast_id: int,
    runner: str,
    *,
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] = lambda s: None,
    max_pages: int = 10_000,
) -> tuple[list[sending.PageResult], list[list[int]]]:
    """Run the chain's pages until it stops; returns the results and the enqueued batches."""
    results: list[sending.PageResult] = []
    batches: list[list[int]] = []
    for _ in range(max_pages):
        res = sending.run_page(
            rt,
            broadcast_id,
            runner,
            rt.clock(),
            enqueue=batches.append,
            limiter=limiter,
            sleep=sleep,
        )
        results.append(res)
        if res.next_in is None:
            break
    return results, batches


def send_all(rt: Runtime, batches: Iterable[list[int]]) -> SendReport:
    total = SendReport()
    for batch in batches:
        report = send_deliveries(rt, batch, rt.clock())
        total.sent += report.sent
        total.skipped += report.skipped
        total.not_queued += report.not_queued
        total.failed += report.failed
    return total


def status_counts(rt: Runtime, broadcast_id: int) -> Counter[str]:
    with rt.sessions() as session:
        rows = session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.broadcast_id == broadcast_id)
            .group_by(Delivery.status)
        ).tuples()
        return Counter({status: n for status, n in rows})


def recipients(rt: Runtime, broadcast_id: int) -> Counter[str]:
    """Delivery rows per address (each must be 1)."""
    with rt.sessions() as session:
        return Counter(
            session.scalars(
                select(Subscriber.email)
                .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                .where(Delivery.broadcast_id == broadcast_id)
            )
        )


def broadcast_row(rt: Runtime, broadcast_id: int) -> Broadcast:
    with rt.sessions() as session:
        b = session.get(Broadcast, broadcast_id)
        assert b is not None
        return b
