"""Composing broadcasts: the lesson rules for bodies, the status machine and its audit trail."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from drip.broadcasts import compose, control, zones
from drip.broadcasts.status import BroadcastStatus, IllegalTransition, get_broadcast
from drip.broadcasts.validation import InvalidBroadcast
from drip.clock import FrozenClock
from drip.errors import InvalidInput
from drip.models import Broadcast, BroadcastEvent
from drip.runtime import Runtime
from tests.broadcast_support import add_sub, make_rt, new_broadcast


@pytest.fixture
def brt(engine: Engine, tmp_path: Path, clock: FrozenClock) -> Runtime:
    return make_rt(engine, tmp_path, clock)[0]


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"body_md": "Hi {{ frist_name }}"}, "body_md", "unknown template variable 'frist_name'"),
        ({"body_md": "Hi {{ frist_name }}"}, "body_md", "did you mean 'first_name'"),
        ({"body_md": "Hi {{ first_name "}, "body_md", "template syntax error"),
        ({"body_md": "{% if x %}hi{% endif %}"}, "body_md", "statement tag {% if %}"),
        ({"body_md": "Hello\n\n<b>bold</b>"}, "body_md", "body_md:3: raw HTML"),
        ({"body_md": "[lab](http://lab.test)"}, "body_md", "must be an absolute https URL"),
        ({"body_md": "![x](https://img.test/a.png)"}, "body_md", "image"),
        ({"body_md": "Lesson {{ lesson_number }}"}, "body_md", "only exists in lessons"),
        ({"body_md": "  \n"}, "body_md", "is empty"),
        ({"subject": ""}, "subject", "is required"),
        ({"subject": "x" * 79}, "subject", "at most 78"),
        ({"subject": "Hi {{ name }}"}, "subject", "unknown template variable 'name'"),
        ({"preheader": "Hi {{ first_name }}"}, "preheader", "not a template"),
        ({"quiet_hours": 500}, "quiet_hours", "0..168"),
        ({"segment": {"tags_any": ["nope"]}}, "segment.tags_any", "unknown tag(s): nope"),
    ],
)
def test_bad_content_is_refused_with_a_clear_message(
    brt: Runtime, changes: dict[str, object], field: str, words: str
) -> None:
    values: dict[str, object] = {
        "subject": "Hill week",
        "body_md": "Hi {{ first_name }}",
        "preheader": "",
        **changes,
    }
    with pytest.raises(InvalidInput) as err, brt.transaction() as session:
        compose.create_broadcast(session, brt, **values, actor="ana", now=brt.clock())  # type: ignore[arg-type]

    assert err.value.field == field
    assert words in err.value.message


def test_every_problem_of_a_body_is_reported_at_once(brt: Runtime) -> None:
    body = "Hi {{ frist_name }}\n\n[a](http://x.test)\n\n<i>x</i> {{ lesson_count }}\n"
    with pytest.raises(InvalidInput) as err, brt.transaction() as session:
        compose.create_broadcast(
            session, brt, subject="s", body_md=body, actor="ana", now=brt.clock()
        )

    lines = err.value.message.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "body_md:1: unknown template variable 'frist_name'",
        "body_md:3: link 'http://x.test' must be an absolute https URL",
        "body_md:5: raw HTML '<i>' is not allowed: write Markdown",
        "body_md:5: lesson_count only exists in lessons: a broadcast has no lesson number or count",
    ]
    assert err.value.field == "body_md"


def test_every_problem_of_every_field_is_reported_at_once(brt: Runtime) -> None:
    add_sub(brt, "a@example.com", tags=["5k"])
    with pytest.raises(InvalidBroadcast) as err, brt.transaction() as session:
        compose.create_broadcast(
            session,
            brt,
            subject="Hi {{ name }} " + "x" * 80,
            preheader="Hi {{ first_name }}",
            body_md="Hi\n\n<b>x</b>\n",
            segment={"tags_any": ["nope"]},
            quiet_hours=500,
            actor="ana",
            now=brt.clock(),
        )

    assert [(p.field, p.line) for p in err.value.problems] == [
        ("subject", None),
        ("subject", 1),
        ("preheader", None),
        ("body_md", 3),
        ("segment.tags_any", None),
        ("quiet_hours", None),
    ]
    assert err.value.field == "subject"  # the first problem's: a real field for one-field UIs
    assert str(err.value) == err.value.message == "\n".join(map(str, err.value.problems))
    assert err.value.message.splitlines()[0] == "subject: is 94 characters; at most 78"
    with brt.sessions() as session:
        assert session.scalars(select(Broadcast)).all() == []


def test_every_problem_of_an_update_is_reported_at_once(brt: Runtime) -> None:
    broadcast_id = new_broadcast(brt)

    with pytest.raises(InvalidBroadcast) as err, brt.transaction() as session:
        compose.update_broadcast(
            session,
            brt,
            broadcast_id,
            changes={"status": "sent", "subject": "", "body_md": "![x](https://img.test/a.png)"},
            actor="ben",
            now=brt.clock(),
        )

    assert [(p.field, p.line, p.message.split(" (")[0]) for p in err.value.problems] == [
        ("status", None, "cannot be changed"),
        ("subject", None, "is required"),
        ("body_md", 1, "image 'https://img.test/a.png' is not allowed: lessons are text only"),
    ]
    with brt.sessions() as session:
        assert get_broadcast(session, broadcast_id).subject != ""


def test_a_valid_draft_is_stored_with_its_creator(brt: Runtime) -> None:
    add_sub(brt, "a@example.com", tags=["5k"])

    broadcast_id = new_broadcast(brt, segment={"tags_any": ["5K"]})

    with brt.sessions() as session:
        b = get_broadcast(session, broadcast_id)
        events = session.scalars(select(BroadcastEvent)).all()
    assert b.status == BroadcastStatus.DRAFT
    assert b.segment == {"tags_any": ["5k"]}
    assert b.created_by == "tester"
    assert [(e.action, e.actor, e.from_status, e.to_status) for e in events] == [
        ("created", "tester", None, "draft")
    ]


def test_updates_are_checked_and_recorded(brt: Runtime) -> None:
    broadcast_id = new_broadcast(brt)

    with brt.transaction() as session:
        compose.update_broadcast(
            session, brt, broadcast_id, changes={"subject": "New"}, actor="ben", now=brt.clock()
        )
    with pytest.raises(InvalidInput), brt.transaction() as session:
        compose.update_broadcast(
            session,
            brt,
            broadcast_id,
            changes={"body_md": "{{ nope }}"},
            actor="ben",
            now=brt.clock(),
        )

    with brt.sessions() as session:
        b = get_broadcast(session, broadcast_id)
        last = session.scalars(select(BroadcastEvent).order_by(BroadcastEvent.id.desc())).first()
    assert b.subject == "New"
    assert last is not None and (last.action, last.actor, last.note) == (
        "updated",
        "ben",
        "changed subject",
    )


def test_a_scheduled_broadcast_keeps_its_segment_until_unscheduled(brt: Runtime) -> None:
    add_sub(brt, "a@example.com", tags=["5k"])
    broadcast_id = new_broadcast(brt)
    with brt.transaction() as session:
        zones.schedule(session, brt, broadcast_id, at=brt.clock(), actor="ana", now=brt.clock())

    change = {"segment": {"tags_any": ["5k"]}}
    with pytest.raises(InvalidInput, match="unschedule"), brt.transaction() as session:
        compose.update_broadcast(
            session, brt, broadcast_id, changes=change, actor="ana", now=brt.clock()
        )
    with brt.transaction() as session:
        zones.unschedule(session, broadcast_id, actor="ana", now=brt.clock())
        b = compose.update_broadcast(
            session, brt, broadcast_id, changes=change, actor="ana", now=brt.clock()
        )
        assert (b.status, b.segment) == ("draft", {"tags_any": ["5k"]})


def test_illegal_transitions_name_the_status_and_what_is_possible(brt: Runtime) -> None:
    broadcast_id = new_broadcast(brt)

    with pytest.raises(IllegalTransition) as err, brt.transaction() as session:
        control.resume(session, broadcast_id, actor="ana", now=brt.clock())
    assert str(err.value) == (
        f"broadcast {broadcast_id} is draft: cannot resume it "
        "(from draft it can go to: cancelled, scheduled)"
    )

    with brt.transaction() as session:
        control.cancel(session, broadcast_id, actor="ana", now=brt.clock())
    for act in (control.pause, control.resume, control.cancel):
        refused = pytest.raises(IllegalTransition, match=r"is cancelled.*it is final")
        with refused, brt.transaction() as session:
            act(session, broadcast_id, actor="ana", now=brt.clock())
    with pytest.raises(IllegalTransition, match="cannot edit"), brt.transaction() as session:
        compose.update_broadcast(
            session, brt, broadcast_id, changes={"subject": "x"}, actor="ana", now=brt.clock()
        )


def test_the_audit_trail_records_every_change_with_who_and_when(
    brt: Runtime, clock: FrozenClock
) -> None:
    add_sub(brt, "a@example.com")
    broadcast_id = new_broadcast(brt)
    steps: list[Callable[[Session], object]] = [
        lambda s: zones.schedule(s, brt, broadcast_id, at=clock(), actor="ana", now=clock()),
        lambda s: control.pause(s, broadcast_id, actor="ben", now=clock()),
        lambda s: control.resume(s, broadcast_id, actor="ana", now=clock()),
        lambda s: control.cancel(s, broadcast_id, actor="cy", now=clock()),
    ]
    for step in steps:
        clock.advance(timedelta(minutes=1))
        with brt.transaction() as session:
            step(session)

    with brt.sessions() as session:
        trail = [
            (e.actor, e.action, e.from_status, e.to_status, e.at)
            for e in session.scalars(select(BroadcastEvent).order_by(BroadcastEvent.id))
        ]
    start = trail[0][4]
    assert [t[:4] for t in trail] == [
        ("tester", "created", None, "draft"),
        ("ana", "scheduled", "draft", "scheduled"),
        ("ben", "paused", "scheduled", "paused"),
        ("ana", "resumed", "paused", "scheduled"),  # it had not started: back to scheduled
        ("cy", "cancelled", "scheduled", "cancelled"),
    ]
    assert [int((t[4] - start).total_seconds() // 60) for t in trail] == [0, 1, 2, 3, 4]
