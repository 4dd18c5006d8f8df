"""The dashboard's pages render real data: overview, course, lesson previews, subscribers.

Each test runs on SQLite and PostgreSQL, signed in through the real sign-in form.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, select

from drip.clock import FrozenClock
from drip.engine.consent import unsubscribe
from drip.esp.memory import MemoryBackend
from drip.ingest.stream import OPEN, entry
from drip.models import Consent, Conversion, Enrollment, Subscriber, SubscriberStatus
from drip.runtime import Runtime
from drip.settings import Settings
from drip.subscribers.store import add_tags
from drip.suppress import suppress
from tests.conftest import REPO
from tests.dashboard_support import client, dashboard_settings, page_token, signed_in
from tests.helpers import add_subscriber, run_tick
from tests.web_support import subscriber


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dashboard_settings(tmp_path)


@pytest.fixture
def http(rt: Runtime) -> TestClient:
    signed, _ = signed_in(rt)
    return signed


def _people(rt: Runtime) -> dict[str, int]:
    ids = {
        "ana@example.com": add_subscriber(rt, "ana@example.com", name="Ana"),
        "bob@example.com": add_subscriber(rt, "bob@example.com", name="Bob"),
        "cleo@runclub.example": add_subscriber(rt, "cleo@runclub.example", name="Cleo"),
        "dan@example.com": add_subscriber(
            rt, "dan@example.com", name="Dan", status=SubscriberStatus.PENDING, enroll_now=False
        ),
    }
    with rt.transaction() as session:
        add_tags(session, subscriber(session, "cleo@runclub.example"), ["trail"])
        unsubscribe(session, subscriber(session, "bob@example.com"), rt.clock(), "test")
        suppress(session, "bounced@example.com", "bounce")
    return ids


def test_the_overview_shows_counts_growth_funnel_and_revenue(rt: Runtime, http: TestClient) -> None:
    ids = _people(rt)
    run_tick(rt)  # lesson 1 goes to the two active subscribers still in the course
    with rt.transaction() as session:
        session.execute(
            insert(Conversion).values(
                order_id="order-1",
                subscriber_id=ids["ana@example.com"],
                product="The Runners Lab",
                amount_cents=19_900,
                currency="USD",
                occurred_at=rt.clock(),
            )
        )

    page = http.get("/admin")

    assert page.status_code == 200
    text = page.text
    for number, label in [(2, "active"), (1, "waiting to confirm"), (1, "unsubscribed")]:
        assert f'<span class="n">{number}</span> <span class="l">{label}</span>' in text
    assert '<span class="n">1</span> <span class="l">suppressed addresses</span>' in text
    assert '<svg class="chart"' in text and '<title id="growth-t">' in text
    assert '<desc id="funnel-d">signed up: 4; confirmed: 4; reached lesson 1: 2;' in text
    assert '<span class="n" id="revenue-total">199.00 USD</span>' in text
    assert '<th scope="row">reached lesson 1</th><td class="num">2</td>' in text
    by_day = http.get("/admin?by=day")
    assert "Signups and confirmations per day" in by_day.text
    # The clock's 2026-03-02 00:00 UTC is the evening of Mar 01 in the dashboard's zone.
    assert 'Mar 01</th><td class="num">4</td><td class="num">4</td>' in by_day.text


def test_growth_counts_calendar_days_in_the_dashboard_zone(rt: Runtime, http: TestClient) -> None:
    from zoneinfo import ZoneInfo

    from drip.subscribers.queries import daily_growth

    at = lambda hour, minute=0: datetime(2026, 2, 20, hour, minute, tzinfo=UTC)  # noqa: E731
    # 02:00 UTC is still the evening before in New York; 06:00 UTC is that morning.
    late = {"email": "late@example.com", "created_at": at(2), "confirmed_at": at(2, 30)}
    early = {"email": "early@example.com", "created_at": at(6)}
    with rt.transaction() as session:
        session.execute(insert(Subscriber), [{**late, "status": "active"}])
        session.execute(insert(Subscriber), [{**early, "status": "active"}])

    def per_day(zone: str, since: datetime) -> list[tuple[str, int, int]]:
        with rt.sessions() as session:
            days = daily_growth(session, since, at(12), ZoneInfo(zone))
        return [(d.day.isoformat(), d.signups, d.confirmations) for d in days]

    assert per_day("America/New_York", at(0) - timedelta(hours=19)) == [
        ("2026-02-19", 1, 1),
        ("2026-02-20", 1, 0),
    ]
    assert per_day("UTC", at(0)) == [("2026-02-20", 2, 1)]
    overview = http.get("/admin?by=day").text
    assert "per day" in overview and "(America/New_York)" in overview
    assert "UTC" not in overview.split("<main", 1)[1]  # times are shown in the zone too


def test_overview_counts_are_cached_for_a_minute(
    rt: Runtime, http: TestClient, clock: FrozenClock
) -> None:
    http.get("/admin")
    add_subscriber(rt, "late@example.com")

    assert '<span class="n">0</span> <span class="l">active</span>' in http.get("/admin").text
    clock.advance(timedelta(seconds=61))
    assert '<span class="n">1</span> <span class="l">active</span>' in http.get("/admin").text


def test_pages_carry_a_strict_csp_and_no_store(http: TestClient) -> None:
    page = http.get("/admin/course")

    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text and "style=" not in page.text


def test_the_course_lists_every_email_with_its_figures_and_check(
    rt: Runtime, http: TestClient
) -> None:
    _people(rt)
    run_tick(rt)

    page = http.get("/admin/course")

    assert page.status_code == 200
    assert "Lesson check: every lesson passes." in page.text
    for seq in rt.library.values():
        for lesson in seq.lessons:
            assert f'href="/admin/course/{seq.slug}/{lesson.position}"' in page.text
    first = rt.course().lessons[0]
    row = page.text.split(f'href="/admin/course/{rt.course().slug}/1"')[1].split("</tr>")[0]
    assert '<td class="num">2</td>' in row  # sent
    assert '<span class="badge ok">ok</span>' in row
    assert first.subject.replace("'", "&#39;") in row


def test_a_lesson_page_shows_the_preview_in_html_and_text(rt: Runtime, http: TestClient) -> None:
    lesson = rt.course().lessons[1]

    page = http.get(f"/admin/course/{rt.course().slug}/2")
    frame = http.get(f"/admin/course/{rt.course().slug}/2/email.html")

    assert page.status_code == frame.status_code == 200
    assert f'src="/admin/course/{rt.course().slug}/2/email.html" sandbox=""' in page.text
    assert "Hi Sam," in page.text  # the plain-text part, for the sample reader
    assert lesson.preheader.replace("'", "&#39;") in page.text
    csp = frame.headers["content-security-policy"]
    assert "sandbox" in csp and "frame-ancestors 'self'" in csp and "script-src" not in csp
    assert frame.headers["x-frame-options"] == "SAMEORIGIN"
    assert "Hi Sam," in frame.text
    assert "/t/o/" not in frame.text and "/t/c/" not in frame.text  # no tracking in previews
    assert http.get(f"/admin/course/{rt.course().slug}/99").status_code == 404
    assert http.get("/admin/course/nope/1").status_code == 404


def test_the_course_page_reports_a_lesson_broken_on_disk(tmp_path: Path, rt: Runtime) -> None:
    content = tmp_path / "content"
    shutil.copytree(REPO / "content" / "lessons", content)
    local = Runtime.build(
        dashboard_settings(tmp_path, content_dir=content),
        engine=rt.engine,
        backend=rt.backend,
        clock=rt.clock,
    )
    lesson = content / "glute-accelerator" / "03-load-through-length.md"
    lesson.write_text(lesson.read_text() + "\n<b>raw html</b>\n")
    http, _ = signed_in(local)

    page = http.get("/admin/course")

    assert "finds 1 problem in" in page.text
    assert "raw HTML" in page.text
    row = page.text.split('href="/admin/course/glute-accelerator/3"')[1].split("</tr>")[0]
    assert "1 problem<" in row
    assert "raw HTML" in http.get("/admin/course/glute-accelerator/3").text


def test_subscribers_are_found_by_address_name_status_tag_and_course_state(
    rt: Runtime, http: TestClient
) -> None:
    _people(rt)

    def found(query: str) -> set[str]:
        page = http.get(f"/admin/subscribers?{query}")
        assert page.status_code == 200
        return {e for e in ("ana@", "bob@", "cleo@", "dan@") if f">{e}" in page.text}

    assert found("") == {"ana@", "bob@", "cleo@", "dan@"}
    assert found("q=RUNCLUB") == {"cleo@"}
    assert found("q=dan") == {"dan@"}  # by name or address
    assert found("status=pending") == {"dan@"}
    assert found("tag=trail") == {"cleo@"}
    assert found("state=not_started") == {"dan@"}
    assert found("state=in_course") == {"ana@", "cleo@"}
    assert found("state=stopped") == {"bob@"}
    assert found("q=nobody") == set()


def test_the_subscriber_list_pages_by_id_without_offsets(rt: Runtime, http: TestClient) -> None:
    now = rt.clock()
    with rt.transaction() as session:
        session.execute(
            insert(Subscriber),
            [
                {"email": f"runner{n:03d}@example.com", "status": "active", "created_at": now}
                for n in range(60)
            ],
        )

    def follow(page: str, rel: str) -> str:
        link = page.split(f'rel="{rel}"')[0].rsplit('href="', 1)[1].split('"')[0]
        return http.get(link.replace("&amp;", "&")).text

    first = http.get("/admin/subscribers").text
    assert "runner049@" in first and "runner050@" not in first
    assert 'rel="prev"' not in first
    second = follow(first, "next")

    assert "runner050@" in second and "runner059@" in second
    assert "runner049@" not in second
    assert 'rel="next"' not in second
    assert "60 subscribers in all" in first
    back = follow(second, "prev")  # keyset the other way: the 50 before runner050
    assert "runner000@" in back and "runner049@" in back and "runner050@" not in back
    assert 'rel="prev"' not in back and 'rel="next"' in back


def test_the_subscriber_list_pages_back_within_a_filter(rt: Runtime, http: TestClient) -> None:
    now = rt.clock()
    with rt.transaction() as session:
        session.execute(
            insert(Subscriber),
            [
                {
                    "email": f"{'club' if n % 2 else 'solo'}{n:03d}@example.com",
                    "status": "active",
                    "created_at": now,
                }
                for n in range(120)
            ],
        )
    first = http.get("/admin/subscribers", params={"q": "club"}).text
    second = http.get(
        first.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    ).text
    assert "club101@" in second and "club119@" in second and "solo" not in second
    back = http.get(
        second.split('rel="prev"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    ).text
    assert "club001@" in back and "club099@" in back and "club101@" not in back
    assert "solo" not in back and 'rel="prev"' not in back


def test_a_subscriber_page_shows_progress_timeline_and_consent(
    rt: Runtime, http: TestClient
) -> None:
    sid = add_subscriber(rt, "ana@example.com", name="Ana")
    with rt.transaction() as session:
        session.add(
            Consent(
                subscriber_id=sid,
                action="signup",
                created_at=rt.clock(),
                source="form",
                ip="203.0.113.9",
                user_agent="Firefox",
                text="Yes, send me the course",
            )
        )
    run_tick(rt)

    page = http.get(f"/admin/subscribers/{sid}")

    assert page.status_code == 200
    assert "ana@example.com" in page.text
    assert "1 of 7 emails" in page.text
    assert "email <code>glute-accelerator/1</code>" in page.text
    assert "203.0.113.9" in page.text and "Yes, send me the course" in page.text
    assert http.get("/admin/subscribers/999999").status_code == 404


def test_unsubscribe_from_the_dashboard_needs_the_token_and_records_it(
    rt: Runtime, http: TestClient
) -> None:
    sid = add_subscriber(rt, "ana@example.com")
    token = page_token(http.get(f"/admin/subscribers/{sid}").text)

    refused = http.post(f"/admin/subscribers/{sid}/unsubscribe")
    done = http.post(f"/admin/subscribers/{sid}/unsubscribe", data={"csrf_token": token})

    assert refused.status_code == 403
    assert done.status_code == 303
    assert "Unsubscribed: no more emails" in http.get(done.headers["location"]).text
    with rt.sessions() as session:
        assert session.get(Subscriber, sid).status == "unsubscribed"  # type: ignore[union-attr]
        consent = session.scalars(select(Consent).where(Consent.subscriber_id == sid)).one()
        assert (consent.action, consent.source) == ("unsubscribe", "dashboard")


def test_a_sequence_with_a_manual_trigger_starts_from_the_subscriber_page_once(
    rt: Runtime, http: TestClient
) -> None:
    sid = add_subscriber(rt, "ana@example.com")
    page = http.get(f"/admin/subscribers/{sid}").text
    assert '<option value="runners-lab-welcome">' in page  # the one shipped with on = "manual"
    assert '<option value="glute-accelerator">' not in page
    token = page_token(page)

    refused = http.post(f"/admin/subscribers/{sid}/sequences", data={"slug": "runners-lab-welcome"})
    first = http.post(
        f"/admin/subscribers/{sid}/sequences",
        data={"csrf_token": token, "slug": "runners-lab-welcome"},
    )
    again = http.post(
        f"/admin/subscribers/{sid}/sequences",
        data={"csrf_token": token, "slug": "runners-lab-welcome"},
    )
    other = http.post(
        f"/admin/subscribers/{sid}/sequences",
        data={"csrf_token": token, "slug": "runners-lab-upsell"},
    )

    assert refused.status_code == 403
    assert "Started: the sequence" in http.get(first.headers["location"]).text
    assert "is in that sequence now" in http.get(again.headers["location"]).text
    assert "not started by hand" in http.get(other.headers["location"]).text
    with rt.sessions() as session:
        slugs = set(
            session.scalars(select(Enrollment.sequence).where(Enrollment.subscriber_id == sid))
        )
    assert slugs == {"glute-accelerator", "runners-lab-welcome"}


def test_export_downloads_everything_stored_as_json(rt: Runtime, http: TestClient) -> None:
    sid = add_subscriber(rt, "ana@example.com")

    answer = http.get(f"/admin/subscribers/{sid}/export.json")

    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == f'attachment; filename="subscriber-{sid}.json"'
    data = json.loads(answer.text)
    assert data["format"] == "drip-subscriber-export/1"
    assert data["subscriber"]["email"] == "ana@example.com"


def test_erase_asks_for_the_address_before_erasing(rt: Runtime, http: TestClient) -> None:
    sid = add_subscriber(rt, "ana@example.com")
    confirm = http.get(f"/admin/subscribers/{sid}/erase")
    token = page_token(confirm.text)

    wrong = http.post(
        f"/admin/subscribers/{sid}/erase",
        data={"csrf_token": token, "confirm_email": "someone@example.com"},
    )
    with rt.sessions() as session:
        assert session.get(Subscriber, sid).email == "ana@example.com"  # type: ignore[union-attr]
    right = http.post(
        f"/admin/subscribers/{sid}/erase",
        data={"csrf_token": token, "confirm_email": "Ana@Example.com "},
    )

    assert "This cannot be undone" in confirm.text
    assert wrong.status_code == 422
    assert "Nothing was erased" in wrong.text
    assert right.status_code == 303
    with rt.sessions() as session:
        sub = session.get(Subscriber, sid)
        assert sub is not None and sub.email is None and sub.status == "erased"
    assert "Erased: the personal data is gone" in http.get(right.headers["location"]).text


def test_static_files_are_versioned_and_cached(rt: Runtime) -> None:
    http = client(rt)  # no session needed: the sign-in page uses the stylesheet
    page = http.get("/admin/login")
    href = page.text.split('rel="stylesheet" href="')[1].split('"')[0]

    css = http.get(href)
    again = http.get(href, headers={"If-None-Match": css.headers["etag"]})

    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "max-age" in css.headers["cache-control"]
    assert again.status_code == 304
    assert http.get("/admin/static/settings.py").status_code == 404


# --------------------------------------------------------------------------- tracking drain lag


def _tracking_paragraph(html: str) -> str:
    found = re.search(r'<p[^>]*id="tracking"[^>]*>(.*?)</p>', html, re.S)
    assert found, "no tracking line on the Sending page"
    return re.sub(r"<[^>]+>", "", found.group(0))


def _lag_runtime(tmp_path: Path, engine: Engine, clock: FrozenClock, redis_url: str) -> Runtime:
    settings = dashboard_settings(
        tmp_path, redis_url=redis_url, tracking_stream=f"drip:test-dash:{uuid.uuid4().hex}"
    )
    return Runtime.build(settings, engine=engine, backend=MemoryBackend(clock=clock), clock=clock)


# The backlog is read from Redis only, so these run on SQLite alone.
def test_the_sending_page_shows_the_tracking_backlog_and_a_stalled_drain(
    tmp_path: Path, sqlite_engine: Engine, clock: FrozenClock, redis_url: str
) -> None:
    rt = _lag_runtime(tmp_path, sqlite_engine, clock, redis_url)
    stream = rt.settings.tracking_stream
    direct = redis.Redis.from_url(redis_url)
    try:
        http, _ = signed_in(rt)
        empty = _tracking_paragraph(http.get("/admin/sending").text)
        for age in (40, 10):  # entries Redis took 40 s and 10 s ago (the time in their ids)
            millis = int((clock() - timedelta(seconds=age)).timestamp() * 1000)
            fields = entry(OPEN, 1, at=clock(), ip=None, user_agent=None)
            direct.xadd(stream, fields, id=f"{millis}-0")  # type: ignore[arg-type]
        keeping_up = _tracking_paragraph(http.get("/admin/sending").text)
        clock.advance(timedelta(seconds=21))  # the oldest now waits 61 s: past the minute
        behind_page = http.get("/admin/sending").text
    finally:
        direct.delete(stream)
        direct.close()

    assert empty == "No open or click waits to be stored; they are stored every 2 s."
    assert (
        keeping_up
        == "2 opens and clicks wait to be stored, the oldest for 40 s; they are stored every 2 s."
    )
    assert 'class="error" role="alert" id="tracking"' in behind_page
    assert _tracking_paragraph(behind_page).startswith(
        "The drain is behind: 2 opens and clicks wait to be stored, the oldest for 61 s."
    )


def test_the_sending_page_says_when_redis_cannot_be_reached(
    tmp_path: Path, sqlite_engine: Engine, clock: FrozenClock
) -> None:
    nobody = "redis://127.0.0.1:1/0"  # nothing listens there
    rt = _lag_runtime(tmp_path, sqlite_engine, clock, nobody)
    http, _ = signed_in(rt)
    page = http.get("/admin/sending")
    assert page.status_code == 200
    assert "can't be reached" in _tracking_paragraph(page.text)
