"""CSV import (Kit, Mailchimp, drip's own export) and export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from drip.cli.main import main
from drip.esp.memory import MemoryBackend
from drip.models import Consent, Enrollment, Subscriber, SubscriberStatus, Suppression
from drip.runtime import Runtime
from drip.settings import Settings
from drip.subscribers.csv_export import write_csv
from drip.subscribers.importer import import_file
from drip.suppress import is_suppressed, suppress, suppress_since
from tests.conftest import truncate_all
from tests.helpers import add_subscriber, run_tick
from tests.web_support import count, subscriber, web_settings

IMPORTS = Path(__file__).resolve().parent / "fixtures" / "imports"
KIT = (IMPORTS / "kit.csv").read_text(encoding="utf-8")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return web_settings(tmp_path)


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_kit_export_maps_states_names_tags_and_dates(rt: Runtime, tmp_path: Path) -> None:
    report = import_file(rt, _file(tmp_path, "kit.csv", KIT))
    assert report.written
    assert (report.created, report.unsubscribed, report.suppressed) == (2, 1, 2)
    assert [str(i) for i in report.skipped] == [
        "line 6: not confirmed on the old platform: left out"
    ]
    with rt.sessions() as session:
        ana = subscriber(session, "ana@example.com")
        assert (ana.status, ana.first_name) == (SubscriberStatus.ACTIVE, "Ana")
        assert sorted(t.name for t in ana.tags) == ["5k", "glutes"]
        assert ana.confirmed_at == datetime(2024, 1, 15, 8, 30, tzinfo=UTC)
        assert ana.created_at == datetime(2024, 1, 15, 8, 30, tzinfo=UTC)
        consent = session.scalars(select(Consent).where(Consent.subscriber_id == ana.id)).one()
        assert (consent.action, consent.source) == ("import", "import:kit.csv")
        assert "2024-01-15" in consent.text
        assert subscriber(session, "bob@example.com").status == SubscriberStatus.UNSUBSCRIBED
        assert subscriber(session, "fay@example.com").status == SubscriberStatus.ACTIVE
        assert is_suppressed(session, "cleo@example.com")
        assert is_suppressed(session, "dan@example.com")
        reasons = sorted(session.scalars(select(Suppression.reason)))
        assert reasons == ["bounce", "complaint"]
        assert count(session, Subscriber, Subscriber.email == "eve@example.com") == 0
        assert count(session, Enrollment) == 0  # imported people aren't put on the course...


def test_imported_tags_start_no_sequence(rt: Runtime, tmp_path: Path) -> None:
    """A list moved from another tool is not a crowd asking for lead magnets today: the tag of
    the shipped Mid-Stance Checklist, imported, is stored and starts nothing."""
    text = "first_name,email_address,state,created_at,tags\n"
    text += "Ana,ana@example.com,active,2024-01-15T08:30:00Z,mid-stance\n"
    import_file(rt, _file(tmp_path, "kit.csv", text))
    with rt.sessions() as session:
        assert [t.name for t in subscriber(session, "ana@example.com").tags] == ["mid-stance"]
        assert count(session, Enrollment) == 0
    assert [s.slug for s in rt.automations.started_by("tag_added", "mid-stance")] == [
        "mid-stance-checklist"
    ]  # the same tag added by the API or a form would start it


def test_enroll_puts_new_active_subscribers_on_the_course(rt: Runtime, tmp_path: Path) -> None:
    import_file(rt, _file(tmp_path, "kit.csv", KIT), enroll_new=True)
    with rt.sessions() as session:
        assert count(session, Enrollment) == 2  # ...unless asked: Ana and Fay


def test_mailchimp_exports_one_file_per_status(rt: Runtime, tmp_path: Path) -> None:
    for name in ("subscribed", "unsubscribed", "cleaned"):
        report = import_file(rt, IMPORTS / f"mailchimp_{name}.csv")
        assert report.written and not report.invalid, report
    with rt.sessions() as session:
        ana = subscriber(session, "ana@example.com")
        assert (ana.status, ana.time_zone) == ("active", "Europe/Berlin")
        assert ana.confirmed_at == datetime(2024, 3, 1, 14, 6, tzinfo=UTC)
        assert sorted(t.name for t in ana.tags) == ["hip drills", "vip"]
        gus = subscriber(session, "gus@example.com")
        assert (gus.status, gus.unsubscribed_at) == (
            "unsubscribed",
            datetime(2024, 1, 5, 9, tzinfo=UTC),
        )
        assert is_suppressed(session, "hal@example.com")
        assert count(session, Subscriber, Subscriber.email == "hal@example.com") == 0


BAD = """email,first_name,status,created_at
good@example.com,Good,active,2024-01-01
not-an-address,Bad,active,2024-01-01
"multi
line@example.com",X,active,
ok2@example.com,"Evil\r\nBcc: x@example.org",active,
ok3@example.com,Ok,frozen,
ok4@example.com,Ok,active,31/12/2024
ok5@example.com,Ok,active,2024-02-02
"""


def test_bad_rows_are_reported_by_line_and_nothing_is_written(rt: Runtime, tmp_path: Path) -> None:
    report = import_file(rt, _file(tmp_path, "bad.csv", BAD))
    assert not report.written
    lines = [(i.line, i.reason.split(":")[0]) for i in report.invalid]
    assert lines == [
        (3, "email"),
        (4, "email"),
        (6, "first_name"),  # its quoted name holds a line break: the row spans lines 6-7
        (8, "status"),
        (9, "signup date"),
    ]
    with rt.sessions() as session:
        assert count(session, Subscriber) == 0


def test_skip_invalid_imports_the_good_rows_and_reports_the_rest(
    rt: Runtime, tmp_path: Path
) -> None:
    report = import_file(rt, _file(tmp_path, "bad.csv", BAD), skip_invalid=True)
    assert report.written and report.created == 2 and len(report.invalid) == 5
    with rt.sessions() as session:
        assert set(session.scalars(select(Subscriber.email))) == {
            "good@example.com",
            "ok5@example.com",
        }


def test_a_dry_run_counts_exactly_but_writes_nothing(rt: Runtime, tmp_path: Path) -> None:
    dry = import_file(rt, _file(tmp_path, "kit.csv", KIT), dry_run=True)
    assert not dry.written
    with rt.sessions() as session:
        assert count(session, Subscriber) == 0
        assert count(session, Suppression) == 0
    real = import_file(rt, _file(tmp_path, "kit.csv", KIT))
    assert (dry.created, dry.unsubscribed, dry.suppressed) == (
        real.created,
        real.unsubscribed,
        real.suppressed,
    )


def test_suppressed_erased_and_unsubscribed_addresses_are_never_reactivated(
    rt: Runtime, tmp_path: Path, memory_backend: MemoryBackend
) -> None:
    add_subscriber(rt, "left@example.com", status=SubscriberStatus.UNSUBSCRIBED, enroll_now=False)
    with rt.transaction() as session:
        suppress(session, "bounced@example.com", "bounce")
        suppress(session, "erased@example.com", "erased")
    text = (
        "email,status\nleft@example.com,active\nbounced@example.com,active\n"
        "erased@example.com,subscribed\n"
    )
    report = import_file(rt, _file(tmp_path, "list.csv", text), enroll_new=True)
    assert report.created == 0
    assert [i.line for i in report.skipped] == [2, 3, 4]
    assert "never resubscribes" in report.skipped[0].reason
    with rt.sessions() as session:
        assert subscriber(session, "left@example.com").status == "unsubscribed"
        assert count(session, Subscriber) == 1
    assert memory_backend.outbox == []


def test_an_import_honours_an_unsubscribe_and_merges_into_existing_subscribers(
    rt: Runtime, tmp_path: Path
) -> None:
    add_subscriber(rt, "ana@example.com", name="Ana")
    add_subscriber(rt, "bob@example.com", name="", enroll_now=False)
    text = (
        "email,first_name,tags,status\nana@example.com,X,new-tag,unsubscribed\n"
        "bob@example.com,Bob,vip,active\n"
    )
    report = import_file(rt, _file(tmp_path, "x.csv", text))
    assert (report.updated, report.unsubscribed) == (2, 1)
    with rt.sessions() as session:
        ana = subscriber(session, "ana@example.com")
        assert (ana.status, ana.first_name) == ("unsubscribed", "Ana")
        assert session.scalars(select(Enrollment.status)).one() == "stopped"
        bob = subscriber(session, "bob@example.com")
        assert (bob.first_name, [t.name for t in bob.tags]) == ("Bob", ["vip"])


def test_duplicates_in_a_file_are_left_out_with_the_line_of_the_first(
    rt: Runtime, tmp_path: Path
) -> None:
    text = "email\nana@example.com\n\nANA@example.com\n"
    report = import_file(rt, _file(tmp_path, "dup.csv", text))
    assert report.created == 1
    assert [str(i) for i in report.skipped] == ["line 4: same address as line 2: left out"]


def test_unusable_files_are_refused_whole(rt: Runtime, tmp_path: Path) -> None:
    from drip.errors import InvalidInput

    with pytest.raises(InvalidInput, match="no email column"):
        import_file(rt, _file(tmp_path, "x.csv", "name,phone\nAna,123\n"))
    with pytest.raises(InvalidInput, match="empty"):
        import_file(rt, _file(tmp_path, "e.csv", ""))
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("email,first_name\nzoe@example.com,Zoë\n".encode("latin-1"))
    with pytest.raises(InvalidInput, match="UTF-8"):
        import_file(rt, latin1)


def test_the_cli_shows_progress_reports_rows_and_exits_1_on_bad_rows(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("drip.cli.subscribers._runtime", lambda: rt)
    runner = CliRunner()
    bad = _file(tmp_path, "bad.csv", BAD)
    result = runner.invoke(main, ["subscribers", "import", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3: invalid: email" in result.output
    assert "nothing imported" in result.output
    result = runner.invoke(main, ["subscribers", "import", str(bad), "--skip-invalid"])
    assert result.exit_code == 0, result.output
    assert "2 new" in result.output and "5 invalid" in result.output
    many = "email\n" + "".join(f"user{i}@example.com\n" for i in range(1200))
    big = _file(tmp_path, "big.csv", many)
    dry = runner.invoke(main, ["subscribers", "import", str(big), "--dry-run"])
    assert dry.exit_code == 0 and "1200 new" in dry.output and "dry run" in dry.output
    assert "importing" in dry.output  # the progress bar's label
    done = runner.invoke(main, ["subscribers", "import", str(big)])
    assert done.exit_code == 0
    with rt.sessions() as session:
        assert count(session, Subscriber) == 1202


def test_the_export_writes_csv_that_the_import_reads_back(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_file(rt, _file(tmp_path, "kit.csv", KIT))
    add_subscriber(rt, "formula@example.com", name='=HYPERLINK("http://evil")')
    with rt.transaction() as session:
        erased = subscriber(session, "fay@example.com")
        erased.email = None
        erased.status = "erased"
    monkeypatch.setattr("drip.cli.subscribers._runtime", lambda: rt)
    out = tmp_path / "export.csv"
    result = CliRunner().invoke(main, ["subscribers", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert {r["email"] for r in rows} == {
        "ana@example.com",
        "bob@example.com",
        "formula@example.com",
    }
    formula = next(r for r in rows if r["email"] == "formula@example.com")
    assert formula["first_name"].startswith("'=")  # a spreadsheet shows it, doesn't run it
    ana = next(r for r in rows if r["email"] == "ana@example.com")
    assert (ana["status"], ana["tags"]) == ("active", "5k,glutes")

    other = Runtime.build(
        web_settings(tmp_path / "b"), engine=_fresh(tmp_path), clock=rt.clock, backend=rt.backend
    )
    report = import_file(other, out)
    assert (report.created, report.unsubscribed, report.invalid) == (2, 1, [])
    with other.sessions() as session:
        assert subscriber(session, "formula@example.com").first_name == '=HYPERLINK("http://evil")'
        assert sorted(t.name for t in subscriber(session, "ana@example.com").tags) == [
            "5k",
            "glutes",
        ]
    stdout = CliRunner().invoke(main, ["subscribers", "export"])
    assert stdout.stdout.startswith("email,first_name,status")


def _fresh(tmp_path: Path) -> object:
    from drip.db import make_engine
    from drip.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'other.sqlite3'}")
    upgrade(engine)
    return engine


def test_write_csv_pages_through_every_subscriber(rt: Runtime) -> None:
    for i in range(5):
        add_subscriber(rt, f"u{i}@example.com", enroll_now=False)
    buffer = io.StringIO()
    with rt.sessions() as session:
        assert write_csv(session, buffer, page=2) == 5
    assert len(buffer.getvalue().strip().splitlines()) == 6


# --------------------------------------------------------------------------- suppressions


def _fresh_runtime(rt: Runtime, tmp_path: Path) -> Runtime:
    """An empty database of the same kind as ``rt``'s: PostgreSQL emptied, or a new SQLite."""
    if rt.engine.dialect.name == "postgresql":
        truncate_all(rt.engine)
        return rt
    return Runtime.build(rt.settings, engine=_fresh(tmp_path), clock=rt.clock, backend=rt.backend)


