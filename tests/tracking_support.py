"""Helpers shared by the tracking, webhook and stats tests (plain functions, not fixtures)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from drip.ingest.events import Event, IngestReport, ingest
from drip.ingest.stream import DrainReport, drain
from drip.models import Delivery
from drip.runtime import Runtime
from drip.settings import Settings
from drip.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from drip.web.app import create_app
from tests.conftest import make_settings
from tests.helpers import add_subscriber, run_tick
from tests.web_support import worker_inline

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sendgrid_events"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
PURCHASE_SECRET = "purchase-secret-0123456789abcdef"
REDIS_URL = "redis://127.0.0.1:6379/15"
HUMAN_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Version/17.4 Safari/605.1.15"
)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def tracking_settings(tmp_path: Path, key: ec.EllipticCurvePrivateKey, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "admin_tokens": ADMIN_TOKEN,
        "signup_rate_limit": 0,
        "api_rate_limit": 0,
        "redis_url": REDIS_URL,
        "sendgrid_webhook_public_key": public_b64(key),
        "purchase_webhook_secret": PURCHASE_SECRET,
        "tracking_stream": f"drip:test:{uuid.uuid4().hex}",  # one stream per test
    }
    values.update(extra)
    return make_settings(tmp_path, **values)


def client_for(rt: Runtime) -> TestClient:
    return TestClient(
        create_app(rt, enqueue=worker_inline(rt)),
        follow_redirects=False,
        headers={"User-Agent": HUMAN_UA},
    )


def sent_delivery(rt: Runtime, email: str, *, message_id: str | None = None) -> tuple[int, int]:
    """A subscriber who was just sent lesson 1: (subscriber id, delivery id)."""
    subscriber_id = add_subscriber(rt, email)
    run_tick(rt)
    with rt.transaction() as session:
        delivery_id = session.scalar(
            select(Delivery.id).where(
                Delivery.subscriber_id == subscriber_id,
                Delivery.message_key == "glute-accelerator/1",
            )
        )
        assert delivery_id is not None
        if message_id is not None:
            session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id)
                .values(provider_message_id=message_id)
            )
    return subscriber_id, delivery_id


def sample(name: str, *, email: str, at: datetime, message_id: str, delivery_id: int) -> bytes:
    """A fixture POST body with the placeholders filled in (the exact bytes that get signed)."""
    text = (FIXTURES / f"{name}.json").read_text()
    text = text.replace("__EMAIL__", email).replace("__TIMESTAMP__", str(int(at.timestamp())))
    text = text.replace("__MESSAGE_ID__", message_id)
    return text.replace("__DELIVERY_ID__", str(delivery_id)).encode()


def sendgrid_headers(key: ec.EllipticCurvePrivateKey, body: bytes, at: datetime) -> dict[str, str]:
    timestamp = str(int(at.timestamp()))
    return {
        SIGNATURE_HEADER: sign(key, timestamp, body),
        TIMESTAMP_HEADER: timestamp,
        "Content-Type": "application/json",
    }


def post_events(
    client: TestClient, key: ec.EllipticCurvePrivateKey, events: Any, at: datetime
) -> Any:
    body = events if isinstance(events, bytes) else json.dumps(events).encode()
    return client.post("/webhooks/sendgrid", content=body, headers=sendgrid_headers(key, body, at))


def purchase_signature(body: bytes, secret: str = PURCHASE_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post_purchase(
    client: TestClient, payload: dict[str, Any], secret: str = PURCHASE_SECRET
) -> Any:
    body = json.dumps(payload).encode()
    headers = {"X-Drip-Signature": purchase_signature(body, secret)}
    return client.post("/webhooks/purchase", content=body, headers=headers)


def drain_all(rt: Runtime) -> DrainReport:
    client = redis.Redis.from_url(rt.settings.redis_url)
    try:
        return drain(rt, client)
    finally:
        client.close()


def drop_stream(rt: Runtime) -> None:
    client = redis.Redis.from_url(rt.settings.redis_url)
    try:
        client.delete(rt.settings.tracking_stream)
    finally:
        client.close()


def store(rt: Runtime, events: list[Event]) -> IngestReport:
    with rt.transaction() as session:
        return ingest(session, events, now=rt.clock(), scanner_click_seconds=10)


def upsell_delivery(rt: Runtime, email: str, clock: Any) -> tuple[int, int]:
    """A subscriber enrolled straight into the upsell, sent its first email (it has a link).

    Moves ``clock`` to the send time. Returns (subscriber id, delivery id).
    """
    from drip.engine.enrollments import enroll
    from drip.models import Enrollment, Subscriber

    subscriber_id = add_subscriber(rt, email, enroll_now=False)
    with rt.transaction() as session:
        sub = session.get(Subscriber, subscriber_id)
        assert sub is not None
        enroll(session, sub, rt.library["runners-lab-upsell"], rt.clock(), "America/New_York")
        due = session.scalar(
            select(Enrollment.next_send_at).where(Enrollment.subscriber_id == subscriber_id)
        )
    assert due is not None
    if due > clock.now:
        clock.set(due)
    run_tick(rt)
    with rt.sessions() as session:
        delivery_id = session.scalar(
            select(Delivery.id).where(
                Delivery.subscriber_id == subscriber_id,
                Delivery.message_key == "runners-lab-upsell/1",
            )
        )
    assert delivery_id is not None
    return subscriber_id, delivery_id
