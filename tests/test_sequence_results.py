"""Results per sequence (drip.reports.sequences) on a known story, through collect(), `drip
stats`, the admin API and the dashboard; both databases.

The content is the packaged course's and upsell's lessons with this test's sequence.toml: the
course starts on the default form and exits on the tag ``lab-curious``, which starts the upsell
(priority 5; completing the course starts it too), which exits on the tag ``lab-member``.
The story (New York time zone; the course sends lesson 1 at once, then daily at 07:00; the upsell
starts at the next 07:00):

- ana, ben, cat and dan enter the course and get lesson 1; eve completed it long ago (rows
  written directly);
- dan clicks lesson 1 (a human), cat opens it, ben's "open" is a privacy proxy's (machine);
- ben unsubscribes; ana, cat and eve get the tag ``lab-curious``: ana's and cat's course stops,
  the upsell starts for the three of them;
- the next 07:00: lesson 2 goes to dan, the upsell's lesson 1 to ana, cat and eve;
- ana clicks the upsell, eve opens it; cat gets the tag ``lab-member`` (her upsell stops);
- ana buys (USD 197.00, credited to the upsell's click; her upsell stops: converted), dan buys
  (USD 50.00, credited to the course's lesson 1), a stranger buys (USD 99.00, credited to none).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, event, insert, select

from drip.cli.main import main
from drip.cli.stats import render
from drip.clock import FrozenClock
from drip.engine.automations import Automations, handle
from drip.engine.consent import unsubscribe
from drip.ingest.events import Event, EventType
from drip.models import Delivery, Enrollment, MessageStats, Subscriber
from drip.reports import sequences
from drip.reports.stats import as_json, collect
from drip.runtime import Runtime
from drip.settings import Settings, get_settings
from tests.conftest import REPO
from tests.dashboard_support import signed_in
from tests.helpers import add_subscriber, run_tick
from tests.tracking_support import (
    ADMIN_TOKEN,
    HUMAN_UA,
    client_for,
    post_purchase,
    store,
    tracking_settings,
)

KEY = ec.generate_private_key(ec.SECP256R1())
COURSE, UPSELL = "glute-accelerator", "runners-lab-upsell"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DAYS = ", ".join(f'"{day}"' for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
WINDOW = f"send_hour = 7\nsend_minute = 0\nsend_days = [{DAYS}]\n"
TOMLS = {
    COURSE: (
        f'slug = "{COURSE}"\nname = "Glute Accelerator Crash Course"\nkind = "course"\n{WINDOW}'
        'first_lesson = "immediately"\ncategory = "course"\n\n'
        '[[triggers]]\non = "form"\nform = "default"\n\n'
        '[[exits]]\non = "tag_added"\ntag = "lab-curious"\n'
    ),
    UPSELL: (
        f'slug = "{UPSELL}"\nname = "The Runners Lab invitation"\nkind = "upsell"\n{WINDOW}'
        'first_lesson = "next_send_hour"\ncategory = "upsell"\npriority = 5\n\n'
        f'[[triggers]]\non = "completed"\nsequence = "{COURSE}"\n\n'
        '[[triggers]]\non = "tag_added"\ntag = "lab-curious"\n\n'
        '[[exits]]\non = "tag_added"\ntag = "lab-member"\n'
    ),
}


def _content(tmp_path: Path) -> Path:
    """The packaged lessons of the course and the upsell, with this test's sequence.toml."""
    content = tmp_path / "lessons"
    for slug, toml in TOMLS.items():
        folder = content / slug
        folder.mkdir(parents=True)
        for lesson in (REPO / "content" / "lessons" / slug).glob("*.md"):
            shutil.copy(lesson, folder / lesson.name)
        (folder / "sequence.toml").write_text(toml)
    return content


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return tracking_settings(tmp_path, KEY, content_dir=_content(tmp_path), redis_url=redis_url)


def _ids(rt: Runtime, *names: str) -> list[int]:
    with rt.sessions() as session:
        emails = [f"{n}@example.com" for n in names]
        return list(session.scalars(select(Subscriber.id).where(Subscriber.email.in_(emails))))


