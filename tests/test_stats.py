"""The figures on a small known data set, through collect(), `drip stats` and the admin API.

The story (New York time zone, the course sends lesson 1 at once, then daily at 07:00):

- ana, ben and cat confirm and get lesson 1; dan signs up and never confirms;
- lesson 1 is delivered to all three; ana opens it and clicks, cat opens it, ben's "open" is
  Apple Mail Privacy Protection's prefetch (machine);
- ben unsubscribes before lesson 2, which goes to ana and cat; cat's copy bounces hard, ana
  opens it;
- ana buys The Runners Lab for USD 197.00 (credited to lesson 1, her last human click), and a
  stranger buys for USD 99.00 (no subscriber, credited to no email).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, select

from drip.cli.main import main
from drip.cli.stats import render
from drip.clock import FrozenClock
from drip.engine.consent import unsubscribe
from drip.ingest.events import Event, EventType
from drip.models import Delivery, Subscriber, SubscriberStatus
from drip.reports.stats import Stats, as_json, collect
from drip.runtime import Runtime
from drip.settings import Settings, get_settings
from tests.conftest import REPO
from tests.helpers import add_subscriber, run_tick
from tests.tracking_support import (
    ADMIN_TOKEN,
    HUMAN_UA,
    client_for,
    post_purchase,
    store,
    tracking_settings,
)

KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tracking_settings(tmp_path, KEY)


def _delivery(rt: Runtime, email: str, key: str) -> int:
    with rt.sessions() as session:
        found = session.scalar(
            select(Delivery.id)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Subscriber.email == email, Delivery.message_key == key)
        )
    assert found is not None
    return found


def _events(rt: Runtime, at: Any, *specs: tuple[str, EventType, str, dict[str, Any]]) -> None:
    events = []
    for email, kind, key, extra in specs:
        event_id = f"{email}:{kind}:{key}:{len(events)}"
        delivery_id = _delivery(rt, email, key)
        events.append(Event(kind, at, "test", event_id, delivery_id=delivery_id, **extra))
    store(rt, events)


@pytest.fixture
def story(rt: Runtime, clock: FrozenClock) -> Runtime:
    for name in ("ana", "ben", "cat"):
        add_subscriber(rt, f"{name}@example.com")
    with rt.transaction() as session:
        session.add(Subscriber(email="dan@example.com", status=SubscriberStatus.PENDING))
    run_tick(rt)  # lesson 1 to ana, ben, cat

    clock.advance(timedelta(hours=1))
    human, mpp = {"user_agent": HUMAN_UA}, {"user_agent": "Mozilla/5.0"}
    lesson1, lesson2 = "glute-accelerator/1", "glute-accelerator/2"
    _events(
        rt,
        clock.now,
        *[(f"{n}@example.com", EventType.DELIVERED, lesson1, {}) for n in ("ana", "ben", "cat")],
        ("ana@example.com", EventType.OPENED, lesson1, human),
        ("ana@example.com", EventType.OPENED, lesson1, human),  # twice: counted once
        ("ana@example.com", EventType.CLICKED, lesson1, human),
        ("cat@example.com", EventType.OPENED, lesson1, human),
        ("ben@example.com", EventType.OPENED, lesson1, mpp),
    )
    with rt.transaction() as session:
        ben = session.scalar(select(Subscriber).where(Subscriber.email == "ben@example.com"))
        assert ben is not None
        unsubscribe(session, ben, clock.now, "test")

    clock.advance(timedelta(hours=11))  # 07:00 in New York: lesson 2 is due
    run_tick(rt)
    clock.advance(timedelta(hours=1))
    bounce = {"email": "cat@example.com", "suppress": "bounce"}
    _events(
        rt,
        clock.now,
        ("cat@example.com", EventType.BOUNCED, lesson2, bounce),
        ("ana@example.com", EventType.OPENED, lesson2, human),
    )
    client = client_for(rt)
    order = {"product": "runners-lab", "currency": "USD", "time": clock.now.isoformat()}
    ana = {**order, "email": "ana@example.com", "order_id": "o1", "amount": "197.00"}
    stranger = {**order, "email": "who@example.com", "order_id": "o2", "amount": 99}
    assert post_purchase(client, ana).status_code == 200
    assert post_purchase(client, stranger).status_code == 200
    return rt


def _collect(rt: Runtime) -> Stats:
    with rt.sessions() as session:
        return collect(session, rt.library, "glute-accelerator", rt.clock())


def _by_key(stats: Stats) -> dict[str, dict[str, Any]]:
    return {e["message_key"]: e for e in as_json(stats)["emails"]}


FIELDS = ("sent", "delivered", "bounced", "opened", "clicked", "click_to_open", "unsubscribed",
          "complained", "conversions", "conversion_rate", "revenue")  # fmt: skip


def test_per_email_figures(story: Runtime) -> None:
    emails = _by_key(_collect(story))

    assert [emails["glute-accelerator/1"][f] for f in FIELDS] == [
        3, 3, 0, 2, 1, 0.5, 1, 0, 1, 0.3333, {"USD": 19700}
    ]  # fmt: skip
    assert [emails["glute-accelerator/2"][f] for f in FIELDS] == [
        2, 0, 1, 1, 0, 0.0, 0, 0, 0, 0.0, {}
    ]  # fmt: skip
    assert [emails["glute-accelerator/3"][f] for f in FIELDS] == [
        0, 0, 0, 0, 0, None, 0, 0, 0, None, {}
    ]  # fmt: skip
    # Every email of every sequence, each sequence's in lesson order.
    assert list(emails)[:7] == [f"glute-accelerator/{n}" for n in range(1, 8)]
    upsell = [k for k in emails if k.startswith("runners-lab-upsell/")]
    assert upsell == [f"runners-lab-upsell/{n}" for n in range(1, 4)]
    assert len(emails) == sum(s.length for s in story.library.values())


def test_funnel_and_sequences(story: Runtime) -> None:
    figures = as_json(_collect(story))

    assert figures["funnel"]["steps"] == [
        {"step": "signed up", "count": 4},
        {"step": "confirmed", "count": 3},
        {"step": "reached lesson 1", "count": 3},
        {"step": "reached lesson 2", "count": 2},
        *[{"step": f"reached lesson {k}", "count": 0} for k in range(3, 8)],
        {"step": "completed", "count": 0},
        {"step": "clicked the upsell", "count": 0},
        {"step": "converted", "count": 1},
    ]
    assert figures["funnel"]["conversion_rate"] == 0.3333
    by_slug = {s["slug"]: s for s in figures["sequences"]}
    course, upsell = by_slug["glute-accelerator"], by_slug["runners-lab-upsell"]
    assert (course["slug"], course["recipients"], course["conversions"]) == (
        "glute-accelerator",
        3,
        1,
    )
    assert (course["conversion_rate"], course["revenue"]) == (0.3333, {"USD": 19700})
    assert (upsell["recipients"], upsell["conversions"], upsell["conversion_rate"]) == (0, 0, None)
    assert figures["unattributed"] == {"conversions": 1, "revenue": {"USD": 9900}}
    assert figures["unknown_buyers"] == 1


def test_the_admin_api_answers_the_same_json(story: Runtime) -> None:
    client = client_for(story)

    answer = client.get("/api/v1/admin/stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    refused = client.get("/api/v1/admin/stats")

    assert answer.status_code == 200
    assert answer.json() == as_json(_collect(story))
    assert refused.status_code == 401


def test_the_terminal_table_is_aligned(story: Runtime) -> None:
    lines = render(_collect(story)).splitlines()

    header = lines[1]
    row = next(line for line in lines if line.startswith("glute-accelerator/1 "))
    assert row.split() == ["glute-accelerator/1", "3", "3", "0", "2", "1", "50.0%", "1", "0",
                           "1", "33.3%", "USD", "197.00"]  # fmt: skip
    assert len(row) == len(header)  # right-aligned under their headers
    assert "converted" in render(_collect(story))


def test_the_stats_command_prints_tables_and_json(
    story: Runtime, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "DRIP_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "DRIP_CONTENT_DIR": str(REPO / "content" / "lessons"),
        "DRIP_TEMPLATES_DIR": str(REPO / "templates"),
        "DRIP_EMAIL_BACKEND": "memory",
        "DRIP_RUNNERS_LAB_URL": "https://lab.test/join",
    }
    get_settings.cache_clear()
    try:
        text = CliRunner().invoke(main, ["stats"], env=env)
        data = CliRunner().invoke(main, ["stats", "--json", "--rebuild"], env=env)
    finally:
        get_settings.cache_clear()

    assert text.exit_code == 0, text.output
    assert "reached lesson 2" in text.output
    assert data.exit_code == 0, data.output
    figures = json.loads(data.output)
    assert figures["emails"] == as_json(_collect(story))["emails"]  # the rebuild agrees
