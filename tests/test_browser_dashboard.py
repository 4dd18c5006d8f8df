"""The dashboard in headless Chromium: sign in, read the pages, compose, test, schedule, cancel.

One browser and one live server for the module (the app under uvicorn in a thread, as in
tests/test_browser_signup.py), on a SQLite file seeded with a few subscribers who were sent
their first lesson. Screenshots of the main pages go where tests/test_browser_signup.py puts
its own (docs/screenshots/ for the README with DRIP_UPDATE_SCREENSHOTS=1). With
CI=true a missing Chromium fails the tests instead of skipping them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from drip.clock import FrozenClock
from drip.db import make_engine
from drip.engine.consent import record_consent
from drip.esp.memory import MemoryBackend
from drip.migrate import upgrade
from drip.models import Broadcast, Subscriber
from drip.runtime import Runtime
from drip.subscribers.store import add_tags
from tests.conftest import START
from tests.dashboard_support import ADMIN_EMAIL, ADMIN_PASSWORD, dashboard_settings, make_admin
from tests.helpers import add_subscriber, run_tick
from tests.test_browser_signup import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SCREENSHOTS,
    LiveServer,
    _need_chromium,
)
from tests.web_support import subscriber

pytestmark = pytest.mark.browser
PEOPLE = [
    ("ana.runner@example.com", "Ana", ["5k"]),
    ("bea.trails@example.com", "Bea", ["trail", "5k"]),
    ("carl@example.com", "Carl", []),
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("dashboard")
    engine = make_engine(f"sqlite:///{tmp / 'drip.sqlite3'}")
    upgrade(engine)

    def build(url: str) -> Runtime:
        settings = dashboard_settings(tmp, public_url=url)
        return Runtime.build(
            settings, engine=engine, backend=MemoryBackend(), clock=FrozenClock(START)
        )

    with LiveServer(build) as server:
        rt = server.rt
        make_admin(rt)
        for email, name, tags in PEOPLE:
            add_subscriber(rt, email, name=name, zone="Europe/Berlin")
            with rt.transaction() as session:
                add_tags(session, subscriber(session, email), tags)
                for action in ("signup", "confirm"):
                    record_consent(
                        session,
                        subscriber(session, email),
                        action,
                        START,
                        source="form",
                        ip="203.0.113.7",
                        user_agent="Mozilla/5.0 (iPhone) Safari/604.1",
                        text=rt.settings.consent_text if action == "signup" else "",
                    )
        run_tick(rt)
        yield server
    engine.dispose()


@pytest.fixture(scope="module")
def browser(live: LiveServer) -> Iterator[Any]:
    _need_chromium()
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, live: LiveServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    try:
        yield tab
    finally:
        context.close()


def sign_in(page: Any, live: LiveServer, password: str = ADMIN_PASSWORD) -> None:
    page.goto(f"{live.url}/admin/login")
    page.get_by_label("Email address").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def test_refused_without_the_right_password_a_session_or_a_csrf_token(
    page: Any, live: LiveServer
) -> None:
    from playwright.sync_api import expect

    page.goto(f"{live.url}/admin/subscribers")  # no session: the sign-in page
    expect(page).to_have_url(f"{live.url}/admin/login?next=/admin/subscribers")
    unauthenticated = page.request.get(f"{live.url}/admin/api/broadcasts/1/progress")
    assert unauthenticated.status == 401

    sign_in(page, live, password="not the right password")
    expect(page.get_by_role("alert")).to_contain_text("don't match an account")
    shot(page, "dashboard-login.png")

    sign_in(page, live)
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview")
    status = page.evaluate(
        "fetch('/admin/api/broadcasts/audience', {method: 'POST'}).then(r => r.status)"
    )
    assert status == 403  # signed in, but no CSRF token
    page.goto(f"{live.url}/admin/broadcasts/new")
    page.evaluate("document.querySelector('#compose [name=csrf_token]').remove()")
    page.get_by_label("Subject", exact=True).fill("No token")
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_role("alert")).to_contain_text("This form has expired")
    with live.rt.sessions() as session:
        assert session.scalars(select(Broadcast)).all() == []


def test_overview_course_and_a_lesson_preview(page: Any, live: LiveServer) -> None:
    from playwright.sync_api import expect

    sign_in(page, live)
    expect(page.get_by_role("heading", level=1)).to_have_text("Overview")
    expect(page.locator(".card", has_text="active")).to_contain_text("3")
    expect(page.get_by_role("img", name="The course funnel")).to_be_visible()
    shot(page, "dashboard-overview.png")

    page.get_by_role("link", name="The course").click()
    expect(page.get_by_text("Lesson check: every lesson passes.")).to_be_visible()
    shot(page, "dashboard-course.png")

    first = live.rt.course().lessons[0]
    page.get_by_role("link", name=first.subject).click()
    frame = page.frame_locator("iframe.email")
    expect(frame.locator("body")).to_contain_text("Hi Sam,")
    expect(page.locator("pre.text")).to_contain_text("Hi Sam,")
    shot(page, "dashboard-lesson.png")

    phone = page.context.browser.new_context(viewport={"width": 390, "height": 844})
    try:
        small = phone.new_page()
        small.goto(page.url.replace(page.url.split("/admin")[1], ""))  # the overview
        sign_in(small, live)
        expect(small.get_by_role("heading", level=1)).to_have_text("Overview")
        width = small.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, "the overview scrolls sideways on a phone"
        shot(small, "dashboard-phone.png")
    finally:
        phone.close()


def test_find_a_subscriber_and_read_their_page(page: Any, live: LiveServer) -> None:
    from playwright.sync_api import expect

    sign_in(page, live)
    page.get_by_role("link", name="Subscribers").click()
    page.get_by_label("Email or name contains").fill("trails")
    page.get_by_label("Tag").select_option("5k")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("link", name="bea.trails@example.com")).to_be_visible()
    expect(page.get_by_role("link", name="ana.runner@example.com")).to_have_count(0)
    shot(page, "dashboard-subscribers.png")

    page.get_by_role("link", name="bea.trails@example.com").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("bea.trails@example.com")
    # The progress line and the enrollment's history both say where she is.
    expect(page.get_by_text("1 of 7 emails")).to_have_count(2)
    expect(page.get_by_text("1 of 7 emails").first).to_be_visible()
    expect(page.get_by_role("cell", name="email glute-accelerator/1")).to_be_visible()
    shot(page, "dashboard-subscriber.png")


def test_compose_send_a_test_schedule_and_cancel_a_broadcast(page: Any, live: LiveServer) -> None:
    from playwright.sync_api import expect

    rt = live.rt
    backend = rt.backend
    assert isinstance(backend, MemoryBackend)
    sign_in(page, live)
    page.get_by_role("link", name="Broadcasts").click()
    page.get_by_role("link", name="Write a broadcast").click()

    page.get_by_label("Subject", exact=True).fill("Race week, {{ first_name }}")
    page.get_by_label("Preheader").fill("How to taper without losing your glutes.")
    page.get_by_label("Message, in Markdown").fill(
        "Hi {{ first_name }},\n\nRace week: keep **two** short drills and rest the rest.\n"
    )
    page.get_by_label("Has any of these tags").fill("5k")
    page.get_by_label("Has any of these tags").press("Tab")  # a rule counts when left
    expect(page.locator("#audience-count")).to_contain_text("2 subscribers")
    frame = page.frame_locator("#preview-frame")
    expect(frame.locator("body")).to_contain_text("Race week: keep two short drills")
    expect(frame.locator("body")).to_contain_text("Hi Ana,")  # the segment's first subscriber
    shot(page, "dashboard-broadcast-compose.png")
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_role("status").first).to_contain_text("Draft saved")
    with rt.sessions() as session:
        b = session.scalars(select(Broadcast)).one()
        assert (b.status, b.segment) == ("draft", {"tags_any": ["5k"]})

    page.get_by_label("To (up to 10 addresses").fill("coach.inbox@example.com")
    page.get_by_role("button", name="Send the test").click()
    expect(page.get_by_role("status").first).to_contain_text("Test sent")
    [test_email] = backend.sent_to("coach.inbox@example.com")
    assert test_email.subject.startswith("[TEST] Race week")

    page.get_by_label("Date and time").fill("2026-03-05T09:00")
    page.get_by_label("Each subscriber's own time zone").check()
    page.get_by_role("button", name="Schedule", exact=True).click()
    expect(page.locator("#status-badge")).to_have_text("scheduled")
    expect(page.get_by_text("At 2026-03-05 09:00 in each subscriber")).to_be_visible()
    expect(page.locator("#audience-count")).to_contain_text("2 subscribers")  # the saved one
    shot(page, "dashboard-broadcast.png")

    page.get_by_role("button", name="Cancel the broadcast").click()  # the box is not ticked
    with rt.sessions() as session:
        assert session.scalars(select(Broadcast.status)).one() == "scheduled"
    page.get_by_label("Yes, stop this broadcast for good").check()
    page.get_by_role("button", name="Cancel the broadcast").click()
    expect(page.locator("#status-badge")).to_have_text("cancelled")
    with rt.sessions() as session:
        assert session.scalars(select(Broadcast.status)).one() == "cancelled"
        assert session.scalar(select(Subscriber.id).limit(1)) is not None
