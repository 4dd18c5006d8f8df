"""Broadcasts from the dashboard: compose, live preview and audience, test, schedule, control.

Every action goes through the functions of drip.broadcasts (the admin API's); these tests check
that the pages hand them what a person typed and show what they answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from drip.esp.memory import MemoryBackend
from drip.models import Broadcast, BroadcastEvent
from drip.runtime import Runtime
from drip.settings import Settings
from tests.broadcast_support import BODY, add_sub, new_broadcast, run_pages, send_all, start_now
from tests.dashboard_support import ADMIN_EMAIL, dashboard_settings, signed_in


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dashboard_settings(tmp_path)


@pytest.fixture
def session_client(rt: Runtime) -> tuple[TestClient, str]:
    return signed_in(rt)


def _fields(token: str, **extra: str) -> dict[str, str]:
    return {
        "csrf_token": token,
        "subject": "Hill week, {{ first_name }}",
        "preheader": "Three short climbs.",
        "body_md": BODY,
        **extra,
    }


def _only(rt: Runtime) -> Broadcast:
    with rt.sessions() as session:
        return session.scalars(select(Broadcast)).one()


def test_composing_saves_a_draft_for_the_chosen_segment(
    rt: Runtime, session_client: tuple[TestClient, str]
) -> None:
    http, token = session_client
    add_sub(rt, "ana@example.com", tags=["vip"])

    answer = http.post(
        "/admin/broadcasts/new",
        data=_fields(token, tags_any="VIP", states="in_course", engaged_days=""),
    )

    assert answer.status_code == 303
    b = _only(rt)
    assert answer.headers["location"] == f"/admin/broadcasts/{b.id}?done=created"
    assert (b.status, b.segment) == ("draft", {"tags_any": ["vip"], "states": ["in_course"]})
    assert b.created_by == f"dashboard:{ADMIN_EMAIL}"
    page = http.get(answer.headers["location"])
    assert "Draft saved." in page.text
    assert 'value="vip"' in page.text and 'value="in_course" data-segment checked' in page.text


def test_a_body_that_breaks_the_rules_is_shown_back_with_the_problem(
    rt: Runtime, session_client: tuple[TestClient, str]
) -> None:
    http, token = session_client

    answer = http.post(
        "/admin/broadcasts/new", data=_fields(token, body_md="Hi <b>there</b>", tags_any="nope")
    )

    assert answer.status_code == 422
    assert "body_md:" in answer.text and "raw HTML" in answer.text
    assert "Hi &lt;b&gt;there&lt;/b&gt;</textarea>" in answer.text  # nothing typed is lost
    with rt.sessions() as session:
        assert session.scalars(select(Broadcast)).all() == []


def test_the_live_preview_renders_unsaved_text_or_lists_its_problems(
    rt: Runtime, session_client: tuple[TestClient, str]
) -> None:
    http, token = session_client
    add_sub(rt, "ana@example.com", name="Ana")
    headers = {"X-CSRF-Token": token}

    good = http.post("/admin/api/broadcasts/render", data=_fields(""), headers=headers)
    bad = http.post(
        "/admin/api/broadcasts/render",
        data=_fields("", body_md="Hi {{ lesson_number }}"),
        headers=headers,
    )
    frame = http.post("/admin/broadcasts/preview-frame", data=_fields(token))
    refused = http.post("/admin/api/broadcasts/render", data=_fields(""))

    assert good.json()["problems"] is None
    assert good.json()["subject"] == "Hill week, Ana"  # the audience's first subscriber
    assert "Hi Ana," in good.json()["text"]
    assert "lesson_number" in bad.json()["problems"]
    assert "sandbox" in frame.headers["content-security-policy"]
    assert "Hi Ana," in frame.text and "/t/o/" not in frame.text
    assert refused.status_code == 403
    with rt.sessions() as session:
        assert session.scalars(select(Broadcast)).all() == []  # a preview saves nothing


def test_the_audience_count_follows_the_segment_fields(
    rt: Runtime, session_client: tuple[TestClient, str]
) -> None:
    http, token = session_client
    add_sub(rt, "ana@example.com", tags=["vip"])
    add_sub(rt, "bob@example.com", tags=["vip", "trail"])
    add_sub(rt, "cleo@example.com")
    headers = {"X-CSRF-Token": token}

    def count(**fields: str) -> object:
        return http.post("/admin/api/broadcasts/audience", data=fields, headers=headers)

    assert count().json()["count"] == 3
    assert count(tags_any="vip").json()["count"] == 2
    assert count(tags_any="vip", tags_none="trail").json()["count"] == 1
    unknown = count(tags_any="nope")
    assert unknown.status_code == 422
    assert "unknown tag" in unknown.json()["error"]["message"]


def test_a_test_send_goes_to_the_addresses_given_and_is_recorded(
    rt: Runtime, session_client: tuple[TestClient, str]
) -> None:
    http, token = session_client
    add_sub(rt, "ana@example.com")
    bid = new_broadcast(rt)

    answer = http.post(
        f"/admin/broadcasts/{bid}/test", data={"csrf_token": token, "to": "me@example.com"}
    )
    bad = http.post(f"/admin/broadcasts/{bid}/test", data={"csrf_token": token, "to": "nope"})

    assert answer.status_code == 303
    backend = rt.backend
    assert isinstance(backend, MemoryBackend)
    [email] = backend.sent_to("me@example.com")
    assert email.subject.startswith("[TEST] Hill week")
    assert bad.status_code == 422 and "to:" in bad.text
    with rt.sessions() as session:
        actions = session.scalars(select(BroadcastEvent.action)).all()
    assert "tested" in actions


def test_scheduling_in_a_zone_or_in_each_subscribers_local_time(
    rt: Runtime, session_client: tuple[TestClient, str]
) -> None:
    http, token = session_client
    add_sub(rt, "ana@example.com", zone="Europe/Berlin")
    bid = new_broadcast(rt)

    in_berlin = http.post(
        f"/admin/broadcasts/{bid}/schedule",
        data={
            "csrf_token": token,
            "at": "2026-03-03T09:00",
            "mode": "zone",
            "zone": "Europe/Berlin",
        },
    )
    b = _only(rt)
    assert in_berlin.status_code == 303
    assert (b.status, b.scheduled_at) == ("scheduled", datetime(2026, 3, 3, 8, 0, tzinfo=UTC))

    local = http.post(
        f"/admin/broadcasts/{bid}/schedule",
        data={"csrf_token": token, "at": "2026-03-04T07:30", "mode": "local", "past_zones": "now"},
    )
    b = _only(rt)
    assert local.status_code == 303
    assert (b.local_time, b.local_wall_time) == (True, "2026-03-04T07:30")
    page = http.get(f"/admin/broadcasts/{bid}")
    assert "At 2026-03-04 07:30 in each subscriber" in page.text

    past = http.post(
        f"/admin/broadcasts/{bid}/schedule",
        data={"csrf_token": token, "at": "2020-01-01T09:00", "mode": "zone", "zone": "UTC"},
    )
    assert past.status_code == 422 and "in the past" in past.text


def test_pause_resume_and_cancel_with_confirmation(
    rt: Runtime, session_client: tuple[TestClient, str]
) -> None:
    http, token = session_client
    add_sub(rt, "ana@example.com")
    bid = new_broadcast(rt)
    http.post(
        f"/admin/broadcasts/{bid}/schedule",
        data={"csrf_token": token, "at": "2026-03-05T09:00", "mode": "zone", "zone": "UTC"},
    )

    def act(action: str, **extra: str) -> object:
        return http.post(f"/admin/broadcasts/{bid}/{action}", data={"csrf_token": token, **extra})

    assert act("pause").status_code == 303 and _only(rt).status == "paused"
    assert act("resume").status_code == 303 and _only(rt).status == "scheduled"
    unconfirmed = act("cancel")
    assert unconfirmed.status_code == 422 and _only(rt).status == "scheduled"
    assert act("cancel", confirm="yes").status_code == 303 and _only(rt).status == "cancelled"
    illegal = act("resume")
    assert illegal.status_code == 409
    assert "cannot resume it" in illegal.text
    assert act("explode").status_code == 404
    with rt.sessions() as session:
        actors = set(session.scalars(select(BroadcastEvent.actor)))
    assert f"dashboard:{ADMIN_EMAIL}" in actors


def test_progress_of_a_send_is_live_json(
    rt: Runtime, session_client: tuple[TestClient, str]
) -> None:
    http, _ = session_client
    for n in range(3):
        add_sub(rt, f"runner{n}@example.com")
    bid = new_broadcast(rt)
    runner = start_now(rt, bid)

    before = http.get(f"/admin/api/broadcasts/{bid}/progress").json()
    _, batches = run_pages(rt, bid, runner)
    send_all(rt, batches)
    after = http.get(f"/admin/api/broadcasts/{bid}/progress").json()
    page = http.get(f"/admin/broadcasts/{bid}")

    assert before["status"] == "sending" and before["progress"]["done"] == 0
    assert after["progress"]["by_status"]["sent"] == 3
    assert after["results"]["sent"] == 3
    assert 'id="progress-panel"' in page.text and "data-live" in page.text
    assert http.get("/admin/api/broadcasts/999/progress").status_code == 404


def test_the_list_shows_status_and_results_newest_first(
    rt: Runtime, session_client: tuple[TestClient, str]
) -> None:
    http, _ = session_client
    add_sub(rt, "ana@example.com")
    first = new_broadcast(rt, subject="First one")
    second = new_broadcast(rt, subject="Second one")

    page = http.get("/admin/broadcasts")

    assert page.status_code == 200
    assert page.text.index("Second one") < page.text.index("First one")
    assert f'href="/admin/broadcasts/{first}"' in page.text
    assert f'href="/admin/broadcasts/{second}"' in page.text
    assert '<span class="badge draft">draft</span>' in page.text
    assert http.get("/admin/broadcasts?status=sent").text.count("badge draft") == 0