def _events(rt: Runtime, clock: FrozenClock, *specs: tuple[str, EventType, str, str]) -> None:
    events = []
    for name, kind, key, agent in specs:
        with rt.sessions() as session:
            delivery_id = session.scalar(
                select(Delivery.id).where(
                    Delivery.subscriber_id == _ids(rt, name)[0], Delivery.message_key == key
                )
            )
        event_id = f"{name}:{kind}:{key}"
        events.append(Event(kind, clock.now, "test", event_id, delivery_id, user_agent=agent))
    store(rt, events)


def _tagged(rt: Runtime, tag: str, *names: str) -> None:
    with rt.transaction() as session:
        handle(rt, session, "tag_added", tag, _ids(rt, *names), rt.clock())


def _buy(rt: Runtime, *orders: tuple[str, str]) -> None:
    client = client_for(rt)
    for number, (name, amount) in enumerate(orders, start=1):
        payload = {"email": f"{name}@example.com", "product": "runners-lab", "amount": amount}
        payload |= {"order_id": f"o{number}", "currency": "USD", "time": rt.clock().isoformat()}
        assert post_purchase(client, payload).status_code == 200


@pytest.fixture
def story(rt: Runtime, clock: FrozenClock) -> Runtime:
    for name in ("ana", "ben", "cat", "dan"):
        add_subscriber(rt, f"{name}@example.com")
    eve = add_subscriber(rt, "eve@example.com", enroll_now=False)
    with rt.transaction() as session:
        session.execute(
            insert(Enrollment).values(
                subscriber_id=eve,
                sequence=COURSE,
                position=7,
                status="completed",
                enrolled_at=clock.now - timedelta(days=30),
                completed_at=clock.now - timedelta(days=23),
            )
        )
    run_tick(rt)  # the course's lesson 1 to ana, ben, cat, dan

    clock.advance(timedelta(hours=1))
    lesson1 = f"{COURSE}/1"
    _events(
        rt,
        clock,
        ("dan", EventType.CLICKED, lesson1, HUMAN_UA),
        ("cat", EventType.OPENED, lesson1, HUMAN_UA),
        ("ben", EventType.OPENED, lesson1, "Mozilla/5.0"),  # Apple's privacy proxy
    )
    with rt.transaction() as session:
        ben = session.get(Subscriber, _ids(rt, "ben")[0])
        assert ben is not None
        unsubscribe(session, ben, clock.now, "test")
    _tagged(rt, "lab-curious", "ana", "cat", "eve")

    clock.advance(timedelta(hours=11))  # 07:00 in New York
    run_tick(rt)  # the course's lesson 2 to dan; the upsell's lesson 1 to ana, cat, eve
    clock.advance(timedelta(hours=1))
    upsell1 = f"{UPSELL}/1"
    _events(
        rt,
        clock,
        ("ana", EventType.CLICKED, upsell1, HUMAN_UA),
        ("eve", EventType.OPENED, upsell1, HUMAN_UA),
    )
    _tagged(rt, "lab-member", "cat")
    _buy(rt, ("ana", "197.00"), ("dan", "50.00"), ("who", "99"))
    return rt


def _figures(rt: Runtime) -> dict[str, sequences.SequenceFigures]:
    with rt.sessions() as session:
        return {f.slug: f for f in sequences.collect(session, rt.library, rt.automations)}


def _lesson(item: sequences.SequenceFigures, position: int) -> tuple[int, int, int]:
    lesson = item.lessons[position - 1]
    return lesson.sent, lesson.opened, lesson.clicked


def test_each_sequence_has_its_rules_people_funnel_and_conversions(story: Runtime) -> None:
    found = _figures(story)
    course, upsell = found[COURSE], found[UPSELL]

    assert list(found) == [COURSE, UPSELL]
    assert (course.triggers, course.exits, course.priority) == (
        ["form:default"],
        ["tag_added:lab-curious"],
        0,
    )
    assert (course.active, course.completed, course.entries) == (1, 1, 5)
    assert course.stopped == {"exit tag_added:lab-curious": 2, "unsubscribed": 1}
    assert [_lesson(course, 1), _lesson(course, 2), _lesson(course, 3)] == [
        (4, 2, 1),  # dan's click counts as an open; ben's machine open does not count
        (1, 0, 0),
        (0, 0, 0),
    ]
    assert (course.conversions, course.revenue, course.conversion_rate) == (1, {"USD": 5000}, 0.25)
    assert course.steps()[:3] == [("entered", 5), ("reached lesson 1", 4), ("reached lesson 2", 1)]
    assert course.steps()[-1] == ("completed", 1)

    assert upsell.triggers == ["completed:glute-accelerator", "tag_added:lab-curious"]
    assert (upsell.exits, upsell.priority) == (["tag_added:lab-member", "purchased"], 5)
    assert (upsell.active, upsell.completed, upsell.entries) == (1, 0, 3)
    assert upsell.stopped == {"converted": 1, "exit tag_added:lab-member": 1}
    assert [_lesson(upsell, n) for n in (1, 2)] == [(3, 2, 1), (0, 0, 0)]
    assert (upsell.conversions, upsell.revenue) == (1, {"USD": 19700})
    assert upsell.lessons[0].open_rate == 0.6667


