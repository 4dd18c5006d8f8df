"""The broadcasts admin API: the whole life of a broadcast over HTTP, and its error answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.runtime import Runtime
from tests.broadcast_support import add_sub, run_pages, send_all
from tests.web_support import ADMIN_TOKEN, client_for, web_settings

BASE = "/api/v1/admin/broadcasts"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Drip-Actor": "Mia Marketer"}
NEW = {
    "subject": "Hill week, {{ first_name }}",
    "preheader": "Three short climbs.",
    "body_md": "Hi {{ first_name }}, three climbs this week.",
    "segment": {"tags_any": ["5k"]},
}


@pytest.fixture
def api(
    engine: Engine, tmp_path: Path, clock: FrozenClock
) -> tuple[TestClient, Runtime, MemoryBackend]:
    backend = MemoryBackend(clock=clock)
    rt = Runtime.build(web_settings(tmp_path), engine=engine, backend=backend, clock=clock)
    return client_for(rt), rt, backend


def _error(response: Any) -> tuple[int, str | None, str]:
    body = response.json()["error"]
    return response.status_code, body["field"], body["message"]


def test_create_preview_test_schedule_send_and_show_results(
    api: tuple[TestClient, Runtime, MemoryBackend], clock: FrozenClock
) -> None:
    client, rt, backend = api
    add_sub(rt, "a@example.com", tags=["5k"], name="Ana")
    add_sub(rt, "b@example.com", tags=["5k"], name="Ben")
    add_sub(rt, "c@example.com", tags=["trail"])

    created = client.post(BASE, json=NEW, headers=AUTH)
    assert created.status_code == 201
    broadcast_id = created.json()["id"]
    assert created.json()["status"] == "draft"
    assert created.json()["history"][0]["actor"].endswith("(Mia Marketer)")

    count = client.post(f"{BASE}/audience", json={"segment": {"tags_any": ["5k"]}}, headers=AUTH)
    assert count.json() == {
        "segment": {"tags_any": ["5k"]},
        "description": "tags any of 5k",
        "count": 2,
    }
    assert client.get(f"{BASE}/{broadcast_id}/audience", headers=AUTH).json()["count"] == 2

    shown = client.post(f"{BASE}/{broadcast_id}/preview", json={}, headers=AUTH).json()
    assert (shown["to"], shown["subject"]) == ("a@example.com", "Hill week, Ana")
    assert "<html" in shown["html"] and "Hi Ana" in shown["text"]

    tested = client.post(
        f"{BASE}/{broadcast_id}/test", json={"to": ["me@example.com"]}, headers=AUTH
    )
    assert tested.json() == {"sent": 1, "results": [{"ok": True, "error": None}]}
    assert backend.outbox[-1].subject == "[TEST] Hill week, Sam"

    patched = client.patch(f"{BASE}/{broadcast_id}", json={"subject": "Hills!"}, headers=AUTH)
    assert patched.status_code == 200 and patched.json()["subject"] == "Hills!"

    at = clock().isoformat()
    scheduled = client.post(f"{BASE}/{broadcast_id}/schedule", json={"at": at}, headers=AUTH)
    assert scheduled.status_code == 200 and scheduled.json()["status"] == "scheduled"

    from drip.broadcasts.tick import broadcasts_tick

    kicks: list[tuple[int, str, float]] = []
    broadcasts_tick(rt, clock(), kick=lambda *k: kicks.append(k))
    _, batches = run_pages(rt, broadcast_id, kicks[0][1])
    send_all(rt, batches)
    broadcasts_tick(rt, clock(), kick=lambda *k: None)

    info = client.get(f"{BASE}/{broadcast_id}", headers=AUTH).json()
    assert info["status"] == "sent"
    assert info["progress"]["by_status"]["sent"] == 2 and info["progress"]["percent"] == 100.0
    assert {k: info["results"][k] for k in ("sent", "opens", "clicks", "conversions")} == {
        "sent": 2,
        "opens": 0,
        "clicks": 0,
        "conversions": 0,
    }
    assert [h["action"] for h in info["history"]] == [
        "created",
        "tested",
        "updated",
        "scheduled",
        "started",
        "finished",
    ]
    listed = client.get(BASE, params={"status": "sent"}, headers=AUTH).json()["items"]
    assert [item["id"] for item in listed] == [broadcast_id]


def test_pause_resume_and_cancel(
    api: tuple[TestClient, Runtime, MemoryBackend], clock: FrozenClock
) -> None:
    client, rt, _ = api
    add_sub(rt, "a@example.com", tags=["5k"])
    broadcast_id = client.post(BASE, json=NEW, headers=AUTH).json()["id"]
    at = "2026-03-09T09:00:00Z"
    client.post(f"{BASE}/{broadcast_id}/schedule", json={"at": at}, headers=AUTH)

    paused = client.post(f"{BASE}/{broadcast_id}/pause", headers=AUTH)
    resumed = client.post(f"{BASE}/{broadcast_id}/resume", headers=AUTH)
    resumed_again = client.post(f"{BASE}/{broadcast_id}/resume", headers=AUTH)
    cancelled = client.post(f"{BASE}/{broadcast_id}/cancel", headers=AUTH)

    assert paused.json()["status"] == "paused"
    assert resumed.json()["status"] == "scheduled"
    assert _error(resumed_again) == (
        409,
        "status",
        f"broadcast {broadcast_id} is scheduled: cannot resume it "
        "(from scheduled it can go to: cancelled, draft, paused, scheduled, sending)",
    )
    assert cancelled.json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({**NEW, "segment": {"tags_any": ["5k", "nope"]}}, "segment.tags_any", "nope"),
        ({**NEW, "body_md": "Hi {{ firstname }}"}, "body_md", "unknown template variable"),
        ({**NEW, "body_md": "<p>hi</p>"}, "body_md", "raw HTML"),
        ({**NEW, "segment": {"states": ["x"]}}, "segment.states", "unknown state"),
    ],
)
def test_bad_drafts_are_answered_422_naming_the_field(
    api: tuple[TestClient, Runtime, MemoryBackend],
    body: dict[str, Any],
    field: str,
    words: str,
) -> None:
    client, rt, _ = api
    add_sub(rt, "a@example.com", tags=["5k"])

    status, got_field, message = _error(client.post(BASE, json=body, headers=AUTH))

    assert (status, got_field) == (422, field) and words in message


def test_a_draft_with_several_problems_gets_all_of_them_in_one_422(
    api: tuple[TestClient, Runtime, MemoryBackend],
) -> None:
    client, rt, _ = api
    add_sub(rt, "a@example.com", tags=["5k"])
    body = {
        **NEW,
        "subject": "",
        "body_md": "Hi {{ firstname }},\n\nSee <b>this</b> [x](http://x.test)\n",
        "segment": {"tags_any": ["nope"]},
    }

    status, field, message = _error(client.post(BASE, json=body, headers=AUTH))
    created = client.post(BASE, json=NEW, headers=AUTH).json()
    changed = client.patch(
        f"{BASE}/{created['id']}", json={"subject": "x" * 79, "preheader": "{{ x }}"}, headers=AUTH
    )

    assert (status, field) == (422, "subject")
    assert [line.split(" (")[0] for line in message.splitlines()] == [
        "subject: is required",
        "body_md:1: unknown template variable 'firstname'",
        "body_md:3: raw HTML '<b>' is not allowed: write Markdown",
        "body_md:3: link 'http://x.test' must be an absolute https URL",
        "segment.tags_any: unknown tag(s): nope",
    ]
    assert _error(changed) == (
        422,
        "subject",
        "subject: is 79 characters; at most 78\n"
        "preheader: is not a template: its braces would be sent as is",
    )


def test_scheduling_errors(api: tuple[TestClient, Runtime, MemoryBackend]) -> None:
    client, rt, _ = api
    add_sub(rt, "a@example.com", tags=["5k"])
    add_sub(rt, "b@example.com", tags=["trail"], newsletter=False)
    ok = client.post(BASE, json=NEW, headers=AUTH).json()["id"]
    empty = client.post(BASE, json={**NEW, "segment": {"tags_any": ["trail"]}}, headers=AUTH)

    past = client.post(f"{BASE}/{ok}/schedule", json={"at": "2020-01-01T00:00Z"}, headers=AUTH)
    nobody = client.post(
        f"{BASE}/{empty.json()['id']}/schedule", json={"at": "2026-04-01T00:00Z"}, headers=AUTH
    )
    zones = client.post(
        f"{BASE}/{ok}/schedule",
        json={"at": "2026-04-01T09:00", "local_time": True, "past_zones": "someday"},
        headers=AUTH,
    )

    assert _error(past)[:2] == (422, "at") and "in the past" in _error(past)[2]
    assert _error(nobody)[:2] == (422, "segment") and "matches no one" in _error(nobody)[2]
    assert _error(zones)[:2] == (422, "past_zones")


def test_unknown_broadcasts_and_missing_tokens(
    api: tuple[TestClient, Runtime, MemoryBackend],
) -> None:
    client, _, _ = api

    assert _error(client.get(f"{BASE}/404", headers=AUTH)) == (
        404,
        "broadcast_id",
        "no broadcast 404",
    )
    assert _error(client.post(f"{BASE}/404/pause", headers=AUTH))[0] == 404
    assert client.get(BASE).status_code == 401
    assert (
        client.get(BASE, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code
        == 401
    )
