"""Where people and workers meet the outgoing webhooks: ``drip webhooks log``, the dashboard's
Webhooks page, and beat's task (run in-process, no worker), on both databases."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import drip.cli.webhooks
import workers.tasks
from drip import outgoing
from drip.cli.main import main
from drip.outgoing.delivery import deliver_due
from drip.outgoing_endpoints import Endpoint
from drip.runtime import Runtime
from drip.settings import Settings
from tests.conftest import make_settings
from tests.dashboard_support import dashboard_settings, signed_in
from tests.test_claims_retention import entries_for, interval_seconds
from tests.webhook_receiver import Receiver, refused_url
from workers.celery_app import app, make_celery

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
TASK = "drip.outgoing_webhooks"
DOWN = refused_url()
CRM = "https://crm.example.com/hooks/drip"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    endpoints = (
        Endpoint(DOWN, frozenset({outgoing.SUBSCRIBER_CONFIRMED}), SECRET),
        Endpoint(CRM, frozenset({outgoing.PURCHASE_COMPLETED}), SECRET),
    )
    return dashboard_settings(
        tmp_path, outgoing_webhooks=endpoints, redis_url="redis://127.0.0.1:6379/7"
    )


def emit(rt: Runtime, event_type: str) -> None:
    with rt.transaction() as session:
        data = outgoing.subscriber_data(1, "ana@example.com")
        outgoing.emit(session, None, event_type, data, rt.clock())


def test_the_log_lists_recent_deliveries_newest_first(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    emit(rt, outgoing.SUBSCRIBER_CONFIRMED)
    deliver_due(rt)  # refused: pending, with its error and next attempt
    emit(rt, outgoing.PURCHASE_COMPLETED)  # not attempted yet
    monkeypatch.setattr(drip.cli.webhooks, "_runtime", lambda: rt)

    result = CliRunner().invoke(main, ["webhooks", "log"])

    assert result.exit_code == 0, result.output
    header, newest, older, summary = result.output.splitlines()
    assert header.split("\t") == [
        "id", "created", "event", "endpoint", "status", "attempts", "last", "next attempt",
    ]  # fmt: skip
    newest_cols, older_cols = newest.split("\t"), older.split("\t")
    assert newest_cols[2:] == [
        "purchase.completed",
        CRM,
        "pending",
        "0",
        "-",
        rt.clock().isoformat(),
    ]
    assert older_cols[2:6] == ["subscriber.confirmed", DOWN, "pending", "1"]
    assert "ConnectionRefusedError" in older_cols[6]
    assert older_cols[7] > rt.clock().isoformat()  # the next attempt, later
    assert summary == "2 shown; pending 2, delivered 0, failed 0; 2 endpoints configured"


def test_the_log_filters_by_status(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    emit(rt, outgoing.SUBSCRIBER_CONFIRMED)
    monkeypatch.setattr(drip.cli.webhooks, "_runtime", lambda: rt)

    none = CliRunner().invoke(main, ["webhooks", "log", "--status", "failed"])
    bad = CliRunner().invoke(main, ["webhooks", "log", "--status", "lost"])

    assert none.exit_code == 0 and len(none.output.splitlines()) == 2  # header and summary
    assert bad.exit_code == 2 and "--status" in bad.output


def test_the_dashboard_page_shows_endpoints_and_deliveries_but_no_secret(rt: Runtime) -> None:
    emit(rt, outgoing.SUBSCRIBER_CONFIRMED)
    deliver_due(rt)
    http, _ = signed_in(rt)

    page = http.get("/admin/webhooks")
    failed_only = http.get("/admin/webhooks?status=failed")
    bad = http.get("/admin/webhooks?status=lost")

    assert page.status_code == 200
    assert CRM in page.text and "purchase.completed" in page.text
    assert "subscriber.confirmed" in page.text and "ConnectionRefusedError" in page.text
    assert SECRET not in page.text and SECRET[6:] not in page.text
    assert 'href="/admin/webhooks" aria-current="page"' in page.text
    assert failed_only.status_code == 200 and "ConnectionRefusedError" not in failed_only.text
    assert bad.status_code == 422 and "status" in bad.text


def test_the_dashboard_page_shows_the_newest_100_and_the_counts(rt: Runtime) -> None:
    with rt.transaction() as session:
        items = [outgoing.subscriber_data(n, f"s{n}@example.com") for n in range(1, 102)]
        outgoing.emit_many(session, None, outgoing.SUBSCRIBER_CONFIRMED, items, rt.clock())
    http, _ = signed_in(rt)

    page = http.get("/admin/webhooks").text

    table = re.search(r'<table id="deliveries">.*?<tbody>(.*?)</tbody>', page, re.S)
    assert table is not None and table.group(1).count("<tr>") == 100
    counts = re.findall(
        r'class="n">([\d,]+)</span> <span class="l"><a href="[^"]+">(\w+)</a>', page
    )
    assert counts == [("101", "pending"), ("0", "delivered"), ("0", "failed")]


def test_the_dashboard_page_needs_a_session(rt: Runtime) -> None:
    http, _ = signed_in(rt)
    http.cookies.clear()

    answer = http.get("/admin/webhooks")

    assert answer.status_code in (303, 401) and "ConnectionRefusedError" not in answer.text


def test_beat_runs_the_delivery_every_few_seconds(tmp_path: Path) -> None:
    custom = make_celery(make_settings(tmp_path, outgoing_webhook_seconds=3))
    for celery_app, seconds in ((app, Settings().outgoing_webhook_seconds), (custom, 3.0)):
        (entry,) = entries_for(celery_app.conf.beat_schedule, TASK)
        assert interval_seconds(entry) == seconds
        assert entry["options"]["expires"] == seconds * 5  # runs never pile up
    assert TASK in app.tasks


def test_the_task_delivers_the_due_rows(
    tmp_path: Path, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Receiver([200]) as receiver:
        endpoint = Endpoint(receiver.url, frozenset({outgoing.TAG_ADDED}), SECRET)
        local = Runtime.build(
            make_settings(tmp_path, outgoing_webhooks=(endpoint,)),
            engine=rt.engine,
            backend=rt.backend,
            clock=rt.clock,
        )
        emit(local, outgoing.TAG_ADDED)
        monkeypatch.setattr(workers.tasks, "_runtime", local)

        report = app.tasks[TASK]()

    assert report == {"claimed": 1, "delivered": 1, "retrying": 0, "failed": 0}
    assert len(receiver.received) == 1
