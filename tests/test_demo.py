"""``drip demo``: the real scheduler over simulated days into the file outbox.

One run (12 days from 2026-03-05, three zones) is shared by the module: it covers the US
daylight-saving change of 2026-03-08 for the New York subscriber. One subscriber per zone signs up
through the default form (the course, then the upsell); one more, in the first zone, through the
lead magnet's form, whose tag starts the Mid-Stance Checklist.
"""

from __future__ import annotations

import email
import json
import re
from collections import defaultdict
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from drip.cli.main import main
from drip.demo import DemoRow, run_demo
from drip.settings import get_settings
from tests.conftest import make_settings

START = date(2026, 3, 5)
DAYS = 12
ZONES = ["America/New_York", "Europe/Berlin", "Australia/Sydney"]
COURSE = [f"glute-accelerator/{n}" for n in range(1, 8)]
UPSELL = [f"runners-lab-upsell/{n}" for n in (1, 2, 3)]
CHECKLIST = [f"mid-stance-checklist/{n}" for n in (1, 2)]
MANIFEST_FIELDS = {"to", "message_key", "sent_at_utc", "sent_at_local", "time_zone", "file"}


class Demo:
    def __init__(self, outbox: Path, rows: list[DemoRow]) -> None:
        self.outbox = outbox
        self.rows = rows
        lines = (outbox / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
        self.lines = lines
        self.entries: list[dict[str, Any]] = [json.loads(line) for line in lines]

    def by_recipient(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for entry in self.entries:
            found[entry["to"]].append(entry)
        return found

    def zone_of(self, address: str) -> str:
        return next(row.zone for row in self.rows if row.email == address)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    tmp = tmp_path_factory.mktemp("demo")
    settings = make_settings(tmp, email_backend="outbox")
    rows = run_demo(settings, start=START, days=DAYS, zones=ZONES, database=tmp / "demo.sqlite3")
    return Demo(settings.outbox_dir, rows)


def _local(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["sent_at_local"])


def _parse_eml(path: Path) -> EmailMessage:
    parsed = email.message_from_bytes(path.read_bytes(), policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    return parsed


# --------------------------------------------------------------------------- outputs


def test_one_row_per_subscriber_each_with_ten_emails_and_two_for_the_lead_magnet(
    demo: Demo,
) -> None:
    assert [row.zone for row in demo.rows] == [*ZONES, ZONES[0]]
    assert [row.form for row in demo.rows] == ["default"] * 3 + ["mid-stance"]
    assert [row.emails for row in demo.rows] == [10, 10, 10, 2]
    assert len({row.email for row in demo.rows}) == 4


def test_the_default_form_gets_the_course_then_the_upsell_the_lead_magnet_form_its_checklist(
    demo: Demo,
) -> None:
    received = demo.by_recipient()

    assert set(received) == {row.email for row in demo.rows}
    for row in demo.rows:
        expected = COURSE + UPSELL if row.form == "default" else CHECKLIST
        assert [e["message_key"] for e in received[row.email]] == expected, row


def test_one_eml_per_manifest_line_and_nothing_else(demo: Demo) -> None:
    files = [e["file"] for e in demo.entries]
    emls = sorted(p.name for p in demo.outbox.glob("*.eml"))

    assert len(demo.lines) == 32
    assert len(set(files)) == len(files)
    assert sorted(files) == emls
    assert {p.name for p in demo.outbox.iterdir()} == set(emls) | {"manifest.jsonl", "index.html"}


def test_manifest_lines_have_every_field(demo: Demo) -> None:
    for entry in demo.entries:
        assert set(entry) >= MANIFEST_FIELDS
        assert all(entry[name] for name in MANIFEST_FIELDS)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["sent_at_utc"])
        assert entry["time_zone"] == demo.zone_of(entry["to"])


def test_manifest_local_and_utc_times_are_the_same_instant(demo: Demo) -> None:
    for entry in demo.entries:
        utc = datetime.fromisoformat(entry["sent_at_utc"].replace("Z", "+00:00"))
        local = _local(entry)
        assert local == utc
        assert local.utcoffset() == utc.astimezone(ZoneInfo(entry["time_zone"])).utcoffset()


def test_index_lists_every_email(demo: Demo) -> None:
    index = (demo.outbox / "index.html").read_text(encoding="utf-8")

    for entry in demo.entries:
        assert f'href="{entry["file"]}"' in index
    assert index.count("<tr><td>") == len(demo.entries)


def test_each_eml_is_the_manifests_email_with_one_click_unsubscribe(demo: Demo) -> None:
    for entry in demo.entries:
        mime = _parse_eml(demo.outbox / entry["file"])
        assert mime.get_content_type() == "multipart/alternative"
        assert mime["To"].addresses[0].addr_spec == entry["to"]
        assert re.fullmatch(r"<https://drip\.test/unsubscribe/[^>\s]+>", mime["List-Unsubscribe"])
        assert mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        text = mime.get_body(preferencelist=("plain",))
        assert text is not None
        assert "%%" not in text.get_content()


def test_each_subscriber_has_a_distinct_unsubscribe_link(demo: Demo) -> None:
    links: dict[str, set[str]] = defaultdict(set)
    for entry in demo.entries:
        links[entry["to"]].add(str(_parse_eml(demo.outbox / entry["file"])["List-Unsubscribe"]))

    assert all(len(found) == 1 for found in links.values())
    assert len({next(iter(found)) for found in links.values()}) == 4


# --------------------------------------------------------------------------- timing


def test_every_email_after_the_first_goes_out_at_seven_local(demo: Demo) -> None:
    for address, entries in demo.by_recipient().items():
        first, *rest = entries
        assert _local(first).date() == START, address  # the welcome lesson, at sign-up
        for entry in rest:
            local = _local(entry)
            assert (local.hour, local.minute, local.second) == (7, 0, 0), entry


def test_new_york_stays_at_seven_across_the_dst_change(demo: Demo) -> None:
    entries = demo.by_recipient()[demo.rows[0].email]
    dst_start = date(2026, 3, 8)

    before = [e for e in entries if _local(e).date() < dst_start]
    after = [e for e in entries if _local(e).date() >= dst_start]

    assert before and after
    assert {_local(e).utcoffset() for e in before} == {timedelta(hours=-5)}
    assert {_local(e).utcoffset() for e in after} == {timedelta(hours=-4)}
    assert {e["sent_at_utc"][11:16] for e in before[1:]} == {"12:00"}
    assert {e["sent_at_utc"][11:16] for e in after} == {"11:00"}


def test_berlin_and_sydney_keep_their_offsets(demo: Demo) -> None:
    received = demo.by_recipient()

    berlin = received[demo.rows[1].email]
    sydney = received[demo.rows[2].email]
    assert {_local(e).utcoffset() for e in berlin} == {timedelta(hours=1)}
    assert {_local(e).utcoffset() for e in sydney} == {timedelta(hours=11)}


def test_never_two_emails_on_one_local_day_per_sequence(demo: Demo) -> None:
    for address, entries in demo.by_recipient().items():
        days: dict[str, list[date]] = defaultdict(list)
        for entry in entries:
            days[entry["message_key"].split("/")[0]].append(_local(entry).date())
        for sequence, sent_on in days.items():
            assert len(sent_on) == len(set(sent_on)), (address, sequence)
            assert sent_on == sorted(sent_on)


def test_lessons_come_on_consecutive_local_days(demo: Demo) -> None:
    for entries in demo.by_recipient().values():
        days = [_local(e).date() for e in entries]
        assert days == [START + timedelta(days=i) for i in range(len(entries))]


def test_summary_rows_match_the_manifest(demo: Demo) -> None:
    received = demo.by_recipient()

    for row in demo.rows:
        assert row.first_local == received[row.email][0]["sent_at_local"]
        assert row.last_local == received[row.email][-1]["sent_at_local"]


def test_a_rerun_starts_from_a_fresh_outbox_and_database(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, email_backend="outbox")
    database = tmp_path / "demo.sqlite3"
    run_demo(settings, start=START, days=2, zones=ZONES[:1], database=database)
    first = (settings.outbox_dir / "manifest.jsonl").read_text(encoding="utf-8")

    rows = run_demo(settings, start=START, days=2, zones=ZONES[:1], database=database)

    again = (settings.outbox_dir / "manifest.jsonl").read_text(encoding="utf-8")
    assert [row.emails for row in rows] == [2, 2]  # the course's first two, the checklist
    assert len(again.splitlines()) == 4
    assert [json.loads(x)["file"] for x in again.splitlines()] == [
        json.loads(x)["file"] for x in first.splitlines()
    ]


# --------------------------------------------------------------------------- the command


@pytest.mark.usefixtures("clean_env")
def test_demo_command_end_to_end(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"

    get_settings.cache_clear()
    result = CliRunner().invoke(
        main,
        ["demo", "--start", "2026-03-05", "--days", "12", "--tz", "America/New_York"],
        env={"DRIP_OUTBOX_DIR": str(outbox), "DRIP_PUBLIC_URL": "https://drip.test"},
    )
    get_settings.cache_clear()

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Simulated 12 days from 2026-03-05 (UTC)." in out
    assert re.search(
        r"subscriber\s+time zone\s+form\s+emails\s+first \(local\)\s+last \(local\)", out
    )
    row = re.search(
        r"^(\S+@example\.com)\s+America/New_York\s+default\s+10\s+(\S+)\s+(\S+)$", out, re.M
    )
    assert re.search(r"^\S+@example\.com\s+America/New_York\s+mid-stance\s+2\s", out, re.M)
    assert row, out
    assert row[2] == "2026-03-05T18:30:00-05:00"
    assert row[3] == "2026-03-14T07:00:00-04:00"
    for label, path in [
        ("Emails:", f"{outbox}/*.eml"),
        ("Manifest:", f"{outbox}/manifest.jsonl"),
        ("Browse:", f"{outbox}/index.html"),
        ("Database:", str(tmp_path / "demo.sqlite3")),
    ]:
        assert re.search(rf"^{label}\s+{re.escape(path)}$", out, re.M), (label, out)
    assert len(list(outbox.glob("*.eml"))) == 12
    assert (outbox / "index.html").is_file()
    assert (tmp_path / "demo.sqlite3").is_file()
    lines = (outbox / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    keys = [json.loads(line)["message_key"] for line in lines]
    assert [k for k in keys if not k.startswith("mid-stance")] == COURSE + UPSELL
    assert [k for k in keys if k.startswith("mid-stance")] == CHECKLIST
