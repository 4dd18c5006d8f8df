"""Sending: pages by id against a snapshot, exactly once, pause/resume/cancel within a batch,
crash recovery, one chain at a time, the quiet rule and throttling. The page step is driven
directly (no Celery), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select

from drip.broadcasts import control, sending
from drip.broadcasts.ratelimit import Grant
from drip.broadcasts.tick import broadcasts_tick
from drip.clock import FrozenClock
from drip.engine.dispatch import send_deliveries
from drip.esp.memory import MemoryBackend
from drip.models import Delivery, DeliveryStatus, Tag
from drip.runtime import Runtime
from tests.broadcast_support import (
    add_sub,
    broadcast_row,
    make_rt,
    new_broadcast,
    recipients,
    run_pages,
    send_all,
    start_now,
    status_counts,
)


@pytest.fixture
def small(engine: Engine, tmp_path: Path, clock: FrozenClock) -> tuple[Runtime, MemoryBackend]:
    """Pages of 4 subscribers, send batches of 2: many pages from a small list."""
    return make_rt(engine, tmp_path, clock, broadcast_page_size=4, send_batch_size=2)


def _subs(rt: Runtime, n: int, **kw: Any) -> list[int]:
    return [add_sub(rt, f"runner{i}@example.com", name=f"R{i}", **kw) for i in range(n)]


def test_every_subscriber_in_the_snapshot_gets_it_exactly_once(
    small: tuple[Runtime, MemoryBackend],
) -> None:
    rt, backend = small
    _subs(rt, 10)
    broadcast_id = new_broadcast(rt)
    runner = start_now(rt, broadcast_id)
    add_sub(rt, "late@example.com")  # signed up after the start: not in the snapshot

    results, batches = run_pages(rt, broadcast_id, runner)
    report = send_all(rt, batches)

    assert [r.written for r in results] == [4, 4, 2, 0]
    assert results[-1].state == "done"
    assert all(len(b) <= 2 for b in batches)
    assert report.sent == 10
    assert sorted(s.to for s in backend.outbox) == sorted(
        f"runner{i}@example.com" for i in range(10)
    )
    assert backend.outbox[0].subject == "Hill week, R0"
    assert "late@example.com" not in recipients(rt, broadcast_id)
    # Another chain, or the same pages once more: nothing new.
    assert run_pages(rt, broadcast_id, sending.new_runner())[0][-1].written == 0
    assert send_all(rt, batches).sent == 0
    assert set(recipients(rt, broadcast_id).values()) == {1}


def test_the_send_path_skips_whoever_left_after_the_page_was_written(
    small: tuple[Runtime, MemoryBackend],
) -> None:
    rt, backend = small
    ids = _subs(rt, 3)
    broadcast_id = new_broadcast(rt)
    _, batches = run_pages(rt, broadcast_id, start_now(rt, broadcast_id))
    from drip.models import Subscriber

    with rt.transaction() as session:
        sub = session.get(Subscriber, ids[1])
        assert sub is not None
        sub.newsletter = False

    send_all(rt, batches)

    assert status_counts(rt, broadcast_id) == {"sent": 2, "skipped": 1}
    assert "runner1@example.com" not in {s.to for s in backend.outbox}


def test_the_broadcast_is_sent_when_nothing_is_in_flight(
    small: tuple[Runtime, MemoryBackend], clock: FrozenClock
) -> None:
    rt, _ = small
    _subs(rt, 5)
    broadcast_id = new_broadcast(rt)
    _, batches = run_pages(rt, broadcast_id, start_now(rt, broadcast_id))

    report = broadcasts_tick(rt, clock(), kick=lambda *k: None)
    assert report.finished == [] and broadcast_row(rt, broadcast_id).status == "sending"
    send_all(rt, batches)
    report = broadcasts_tick(rt, clock(), kick=lambda *k: None)

    assert report.finished == [broadcast_id]
    b = broadcast_row(rt, broadcast_id)
    assert (b.status, b.finished_at, b.total) == ("sent", clock(), 5)


def test_pause_mid_send_holds_queued_emails_and_resume_sends_each_once(
    small: tuple[Runtime, MemoryBackend], clock: FrozenClock
) -> None:
    rt, backend = small
    _subs(rt, 12)
    broadcast_id = new_broadcast(rt)
    runner = start_now(rt, broadcast_id)
    batches: list[list[int]] = []
    for _ in range(2):  # two pages written, their send tasks queued, nothing sent yet
        sending.run_page(rt, broadcast_id, runner, clock(), enqueue=batches.append)
    send_all(rt, batches[:1])  # one batch went out before the pause

    with rt.transaction() as session:
        control.pause(session, broadcast_id, actor="ana", now=clock())
    after_pause = send_all(rt, batches[1:])  # the queued send tasks run: nothing to claim
    stopped = sending.run_page(rt, broadcast_id, runner, clock(), enqueue=batches.append)

    assert after_pause.sent == 0 and len(backend.outbox) == 2
    assert stopped.state == "stopped" and stopped.next_in is None
    assert status_counts(rt, broadcast_id) == {"sent": 2, "skipped": 6}

    with rt.transaction() as session:
        control.resume(session, broadcast_id, actor="ana", now=clock())
    kicks: list[tuple[int, str, float]] = []
    broadcasts_tick(rt, clock(), kick=lambda *k: kicks.append(k))  # beat restarts it
    assert [k[0] for k in kicks] == [broadcast_id]
    _, more = run_pages(rt, broadcast_id, kicks[0][1])
    send_all(rt, more)

    assert sorted(s.to for s in backend.outbox) == sorted(
        f"runner{i}@example.com" for i in range(12)
    )
    assert status_counts(rt, broadcast_id) == {"sent": 12}
    assert set(recipients(rt, broadcast_id).values()) == {1}


def test_cancel_mid_send_drops_what_is_not_sent(
    small: tuple[Runtime, MemoryBackend], clock: FrozenClock
) -> None:
    rt, backend = small
    _subs(rt, 12)
    broadcast_id = new_broadcast(rt)
    runner = start_now(rt, broadcast_id)
    batches: list[list[int]] = []
    sending.run_page(rt, broadcast_id, runner, clock(), enqueue=batches.append)
    send_all(rt, batches[:1])

    with rt.transaction() as session:
        control.cancel(session, broadcast_id, actor="ana", now=clock())
    send_all(rt, batches)
    after = sending.run_page(rt, broadcast_id, runner, clock(), enqueue=batches.append)

    assert after.state == "stopped"
    assert len(backend.outbox) == 2
    assert status_counts(rt, broadcast_id) == {"sent": 2, "skipped": 2}
    b = broadcast_row(rt, broadcast_id)
    assert (b.status, b.finished_at) == ("cancelled", clock())
    assert broadcasts_tick(rt, clock(), kick=lambda *k: None).kicked == []


def test_a_crash_inside_a_page_loses_nothing_and_duplicates_nothing(
    small: tuple[Runtime, MemoryBackend], clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, backend = small
    _subs(rt, 10)
    broadcast_id = new_broadcast(rt)
    runner = start_now(rt, broadcast_id)
    batches: list[list[int]] = []
    sending.run_page(rt, broadcast_id, runner, clock(), enqueue=batches.append)
    real_write = sending._write

    def dying_write(*args: Any, **kwargs: Any) -> list[int]:
        real_write(*args, **kwargs)  # the rows are written...
        raise RuntimeError("worker died")  # ...and the process dies before the commit

    monkeypatch.setattr(sending, "_write", dying_write)
    with pytest.raises(RuntimeError):
        sending.run_page(rt, broadcast_id, runner, clock(), enqueue=batches.append)
    monkeypatch.setattr(sending, "_write", real_write)
    assert broadcast_row(rt, broadcast_id).last_subscriber_id == 4  # the checkpoint held

    clock.advance(sending.STALE + timedelta(seconds=1))  # the chain is silent: beat restarts it
    kicks: list[tuple[int, str, float]] = []
    broadcasts_tick(rt, clock(), kick=lambda *k: kicks.append(k))
    _, more = run_pages(rt, broadcast_id, kicks[0][1])
    send_all(rt, batches + more)

    assert set(recipients(rt, broadcast_id).values()) == {1}
    assert len(recipients(rt, broadcast_id)) == 10 and len(backend.outbox) == 10


def test_a_second_chain_stops_while_the_first_is_alive_and_takes_over_when_it_is_not(
    small: tuple[Runtime, MemoryBackend], clock: FrozenClock
) -> None:
    rt, _ = small
    _subs(rt, 12)
    broadcast_id = new_broadcast(rt)
    first = start_now(rt, broadcast_id)
    sending.run_page(rt, broadcast_id, first, clock(), enqueue=lambda ids: None)

    second = sending.new_runner()
    assert sending.run_page(rt, broadcast_id, second, clock(), enqueue=lambda i: None).state == (
        "stopped"
    )
    clock.advance(sending.STALE + timedelta(seconds=1))
    taken = sending.run_page(rt, broadcast_id, second, clock(), enqueue=lambda i: None)
    old = sending.run_page(rt, broadcast_id, first, clock(), enqueue=lambda i: None)

    assert (taken.state, taken.written) == ("more", 4)
    assert old.state == "stopped"
    assert broadcast_row(rt, broadcast_id).runner == second


def test_the_quiet_rule_skips_whoever_got_a_lesson_recently(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    rt, backend = make_rt(engine, tmp_path, clock, broadcast_quiet_hours=12)
    recent, old, _ = _subs(rt, 3)
    with rt.transaction() as session:
        for sub, hours in ((recent, 2), (old, 30)):
            session.add(
                Delivery(
                    subscriber_id=sub,
                    message_key="glute-accelerator/1",
                    kind="lesson",
                    status=DeliveryStatus.SENT,
                    sent_at=clock() - timedelta(hours=hours),
                )
            )
    broadcast_id = new_broadcast(rt)
    results, batches = run_pages(rt, broadcast_id, start_now(rt, broadcast_id))
    send_all(rt, batches)

    assert (results[0].written, results[0].quiet) == (2, 1)
    assert {s.to for s in backend.outbox} == {"runner1@example.com", "runner2@example.com"}
    with rt.sessions() as session:
        row = session.scalar(
            select(Delivery).where(
                Delivery.broadcast_id == broadcast_id, Delivery.subscriber_id == recent
            )
        )
    assert row is not None and (row.status, row.error) == (
        "skipped",
        "quiet hours: a lesson went out within 12 h",
    )
    # The broadcast's own setting wins over the default: 0 switches the rule off.
    off = new_broadcast(rt, quiet_hours=0)
    assert run_pages(rt, off, start_now(rt, off))[0][0].quiet == 0


class ScriptedLimiter:
    def __init__(self, grants: list[Grant]) -> None:
        self.grants = grants
        self.asked: list[int] = []

    def acquire(self, wanted: int) -> Grant:
        self.asked.append(wanted)
        return self.grants.pop(0)


def test_throttled_pages_wait_briefly_or_come_back_later(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    rt, _ = make_rt(engine, tmp_path, clock, broadcast_rate_per_second=20)
    _subs(rt, 5)
    broadcast_id = new_broadcast(rt)
    runner = start_now(rt, broadcast_id)
    slept: list[float] = []

    def page(limiter: ScriptedLimiter) -> sending.PageResult:
        return sending.run_page(
            rt,
            broadcast_id,
            runner,
            clock(),
            enqueue=lambda ids: None,
            limiter=limiter,
            sleep=slept.append,
        )

    short = ScriptedLimiter([Grant(0, 0.4), Grant(2, 0.0)])
    assert (page(short).written, slept, short.asked) == (2, [0.4], [2, 2])  # 0.1 s of 20/s
    assert page(ScriptedLimiter([Grant(0, 3.0)])).next_in == 3.0  # re-queued, short countdown
    assert page(ScriptedLimiter([Grant(0, 30.0)])).next_in == 5.0  # never more than 5 s
    assert page(ScriptedLimiter([Grant(0, 3600.0)])).next_in is None  # beat picks it up later
    assert broadcast_row(rt, broadcast_id).last_subscriber_id == 2


def test_a_segment_that_breaks_mid_send_pauses_the_broadcast(
    small: tuple[Runtime, MemoryBackend], clock: FrozenClock
) -> None:
    rt, _ = small
    _subs(rt, 6, tags=["5k"])
    broadcast_id = new_broadcast(rt, segment={"tags_any": ["5k"]})
    runner = start_now(rt, broadcast_id)
    sending.run_page(rt, broadcast_id, runner, clock(), enqueue=lambda ids: None)
    with rt.transaction() as session:
        session.execute(delete(Tag).where(Tag.name == "5k"))

    result = sending.run_page(rt, broadcast_id, runner, clock(), enqueue=lambda ids: None)

    assert result.state == "stopped"
    with rt.sessions() as session:
        from drip.broadcasts.queries import broadcast_detail

        info = broadcast_detail(session, broadcast_id)
    assert info.broadcast.status == "paused"
    assert info.history[-1].note == (
        "segment no longer valid: segment.tags_any: unknown tag(s): 5k"
    )


def test_broadcast_deliveries_are_rendered_once_per_version(
    small: tuple[Runtime, MemoryBackend], clock: FrozenClock
) -> None:
    rt, backend = small
    _subs(rt, 3)
    broadcast_id = new_broadcast(rt)
    _, batches = run_pages(rt, broadcast_id, start_now(rt, broadcast_id))
    for batch in batches:
        send_deliveries(rt, batch, clock())

    messages = {id(s.message) for s in backend.outbox}
    assert len(messages) == 1
    email = backend.outbox[0]
    assert email.mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "1 Test Road, Testville" in email.text
    assert email.message.category == "broadcast"
    assert "https://drip.test/t/" in email.html  # real sends are tracked (test sends are not)


def test_a_global_sending_pause_stops_pages_and_beat_until_it_is_lifted(
    small: tuple[Runtime, MemoryBackend], clock: FrozenClock
) -> None:
    from drip.engine import pause as engine_state

    rt, _ = small
    _subs(rt, 6)
    broadcast_id = new_broadcast(rt)
    runner = start_now(rt, broadcast_id)
    with rt.transaction() as session:
        engine_state.pause(session, "50 sends failed in a row", clock())

    idle = sending.run_page(rt, broadcast_id, runner, clock(), enqueue=lambda ids: None)
    clock.advance(sending.STALE + timedelta(seconds=1))
    kicks: list[tuple[int, str, float]] = []
    report = broadcasts_tick(rt, clock(), kick=lambda *k: kicks.append(k))

    assert (idle.state, idle.next_in, idle.written) == ("idle", None, 0)
    assert report.paused == "50 sends failed in a row" and kicks == []
    with rt.transaction() as session:
        engine_state.resume(session)
    broadcasts_tick(rt, clock(), kick=lambda *k: kicks.append(k))
    results, _ = run_pages(rt, broadcast_id, kicks[0][1])
    assert sum(r.written for r in results) == 6
