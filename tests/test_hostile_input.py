"""Hostile input gets a 4xx naming the field, never a 5xx (issue 12), on both databases.

What a tester found: ids past PostgreSQL's bigint, NUL characters (PostgreSQL text cannot hold
them), ``null`` where a text is expected, a NUL in a SendGrid batch that made the whole batch
fail for good, and bidirectional overrides in names that reach the recipient's display name.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from drip.broadcasts import compose
from drip.models import Broadcast, Consent, Conversion, Subscriber, TrackingEvent
from drip.runtime import Runtime
from drip.settings import Settings
from drip.subscribers.csvmap import read_rows
from drip.subscribers.validation import clean_name
from drip.suppress import is_suppressed
from tests.dashboard_support import signed_in
from tests.helpers import add_subscriber
from tests.tracking_support import (
    ADMIN_TOKEN,
    client_for,
    new_key,
    post_events,
    post_purchase,
    sent_delivery,
    tracking_settings,
)
from tests.web_support import API_TOKEN, WEBHOOK_SECRET, subscriber

KEY = new_key()
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SUBSCRIBERS = "/api/v1/admin/subscribers"
BROADCASTS = "/api/v1/admin/broadcasts"
PAST_BIGINT = 2**63  # one more than PostgreSQL's largest bigint
HUGE = 10**19
BIDI = "\u202e\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
BODY = "Hi {{ first_name }},\n\nHill week.\n"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tracking_settings(tmp_path, KEY, api_tokens=API_TOKEN, webhook_secret=WEBHOOK_SECRET)


@pytest.fixture
def admin(rt: Runtime) -> TestClient:
    client = client_for(rt)
    client.headers.update(AUTH)
    return client


def _draft(rt: Runtime) -> int:
    with rt.transaction() as session:
        b = compose.create_broadcast(
            session, rt, subject="Hills", body_md=BODY, actor="test", now=rt.clock()
        )
        return b.id


def _refused(answer: Any, status: int, field: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["field"] == field, answer.text


# --------------------------------------------------------------------------- ids


@pytest.mark.parametrize("bad", [PAST_BIGINT, HUGE, 0])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", SUBSCRIBERS + "/{id}"),
        ("PUT", SUBSCRIBERS + "/{id}/tags"),
        ("POST", SUBSCRIBERS + "/{id}/unsubscribe"),
        ("GET", SUBSCRIBERS + "/{id}/export"),
        ("POST", SUBSCRIBERS + "/{id}/erase"),
        ("GET", BROADCASTS + "/{id}"),
        ("PATCH", BROADCASTS + "/{id}"),
        ("GET", BROADCASTS + "/{id}/audience"),
        ("POST", BROADCASTS + "/{id}/preview"),
        ("POST", BROADCASTS + "/{id}/pause"),
        ("POST", BROADCASTS + "/{id}/cancel"),
    ],
)
def test_a_path_id_outside_bigint_is_a_422_naming_it(
    admin: TestClient, method: str, path: str, bad: int
) -> None:
    answer = admin.request(method, path.format(id=bad), json={"tags": []})

    field = "subscriber_id" if path.startswith(SUBSCRIBERS) else "broadcast_id"
    _refused(answer, 422, field)


def test_the_largest_bigint_is_an_id_that_is_simply_not_found(admin: TestClient) -> None:
    _refused(admin.get(f"{SUBSCRIBERS}/{2**63 - 1}"), 404, "subscriber_id")
    _refused(admin.post(f"{BROADCASTS}/{2**63 - 1}/resume"), 404, "broadcast_id")


@pytest.mark.parametrize("name", ["before", "after"])
def test_a_page_cursor_outside_bigint_is_a_422_naming_it(admin: TestClient, name: str) -> None:
    _refused(admin.get(SUBSCRIBERS, params={name: PAST_BIGINT}), 422, name)


def test_a_preview_for_a_subscriber_id_outside_bigint_is_a_422(
    admin: TestClient, rt: Runtime
) -> None:
    broadcast_id = _draft(rt)

    answer = admin.post(f"{BROADCASTS}/{broadcast_id}/preview", json={"subscriber_id": HUGE})

    _refused(answer, 422, "subscriber_id")


@pytest.mark.parametrize(
    "path",
    [
        f"/admin/subscribers/{HUGE}",
        f"/admin/subscribers/{HUGE}/export.json",
        f"/admin/subscribers/{HUGE}/erase",
        f"/admin/subscribers?before={PAST_BIGINT}",
        f"/admin/subscribers?after={PAST_BIGINT}",
        f"/admin/broadcasts/{HUGE}",
        f"/admin/broadcasts/{HUGE}/email.html",
        f"/admin/broadcasts?before={PAST_BIGINT}",
        f"/admin/api/broadcasts/{HUGE}/progress",
    ],
)
def test_dashboard_ids_outside_bigint_are_refused_not_a_500(rt: Runtime, path: str) -> None:
    http, _ = signed_in(rt)

    answer = http.get(path)

    assert answer.status_code == 422, answer.text


def test_dashboard_actions_on_an_id_outside_bigint_are_refused(rt: Runtime) -> None:
    http, token = signed_in(rt)

    for action in ("pause", "unsubscribe"):
        kind = "broadcasts" if action == "pause" else "subscribers"
        answer = http.post(f"/admin/{kind}/{HUGE}/{action}", data={"csrf_token": token})
        assert answer.status_code == 422, (action, answer.text)


# --------------------------------------------------------------------------- NUL characters


@pytest.mark.parametrize("field", ["subject", "body_md", "preheader"])
def test_a_nul_in_a_new_broadcast_is_a_422_naming_the_field(
    admin: TestClient, rt: Runtime, field: str
) -> None:
    draft = {"subject": "Hills", "body_md": BODY, "preheader": "Three short climbs this week"}
    draft[field] = draft[field][:3] + "\x00" + draft[field][3:]

    _refused(admin.post(BROADCASTS, json=draft), 422, field)
    with rt.sessions() as session:
        assert session.scalar(select(Broadcast.id)) is None


@pytest.mark.parametrize("field", ["subject", "body_md", "preheader"])
def test_a_nul_in_a_broadcast_change_is_a_422_naming_the_field(
    admin: TestClient, rt: Runtime, field: str
) -> None:
    broadcast_id = _draft(rt)

    _refused(admin.patch(f"{BROADCASTS}/{broadcast_id}", json={field: "a\x00b"}), 422, field)


@pytest.mark.parametrize("name", ["q", "tag"])
def test_a_nul_in_a_query_parameter_is_a_422_naming_it(admin: TestClient, name: str) -> None:
    _refused(admin.get(SUBSCRIBERS, params={name: "an\x00a"}), 422, name)


def test_a_nul_in_a_dashboard_search_is_refused(rt: Runtime) -> None:
    http, _ = signed_in(rt)

    for name in ("q", "tag"):
        answer = http.get("/admin/subscribers", params={name: "an\x00a"})
        assert answer.status_code == 422, (name, answer.text)
        assert name in answer.text


def test_a_nul_in_the_dashboard_composer_is_shown_next_to_the_form(rt: Runtime) -> None:
    http, token = signed_in(rt)

    answer = http.post(
        "/admin/broadcasts/new",
        data={"csrf_token": token, "subject": "Hi\x00", "body_md": BODY, "preheader": ""},
    )

    assert answer.status_code == 422
    assert "NUL" in answer.text


def test_a_nul_in_the_sign_in_form_is_a_422(rt: Runtime) -> None:
    http, _ = signed_in(rt)
    http.cookies.clear()
    page = http.get("/admin/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]

    answer = http.post(
        "/admin/login",
        data={"email": "co\x00ach@example.com", "password": "x", "csrf_token": token},
    )

    assert answer.status_code == 422, answer.text


def _signup(client: TestClient, **fields: Any) -> Any:
    body = {"email": "ana@example.com", **fields}
    return client.post(
        "/api/v1/subscribers", json=body, headers={"Authorization": f"Bearer {API_TOKEN}"}
    )


def test_a_nul_in_the_consent_text_of_a_json_signup_is_a_422(rt: Runtime) -> None:
    _refused(_signup(client_for(rt), consent_text="I agree\x00"), 422, "consent_text")
    with rt.sessions() as session:
        assert session.scalar(select(Consent.id)) is None


# --------------------------------------------------------------------------- null texts


@pytest.mark.parametrize("field", ["subject", "body_md", "preheader"])
def test_a_null_text_in_a_broadcast_change_is_a_422_naming_it(
    admin: TestClient, rt: Runtime, field: str
) -> None:
    broadcast_id = _draft(rt)

    _refused(admin.patch(f"{BROADCASTS}/{broadcast_id}", json={field: None}), 422, field)
    with rt.sessions() as session:
        broadcast = session.get(Broadcast, broadcast_id)
        assert broadcast is not None and broadcast.subject == "Hills"


def test_a_null_segment_still_means_everyone(admin: TestClient, rt: Runtime) -> None:
    add_subscriber(rt, "ana@example.com", enroll_now=False)
    broadcast_id = _draft(rt)

    answer = admin.patch(f"{BROADCASTS}/{broadcast_id}", json={"segment": None})

    assert answer.status_code == 200, answer.text


# --------------------------------------------------------------------------- webhooks


def test_nuls_in_a_sendgrid_batch_are_stripped_and_the_bounce_beside_them_is_stored(
    rt: Runtime,
) -> None:
    _, delivery_id = sent_delivery(rt, "ana@example.com")
    at = int((rt.clock() + timedelta(minutes=1)).timestamp())
    bounce = {
        "email": "ana@example.com",
        "timestamp": at,
        "event": "bounce",
        "type": "bounce",
        "reason": "550 5.1.1 no such user",
        "sg_event_id": "bounce-1",
        "delivery_id": str(delivery_id),
    }
    hostile = {
        "email": "bob\x00@example.com",
        "timestamp": at,
        "event": "open\x00",
        "sg_event_id": "open\x00-2",
        "sg_message_id": "abc\x00.def",
        "useragent": "Mozilla\x00",
        "url": "https://lab.test/\x00",
        "ip": "1.2.3.4\x00",
        "reason": "\x00",
        "nested": {"k\x00": ["v\x00", 1, None]},
        "lone": "\ud800 surrogate",
    }

    answer = post_events(client_for(rt), KEY, [bounce, hostile], rt.clock())

    assert answer.status_code == 200, answer.text
    assert answer.json()["stored"] == 2
    with rt.sessions() as session:
        assert is_suppressed(session, "ana@example.com")
        stored = {e.provider_event_id: e for e in session.scalars(select(TrackingEvent))}
    assert stored["bounce-1"].type == "bounced"
    kept = stored["open-2"]
    assert kept.raw is not None and kept.raw["nested"] == {"k": ["v", 1, None]}
    assert kept.raw["lone"] == " surrogate"
    assert kept.user_agent == "Mozilla"


def test_a_nul_in_a_purchase_order_id_is_a_422_naming_it(rt: Runtime) -> None:
    order = {
        "email": "ana@example.com",
        "product": "runners-lab",
        "order_id": "ord_\x001",
        "amount": "197.00",
        "currency": "USD",
    }

    _refused(post_purchase(client_for(rt), order), 422, "order_id")
    _refused(
        post_purchase(client_for(rt), {**order, "order_id": "ok", "product": "\ud800"}),
        422,
        "product",
    )
    with rt.sessions() as session:
        assert session.scalar(select(Conversion.id)) is None


# --------------------------------------------------------------------------- bidi controls


def test_bidi_controls_are_removed_from_names() -> None:
    assert clean_name(f"An{BIDI}a") == "Ana"
    assert clean_name("\u202eanA") == "anA"
    assert clean_name(BIDI) == ""


def test_bidi_controls_never_reach_a_stored_name(rt: Runtime) -> None:
    client = client_for(rt)
    form = client.post(
        "/subscribe", data={"email": "form@example.com", "first_name": "\u202eAna\u202c"}
    )
    api = _signup(client, email="api@example.com", first_name="Bob\u2066\u200f")
    parsed = read_rows(["email,first_name\n", "csv@example.com,\u061cCleo\u202d\n"])

    assert form.status_code == 303, form.text
    assert api.status_code == 202, api.text
    assert [row.first_name for row in parsed.rows] == ["Cleo"]
    with rt.sessions() as session:
        assert subscriber(session, "form@example.com").first_name == "Ana"
        assert subscriber(session, "api@example.com").first_name == "Bob"
        assert (
            session.scalar(select(Subscriber.id).where(Subscriber.first_name.contains("\u202e")))
            is None
        )
