"""Broadcasts end to end with real processes: Celery workers on Redis, PostgreSQL, SendGrid over
HTTP (the local sink). Beat's ticks run in this process. What only real processes can show: a
SIGKILL mid-send resumes without duplicates, and two workers share one rate limit."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from drip.broadcasts.tick import broadcasts_tick
from drip.clock import FrozenClock
from drip.engine.claim import tick
from drip.esp.memory import MemoryBackend
from drip.models import Delivery, DeliveryStatus, Subscriber
from drip.runtime import Runtime
from tests.broadcast_support import add_sub, broadcast_row, new_broadcast, recipients
from tests.conftest import make_settings, truncate_all
from tests.fakes.sendgrid_sink import SendGridSink
from tests.worker_harness import WorkerProcess, client, wait_for, worker_env

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def pg_rt(pg_engine: Engine, tmp_path: Path) -> Runtime:
    """This side's runtime (creating subscribers, beat's ticks), on the real clock's time."""
    truncate_all(pg_engine)
    settings = make_settings(tmp_path)
    clock = FrozenClock(datetime.now(UTC))
    return Runtime.build(settings, engine=pg_engine, backend=MemoryBackend(), clock=clock)


def _env(pg_engine: Engine, broker: str, sink: SendGridSink, **extra: str) -> dict[str, str]:
    return worker_env(
        database_url=pg_engine.url.render_as_string(hide_password=False),
        broker_url=broker,
        sendgrid_url=sink.url,
        extra={"DRIP_REDIS_URL": broker, **extra},
    )


def _beat(rt: Runtime, broker: str, now: datetime | None = None) -> None:
    """Beat's two ticks at ``now``: broadcasts start or restart, lost send tasks come back."""
    app = client(broker)
    moment = now or datetime.now(UTC)
    broadcasts_tick(
        rt,
        moment,
        kick=lambda b, runner, _: app.send_task("drip.broadcast_send", args=[b, runner]),
    )
    tick(rt, moment, enqueue=lambda ids: app.send_task("drip.send", args=[ids]))


def _schedule_now(rt: Runtime, broadcast_id: int) -> None:
    from drip.broadcasts import zones

    with rt.transaction() as session:
        zones.schedule(session, rt, broadcast_id, at=rt.clock(), actor="test", now=rt.clock())


def _sent(rt: Runtime, broadcast_id: int) -> int:
    return recipients_with(rt, broadcast_id, DeliveryStatus.SENT)


def recipients_with(rt: Runtime, broadcast_id: int, *statuses: str) -> int:
    with rt.sessions() as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    Delivery.broadcast_id == broadcast_id, Delivery.status.in_(statuses)
                )
            )
            or 0
        )


def _addresses(sink: SendGridSink) -> Counter[str]:
    return Counter(
        to["email"] for body in sink.requests for p in body["personalizations"] for to in p["to"]
    )


def test_a_worker_sends_a_broadcast_exactly_once_through_sendgrid(
    pg_rt: Runtime, pg_engine: Engine, broker: str, sink: SendGridSink, tmp_path: Path
) -> None:
    for i in range(300):
        add_sub(pg_rt, f"runner{i}@example.com", zone="Europe/Berlin")
    broadcast_id = new_broadcast(pg_rt)
    _schedule_now(pg_rt, broadcast_id)
    env = _env(pg_engine, broker, sink, DRIP_BROADCAST_PAGE_SIZE="50", DRIP_SEND_BATCH_SIZE="50")
    worker = WorkerProcess(env, log=tmp_path / "worker.log").start()
    try:
        _beat(pg_rt, broker)
        wait_for(lambda: _sent(pg_rt, broadcast_id) == 300, timeout=60, what="300 sent", log=worker)
        wait_for(  # the chain's last page, which finds no one left, may come after the sends
            lambda: broadcast_row(pg_rt, broadcast_id).queued_all_at is not None,
            timeout=30,
            what="the last page",
            log=worker,
        )
    finally:
        worker.stop()
    _beat(pg_rt, broker)

    assert sink.violations == []
    assert set(_addresses(sink).values()) == {1} and len(_addresses(sink)) == 300
    assert broadcast_row(pg_rt, broadcast_id).status == "sent"
    assert {body["subject"] for body in sink.requests} == {"Hill week, %%firstname.t%%"}


