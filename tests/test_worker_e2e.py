"""End to end with real processes: Celery worker on Redis, PostgreSQL, SendGrid over HTTP.

The worker is a real ``celery worker`` subprocess (prefork pool) reading the real Redis broker; it
sends through the official ``sendgrid`` library to a local server that answers like SendGrid and
checks each request against the Mail Send spec. The tick runs in this process, as beat would.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from drip.clock import FrozenClock
from drip.engine.claim import tick
from drip.esp.memory import MemoryBackend
from drip.models import Delivery, DeliveryStatus, Subscriber
from drip.runtime import Runtime
from tests.conftest import make_settings, truncate_all
from tests.fakes.sendgrid_sink import SendGridSink
from tests.helpers import add_subscriber
from tests.worker_harness import WorkerProcess, client, wait_for, worker_env

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def pg_rt(pg_engine: Engine, tmp_path: Path) -> Runtime:
    """A runtime on PostgreSQL for the test's own side (creating subscribers, ticking).

    Its tick enqueues batches of 50 delivery ids: the unit of work a worker process holds. Its
    clock starts at the real time, because the worker stamps rows with the real time.
    """
    truncate_all(pg_engine)
    clock = FrozenClock(datetime.now(UTC))
    settings = make_settings(tmp_path, send_batch_size=50)
    return Runtime.build(settings, engine=pg_engine, backend=MemoryBackend(), clock=clock)


def _counts(rt: Runtime) -> Counter[str]:
    with rt.sessions() as session:
        rows = session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        return Counter({status: n for status, n in rows.tuples()})


def _sink_addresses(sink: SendGridSink) -> Counter[str]:
    return Counter(
        to["email"] for body in sink.requests for p in body["personalizations"] for to in p["to"]
    )


def _enqueue_into(broker_url: str) -> tuple[object, list[int]]:
    app = client(broker_url)
    sent: list[int] = []

    def enqueue(ids: list[int]) -> None:
        sent.append(len(ids))
        app.send_task("drip.send", args=[ids], queue="drip")

    return enqueue, sent


def test_worker_sends_due_lessons_through_sendgrid_exactly_once(
    pg_rt: Runtime, pg_engine: Engine, broker: str, sink: SendGridSink, tmp_path: Path
) -> None:
    for i in range(300):
        add_subscriber(pg_rt, f"runner{i}@example.com", zone="Europe/Berlin")
    env = worker_env(
        database_url=pg_engine.url.render_as_string(hide_password=False),
        broker_url=broker,
        sendgrid_url=sink.url,
    )
    worker = WorkerProcess(env, log=tmp_path / "worker.log").start()
    try:
        enqueue, _ = _enqueue_into(broker)
        report = tick(pg_rt, pg_rt.clock(), enqueue=enqueue)  # type: ignore[arg-type]
        assert (report.claimed, report.batches) == (300, 6)
        wait_for(
            lambda: _counts(pg_rt)[DeliveryStatus.SENT] == 300,
            timeout=60,
            what="300 sent deliveries",
            log=worker,
        )
    finally:
        worker.stop()
    assert sink.violations == []
    addresses = _sink_addresses(sink)
    assert len(addresses) == 300 and set(addresses.values()) == {1}
    with pg_rt.sessions() as session:
        ids = set(session.scalars(select(Delivery.provider_message_id)))
        custom = {
            p["custom_args"]["delivery_id"]
            for body in sink.requests
            for p in body["personalizations"]
        }
        delivery_ids = {str(i) for i in session.scalars(select(Delivery.id))}
    assert ids == set(sink.message_ids)  # X-Message-Id stored on every row
    assert custom == delivery_ids
    # A second tick the same minute, and the same task enqueued again: nothing more is sent.
    enqueue, batches = _enqueue_into(broker)
    assert tick(pg_rt, pg_rt.clock(), enqueue=enqueue).claimed == 0  # type: ignore[arg-type]
    assert batches == []


def test_sigkill_mid_batch_then_restart_sends_every_lesson_exactly_once(
    pg_rt: Runtime, pg_engine: Engine, broker: str, sink: SendGridSink, tmp_path: Path
) -> None:
    total = 2000
    for i in range(total):
        add_subscriber(pg_rt, f"runner{i}@example.com", zone="America/Denver")
    sink.script_delay(0.15, times=10_000)  # every request takes a while: batches are in flight
    env = worker_env(
        database_url=pg_engine.url.render_as_string(hide_password=False),
        broker_url=broker,
        sendgrid_url=sink.url,
    )
    enqueue, _ = _enqueue_into(broker)
    tick(pg_rt, pg_rt.clock(), enqueue=enqueue)  # type: ignore[arg-type]
    first = WorkerProcess(env, concurrency=2, log=tmp_path / "worker1.log").start()
    try:
        wait_for(
            lambda: _counts(pg_rt)[DeliveryStatus.SENT] >= 300,
            timeout=60,
            what="the first 300 sends",
        )
    finally:
        first.kill()  # SIGKILL, mid-batch: no chance to clean up
    at_kill = _counts(pg_rt)
    assert at_kill[DeliveryStatus.SENT] < total, "the kill came too late to test anything"

    # Beat's next ticks, well past the stale window: in-flight rows -> unknown, lost tasks
    # re-enqueued. (Run while no worker is alive, so nothing live looks stale.)
    later = pg_rt.clock() + timedelta(minutes=20)
    report = tick(pg_rt, later, enqueue=enqueue)  # type: ignore[arg-type]
    assert len(report.unknown) == at_kill[DeliveryStatus.SENDING]
    assert len(report.unknown) <= 2 * 50  # at most one batch per pool process was in flight

    second = WorkerProcess(env, concurrency=2, log=tmp_path / "worker2.log").start()
    try:
        wait_for(
            lambda: (
                _counts(pg_rt)[DeliveryStatus.QUEUED] + _counts(pg_rt)[DeliveryStatus.SENDING] == 0
            ),
            timeout=120,
            what="every queued delivery to be sent",
        )
    finally:
        second.stop()

    final = _counts(pg_rt)
    assert final[DeliveryStatus.SENT] + final[DeliveryStatus.UNKNOWN] == total
    assert final[DeliveryStatus.UNKNOWN] == len(report.unknown)
    with pg_rt.sessions() as session:
        per_subscriber = Counter(session.scalars(select(Delivery.subscriber_id)))
        sent_to = set(
            session.scalars(
                select(Subscriber.email)
                .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                .where(Delivery.status == DeliveryStatus.SENT)
            )
        )
        unknown_to = set(
            session.scalars(
                select(Subscriber.email)
                .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                .where(Delivery.status == DeliveryStatus.UNKNOWN)
            )
        )
    assert len(per_subscriber) == total and set(per_subscriber.values()) == {1}
    received = _sink_addresses(sink)
    assert max(received.values()) == 1, "an address reached SendGrid twice"
    assert sent_to <= set(received)  # every 'sent' row really reached the provider
    missing = {f"runner{i}@example.com" for i in range(total)} - set(received)
    assert missing <= unknown_to  # none missing beyond the reported unknown rows
    assert sink.violations == []
