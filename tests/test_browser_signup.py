"""The real thing in headless Chromium: fill the signup page, confirm, unsubscribe.

The app runs under uvicorn in a thread on 127.0.0.1 (a socket bound before the server starts, so
there is nothing to poll); the email backend is the in-memory one, from which the test takes the
links a person would click. Screenshots go to var/screenshots/, or to docs/screenshots/ for the
README with DRIP_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import Engine, select

from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.models import Consent, Enrollment
from drip.runtime import Runtime
from drip.web.app import create_app
from tests.conftest import START
from tests.web_support import (
    UNSUBSCRIBE_LINK,
    confirm_links,
    subscriber,
    web_settings,
    worker_inline,
)

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The README's screenshots are refreshed on request only (DRIP_UPDATE_SCREENSHOTS=1): a plain
# test run writes them under var/, so it never leaves the working tree changed.
_REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = (
    _REPO / "docs" / "screenshots"
    if os.environ.get("DRIP_UPDATE_SCREENSHOTS") == "1"
    else _REPO / "var" / "screenshots"
)


def _need_chromium() -> None:
    if shutil.which("chromium") or Path(CHROMIUM).exists():
        return
    message = "Debian's chromium is not installed (run `make browser`)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true: a missing browser is a failure")
    pytest.skip(message)


class LiveServer:
    def __init__(self, rt_for: object) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.rt: Runtime = rt_for(self.url)  # type: ignore[operator]
        config = uvicorn.Config(
            create_app(self.rt, enqueue=worker_inline(self.rt)),
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def live(sqlite_engine: Engine, tmp_path: Path) -> Iterator[tuple[LiveServer, MemoryBackend]]:
    backend = MemoryBackend()

    def build(url: str) -> Runtime:
        settings = web_settings(tmp_path, public_url=url)
        return Runtime.build(
            settings, engine=sqlite_engine, backend=backend, clock=FrozenClock(START)
        )

    with LiveServer(build) as server:
        yield server, backend


def test_signup_confirm_and_unsubscribe_in_a_real_browser(
    live: tuple[LiveServer, MemoryBackend],
) -> None:
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    server, backend = live
    rt = server.rt
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                timezone_id="Europe/Berlin", viewport={"width": 480, "height": 900}
            )
            page = context.new_page()
            page.set_default_timeout(15_000)

            # 1. The signup page: the browser fills the hidden time zone field itself.
            page.goto(f"{server.url}/signup")
            expect(page.locator("#timezone")).to_have_value("Europe/Berlin")
            page.get_by_label("Email address").fill("Runner.Ana@Example.com")
            page.get_by_label("First name").fill("Ana")
            page.screenshot(path=str(SCREENSHOTS / "signup.png"), full_page=True)
            page.get_by_role("button", name="Send me lesson 1").click()
            page.wait_for_url(f"{server.url}/thanks")
            expect(page.get_by_role("heading", level=1)).to_contain_text("check your inbox")
            with rt.sessions() as session:
                sub = subscriber(session, "runner.ana@example.com")
                assert (sub.status, sub.first_name, sub.time_zone) == (
                    "pending",
                    "Ana",
                    "Europe/Berlin",
                )
                consent = session.scalars(select(Consent)).one()
                assert consent.ip == "127.0.0.1"
                assert "Chrome" in (consent.user_agent or "")

            # 2. The link from the confirmation email.
            [link] = confirm_links(backend, "runner.ana@example.com")
            assert link.startswith(f"{server.url}/confirm/")
            page.goto(link)
            expect(page.get_by_role("heading", level=1)).to_have_text("You're in, Ana!")
            page.screenshot(path=str(SCREENSHOTS / "confirmed.png"), full_page=True)
            with rt.sessions() as session:
                assert subscriber(session, "runner.ana@example.com").status == "active"
                enrollment = session.scalars(select(Enrollment)).one()
                assert enrollment.next_send_at == START  # first lesson due at once

            # 3. The unsubscribe link of the same email: change a preference, then leave.
            [email] = backend.sent_to("runner.ana@example.com")
            unsubscribe = UNSUBSCRIBE_LINK.search(email.text)
            assert unsubscribe is not None
            page.goto(unsubscribe.group(0).replace(rt.settings.public_url, server.url))
            expect(page.get_by_label("Course emails", exact=False)).to_be_checked()
            page.screenshot(path=str(SCREENSHOTS / "unsubscribe.png"), full_page=True)
            page.get_by_label("Newsletter", exact=False).uncheck()
            page.get_by_role("button", name="Save my choices").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Your choices are saved")
            with rt.sessions() as session:
                sub = subscriber(session, "runner.ana@example.com")
                assert (sub.status, sub.course_emails, sub.newsletter) == ("active", True, False)

            page.get_by_role("link", name="Change them again").click()
            page.get_by_role("button", name="Unsubscribe from everything").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("You're unsubscribed")
            with rt.sessions() as session:
                assert subscriber(session, "runner.ana@example.com").status == "unsubscribed"
                enrollment = session.scalars(select(Enrollment)).one()
                assert enrollment.status == "stopped"

            # A mistake is one click away from being undone.
            page.get_by_role("button", name="Resubscribe").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Welcome back!")
            with rt.sessions() as session:
                assert subscriber(session, "runner.ana@example.com").status == "active"
            context.close()
        finally:
            browser.close()
