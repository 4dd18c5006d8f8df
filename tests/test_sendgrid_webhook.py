"""POST /webhooks/sendgrid: signed batches, every event type, dedupe, order, suppression.

Bodies are the recorded-style samples of tests/fixtures/sendgrid_events, signed exactly as
SendGrid signs (ECDSA P-256 over timestamp + raw body) with a key pair made per test.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.models import (
    Enrollment,
    MessageStats,
    Subscriber,
    Suppression,
    TrackingEvent,
)
from drip.runtime import Runtime
from drip.settings import Settings
from drip.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from drip.suppress import is_suppressed
from tests.helpers import run_tick
from tests.tracking_support import (
    client_for,
    new_key,
    post_events,
    sample,
    sendgrid_headers,
    sent_delivery,
    tracking_settings,
)

EMAIL = "ana@example.com"
MESSAGE_ID = "8bx6JkAXTQ2BaPUYuyNyLg"  # an X-Message-Id
KEY = new_key()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tracking_settings(tmp_path, KEY)


@pytest.fixture
def client(rt: Runtime) -> TestClient:
    return client_for(rt)


@pytest.fixture
def delivery(rt: Runtime) -> tuple[int, int]:
    return sent_delivery(rt, EMAIL, message_id=MESSAGE_ID)


def _post_sample(
    client: TestClient, rt: Runtime, name: str, delivery_id: int, *, later: int = 60
) -> Any:
    at = rt.clock() + timedelta(seconds=later)
    body = sample(name, email=EMAIL, at=at, message_id=MESSAGE_ID, delivery_id=delivery_id)
    return client.post(
        "/webhooks/sendgrid", content=body, headers=sendgrid_headers(KEY, body, rt.clock())
    )


def _events(rt: Runtime) -> list[TrackingEvent]:
    """What SendGrid posted (an unsubscribe also stores our own "unsubscribed" credit event)."""
    with rt.sessions() as session:
        return list(
            session.scalars(
                select(TrackingEvent)
                .where(TrackingEvent.provider == "sendgrid")
                .order_by(TrackingEvent.id)
            )
        )


def _counters(rt: Runtime, key: str = "glute-accelerator/1") -> dict[str, int]:
    with rt.sessions() as session:
        row = session.get(MessageStats, key)
        assert row is not None
        names = ("sent", "delivered", "bounced", "opened", "clicked", "complained")
        return {n: getattr(row, n) for n in names}


def _status(rt: Runtime, subscriber_id: int) -> str:
    with rt.sessions() as session:
        sub = session.get(Subscriber, subscriber_id)
        assert sub is not None
        return sub.status


# --------------------------------------------------------------------------- every event type

SAMPLES = [
    ("processed", "queued", False),
    ("dropped", "rejected", False),
    ("delivered", "delivered", False),
    ("deferred", "deferred", False),
    ("bounce", "bounced", False),
    ("blocked", "bounced", False),
    ("open", "opened", False),
    ("open_machine", "opened", True),
    ("click", "clicked", False),
    ("spamreport", "complained", False),
    ("unsubscribe", "unsubscribed", False),
    ("group_unsubscribe", "unsubscribed", False),
    ("group_resubscribe", "subscribed", False),
    ("unknown", "unknown", False),
]


@pytest.mark.parametrize(("name", "kind", "machine"), SAMPLES)
def test_every_sample_event_is_stored_normalized_with_its_raw_payload(
    client: TestClient,
    rt: Runtime,
    delivery: tuple[int, int],
    name: str,
    kind: str,
    machine: bool,
) -> None:
    subscriber_id, delivery_id = delivery

    answer = _post_sample(client, rt, name, delivery_id)

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": 1, "stored": 1, "duplicates": 0}
    [event] = _events(rt)
    body = sample(
        name,
        email=EMAIL,
        at=rt.clock() + timedelta(seconds=60),
        message_id=MESSAGE_ID,
        delivery_id=delivery_id,
    )
    assert event.type == kind
    assert event.provider == "sendgrid"
    assert event.raw == json.loads(body)[0]
    assert event.provider_event_id == event.raw["sg_event_id"]
    assert event.machine is machine
    assert event.occurred_at == rt.clock() + timedelta(seconds=60)
    # Matched to the delivery: by custom args, or (spam report, unknown) by the address.
    assert event.subscriber_id == subscriber_id
    assert event.delivery_id == delivery_id


def test_a_click_keeps_its_url_and_counts_as_a_unique_human_click_and_open(
    client: TestClient, rt: Runtime, delivery: tuple[int, int]
) -> None:
    _post_sample(client, rt, "click", delivery[1])

    [event] = _events(rt)
    assert event.url == "https://lab.test/join"
    assert _counters(rt) == {
        "sent": 1,
        "delivered": 0,
        "bounced": 0,
        "opened": 1,
        "clicked": 1,
        "complained": 0,
    }


def test_a_machine_open_is_stored_but_not_counted(
    client: TestClient, rt: Runtime, delivery: tuple[int, int]
) -> None:
    _post_sample(client, rt, "open_machine", delivery[1])

    assert _counters(rt)["opened"] == 0


def test_an_element_that_is_not_an_object_is_kept_as_unknown(
    client: TestClient, rt: Runtime, delivery: tuple[int, int]
) -> None:
    answer = post_events(client, KEY, [42, {"event": "brand_new", "sg_event_id": "x1"}], rt.clock())

    assert answer.status_code == 200
    assert [(e.type, e.raw) for e in _events(rt)] == [
        ("unknown", {"value": 42}),
        ("unknown", {"event": "brand_new", "sg_event_id": "x1"}),
    ]


# --------------------------------------------------------------------------- effects


def test_a_hard_bounce_suppresses_the_address_and_the_next_lesson_is_not_sent(
    client: TestClient,
    rt: Runtime,
    clock: FrozenClock,
    memory_backend: MemoryBackend,
    delivery: tuple[int, int],
) -> None:
    subscriber_id, delivery_id = delivery

    _post_sample(client, rt, "bounce", delivery_id)
    clock.advance(timedelta(days=2))
    run_tick(rt)

    with rt.sessions() as session:
        assert is_suppressed(session, EMAIL)
        reason = session.scalar(select(Suppression.reason))
        enrollment = session.scalar(
            select(Enrollment).where(Enrollment.subscriber_id == subscriber_id)
        )
    assert reason == "bounce"
    assert enrollment is not None and enrollment.status == "stopped"
    assert [s.message.message_key for s in memory_backend.sent_to(EMAIL)] == ["glute-accelerator/1"]
    assert _counters(rt)["bounced"] == 1


def test_a_blocked_bounce_is_counted_but_does_not_suppress(
    client: TestClient,
    rt: Runtime,
    clock: FrozenClock,
    memory_backend: MemoryBackend,
    delivery: tuple[int, int],
) -> None:
    _post_sample(client, rt, "blocked", delivery[1])
    clock.advance(timedelta(days=1, hours=12))
    run_tick(rt)

    with rt.sessions() as session:
        assert not is_suppressed(session, EMAIL)
    assert len(memory_backend.sent_to(EMAIL)) == 2
    assert _counters(rt)["bounced"] == 1


def test_dropped_for_a_bounced_address_suppresses(
    client: TestClient, rt: Runtime, delivery: tuple[int, int]
) -> None:
    _post_sample(client, rt, "dropped", delivery[1])

    with rt.sessions() as session:
        assert is_suppressed(session, EMAIL)


def test_a_spam_report_without_custom_args_is_matched_by_address_and_suppresses(
    client: TestClient,
    rt: Runtime,
    clock: FrozenClock,
    memory_backend: MemoryBackend,
    delivery: tuple[int, int],
) -> None:
    _post_sample(client, rt, "spamreport", delivery[1], later=3600)
    clock.advance(timedelta(days=2))
    run_tick(rt)

    with rt.sessions() as session:
        assert session.scalar(select(Suppression.reason)) == "complaint"
    assert len(memory_backend.sent_to(EMAIL)) == 1
    assert _counters(rt)["complained"] == 1


@pytest.mark.parametrize("name", ["unsubscribe", "group_unsubscribe"])
def test_unsubscribe_events_unsubscribe_the_subscriber(
    client: TestClient,
    rt: Runtime,
    clock: FrozenClock,
    memory_backend: MemoryBackend,
    delivery: tuple[int, int],
    name: str,
) -> None:
    _post_sample(client, rt, name, delivery[1])
    clock.advance(timedelta(days=2))
    run_tick(rt)

    assert _status(rt, delivery[0]) == "unsubscribed"
    assert len(memory_backend.sent_to(EMAIL)) == 1
    assert _unsubscribed(rt) == 1  # credited to the last email they got


def _unsubscribed(rt: Runtime, key: str = "glute-accelerator/1") -> int:
    with rt.sessions() as session:
        row = session.get(MessageStats, key)
        return row.unsubscribed if row is not None else 0


# --------------------------------------------------------------------------- duplicates, order


def test_a_batch_posted_twice_is_stored_once(
    client: TestClient, rt: Runtime, delivery: tuple[int, int]
) -> None:
    first = _post_sample(client, rt, "open", delivery[1])
    second = _post_sample(client, rt, "open", delivery[1])

    assert first.json() == {"received": 1, "stored": 1, "duplicates": 0}
    assert second.status_code == 200
    assert second.json() == {"received": 1, "stored": 0, "duplicates": 1}
    assert len(_events(rt)) == 1
    assert _counters(rt)["opened"] == 1


def test_duplicates_inside_one_batch_are_stored_once(
    client: TestClient, rt: Runtime, delivery: tuple[int, int]
) -> None:
    event = {
        "event": "delivered",
        "email": EMAIL,
        "sg_event_id": "dup-1",
        "timestamp": 1,
        "delivery_id": str(delivery[1]),
    }

    answer = post_events(client, KEY, [event, event], rt.clock())

    assert answer.json() == {"received": 2, "stored": 1, "duplicates": 1}
    assert _counters(rt)["delivered"] == 1


def test_two_opens_of_one_email_count_once(
    client: TestClient, rt: Runtime, delivery: tuple[int, int]
) -> None:
    events = [
        {
            "event": "open",
            "email": EMAIL,
            "sg_event_id": f"o{i}",
            "timestamp": 1_772_500_000 + i,
            "useragent": "Mozilla/5.0 (Windows NT 10.0) Chrome/124.0 Safari/537.36",
            "delivery_id": str(delivery[1]),
        }
        for i in range(3)
    ]

    post_events(client, KEY, events[:2], rt.clock())
    post_events(client, KEY, events[2:], rt.clock())

    assert len(_events(rt)) == 3
    assert _counters(rt)["opened"] == 1


def test_events_out_of_order_give_the_same_figures(
    client: TestClient, rt: Runtime, delivery: tuple[int, int]
) -> None:
    _post_sample(client, rt, "open", delivery[1], later=120)  # opened before "delivered" came
    _post_sample(client, rt, "click", delivery[1], later=180)
    _post_sample(client, rt, "delivered", delivery[1], later=60)
    _post_sample(client, rt, "bounce", delivery[1], later=30)  # a bounce after the click

    assert _counters(rt) == {
        "sent": 1,
        "delivered": 1,
        "bounced": 1,
        "opened": 1,
        "clicked": 1,
        "complained": 0,
    }
    with rt.sessions() as session:
        assert is_suppressed(session, EMAIL)


# --------------------------------------------------------------------------- matching


def test_events_without_custom_args_match_by_message_id_and_address(
    client: TestClient, rt: Runtime
) -> None:
    # One API request (one X-Message-Id) carried both recipients.
    _, ana_delivery = sent_delivery(rt, "ana@example.com", message_id=MESSAGE_ID)
    _, ben_delivery = sent_delivery(rt, "ben@example.com", message_id=MESSAGE_ID)
    events = [
        {
            "event": "delivered",
            "email": email,
            "sg_event_id": f"d-{email}",
            "timestamp": 1,
            "sg_message_id": f"{MESSAGE_ID}.filterdrecv-5cd5c9b9-dd8hl-1-5F3D5E3A-3.0",
        }
        for email in ("Ben@Example.com", "ana@example.com")
    ]

    post_events(client, KEY, events, rt.clock())

    by_id = {e.provider_event_id: e.delivery_id for e in _events(rt)}
    assert by_id == {"d-Ben@Example.com": ben_delivery, "d-ana@example.com": ana_delivery}


def test_an_event_for_an_address_we_never_mailed_is_stored_unmatched(
    client: TestClient, rt: Runtime
) -> None:
    event = {
        "event": "bounce",
        "type": "bounce",
        "email": "stranger@example.com",
        "sg_event_id": "s1",
        "timestamp": 1,
        "status": "5.1.1",
    }

    answer = post_events(client, KEY, [event], rt.clock())

    assert answer.status_code == 200
    [stored] = _events(rt)
    assert (stored.delivery_id, stored.subscriber_id) == (None, None)
    with rt.sessions() as session:
        assert is_suppressed(session, "stranger@example.com")  # never mail it either


# --------------------------------------------------------------------------- signatures


def _signed(rt: Runtime, delivery_id: int) -> tuple[bytes, dict[str, str]]:
    body = sample(
        "delivered", email=EMAIL, at=rt.clock(), message_id=MESSAGE_ID, delivery_id=delivery_id
    )
    return body, sendgrid_headers(KEY, body, rt.clock())


def _refused(rt: Runtime, answer: Any, status: int) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["message"]
    assert _events(rt) == []


def test_a_signature_by_another_key_is_403(
    client: TestClient, rt: Runtime, delivery: tuple[int, int]
) -> None:
    body, _ = _signed(rt, delivery[1])
    headers = sendgrid_headers(ec.generate_private_key(ec.SECP256R1()), body, rt.clock())

    _refused(rt, client.post("/webhooks/sendgrid", content=body, headers=headers), 403)


def test_a_changed_body_is_403(client: TestClient, rt: Runtime, delivery: tuple[int, int]) -> None:
    body, headers = _signed(rt, delivery[1])
    tampered = body.replace(b'"delivered"', b'"spamreport"')

    _refused(rt, client.post("/webhooks/sendgrid", content=tampered, headers=headers), 403)


def test_reserialized_json_is_403(
    client: TestClient, rt: Runtime, delivery: tuple[int, int]
) -> None:
    body, headers = _signed(rt, delivery[1])
    same_data = json.dumps(json.loads(body)).encode()  # same events, other bytes

    _refused(rt, client.post("/webhooks/sendgrid", content=same_data, headers=headers), 403)


def test_a_changed_timestamp_is_403(
    client: TestClient, rt: Runtime, delivery: tuple[int, int]
) -> None:
    body, headers = _signed(rt, delivery[1])
    headers[TIMESTAMP_HEADER] = str(int(headers[TIMESTAMP_HEADER]) + 1)

    _refused(rt, client.post("/webhooks/sendgrid", content=body, headers=headers), 403)


def test_a_timestamp_older_than_the_max_age_is_403(
    client: TestClient, rt: Runtime, clock: FrozenClock, delivery: tuple[int, int]
) -> None:
    body, headers = _signed(rt, delivery[1])  # signed now, genuinely
    clock.advance(timedelta(seconds=601))  # DRIP_SENDGRID_WEBHOOK_MAX_AGE is 600

    _refused(rt, client.post("/webhooks/sendgrid", content=body, headers=headers), 403)


def test_max_age_zero_switches_the_timestamp_check_off(
    tmp_path: Path, engine: Any, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    rt = Runtime.build(
        tracking_settings(tmp_path, KEY, sendgrid_webhook_max_age=0),
        engine=engine,
        backend=memory_backend,
        clock=clock,
    )
    _, delivery_id = sent_delivery(rt, EMAIL)
    body, headers = _signed(rt, delivery_id)
    clock.advance(timedelta(days=3))

    answer = client_for(rt).post("/webhooks/sendgrid", content=body, headers=headers)

    assert answer.status_code == 200


@pytest.mark.parametrize("missing", [SIGNATURE_HEADER, TIMESTAMP_HEADER])
def test_a_missing_header_is_400(
    client: TestClient, rt: Runtime, delivery: tuple[int, int], missing: str
) -> None:
    body, headers = _signed(rt, delivery[1])
    del headers[missing]

    _refused(rt, client.post("/webhooks/sendgrid", content=body, headers=headers), 400)


def test_a_signature_that_is_not_base64_is_400(
    client: TestClient, rt: Runtime, delivery: tuple[int, int]
) -> None:
    body, headers = _signed(rt, delivery[1])
    headers[SIGNATURE_HEADER] = "not*base64!"

    _refused(rt, client.post("/webhooks/sendgrid", content=body, headers=headers), 400)


def test_a_timestamp_that_is_not_a_number_is_400(
    client: TestClient, rt: Runtime, delivery: tuple[int, int]
) -> None:
    body, headers = _signed(rt, delivery[1])
    headers[TIMESTAMP_HEADER] = "yesterday"

    _refused(rt, client.post("/webhooks/sendgrid", content=body, headers=headers), 400)


@pytest.mark.parametrize("body", [b"not json", b'{"event": "open"}', b"\xff\xfe"])
def test_a_signed_body_that_is_not_an_array_of_events_is_400(
    client: TestClient, rt: Runtime, body: bytes
) -> None:
    headers = sendgrid_headers(KEY, body, rt.clock())

    _refused(rt, client.post("/webhooks/sendgrid", content=body, headers=headers), 400)


def test_without_a_configured_key_nothing_is_accepted(
    tmp_path: Path, engine: Any, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    rt = Runtime.build(
        tracking_settings(tmp_path, KEY, sendgrid_webhook_public_key=None),
        engine=engine,
        backend=memory_backend,
        clock=clock,
    )
    body = b"[]"
    headers = {SIGNATURE_HEADER: sign(KEY, "1", body), TIMESTAMP_HEADER: "1"}

    answer = client_for(rt).post("/webhooks/sendgrid", content=body, headers=headers)

    assert answer.status_code == 503


def test_a_storage_failure_answers_5xx_so_sendgrid_retries(
    client: TestClient, rt: Runtime, delivery: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database went away")

    monkeypatch.setattr("drip.web.webhooks.store", broken)

    answer = _post_sample(client, rt, "delivered", delivery[1])

    assert answer.status_code == 503
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(TrackingEvent)) == 0


def _der_b64(public_key: Any) -> str:
    import base64

    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: "not base64!!", "not base64"),
        (lambda: "QUJD", "not a public key"),
        (
            lambda: _der_b64(ec.generate_private_key(ec.SECP384R1()).public_key()),
            "not an ECDSA P-256 public key",
        ),
    ],
)
def test_a_bad_public_key_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, make: Any, reason: str
) -> None:
    from drip.errors import SettingsError
    from drip.settings import load_settings

    monkeypatch.setenv("DRIP_SENDGRID_WEBHOOK_PUBLIC_KEY", make())

    with pytest.raises(SettingsError, match=f"DRIP_SENDGRID_WEBHOOK_PUBLIC_KEY: .*{reason}"):
        load_settings()


def test_the_key_is_accepted_as_pem_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from drip.settings import load_settings
    from tests.tracking_support import public_b64

    pem = f"-----BEGIN PUBLIC KEY-----\n{public_b64(KEY)}\n-----END PUBLIC KEY-----\n"
    monkeypatch.setenv("DRIP_SENDGRID_WEBHOOK_PUBLIC_KEY", pem)

    assert load_settings().sendgrid_webhook_public_key is not None
