"""Tags as events (drip.subscribers.tags, tag_csv, manual) and their commands, on both databases:
adding a tag starts what its ``[[triggers]]`` say once, removing it exits and triggers, a CSV
tags every known address in chunks, a sequence starts by hand only if it says ``manual``."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, event, func, select

from drip.cli.main import main
from drip.clock import FrozenClock
from drip.errors import InvalidInput
from drip.models import Enrollment, OutgoingWebhook, SubscriberStatus, SubscriberTag, Tag
from drip.outgoing_endpoints import TAG_ADDED, Endpoint
from drip.runtime import Runtime
from drip.subscribers import tags as tags_module
from drip.subscribers.manual import Refusal, StartRefused, start_by_hand
from drip.subscribers.store import find_by_email
from drip.subscribers.tag_csv import _PLAIN_ADDRESS, CHUNK, tag_csv, tag_csv_file
from drip.subscribers.tags import add_tags, clean_tag_names, remove_tag, tags_of
from drip.subscribers.validation import normalize_address
from tests.helpers import add_subscriber
from tests.tags_support import automations_runtime, enrollments


@pytest.fixture
def rt(engine: Engine, tmp_path: Path, clock: FrozenClock, redis_url: str) -> Runtime:
    return automations_runtime(tmp_path, engine, clock, redis_url=redis_url)


def _people(rt: Runtime) -> dict[str, int]:
    """Ana and Cleo active, Dan pending: ids by first name."""
    return {
        "ana": add_subscriber(rt, "ana@example.com", enroll_now=False),
        "cleo": add_subscriber(rt, "cleo@example.com", enroll_now=False),
        "dan": add_subscriber(
            rt, "dan@example.com", enroll_now=False, status=SubscriberStatus.PENDING
        ),
    }


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, list[int]]]:
    """Every call of handle from drip.subscribers.tags: (kind, value, subscriber ids)."""
    calls: list[tuple[str, str, list[int]]] = []
    real = tags_module.handle

    def spy(rt: Runtime, session: Any, kind: str, value: str, ids: Any, now: Any) -> Any:
        calls.append((kind, value, list(ids)))
        return real(rt, session, kind, value, ids, now)

    monkeypatch.setattr(tags_module, "handle", spy)
    return calls


# ------------------------------------------------------------------------------ add and remove


def test_a_tag_added_twice_starts_its_sequence_once(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _people(rt)
    calls = _spy(monkeypatch)
    everyone = list(ids.values())
    with rt.transaction() as session:
        first = add_tags(rt, session, everyone, [" 5K-Plan "], rt.clock())
    assert first.changed == {"5k-plan": sorted(everyone)}
    assert first.started == {"five-k": 2}  # the pending Dan gets the tag, starts nothing yet
    assert calls == [("tag_added", "5k-plan", sorted(everyone))]

    with rt.transaction() as session:
        again = add_tags(rt, session, everyone, ["5k-plan"], rt.clock())
    assert (again.changed, again.started) == ({}, {})
    assert len(calls) == 1  # the second time, handle was called for nobody
    assert enrollments(rt, "five-k") == {
        ids["ana"]: ("active", "tag_added:5k-plan", 1),
        ids["cleo"]: ("active", "tag_added:5k-plan", 1),
    }
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(SubscriberTag)) == 3


def test_only_those_without_the_tag_get_its_event(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _people(rt)
    with rt.transaction() as session:
        add_tags(rt, session, [ids["ana"]], ["5k-plan"], rt.clock())
    calls = _spy(monkeypatch)
    with rt.transaction() as session:
        result = add_tags(rt, session, [ids["ana"], ids["cleo"]], ["5k-plan", "trail"], rt.clock())
    assert result.changed == {"5k-plan": [ids["cleo"]], "trail": [ids["ana"], ids["cleo"]]}
    assert calls == [
        ("tag_added", "5k-plan", [ids["cleo"]]),
        ("tag_added", "trail", [ids["ana"], ids["cleo"]]),
    ]


def test_adding_costs_the_same_statements_for_one_subscriber_or_forty(
    rt: Runtime, engine: Engine
) -> None:
    one = add_subscriber(rt, "one@example.com", enroll_now=False)
    many = [add_subscriber(rt, f"r{i}@example.com", enroll_now=False) for i in range(40)]
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        for ids in ([one], many):
            with rt.transaction() as session:
                add_tags(rt, session, ids, ["5k-plan"], rt.clock())
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # As many statements for forty as for one, and one insert into subscriber_tags each time.
    half = len(statements) // 2
    assert len(statements) % 2 == 0
    for call in (statements[:half], statements[half:]):
        assert sum(text.startswith("INSERT INTO subscriber_tags") for text in call) == 1
    assert len(enrollments(rt, "five-k")) == 41


def test_removing_a_tag_exits_its_sequence_and_triggers_another(rt: Runtime) -> None:
    ids = _people(rt)
    with rt.transaction() as session:
        add_tags(rt, session, [ids["ana"], ids["cleo"]], ["5k-plan"], rt.clock())
    with rt.transaction() as session:
        removed = remove_tag(rt, session, [ids["ana"], ids["dan"]], "5K-plan", rt.clock())
    assert removed.changed == {"5k-plan": [ids["ana"]]}  # Dan never had it
    assert (removed.stopped, removed.started) == ({"five-k": 1}, {"comeback": 1})
    assert enrollments(rt, "five-k") == {
        ids["ana"]: ("stopped", "exit tag_removed:5k-plan", 1),
        ids["cleo"]: ("active", "tag_added:5k-plan", 1),
    }
    assert enrollments(rt, "comeback") == {ids["ana"]: ("active", "tag_removed:5k-plan", 1)}
    with rt.transaction() as session:
        twice = remove_tag(rt, session, [ids["ana"]], "5k-plan", rt.clock())
        assert (twice.changed, twice.stopped, twice.started) == ({}, {}, {})
        assert tags_of(session, ids["cleo"]) == ["5k-plan"]
        assert tags_of(session, ids["ana"]) == []


def test_a_bad_tag_is_refused_by_name_before_anything_is_written(rt: Runtime) -> None:
    ids = _people(rt)
    with pytest.raises(InvalidInput) as caught, rt.transaction() as session:
        add_tags(rt, session, [ids["ana"]], ["5k-plan", "Not OK!"], rt.clock())
    assert caught.value.field == "tags" and "'Not OK!'" in caught.value.message
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Tag)) == 0
    assert enrollments(rt, "five-k") == {}
    for bad in ("", "-lead", "x" * 65, "a b", "tag\x00"):
        with pytest.raises(InvalidInput):
            clean_tag_names([bad])
    assert clean_tag_names([" Trail ", "trail", "kit:vip_2"]) == ["trail", "kit:vip_2"]


def test_an_erased_subscriber_is_never_tagged(rt: Runtime) -> None:
    gone = add_subscriber(rt, "gone@example.com", enroll_now=False, status=SubscriberStatus.ERASED)
    with rt.transaction() as session:
        result = add_tags(rt, session, [gone, 10**9], ["5k-plan"], rt.clock())
    assert result.changed == {}


def test_each_tag_really_added_is_one_tag_added_webhook(
    engine: Engine, tmp_path: Path, clock: FrozenClock, redis_url: str
) -> None:
    hook = Endpoint("https://crm.example.com/hook", frozenset({TAG_ADDED}), "whsec_" + "A" * 32)
    rt = automations_runtime(
        tmp_path, engine, clock, redis_url=redis_url, outgoing_webhooks=(hook,)
    )
    ids = _people(rt)
    for _ in range(2):
        with rt.transaction() as session:
            add_tags(rt, session, [ids["ana"], ids["cleo"]], ["5k-plan"], rt.clock())
    with rt.sessions() as session:
        bodies = [json.loads(body) for body in session.scalars(select(OutgoingWebhook.body))]
    assert sorted((b["type"], b["data"]["email"], b["data"]["tag"]) for b in bodies) == [
        ("tag.added", "ana@example.com", "5k-plan"),
        ("tag.added", "cleo@example.com", "5k-plan"),
    ]


# ------------------------------------------------------------------------------ CSV


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "list.csv"
    path.write_text(text, encoding="utf-8")
    return path


CSV = (
    "Name,Email Address\n"
    "Ana,ANA@example.com\n"
    "Someone,nobody@example.com\n"
    "\n"
    "Bad,not-an-address\n"
    "Cleo,cleo@example.com\n"
    "Ana again,ana@example.com\n"
    "Dan,dan@example.com\n"
)


def test_a_csv_tags_every_known_address_and_reports_the_others(rt: Runtime, tmp_path: Path) -> None:
    ids = _people(rt)
    report = tag_csv_file(rt, _csv(tmp_path, CSV), ["5k-plan"], chunk=2)
    assert (report.rows, report.found, report.unknown, report.invalid) == (6, 4, 1, 1)
    assert report.tagged == {"5k-plan": 3}
    assert report.started == {"five-k": 2}  # Dan is pending
    assert [(p.line, p.reason.split(" (")[0]) for p in report.problems] == [
        (3, "no subscriber with the address nobody@example.com"),
        (5, "email is not a valid email address"),
    ]
    assert set(enrollments(rt, "five-k")) == {ids["ana"], ids["cleo"]}
    again = tag_csv_file(rt, _csv(tmp_path, CSV), ["5k-plan"])
    assert (again.found, again.tagged, again.started) == (4, {}, {})


def test_a_csv_without_an_email_column_is_refused_naming_it(rt: Runtime, tmp_path: Path) -> None:
    _people(rt)
    with pytest.raises(InvalidInput) as caught:
        tag_csv_file(rt, _csv(tmp_path, "name,mail\nAna,ana@example.com\n"), ["5k-plan"])
    assert caught.value.field == "file"
    assert "'email' column" in caught.value.message and "'mail'" in caught.value.message
    with pytest.raises(InvalidInput):
        tag_csv(rt, [], ["5k-plan"])
    assert enrollments(rt, "five-k") == {}


def test_a_csv_is_tagged_chunk_by_chunk_as_it_is_read(rt: Runtime) -> None:
    ids = [add_subscriber(rt, f"r{i}@example.com", enroll_now=False) for i in range(5)]
    seen_tagged: list[int] = []

    def lines() -> Iterator[str]:
        yield "email\n"
        for i in range(5):
            if i == 4:  # the first chunk of two is committed before the file is read to its end
                with rt.sessions() as session:
                    seen_tagged.extend(s for s in ids if tags_of(session, s) == ["5k-plan"])
            yield f"r{i}@example.com\n"

    report = tag_csv(rt, lines(), ["5k-plan"], chunk=2)
    assert seen_tagged == ids[:4] and report.tagged == {"5k-plan": 5}
    assert inspect.signature(tag_csv_file).parameters["chunk"].default == CHUNK == 5_000


@pytest.mark.parametrize(
    "address", ["runner1@example.com", "a.b+c@mail.example.co.uk", "x_y-z@sub-1.example.org"]
)
def test_the_fast_address_path_is_the_stored_form(address: str) -> None:
    assert _PLAIN_ADDRESS.fullmatch(address) and normalize_address(address.upper()) == address


# ------------------------------------------------------------------------------ manual starts


def test_a_sequence_starts_by_hand_only_if_it_says_manual(rt: Runtime) -> None:
    ids = _people(rt)
    now = rt.clock()

    def start(who: str, slug: str) -> Any:
        with rt.transaction() as session:
            sub = find_by_email(session, f"{who}@example.com")
            assert sub is not None
            return start_by_hand(rt, session, sub, slug, now)

    first = start("ana", "vip")
    assert (first.sequence, first.entry, first.next_send_at is not None) == ("vip", 1, True)
    assert enrollments(rt, "vip") == {ids["ana"]: ("active", "manual", 1)}
    for who, slug, reason in (
        ("ana", "nope", Refusal.UNKNOWN_SEQUENCE),
        ("ana", "five-k", Refusal.NOT_MANUAL),
        ("dan", "vip", Refusal.NOT_ACTIVE),
        ("ana", "vip", Refusal.IN_IT),
    ):
        with pytest.raises(StartRefused) as caught:
            start(who, slug)
        assert caught.value.reason == reason, (who, slug)
    with rt.transaction() as session:
        session.execute(Enrollment.__table__.update().values(status="completed", next_send_at=None))
    with pytest.raises(StartRefused) as done:
        start("ana", "vip")
    assert done.value.reason == Refusal.DONE and "reentry = true" in done.value.message
    start("ana", "vip-again")
    with rt.transaction() as session:
        session.execute(Enrollment.__table__.update().values(status="completed", next_send_at=None))
    assert start("ana", "vip-again").entry == 2  # re-entry allowed


# ------------------------------------------------------------------------------ the commands


@pytest.fixture
def cli(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setattr("drip.cli.tags._runtime", lambda: rt)
    monkeypatch.setattr("drip.cli.sequences._runtime", lambda: rt)
    return rt


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_tag_and_untag_one_subscriber(cli: Runtime) -> None:
    ids = _people(cli)
    tagged = run("subscribers", "tag", "Ana@example.com", "5k-plan", "trail")
    assert tagged.exit_code == 0, tagged.output
    assert "added 5k-plan, trail; 1 enrollments started (five-k: 1)" in tagged.output
    assert "had already 5k-plan" in run("subscribers", "tag", "ana@example.com", "5k-plan").output
    untagged = run("subscribers", "untag", "ana@example.com", "5k-plan")
    assert untagged.exit_code == 0, untagged.output
    assert "1 enrollments started (comeback: 1), 1 stopped (five-k: 1)" in untagged.output
    assert "did not have" in run("subscribers", "untag", "ana@example.com", "5k-plan").output
    unknown = run("subscribers", "tag", "who@example.com", "5k-plan")
    assert unknown.exit_code == 1 and "no subscriber with the address who@example.com" in (
        unknown.output
    )
    bad = run("subscribers", "tag", "ana@example.com", "Not OK!")
    assert bad.exit_code == 2 and "'Not OK!' is not a tag" in bad.output
    with cli.sessions() as session:
        assert tags_of(session, ids["ana"]) == ["trail"]


def test_tag_from_a_csv_file(cli: Runtime, tmp_path: Path) -> None:
    _people(cli)
    result = run("subscribers", "tag", "--csv", str(_csv(tmp_path, CSV)), "5k-plan")
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'list.csv'}:3: no subscriber with the address nobody@" in result.output
    assert (
        "6 rows: 4 subscribers, 1 unknown addresses, 1 invalid; 3 tagged 5k-plan; "
        "2 enrollments started (five-k: 2)"
    ) in result.output
    missing = run("subscribers", "tag", "--csv", str(_csv(tmp_path, "name\nAna\n")), "5k-plan")
    assert missing.exit_code == 1 and "has no 'email' column" in missing.output


def test_sequences_start(cli: Runtime) -> None:
    _people(cli)
    started = run("sequences", "start", "vip", "ana@example.com")
    assert started.exit_code == 0, started.output
    assert "started vip for ana@example.com (entry 1)" in started.output
    refused = run("sequences", "start", "five-k", "ana@example.com")
    assert refused.exit_code == 1 and 'on = "manual"' in refused.output
    unknown = run("sequences", "start", "vip", "who@example.com")
    assert unknown.exit_code == 1 and "no subscriber" in unknown.output
