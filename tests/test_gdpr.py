"""GDPR: export of everything stored about a subscriber, and erasure (CLI and functions)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from drip.cli.main import main
from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.models import (
    Consent,
    Conversion,
    Delivery,
    Enrollment,
    Subscriber,
    SubscriberStatus,
    SubscriberTag,
    Suppression,
    TrackingEvent,
)
from drip.runtime import Runtime
from drip.settings import Settings
from drip.subscribers.gdpr import erase_subscriber, export_subscriber
from drip.subscribers.importer import import_file
from drip.suppress import email_hash
from tests.helpers import run_tick
from tests.web_support import (
    client_for,
    count,
    form_signup,
    last_confirm_path,
    subscriber,
    web_settings,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return web_settings(tmp_path)


def _a_full_history(rt: Runtime, backend: MemoryBackend, clock: FrozenClock) -> int:
    """Signup, confirmation, a lesson, an open and a click, a purchase: returns the id."""
    client = client_for(rt)
    form_signup(
        client,
        email="ana@example.com",
        first_name="Ana",
        timezone="Europe/Berlin",
        tags="injury,knee",
    )
    client.get(last_confirm_path(backend, "ana@example.com"))
    run_tick(rt)
    with rt.transaction() as session:
        sub = subscriber(session, "ana@example.com")
        lesson = session.scalars(select(Delivery).where(Delivery.kind == "lesson")).one()
        lesson.error = "550 <ana@example.com> mailbox full"
        session.add_all(
            [
                TrackingEvent(
                    type="opened",
                    occurred_at=clock(),
                    delivery_id=lesson.id,
                    subscriber_id=sub.id,
                    ip="203.0.113.9",
                    user_agent="Thunderbird",
                    raw={"email": "ana@example.com"},
                ),
                TrackingEvent(
                    type="clicked",
                    occurred_at=clock(),
                    delivery_id=lesson.id,
                    subscriber_id=sub.id,
                    url="https://lab.test/join",
                    ip="203.0.113.9",
                    user_agent="Firefox",
                ),
                Conversion(
                    order_id="order-1",
                    subscriber_id=sub.id,
                    product="The Runners Lab",
                    amount_cents=9900,
                    currency="USD",
                    occurred_at=clock(),
                    raw={"customer_email": "ana@example.com"},
                ),
            ]
        )
        return sub.id


def test_the_export_holds_everything_stored_about_the_subscriber(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    sid = _a_full_history(rt, memory_backend, clock)
    with rt.sessions() as session:
        data = export_subscriber(session, session.get(Subscriber, sid), clock())  # type: ignore[arg-type]
    json.dumps(data)  # JSON-ready
    assert data["subscriber"]["email"] == "ana@example.com"
    assert data["subscriber"]["first_name"] == "Ana"
    assert data["subscriber"]["time_zone"] == "Europe/Berlin"
    assert data["subscriber"]["tags"] == ["injury", "knee"]
    assert [c["action"] for c in data["consents"]] == ["signup", "confirm"]
    assert data["consents"][0]["text"] == rt.settings.consent_text
    assert data["consents"][0]["user_agent"]
    assert [(e["sequence"], e["entry"], e["trigger"]) for e in data["enrollments"]] == [
        ("glute-accelerator", 1, "form:default")  # confirmed through the default form
    ]
    assert [m["message"] for m in data["emails"]] == ["confirm/1", "glute-accelerator/1"]
    assert [e["type"] for e in data["events"]] == ["opened", "clicked"]
    assert data["events"][0]["ip"] == "203.0.113.9"
    assert data["purchases"] == [
        {
            "product": "The Runners Lab",
            "amount_cents": 9900,
            "currency": "USD",
            "at": clock().isoformat(),
        }
    ]
    assert data["suppressed"] is False


def test_erasure_removes_personal_data_and_keeps_the_aggregates(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock
) -> None:
    sid = _a_full_history(rt, memory_backend, clock)
    with rt.transaction() as session:
        assert erase_subscriber(session, session.get(Subscriber, sid), clock())  # type: ignore[arg-type]
    with rt.sessions() as session:
        sub = session.get(Subscriber, sid)
        assert sub is not None
        assert (sub.email, sub.first_name, sub.time_zone, sub.status) == (
            None,
            "",
            None,
            SubscriberStatus.ERASED,
        )
        assert count(session, SubscriberTag) == 0
        for consent in session.scalars(select(Consent)):
            assert (consent.ip, consent.user_agent, consent.text) == (None, None, "")
        for event in session.scalars(select(TrackingEvent)):
            assert (event.ip, event.user_agent, event.raw) == (None, None, None)
        assert count(session, TrackingEvent) == 2  # the open and the click still count
        assert count(session, Delivery) == 2
        assert all("ana" not in (d.error or "") for d in session.scalars(select(Delivery)))
        conversion = session.scalars(select(Conversion)).one()
        assert (conversion.amount_cents, conversion.raw) == (9900, None)
        enrollment = session.scalars(select(Enrollment)).one()
        assert (enrollment.status, enrollment.stop_reason) == ("stopped", "erased")
        row = session.scalars(select(Suppression)).one()
        assert row.reason == "erased"
        assert row.email_hash == email_hash(session, "ana@example.com")
        assert "ana" not in row.email_hash
        assert erase_subscriber(session, sub, clock()) is False  # twice is harmless


def test_an_erased_address_is_not_resubscribed_by_a_signup_or_an_import(
    rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock, tmp_path: Path
) -> None:
    sid = _a_full_history(rt, memory_backend, clock)
    with rt.transaction() as session:
        erase_subscriber(session, session.get(Subscriber, sid), clock())  # type: ignore[arg-type]
    memory_backend.clear()
    clock.advance(timedelta(days=1))
    answer = form_signup(client_for(rt), email="Ana@Example.com")
    assert answer.status_code == 303
    csv = tmp_path / "kit.csv"
    csv.write_text("email_address,first_name,state\nana@example.com,Ana,active\n")
    report = import_file(rt, csv)
    assert report.created == 0 and report.skipped[0].line == 2
    assert memory_backend.outbox == []
    with rt.sessions() as session:
        assert count(session, Subscriber) == 1
        assert count(session, Subscriber, Subscriber.email.is_not(None)) == 0
    run_tick(rt, clock() + timedelta(days=3))
    assert memory_backend.outbox == []


def test_cli_export_one_prints_json_and_erase_asks_first(
    rt: Runtime,
    memory_backend: MemoryBackend,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _a_full_history(rt, memory_backend, clock)
    monkeypatch.setattr("drip.cli.subscribers._runtime", lambda: rt)
    runner = CliRunner()
    shown = runner.invoke(main, ["subscribers", "export-one", "ANA@example.com"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["subscriber"]["email"] == "ana@example.com"

    declined = runner.invoke(main, ["subscribers", "erase", "ana@example.com"], input="n\n")
    assert declined.exit_code != 0
    with rt.sessions() as session:
        assert subscriber(session, "ana@example.com").status == "active"
    done = runner.invoke(main, ["subscribers", "erase", "ana@example.com", "--yes"])
    assert done.exit_code == 0, done.output
    with rt.sessions() as session:
        assert count(session, Subscriber, Subscriber.status == "erased") == 1
    missing = runner.invoke(main, ["subscribers", "export-one", "ana@example.com"])
    assert missing.exit_code == 1 and "no subscriber" in missing.output
    bad = runner.invoke(main, ["subscribers", "erase", "not-an-address", "--yes"])
    assert bad.exit_code == 2
