"""Automations: triggers and exits of sequences, re-entry, priority and one email a day.

Each behaviour runs on both databases through the real engine (handle, tick, send) with a
frozen clock over simulated days; the content is written per test into ``tmp_path``.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from drip.clock import FrozenClock
from drip.content.checks import check_library
from drip.content.triggers import EXIT_KINDS
from drip.engine.automations import Automations, handle
from drip.esp.memory import MemoryBackend
from drip.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus, SubscriberStatus
from drip.runtime import Runtime
from tests.conftest import make_settings
from tests.helpers import add_subscriber, run_tick

ZONE = "America/New_York"
NY_7AM = timedelta(hours=12)  # 07:00 in New York is 12:00 UTC in early March (EST)


def lesson(position: int, subject: str = "A perfectly ordinary subject") -> str:
    return (
        f'---\nposition: {position}\nsubject: "{subject} {position}"\n'
        'preheader: "A preheader that is comfortably long enough."\n---\n'
        "Hi {{ first_name }},\n\nA lesson of {{ course_name }}.\n"
    )


def sequence(
    root: Path,
    slug: str,
    *lines: str,
    lessons: int = 2,
    first: str = "next_send_hour",
    hour: int = 7,
) -> None:
    folder = root / slug
    folder.mkdir(parents=True)
    head = [
        f'slug = "{slug}"',
        f'name = "The {slug} sequence"',
        'kind = "course"',
        f"send_hour = {hour}",
        f'first_lesson = "{first}"',
    ]
    (folder / "sequence.toml").write_text("\n".join([*head, *lines]) + "\n")
    for n in range(1, lessons + 1):
        (folder / f"{n:02d}-lesson.md").write_text(lesson(n))


def runtime(
    root: Path, tmp_path: Path, engine: Engine, clock: FrozenClock, course: str = "course"
) -> Runtime:
    settings = make_settings(tmp_path, content_dir=root, course_sequence=course)
    return Runtime.build(settings, engine=engine, backend=MemoryBackend(clock=clock), clock=clock)


def enrollments(rt: Runtime) -> dict[tuple[int, str], tuple[str, int, str | None]]:
    with rt.transaction() as session:
        rows = session.execute(
            select(
                Enrollment.subscriber_id,
                Enrollment.sequence,
                Enrollment.status,
                Enrollment.entry,
                Enrollment.trigger,
            )
        ).all()
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


def sent_keys(rt: Runtime) -> list[str]:
    with rt.transaction() as session:
        return sorted(
            session.scalars(
                select(Delivery.message_key).where(Delivery.status == DeliveryStatus.SENT)
            )
        )


def run_days(rt: Runtime, clock: FrozenClock, days: int) -> None:
    """A tick every simulated hour for ``days`` days (beat ticks every minute; hourly is enough
    for sequences sent at a whole hour)."""
    for _ in range(days * 24):
        clock.advance(timedelta(hours=1))
        run_tick(rt)


# --------------------------------------------------------------------------- checks


def test_lessons_check_names_every_automation_problem(tmp_path: Path) -> None:
    root = tmp_path / "content"
    sequence(root, "course", "[[triggers]]", 'on = "form"', 'form = "nowhere"')
    sequence(root, "a", "[[triggers]]", 'on = "completed"', 'sequence = "b"')
    sequence(root, "b", "[[triggers]]", 'on = "completed"', 'sequence = "a"')
    sequence(root, "c", "[[triggers]]", 'on = "completed"', 'sequence = "ghost"')
    sequence(
        root,
        "d",
        "priority = 1000",
        'reentry = "yes"',
        "[[triggers]]",
        'on = "tagged"',
        "[[triggers]]",
        'on = "tag_added"',
        "[[triggers]]",
        'on = "tag_added"',
        'tag = "Not A Tag"',
        "[[exits]]",
        'on = "purchased"',
        'product = "lab"',
        "[[exits]]",
        'on = "purchased"',
        'product = "lab"',
    )
    found = [
        (Path(p.path).parent.name, p.line, p.message)
        for p in check_library(root, forms=("default",))
    ]
    assert found == [
        ("b", 6, "sequence cycle a -> b -> a: subscribers would never finish"),
        ("c", 6, f"trigger on completed: 'ghost' names no sequence in {root}"),
        ("course", 6, "trigger on form: 'nowhere' names no form (known: default)"),
        ("d", 6, "priority is 1000; must be -100..100"),
        ("d", 7, "reentry must be true or false, not 'yes'"),
        (
            "d",
            8,
            "trigger on = 'tagged' is not a kind of trigger (known: form, tag_added, "
            "tag_removed, purchased, completed, clicked, manual)",
        ),
        ("d", 10, "trigger on = 'tag_added' needs tag = ..."),
        ("d", 12, "trigger tag must be a tag (lowercase, at most 64 characters), not 'Not A Tag'"),
        ("d", 18, "exit 'purchased:lab' is listed twice"),
    ]


def test_the_shipped_content_is_the_old_setup_in_the_new_terms() -> None:
    """The crash course starts from the default form and hands over to the upsell, which ends
    for buyers of the Lab, who start its welcome sequence."""
    settings = make_settings(Path("/nonexistent"))
    from drip.content.loading import load_library

    library = load_library(settings.content_dir)
    index = Automations.of(library, settings.course_sequence)
    assert [s.slug for s in index.started_by("form", "default")] == ["glute-accelerator"]
    assert [s.slug for s in index.started_by("completed", "glute-accelerator")] == [
        "runners-lab-upsell"
    ]
    assert index.ended_by("purchased", "runners-lab") == ("runners-lab-upsell",)
    assert [s.slug for s in index.started_by("purchased", "runners-lab")] == ["runners-lab-welcome"]
    assert [s.slug for s in index.started_by("tag_added", "mid-stance")] == ["mid-stance-checklist"]


def test_legacy_on_complete_and_course_setting_still_wire_the_funnel(tmp_path: Path) -> None:
    root = tmp_path / "content"
    sequence(root, "course", 'on_complete = "upsell"')
    sequence(root, "upsell")
    from drip.content.loading import load_library

    index = Automations.of(load_library(root), "course")
    assert [s.slug for s in index.started_by("form", "default")] == ["course"]
    assert [s.slug for s in index.started_by("completed", "course")] == ["upsell"]


# --------------------------------------------------------------------------- triggers, exits


def test_a_tag_starts_its_sequence_once_and_only_for_active_subscribers(
    tmp_path: Path, engine: Engine, clock: FrozenClock
) -> None:
    root = tmp_path / "content"
    sequence(root, "course")
    sequence(root, "plan", "[[triggers]]", 'on = "tag_added"', 'tag = "5k-plan"')
    rt = runtime(root, tmp_path, engine, clock)
    active = add_subscriber(rt, "a@example.com", enroll_now=False)
    pending = add_subscriber(rt, "p@example.com", enroll_now=False, status=SubscriberStatus.PENDING)
    with rt.transaction() as session:
        first = handle(rt, session, "tag_added", "5k-plan", [active, pending], clock())
    with rt.transaction() as session:
        again = handle(rt, session, "tag_added", "5k-plan", [active], clock())
    assert first.started == {"plan": 1}
    assert again.started == {"plan": 0}
    assert enrollments(rt) == {(active, "plan"): ("active", 1, "tag_added:5k-plan")}


@pytest.mark.parametrize(
    ("kind", "value", "table"),
    [
        ("tag_added", "vip", 'tag = "vip"'),
        ("tag_removed", "lead", 'tag = "lead"'),
        ("purchased", "runners-lab", 'product = "runners-lab"'),
        ("clicked", "https://example.com/5k", 'link = "https://example.com/5k"'),
        ("manual", "", ""),
    ],
)
def test_every_trigger_kind_starts_and_every_exit_kind_ends(
    tmp_path: Path, engine: Engine, clock: FrozenClock, kind: str, value: str, table: str
) -> None:
    root = tmp_path / "content"
    sequence(root, "course")
    rule = ["[[triggers]]", f'on = "{kind}"', *([table] if table else [])]
    sequence(root, "started", *rule)
    ends = kind in EXIT_KINDS
    exit_rule = ["[[exits]]", f'on = "{kind}"', table] if ends else []
    sequence(root, "ended", *exit_rule, "[[triggers]]", 'on = "tag_added"', 'tag = "in"')
    rt = runtime(root, tmp_path, engine, clock)
    sid = add_subscriber(rt, "a@example.com", enroll_now=False)
    with rt.transaction() as session:
        handle(rt, session, "tag_added", "in", [sid], clock())
        handled = handle(rt, session, kind, value, [sid], clock())
    assert handled.started == {"started": 1}
    state = enrollments(rt)
    assert state[(sid, "started")][0] == "active"
    if ends:
        assert handled.stopped == {"ended": 1}
        assert state[(sid, "ended")][0] == "stopped"


def test_completing_a_sequence_starts_what_its_completion_triggers(
    tmp_path: Path, engine: Engine, clock: FrozenClock
) -> None:
    root = tmp_path / "content"
    sequence(root, "course", lessons=1, first="immediately")
    sequence(root, "next", "[[triggers]]", 'on = "completed"', 'sequence = "course"')
    rt = runtime(root, tmp_path, engine, clock)
    sid = add_subscriber(rt, "a@example.com")
    run_tick(rt)
    assert enrollments(rt)[(sid, "next")] == ("active", 1, "completed:course")
    run_days(rt, clock, 3)
    assert sent_keys(rt) == ["course/1", "next/1", "next/2"]


def test_unsubscribing_from_the_newsletter_ends_a_sequence_that_says_so(
    tmp_path: Path, engine: Engine, clock: FrozenClock
) -> None:
    root = tmp_path / "content"
    sequence(root, "course", "[[exits]]", 'on = "unsubscribed"', 'topic = "newsletter"')
    rt = runtime(root, tmp_path, engine, clock)
    sid = add_subscriber(rt, "a@example.com", newsletter=False)
    run_days(rt, clock, 1)
    assert sent_keys(rt) == []
    assert enrollments(rt)[(sid, "course")][0] == "stopped"


def test_an_exit_after_the_claim_skips_the_queued_email(
    tmp_path: Path, engine: Engine, clock: FrozenClock
) -> None:
    """Checked right before the send: a purchase between the claim and the send stops it."""
    from drip.engine.claim import tick
    from drip.engine.dispatch import send_deliveries

    root = tmp_path / "content"
    sequence(root, "course", "[[exits]]", 'on = "purchased"', 'product = "lab"')
    rt = runtime(root, tmp_path, engine, clock)
    sid = add_subscriber(rt, "a@example.com")
    clock.advance(NY_7AM)
    batches: list[list[int]] = []
    tick(rt, clock(), enqueue=batches.append)
    with rt.transaction() as session:
        handle(rt, session, "purchased", "lab", [sid], clock())
    report = send_deliveries(rt, batches[0], clock())
    assert (report.sent, report.skipped) == (0, 1)
    with rt.transaction() as session:
        assert session.scalar(select(Delivery.error)) == "exit purchased:lab"


# --------------------------------------------------------------------------- re-entry


@pytest.mark.parametrize("reentry", [False, True])
def test_reentry_after_completion_only_where_the_sequence_allows_it(
    tmp_path: Path, engine: Engine, clock: FrozenClock, reentry: bool
) -> None:
    root = tmp_path / "content"
    sequence(root, "course")
    flag = "true" if reentry else "false"
    sequence(
        root,
        "plan",
        f"reentry = {flag}",
        "[[triggers]]",
        'on = "tag_added"',
        'tag = "go"',
        lessons=1,
    )
    rt = runtime(root, tmp_path, engine, clock)
    sid = add_subscriber(rt, "a@example.com", enroll_now=False)
    with rt.transaction() as session:
        handle(rt, session, "tag_added", "go", [sid], clock())
    run_days(rt, clock, 2)
    assert enrollments(rt)[(sid, "plan")][0] == "completed"
    with rt.transaction() as session:
        handle(rt, session, "tag_added", "go", [sid], clock())
    run_days(rt, clock, 2)
    expected = ["plan/1", "plan/1#2"] if reentry else ["plan/1"]
    assert sent_keys(rt) == expected
    assert enrollments(rt)[(sid, "plan")][1] == (2 if reentry else 1)


# --------------------------------------------------------------------------- one a day


def test_one_sequence_email_a_day_the_higher_priority_first_none_lost(
    tmp_path: Path, engine: Engine, clock: FrozenClock
) -> None:
    root = tmp_path / "content"
    sequence(root, "course", "priority = 1", lessons=3)
    sequence(root, "urgent", "priority = 9", lessons=2)
    rt = runtime(root, tmp_path, engine, clock)
    sid = add_subscriber(rt, "a@example.com", enroll_now=False)
    with rt.transaction() as session:
        from drip.engine.automations import start

        for slug in ("course", "urgent"):
            start(session, [sid], rt.library[slug], clock(), ZONE, "manual")
    run_days(rt, clock, 7)
    backend = rt.backend
    assert isinstance(backend, MemoryBackend)
    days = Counter(m.sent_at.astimezone(ZoneInfo(ZONE)).date() for m in backend.outbox)
    assert max(days.values()) == 1  # never two sequence emails on one local day
    order = [m.message.message_key for m in backend.outbox]
    assert order == ["urgent/1", "urgent/2", "course/1", "course/2", "course/3"]


def test_an_immediate_first_email_goes_even_after_another_that_day(
    tmp_path: Path, engine: Engine, clock: FrozenClock
) -> None:
    root = tmp_path / "content"
    sequence(root, "course", lessons=2)
    sequence(
        root,
        "magnet",
        "[[triggers]]",
        'on = "tag_added"',
        'tag = "magnet"',
        lessons=2,
        first="immediately",
    )
    rt = runtime(root, tmp_path, engine, clock)
    sid = add_subscriber(rt, "a@example.com")
    clock.advance(NY_7AM)
    run_tick(rt)  # course/1 at 07:00
    clock.advance(timedelta(hours=3))
    with rt.transaction() as session:
        handle(rt, session, "tag_added", "magnet", [sid], clock())
    run_tick(rt)  # magnet/1 at once, the same day
    assert sent_keys(rt) == ["course/1", "magnet/1"]
    run_days(rt, clock, 3)
    assert sorted(Counter(k.split("/")[0] for k in sent_keys(rt)).items()) == [
        ("course", 2),
        ("magnet", 2),
    ]
    with rt.transaction() as session:
        statuses = set(session.scalars(select(Enrollment.status)))
    assert statuses == {EnrollmentStatus.COMPLETED}


def test_a_human_click_on_a_named_link_starts_its_sequence_a_machine_click_does_not(
    tmp_path: Path, engine: Engine, clock: FrozenClock
) -> None:
    from drip.ingest.events import Event, EventType, store

    root = tmp_path / "content"
    sequence(root, "course", first="immediately")
    link = 'link = "https://example.com/5k-plan"'
    sequence(root, "plan", "[[triggers]]", 'on = "clicked"', link)
    rt = runtime(root, tmp_path, engine, clock)
    human = add_subscriber(rt, "h@example.com")
    scanner = add_subscriber(rt, "s@example.com")
    run_tick(rt)
    with rt.transaction() as session:
        deliveries = {s: d for s, d in session.execute(select(Delivery.subscriber_id, Delivery.id))}
    clock.advance(timedelta(minutes=30))
    browser = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Safari/605.1.15"

    def click(sid: int, head: bool) -> Event:
        return Event(
            type=EventType.CLICKED,
            occurred_at=clock(),
            provider="drip",
            provider_event_id=f"click-{sid}",
            delivery_id=deliveries[sid],
            url="https://example.com/5k-plan?utm_source=drip#top",
            user_agent=browser,
            head=head,
        )

    store(rt, [click(human, head=False), click(scanner, head=True)])
    state = enrollments(rt)
    assert state[(human, "plan")] == ("active", 1, "clicked:https://example.com/5k-plan")
    assert (scanner, "plan") not in state


@pytest.mark.parametrize("command", ["worker", "beat", "serve"])
def test_workers_refuse_to_start_on_a_trigger_cycle_or_a_dangling_form(
    tmp_path: Path, command: str
) -> None:
    from tests.test_cli_workers import run

    root = tmp_path / "content"
    sequence(root, "a", "[[triggers]]", 'on = "completed"', 'sequence = "b"')
    sequence(root, "b", "[[triggers]]", 'on = "completed"', 'sequence = "a"')
    sequence(root, "c", "[[triggers]]", 'on = "form"', 'form = "ghost"')
    result = run(command, tmp_path, DRIP_CONTENT_DIR=str(root), DRIP_COURSE_SEQUENCE="a")
    assert result.returncode == 1
    assert "sequence cycle a -> b -> a" in result.stderr
    assert "trigger on form: 'ghost' names no form" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broadcast_does_not_count_as_the_days_sequence_email(
    tmp_path: Path, engine: Engine, clock: FrozenClock
) -> None:
    from tests.broadcast_support import new_broadcast, run_pages, send_all, start_now

    root = tmp_path / "content"
    sequence(root, "course")
    sequence(root, "other", "[[triggers]]", 'on = "tag_added"', 'tag = "x"')
    rt = runtime(root, tmp_path, engine, clock)
    add_subscriber(rt, "a@example.com")
    clock.advance(NY_7AM - timedelta(hours=1))  # 06:00 in New York: the newsletter goes
    broadcast = new_broadcast(rt)
    _, batches = run_pages(rt, broadcast, start_now(rt, broadcast))
    assert send_all(rt, batches).sent == 1
    clock.advance(timedelta(hours=1))  # 07:00: the lesson goes all the same
    run_tick(rt)
    assert sent_keys(rt) == [f"broadcast/{broadcast}", "course/1"]


def test_completing_a_sequence_is_an_outgoing_webhook_event(
    tmp_path: Path, engine: Engine, clock: FrozenClock
) -> None:
    import json

    from drip import outgoing
    from drip.models import OutgoingWebhook
    from drip.outgoing_endpoints import Endpoint

    root = tmp_path / "content"
    sequence(root, "course", lessons=1, first="immediately")
    hook = Endpoint("https://crm.test/hook", frozenset({outgoing.SEQUENCE_COMPLETED}), "whsec_AA==")
    settings = make_settings(
        tmp_path, content_dir=root, course_sequence="course", outgoing_webhooks=(hook,)
    )
    rt = Runtime.build(settings, engine=engine, backend=MemoryBackend(clock=clock), clock=clock)
    sid = add_subscriber(rt, "a@example.com")
    run_tick(rt)
    with rt.sessions() as session:
        bodies = [json.loads(row.body) for row in session.scalars(select(OutgoingWebhook))]
    assert [(b["type"], b["data"]["sequence"], b["data"]["subscriber_id"]) for b in bodies] == [
        (outgoing.SEQUENCE_COMPLETED, "course", sid)
    ]


def test_the_day_is_the_subscribers_local_day_not_utcs(
    tmp_path: Path, engine: Engine, clock: FrozenClock
) -> None:
    """Tokyo (UTC+9): a late lesson at 23:00 and a morning one at 07:00 the next local day are
    two days; a second late one that evening is a second email that day and waits."""
    from drip.engine.automations import start

    root = tmp_path / "content"
    sequence(root, "course", "priority = 1", lessons=2, hour=23)
    sequence(root, "morning", "priority = 0", lessons=1, hour=7)
    rt = runtime(root, tmp_path, engine, clock)
    zone = "Asia/Tokyo"
    sid = add_subscriber(rt, "a@example.com", zone=zone, enroll_now=False)
    with rt.transaction() as session:
        start(session, [sid], rt.library["course"], clock(), zone, "manual")
        start(session, [sid], rt.library["morning"], clock(), zone, "manual")
    run_days(rt, clock, 4)
    backend = rt.backend
    assert isinstance(backend, MemoryBackend)
    sent = [
        (m.message.message_key, m.sent_at.astimezone(ZoneInfo(zone)).strftime("%d %H:%M"))
        for m in backend.outbox
    ]
    # START is 2 March 00:00 UTC, 09:00 in Tokyo: the morning lesson waits for the 3rd.
    assert sent == [("course/1", "02 23:00"), ("morning/1", "03 07:00"), ("course/2", "04 23:00")]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_an_install_from_before_automations_keeps_sending_what_it_sent(
    tmp_path: Path, clock: FrozenClock, backend: str, request: pytest.FixtureRequest
) -> None:
    """Migrated from 0008 (one course, ``on_complete``): an enrollment at lesson 6 gets lesson 7,
    then the upsell, exactly as before; nothing else starts."""
    from sqlalchemy import text

    from drip.db import make_engine
    from drip.migrate import upgrade
    from tests.conftest import _drop_database, _ensure_database

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    else:  # a database of its own, next to the session's
        session_url = request.getfixturevalue("pg_engine").url
        url = session_url.set(database=f"{session_url.database}_old").render_as_string(False)
        _ensure_database(url)
    engine = make_engine(url)
    upgrade(engine, "0008")
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into subscribers (id, email, first_name, time_zone, status, source,"
                " course_emails, newsletter, created_at, confirmed_at)"
                " values (1, 'old@example.com', 'Old', 'America/New_York', 'active', 'form',"
                " true, true, :now, :now)"
            ),
            {"now": clock()},
        )
        conn.execute(
            text(
                "insert into enrollments (subscriber_id, sequence, position, status,"
                " next_send_at, enrolled_at) values (1, 'glute-accelerator', 6, 'active', :now,"
                " :now)"
            ),
            {"now": clock()},
        )
    upgrade(engine)
    try:
        settings = make_settings(tmp_path)
        rt = Runtime.build(settings, engine=engine, backend=MemoryBackend(clock=clock), clock=clock)
        run_days(rt, clock, 5)
        assert sent_keys(rt) == [
            "glute-accelerator/7",
            "runners-lab-upsell/1",
            "runners-lab-upsell/2",
            "runners-lab-upsell/3",
        ]
        state = enrollments(rt)
        assert state[(1, "glute-accelerator")] == ("completed", 1, None)
        assert state[(1, "runners-lab-upsell")] == (
            "completed",
            1,
            "completed:glute-accelerator",
        )
        assert len(state) == 2
    finally:
        engine.dispose()
        if backend == "postgres":
            _drop_database(url)
