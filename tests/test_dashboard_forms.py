"""The dashboard's Forms page: each form with its tags, sequence, HTML snippet and figures.

Each test runs on SQLite and PostgreSQL, signed in through the real sign-in form.
"""

from __future__ import annotations

import html
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from drip.clock import FrozenClock
from drip.models import SubscriberStatus
from drip.runtime import Runtime
from drip.settings import Settings
from drip.subscribers.queries import FormCount, form_counts
from tests.conftest import REPO
from tests.dashboard_support import dashboard_settings, signed_in
from tests.helpers import add_subscriber
from tests.web_support import client_for, subscriber

WAITLIST = """name = "Runners Lab <waitlist>"
tags = ["waitlist", "vip"]
sequence = "runners-lab-upsell"
"""
SNIPPET = re.compile(
    r'<textarea id="snippet-(?P<slug>[a-z0-9-]+)"[^>]*>(?P<code>.*?)</textarea>', re.S
)
INPUT = re.compile(r'<input[^>]*\bname="(?P<name>[a-z_]+)"(?:[^>]*\bvalue="(?P<value>[^"]*)")?')


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    forms = tmp_path / "forms"
    shutil.copytree(REPO / "content" / "forms", forms)
    (forms / "waitlist.toml").write_text(WAITLIST, encoding="utf-8")
    return dashboard_settings(tmp_path, forms_dir=forms)


@pytest.fixture
def http(rt: Runtime) -> TestClient:
    signed, _ = signed_in(rt)
    return signed


def _people(rt: Runtime) -> None:
    """Three waitlist signups (two confirmed), one default signup, one from before forms."""
    for email, form, status in [
        ("ana@example.com", "waitlist", SubscriberStatus.ACTIVE),
        ("bob@example.com", "waitlist", SubscriberStatus.UNSUBSCRIBED),
        ("cleo@example.com", "waitlist", SubscriberStatus.PENDING),
        ("dan@example.com", "default", SubscriberStatus.PENDING),
        ("eve@example.com", None, SubscriberStatus.ACTIVE),
        ("fay@example.com", "race-day", SubscriberStatus.ACTIVE),  # a form since removed
    ]:
        add_subscriber(rt, email, status=status, enroll_now=False)
        with rt.transaction() as session:
            sub = subscriber(session, email)
            sub.form = form
            if status == SubscriberStatus.PENDING:
                sub.confirmed_at = None


def test_form_counts_are_one_grouped_count_per_form(rt: Runtime) -> None:
    _people(rt)
    with rt.sessions() as session:
        assert form_counts(session) == {
            "waitlist": FormCount(3, 2),
            "default": FormCount(1, 0),
            None: FormCount(1, 1),
            "race-day": FormCount(1, 1),
        }


def test_the_forms_page_shows_each_form_with_its_snippet_and_figures(
    rt: Runtime, http: TestClient
) -> None:
    _people(rt)

    page = http.get("/admin/forms")

    assert page.status_code == 200
    text = page.text
    assert '<a href="/admin/forms" aria-current="page">Forms</a>' in text
    waitlist = text.split('id="form-waitlist"', 1)[1].split("</section>", 1)[0]
    assert "Runners Lab &lt;waitlist&gt;" in waitlist  # names are escaped
    assert '<dt>Signups</dt><dd class="num">3</dd>' in waitlist
    assert '<dt>Confirmations</dt><dd class="num">2 <span class="muted">(66.7%)</span>' in waitlist
    assert '<span class="badge">waitlist</span> <span class="badge">vip</span>' in waitlist
    assert "<code>runners-lab-upsell</code>" in waitlist
    assert "The Runners Lab invitation" in waitlist  # what confirming starts, by name
    default = text.split('id="form-default"', 1)[1].split("</section>", 1)[0]
    assert '<dt>Signups</dt><dd class="num">1</dd>' in default
    assert "Glute Accelerator Crash Course" in default
    assert "No form recorded (imported, or signed up before forms): 1 subscribers" in text
    assert "<code>race-day</code> (no longer in the forms folder): 1 signups" in text
    snippets = {m["slug"]: html.unescape(m["code"]) for m in SNIPPET.finditer(text)}
    assert set(snippets) == {"default", "mid-stance", "waitlist"}
    code = snippets["waitlist"]
    assert code.startswith('<form method="post" action="https://drip.test/subscribe">')
    assert '<input type="hidden" name="form" value="waitlist">' in code
    assert rt.settings.consent_text in code


def test_a_pasted_snippet_signs_up_through_its_form(rt: Runtime, http: TestClient) -> None:
    code = {
        m["slug"]: html.unescape(m["code"]) for m in SNIPPET.finditer(http.get("/admin/forms").text)
    }["waitlist"]
    fields = {m["name"]: m["value"] or "" for m in INPUT.finditer(code)}
    assert set(fields) == {"form", "email", "first_name", "timezone", "source", "website"}
    fields.update(email="ana@example.com", first_name="Ana", timezone="Europe/Berlin")

    answer = client_for(rt).post("/subscribe", data=fields)

    assert answer.status_code == 303
    with rt.sessions() as session:
        sub = subscriber(session, "ana@example.com")
        assert (sub.form, sub.source, sub.time_zone) == ("waitlist", "waitlist", "Europe/Berlin")
        assert sorted(t.name for t in sub.tags) == ["vip", "waitlist"]


def test_the_figures_are_cached_like_the_overviews(
    rt: Runtime, http: TestClient, clock: FrozenClock
) -> None:
    def signups() -> str:
        section = http.get("/admin/forms").text.split('id="form-waitlist"', 1)[1]
        return section.split("<dt>Signups</dt>", 1)[1].split("</dd>", 1)[0]

    assert signups() == '<dd class="num">0'
    _people(rt)
    assert signups() == '<dd class="num">0'  # within DRIP_ADMIN_STATS_CACHE_SECONDS
    clock.advance(timedelta(seconds=rt.settings.admin_stats_cache_seconds))
    assert signups() == '<dd class="num">3'
