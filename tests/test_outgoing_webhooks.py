"""Outgoing webhooks: emission into the outbox, and delivery to a real local receiver.

Each test runs on SQLite and PostgreSQL (the ``engine`` fixture). Deliveries go over HTTP to a
threaded http.server (tests/webhook_receiver.py) and are verified with the Standard Webhooks
library itself. The clock is injected: it starts at the real time (receivers check a signature's
timestamp against theirs) and is moved by hand to the next attempt; nothing sleeps.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine, select
from standardwebhooks import Webhook

from drip import outgoing
from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.ingest.events import Event, EventType, ingest
from drip.models import OutgoingWebhook, OutgoingWebhookAttempt
from drip.outgoing.delivery import (
    FIRST_RETRY_SECONDS,
    MAX_RETRY_SECONDS,
    RETRY_WINDOW,
    claim_due,
    deliver_due,
    retry_delay,
)
from drip.outgoing.outbox import iso
from drip.outgoing_endpoints import Endpoint
from drip.runtime import Runtime
from drip.subscribers.confirm import CONFIRM_PURPOSE, ConfirmState, confirm
from drip.subscribers.signup import signup
from drip.subscribers.validation import SignupData
from drip.tokens import expiring_token
from tests.conftest import make_settings
from tests.helpers import add_subscriber
from tests.tracking_support import PURCHASE_SECRET, client_for, post_purchase
from tests.webhook_receiver import Receiver, refused_url

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
TIMEOUT = 0.5  # seconds: the hanging receiver costs this much real time, once
ALL = frozenset(outgoing.EVENT_TYPES)
PURCHASES = {"purchase_webhook_secret": PURCHASE_SECRET, "redis_url": "redis://127.0.0.1:6379/7"}


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


def build(
    engine: Engine, tmp_path: Path, clock: FrozenClock, *endpoints: Endpoint, **overrides: Any
) -> Runtime:
    settings = make_settings(
        tmp_path, outgoing_webhooks=endpoints, outgoing_webhook_timeout=TIMEOUT, **overrides
    )
    return Runtime.build(settings, engine=engine, backend=MemoryBackend(clock=clock), clock=clock)


def endpoint(url: str, *events: str) -> Endpoint:
    return Endpoint(url, frozenset(events) or ALL, SECRET)


def rows(rt: Runtime) -> list[OutgoingWebhook]:
    with rt.sessions() as session:
        return list(session.scalars(select(OutgoingWebhook).order_by(OutgoingWebhook.id)))


def attempts(rt: Runtime) -> list[OutgoingWebhookAttempt]:
    with rt.sessions() as session:
        found = session.scalars(select(OutgoingWebhookAttempt).order_by(OutgoingWebhookAttempt.id))
        return list(found)


def emit_one(rt: Runtime, event_type: str = outgoing.SUBSCRIBER_CONFIRMED) -> None:
    with rt.transaction() as session:
        data = outgoing.subscriber_data(7, "ana@example.com", first_name="Ana")
        assert outgoing.emit(session, None, event_type, data, rt.clock()) >= 1


def verified(request: Any) -> dict[str, Any]:
    """The body of a received request, verified by the Standard Webhooks library."""
    payload: dict[str, Any] = Webhook(SECRET).verify(request.body, request.headers)
    return payload


# --------------------------------------------------------------------------- delivery


def test_a_delivery_is_signed_as_standard_webhooks_says(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    with Receiver([200]) as receiver:
        rt = build(engine, tmp_path, clock, endpoint(receiver.url))
        emit_one(rt)

        report = deliver_due(rt)

    assert (report.claimed, report.delivered) == (1, 1)
    [request] = receiver.received
    payload = verified(request)
    assert payload == {
        "type": "subscriber.confirmed",
        "timestamp": iso(clock()),
        "data": {"subscriber_id": 7, "email": "ana@example.com", "first_name": "Ana"},
    }
    assert datetime.fromisoformat(payload["timestamp"]) == clock()  # the event's time, in UTC
    [row] = rows(rt)
    assert request.headers["webhook-id"] == row.message_id
    assert request.headers["webhook-timestamp"] == str(int(clock().timestamp()))
    assert request.headers["content-type"] == "application/json"
    assert request.path == "/hooks/drip"
    assert (row.status, row.attempts, row.last_status_code, row.next_attempt_at) == (
        "delivered",
        1,
        200,
        None,
    )
    assert row.delivered_at == clock()
    [logged] = attempts(rt)
    assert (logged.number, logged.status_code, logged.error) == (1, 200, None)


def test_a_tampered_body_fails_verification(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    from standardwebhooks.webhooks import WebhookVerificationError

    with Receiver([200]) as receiver:
        rt = build(engine, tmp_path, clock, endpoint(receiver.url))
        emit_one(rt)
        deliver_due(rt)
    [request] = receiver.received

    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.body.replace(b"Ana", b"Eve"), request.headers)
    other = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(request.body, request.headers)


def test_a_500_is_retried_with_backoff_then_delivered_once(
    engine: Engine, tmp_path: Path, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="drip.outgoing.delivery")
    with Receiver([500, 200]) as receiver:
        rt = build(engine, tmp_path, clock, endpoint(receiver.url))
        emit_one(rt)
        start = clock()

        first = deliver_due(rt)
        [row] = rows(rt)
        not_yet = deliver_due(rt)  # same moment: the retry is not due
        assert row.next_attempt_at is not None
        clock.set(row.next_attempt_at)
        second = deliver_due(rt)
        clock.advance(timedelta(days=2))
        after = deliver_due(rt)

    assert (first.retrying, not_yet.claimed, second.delivered, after.claimed) == (1, 0, 1, 0)
    wait = (row.next_attempt_at - start).total_seconds()
    assert FIRST_RETRY_SECONDS / 2 <= wait <= FIRST_RETRY_SECONDS
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == (
        "pending",
        1,
        500,
        "HTTP 500",
    )
    assert len(receiver.received) == 2
    ids = {request.headers["webhook-id"] for request in receiver.received}
    assert ids == {row.message_id}  # the same message, retried
    assert [verified(r)["type"] for r in receiver.received] == ["subscriber.confirmed"] * 2
    [done] = rows(rt)
    assert (done.status, done.attempts, done.last_status_code, done.last_error) == (
        "delivered",
        2,
        200,
        None,
    )
    logged = attempts(rt)
    assert [(a.number, a.status_code, a.error) for a in logged] == [
        (1, 500, "HTTP 500"),
        (2, 200, None),
    ]
    assert logged[1].at - logged[0].at == timedelta(seconds=wait)
    lines = [r.getMessage() for r in caplog.records if r.name == "drip.outgoing.delivery"]
    assert len(lines) == 2
    assert "attempt 1: HTTP 500 in " in lines[0] and "next attempt at" in lines[0]
    assert "attempt 2: 200 in " in lines[1] and lines[1].endswith("delivered")


def test_a_receiver_that_hangs_costs_one_deadline_and_is_retried(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    with Receiver(hang=True) as receiver:
        rt = build(engine, tmp_path, clock, endpoint(receiver.url))
        for _ in range(3):
            emit_one(rt)
        started = time.monotonic()

        report = deliver_due(rt)

        elapsed = time.monotonic() - started
    assert report.claimed == 3 and report.retrying == 3
    assert len(receiver.received) == 3
    assert TIMEOUT <= elapsed < TIMEOUT * 4  # the three at once: one deadline, not three
    for row in rows(rt):
        assert row.status == "pending"
        assert row.last_status_code is None
        assert row.last_error is not None and row.last_error.startswith("timed out")
        assert row.next_attempt_at is not None and row.next_attempt_at > clock()
    for logged in attempts(rt):
        assert TIMEOUT * 1000 <= logged.duration_ms < TIMEOUT * 4000
        assert logged.status_code is None and "timed out" in (logged.error or "")


def test_the_database_is_free_while_a_receiver_hangs(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    # SQLite has one writer at a time: a run holding a transaction during its posts would make
    # this signup-like write wait for the deadline.
    with Receiver(hang=True) as receiver:
        rt = build(engine, tmp_path, clock, endpoint(receiver.url))
        emit_one(rt)
        run = threading.Thread(target=deliver_due, args=(rt,))
        run.start()
        assert receiver.arrived.wait(5)
        started = time.monotonic()

        emit_one(rt)

        took = time.monotonic() - started
        still_posting = run.is_alive()
        run.join()
    assert still_posting and took < TIMEOUT / 2
    assert [row.attempts for row in rows(rt)] == [1, 0]


def test_an_answer_trickled_a_byte_at_a_time_still_ends_at_the_deadline(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    # Each byte comes well within the deadline: only a deadline on the whole exchange ends it.
    with Receiver(trickle=TIMEOUT / 4) as receiver:
        rt = build(engine, tmp_path, clock, endpoint(receiver.url))
        emit_one(rt)
        started = time.monotonic()

        report = deliver_due(rt)

        elapsed = time.monotonic() - started
    assert report.retrying == 1
    assert TIMEOUT <= elapsed < TIMEOUT * 4
    [row] = rows(rt)
    assert row.last_error is not None and row.last_error.startswith("timed out")


def test_a_receiver_that_is_down_is_logged_and_retried_later(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    rt = build(engine, tmp_path, clock, endpoint(refused_url()))
    emit_one(rt)

    report = deliver_due(rt)

    assert report.retrying == 1
    [row] = rows(rt)
    assert row.status == "pending" and row.attempts == 1
    assert row.last_error is not None and "ConnectionRefusedError" in row.last_error
    assert row.next_attempt_at is not None and row.next_attempt_at > clock()
    [logged] = attempts(rt)
    assert logged.status_code is None and logged.error == row.last_error


def test_retries_end_after_a_day_as_failed(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    rt = build(engine, tmp_path, clock, endpoint(refused_url()))
    emit_one(rt)
    emitted = clock()
    rng = random.Random(7)

    for _ in range(200):
        [row] = rows(rt)
        if row.next_attempt_at is None:
            break
        clock.set(row.next_attempt_at)
        deliver_due(rt, rng=rng)

    [row] = rows(rt)
    logged = attempts(rt)
    assert row.status == "failed" and row.next_attempt_at is None
    assert 20 <= row.attempts == len(logged) <= 30
    assert logged[-1].at <= emitted + RETRY_WINDOW
    assert logged[-1].at > emitted + RETRY_WINDOW - timedelta(seconds=MAX_RETRY_SECONDS)
    waits = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(logged)]
    assert waits[:3] == sorted(waits[:3])  # growing
    assert max(waits) <= MAX_RETRY_SECONDS


def test_the_retry_delay_doubles_with_jitter_up_to_two_hours() -> None:
    rng = random.Random(1)
    for attempt in range(1, 30):
        ceiling = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (attempt - 1))
        delays = {retry_delay(attempt, rng) for _ in range(20)}
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(delays) == 20  # jittered: no two the same


def test_rows_waiting_are_signed_with_the_secret_configured_now(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    rotated = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
    with Receiver([200]) as receiver:
        before = build(engine, tmp_path, clock, endpoint(receiver.url))
        emit_one(before)
        after = build(engine, tmp_path, clock, Endpoint(receiver.url, ALL, rotated))

        deliver_due(after)

    [request] = receiver.received
    assert Webhook(rotated).verify(request.body, request.headers)["type"] == "subscriber.confirmed"


def test_a_row_whose_endpoint_was_removed_fails_without_a_request(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    with Receiver([200]) as receiver:
        before = build(engine, tmp_path, clock, endpoint(receiver.url))
        emit_one(before)
        after = build(engine, tmp_path, clock)  # restarted without the endpoint

        report = deliver_due(after)

    assert report.failed == 1 and receiver.received == []
    [row] = rows(after)
    assert row.status == "failed" and row.last_error == "the endpoint is no longer configured"


def test_a_run_attempts_at_most_a_batch(engine: Engine, tmp_path: Path, clock: FrozenClock) -> None:
    with Receiver([200]) as receiver:
        settings = make_settings(
            tmp_path, outgoing_webhooks=(endpoint(receiver.url),), outgoing_webhook_batch=2
        )
        rt = Runtime.build(settings, engine=engine, backend=MemoryBackend(clock=clock), clock=clock)
        for _ in range(3):
            emit_one(rt)

        runs = [deliver_due(rt).delivered for _ in range(3)]

    assert runs == [2, 1, 0]
    assert len(receiver.received) == 3


def test_a_claim_takes_a_row_once(engine: Engine, tmp_path: Path, clock: FrozenClock) -> None:
    rt = build(engine, tmp_path, clock, endpoint("https://hooks.example.com/a"))
    emit_one(rt)
    emit_one(rt)
    lease = timedelta(seconds=65)

    with rt.transaction() as session:
        first = claim_due(session, clock(), 1, lease)
    with rt.transaction() as session:
        second = claim_due(session, clock(), 10, lease)
    with rt.transaction() as session:
        third = claim_due(session, clock(), 10, lease)
    with rt.transaction() as session:
        after_lease = claim_due(session, clock() + lease, 10, lease)

    assert len(first) == 1 and len(second) == 1 and third == []
    assert first[0].id != second[0].id
    assert sorted(d.id for d in after_lease) == sorted([first[0].id, second[0].id])


# --------------------------------------------------------------------------- emission


def test_rows_are_written_only_for_the_endpoints_that_want_the_event(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    confirmed = endpoint("https://a.example.com/hook", outgoing.SUBSCRIBER_CONFIRMED)
    both = endpoint(
        "https://b.example.com/hook", outgoing.SUBSCRIBER_CONFIRMED, outgoing.EMAIL_BOUNCED
    )
    rt = build(engine, tmp_path, clock, confirmed, both)

    emit_one(rt, outgoing.SUBSCRIBER_CONFIRMED)
    emit_one(rt, outgoing.EMAIL_BOUNCED)
    with rt.transaction() as session:
        nobody = outgoing.emit(session, None, outgoing.TAG_ADDED, {"tag": "x"}, clock())

    written = [(row.event_type, row.endpoint_url) for row in rows(rt)]
    assert written == [
        ("subscriber.confirmed", "https://a.example.com/hook"),
        ("subscriber.confirmed", "https://b.example.com/hook"),
        ("email.bounced", "https://b.example.com/hook"),
    ]
    assert nobody == 0
    first, second, _ = rows(rt)
    assert first.message_id == second.message_id  # one event, two endpoints
    assert first.body == second.body


def test_nothing_is_built_when_no_endpoint_wants_the_event(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    rt = build(engine, tmp_path, clock, endpoint("https://a.example.com/h", outgoing.TAG_ADDED))

    def never() -> Any:
        raise AssertionError("iterated")
        yield {}

    with rt.transaction() as session:
        wrote = outgoing.emit_many(session, None, outgoing.EMAIL_BOUNCED, never(), clock())
        by_id = outgoing.emit_for_subscribers(
            session, None, outgoing.SUBSCRIBER_UNSUBSCRIBED, [1, 2], clock()
        )

    assert (wrote, by_id, rows(rt)) == (0, 0, [])
    with rt.transaction() as session, pytest.raises(ValueError, match="unknown outgoing event"):
        outgoing.emit(session, None, "subscriber.signedup", {}, clock())


def test_an_event_exists_only_if_its_transaction_commits(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    rt = build(engine, tmp_path, clock, endpoint("https://a.example.com/h"))

    with pytest.raises(RuntimeError), rt.transaction() as session:
        outgoing.emit(session, None, outgoing.TAG_ADDED, {"tag": "x"}, clock())
        raise RuntimeError("what the event reports failed")

    assert rows(rt) == []


def _events(rt: Runtime) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for row in rows(rt):
        body = json.loads(row.body)
        assert body["type"] == row.event_type
        out.append((row.event_type, body["data"]))
    return out


def test_an_unsubscribe_by_link_emits_once(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    rt = build(engine, tmp_path, clock, endpoint("https://a.example.com/h"), **PURCHASES)
    ana = add_subscriber(rt, "ana@example.com")
    link = urlsplit(rt.unsubscribe_url(ana)).path
    web = client_for(rt)

    answers = [web.post(link).status_code for _ in range(2)]  # the second changes nothing

    assert answers == [200, 200]
    assert _events(rt) == [
        (
            "subscriber.unsubscribed",
            {"subscriber_id": ana, "email": "ana@example.com", "source": "unsubscribe-link"},
        )
    ]


def _bounce(event_id: str, email: str, suppress: str, at: datetime) -> Event:
    kind = EventType.BOUNCED if suppress == "bounce" else EventType.COMPLAINED
    return Event(
        kind, at, "sendgrid", event_id, email=email, reason="550 no such user", suppress=suppress
    )


def test_bounces_and_complaints_emit_once_per_provider_event(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    rt = build(engine, tmp_path, clock, endpoint("https://a.example.com/h"))
    ana = add_subscriber(rt, "ana@example.com")
    batch = [
        _bounce("sg-1", "Ana@Example.com", "bounce", clock()),
        _bounce("sg-2", "ben@example.com", "complaint", clock()),
    ]

    for _ in range(2):  # the provider's retry of the same batch is stored once
        with rt.transaction() as session:
            ingest(session, list(batch), now=clock(), scanner_click_seconds=10)

    common = {"reason": "550 no such user", "provider": "sendgrid", "message_key": None}
    common["occurred_at"] = iso(clock())
    assert _events(rt) == [
        ("email.bounced", {"subscriber_id": ana, "email": "ana@example.com", **common}),
        ("email.complained", {"subscriber_id": None, "email": "ben@example.com", **common}),
    ]


def test_a_purchase_emits_once(engine: Engine, tmp_path: Path, clock: FrozenClock) -> None:
    rt = build(engine, tmp_path, clock, endpoint("https://a.example.com/h"), **PURCHASES)
    ana = add_subscriber(rt, "ana@example.com")
    order = {
        "email": "ana@example.com",
        "product": "runners-lab",
        "order_id": "order-1",
        "amount": "197.00",
        "currency": "usd",
    }
    web = client_for(rt)

    answers = [post_purchase(web, order).status_code for _ in range(2)]  # then a replay

    assert answers == [200, 200]
    assert _events(rt) == [
        (
            "purchase.completed",
            {
                "subscriber_id": ana,
                "email": "ana@example.com",
                "order_id": "order-1",
                "product": "runners-lab",
                "amount_cents": 19700,
                "currency": "USD",
                "purchased_at": iso(clock()),
                "attributed_message_key": None,
            },
        )
    ]


def test_a_signup_and_its_confirmation_emit_and_post_nothing_themselves(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> None:
    data = SignupData(
        "ana@example.com", first_name="Ana", tags=("runner", "glute"), source="homepage-footer"
    )
    with Receiver(hang=True) as receiver:
        rt = build(engine, tmp_path, clock, endpoint(receiver.url))
        for _ in range(2):  # signing up again while pending is no new event
            with rt.transaction() as session:
                outcome = signup(
                    session, data, now=clock(), channel="form", resend_every=timedelta(0)
                )
        assert outcome.subscriber_id is not None
        token = expiring_token(rt.secret, CONFIRM_PURPOSE, str(outcome.subscriber_id), now=clock())
        assert confirm(rt, token).state == ConfirmState.CONFIRMED
        assert confirm(rt, token).state == ConfirmState.ALREADY  # no second event
        posted = list(receiver.received)

    assert posted == []  # only outbox rows: the hanging receiver was never called

    who = {"subscriber_id": outcome.subscriber_id, "email": "ana@example.com", "first_name": "Ana"}
    assert _events(rt) == [
        (
            "subscriber.subscribed",
            {**who, "source": "form:homepage-footer", "tags": ["glute", "runner"]},
        ),
        ("subscriber.confirmed", who),
    ]