def test_re_entries_are_summed_per_lesson_and_other_keys_ignored(rt: Runtime) -> None:
    """Rows written directly: a second entry's message keys (``slug/1#2``) count for lesson 1,
    a broadcast's and the confirmation's count for no sequence."""
    sid = add_subscriber(rt, "ana@example.com", enroll_now=False)
    now = rt.clock()
    with rt.transaction() as session:
        session.execute(
            insert(Enrollment),
            [
                {"subscriber_id": sid, "sequence": UPSELL, "entry": 2, "status": "active",
                 "trigger": "tag_added:lab-curious", "enrolled_at": now},
                {"subscriber_id": sid, "sequence": COURSE, "entry": 1, "status": "stopped",
                 "enrolled_at": now - timedelta(days=9)},
            ],
        )  # fmt: skip
        session.execute(
            insert(MessageStats),
            [
                {"message_key": f"{UPSELL}/1", "sent": 5, "opened": 3, "clicked": 1},
                {"message_key": f"{UPSELL}/1#2", "sent": 2, "opened": 1, "clicked": 1},
                {"message_key": f"{UPSELL}/2#2", "sent": 1, "unsubscribed": 1},
                {"message_key": f"{UPSELL}/9", "sent": 4},  # a lesson removed since
                {"message_key": "broadcast/1", "sent": 50},
                {"message_key": "confirm", "sent": 60},
            ],
        )
        session.execute(
            insert(Delivery),
            [
                {"subscriber_id": sid, "message_key": key, "kind": "lesson", "sequence": UPSELL,
                 "position": pos, "status": status, "created_at": now, "sent_at": sent}
                for key, pos, status, sent in [
                    (f"{UPSELL}/1", 1, "sent", now - timedelta(days=5)),
                    (f"{UPSELL}/1#2", 1, "queued", None),
                ]
            ],
        )  # fmt: skip

    found = _figures(rt)
    with rt.sessions() as session:
        histories = sequences.enrollment_histories(session, sid)
        missing = sequences.find(session, rt.library, rt.automations, "nope")

    upsell = found[UPSELL]
    assert [_lesson(upsell, n) for n in (1, 2, 3)] == [(7, 4, 2), (1, 0, 0), (0, 0, 0)]
    assert upsell.lessons[1].unsubscribed == 1
    assert (upsell.active, upsell.entries, upsell.recipients) == (1, 2, 7)
    assert found[COURSE].stopped == {sequences.NO_REASON: 1}
    assert sum(lesson.sent for lesson in found[COURSE].lessons) == 0
    assert [(h.sequence, h.entry, h.trigger) for h in histories] == [
        (COURSE, 1, None),
        (UPSELL, 2, "tag_added:lab-curious"),
    ]
    assert [(d.position, d.entry, d.status) for d in histories[1].deliveries] == [
        (1, 1, "sent"),
        (1, 2, "queued"),
    ]
    assert histories[0].deliveries == []
    assert missing is None


