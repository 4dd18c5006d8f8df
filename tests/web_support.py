"""Helpers shared by the web and subscriber tests (plain functions, not fixtures).

Test modules override the ``settings`` fixture with :func:`web_settings`, so conftest's ``rt``
fixture builds a runtime with API tokens, a webhook secret and the Redis rate limits off (the
rate-limit tests turn them on against the real Redis).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from drip.engine.dispatch import send_deliveries
from drip.esp.memory import MemoryBackend
from drip.models import Subscriber
from drip.runtime import Runtime
from drip.settings import Settings
from drip.web.app import create_app
from tests.conftest import make_settings

ADMIN_TOKEN = "admin-token-0123456789abcdef"
API_TOKEN = "api-token-0123456789abcdef"
WEBHOOK_SECRET = "webhook-secret-0123456789abcdef"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) DripTest/1.0"
CONFIRM_LINK = re.compile(r"https?://[^\s\"'<>]+/confirm/[A-Za-z0-9._-]+")
UNSUBSCRIBE_LINK = re.compile(r"https?://[^\s\"'<>]+/unsubscribe/[A-Za-z0-9._-]+")


def web_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "signup_rate_limit": 0,
        "api_rate_limit": 0,
        "admin_tokens": ADMIN_TOKEN,
        "api_tokens": API_TOKEN,
        "webhook_secret": WEBHOOK_SECRET,
        "redis_url": "redis://127.0.0.1:6379/15",
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


def worker_inline(rt: Runtime) -> Callable[[list[int]], None]:
    """The app's hand-over to the workers, done in-process: what a worker would do at once."""

    def send(ids: list[int]) -> None:
        send_deliveries(rt, ids, rt.clock())

    return send


def client_for(rt: Runtime) -> TestClient:
    app = create_app(rt, enqueue=worker_inline(rt))
    return TestClient(app, follow_redirects=False, headers={"User-Agent": BROWSER_UA})


def form_signup(client: TestClient, **fields: str) -> Any:
    return client.post("/subscribe", data=fields)


def path_of(url: str) -> str:
    return urlsplit(url).path


def confirm_links(backend: MemoryBackend, email: str) -> list[str]:
    """The confirmation links sent to ``email``, oldest first (from the plain-text part)."""
    return [m.group(0) for s in backend.sent_to(email) for m in CONFIRM_LINK.finditer(s.text)]


def last_confirm_path(backend: MemoryBackend, email: str) -> str:
    links = confirm_links(backend, email)
    assert links, f"no confirmation email to {email}"
    return path_of(links[-1])


def subscriber(session: Session, email: str) -> Subscriber:
    sub = session.scalar(select(Subscriber).where(Subscriber.email == email))
    assert sub is not None, f"no subscriber {email}"
    return sub


def count(session: Session, model: Any, *where: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def same_page(text: str) -> str:
    """A page with its per-response parts (CSP nonce, request id) blanked, for comparisons."""
    text = re.sub(r'nonce="[^"]+"', 'nonce=""', text)
    return re.sub(r"Reference: [0-9a-f]+", "Reference:", text)
