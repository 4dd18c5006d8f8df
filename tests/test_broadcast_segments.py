"""Segments: each rule compiled to SQL and counted, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from drip.broadcasts.segments import (
    Segment,
    audience_count,
    context_of,
    parse_segment,
    parse_segment_text,
    segment_filter,
)
from drip.clock import FrozenClock
from drip.errors import InvalidInput
from drip.models import Enrollment, EnrollmentStatus, Subscriber, SubscriberStatus, TrackingEvent
from drip.runtime import Runtime
from drip.suppress import suppress
from tests.broadcast_support import add_sub, make_rt


@pytest.fixture
def brt(engine: Engine, tmp_path: Path, clock: FrozenClock) -> Runtime:
    return make_rt(engine, tmp_path, clock)[0]


def members(rt: Runtime, spec: dict[str, object] | None) -> set[str]:
    segment = parse_segment(spec)
    with rt.sessions() as session:
        where = segment_filter(session, segment, context_of(rt), rt.clock())
        return set(session.scalars(select(Subscriber.email).where(where)))


def count(rt: Runtime, spec: dict[str, object] | None) -> int:
    with rt.sessions() as session:
        return audience_count(session, parse_segment(spec), context_of(rt), rt.clock())


def test_pending_unsubscribed_erased_and_newsletter_off_are_never_in_a_segment(
    brt: Runtime,
) -> None:
    add_sub(brt, "in@example.com")
    add_sub(brt, "pending@example.com", status=SubscriberStatus.PENDING)
    add_sub(brt, "gone@example.com", status=SubscriberStatus.UNSUBSCRIBED)
    add_sub(brt, "no-news@example.com", newsletter=False)
    erased = add_sub(brt, "erased@example.com", status=SubscriberStatus.ERASED)
    with brt.transaction() as session:
        session.execute(update(Subscriber).where(Subscriber.id == erased).values(email=None))

    assert members(brt, None) == {"in@example.com"}
    assert count(brt, {}) == 1


def test_suppressed_addresses_are_left_out_of_the_count(brt: Runtime) -> None:
    add_sub(brt, "ok@example.com")
    add_sub(brt, "bounced@example.com")
    with brt.transaction() as session:
        suppress(session, "Bounced@Example.com", "bounce")

    assert count(brt, None) == 1


def test_tags_any_all_and_none(brt: Runtime) -> None:
    add_sub(brt, "a@example.com", tags=["5k", "trail"])
    add_sub(brt, "b@example.com", tags=["5k"])
    add_sub(brt, "c@example.com", tags=["trail", "coach"])
    add_sub(brt, "d@example.com")

    assert members(brt, {"tags_any": ["5k", "trail"]}) == {
        "a@example.com",
        "b@example.com",
        "c@example.com",
    }
    assert members(brt, {"tags_all": ["5k", "trail"]}) == {"a@example.com"}
    assert members(brt, {"tags_none": ["coach"]}) == {
        "a@example.com",
        "b@example.com",
        "d@example.com",
    }
    assert members(brt, {"tags_any": ["trail"], "tags_none": ["coach"]}) == {"a@example.com"}


def test_tags_match_whatever_their_case(brt: Runtime) -> None:
    add_sub(brt, "a@example.com", tags=["5k"])

    assert members(brt, {"tags_any": [" 5K "]}) == {"a@example.com"}


def test_unknown_tags_are_refused_by_name(brt: Runtime) -> None:
    add_sub(brt, "a@example.com", tags=["5k"])

    with pytest.raises(InvalidInput) as err:
        members(brt, {"tags_any": ["5k", "marathon", "ultra"]})

    assert err.value.field == "segment.tags_any"
    assert "marathon" in err.value.message and "ultra" in err.value.message
    assert "5k" not in err.value.message.replace("unknown tag(s): ", "").split(", ")


def _set_enrollment(rt: Runtime, subscriber_id: int, sequence: str, status: str) -> None:
    with rt.transaction() as session:
        row = session.scalar(
            select(Enrollment).where(
                Enrollment.subscriber_id == subscriber_id, Enrollment.sequence == sequence
            )
        )
        if row is None:
            row = Enrollment(subscriber_id=subscriber_id, sequence=sequence, position=0)
            session.add(row)
        row.status = status


def test_sequence_states(brt: Runtime) -> None:
    course = brt.settings.course_sequence
    add_sub(brt, "learning@example.com", enrolled=True)
    done = add_sub(brt, "done@example.com", enrolled=True)
    _set_enrollment(brt, done, course, EnrollmentStatus.COMPLETED)
    upsold = add_sub(brt, "upsell@example.com", enrolled=True)
    _set_enrollment(brt, upsold, course, EnrollmentStatus.COMPLETED)
    _set_enrollment(brt, upsold, "runners-lab-upsell", EnrollmentStatus.ACTIVE)
    bought = datetime(2026, 2, 1, tzinfo=UTC)
    add_sub(brt, "buyer@example.com", converted_at=bought)
    add_sub(brt, "never@example.com")

    assert members(brt, {"states": ["in_course"]}) == {"learning@example.com"}
    assert members(brt, {"states": ["completed_course"]}) == {
        "done@example.com",
        "upsell@example.com",
    }
    assert members(brt, {"states": ["in_upsell"]}) == {"upsell@example.com"}
    assert members(brt, {"states": ["converted"]}) == {"buyer@example.com"}
    assert "buyer@example.com" not in members(brt, {"states": ["not_converted"]})
    assert members(brt, {"states": ["completed_course", "not_converted"]}) == {
        "done@example.com",
        "upsell@example.com",
    }


def test_engaged_means_a_human_open_or_click_within_the_days(brt: Runtime) -> None:
    now = brt.clock()
    subs = {
        name: add_sub(brt, f"{name}@example.com")
        for name in ("opener", "clicker", "old", "machine", "bounced", "quiet")
    }
    events = [
        ("opener", "opened", now - timedelta(days=3), False),
        ("clicker", "clicked", now - timedelta(days=29), False),
        ("old", "opened", now - timedelta(days=31), False),
        ("machine", "opened", now - timedelta(days=1), True),
        ("bounced", "bounced", now - timedelta(days=1), False),
    ]
    with brt.transaction() as session:
        for name, kind, at, machine in events:
            session.add(
                TrackingEvent(type=kind, occurred_at=at, subscriber_id=subs[name], machine=machine)
            )

    assert members(brt, {"engaged_days": 30}) == {"opener@example.com", "clicker@example.com"}
    assert members(brt, {"engaged_days": 7}) == {"opener@example.com"}


def test_signup_date_range(brt: Runtime) -> None:
    for day in (1, 10, 20):
        add_sub(brt, f"jan{day}@example.com", created_at=datetime(2026, 1, day, 12, tzinfo=UTC))

    found = members(brt, {"signup_after": "2026-01-10", "signup_before": "2026-01-20"})

    assert found == {"jan10@example.com"}
    assert members(brt, {"signup_after": "2026-01-10"}) == {
        "jan10@example.com",
        "jan20@example.com",
    }


def test_the_short_syntax_means_the_same_as_json() -> None:
    text = "tags=5k,trail tags.all=vip tags.none=coach state=completed_course,not_converted"
    text += " engaged=30d signup_after=2026-01-01 signup_before=2026-02-01"

    segment = parse_segment_text(text)

    assert segment == Segment(
        tags_any=("5k", "trail"),
        tags_all=("vip",),
        tags_none=("coach",),
        states=("completed_course", "not_converted"),
        engaged_days=30,
        signup_after=datetime(2026, 1, 1, tzinfo=UTC),
        signup_before=datetime(2026, 2, 1, tzinfo=UTC),
    )
    assert parse_segment_text('{"tags_any": ["5k"]}') == Segment(tags_any=("5k",))
    assert parse_segment(segment.to_json()) == segment


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"tag": ["x"]}, "segment", "unknown rule 'tag'"),
        ({"states": ["finished"]}, "segment.states", "unknown state 'finished'"),
        ({"states": ["converted", "not_converted"]}, "segment.states", "exclude each other"),
        ({"engaged_days": 0}, "segment.engaged_days", "1..3650"),
        ({"engaged_days": "30"}, "segment.engaged_days", "whole number"),
        ({"signup_after": "last tuesday"}, "segment.signup_after", "not a date"),
        (
            {"signup_after": "2026-02-01", "signup_before": "2026-01-01"},
            "segment.signup_before",
            "later than",
        ),
        ({"newsletter": False}, "segment.newsletter", "turned the newsletter off"),
        ({"tags_any": "a,b\n"}, "segment.tags_any", "control characters"),
    ],
)
def test_bad_segments_are_refused_naming_the_rule(
    spec: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_segment(spec)

    assert err.value.field == field
    assert words in err.value.message


def test_bad_short_syntax_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not key=value"):
        parse_segment_text("tags")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        parse_segment_text("{tags_any: 1}")
    with pytest.raises(InvalidInput, match="number of days"):
        parse_segment_text("engaged=lots")


def test_the_description_reads_like_the_rules() -> None:
    segment = parse_segment({"tags_any": ["5k"], "states": ["in_course"], "engaged_days": 14})

    assert segment.describe() == "tags any of 5k; in_course; engaged in the last 14 days"
    assert Segment().describe() == "every active newsletter subscriber"


def test_every_problem_of_a_segment_is_reported_at_once() -> None:
    from drip.broadcasts.segments import parse_segment
    from drip.broadcasts.validation import InvalidBroadcast

    with pytest.raises(InvalidBroadcast) as caught:
        parse_segment(
            {
                "color": "red",
                "states": ["nowhere"],
                "engaged_days": 0,
                "signup_after": "2026-03-02",
                "signup_before": "2026-03-01",
            }
        )
    assert [p.field for p in caught.value.problems] == [
        "segment",
        "segment.states",
        "segment.engaged_days",
        "segment.signup_before",
    ]
    assert "unknown rule 'color'" in str(caught.value)
