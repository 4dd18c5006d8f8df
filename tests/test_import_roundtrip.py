"""The import reads back what the export writes: opt-outs, sources, and rows that disagree.

Issue 18, item 1: a subscriber exported with the newsletter off came back with it on. Every test
runs on SQLite and PostgreSQL (the ``rt`` fixture).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from drip.broadcasts.segments import context_of, parse_segment, segment_filter
from drip.cli.main import main
from drip.db import make_engine
from drip.esp.memory import MemoryBackend
from drip.migrate import upgrade
from drip.models import Enrollment, Subscriber, SubscriberStatus, Suppression
from drip.runtime import Runtime
from drip.subscribers.csv_export import write_csv
from drip.subscribers.importer import ImportReport, import_file
from drip.suppress import suppress
from tests.conftest import truncate_all
from tests.helpers import add_subscriber, run_tick
from tests.web_support import count, subscriber


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _export(rt: Runtime, path: Path) -> dict[str, dict[str, str]]:
    with path.open("w", encoding="utf-8", newline="") as handle, rt.sessions() as session:
        write_csv(session, handle)
    with path.open(encoding="utf-8", newline="") as handle:
        return {row["email"]: row for row in csv.DictReader(handle)}


def _fresh(rt: Runtime, tmp_path: Path) -> Runtime:
    """An empty database of the same kind as ``rt``'s: PostgreSQL emptied, or a new SQLite."""
    if rt.engine.dialect.name == "postgresql":
        truncate_all(rt.engine)
        return rt
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
    upgrade(engine)
    return Runtime.build(rt.settings, engine=engine, clock=rt.clock, backend=rt.backend)


def _newsletter_audience(rt: Runtime) -> set[str]:
    """Who the next newsletter to everyone would go to (suppressions aside)."""
    everyone = parse_segment(None)
    with rt.sessions() as session:
        where = segment_filter(session, everyone, context_of(rt), rt.clock())
        return set(session.scalars(select(Subscriber.email).where(where)))


def _conflicts(report: ImportReport) -> list[str]:
    return [str(issue) for issue in report.conflicts]


def test_a_round_trip_keeps_newsletter_off_course_emails_off_and_the_source(
    rt: Runtime, tmp_path: Path, memory_backend: MemoryBackend
) -> None:
    for email in ("news-off", "course-off", "both-on", "gone", "bounced"):
        add_subscriber(rt, f"{email}@example.com", enroll_now=False)
    with rt.transaction() as session:
        subscriber(session, "news-off@example.com").newsletter = False
        subscriber(session, "course-off@example.com").course_emails = False
        for email, source in (
            ("news-off", "homepage-footer"),
            ("course-off", "api:running-quiz"),
            ("both-on", "+quiz"),
        ):
            subscriber(session, f"{email}@example.com").source = source
        gone = subscriber(session, "gone@example.com")
        gone.status, gone.unsubscribed_at = SubscriberStatus.UNSUBSCRIBED, rt.clock()
        suppress(session, "bounced@example.com", "bounce")
    rows = _export(rt, tmp_path / "export.csv")
    choices = {email: (r["course_emails"], r["newsletter"]) for email, r in rows.items()}
    assert choices == {
        "news-off@example.com": ("true", "false"),
        "course-off@example.com": ("false", "true"),
        "both-on@example.com": ("true", "true"),
        # no mail goes to them: the file says so, whatever they had chosen before
        "gone@example.com": ("false", "false"),
        "bounced@example.com": ("false", "false"),
    }
    assert rows["both-on@example.com"]["source"] == "'+quiz"  # no formula, still

    fresh = _fresh(rt, tmp_path)
    report = import_file(fresh, tmp_path / "export.csv", enroll_new=True)
    assert (report.created, report.unsubscribed, report.suppressed) == (3, 1, 1)
    assert (report.invalid, report.conflicts) == ([], [])
    with fresh.sessions() as session:
        imported = {
            s.email: (s.course_emails, s.newsletter, s.source)
            for s in session.scalars(select(Subscriber))
        }
        enrolled = set(
            session.scalars(
                select(Subscriber.email).join(Enrollment).where(Enrollment.status == "active")
            )
        )
    assert imported == {
        "news-off@example.com": (True, False, "homepage-footer"),
        "course-off@example.com": (False, True, "api:running-quiz"),
        "both-on@example.com": (True, True, "+quiz"),
        "gone@example.com": (False, False, "import:export.csv"),  # had none: the file's name
    }
    assert enrolled == {"news-off@example.com", "both-on@example.com"}  # --enroll, course on
    assert _newsletter_audience(fresh) == {"course-off@example.com", "both-on@example.com"}
    memory_backend.outbox.clear()
    run_tick(fresh)
    assert sorted(m.to for m in memory_backend.outbox) == [
        "both-on@example.com",
        "news-off@example.com",
    ]