def test_sigkill_mid_broadcast_then_restart_sends_each_subscriber_at_most_once(
    pg_rt: Runtime, pg_engine: Engine, broker: str, sink: SendGridSink, tmp_path: Path
) -> None:
    total = 3000
    for i in range(total):
        add_sub(pg_rt, f"runner{i}@example.com", zone="America/Denver")
    broadcast_id = new_broadcast(pg_rt)
    _schedule_now(pg_rt, broadcast_id)
    sink.script_delay(0.05, times=100_000)  # every request takes a while: batches are in flight
    env = _env(pg_engine, broker, sink, DRIP_BROADCAST_PAGE_SIZE="100", DRIP_SEND_BATCH_SIZE="50")

    first = WorkerProcess(env, concurrency=2, log=tmp_path / "worker1.log").start()
    try:
        _beat(pg_rt, broker)
        wait_for(lambda: _sent(pg_rt, broadcast_id) >= 300, timeout=60, what="300 sends")
    finally:
        first.kill()  # SIGKILL mid-send: page tasks and send batches die with it
    at_kill = _sent(pg_rt, broadcast_id)
    assert at_kill < total, "the kill came too late to test anything"
    checkpoint = broadcast_row(pg_rt, broadcast_id).last_subscriber_id

    # Beat, well after the stale windows: the broadcast gets a new page chain from its
    # checkpoint, rows left 'sending' become 'unknown', rows whose task was lost are re-queued.
    later = datetime.now(UTC) + timedelta(minutes=20)
    _beat(pg_rt, broker, later)
    second = WorkerProcess(env, concurrency=2, log=tmp_path / "worker2.log").start()
    try:
        wait_for(
            lambda: (
                broadcast_row(pg_rt, broadcast_id).queued_all_at is not None
                and recipients_with(pg_rt, broadcast_id, "queued", "sending") == 0
            ),
            timeout=180,
            what="every page written and every delivery settled",
            log=second,
        )
    finally:
        second.stop()
    _beat(pg_rt, broker, later)

    per_subscriber = recipients(pg_rt, broadcast_id)
    assert len(per_subscriber) == total and set(per_subscriber.values()) == {1}
    assert broadcast_row(pg_rt, broadcast_id).last_subscriber_id > checkpoint  # it resumed
    received = _addresses(sink)
    assert max(received.values()) == 1, "an address reached SendGrid twice"
    with pg_rt.sessions() as session:
        unknown = set(
            session.scalars(
                select(Subscriber.email)
                .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                .where(Delivery.broadcast_id == broadcast_id, Delivery.status == "unknown")
            )
        )
    assert {f"runner{i}@example.com" for i in range(total)} - set(received) <= unknown
    assert len(unknown) <= 2 * 50  # at most one batch per pool process was in flight
    assert broadcast_row(pg_rt, broadcast_id).status == "sent"
    assert sink.violations == []


def test_two_workers_sending_two_broadcasts_share_one_rate_limit(
    pg_rt: Runtime, pg_engine: Engine, broker: str, sink: SendGridSink, tmp_path: Path
) -> None:
    rate, each = 100, 200
    for i in range(each):
        add_sub(pg_rt, f"a{i}@example.com", tags=["a"])
        add_sub(pg_rt, f"b{i}@example.com", tags=["b"])
    first = new_broadcast(pg_rt, segment={"tags_any": ["a"]})
    second = new_broadcast(pg_rt, segment={"tags_any": ["b"]})
    _schedule_now(pg_rt, first)
    _schedule_now(pg_rt, second)
    env = _env(pg_engine, broker, sink, DRIP_BROADCAST_RATE_PER_SECOND=str(rate))
    workers = [
        WorkerProcess(env, concurrency=1, log=tmp_path / f"worker{n}.log").start() for n in (1, 2)
    ]
    try:
        _beat(pg_rt, broker)  # two chains, one per broadcast, running side by side
        wait_for(
            lambda: _sent(pg_rt, first) + _sent(pg_rt, second) == 2 * each,
            timeout=60,
            what="both broadcasts sent",
            log=workers[0],
        )
    finally:
        for worker in workers:
            worker.stop()

    with pg_rt.sessions() as session:
        times = sorted(
            t
            for t in session.scalars(
                select(Delivery.sent_at).where(Delivery.broadcast_id.is_not(None))
            )
            if t is not None
        )
    span = (times[-1] - times[0]).total_seconds()
    # Any window of T seconds holds at most rate * (T + 0.2 s of tolerance) + one page (0.1 s).
    slack = rate * 3 // 10
    assert (2 * each - slack) / span <= rate * 1.05, f"{2 * each} emails in {span:.2f}s"
    assert (2 * each) / span >= rate * 0.8  # and the budget was used
    for worker in workers:  # both processes really took part
        assert "drip.broadcast_send" in worker.log_tail(200_000)
