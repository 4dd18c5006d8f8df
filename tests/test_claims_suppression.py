"""Claims about the suppression list (docs/tracking.md, the Event Webhook table; decisions.md,
"Suppressions are salted hashes, with a per-installation salt").

- SendGrid ``dropped`` events suppress or unsubscribe by their reason: "Invalid" suppresses as a
  bounce, "Spam Reporting Address" as a complaint, "Unsubscribed Address" unsubscribes.
- Rotating ``DRIP_SECRET_KEY`` keeps bounced and erased addresses blocked: two runtimes that
  differ only in the key, on one database.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from drip import suppress
from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.models import Enrollment, Subscriber, SubscriberStatus, Suppression
from drip.runtime import Runtime
from drip.settings import Settings
from drip.subscribers.gdpr import erase_subscriber
from drip.webhooks.sendgrid import to_event
from tests.helpers import add_subscriber, run_tick
from tests.tracking_support import (
    client_for,
    new_key,
    post_events,
    sample,
    sent_delivery,
    store,
    tracking_settings,
)
from tests.web_support import client_for as web_client
from tests.web_support import form_signup

EMAIL = "ana@example.com"
MESSAGE_ID = "8bx6JkAXTQ2BaPUYuyNyLg"  # an X-Message-Id
KEY = new_key()
OLD_SECRET = "old-secret-key-0123456789abcdef"
NEW_SECRET = "new-secret-key-fedcba9876543210"


def _settings(tmp_path: Path, key: ec.EllipticCurvePrivateKey, **extra: Any) -> Settings:
    return tracking_settings(tmp_path, key, api_tokens="api-token-0123456789abcdef", **extra)


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return _settings(tmp_path, KEY, redis_url=redis_url, secret_key=OLD_SECRET)


def _suppression_reasons(rt: Runtime) -> list[str]:
    with rt.sessions() as session:
        return list(session.scalars(select(Suppression.reason)))


def _subscriber(rt: Runtime, subscriber_id: int) -> tuple[str, list[str]]:
    """The subscriber's status and the statuses of their enrollments."""
    with rt.sessions() as session:
        sub = session.get(Subscriber, subscriber_id)
        assert sub is not None
        enrollments = session.scalars(
            select(Enrollment.status).where(Enrollment.subscriber_id == subscriber_id)
        )
        return sub.status, list(enrollments)


# --------------------------------------------------------------------------- dropped events


@pytest.mark.parametrize(
    ("reason", "suppressed", "status"),
    [
        ("Invalid", ["bounce"], SubscriberStatus.ACTIVE),
        ("Spam Reporting Address", ["complaint"], SubscriberStatus.ACTIVE),
        ("Unsubscribed Address", [], SubscriberStatus.UNSUBSCRIBED),
    ],
)
def test_a_dropped_event_suppresses_or_unsubscribes_by_its_reason(
    rt: Runtime,
    clock: FrozenClock,
    memory_backend: MemoryBackend,
    reason: str,
    suppressed: list[str],
    status: str,
) -> None:
    subscriber_id, delivery_id = sent_delivery(rt, EMAIL, message_id=MESSAGE_ID)
    at = clock() + timedelta(seconds=30)
    [event] = json.loads(
        sample("dropped", email=EMAIL, at=at, message_id=MESSAGE_ID, delivery_id=delivery_id)
    )
    event["reason"] = reason

    answer = post_events(client_for(rt), KEY, [event], clock())
    clock.advance(timedelta(days=2))
    run_tick(rt)

    assert answer.status_code == 200
    assert _suppression_reasons(rt) == suppressed
    sub_status, enrollments = _subscriber(rt, subscriber_id)
    assert sub_status == status
    assert enrollments == ["stopped"]
    assert len(memory_backend.sent_to(EMAIL)) == 1  # lesson 1 only: no lesson after the drop


# --------------------------------------------------------------------------- a new secret key


def test_rotating_the_secret_key_keeps_bounced_and_erased_addresses_blocked(
    rt: Runtime, clock: FrozenClock, memory_backend: MemoryBackend, tmp_path: Path, redis_url: str
) -> None:
    bounced, erased = "bounced@example.com", "erased@example.com"
    form_signup(web_client(rt), email=bounced)  # its confirmation email bounces
    bounce = {"event": "bounce", "type": "bounce", "email": bounced, "sg_event_id": "b-1"}
    store(rt, [to_event(bounce, clock())])
    erased_id = add_subscriber(rt, erased)
    with rt.transaction() as session:
        sub = session.get(Subscriber, erased_id)
        assert sub is not None
        erase_subscriber(session, sub, clock())
    sent_before = len(memory_backend.sent_to(bounced))

    suppress._salt_cache.clear()  # a new process...
    rotated = Runtime.build(  # ... started with another key, everything else the same
        _settings(tmp_path, KEY, redis_url=redis_url, secret_key=NEW_SECRET),
        engine=rt.engine,
        backend=memory_backend,
        clock=clock,
    )
    assert rotated.secret != rt.secret
    clock.advance(timedelta(days=1))  # past any resend throttle
    web = web_client(rotated)
    answers = [form_signup(web, email=address).status_code for address in (bounced, erased)]

    assert answers == [303, 303]  # the visitor sees the usual answer...
    assert len(memory_backend.sent_to(bounced)) == sent_before  # ... and nothing is sent
    assert memory_backend.sent_to(erased) == []
    with rotated.sessions() as session:
        assert suppress.is_suppressed(session, bounced)
        assert suppress.is_suppressed(session, erased)
        stored = session.scalar(select(Subscriber.id).where(Subscriber.email == erased))
    assert stored is None  # the erased person is not signed up again
