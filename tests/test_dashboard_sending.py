"""The dashboard's Sending page: the pause, unknown and failed emails, resume and resend.

Each test runs on SQLite and PostgreSQL, signed in through the real sign-in form; the app's
``enqueue`` is a list's append, so the ids handed to the workers are captured.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from drip.clock import FrozenClock
from drip.engine import pause as engine_state
from drip.engine.claim import tick
from drip.esp.memory import MemoryBackend
from drip.models import Delivery, DeliveryStatus
from drip.runtime import Runtime
from drip.settings import Settings
from drip.web.app import create_app
from tests.dashboard_support import dashboard_settings, make_admin, page_token, sign_in
from tests.helpers import add_subscriber, run_tick
from tests.sending_support import FAILURE, Unsettled, unsettled
from tests.web_support import BROWSER_UA

REASON = "10 sends failed in a row; last error: SendGrid 401: The provided authorization is invalid"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dashboard_settings(tmp_path)


@pytest.fixture
def handed() -> list[list[int]]:
    """The batches of ids the dashboard hands to the workers."""
    return []


@pytest.fixture
def http(rt: Runtime, handed: list[list[int]]) -> TestClient:
    make_admin(rt)
    client = TestClient(
        create_app(rt, enqueue=handed.append),
        base_url="https://testserver",
        follow_redirects=False,
        headers={"User-Agent": BROWSER_UA},
    )
    assert sign_in(client).status_code == 303
    return client


@pytest.fixture
def rows(rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock) -> Unsettled:
    return unsettled(rt, memory_backend, clock)


def _token(http: TestClient) -> str:
    return page_token(http.get("/admin/sending").text)


def _status(rt: Runtime, delivery_id: int) -> str:
    with rt.sessions() as session:
        found = session.scalar(select(Delivery.status).where(Delivery.id == delivery_id))
    assert found is not None
    return found


def _table(html: str, table_id: str) -> str:
    found = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S)
    assert found, f"no table {table_id}"
    return found.group(1)


def _resend_form(delivery_id: int) -> str:
    return f'action="/admin/sending/{delivery_id}/resend"'


def test_the_page_lists_unknown_past_the_settle_time_and_failed_with_their_error(
    http: TestClient, rows: Unsettled
) -> None:
    page = http.get("/admin/sending")

    assert page.status_code == 200
    html = page.text
    assert '<a href="/admin/sending" aria-current="page">Sending</a>' in html
    assert 'id="running"' in html and 'id="paused"' not in html
    for count, label in [(0, "queued"), (2, "unknown (maybe sent)"), (1, "failed")]:
        assert f'<span class="n">{count}</span> <span class="l">{label}</span>' in html
    unknown = _table(html, "unknown")
    assert _resend_form(rows.old_unknown) in unknown and "ana@example.com" in unknown
    assert _resend_form(rows.young_unknown) not in html and "cat@example.com" not in html
    assert "1 younger ones still await the provider's events" in html
    failed = _table(html, "failed")
    assert _resend_form(rows.failed) in failed and "ben@example.com" in failed
    assert FAILURE in failed
    assert "Resend all unknown (1)" in html
    assert 'id="hold"' not in html


def test_resend_queues_the_email_again_and_hands_its_id_over(
    rt: Runtime, http: TestClient, rows: Unsettled, handed: list[list[int]]
) -> None:
    token = _token(http)

    answer = http.post(f"/admin/sending/{rows.failed}/resend", data={"csrf_token": token})

    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/sending?done=resent&n=1"
    assert handed == [[rows.failed]]
    assert _status(rt, rows.failed) == DeliveryStatus.QUEUED
    after = http.get(answer.headers["location"]).text
    assert "1 emails queued again and handed to the workers." in after
    assert _resend_form(rows.failed) not in after


def test_resend_of_an_email_neither_unknown_nor_failed_changes_nothing(
    rt: Runtime, http: TestClient, handed: list[list[int]]
) -> None:
    add_subscriber(rt, "ana@example.com")
    [[sent_id]], _ = run_tick(rt)
    assert _status(rt, sent_id) == DeliveryStatus.SENT

    answer = http.post(f"/admin/sending/{sent_id}/resend", data={"csrf_token": _token(http)})

    assert answer.headers["location"] == "/admin/sending?done=nothing&n=0"
    assert handed == [] and _status(rt, sent_id) == DeliveryStatus.SENT
    assert (
        "only unknown or failed emails can be resent" in http.get(answer.headers["location"]).text
    )


def test_resend_all_unknown_takes_only_those_past_the_settle_time(
    rt: Runtime, http: TestClient, rows: Unsettled, handed: list[list[int]]
) -> None:
    answer = http.post("/admin/sending/resend-unknown", data={"csrf_token": _token(http)})

    assert answer.headers["location"] == "/admin/sending?done=resent&n=1"
    assert handed == [[rows.old_unknown]]
    assert _status(rt, rows.old_unknown) == DeliveryStatus.QUEUED
    assert _status(rt, rows.young_unknown) == DeliveryStatus.UNKNOWN
    assert _status(rt, rows.failed) == DeliveryStatus.FAILED


def test_resume_lifts_the_pause_and_hands_the_queued_ids_over(
    rt: Runtime, http: TestClient, clock: FrozenClock, handed: list[list[int]]
) -> None:
    for name in ("ana", "ben"):
        add_subscriber(rt, f"{name}@example.com")
    tick(rt, clock(), enqueue=lambda ids: None)  # the lessons are queued; their tasks are lost
    with rt.transaction() as session:
        engine_state.pause(session, REASON, clock())
        engine_state.note_probe(session, clock(), "SendGrid 401: still refused")
        queued = sorted(session.scalars(select(Delivery.id)))
    assert len(queued) == 2

    page = http.get("/admin/sending").text
    assert 'id="paused"' in page and "SendGrid 401: The provided authorization" in page
    assert "still refused" in page
    answer = http.post("/admin/sending/resume", data={"csrf_token": page_token(page)})

    assert answer.headers["location"] == "/admin/sending?done=resumed&n=2"
    assert sorted(i for batch in handed for i in batch) == queued
    with rt.sessions() as session:
        assert engine_state.paused_reason(session) is None
    after = http.get(answer.headers["location"]).text
    assert "Sending resumed: 2 waiting emails handed to the workers." in after
    assert 'id="running"' in after


def test_an_unreachable_queue_leaves_the_rows_queued_and_says_so(
    rt: Runtime, rows: Unsettled
) -> None:
    def broker_down(ids: list[int]) -> None:
        raise ConnectionError("Error 111 connecting to redis:6379")

    make_admin(rt)
    client = TestClient(
        create_app(rt, enqueue=broker_down),
        base_url="https://testserver",
        follow_redirects=False,
        headers={"User-Agent": BROWSER_UA},
    )
    assert sign_in(client).status_code == 303

    answer = client.post(
        f"/admin/sending/{rows.failed}/resend", data={"csrf_token": _token(client)}
    )

    assert answer.headers["location"] == "/admin/sending?done=resent&n=1&queue=down"
    assert _status(rt, rows.failed) == DeliveryStatus.QUEUED
    page = client.get(answer.headers["location"]).text
    assert "could not be reached: the emails stay queued and go out within 10 minutes" in page
    assert "Error 111" not in page  # the broker's address stays in the log


def test_actions_without_the_csrf_token_are_refused(
    rt: Runtime, http: TestClient, rows: Unsettled, clock: FrozenClock, handed: list[list[int]]
) -> None:
    with rt.transaction() as session:
        engine_state.pause(session, REASON, clock())

    refused = [
        http.post("/admin/sending/resume"),
        http.post("/admin/sending/resend-unknown", data={"csrf_token": "forged"}),
        http.post(f"/admin/sending/{rows.failed}/resend"),
    ]

    assert [r.status_code for r in refused] == [403, 403, 403]
    assert handed == []
    assert _status(rt, rows.failed) == DeliveryStatus.FAILED
    assert _status(rt, rows.old_unknown) == DeliveryStatus.UNKNOWN
    with rt.sessions() as session:
        assert engine_state.paused_reason(session) == REASON


def test_without_a_session_the_page_and_actions_go_to_sign_in(rt: Runtime) -> None:
    anonymous = TestClient(
        create_app(rt, enqueue=lambda ids: None),
        base_url="https://testserver",
        follow_redirects=False,
        headers={"User-Agent": BROWSER_UA},
    )

    page = anonymous.get("/admin/sending")
    action = anonymous.post("/admin/sending/resume")

    assert page.status_code == 303
    assert page.headers["location"] == "/admin/login?next=/admin/sending"
    assert action.status_code == 303 and action.headers["location"].startswith("/admin/login")


def test_the_providers_hold_shows(rt: Runtime, http: TestClient) -> None:
    rt.throttle.hold(30)

    page = http.get("/admin/sending").text

    assert 'id="hold"' in page and "holds off 30 more seconds" in page


def test_the_overview_warns_and_links_to_the_sending_page(
    rt: Runtime, http: TestClient, clock: FrozenClock
) -> None:
    calm = http.get("/admin").text
    with rt.transaction() as session:
        engine_state.pause(session, REASON, clock())

    paused = http.get("/admin").text

    assert 'id="sending-alert"' not in calm
    assert 'id="sending-alert"' in paused
    alert = paused[paused.index('id="sending-alert"') :].split("</p>")[0]
    assert "Sending is paused:" in alert and "SendGrid 401" in alert
    assert '<a href="/admin/sending">' in alert


def test_the_overview_warns_of_unknown_and_of_failures_of_the_last_week(
    rt: Runtime, http: TestClient, rows: Unsettled, clock: FrozenClock
) -> None:
    now = http.get("/admin").text
    alert = now[now.index('id="sending-alert"') :].split("</p>")[0]
    assert "1 emails may or may not have gone" in alert
    assert "1 emails failed in the last 7 days" in alert
    assert "paused" not in alert

    with rt.transaction() as session:  # the failure is old news (a session lasts 12 hours)
        session.execute(
            update(Delivery)
            .where(Delivery.id == rows.failed)
            .values(updated_at=clock() - timedelta(days=8))
        )
    later = http.get("/admin").text
    alert = later[later.index('id="sending-alert"') :].split("</p>")[0]
    assert "failed" not in alert
    assert "1 emails may or may not have gone" in alert  # still needs a person


def test_no_warning_when_all_is_well(rt: Runtime, http: TestClient) -> None:
    add_subscriber(rt, "ana@example.com")
    run_tick(rt)

    assert 'id="sending-alert"' not in http.get("/admin").text
