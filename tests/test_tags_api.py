"""Tags, manual starts and purchases as events over HTTP, on both databases: the admin routes by
address (200, 404, 409, 422, nothing half-stored), the replace and patch routes' tag events, and
the purchase webhook's ``purchased`` event and product ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, func, select

from drip.clock import FrozenClock
from drip.models import Conversion, Enrollment, SubscriberStatus, Tag
from drip.runtime import Runtime
from tests.helpers import add_subscriber
from tests.tags_support import automations_runtime, enrollments
from tests.tracking_support import PURCHASE_SECRET, post_purchase
from tests.web_support import ADMIN_TOKEN, client_for

BASE = "/api/v1/admin/subscribers"


@pytest.fixture
def rt(engine: Engine, tmp_path: Path, clock: FrozenClock, redis_url: str) -> Runtime:
    return automations_runtime(
        tmp_path, engine, clock, redis_url=redis_url, purchase_webhook_secret=PURCHASE_SECRET
    )


@pytest.fixture
def admin(rt: Runtime) -> TestClient:
    client = client_for(rt)
    client.headers.update({"Authorization": f"Bearer {ADMIN_TOKEN}"})
    return client


def _error(answer: Any, status: int, field: str) -> str:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["field"] == field, error
    return str(error["message"])


def test_tags_are_added_by_address_and_start_their_sequence_once(
    rt: Runtime, admin: TestClient
) -> None:
    ana = add_subscriber(rt, "ana@example.com", enroll_now=False)
    first = admin.post(f"{BASE}/Ana@Example.com/tags", json={"tags": ["5K-plan", "trail"]})
    assert first.status_code == 200, first.text
    assert first.json() == {
        "email": "ana@example.com",
        "tags": ["5k-plan", "trail"],
        "added": ["5k-plan", "trail"],
        "removed": [],
        "started": {"five-k": 1},
        "stopped": {},
    }
    again = admin.post(f"{BASE}/ana@example.com/tags", json={"tags": ["5k-plan", "vip"]})
    assert again.json()["added"] == ["vip"] and again.json()["started"] == {}
    assert again.json()["tags"] == ["5k-plan", "trail", "vip"]
    assert enrollments(rt, "five-k") == {ana: ("active", "tag_added:5k-plan", 1)}


def test_a_tag_is_removed_by_address(rt: Runtime, admin: TestClient) -> None:
    ana = add_subscriber(rt, "ana@example.com", enroll_now=False)
    admin.post(f"{BASE}/ana@example.com/tags", json={"tags": ["5k-plan", "trail"]})
    removed = admin.delete(f"{BASE}/ana@example.com/tags/5k-plan")
    assert removed.status_code == 200, removed.text
    assert removed.json() == {
        "email": "ana@example.com",
        "tags": ["trail"],
        "added": [],
        "removed": ["5k-plan"],
        "started": {"comeback": 1},
        "stopped": {"five-k": 1},
    }
    assert enrollments(rt, "five-k") == {ana: ("stopped", "exit tag_removed:5k-plan", 1)}
    twice = admin.delete(f"{BASE}/ana@example.com/tags/5k-plan")
    assert twice.status_code == 200 and twice.json()["removed"] == []


def test_unknown_addresses_and_bad_tags_are_refused_by_name_with_nothing_stored(
    rt: Runtime, admin: TestClient
) -> None:
    add_subscriber(rt, "ana@example.com", enroll_now=False)
    unknown = admin.post(f"{BASE}/who@example.com/tags", json={"tags": ["5k-plan"]})
    assert "who@example.com" in _error(unknown, 404, "email")
    bad = admin.post(f"{BASE}/ana@example.com/tags", json={"tags": ["5k-plan", "Not OK!"]})
    assert "'Not OK!'" in _error(bad, 422, "tags")
    _error(admin.post(f"{BASE}/ana@example.com/tags", json={"tags": []}), 422, "tags")
    many = [f"t{i}" for i in range(21)]
    _error(admin.post(f"{BASE}/ana@example.com/tags", json={"tags": many}), 422, "tags")
    _error(admin.post(f"{BASE}/not-an-address/tags", json={"tags": ["x"]}), 422, "email")
    assert "'a b'" in _error(admin.delete(f"{BASE}/ana@example.com/tags/a b"), 422, "tag")
    _error(admin.delete(f"{BASE}/who@example.com/tags/5k-plan"), 404, "email")
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Tag)) == 0
    assert enrollments(rt, "five-k") == {}
    anonymous = client_for(rt).post(f"{BASE}/ana@example.com/tags", json={"tags": ["x"]})
    _error(anonymous, 401, "authorization")


def test_replacing_and_patching_tags_by_id_fire_the_same_events(
    rt: Runtime, admin: TestClient
) -> None:
    ana = add_subscriber(rt, "ana@example.com", enroll_now=False)
    assert admin.put(f"{BASE}/{ana}/tags", json={"tags": ["5k-plan"]}).status_code == 200
    assert enrollments(rt, "five-k") == {ana: ("active", "tag_added:5k-plan", 1)}
    patched = admin.patch(f"{BASE}/{ana}/tags", json={"remove": ["5k-plan"], "add": ["trail"]})
    assert patched.json()["tags"] == ["trail"]
    assert enrollments(rt, "five-k") == {ana: ("stopped", "exit tag_removed:5k-plan", 1)}
    assert enrollments(rt, "comeback") == {ana: ("active", "tag_removed:5k-plan", 1)}


def test_a_sequence_is_started_by_hand_only_if_it_says_manual(
    rt: Runtime, admin: TestClient
) -> None:
    ana = add_subscriber(rt, "ana@example.com", enroll_now=False)
    add_subscriber(rt, "dan@example.com", enroll_now=False, status=SubscriberStatus.PENDING)
    started = admin.post(f"{BASE}/ana@example.com/sequences/vip")
    assert started.status_code == 200, started.text
    body = started.json()
    assert (body["email"], body["sequence"], body["entry"]) == ("ana@example.com", "vip", 1)
    assert body["next_send_at"] is not None
    assert enrollments(rt, "vip") == {ana: ("active", "manual", 1)}
    assert "already" in _error(admin.post(f"{BASE}/ana@example.com/sequences/vip"), 409, "slug")
    not_manual = admin.post(f"{BASE}/ana@example.com/sequences/five-k")
    assert 'on = "manual"' in _error(not_manual, 409, "slug")
    assert "'nope'" in _error(admin.post(f"{BASE}/ana@example.com/sequences/nope"), 404, "slug")
    pending = admin.post(f"{BASE}/dan@example.com/sequences/vip")
    assert "pending" in _error(pending, 409, "email")
    _error(admin.post(f"{BASE}/who@example.com/sequences/vip"), 404, "email")
    assert enrollments(rt, "five-k") == {}


def test_the_routes_are_in_the_openapi_schema(rt: Runtime) -> None:
    paths = client_for(rt).get("/openapi.json").json()["paths"]
    assert "post" in paths[f"{BASE}/{{email}}/tags"]
    assert "delete" in paths[f"{BASE}/{{email}}/tags/{{tag}}"]
    assert "post" in paths[f"{BASE}/{{email}}/sequences/{{slug}}"]


# ------------------------------------------------------------------------------ purchases


def _order(**changes: Any) -> dict[str, Any]:
    order = {
        "email": "ana@example.com",
        "product": "runners-lab",
        "order_id": "ord_1",
        "amount": "197.00",
        "currency": "USD",
    }
    return {**order, **changes}


def test_a_purchase_ends_and_starts_the_sequences_that_name_its_product(
    rt: Runtime, admin: TestClient
) -> None:
    ana = add_subscriber(rt, "ana@example.com", enroll_now=False)
    admin.post(f"{BASE}/ana@example.com/tags", json={"tags": ["5k-plan"]})
    bought = post_purchase(admin, _order(product=" Runners-Lab "))
    assert bought.status_code == 200, bought.text
    assert enrollments(rt, "five-k") == {ana: ("stopped", "exit purchased:runners-lab", 1)}
    assert enrollments(rt, "welcome-lab") == {ana: ("active", "purchased:runners-lab", 1)}
    with rt.sessions() as session:
        assert session.scalars(select(Conversion.product)).all() == ["runners-lab"]
    with rt.transaction() as session:  # gone, so that a replay that started it would show
        session.execute(delete(Enrollment).where(Enrollment.sequence == "welcome-lab"))
    replay = post_purchase(admin, _order())
    assert replay.headers.get("x-drip-replay") == "true"
    assert enrollments(rt, "welcome-lab") == {}
    other = post_purchase(admin, _order(order_id="ord_2", product="shoes"))
    assert other.status_code == 200 and enrollments(rt, "welcome-lab") == {}


def test_a_purchase_by_a_stranger_starts_nothing_and_a_bad_product_is_refused(
    rt: Runtime, admin: TestClient
) -> None:
    stranger = post_purchase(admin, _order(email="who@example.com"))
    assert stranger.status_code == 200 and stranger.json()["subscriber_id"] is None
    assert enrollments(rt, "welcome-lab") == {}
    for product in ("The Runners Lab", "x" * 65, "-lab"):
        refused = post_purchase(admin, _order(order_id=f"o-{len(product)}", product=product))
        assert "product id" in _error(refused, 422, "product")
