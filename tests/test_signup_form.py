"""POST /subscribe: the HTML form of the coach's site, and the per-IP rate limit (real Redis)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from drip.esp.memory import MemoryBackend
from drip.models import Consent, Delivery, Subscriber, SubscriberStatus
from drip.runtime import Runtime
from drip.settings import Settings
from drip.suppress import suppress
from drip.web.app import create_app
from drip.web.ratelimit import KEY_PREFIX, RateLimiter, client_key
from tests.conftest import make_settings
from tests.web_support import (
    BROWSER_UA,
    client_for,
    confirm_links,
    count,
    form_signup,
    subscriber,
    web_settings,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return web_settings(tmp_path)


def test_the_signup_page_has_the_form_fields_and_the_consent_text(rt: Runtime) -> None:
    page = client_for(rt).get("/signup")
    assert page.status_code == 200
    for field in ('name="email"', 'name="first_name"', 'name="timezone"', 'name="website"'):
        assert field in page.text
    assert rt.settings.consent_text in page.text
    assert "resolvedOptions().timeZone" in page.text
    assert "nonce-" in page.headers["content-security-policy"]
    assert client_for(rt).get("/").status_code == 200


def test_a_form_post_redirects_to_thanks_and_sends_the_confirmation_at_once(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    client = client_for(rt)
    answer = form_signup(
        client,
        email=" Ana@Example.COM ",
        first_name="Ana",
        timezone="Europe/Berlin",
        tags="hip drills, Beginner",
        source="homepage-footer",
    )
    assert answer.status_code == 303
    assert answer.headers["location"].endswith("/thanks")
    assert "check your inbox" in client.get("/thanks").text.lower()
    with rt.sessions() as session:
        sub = subscriber(session, "ana@example.com")
        assert (sub.status, sub.first_name, sub.time_zone, sub.source) == (
            SubscriberStatus.PENDING,
            "Ana",
            "Europe/Berlin",
            "homepage-footer",
        )
        assert sorted(t.name for t in sub.tags) == ["beginner", "hip drills"]
        consent = session.scalars(select(Consent)).one()
        assert consent.user_agent == BROWSER_UA
        assert consent.text == rt.settings.consent_text
        assert consent.source == "form:homepage-footer"
        assert consent.created_at == rt.clock()
        delivery = session.scalars(select(Delivery)).one()
        assert delivery.status == "sent"
    [email] = memory_backend.sent_to("ana@example.com")
    assert email.subject == "Please confirm your subscription"
    assert len(confirm_links(memory_backend, "ana@example.com")) == 1


def test_a_configured_thank_you_url_gets_the_redirect(tmp_path: Path, rt: Runtime) -> None:
    settings = web_settings(tmp_path, thank_you_url="https://coach.example/thank-you")
    other = Runtime.build(settings, engine=rt.engine, backend=rt.backend, clock=rt.clock)
    answer = form_signup(client_for(other), email="ana@example.com")
    assert (answer.status_code, answer.headers["location"]) == (
        303,
        "https://coach.example/thank-you",
    )


def test_the_same_address_twice_gets_the_same_answer_and_no_duplicate(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    client = client_for(rt)
    first = form_signup(client, email="ana@example.com")
    second = form_signup(client, email="ANA@example.com")
    assert (first.status_code, first.headers["location"]) == (
        second.status_code,
        second.headers["location"],
    )
    with rt.sessions() as session:
        assert count(session, Subscriber) == 1
    assert len(memory_backend.sent_to("ana@example.com")) == 1


def test_an_active_or_suppressed_address_gets_the_same_answer_and_no_email(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    client = client_for(rt)
    form_signup(client, email="ana@example.com")
    with rt.transaction() as session:
        subscriber(session, "ana@example.com").status = SubscriberStatus.ACTIVE
        suppress(session, "bounced@example.com", "bounce")
    memory_backend.clear()
    new = form_signup(client, email="new@example.com")
    active = form_signup(client, email="ana@example.com")
    blocked = form_signup(client, email="bounced@example.com")
    for answer in (active, blocked):
        assert answer.status_code == new.status_code == 303
        assert answer.headers["location"] == new.headers["location"]
        assert answer.text == new.text
    assert [s.to for s in memory_backend.outbox] == ["new@example.com"]
    with rt.sessions() as session:
        assert count(session, Subscriber, Subscriber.email == "bounced@example.com") == 0


def test_the_honeypot_pretends_success_and_stores_nothing(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    answer = form_signup(client_for(rt), email="bot@example.com", website="http://spam.example")
    assert answer.status_code == 303 and answer.headers["location"].endswith("/thanks")
    with rt.sessions() as session:
        assert count(session, Subscriber) == 0
        assert count(session, Consent) == 0
    assert memory_backend.outbox == []


@pytest.mark.parametrize(
    ("fields", "field", "label"),
    [
        ({"email": "not-an-address"}, "email", "Email"),
        ({"email": ""}, "email", "Email"),
        ({"first_name": "Ana"}, "email", "Email"),
        ({"email": "ana@example.com\r\nBcc: all@example.org"}, "email", "Email"),
        (
            {"email": "a@example.com", "first_name": "Ana\r\nBcc: x@example.org"},
            "first_name",
            "First name",
        ),
        ({"email": "a@example.com", "first_name": "A" * 101}, "first_name", "First name"),
        ({"email": "a@example.com", "tags": "t" * 65}, "tags", "Tags"),
        ({"email": "a@example.com", "source": "<script>"}, "source", "Source"),
    ],
)
def test_invalid_fields_get_a_400_page_naming_the_field_and_nothing_is_stored(
    rt: Runtime, fields: dict[str, str], field: str, label: str
) -> None:
    answer = form_signup(client_for(rt), **fields)
    assert answer.status_code == 400
    assert f"<strong>{label}</strong>" in answer.text
    assert 'role="alert"' in answer.text
    with rt.sessions() as session:
        assert count(session, Subscriber) == 0


def test_the_error_page_escapes_what_was_typed(rt: Runtime) -> None:
    answer = form_signup(
        client_for(rt), email='"><script>alert(1)</script>', first_name="<img src=x onerror=1>"
    )
    assert answer.status_code == 400
    assert "<script>alert(1)</script>" not in answer.text
    assert "<img src=x" not in answer.text
    assert "&lt;img src=x onerror=1&gt;" in answer.text


def test_html_in_a_name_is_stored_as_text_and_escaped_in_the_email(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    form_signup(client_for(rt), email="ana@example.com", first_name="<b>Ana</b> & co")
    with rt.sessions() as session:
        assert subscriber(session, "ana@example.com").first_name == "<b>Ana</b> & co"
    [email] = memory_backend.sent_to("ana@example.com")
    assert "<b>Ana</b>" not in email.html
    assert "&lt;b&gt;Ana&lt;/b&gt; &amp; co" in email.html


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"email": "ana@example.com"}'),
        ("text/plain", b"email=ana@example.com"),
        ("application/xml", b"<email>ana@example.com</email>"),
        (None, b"email=ana@example.com"),
    ],
)
def test_a_wrong_content_type_gets_415_with_a_clear_message(
    rt: Runtime, content_type: str | None, body: bytes
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    answer = client_for(rt).post("/subscribe", content=body, headers=headers)
    assert answer.status_code == 415
    assert "application/x-www-form-urlencoded" in answer.text
    with rt.sessions() as session:
        assert count(session, Subscriber) == 0


def test_multipart_form_posts_are_accepted_too(rt: Runtime) -> None:
    answer = client_for(rt).post(
        "/subscribe", files={"email": (None, "ana@example.com"), "first_name": (None, "Ana")}
    )
    assert answer.status_code == 303
    with rt.sessions() as session:
        assert subscriber(session, "ana@example.com").first_name == "Ana"


def test_oversized_bodies_are_refused_before_parsing(rt: Runtime) -> None:
    big = "x" * (rt.settings.max_body_bytes + 1)
    answer = client_for(rt).post("/subscribe", data={"email": "a@example.com", "first_name": big})
    assert answer.status_code == 413
    with rt.sessions() as session:
        assert count(session, Subscriber) == 0


def test_an_unreachable_worker_queue_still_thanks_the_visitor_and_leaves_the_row_queued(
    rt: Runtime,
) -> None:
    def broker_down(ids: list[int]) -> None:
        raise ConnectionError("redis gone")

    app = create_app(rt, enqueue=broker_down)
    client = TestClient(app, follow_redirects=False, headers={"User-Agent": BROWSER_UA})
    answer = form_signup(client, email="ana@example.com")
    assert answer.status_code == 303
    with rt.sessions() as session:
        # Beat's stale-queue pass hands it to the workers later: nothing is lost.
        assert session.scalars(select(Delivery.status)).one() == "queued"


def test_the_form_hands_the_confirmation_to_the_workers_and_never_sends_it_itself(
    rt: Runtime, memory_backend: MemoryBackend
) -> None:
    handed: list[list[int]] = []
    app = create_app(rt, enqueue=handed.append)
    client = TestClient(app, follow_redirects=False, headers={"User-Agent": BROWSER_UA})
    assert form_signup(client, email="ana@example.com").status_code == 303
    with rt.sessions() as session:
        delivery_id = session.scalars(select(Delivery.id)).one()
    assert handed == [[delivery_id]]
    assert memory_backend.outbox == []  # the request itself sent nothing


# -- rate limit, against the real Redis -----------------------------------------------------


@pytest.fixture
def limited_rt(tmp_path: Path, rt: Runtime, redis_url: str) -> Runtime:
    settings = web_settings(
        tmp_path, redis_url=redis_url, signup_rate_limit=3, rate_limit_window_seconds=600
    )
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{KEY_PREFIX}:*"):
        client.delete(key)
    client.close()
    return Runtime.build(settings, engine=rt.engine, backend=rt.backend, clock=rt.clock)


@pytest.mark.redis
def test_the_fourth_post_from_one_ip_in_a_window_gets_429_with_retry_after(
    limited_rt: Runtime, clock: object
) -> None:
    client = client_for(limited_rt)
    codes = [form_signup(client, email=f"u{i}@example.com").status_code for i in range(4)]
    assert codes == [303, 303, 303, 429]
    blocked = form_signup(client, email="u9@example.com")
    assert blocked.status_code == 429
    # START is midnight UTC, a multiple of 600 s: the window ends 600 s later.
    assert blocked.headers["retry-after"] == "600"
    with limited_rt.sessions() as session:
        assert count(session, Subscriber) == 3
    clock.advance(timedelta(seconds=600))  # type: ignore[attr-defined]
    assert form_signup(client, email="u5@example.com").status_code == 303


@pytest.mark.redis
def test_the_limit_is_per_client_ip(redis_url: str, clock: object) -> None:
    limiter = RateLimiter(redis_url, 600, clock)  # type: ignore[arg-type]
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{KEY_PREFIX}:test:*"):
        client.delete(key)
    assert limiter.hit("test", "203.0.113.1", 1) is None
    assert limiter.hit("test", "203.0.113.1", 1) is not None
    assert limiter.hit("test", "203.0.113.2", 1) is None
    # One IPv6 /64 is one client.
    assert limiter.hit("test", "2001:db8::1", 1) is None
    assert limiter.hit("test", "2001:db8::2", 1) is not None
    assert client_key("2001:db8::2") == "2001:db8::/64"
    assert client.ttl(limiter.key("test", "203.0.113.1")) > 0
    client.close()
    limiter.close()


def test_with_redis_down_the_limit_fails_open_and_logs(
    tmp_path: Path, rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, redis_url="redis://127.0.0.1:1/0", signup_rate_limit=1)
    down = Runtime.build(settings, engine=rt.engine, backend=rt.backend, clock=rt.clock)
    client = client_for(down)
    codes = [form_signup(client, email=f"u{i}@example.com").status_code for i in range(3)]
    assert codes == [303, 303, 303]
    assert "Redis unreachable" in caplog.text


def test_the_documented_form_snippet_posts_fields_this_route_takes(rt: Runtime) -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "subscribers.md").read_text()
    snippet = docs.split("```html", 1)[1].split("```", 1)[0]
    assert 'action="https://drip.example.com/subscribe"' in snippet
    assert 'method="post"' in snippet
    assert "Intl.DateTimeFormat().resolvedOptions().timeZone" in snippet
    names = set(re.findall(r'name="([a-z_]+)"', snippet))
    assert names == {"email", "first_name", "timezone", "source", "tags", "website"}
    answer = form_signup(
        client_for(rt),
        email="ana@example.com",
        first_name="Ana",
        timezone="Europe/Berlin",
        source="homepage-footer",
        tags="glute-course",
        website="",
    )
    assert answer.status_code == 303
    with rt.sessions() as session:
        assert subscriber(session, "ana@example.com").source == "homepage-footer"
