"""The three outcomes of a send, the provider's hold, lessons never lost, unknown rows settled.

Plain functions on both databases, the memory backend scripted to fail the way providers do.
The real-worker fault suite with a misbehaving SendGrid stand-in is tests/test_provider_faults.py.
"""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from drip.cli import deliveries as cli_deliveries
from drip.cli.main import main
from drip.clock import FrozenClock
from drip.engine import pause as engine_state
from drip.engine.dispatch import (
    BACKOFF_CAP,
    db_retry_seconds,
    held_retry_seconds,
    send_deliveries,
)
from drip.engine.outcomes import with_db_patience
from drip.engine.throttle import DEFAULT_HOLD, LocalThrottle, hold_seconds
from drip.errors import (
    AmbiguousBackendError,
    PermanentBackendError,
    ThrottledBackendError,
    TransientBackendError,
)
from drip.esp.memory import MemoryBackend
from drip.models import Delivery, DeliveryStatus, Enrollment, MessageStats
from drip.runtime import Runtime
from drip.settings import Settings
from drip.suppress import is_suppressed
from tests.helpers import add_subscriber, run_tick
from tests.tracking_support import client_for, post_events, sample, tracking_settings

KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tracking_settings(tmp_path, KEY)


def _rows(rt: Runtime) -> dict[int, Delivery]:
    with rt.sessions() as session:
        return {d.id: d for d in session.scalars(select(Delivery))}


def _one(rt: Runtime) -> Delivery:
    [row] = _rows(rt).values()
    return row


def _enrollment(rt: Runtime) -> Enrollment:
    with rt.sessions() as session:
        [row] = session.scalars(select(Enrollment))
        return row


# --------------------------------------------------------------------------- maybe sent


