"""``drip broadcast ...`` in-process through click's CliRunner, on the test runtime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from drip.broadcasts import sending
from drip.broadcasts.tick import broadcasts_tick
from drip.cli import broadcast as cli_broadcast
from drip.cli.main import main
from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.runtime import Runtime
from tests.broadcast_support import add_sub, broadcast_row, make_rt, send_all

FILE = """---
subject: "Hill week, {{ first_name }}"
preheader: Three short climbs and why they work.
segment: tags=5k
---
Hi {{ first_name }},

Three short climbs this week. [The Runners Lab]({{ runners_lab_url }})
"""


@pytest.fixture
def cli(
    engine: Engine, tmp_path: Path, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> tuple[Runtime, MemoryBackend]:
    rt, backend = make_rt(engine, tmp_path, clock, broadcast_page_size=2)
    monkeypatch.setattr(cli_broadcast, "_runtime", lambda: rt)
    return rt, backend


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["broadcast", "--as", "cli:tester", *args])


def _draft(tmp_path: Path, text: str = FILE) -> Path:
    path = tmp_path / "news.md"
    path.write_text(text, encoding="utf-8")
    return path


def test_create_from_a_file_with_front_matter(
    cli: tuple[Runtime, MemoryBackend], tmp_path: Path
) -> None:
    rt, _ = cli
    add_sub(rt, "a@example.com", tags=["5k"])
    add_sub(rt, "b@example.com")

    result = run("create", str(_draft(tmp_path)))

    assert result.exit_code == 0, result.output
    assert result.output == "created broadcast 1 (draft): 1 subscribers in its segment now\n"
    b = broadcast_row(rt, 1)
    assert (b.subject, b.segment, b.created_by) == (
        "Hill week, {{ first_name }}",
        {"tags_any": ["5k"]},
        "cli:tester",
    )
    override = run("create", str(_draft(tmp_path)), "--subject", "Other", "--segment", "{}")
    assert override.exit_code == 0 and broadcast_row(rt, 2).segment == {}


def test_bad_input_exits_2_naming_the_field(
    cli: tuple[Runtime, MemoryBackend], tmp_path: Path
) -> None:
    rt, _ = cli
    add_sub(rt, "a@example.com", tags=["5k"])

    unknown_tag = run("create", str(_draft(tmp_path)), "--segment", "tags=5k,10k")
    bad_var = run("create", str(_draft(tmp_path, FILE.replace("first_name }},", "nme }},"))))
    no_subject = run("create", str(_draft(tmp_path, "Just a body")))

    assert (unknown_tag.exit_code, unknown_tag.output) == (
        2,
        "drip: segment.tags_any: unknown tag(s): 10k\n",
    )
    assert bad_var.exit_code == 2
    assert "drip: body_md:1: unknown template variable 'nme'" in bad_var.output
    assert no_subject.output == "drip: subject: is required\n"


def test_every_problem_of_a_broadcast_is_printed(
    cli: tuple[Runtime, MemoryBackend], tmp_path: Path
) -> None:
    rt, _ = cli
    add_sub(rt, "a@example.com", tags=["5k"])
    text = FILE.replace("first_name }},", "nme }},").replace("Three short", "<b>Three</b> short")

    result = run("create", str(_draft(tmp_path, text)), "--preheader", "{{ x }}")

    assert result.exit_code == 2
    assert [line.split(" (")[0] for line in result.output.splitlines()] == [
        "drip: preheader: is not a template: its braces would be sent as is",
        "body_md:1: unknown template variable 'nme'",
        "body_md:3: raw HTML '<b>' is not allowed: write Markdown",
    ]


def test_schedule_list_show_and_the_audit_trail(
    cli: tuple[Runtime, MemoryBackend], tmp_path: Path
) -> None:
    rt, _ = cli
    add_sub(rt, "a@example.com", tags=["5k"], zone="Asia/Tokyo")
    add_sub(rt, "b@example.com", tags=["5k"], zone="Europe/London")
    run("create", str(_draft(tmp_path)))

    past = run("schedule", "1", "--at", "2026-03-01 09:00")
    local = run(
        "schedule", "1", "--at", "2026-03-09 09:00", "--local-time", "--past-zones", "tomorrow"
    )
    listed = run("list")
    shown = run("show", "1")
    as_json = json.loads(run("show", "1", "--json").output)

    assert past.exit_code == 2 and "is in the past" in past.output
    assert local.exit_code == 0, local.output
    assert local.output == (
        "broadcast 1 scheduled: 2026-03-09 09:00 local; first send 2026-03-09 00:00 UTC\n"
    )
    assert listed.output.split() == [
        "1",
        "scheduled",
        "2026-03-09",
        "09:00",
        "local",
        "Hill",
        "week,",
        "{{",
        "first_name",
        "}}",
    ]
    assert "Scheduled: 2026-03-09T09:00 local in each zone (2 zone groups" in shown.output
    assert "cli:tester       scheduled   -> scheduled" in shown.output
    assert [g["zones"] for g in as_json["zone_groups"]] == [["Asia/Tokyo"], ["Europe/London"]]


def test_pause_resume_cancel_and_refusals(
    cli: tuple[Runtime, MemoryBackend], tmp_path: Path
) -> None:
    rt, _ = cli
    add_sub(rt, "a@example.com", tags=["5k"])
    run("create", str(_draft(tmp_path)))
    run("schedule", "1", "--at", "now")

    assert run("pause", "1").output == "broadcast 1 is paused\n"
    assert run("resume", "1").output == "broadcast 1 is scheduled\n"
    assert run("cancel", "1").output == "broadcast 1 is cancelled\n"
    refused = run("resume", "1")
    assert (refused.exit_code, refused.output) == (
        1,
        "drip: broadcast 1 is cancelled: cannot resume it (it is final)\n",
    )
    assert run("show", "9").output == "drip: no broadcast 9\n"


def test_audience_preview_and_test_send(cli: tuple[Runtime, MemoryBackend], tmp_path: Path) -> None:
    rt, backend = cli
    add_sub(rt, "a@example.com", tags=["5k"], name="Ana")
    add_sub(rt, "b@example.com", tags=["trail"])
    run("create", str(_draft(tmp_path)))

    count = run("audience", "--segment", "tags=5k,trail")
    of_broadcast = run("audience", "--id", "1")
    text = run("preview", "1")
    files = run("preview", "1", "--out", str(tmp_path / "out"))
    sent = run("test", "1", "--to", "me@example.com")

    assert count.output == "2 subscribers: tags any of 5k, trail\n"
    assert of_broadcast.output == "1 subscribers: tags any of 5k\n"
    assert text.output.startswith("To: a@example.com\nSubject: Hill week, Ana\n\nHi Ana,")
    assert "wrote" in files.output and (tmp_path / "out" / "broadcast-1.html").is_file()
    assert sent.output == "me@example.com: sent\n"
    assert [e.subject for e in backend.outbox] == ["[TEST] Hill week, Sam"]


def test_show_follow_redraws_progress_until_the_send_is_done(
    cli: tuple[Runtime, MemoryBackend], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, _ = cli
    for i in range(6):
        add_sub(rt, f"r{i}@example.com", tags=["5k"])
    run("create", str(_draft(tmp_path)))
    run("schedule", "1", "--at", "now")
    kicks: list[tuple[int, str, float]] = []
    broadcasts_tick(rt, rt.clock(), kick=lambda *k: kicks.append(k))
    runner = kicks[0][1]

    def send_now(ids: list[int]) -> None:
        send_all(rt, [ids])

    def one_step(seconds: float) -> None:
        """Between two polls the workers send one page; then beat closes the send."""
        result = sending.run_page(rt, 1, runner, rt.clock(), enqueue=send_now)
        if result.state == "done":
            broadcasts_tick(rt, rt.clock(), kick=lambda *k: None)

    monkeypatch.setattr(cli_broadcast, "_sleep", one_step)
    result = run("show", "1", "--follow", "--interval", "0.1")

    lines = result.output.splitlines()
    progress = [line for line in lines if line.startswith(("sending", "sent")) and "]" in line]
    assert result.exit_code == 0, result.output
    assert [p.split("]")[1].split()[:2] for p in progress] == [
        ["33.3%", "2/6"],
        ["66.7%", "4/6"],
        ["100.0%", "6/6"],
        ["100.0%", "6/6"],
    ]
    assert progress[-1].startswith("sent") and lines[-1] == "sent"