def test_suppressed_subscribers_travel_through_export_and_import_as_suppressions(
    rt: Runtime, tmp_path: Path, memory_backend: MemoryBackend
) -> None:
    for email in ("bounced@example.com", "complained@example.com", "healthy@example.com"):
        add_subscriber(rt, email, name="Kim", tags=["5k"], enroll_now=False)
    bounced_at = datetime(2026, 2, 3, 9, 30, tzinfo=UTC)
    with rt.transaction() as session:
        suppress_since(session, "bounced@example.com", "bounce", bounced_at, "sendgrid: 550")
        suppress(session, "complained@example.com", "complaint")
    out = tmp_path / "export.csv"
    with out.open("w", encoding="utf-8", newline="") as handle, rt.sessions() as session:
        assert write_csv(session, handle) == 3
    rows = {r["email"]: r for r in csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")))}
    bounced, complained = rows["bounced@example.com"], rows["complained@example.com"]
    assert bounced["suppressed_reason"] == "bounce"
    assert datetime.fromisoformat(bounced["suppressed_at"]) == bounced_at
    assert complained["suppressed_reason"] == "complaint"
    assert complained["suppressed_at"]  # the date it was suppressed here
    assert (
        rows["healthy@example.com"]["suppressed_reason"],
        rows["healthy@example.com"]["suppressed_at"],
    ) == ("", "")

    fresh = _fresh_runtime(rt, tmp_path)
    report = import_file(fresh, out, enroll_new=True)
    assert (report.created, report.suppressed, report.invalid) == (1, 2, [])
    with fresh.sessions() as session:
        assert is_suppressed(session, "bounced@example.com")
        assert is_suppressed(session, "complained@example.com")
        listed = {s.reason: s for s in session.scalars(select(Suppression))}
        assert sorted(listed) == ["bounce", "complaint"]
        assert listed["bounce"].created_at == bounced_at  # the date travels too
        assert count(session, Subscriber) == 1  # neither became a subscriber here
        healthy = subscriber(session, "healthy@example.com")
        assert (healthy.status, healthy.first_name, healthy.time_zone) == (
            SubscriberStatus.ACTIVE,
            "Kim",
            "America/New_York",
        )
        assert [t.name for t in healthy.tags] == ["5k"]
        assert healthy.confirmed_at == datetime.fromisoformat(
            rows["healthy@example.com"]["confirmed_at"]
        )
    memory_backend.outbox.clear()
    _, sent = run_tick(fresh)
    assert sent.sent == 1
    assert [m.to for m in memory_backend.outbox] == ["healthy@example.com"]
    # The file again: no address is un-suppressed, nothing changes.
    again = import_file(fresh, out)
    assert (again.created, again.suppressed, again.updated) == (0, 0, 1)
    assert [i.line for i in again.skipped] == sorted(
        i for i, r in enumerate(rows.values(), start=2) if r["suppressed_reason"]
    )


def test_a_suppression_in_the_file_stops_an_existing_subscriber(
    rt: Runtime, tmp_path: Path, memory_backend: MemoryBackend
) -> None:
    add_subscriber(rt, "ana@example.com")
    text = "email,status,suppressed_reason,suppressed_at\nana@example.com,active,Complaint,\n"
    report = import_file(rt, _file(tmp_path, "x.csv", text))
    assert report.suppressed == 1
    with rt.sessions() as session:
        assert is_suppressed(session, "ana@example.com")
        assert session.scalars(select(Enrollment.status)).one() == "stopped"
    memory_backend.outbox.clear()
    run_tick(rt)
    assert memory_backend.outbox == []


MALFORMED = """email,status,suppressed_reason,suppressed_at
ok@example.com,active,,
a@example.com,active,bounce 2026-11-03,
b@example.com,active,bounce,03/11/2026
c@example.com,active,,2026-11-03
d@example.com,active,complaint,2026-11-03
"""


def test_a_malformed_suppression_is_refused_naming_the_row_and_the_column(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _file(tmp_path, "moved.csv", MALFORMED)
    report = import_file(rt, path)
    assert not report.written
    assert [str(i) for i in report.invalid] == [
        "line 3: suppressed_reason: unknown reason 'bounce 2026-11-03' "
        "(expected bounce, complaint, invalid, manual, erased)",
        "line 4: suppressed_at: unreadable date '03/11/2026' (expected YYYY-MM-DD[ HH:MM:SS])",
        "line 5: suppressed_reason: is empty but suppressed_at is set "
        "(bounce, complaint, invalid, manual, erased)",
    ]
    with rt.sessions() as session:
        assert count(session, Subscriber) == 0
        assert count(session, Suppression) == 0
    monkeypatch.setattr("drip.cli.subscribers._runtime", lambda: rt)
    result = CliRunner().invoke(main, ["subscribers", "import", str(path)])
    assert result.exit_code == 1
    assert f"{path}:4: invalid: suppressed_at: unreadable date" in result.output