def test_an_ambiguous_failure_leaves_the_rows_unknown_and_never_resends_them(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    add_subscriber(rt, "ana@example.com")
    add_subscriber(rt, "ben@example.com")
    memory_backend.raise_next(AmbiguousBackendError("SendGrid answered nothing within 10s"))
    batches, report = run_tick(rt)
    assert report.retry == [] and report.failed == 0
    rows = _rows(rt)
    assert {r.status for r in rows.values()} == {DeliveryStatus.UNKNOWN}
    assert all("nothing within 10s" in (r.error or "") for r in rows.values())
    again = send_deliveries(rt, batches[0], rt.clock())  # a redelivered task
    assert again.not_queued == 2 and memory_backend.outbox == []
    with rt.sessions() as session:
        assert engine_state.paused_reason(session) is None


def test_one_recipient_maybe_sent_is_unknown_and_the_others_are_sent(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    add_subscriber(rt, "ana@example.com")
    add_subscriber(rt, "ben@example.com")
    memory_backend.fail_address("ben@example.com", unknown=True, error="timeout after DATA")
    _, report = run_tick(rt)
    assert (report.sent, report.unknown) == (1, 1)
    statuses = sorted(r.status for r in _rows(rt).values())
    assert statuses == [DeliveryStatus.SENT, DeliveryStatus.UNKNOWN]


# --------------------------------------------------------------------------- throttling


def test_a_throttle_holds_every_sender_uses_no_attempt_and_sends_after_the_hold(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    add_subscriber(rt, "ana@example.com")
    memory_backend.raise_next(ThrottledBackendError("SendGrid 429", status=429, retry_after=7.0))
    batches, report = run_tick(rt)
    assert report.retry == batches[0]
    row = _one(rt)
    assert (row.status, row.attempts) == (DeliveryStatus.QUEUED, 0)
    assert rt.throttle.remaining() == pytest.approx(7.0)
    calls = memory_backend.calls
    early = send_deliveries(rt, batches[0], clock.advance(timedelta(seconds=3)))
    assert early.held and early.retry == batches[0]
    assert early.retry_after == pytest.approx(4.0)
    assert memory_backend.calls == calls  # held back: the provider was not asked again
    assert _one(rt).attempts == 0
    after = send_deliveries(rt, batches[0], clock.advance(timedelta(seconds=4)))
    assert after.sent == 1
    assert _one(rt).status == DeliveryStatus.SENT


def test_a_storm_of_throttles_never_pauses_sending_nor_fails_an_email(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    limit = rt.settings.max_consecutive_failures
    for i in range(3):
        add_subscriber(rt, f"s{i}@example.com")
    storm = ThrottledBackendError("SendGrid 503", status=503)
    memory_backend.raise_next(storm, times=limit + 10)
    batches, _ = run_tick(rt)
    ids = batches[0]
    for _ in range(limit + 9):
        clock.advance(timedelta(seconds=rt.throttle.remaining() + 0.01))
        report = send_deliveries(rt, ids, clock())
        assert report.paused is None and report.failed == 0
    clock.advance(timedelta(seconds=rt.throttle.remaining() + 0.01))
    assert send_deliveries(rt, ids, clock()).sent == 3
    assert {r.attempts for r in _rows(rt).values()} == {1}  # only the successful call counted


def test_throttle_hints_are_bounded_and_only_move_the_hold_later(clock: FrozenClock) -> None:
    assert hold_seconds(None) == DEFAULT_HOLD
    assert hold_seconds(0) == DEFAULT_HOLD
    assert hold_seconds(3600) == 300.0
    throttle = LocalThrottle(clock)
    throttle.hold(10)
    throttle.hold(2)
    assert throttle.remaining() == 10
    clock.advance(timedelta(seconds=10))
    assert throttle.remaining() == 0


# --------------------------------------------------------------------------- the pause


def test_unreachable_provider_and_maybe_sent_never_count_toward_the_pause(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    limit = rt.settings.max_consecutive_failures
    for i in range(limit + 1):
        add_subscriber(rt, f"s{i}@example.com")
    memory_backend.raise_next(TransientBackendError("connection refused"))
    batches, report = run_tick(rt)
    assert report.paused is None
    memory_backend.raise_next(AmbiguousBackendError("read timeout"))
    report = send_deliveries(rt, batches[0], clock())
    assert report.paused is None and report.unknown == limit + 1


def test_a_refused_request_fails_its_rows_and_counts_toward_the_pause(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    add_subscriber(rt, "ana@example.com")
    memory_backend.raise_next(PermanentBackendError("SendGrid 400: bad from", status=400))
    _, report = run_tick(rt)
    assert report.failed == 1
    with rt.sessions() as session:
        streak = session.get(engine_state.EngineState, engine_state.STREAK)
        assert streak is not None and streak.value["count"] == 1


def test_a_task_that_paused_sending_holds_its_remaining_batches(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    for i in range(4):
        add_subscriber(rt, f"s{i}@example.com")
    memory_backend.max_batch = 2
    with rt.transaction() as session:
        engine_state.record_outcome(
            session,
            succeeded=0,
            failed=rt.settings.max_consecutive_failures - 1,
            last_error="401",
            limit=rt.settings.max_consecutive_failures,
            now=clock(),
        )
    memory_backend.raise_next(PermanentBackendError("SendGrid 401", status=401))
    batches: list[list[int]] = []
    from drip.engine.claim import tick

    tick(rt, clock(), enqueue=batches.append)
    report = send_deliveries(rt, batches[0], clock())
    assert report.paused is not None
    assert memory_backend.calls == 1  # the second batch of the task was not attempted
    assert {r.status for r in _rows(rt).values()} == {DeliveryStatus.QUEUED}
    assert {r.attempts for r in _rows(rt).values()} == {0}


def test_sending_resume_hands_every_queued_email_to_the_workers(
    rt: Runtime, memory_backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        add_subscriber(rt, f"s{i}@example.com")
    memory_backend.raise_next(PermanentBackendError("401", status=401))
    batches, _ = run_tick(rt)
    with rt.transaction() as session:
        engine_state.pause(session, "401 in a row", rt.clock())
    handed: list[list[int]] = []
    monkeypatch.setattr(cli_deliveries, "_runtime", lambda: rt)
    monkeypatch.setattr(cli_deliveries, "_enqueue", lambda: handed.append)
    result = CliRunner().invoke(main, ["sending", "resume"])
    assert result.exit_code == 0, result.output
    assert "sending resumed; 3 queued emails handed to the workers" in result.output
    assert sorted(i for batch in handed for i in batch) == sorted(batches[0])
    with rt.sessions() as session:
        assert engine_state.paused_reason(session) is None


# --------------------------------------------------------------------------- never lost


def test_a_lesson_that_finally_fails_is_due_again_and_goes_out_once(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock, monkeypatch: Any
) -> None:
    add_subscriber(rt, "ana@example.com")
    memory_backend.raise_next(TransientBackendError("connection refused"), times=2)
    batches, _ = run_tick(rt)
    [delivery_id] = batches[0]
    clock.advance(timedelta(hours=rt.settings.send_retry_hours + 1))
    send_deliveries(rt, [delivery_id], clock())
    row = _one(rt)
    assert row.status == DeliveryStatus.FAILED
    enrollment = _enrollment(rt)
    assert enrollment.position == 0  # stepped back before lesson 1
    assert enrollment.next_send_at is not None and enrollment.next_send_at > clock()

    monkeypatch.setattr(cli_deliveries, "_runtime", lambda: rt)
    listed = CliRunner().invoke(main, ["deliveries", "failed"])
    assert f"{delivery_id}\tana@example.com\tglute-accelerator/1" in listed.output
    assert "gave up after" in listed.output

    batches, report = run_tick(rt, enrollment.next_send_at)
    assert batches == [[delivery_id]]  # the same row, queued again: still unique
    assert report.sent == 1
    assert [e.message.message_key for e in memory_backend.outbox] == ["glute-accelerator/1"]
    assert _enrollment(rt).position == 1


def test_a_refused_address_is_suppressed_and_its_lesson_not_retried(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    add_subscriber(rt, "gone@example.com")
    memory_backend.fail_address("gone@example.com", invalid_address=True)
    _, report = run_tick(rt)
    assert report.failed == 1
    with rt.sessions() as session:
        assert is_suppressed(session, "gone@example.com")
    assert _enrollment(rt).position == 1  # not stepped back: the next send skips it anyway


def test_results_are_stored_through_a_lost_database_connection(rt: Runtime) -> None:
    calls: list[int] = []
    slept: list[float] = []

    def work(session: Any) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("UPDATE", {}, Exception("server closed the connection"))
        return "stored"

    assert with_db_patience(rt, work, what="test", sleep=slept.append) == "stored"
    assert len(calls) == 3 and slept == [0.5, 1.0]


# --------------------------------------------------------------------------- settling unknown


def _unknown_delivery(rt: Runtime, memory_backend: MemoryBackend) -> int:
    add_subscriber(rt, "ana@example.com")
    memory_backend.raise_next(AmbiguousBackendError("read timeout"))
    batches, _ = run_tick(rt)
    return batches[0][0]


@pytest.mark.parametrize(
    ("event", "status"),
    [
        ("processed", DeliveryStatus.SENT),
        ("delivered", DeliveryStatus.SENT),
        ("deferred", DeliveryStatus.SENT),
        ("bounce", DeliveryStatus.SENT),
        ("dropped", DeliveryStatus.FAILED),
    ],
)
def test_the_providers_event_settles_an_unknown_delivery(
    rt: Runtime, memory_backend: MemoryBackend, event: str, status: str
) -> None:
    delivery_id = _unknown_delivery(rt, memory_backend)
    at = rt.clock()
    body = sample(event, email="ana@example.com", at=at, message_id="m1", delivery_id=delivery_id)
    answer = post_events(client_for(rt), KEY, body, at)
    assert answer.status_code < 300, answer.text
    row = _one(rt)
    assert row.status == status
    with rt.sessions() as session:
        stats = session.get(MessageStats, "glute-accelerator/1")
        sent = stats.sent if stats is not None else 0
    assert sent == (1 if status == DeliveryStatus.SENT else 0)
    if status == DeliveryStatus.FAILED:
        assert row.error is not None and row.error.startswith("refused by the provider")


def test_events_about_settled_deliveries_change_nothing(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    add_subscriber(rt, "ana@example.com")
    batches, _ = run_tick(rt)
    at = rt.clock()
    body = sample(
        "dropped", email="ana@example.com", at=at, message_id="m1", delivery_id=batches[0][0]
    )
    post_events(client_for(rt), KEY, body, at)
    assert _one(rt).status == DeliveryStatus.SENT


def test_unknown_rows_without_word_are_listed_and_resent_on_request(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock, monkeypatch: Any
) -> None:
    delivery_id = _unknown_delivery(rt, memory_backend)
    handed: list[list[int]] = []
    monkeypatch.setattr(cli_deliveries, "_runtime", lambda: rt)
    monkeypatch.setattr(cli_deliveries, "_enqueue", lambda: handed.append)

    young = CliRunner().invoke(main, ["deliveries", "unknown"])
    assert "0 unknown deliveries need a person; 1 still awaiting" in young.output
    clock.advance(timedelta(minutes=rt.settings.unknown_settle_minutes + 1))
    old = CliRunner().invoke(main, ["deliveries", "unknown"])
    assert f"{delivery_id}\tana@example.com\tglute-accelerator/1" in old.output
    assert "1 unknown deliveries need a person" in old.output

    resent = CliRunner().invoke(main, ["deliveries", "resend", "--all-unknown"])
    assert resent.exit_code == 0, resent.output
    assert "1 deliveries queued again" in resent.output
    assert handed == [[delivery_id]]
    assert send_deliveries(rt, [delivery_id], clock()).sent == 1
    again = CliRunner().invoke(main, ["deliveries", "resend", str(delivery_id)])
    assert "0 deliveries queued again (1 not unknown or failed, left alone)" in again.output
    assert len(memory_backend.outbox) == 1


def test_a_reaped_row_of_a_dead_worker_is_settled_by_the_providers_event(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    add_subscriber(rt, "ana@example.com")
    batches: list[list[int]] = []
    from drip.engine.claim import tick

    tick(rt, clock(), enqueue=batches.append)
    with rt.transaction() as session:  # a worker claimed it and died mid-call
        session.execute(update(Delivery).values(status=DeliveryStatus.SENDING, updated_at=clock()))
    report = tick(rt, clock.advance(timedelta(minutes=16)), enqueue=batches.append)
    assert report.unknown == batches[0]
    at = clock()
    body = sample(
        "processed", email="ana@example.com", at=at, message_id="m", delivery_id=batches[0][0]
    )
    post_events(client_for(rt), KEY, body, at)
    assert _one(rt).status == DeliveryStatus.SENT


# --------------------------------------------------------------------------- what the README says


def test_sending_status_says_paused_or_running_the_hold_and_the_counts(
    rt: Runtime, memory_backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_subscriber(rt, "ana@example.com")
    memory_backend.raise_next(ThrottledBackendError("SendGrid 429", status=429, retry_after=9.0))
    run_tick(rt)
    monkeypatch.setattr(cli_deliveries, "_runtime", lambda: rt)
    running = CliRunner().invoke(main, ["sending", "status"])
    assert running.exit_code == 0
    assert running.output.splitlines() == [
        "sending is running",
        "held back 9.0s more: the provider asked us to slow down",
        "queued 1, sending 0, unknown 0, failed 0",
    ]
    with rt.transaction() as session:
        engine_state.pause(session, "401 in a row", rt.clock())
    paused = CliRunner().invoke(main, ["sending", "status"])
    assert paused.exit_code == 1
    assert paused.output.splitlines()[0] == "paused: 401 in a row"


def test_deliveries_unknown_all_lists_the_rows_still_awaiting_the_provider(
    rt: Runtime, memory_backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery_id = _unknown_delivery(rt, memory_backend)
    monkeypatch.setattr(cli_deliveries, "_runtime", lambda: rt)
    row = f"{delivery_id}\tana@example.com\tglute-accelerator/1"
    assert row not in CliRunner().invoke(main, ["deliveries", "unknown"]).output
    assert row in CliRunner().invoke(main, ["deliveries", "unknown", "--all"]).output


def test_retry_countdowns_stay_within_their_documented_bounds() -> None:
    rng = random.Random(12)
    for attempt in range(1, 12):
        assert 0.5 * min(30.0, 2 ** (attempt - 1)) <= db_retry_seconds(attempt, rng) <= 30.0
    for hold in (0.0, 1.0, 299.99):
        assert hold <= held_retry_seconds(hold, rng) <= min(BACKOFF_CAP, hold + 0.1)


def test_a_throttled_email_is_never_given_up_however_long_the_provider_throttles(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    add_subscriber(rt, "ana@example.com")
    memory_backend.raise_next(ThrottledBackendError("SendGrid 503", status=503), times=2)
    batches, _ = run_tick(rt)
    clock.advance(timedelta(hours=rt.settings.send_retry_hours + 1))  # past the retry window
    report = send_deliveries(rt, batches[0], clock())
    assert report.failed == 0 and report.retry == batches[0]
    assert _one(rt).status == DeliveryStatus.QUEUED


@pytest.mark.postgres
def test_asking_whether_anything_is_unknown_reads_the_small_partial_index(
    pg_engine: Engine,
) -> None:
    """Every event batch asks it (drip.engine.reconcile.any_unknown): it must not scan every
    delivery ever sent."""
    from sqlalchemy import exists

    with Session(pg_engine) as session:
        session.execute(text("SET enable_seqscan = off"))  # an empty test table: force the choice
        stmt = select(exists().where(Delivery.status == DeliveryStatus.UNKNOWN))
        compiled = stmt.compile(dialect=pg_engine.dialect, compile_kwargs={"literal_binds": True})
        plan = "\n".join(
            row[0] for row in session.connection().exec_driver_sql("EXPLAIN " + str(compiled))
        )
    assert "ix_deliveries_unsettled" in plan, plan
