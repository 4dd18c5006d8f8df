"""Claims about the public web routes' rate limits and client addresses (docs/subscribers.md,
"Rate limit", the JSON webhook's answers; docs/deploy.md, ``DRIP_FORWARDED_ALLOW_IPS``).

Every other web test turns the limits off (``web_settings`` sets them to 0); here they are on,
small, and counted in the real Redis (the test database, emptied around each test).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import select

from drip.cli.subscribers import server_options
from drip.clock import FrozenClock
from drip.models import Consent, Subscriber, SubscriberStatus
from drip.runtime import Runtime
from drip.settings import Settings
from drip.web.app import create_app
from tests.helpers import add_subscriber
from tests.web_support import (
    API_TOKEN,
    BROWSER_UA,
    client_for,
    path_of,
    web_settings,
    worker_inline,
)

SIGNUP_LIMIT = 3
API_LIMIT = 2
WINDOW = 600
PROXY = "10.0.0.1"  # the one peer trusted for X-Forwarded-For
VISITOR = "198.51.100.7"
CLAIMED = "203.0.113.9"


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return web_settings(
        tmp_path,
        redis_url=redis_url,
        signup_rate_limit=SIGNUP_LIMIT,
        api_rate_limit=API_LIMIT,
        rate_limit_window_seconds=WINDOW,
        forwarded_allow_ips=PROXY,
    )


@pytest.fixture(autouse=True)
def empty_counters(broker: str) -> Iterator[None]:
    """The rate-limit counters start at zero (the broker fixture empties the Redis test db)."""
    yield


def _api_signup(web: TestClient, email: str) -> Any:
    return web.post(
        "/api/v1/subscribers",
        json={"email": email},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )


def _known(rt: Runtime, email: str) -> bool:
    with rt.sessions() as session:
        return session.scalar(select(Subscriber.id).where(Subscriber.email == email)) is not None


def _retry_after_expected(clock: FrozenClock) -> int:
    return WINDOW - int(clock().timestamp()) % WINDOW


# --------------------------------------------------------------------------- the JSON webhook


def test_the_json_webhook_answers_429_with_retry_after_over_its_limit(
    rt: Runtime, clock: FrozenClock
) -> None:
    clock.advance(timedelta(seconds=125))  # into the window: Retry-After is what is left of it
    web = client_for(rt)
    accepted = [_api_signup(web, f"api{n}@example.com").status_code for n in range(API_LIMIT)]

    over = _api_signup(web, "over@example.com")

    assert accepted == [202] * API_LIMIT
    assert over.status_code == 429
    assert int(over.headers["retry-after"]) == _retry_after_expected(clock) == WINDOW - 125
    assert over.json()["error"]["message"]
    assert not _known(rt, "over@example.com")  # refused before anything was stored
    clock.advance(timedelta(seconds=int(over.headers["retry-after"])))
    assert _api_signup(web, "over@example.com").status_code == 202  # a new window
    assert _known(rt, "over@example.com")


# --------------------------------------------------------------------------- confirm, unsubscribe


def test_asking_for_a_new_confirmation_link_is_rate_limited(
    rt: Runtime, clock: FrozenClock
) -> None:
    web = client_for(rt)
    answers = [
        web.post("/confirm/resend", data={"email": f"r{n}@example.com"}).status_code
        for n in range(SIGNUP_LIMIT)
    ]

    over = web.post("/confirm/resend", data={"email": "again@example.com"})

    assert answers == [200] * SIGNUP_LIMIT
    assert over.status_code == 429
    assert int(over.headers["retry-after"]) == _retry_after_expected(clock)


def test_unsubscribe_links_are_never_rate_limited(rt: Runtime) -> None:
    subscriber_id = add_subscriber(rt, "ana@example.com")
    link = path_of(rt.unsubscribe_url(subscriber_id))
    web = client_for(rt)
    # This client is over both limits first.
    resends = [
        web.post("/confirm/resend", data={"email": "x@example.com"})
        for _ in range(SIGNUP_LIMIT + 1)
    ]
    api_calls = [_api_signup(web, "y@example.com") for _ in range(API_LIMIT + 1)]
    assert resends[-1].status_code == api_calls[-1].status_code == 429
    hammer = 4 * max(SIGNUP_LIMIT, API_LIMIT)

    pages = [web.get(link) for _ in range(hammer)]
    clicks = [web.post(link, content=b"List-Unsubscribe=One-Click") for _ in range(hammer)]

    assert {page.status_code for page in pages} == {200}
    assert {click.status_code for click in clicks} == {200}
    assert "retry-after" not in clicks[-1].headers
    with rt.sessions() as session:
        sub = session.get(Subscriber, subscriber_id)
        assert sub is not None and sub.status == SubscriberStatus.UNSUBSCRIBED


# --------------------------------------------------------------------------- X-Forwarded-For


def _served(rt: Runtime, peer: str) -> TestClient:
    """The app as ``drip serve`` runs it (uvicorn with its options), called from ``peer``."""
    config = uvicorn.Config(
        create_app(rt, enqueue=worker_inline(rt)), **server_options(rt.settings)
    )
    config.load()
    return TestClient(
        config.loaded_app,
        client=(peer, 50000),
        follow_redirects=False,
        headers={"User-Agent": BROWSER_UA},
    )


def _signup_ip(rt: Runtime, email: str) -> str | None:
    with rt.sessions() as session:
        return session.scalar(
            select(Consent.ip)
            .join(Subscriber, Subscriber.id == Consent.subscriber_id)
            .where(Subscriber.email == email, Consent.action == "signup")
        )


def _post(web: TestClient, email: str, forwarded_for: str) -> int:
    """A form signup claiming to come from ``forwarded_for``; the status code."""
    headers = {"X-Forwarded-For": forwarded_for}
    return int(web.post("/subscribe", data={"email": email}, headers=headers).status_code)


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(rt: Runtime) -> None:
    web = _served(rt, VISITOR)

    first = _post(web, "first@example.com", CLAIMED)
    # A new claimed address each time: still one client, the peer.
    rest = [_post(web, f"n{n}@example.com", f"192.0.2.{n}") for n in range(SIGNUP_LIMIT)]

    assert first == 303
    assert _signup_ip(rt, "first@example.com") == VISITOR
    assert rest == [303] * (SIGNUP_LIMIT - 1) + [429]


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(rt: Runtime) -> None:
    web = _served(rt, PROXY)

    answers = [_post(web, f"c{n}@example.com", CLAIMED) for n in range(SIGNUP_LIMIT + 1)]
    other_client = _post(web, "other@example.com", VISITOR)

    assert _signup_ip(rt, "c0@example.com") == CLAIMED
    assert answers == [303] * SIGNUP_LIMIT + [429]  # counted per forwarded client...
    assert other_client == 303  # ... not for the proxy as a whole
    assert _signup_ip(rt, "other@example.com") == VISITOR
