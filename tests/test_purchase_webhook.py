"""POST /webhooks/purchase: signature, validation, idempotency, conversion and attribution."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import select

from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.ingest.events import Event, EventType
from drip.models import Conversion, Delivery, Enrollment, Subscriber
from drip.runtime import Runtime
from drip.settings import Settings
from drip.suppress import email_hash
from tests.helpers import run_tick
from tests.tracking_support import (
    HUMAN_UA,
    PURCHASE_SECRET,
    client_for,
    post_purchase,
    purchase_signature,
    sent_delivery,
    store,
    tracking_settings,
    upsell_delivery,
)

KEY = ec.generate_private_key(ec.SECP256R1())
EMAIL = "ana@example.com"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tracking_settings(tmp_path, KEY)


@pytest.fixture
def client(rt: Runtime) -> TestClient:
    return client_for(rt)


def _order(rt: Runtime, **changes: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "email": EMAIL,
        "product": "runners-lab",
        "order_id": "ord_1001",
        "amount": "197.00",
        "currency": "usd",
        "time": rt.clock().isoformat(),
    }
    order.update(changes)
    return {k: v for k, v in order.items() if v is not None}


def _click(rt: Runtime, delivery_id: int, at: datetime, *, machine_ua: bool = False) -> None:
    ua = "Mozilla/5.0 (compatible; Mimecast URL Protect)" if machine_ua else HUMAN_UA
    store(
        rt,
        [
            Event(
                type=EventType.CLICKED,
                occurred_at=at,
                provider="drip",
                provider_event_id=f"test:{delivery_id}:{at.isoformat()}:{machine_ua}",
                delivery_id=delivery_id,
                url="https://lab.test/join",
                user_agent=ua,
            )
        ],
    )


def _conversions(rt: Runtime) -> list[Conversion]:
    with rt.sessions() as session:
        return list(session.scalars(select(Conversion).order_by(Conversion.id)))


# --------------------------------------------------------------------------- happy path


def test_a_purchase_converts_the_subscriber_and_stops_the_upsell_before_its_next_send(
    client: TestClient, rt: Runtime, clock: FrozenClock, memory_backend: MemoryBackend
) -> None:
    subscriber_id, delivery_id = upsell_delivery(rt, EMAIL, clock)
    clock.advance(timedelta(hours=2))
    _click(rt, delivery_id, clock.now - timedelta(minutes=30))

    answer = post_purchase(client, _order(rt))
    clock.advance(timedelta(days=3))
    run_tick(rt)

    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "order_id": "ord_1001",
        "conversion_id": 1,
        "subscriber_id": subscriber_id,
        "attributed_delivery_id": delivery_id,
        "attributed_message_key": "runners-lab-upsell/1",
        "amount_cents": 19700,
        "currency": "USD",
    }
    assert "x-drip-replay" not in answer.headers
    with rt.sessions() as session:
        sub = session.get(Subscriber, subscriber_id)
        enrollment = session.scalar(
            select(Enrollment).where(Enrollment.subscriber_id == subscriber_id)
        )
    assert sub is not None and sub.converted_at == clock.now - timedelta(days=3)
    assert enrollment is not None
    assert (enrollment.status, enrollment.stop_reason) == ("stopped", "converted")
    sent = [s.message.message_key for s in memory_backend.sent_to(EMAIL)]
    upsell = [key for key in sent if key.startswith("runners-lab-upsell/")]
    assert upsell == ["runners-lab-upsell/1"]  # 2 and 3 never go out
    assert "runners-lab-welcome/1" in sent  # the purchase started the Lab's welcome
    [conversion] = _conversions(rt)
    assert conversion.product == "runners-lab"
    assert conversion.raw is not None and conversion.raw["amount"] == "197.00"  # as received


def test_a_replay_answers_the_same_result_and_records_nothing_new(
    client: TestClient, rt: Runtime, clock: FrozenClock
) -> None:
    upsell_delivery(rt, EMAIL, clock)
    first = post_purchase(client, _order(rt))
    clock.advance(timedelta(hours=1))

    again = post_purchase(client, _order(rt))
    changed = post_purchase(client, _order(rt, amount="1.00"))  # same order id, other body

    assert again.status_code == changed.status_code == 200
    assert again.json() == changed.json() == first.json()
    assert again.headers["x-drip-replay"] == "true"
    assert len(_conversions(rt)) == 1


def test_an_unknown_buyer_is_recorded_with_the_address_hash(
    client: TestClient, rt: Runtime
) -> None:
    answer = post_purchase(client, _order(rt, email=" Stranger@Example.com "))

    assert answer.status_code == 200
    assert answer.json()["subscriber_id"] is None
    assert answer.json()["attributed_delivery_id"] is None
    [conversion] = _conversions(rt)
    with rt.sessions() as session:
        assert conversion.email_hash == email_hash(session, "stranger@example.com")
    assert conversion.subscriber_id is None


@pytest.mark.parametrize(
    ("amount", "currency", "cents"),
    [(197, "USD", 19700), ("19.9", "EUR", 1990), (19700, "JPY", 19700), ("1.234", "KWD", 1234)],
)
def test_amounts_are_stored_exactly_in_minor_units(
    client: TestClient, rt: Runtime, amount: Any, currency: str, cents: int
) -> None:
    answer = post_purchase(client, _order(rt, amount=amount, currency=currency))

    assert answer.status_code == 200, answer.text
    assert (answer.json()["amount_cents"], answer.json()["currency"]) == (cents, currency)


def test_a_json_number_amount_is_not_rounded_through_a_float(
    client: TestClient, rt: Runtime
) -> None:
    body = json.dumps(_order(rt)).replace('"197.00"', "0.29").encode()
    headers = {"X-Drip-Signature": purchase_signature(body)}

    answer = client.post("/webhooks/purchase", content=body, headers=headers)

    assert answer.json()["amount_cents"] == 29


# --------------------------------------------------------------------------- attribution


def test_the_last_human_click_in_the_window_wins(
    client: TestClient, rt: Runtime, clock: FrozenClock
) -> None:
    _, lesson = sent_delivery(rt, EMAIL)
    clock.advance(timedelta(days=8))
    _, upsell = upsell_delivery(rt, "other@example.com", clock)  # not ours: ignored
    _click(rt, lesson, clock.now - timedelta(days=5))
    _click(rt, upsell, clock.now - timedelta(days=1))

    answer = post_purchase(client, _order(rt))

    assert answer.json()["attributed_delivery_id"] == lesson


def test_a_later_machine_click_is_ignored(
    client: TestClient, rt: Runtime, clock: FrozenClock
) -> None:
    subscriber_id, first = sent_delivery(rt, EMAIL)
    clock.advance(timedelta(days=2))
    run_tick(rt)
    with rt.sessions() as session:
        second = session.scalar(
            select(Delivery.id).where(
                Delivery.subscriber_id == subscriber_id,
                Delivery.message_key == "glute-accelerator/2",
            )
        )
    assert second is not None
    _click(rt, first, clock.now - timedelta(days=1))  # human
    _click(rt, second, clock.now - timedelta(minutes=5), machine_ua=True)  # a scanner, later

    answer = post_purchase(client, _order(rt))

    assert answer.json()["attributed_delivery_id"] == first


def test_a_click_outside_the_window_credits_no_email(
    client: TestClient, rt: Runtime, clock: FrozenClock
) -> None:
    _, delivery_id = sent_delivery(rt, EMAIL)
    _click(rt, delivery_id, clock.now + timedelta(hours=1))
    clock.advance(timedelta(days=31))

    answer = post_purchase(client, _order(rt))

    assert answer.status_code == 200
    assert answer.json()["attributed_delivery_id"] is None
    assert answer.json()["subscriber_id"] is not None


def test_a_click_after_the_purchase_time_is_not_credited(
    client: TestClient, rt: Runtime, clock: FrozenClock
) -> None:
    _, delivery_id = sent_delivery(rt, EMAIL)
    bought_at = clock.now + timedelta(hours=1)
    _click(rt, delivery_id, bought_at + timedelta(minutes=10))  # late webhook: the click came after
    clock.advance(timedelta(hours=2))

    answer = post_purchase(client, _order(rt, time=bought_at.isoformat()))

    assert answer.json()["attributed_delivery_id"] is None


# --------------------------------------------------------------------------- authentication


def test_a_missing_signature_is_401(client: TestClient, rt: Runtime) -> None:
    answer = client.post("/webhooks/purchase", content=json.dumps(_order(rt)).encode())

    assert answer.status_code == 401
    assert answer.json()["error"]["field"] == "signature"
    assert _conversions(rt) == []


@pytest.mark.parametrize(
    "header",
    [
        "sha256=" + "0" * 64,
        "deadbeef",
        purchase_signature(b"{}"),  # a genuine signature of another body
        purchase_signature(b"x", "another-secret-0123456789"),
    ],
)
def test_a_wrong_signature_is_403(client: TestClient, rt: Runtime, header: str) -> None:
    body = json.dumps(_order(rt)).encode()

    answer = client.post("/webhooks/purchase", content=body, headers={"X-Drip-Signature": header})

    assert answer.status_code == 403
    assert _conversions(rt) == []


def test_a_body_signed_with_another_secret_is_403(client: TestClient, rt: Runtime) -> None:
    answer = post_purchase(client, _order(rt), secret="another-secret-0123456789")

    assert answer.status_code == 403


def test_without_a_secret_the_webhook_is_off(
    tmp_path: Path, engine: Any, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    rt = Runtime.build(
        tracking_settings(tmp_path, KEY, purchase_webhook_secret=None),
        engine=engine,
        backend=memory_backend,
        clock=clock,
    )

    answer = post_purchase(client_for(rt), _order(rt), secret=PURCHASE_SECRET)

    assert answer.status_code == 503


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"email": None}, "email"),
        ({"email": "not-an-address"}, "email"),
        ({"product": ""}, "product"),
        ({"product": "The Runners Lab"}, "product"),  # a product id, as sequence.toml names it
        ({"order_id": None}, "order_id"),
        ({"order_id": "x" * 129}, "order_id"),
        ({"amount": None}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"amount": "-1"}, "amount"),
        ({"amount": "19.999"}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": "NaN"}, "amount"),
        ({"currency": "US"}, "currency"),
        ({"currency": "12$"}, "currency"),
        ({"time": "2026-03-02T10:00:00"}, "time"),  # no offset: ambiguous
        ({"time": "yesterday"}, "time"),
    ],
)
def test_an_invalid_field_is_a_422_naming_it(
    client: TestClient, rt: Runtime, changes: dict[str, Any], field: str
) -> None:
    answer = post_purchase(client, _order(rt, **changes))

    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field
    assert _conversions(rt) == []


@pytest.mark.parametrize("body", [b"[1, 2]", b"not json"])
def test_a_body_that_is_not_an_object_is_a_422(
    client: TestClient, rt: Runtime, body: bytes
) -> None:
    headers = {"X-Drip-Signature": purchase_signature(body)}

    answer = client.post("/webhooks/purchase", content=body, headers=headers)

    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "body"


def test_unix_seconds_are_accepted_as_the_time(client: TestClient, rt: Runtime) -> None:
    answer = post_purchase(client, _order(rt, time=int(rt.clock().timestamp()) - 60))

    assert answer.status_code == 200
    [conversion] = _conversions(rt)
    assert conversion.occurred_at == rt.clock() - timedelta(seconds=60)
