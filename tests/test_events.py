"""The normalized event and its ingest: types, machine rule, matching, dedupe, rollups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from drip import engagement
from drip.clock import FrozenClock
from drip.ingest.events import Event, EventType
from drip.models import Delivery, MessageStats, TrackingEvent
from drip.runtime import Runtime
from drip.settings import Settings
from drip.tracking.machine import machine_click, machine_open
from tests.helpers import run_tick
from tests.tracking_support import HUMAN_UA, sent_delivery, store, tracking_settings

KEY = ec.generate_private_key(ec.SECP256R1())
APPLE_MAIL_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
)
GMAIL_PROXY_UA = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
YAHOO_PROXY_UA = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tracking_settings(tmp_path, KEY)


def test_the_event_types_are_anymails_set() -> None:
    assert {t.value for t in EventType} == {
        "queued", "sent", "rejected", "failed", "bounced", "deferred", "delivered",
        "autoresponded", "opened", "clicked", "complained", "unsubscribed", "subscribed",
        "unknown",
    }  # fmt: skip


# --------------------------------------------------------------------------- machine rule


@pytest.mark.parametrize(
    ("user_agent", "ip", "flag", "machine"),
    [
        ("Mozilla/5.0", "17.58.1.1", False, True),  # Apple Mail Privacy Protection
        ("Mozilla/5.0", None, False, True),
        (APPLE_MAIL_UA, "17.58.1.1", False, True),  # no browser, from Apple's network
        (APPLE_MAIL_UA, "203.0.113.5", False, False),  # Apple Mail, MPP off: a person
        (HUMAN_UA, "17.58.1.1", False, False),  # a person browsing at Apple
        (GMAIL_PROXY_UA, "66.249.84.1", False, True),
        ("GoogleImageProxy", None, False, True),
        (YAHOO_PROXY_UA, None, False, True),
        ("", "203.0.113.5", False, True),
        (None, None, False, True),
        ("Mozilla/5.0 (compatible; bingbot/2.0)", None, False, True),
        (HUMAN_UA, "203.0.113.5", True, True),  # the provider says machine (sg_machine_open)
        (HUMAN_UA, "203.0.113.5", False, False),
        (HUMAN_UA, "not-an-ip", False, False),
    ],
)  # fmt: skip
def test_machine_opens(user_agent: str | None, ip: str | None, flag: bool, machine: bool) -> None:
    assert machine_open(user_agent, ip, provider_flag=flag) is machine


@pytest.mark.parametrize(
    ("user_agent", "head", "after", "machine"),
    [
        (HUMAN_UA, False, 60, False),
        (HUMAN_UA, False, 9.9, True),  # before DRIP_SCANNER_CLICK_SECONDS: a gateway
        (HUMAN_UA, False, 10, False),
        (HUMAN_UA, True, 3600, True),  # HEAD
        ("Proofpoint URL Defense", False, 3600, True),
        ("python-requests/2.32", False, 3600, True),
        ("", False, 3600, True),
    ],
)
def test_machine_clicks(user_agent: str, head: bool, after: float, machine: bool) -> None:
    at = T0 + timedelta(seconds=after)

    assert (
        machine_click(user_agent, head=head, occurred_at=at, sent_at=T0, scanner_seconds=10)
        is machine
    )


def test_a_click_with_no_send_time_or_no_window_is_judged_by_its_agent_only() -> None:
    assert (
        machine_click(HUMAN_UA, head=False, occurred_at=T0, sent_at=None, scanner_seconds=10)
        is False
    )
    assert (
        machine_click(HUMAN_UA, head=False, occurred_at=T0, sent_at=T0, scanner_seconds=0) is False
    )


# --------------------------------------------------------------------------- ingest


def _event(kind: EventType, event_id: str, at: datetime, **fields: object) -> Event:
    return Event(type=kind, occurred_at=at, provider="test", provider_event_id=event_id, **fields)  # type: ignore[arg-type]


def test_an_event_with_only_an_address_goes_to_the_last_email_sent_before_it(
    rt: Runtime, clock: FrozenClock
) -> None:
    subscriber_id, first = sent_delivery(rt, "ana@example.com")
    clock.advance(timedelta(days=1, hours=12))
    run_tick(rt)
    with rt.sessions() as session:
        second = session.scalar(
            select(Delivery.id).where(Delivery.message_key == "glute-accelerator/2")
        )
        second_sent = session.scalar(select(Delivery.sent_at).where(Delivery.id == second))
    assert second is not None and second_sent is not None

    minute, month = timedelta(minutes=1), timedelta(days=30)
    ana = "ana@example.com"
    report = store(
        rt,
        [
            _event(EventType.COMPLAINED, "a", second_sent - minute, email="ANA@example.com"),
            _event(EventType.COMPLAINED, "b", second_sent + minute, email=ana),
            _event(EventType.BOUNCED, "c", rt.clock() - month, email=ana),
            _event(EventType.BOUNCED, "d", rt.clock(), email="nobody@example.com"),
        ],
    )

    e = TrackingEvent
    with rt.sessions() as session:
        rows = session.execute(
            select(e.provider_event_id, e.delivery_id, e.subscriber_id).order_by(
                e.provider_event_id
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("a", first, subscriber_id),
        ("b", second, subscriber_id),
        ("c", None, subscriber_id),  # before any send: the person, no email
        ("d", None, None),
    ]
    assert (report.stored, report.unmatched) == (4, 2)


def test_a_claimed_delivery_that_no_longer_exists_is_stored_without_it(rt: Runtime) -> None:
    report = store(
        rt, [_event(EventType.OPENED, "gone", T0, delivery_id=999_999, user_agent=HUMAN_UA)]
    )

    with rt.sessions() as session:
        event = session.scalar(select(TrackingEvent))
    assert event is not None and event.delivery_id is None
    assert report.unmatched == 1


def test_the_same_event_id_is_stored_once_whatever_the_batches(rt: Runtime) -> None:
    _, delivery_id = sent_delivery(rt, "ana@example.com")
    opened = _event(EventType.DELIVERED, "same", T0, delivery_id=delivery_id)

    first = store(rt, [opened, opened])
    second = store(rt, [opened])

    assert (first.received, first.stored, first.duplicates) == (2, 1, 1)
    assert (second.stored, second.duplicates) == (0, 1)


def test_rebuilding_the_rollups_gives_the_counters_kept_by_the_ingest(
    rt: Runtime, clock: FrozenClock
) -> None:
    _, ana = sent_delivery(rt, "ana@example.com")
    _, ben = sent_delivery(rt, "ben@example.com")
    at = clock.now + timedelta(hours=1)
    store(
        rt,
        [
            _event(EventType.DELIVERED, "1", at, delivery_id=ana),
            _event(EventType.DELIVERED, "2", at, delivery_id=ben),
            _event(EventType.OPENED, "3", at, delivery_id=ana, user_agent=HUMAN_UA),
            _event(EventType.OPENED, "4", at, delivery_id=ben, user_agent="Mozilla/5.0"),
            _event(EventType.CLICKED, "5", at, delivery_id=ben, user_agent=HUMAN_UA),
            _event(EventType.CLICKED, "6", at, delivery_id=ana, user_agent=HUMAN_UA, head=True),
            _event(EventType.BOUNCED, "7", at, delivery_id=ben),
            _event(EventType.COMPLAINED, "8", at, delivery_id=ana),
        ],
    )

    def counters() -> list[tuple[object, ...]]:
        with rt.sessions() as session:
            return [tuple(r) for r in session.execute(select(MessageStats.__table__))]

    incremental = counters()
    with rt.transaction() as session:
        engagement.rebuild(session)

    # key, sent, delivered, bounced, opened (ben's click implies it), clicked, complained, unsub
    assert incremental == [("glute-accelerator/1", 2, 2, 1, 2, 1, 1, 0)]
    assert counters() == incremental


def test_concurrent_batches_about_the_same_emails_count_each_first_once(
    rt: Runtime, clock: FrozenClock
) -> None:
    import random
    import threading

    from drip.ingest.events import store as store_committed

    deliveries = [sent_delivery(rt, f"runner{i}@example.com")[1] for i in range(12)]
    at = clock.now + timedelta(hours=1)
    kinds = [EventType.DELIVERED, EventType.OPENED, EventType.CLICKED, EventType.BOUNCED]
    rng = random.Random(4)
    batches = []
    for b in range(4):  # every batch touches every delivery, each in its own order
        events = [
            _event(kind, f"{b}:{kind}:{d}", at, delivery_id=d, user_agent=HUMAN_UA)
            for d in deliveries
            for kind in kinds
        ]
        rng.shuffle(events)
        batches.append(events)
    start = threading.Barrier(len(batches))
    errors: list[BaseException] = []

    def run(events: list[Event]) -> None:
        start.wait()
        try:
            store_committed(rt, events)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(b,)) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    with rt.sessions() as session:
        row = session.get(MessageStats, "glute-accelerator/1")
    assert errors == []
    assert row is not None
    n = len(deliveries)
    assert (row.sent, row.delivered, row.opened, row.clicked, row.bounced) == (n, n, n, n, n)
