"""Helpers of the dashboard tests (plain functions): accounts, signing in, CSRF tokens.

The test settings have an https public URL, so the session cookie is ``Secure`` and
``__Host-``-prefixed: the client talks to ``https://testserver`` for the browser to send it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from drip.runtime import Runtime
from drip.settings import Settings
from drip.web.app import create_app
from drip.web.dashboard.users import create_user
from tests.web_support import BROWSER_UA, web_settings, worker_inline

ADMIN_EMAIL = "coach@example.com"
ADMIN_PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def dashboard_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return web_settings(tmp_path, **overrides)


def make_admin(rt: Runtime, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> None:
    with rt.transaction() as session:
        create_user(session, email, password, rt.clock())


def client(rt: Runtime) -> TestClient:
    return TestClient(
        create_app(rt, enqueue=worker_inline(rt)),
        base_url="https://testserver",
        follow_redirects=False,
        headers={"User-Agent": BROWSER_UA},
    )


def form_token(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no csrf_token field on the page"
    return found.group(1)


def page_token(html: str) -> str:
    found = _META.search(html)
    assert found, "no csrf-token meta on the page"
    return found.group(1)


def sign_in(http: TestClient, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> Any:
    """Load the sign-in page and post it; the response of the post."""
    token = form_token(http.get("/admin/login").text)
    return http.post(
        "/admin/login", data={"email": email, "password": password, "csrf_token": token}
    )


def signed_in(rt: Runtime) -> tuple[TestClient, str]:
    """A client with a session, and the session's CSRF token."""
    make_admin(rt)
    http = client(rt)
    answer = sign_in(http)
    assert answer.status_code == 303, answer.text
    return http, page_token(http.get("/admin/broadcasts").text)  # a page without cached figures