def test_the_admin_api_lists_sequences_and_shows_one_with_its_funnel(story: Runtime) -> None:
    client = client_for(story)

    listed = client.get("/api/v1/admin/sequences", headers=AUTH)
    one = client.get(f"/api/v1/admin/sequences/{UPSELL}", headers=AUTH)
    unknown = client.get("/api/v1/admin/sequences/nope", headers=AUTH)
    refused = client.get("/api/v1/admin/sequences")

    assert listed.status_code == one.status_code == 200
    items = listed.json()["sequences"]
    assert [i["slug"] for i in items] == [COURSE, UPSELL]
    assert items[1] == sequences.as_json(_figures(story)[UPSELL], detail=False)
    assert "lessons" not in items[1] and "funnel" not in items[1]
    assert (items[0]["active"], items[0]["stopped_total"], items[0]["enrolled"]) == (1, 3, 5)
    detail = one.json()
    assert detail["stopped"] == {"converted": 1, "exit tag_added:lab-member": 1}
    assert detail["lessons"][0] | {"subject": ""} == {
        "position": 1, "subject": "", "sent": 3, "opened": 2, "clicked": 1, "unsubscribed": 0,
        "open_rate": 0.6667, "click_rate": 0.3333,
    }  # fmt: skip
    assert detail["funnel"][:2] == [
        {"step": "entered", "count": 3},
        {"step": "reached lesson 1", "count": 3},
    ]
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "slug"
    assert refused.status_code == 401


def _stats_json(rt: Runtime) -> dict[str, Any]:
    with rt.sessions() as session:
        figures = collect(session, rt.library, COURSE, rt.clock(), automations=rt.automations)
    return as_json(figures)


def test_drip_stats_adds_a_table_per_sequence(
    story: Runtime, engine: Engine, tmp_path: Path
) -> None:
    env = {
        "DRIP_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "DRIP_CONTENT_DIR": str(story.settings.content_dir),
        "DRIP_TEMPLATES_DIR": str(REPO / "templates"),
        "DRIP_EMAIL_BACKEND": "memory",
        "DRIP_RUNNERS_LAB_URL": "https://lab.test/join",
    }
    get_settings.cache_clear()
    try:
        text = CliRunner().invoke(main, ["stats"], env=env)
        data = CliRunner().invoke(main, ["stats", "--json"], env=env)
    finally:
        get_settings.cache_clear()

    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    table = lines.index("Per sequence (enrollments now)")
    assert lines[table + 1].split() == ["sequence", "priority", "active", "completed", "stopped",
                                        "entries", "conv", "revenue"]  # fmt: skip
    assert lines[table + 3].split() == [COURSE, "0", "1", "1", "3", "5", "1", "USD", "50.00"]
    assert lines[table + 4].split() == [UPSELL, "5", "1", "0", "2", "3", "1", "USD", "197.00"]
    assert f"{UPSELL}: starts on completed:glute-accelerator, tag_added:lab-curious; exits on " \
        "tag_added:lab-member, purchased; stopped: converted 1, exit tag_added:lab-member 1" \
        in lines  # fmt: skip
    for kept in ("Emails (opens and clicks: unique, human)", "Sequences", f"Funnel ({COURSE})"):
        assert kept in lines  # the sections scripts read are still there
    assert data.exit_code == 0, data.output
    figures = json.loads(data.output)
    expected = _stats_json(story)
    assert figures["per_sequence"] == expected["per_sequence"]
    assert figures["sequences"] == expected["sequences"]  # the older key, unchanged
    with story.sessions() as session:
        report = render(collect(session, story.library, COURSE, story.clock()))
    assert report.index("Funnel (") < report.index("Per sequence") < report.index("Sending:")


def test_the_sequence_pages_show_triggers_figures_and_funnel(story: Runtime) -> None:
    http, _ = signed_in(story)

    listing = http.get("/admin/sequences")
    page = http.get(f"/admin/sequences/{UPSELL}")
    course = http.get("/admin/course")

    assert listing.status_code == page.status_code == 200
    assert '<a href="/admin/sequences" aria-current="page">Sequences</a>' in listing.text
    row = listing.text.split(f'<tr id="seq-{UPSELL}">')[1].split("</tr>")[0]
    assert "<code>tag_added:lab-curious</code>" in row and "<code>purchased</code>" in row
    cells = [c.split("<")[0] for c in row.split('<td class="num">')[1:]]
    assert cells == ["5", "1", "0", "2", "1", "197.00 USD", "33.3%"]
    rules = page.text.split('id="rules"')[1].split("</dl>")[0]
    assert "<code>completed:glute-accelerator</code>, <code>tag_added:lab-curious</code>" in rules
    assert "<dt>Priority</dt><dd>5</dd>" in rules
    assert "<dt>Re-entry</dt><dd>no: once per subscriber</dd>" in rules
    assert "<dt>Sends at</dt><dd>07:00 in each subscriber's zone</dd>" in rules
    stopped = page.text.split('id="stopped"')[1].split("</table>")[0]
    assert '<th scope="row">converted</th><td class="num">1</td>' in stopped
    assert '<desc id="funnel-d">entered: 3; reached lesson 1: 3; reached lesson 2: 0;' in page.text
    assert "; completed: 0</desc>" in page.text
    lesson = page.text.split(f'href="/admin/course/{UPSELL}/1"')[1].split("</tr>")[0]
    assert '<td class="num">3</td>' in lesson and "2 (66.7%)" in lesson and "1 (33.3%)" in lesson
    assert f'href="/admin/sequences/{UPSELL}"' in course.text  # the course page links to it
    assert http.get("/admin/sequences/nope").status_code == 404