CONFLICTS = """email,status,course_emails,newsletter,unsubscribed_at,suppressed_reason
fine@example.com,active,true,true,,
left@example.com,unsubscribed,false,true,2026-01-05T09:00:00+00:00,
edited@example.com,active,true,false,2026-01-05T09:00:00+00:00,
bounced@example.com,active,false,yes,,bounce
neither@example.com,active,0,No,,
"""


def test_rows_that_disagree_take_the_reading_that_sends_no_mail_and_say_so(
    rt: Runtime, tmp_path: Path, memory_backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _file(tmp_path, "edited.csv", CONFLICTS)
    monkeypatch.setattr("drip.cli.subscribers._runtime", lambda: rt)
    result = CliRunner().invoke(main, ["subscribers", "import", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"{path}:3: conflict: unsubscribed, but newsletter is true" in result.output
    assert f"{path}:6: conflict: course_emails and newsletter are both false" in result.output
    assert "5 conflicts" in result.output

    report = import_file(rt, path, enroll_new=True)
    assert report.written and report.invalid == []
    assert _conflicts(report) == [
        "line 3: unsubscribed, but newsletter is true: kept unsubscribed, no mail",
        "line 4: status is active, but the row has an unsubscribe date: "
        "imported as unsubscribed, no mail",
        "line 4: unsubscribed, but course_emails is true: kept unsubscribed, no mail",
        "line 5: suppressed (bounce), but newsletter is true: "
        "only added to the suppression list, no mail",
        "line 6: course_emails and newsletter are both false, which means unsubscribed from "
        "everything: imported as unsubscribed, no mail",
    ]
    with rt.sessions() as session:
        states = {
            s.email: (s.status, s.course_emails, s.newsletter)
            for s in session.scalars(select(Subscriber))
        }
        assert session.scalars(select(Suppression.reason)).all() == ["bounce"]
    assert states == {
        "fine@example.com": ("active", True, True),
        "left@example.com": ("unsubscribed", False, False),
        "edited@example.com": ("unsubscribed", False, False),
        "neither@example.com": ("unsubscribed", False, False),
    }
    assert _newsletter_audience(rt) == {"fine@example.com"}
    memory_backend.outbox.clear()
    run_tick(rt)
    assert [m.to for m in memory_backend.outbox] == ["fine@example.com"]


BAD_CHOICES = """email,course_emails,newsletter
ok@example.com,TRUE,Yes
one@example.com, 1 ,no
maybe@example.com,true,maybe
y@example.com,Y,1
blank@example.com,,
"""


def test_a_bad_yes_no_value_names_the_column_the_value_and_the_row(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _file(tmp_path, "choices.csv", BAD_CHOICES)
    report = import_file(rt, path)
    assert not report.written
    assert [str(i) for i in report.invalid] == [
        "line 4: newsletter: 'maybe' is not a yes/no value (expected true/false, 1/0, yes/no)",
        "line 5: course_emails: 'Y' is not a yes/no value (expected true/false, 1/0, yes/no)",
    ]
    with rt.sessions() as session:
        assert count(session, Subscriber) == 0

    report = import_file(rt, path, skip_invalid=True)
    assert report.written and report.created == 3
    with rt.sessions() as session:
        kept = {
            s.email: (s.course_emails, s.newsletter) for s in session.scalars(select(Subscriber))
        }
    assert kept == {
        "ok@example.com": (True, True),
        "one@example.com": (True, False),
        "blank@example.com": (True, True),  # an empty cell says nothing: on, as without it
    }

    monkeypatch.setattr("drip.cli.subscribers._runtime", lambda: rt)
    result = CliRunner().invoke(main, ["subscribers", "import", str(path)])
    assert result.exit_code == 1
    assert f"{path}:4: invalid: newsletter: 'maybe' is not a yes/no value" in result.output


def test_a_reimport_never_undoes_an_opt_out_on_either_side(
    rt: Runtime, tmp_path: Path, memory_backend: MemoryBackend
) -> None:
    add_subscriber(rt, "off-here@example.com", newsletter=False, enroll_now=False)
    add_subscriber(rt, "course-here@example.com")  # enrolled, both on
    add_subscriber(rt, "news-here@example.com", enroll_now=False)
    add_subscriber(rt, "out-here@example.com", status=SubscriberStatus.UNSUBSCRIBED)
    with rt.transaction() as session:
        subscriber(session, "news-here@example.com").course_emails = False
    text = (
        "email,status,course_emails,newsletter\n"
        "off-here@example.com,active,true,true\n"
        "course-here@example.com,active,false,true\n"
        "news-here@example.com,active,TRUE,false\n"
        "out-here@example.com,active,true,true\n"
    )
    report = import_file(rt, _file(tmp_path, "again.csv", text), enroll_new=True)
    assert report.written and report.updated == 3
    assert _conflicts(report) == [
        "line 2: newsletter is true, but off here: kept off, an import never turns mail back on",
        "line 4: course_emails is true, but off here: kept off, an import never turns mail back on",
    ]
    assert [str(i) for i in report.skipped] == [
        "line 5: unsubscribed here: an import never resubscribes"
    ]
    with rt.sessions() as session:
        states = {
            s.email: (s.status, s.course_emails, s.newsletter)
            for s in session.scalars(select(Subscriber))
        }
        enrollments = {
            email: status
            for email, status in session.execute(
                select(Subscriber.email, Enrollment.status).join(Enrollment)
            )
        }
    assert states == {
        "off-here@example.com": ("active", True, False),
        "course-here@example.com": ("active", False, True),  # the file's opt-out wins
        "news-here@example.com": ("active", False, False),
        "out-here@example.com": ("unsubscribed", True, True),
    }
    # The file's course opt-out stops the course; --enroll starts it only for course_emails on.
    assert enrollments["course-here@example.com"] == "stopped"
    assert enrollments["off-here@example.com"] == "active"
    assert "news-here@example.com" not in enrollments
    assert _newsletter_audience(rt) == {"course-here@example.com"}
    memory_backend.outbox.clear()
    run_tick(rt)
    assert [m.to for m in memory_backend.outbox] == ["off-here@example.com"]


def test_the_source_is_kept_as_given_trimmed_and_cut_to_the_column(
    rt: Runtime, tmp_path: Path
) -> None:
    add_subscriber(rt, "known@example.com", enroll_now=False)
    add_subscriber(rt, "blank-here@example.com", enroll_now=False)  # no source here
    with rt.transaction() as session:
        subscriber(session, "known@example.com").source = "form:homepage"
    long = "x" * 150
    text = (
        "email,source\n"
        "known@example.com,api:elsewhere\n"
        "blank-here@example.com,api:elsewhere\n"
        "trim@example.com,  podcast ad \n"
        f"long@example.com,{long}\n"
        "none@example.com,\n"
        'ctrl@example.com,"quiz\x00\nform"\n'
    )
    report = import_file(rt, _file(tmp_path, "sources.csv", text))
    assert report.written and report.invalid == []
    with rt.sessions() as session:
        sources = {s.email: s.source for s in session.scalars(select(Subscriber))}
    assert sources == {
        "known@example.com": "form:homepage",  # a source already here stays
        "blank-here@example.com": "api:elsewhere",  # an empty one is filled
        "trim@example.com": "podcast ad",
        "long@example.com": "x" * 100,
        "none@example.com": "import:sources.csv",  # no source in the file: the file's name
        "ctrl@example.com": "quizform",
    }
