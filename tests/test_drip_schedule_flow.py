"""The drip engine on both databases: due times, one lesson a day, catch-up, completion."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.models import Delivery, Enrollment
from drip.runtime import Runtime
from tests.helpers import add_subscriber, run_tick


def _deliveries(rt: Runtime) -> list[Delivery]:
    with rt.sessions() as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)))


def _enrollments(rt: Runtime, sub_id: int) -> dict[str, Enrollment]:
    with rt.sessions() as session:
        rows = session.scalars(select(Enrollment).where(Enrollment.subscriber_id == sub_id))
        return {e.sequence: e for e in rows}


def test_first_lesson_goes_out_at_once_after_confirming(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    add_subscriber(rt, "ana@example.com")
    _, report = run_tick(rt)
    assert report.sent == 1
    [email] = memory_backend.outbox
    assert email.to == "ana@example.com"
    assert email.message.message_key == "glute-accelerator/1"
    assert email.subject == rt.course().lessons[0].subject
    assert "Hi Ana," in email.text


def test_next_lesson_is_due_at_seven_local_the_next_day(rt: Runtime) -> None:
    sub = add_subscriber(rt, "ana@example.com", zone="Asia/Tokyo")
    run_tick(rt)
    enrollment = _enrollments(rt, sub)["glute-accelerator"]
    assert enrollment.position == 1
    assert enrollment.next_send_at is not None
    local = enrollment.next_send_at.astimezone(ZoneInfo("Asia/Tokyo"))
    assert (local.hour, local.minute) == (7, 0)
    assert local.date() == rt.clock().astimezone(ZoneInfo("Asia/Tokyo")).date() + timedelta(days=1)


def test_whole_course_then_upsell_one_email_per_local_day_across_dst(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    """Minute-accurate ticks over three weeks spanning the US spring-forward (2026-03-08)."""
    zone = ZoneInfo("America/New_York")
    add_subscriber(rt, "ana@example.com", zone="America/New_York")
    now = rt.clock()
    end = now + timedelta(days=21)
    while now < end:
        clock.set(now)
        run_tick(rt)
        with rt.sessions() as session:
            nxt = session.scalar(
                select(Enrollment.next_send_at)
                .where(Enrollment.next_send_at.is_not(None))
                .order_by(Enrollment.next_send_at)
                .limit(1)
            )
        if nxt is None:
            break
        now = max(nxt, now + timedelta(minutes=1))
    keys = [e.message.message_key for e in memory_backend.outbox]
    assert keys == [f"glute-accelerator/{i}" for i in range(1, 8)] + [
        f"runners-lab-upsell/{i}" for i in range(1, 4)
    ]
    local_days = Counter(e.sent_at.astimezone(zone).date() for e in memory_backend.outbox)
    assert max(local_days.values()) == 1, local_days
    # Every email after the first (sent at enrollment) left at 07:00 New York time, EST or EDT.
    later = memory_backend.outbox[1:]
    assert {
        (e.sent_at.astimezone(zone).hour, e.sent_at.astimezone(zone).minute) for e in later
    } == {(7, 0)}
    offsets = {e.sent_at.astimezone(zone).utcoffset() for e in later}
    assert offsets == {timedelta(hours=-5), timedelta(hours=-4)}


def test_catch_up_after_an_outage_sends_one_lesson_not_a_burst(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    sub = add_subscriber(rt, "ana@example.com", zone="Europe/London")
    run_tick(rt)  # lesson 1 at enrollment
    outage_over = rt.clock() + timedelta(days=4, hours=10)  # three lessons' worth missed
    _, report = run_tick(rt, outage_over)
    assert report.sent == 1
    assert [e.message.message_key for e in memory_backend.outbox][-1] == "glute-accelerator/2"
    enrollment = _enrollments(rt, sub)["glute-accelerator"]
    assert enrollment.next_send_at is not None
    london = enrollment.next_send_at.astimezone(ZoneInfo("Europe/London"))
    assert london.date() == outage_over.astimezone(ZoneInfo("Europe/London")).date() + timedelta(
        days=1
    )
    assert london.hour == 7


def test_completion_enters_the_upsell_the_next_local_morning(rt: Runtime) -> None:
    sub = add_subscriber(rt, "ana@example.com", zone="America/Chicago")
    with rt.transaction() as session:
        enrollment = session.scalars(select(Enrollment)).one()
        enrollment.position = rt.course().length - 1  # only the last lesson left
    run_tick(rt)
    rows = _enrollments(rt, sub)
    assert rows["glute-accelerator"].status == "completed"
    upsell = rows["runners-lab-upsell"]
    assert upsell.status == "active"
    assert upsell.next_send_at is not None
    local = upsell.next_send_at.astimezone(ZoneInfo("America/Chicago"))
    today = rt.clock().astimezone(ZoneInfo("America/Chicago")).date()
    assert local.date() == today + timedelta(days=1)
    assert local.hour == 7


def test_a_tick_with_nothing_due_claims_nothing(rt: Runtime) -> None:
    add_subscriber(rt, "ana@example.com")
    run_tick(rt)
    batches, report = run_tick(rt, rt.clock() + timedelta(hours=1))
    assert batches == []
    assert report.sent == 0
    assert len(_deliveries(rt)) == 1


def test_unknown_zone_falls_back_to_the_default(rt: Runtime) -> None:
    sub = add_subscriber(rt, "ana@example.com", zone="Mars/Olympus_Mons")
    run_tick(rt)
    nxt = _enrollments(rt, sub)["glute-accelerator"].next_send_at
    assert nxt is not None
    assert nxt.astimezone(ZoneInfo(rt.settings.default_timezone)).hour == 7
    assert nxt.tzinfo == UTC
    assert nxt > datetime(2026, 3, 2, tzinfo=UTC)
