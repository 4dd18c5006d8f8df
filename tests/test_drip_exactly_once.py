"""Exactly once: double ticks, redelivered tasks, crashed workers, backend errors, the pause."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from drip.clock import FrozenClock
from drip.engine import pause as engine_state
from drip.engine.claim import tick
from drip.engine.dispatch import BACKOFF_CAP, backoff_seconds, send_deliveries
from drip.errors import PermanentBackendError, TransientBackendError
from drip.esp.memory import MemoryBackend
from drip.models import Delivery, DeliveryStatus, Enrollment, Subscriber
from drip.runtime import Runtime
from drip.suppress import suppress
from tests.helpers import add_subscriber, run_tick


def _statuses(rt: Runtime) -> dict[int, str]:
    with rt.sessions() as session:
        return dict(session.execute(select(Delivery.id, Delivery.status)).tuples().all())


def _delivery(rt: Runtime, delivery_id: int) -> Delivery:
    with rt.sessions() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        return row


def test_double_tick_writes_one_delivery_and_sends_once(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    for i in range(5):
        add_subscriber(rt, f"s{i}@example.com")
    first: list[list[int]] = []
    second: list[list[int]] = []
    tick(rt, rt.clock(), enqueue=first.append)
    tick(rt, rt.clock(), enqueue=second.append)  # a second beat, same minute
    assert sum(map(len, first)) == 5
    assert second == []
    for batch in first + first:  # and every task delivered twice
        send_deliveries(rt, batch, rt.clock())
    assert len(memory_backend.outbox) == 5
    assert sorted(e.to for e in memory_backend.outbox) == [f"s{i}@example.com" for i in range(5)]


def test_redelivered_send_task_does_not_send_again(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    add_subscriber(rt, "ana@example.com")
    batches, report = run_tick(rt)
    assert report.sent == 1
    again = send_deliveries(rt, batches[0], rt.clock())
    assert (again.sent, again.not_queued) == (0, 1)
    assert len(memory_backend.outbox) == 1


def test_rows_in_flight_when_a_worker_died_end_unknown_and_are_not_resent(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    add_subscriber(rt, "ana@example.com")
    batches: list[list[int]] = []
    tick(rt, rt.clock(), enqueue=batches.append)
    [delivery_id] = batches[0]
    with rt.transaction() as session:  # what a worker killed mid-call leaves behind
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(status=DeliveryStatus.SENDING, updated_at=rt.clock())
        )
    later: list[list[int]] = []
    report = tick(rt, rt.clock() + timedelta(minutes=20), enqueue=later.append)
    assert report.unknown == [delivery_id]
    assert _statuses(rt)[delivery_id] == DeliveryStatus.UNKNOWN
    send_deliveries(rt, [delivery_id], rt.clock())
    assert memory_backend.outbox == []


def test_queued_rows_whose_task_was_lost_are_enqueued_again(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    add_subscriber(rt, "ana@example.com")
    lost: list[list[int]] = []
    tick(rt, rt.clock(), enqueue=lost.append)  # the task never reaches a worker
    batches, report = run_tick(rt, rt.clock() + timedelta(minutes=11))
    assert batches == lost
    assert report.sent == 1
    assert len(memory_backend.outbox) == 1


def test_an_unreachable_provider_leaves_rows_queued_for_a_retry(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    add_subscriber(rt, "ana@example.com")
    memory_backend.raise_next(TransientBackendError("SendGrid unreachable: connection refused"))
    batches, report = run_tick(rt)
    [delivery_id] = batches[0]
    assert report.retry == [delivery_id]
    row = _delivery(rt, delivery_id)
    assert (row.status, row.attempts) == (DeliveryStatus.QUEUED, 1)
    assert row.error is not None and "connection refused" in row.error
    retry = send_deliveries(rt, [delivery_id], rt.clock())
    assert retry.sent == 1
    assert _delivery(rt, delivery_id).status == DeliveryStatus.SENT


def test_transient_errors_give_up_when_the_retry_window_has_passed(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    add_subscriber(rt, "ana@example.com")
    memory_backend.raise_next(TransientBackendError("connection refused"), times=3)
    batches, _ = run_tick(rt)
    [delivery_id] = batches[0]
    clock.advance(timedelta(hours=rt.settings.send_retry_hours - 0.1))
    send_deliveries(rt, [delivery_id], clock())
    assert _delivery(rt, delivery_id).status == DeliveryStatus.QUEUED  # still within the window
    clock.advance(timedelta(hours=0.2))
    send_deliveries(rt, [delivery_id], clock())
    row = _delivery(rt, delivery_id)
    assert row.status == DeliveryStatus.FAILED
    assert row.attempts == 3
    hours = f"{rt.settings.send_retry_hours:g}"
    assert row.error is not None and row.error.startswith(f"gave up after {hours} hours")


@pytest.mark.parametrize("status", [400, 401, 403, 413])
def test_permanent_errors_fail_the_delivery_with_the_providers_message(
    rt: Runtime, memory_backend: MemoryBackend, status: int
) -> None:
    add_subscriber(rt, "ana@example.com")
    memory_backend.raise_next(PermanentBackendError(f"{status}: The from address is not verified"))
    batches, report = run_tick(rt)
    assert report.failed == 1
    assert report.retry == []
    row = _delivery(rt, batches[0][0])
    assert row.status == DeliveryStatus.FAILED
    assert row.error == f"{status}: The from address is not verified"


def test_one_failing_address_does_not_fail_the_batch(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    add_subscriber(rt, "good@example.com")
    add_subscriber(rt, "bad@example.com")
    memory_backend.fail_address("bad@example.com")
    _, report = run_tick(rt)
    assert (report.sent, report.failed) == (1, 1)


def test_too_many_refusals_in_a_row_pause_sending_and_say_why(
    tmp_path: object, rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    limit = rt.settings.max_consecutive_failures
    for i in range(limit + 5):
        add_subscriber(rt, f"s{i}@example.com")
    revoked = PermanentBackendError("401: invalid API key", status=401)
    memory_backend.raise_next(revoked, times=100)
    memory_backend.probe_failure = revoked
    _, report = run_tick(rt)
    assert report.paused is not None and "invalid API key" in report.paused
    with rt.sessions() as session:
        reason = engine_state.paused_reason(session)
    # A refused account fails no email: every row waits in the queue for the pause to lift.
    assert set(_statuses(rt).values()) == {DeliveryStatus.QUEUED}
    assert reason is not None and "in a row" in reason
    later = clock.advance(timedelta(days=1))
    batches, _ = run_tick(rt, later)
    assert batches == []  # paused, and the probe still refused: the tick claims nothing
    assert memory_backend.probes == 1
    memory_backend.clear()
    memory_backend.probe_failure = None
    later = clock.advance(timedelta(seconds=rt.settings.sending_probe_seconds))
    batches, report = run_tick(rt, later)
    assert report.paused is None
    # Resumed by itself: the lesson 1 rows that waited went, once each, and lesson 2 (due by
    # now) behind them.
    sent = [(e.to, e.message.message_key) for e in memory_backend.outbox]
    assert len(sent) == len(set(sent))
    assert sum(1 for _, key in sent if key == "glute-accelerator/1") == limit + 5
    assert set(_statuses(rt).values()) == {DeliveryStatus.SENT}


def test_exit_conditions_are_checked_right_before_sending(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    gone = add_subscriber(rt, "gone@example.com")
    bounced = add_subscriber(rt, "bounced@example.com")
    opted_out = add_subscriber(rt, "quiet@example.com")
    stays = add_subscriber(rt, "stays@example.com")
    batches: list[list[int]] = []
    tick(rt, rt.clock(), enqueue=batches.append)
    with rt.transaction() as session:  # between the claim and the send
        session.execute(
            update(Subscriber).where(Subscriber.id == gone).values(status="unsubscribed")
        )
        session.execute(
            update(Subscriber).where(Subscriber.id == opted_out).values(course_emails=False)
        )
        suppress(session, "Bounced@Example.com", "bounce")
    for batch in batches:
        send_deliveries(rt, batch, rt.clock())
    assert [e.to for e in memory_backend.outbox] == ["stays@example.com"]
    with rt.sessions() as session:
        reasons = dict(
            session.execute(select(Enrollment.subscriber_id, Enrollment.stop_reason)).tuples().all()
        )
        statuses = dict(
            session.execute(select(Enrollment.subscriber_id, Enrollment.status)).tuples().all()
        )
    assert reasons == {
        gone: "unsubscribed",
        bounced: "suppressed",
        opted_out: "preferences",
        stays: None,
    }
    assert statuses[gone] == statuses[bounced] == "stopped"
    assert statuses[stays] == "active"


def test_a_conversion_stops_the_upsell_but_not_the_course(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    sub = add_subscriber(rt, "buyer@example.com")
    with rt.transaction() as session:
        enrollment = session.scalars(select(Enrollment)).one()
        enrollment.position = rt.course().length - 1
    run_tick(rt)  # last lesson, enters the upsell
    with rt.transaction() as session:
        session.execute(
            update(Subscriber).where(Subscriber.id == sub).values(converted_at=rt.clock())
        )
    _, report = run_tick(rt, rt.clock() + timedelta(days=2))
    assert report.skipped == 1
    assert [e.message.message_key for e in memory_backend.outbox] == ["glute-accelerator/7"]
    with rt.sessions() as session:
        upsell = session.scalars(
            select(Enrollment).where(Enrollment.sequence == "runners-lab-upsell")
        ).one()
    assert (upsell.status, upsell.stop_reason) == ("stopped", "converted")


def test_backoff_grows_exponentially_with_jitter_and_stays_short() -> None:
    rng = random.Random(7)
    first = [backoff_seconds(1, None, rng) for _ in range(50)]
    fifth = [backoff_seconds(5, None, rng) for _ in range(50)]
    assert max(first) <= 5.0 and min(first) >= 2.5
    assert min(fifth) >= 40.0 and max(fifth) <= 80.0
    assert len(set(first)) > 40  # jittered, not a fixed step
    assert backoff_seconds(1, 120.0, rng) == 120.0  # the provider's reset hint wins
    assert backoff_seconds(30, 9999.0, rng) == BACKOFF_CAP  # never a long countdown