def test_the_subscriber_page_lists_every_enrollment_with_its_emails(story: Runtime) -> None:
    http, _ = signed_in(story)
    ana = _ids(story, "ana")[0]

    page = http.get(f"/admin/subscribers/{ana}")

    assert page.status_code == 200
    course = page.text.split(f'id="enrollment-{COURSE}"')[1].split("</article>")[0]
    upsell = page.text.split(f'id="enrollment-{UPSELL}"')[1].split("</article>")[0]
    assert page.text.index(f'id="enrollment-{COURSE}"') < page.text.index(
        f'id="enrollment-{UPSELL}"'
    )  # oldest first
    assert "<dt>Started by</dt><dd>-</dd>" in course
    assert '<span class="badge stopped">stopped</span> (exit tag_added:lab-curious)' in course
    assert f"<dt>Position</dt><dd>1 of {story.library[COURSE].length} emails</dd>" in course
    assert "<dt>Started by</dt><dd><code>tag_added:lab-curious</code></dd>" in upsell
    assert '<span class="badge stopped">stopped</span> (converted)' in upsell
    assert "<dt>Entry</dt><dd>1</dd>" in upsell
    for part in (course, upsell):
        lessons = part.split("<tbody>")[1]
        assert lessons.count("<tr>") == 1
        assert (
            '<td class="num">1</td><td class="num">1</td><td><span class="badge sent">' in lessons
        )
    assert "<dt>Enrolled</dt><dd>2026-03-01 19:00 EST</dd>" in course  # the coach's zone
    assert "<dt>Completed</dt><dd>-</dd>" in course
    assert "<td>2026-03-01 19:00 EST</td>" in course  # lesson 1 went at once
    assert "<dt>Enrolled</dt><dd>2026-03-01 20:00 EST</dd>" in upsell
    assert "<td>2026-03-02 07:00 EST</td>" in upsell
    eve = http.get(f"/admin/subscribers/{_ids(story, 'eve')[0]}").text
    completed = eve.split(f'id="enrollment-{COURSE}"')[1].split("</article>")[0]
    assert "<dt>Completed</dt><dd>2026-02-06 19:00 EST</dd>" in completed
    assert "No lesson email yet." in completed  # her rows were written without any email


def test_three_statements_whatever_the_number_of_sequences(rt: Runtime) -> None:
    """The figures of 2 sequences and of 12 take the same three grouped queries."""
    copies = {
        f"copy-{n}": dataclasses.replace(rt.library[COURSE], slug=f"copy-{n}") for n in range(10)
    }
    bigger = {**rt.library, **copies}
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):  # not SQLite's BEGIN
            statements.append(statement)

    event.listen(rt.engine, "before_cursor_execute", count)
    try:
        with rt.sessions() as session:
            sequences.collect(session, rt.library, rt.automations)
            two = len(statements)
            found = sequences.collect(session, bigger, Automations.of(bigger, COURSE))
    finally:
        event.remove(rt.engine, "before_cursor_execute", count)

    assert two == 3
    assert len(statements) - two == 3
    assert [f.slug for f in found][-1] == "copy-9"


def test_the_sequence_figures_are_cached_like_the_others(rt: Runtime, clock: FrozenClock) -> None:
    http, _ = signed_in(rt)
    http.get("/admin/sequences")
    add_subscriber(rt, "late@example.com")  # enters the course

    def active() -> str:
        row = http.get("/admin/sequences").text.split(f'<tr id="seq-{COURSE}">')[1]
        return row.split('<td class="num">')[2].split("<")[0]

    assert active() == "0"
    clock.advance(timedelta(seconds=rt.settings.admin_stats_cache_seconds + 1))
    assert active() == "1"
