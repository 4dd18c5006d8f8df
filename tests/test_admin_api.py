"""The admin API: bearer tokens, listing with filters and pages, tags, unsubscribe, GDPR."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from drip.models import Subscriber, SubscriberStatus, Suppression
from drip.runtime import Runtime
from drip.settings import Settings
from drip.subscribers.store import add_tags
from tests.helpers import add_subscriber
from tests.web_support import ADMIN_TOKEN, API_TOKEN, client_for, subscriber, web_settings

BASE = "/api/v1/admin/subscribers"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return web_settings(tmp_path)


@pytest.fixture
def admin(rt: Runtime) -> TestClient:
    client = client_for(rt)
    client.headers.update(AUTH)
    return client


def _people(rt: Runtime) -> dict[str, int]:
    ids = {
        "ana@example.com": add_subscriber(rt, "ana@example.com", name="Ana"),
        "bob@example.com": add_subscriber(
            rt,
            "bob@example.com",
            name="Bob",
            enroll_now=False,
            status=SubscriberStatus.UNSUBSCRIBED,
        ),
        "cleo@runclub.example": add_subscriber(rt, "cleo@runclub.example", name="Cleo_x"),
        "dan@example.com": add_subscriber(
            rt, "dan@example.com", name="Dan", status=SubscriberStatus.PENDING, enroll_now=False
        ),
    }
    with rt.transaction() as session:
        add_tags(session, subscriber(session, "ana@example.com"), ["vip"])
        add_tags(session, subscriber(session, "cleo@runclub.example"), ["vip", "5k"])
    return ids


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-admin-token-0123"},
        {"Authorization": f"Bearer {API_TOKEN}"},  # a webhook token is not an admin token
        {"Authorization": f"Token {ADMIN_TOKEN}"},
    ],
)
def test_every_admin_route_needs_an_admin_token(rt: Runtime, headers: dict[str, str]) -> None:
    sid = add_subscriber(rt, "ana@example.com")
    client = client_for(rt)
    for method, path in (
        ("GET", BASE),
        ("GET", f"{BASE}/{sid}"),
        ("PUT", f"{BASE}/{sid}/tags"),
        ("PATCH", f"{BASE}/{sid}/tags"),
        ("POST", f"{BASE}/{sid}/unsubscribe"),
        ("GET", f"{BASE}/{sid}/export"),
        ("POST", f"{BASE}/{sid}/erase"),
    ):
        answer = client.request(method, path, headers=headers, json={"tags": []})
        assert answer.status_code == 401, (method, path)
        assert answer.json()["error"]["field"] == "authorization"
    with rt.sessions() as session:
        assert subscriber(session, "ana@example.com").status == "active"


def test_with_no_admin_tokens_configured_the_admin_api_is_closed(
    tmp_path: Path, rt: Runtime
) -> None:
    closed = Runtime.build(
        web_settings(tmp_path, admin_tokens=""),
        engine=rt.engine,
        backend=rt.backend,
        clock=rt.clock,
    )
    answer = client_for(closed).get(BASE, headers=AUTH)
    assert answer.status_code == 401 and "DRIP_ADMIN_TOKENS" in answer.json()["error"]["message"]


def test_list_filters_by_status_tag_and_text(rt: Runtime, admin: TestClient) -> None:
    _people(rt)

    def emails(**params: Any) -> list[str]:
        answer = admin.get(BASE, params=params)
        assert answer.status_code == 200, answer.text
        return [item["email"] for item in answer.json()["items"]]

    assert len(emails()) == 4
    assert emails(status="active") == ["ana@example.com", "cleo@runclub.example"]
    assert emails(status="pending") == ["dan@example.com"]
    assert emails(tag="VIP") == ["ana@example.com", "cleo@runclub.example"]
    assert emails(tag="5k", status="active") == ["cleo@runclub.example"]
    assert emails(q="RUNCLUB") == ["cleo@runclub.example"]
    assert emails(q="bob") == ["bob@example.com"]
    assert emails(q="_") == ["cleo@runclub.example"]  # LIKE wildcards are escaped
    assert emails(q="%") == []
    bad = admin.get(BASE, params={"status": "nonsense"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "status"


def test_list_pages_by_id(rt: Runtime, admin: TestClient) -> None:
    for i in range(5):
        add_subscriber(rt, f"u{i}@example.com", enroll_now=False)
    seen: list[str] = []
    after = 0
    for _ in range(5):
        page = admin.get(BASE, params={"limit": 2, "after": after}).json()
        seen += [item["email"] for item in page["items"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == [f"u{i}@example.com" for i in range(5)]
    # And back from the last page, through previous_before, to the first.
    backwards: list[list[str]] = []
    params: dict[str, object] = {"limit": 2, "after": after}
    for _ in range(5):
        page = admin.get(BASE, params=params).json()
        backwards.append([item["email"] for item in page["items"]])
        if page["previous_before"] is None:
            break
        params = {"limit": 2, "before": page["previous_before"]}
    assert backwards == [["u4@example.com"], ["u2@example.com", "u3@example.com"],
                         ["u0@example.com", "u1@example.com"]]  # fmt: skip
    assert admin.get(BASE, params={"limit": 0}).status_code == 422
    assert admin.get(BASE, params={"limit": 201}).status_code == 422


def test_get_one_and_404(rt: Runtime, admin: TestClient) -> None:
    ids = _people(rt)
    one = admin.get(f"{BASE}/{ids['ana@example.com']}").json()
    assert (one["email"], one["first_name"], one["tags"], one["status"]) == (
        "ana@example.com",
        "Ana",
        ["vip"],
        "active",
    )
    missing = admin.get(f"{BASE}/999999")
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "field": "subscriber_id",
        "message": "no such subscriber",
        "request_id": missing.headers["x-request-id"],
    }
    assert admin.get(f"{BASE}/abc").status_code == 422


def test_tags_can_be_replaced_added_and_removed(rt: Runtime, admin: TestClient) -> None:
    sid = _people(rt)["ana@example.com"]
    put = admin.put(f"{BASE}/{sid}/tags", json={"tags": ["Marathon", "5K", "marathon"]})
    assert put.status_code == 200 and put.json()["tags"] == ["5k", "marathon"]
    patch = admin.patch(f"{BASE}/{sid}/tags", json={"add": ["trail"], "remove": ["5k"]})
    assert patch.json()["tags"] == ["marathon", "trail"]
    bad = admin.put(f"{BASE}/{sid}/tags", json={"tags": ["x" * 65]})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "tags"
    wrong = admin.put(f"{BASE}/{sid}/tags", json={"tags": "not-a-list"})
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "tags"
    assert (
        admin.put(
            f"{BASE}/{sid}/tags", content=b"{", headers={"Content-Type": "application/json"}
        ).status_code
        == 422
    )


def test_unsubscribe_export_and_erase(rt: Runtime, admin: TestClient) -> None:
    sid = _people(rt)["ana@example.com"]
    out = admin.post(f"{BASE}/{sid}/unsubscribe")
    assert out.status_code == 200 and out.json()["status"] == "unsubscribed"
    export = admin.get(f"{BASE}/{sid}/export").json()
    assert export["subscriber"]["email"] == "ana@example.com"
    assert [c["action"] for c in export["consents"]] == ["unsubscribe"]
    erased = admin.post(f"{BASE}/{sid}/erase")
    assert erased.json() == {"id": sid, "erased": True}
    assert admin.post(f"{BASE}/{sid}/erase").json() == {"id": sid, "erased": False}
    with rt.sessions() as session:
        sub = session.get(Subscriber, sid)
        assert sub is not None and (sub.email, sub.status) == (None, "erased")
        assert session.scalars(select(Suppression.reason)).one() == "erased"
    assert admin.get(f"{BASE}/{sid}").json()["email"] is None


def test_the_admin_api_is_documented(rt: Runtime) -> None:
    paths = client_for(rt).get("/openapi.json").json()["paths"]
    assert {
        "/api/v1/admin/subscribers",
        "/api/v1/admin/subscribers/{subscriber_id}",
        "/api/v1/admin/subscribers/{subscriber_id}/tags",
        "/api/v1/admin/subscribers/{subscriber_id}/unsubscribe",
        "/api/v1/admin/subscribers/{subscriber_id}/export",
        "/api/v1/admin/subscribers/{subscriber_id}/erase",
    } <= set(paths)
