"""Segments: who a broadcast goes to, as a small JSON spec compiled to one SQL ``WHERE``.

The spec (every key optional; all given rules must hold)::

    {"tags_any": ["5k", "trail"],        at least one of these tags
     "tags_all": ["vip"],                every one of these tags
     "tags_none": ["coach"],             none of these tags
     "states": ["completed_course", "not_converted"],   every listed sequence state
     "engaged_days": 30,                 a human open or click in the last 30 days
     "signup_after": "2026-01-01",       signed up on or after (a date is midnight UTC)
     "signup_before": "2026-03-01",      signed up before
     "newsletter": true}                 the newsletter preference (see below)

States: ``in_course`` (active in the course), ``completed_course``, ``in_upsell`` (active in an
upsell sequence), ``converted`` (bought The Runners Lab), ``not_converted``.

Whatever the spec, a segment only ever holds **active** subscribers (never pending, unsubscribed
or erased) who **want the newsletter**: the send path skips the others anyway, so counting them
would only mislead. ``"newsletter": false`` is refused for that reason. **Suppressed** addresses
are salted hashes, which SQL cannot match: :func:`audience_count` leaves them out by hashing, and
the send path skips them (drip.engine.dispatch).

The CLI's short form (:func:`parse_segment_text`), ``key=value`` words::

    tags=5k,trail tags.all=vip tags.none=coach state=completed_course,not_converted
    engaged=30 signup_after=2026-01-01 signup_before=2026-03-01
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, exists, false, func, select, true
from sqlalchemy.orm import Session

from drip.broadcasts.validation import FieldProblem, collect, raise_problems
from drip.errors import InvalidInput
from drip.models import (
    Subscriber,
    SubscriberStatus,
    SubscriberTag,
    Suppression,
    Tag,
    TrackingEvent,
)
from drip.subscribers.queries import course_state_filter
from drip.subscribers.validation import clean_tags
from drip.suppress import hash_with, salt

if TYPE_CHECKING:
    from drip.runtime import Runtime

STATES = ("in_course", "completed_course", "in_upsell", "converted", "not_converted")
KEYS = (
    "tags_any",
    "tags_all",
    "tags_none",
    "states",
    "engaged_days",
    "signup_after",
    "signup_before",
    "newsletter",
)
HUMAN_ENGAGEMENT = (
    "opened",
    "clicked",
)  # drip.ingest.events types; machine opens/clicks don't count
_SHORT_KEYS = {
    "tags": "tags_any",
    "tags.any": "tags_any",
    "tags.all": "tags_all",
    "tags.none": "tags_none",
    "state": "states",
    "states": "states",
    "engaged": "engaged_days",
}


@dataclass(frozen=True)
class Segment:
    """A validated segment. Tag names are normalized (trimmed, lowercase) but not yet checked
    against the database: :func:`segment_filter` does that."""

    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()
    tags_none: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    engaged_days: int | None = None
    signup_after: datetime | None = None
    signup_before: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The canonical spec: only the rules that are set, dates as ISO 8601."""
        out: dict[str, Any] = {}
        for key in ("tags_any", "tags_all", "tags_none", "states"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        if self.engaged_days is not None:
            out["engaged_days"] = self.engaged_days
        for key in ("signup_after", "signup_before"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.isoformat()
        return out

    def describe(self) -> str:
        """One line for people: ``tags any of 5k, trail; completed_course; engaged 30d``."""
        parts = []
        for label, names in (("any of", self.tags_any), ("all of", self.tags_all)):
            if names:
                parts.append(f"tags {label} {', '.join(names)}")
        if self.tags_none:
            parts.append(f"no tag {', '.join(self.tags_none)}")
        parts.extend(self.states)
        if self.engaged_days is not None:
            parts.append(f"engaged in the last {self.engaged_days} days")
        if self.signup_after:
            parts.append(f"signed up from {self.signup_after:%Y-%m-%d %H:%M} UTC")
        if self.signup_before:
            parts.append(f"signed up before {self.signup_before:%Y-%m-%d %H:%M} UTC")
        return "; ".join(parts) or "every active newsletter subscriber"


def _moment(value: object, field: str) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidInput(field, f"{value!r} is not a date (YYYY-MM-DD) or ISO time") from None
    else:
        raise InvalidInput(field, "must be a date (YYYY-MM-DD) or an ISO 8601 time")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_segment(data: Mapping[str, Any] | None) -> Segment:
    """Validate a segment spec. Every problem at once: one :class:`InvalidInput` naming the
    offending ``segment.<key>``, or an :class:`InvalidBroadcast` (an InvalidInput) listing
    several, each naming its key."""
    if data is None:
        return Segment()
    if not isinstance(data, Mapping):
        raise InvalidInput("segment", "must be a JSON object")
    problems: list[FieldProblem] = []
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        rule = "rule" if len(unknown) == 1 else "rules"
        problems.append(
            FieldProblem("segment", f"unknown {rule} {names} (known: {', '.join(KEYS)})")
        )
    tags = {key: _tags(problems, data, key) for key in ("tags_any", "tags_all", "tags_none")}
    states = collect(problems, lambda: _states(data.get("states"))) or ()
    days = collect(problems, lambda: _engaged_days(data.get("engaged_days")))
    if data.get("newsletter", True) is not True:
        problems.append(
            FieldProblem(
                "segment.newsletter",
                "only true is possible: subscribers who turned the newsletter off never get one",
            )
        )
    after = collect(
        problems, lambda: _maybe_moment(data.get("signup_after"), "segment.signup_after")
    )
    before = collect(
        problems, lambda: _maybe_moment(data.get("signup_before"), "segment.signup_before")
    )
    if after and before and after >= before:
        problems.append(FieldProblem("segment.signup_before", "must be later than signup_after"))
    if len(problems) == 1:
        raise InvalidInput(problems[0].field, problems[0].message)
    raise_problems(problems)
    return Segment(
        tags_any=tags["tags_any"],
        tags_all=tags["tags_all"],
        tags_none=tags["tags_none"],
        states=states,
        engaged_days=days,
        signup_after=after,
        signup_before=before,
    )


def _tags(problems: list[FieldProblem], data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    return collect(problems, lambda: clean_tags(data.get(key), f"segment.{key}")) or ()


def _states(value: object) -> tuple[str, ...]:
    states = value or ()
    if isinstance(states, str):
        states = [s.strip() for s in states.split(",") if s.strip()]
    if not isinstance(states, list | tuple) or not all(isinstance(s, str) for s in states):
        raise InvalidInput("segment.states", "must be a list of state names")
    for state in states:
        if state not in STATES:
            raise InvalidInput(
                "segment.states", f"unknown state {state!r} (known: {', '.join(STATES)})"
            )
    if "converted" in states and "not_converted" in states:
        raise InvalidInput("segment.states", "converted and not_converted exclude each other")
    return tuple(dict.fromkeys(states))


def _engaged_days(days: object) -> int | None:
    if days is not None and (
        isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650
    ):
        raise InvalidInput("segment.engaged_days", "must be a whole number of days, 1..3650")
    return days


def _maybe_moment(value: object, field: str) -> datetime | None:
    return None if value is None else _moment(value, field)


def parse_segment_text(text: str | None) -> Segment:
    """A segment from JSON (``{...}``) or ``key=value`` words (see the module docstring)."""
    text = (text or "").strip()
    if not text:
        return Segment()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InvalidInput("segment", f"is not valid JSON: {err.msg}") from None
        return parse_segment(data)
    spec: dict[str, Any] = {}
    for word in text.replace(";", " ").split():
        key, sep, value = word.partition("=")
        if not sep:
            raise InvalidInput("segment", f"{word!r} is not key=value")
        key = _SHORT_KEYS.get(key.strip().lower(), key.strip().lower())
        if key == "engaged_days":
            digits = value.strip().lower().removesuffix("d")
            if not digits.isdigit():
                raise InvalidInput("segment.engaged_days", f"{value!r} is not a number of days")
            spec[key] = int(digits)
        elif key == "newsletter":
            spec[key] = value.strip().lower() in ("true", "yes", "1")
        else:
            spec[key] = value
    return parse_segment(spec)


@dataclass(frozen=True)
class SegmentContext:
    """What the state rules need to know about the content: which sequence is the course."""

    course: str
    upsells: tuple[str, ...]


def context_of(rt: Runtime) -> SegmentContext:
    upsells = tuple(slug for slug, seq in rt.library.items() if seq.kind == "upsell")
    return SegmentContext(course=rt.settings.course_sequence, upsells=upsells)


def _tag_ids(session: Session, names: Sequence[str], field: str) -> list[int]:
    rows = session.execute(select(Tag.name, Tag.id).where(Tag.name.in_(names))).tuples()
    found = {name: tag_id for name, tag_id in rows}
    missing = [n for n in names if n not in found]
    if missing:
        raise InvalidInput(field, f"unknown tag(s): {', '.join(missing)}")
    return [found[n] for n in names]


def _has_tag(tag_ids: list[int]) -> ColumnElement[bool]:
    return exists().where(
        SubscriberTag.subscriber_id == Subscriber.id, SubscriberTag.tag_id.in_(tag_ids)
    )


def _state(state: str, ctx: SegmentContext) -> ColumnElement[bool]:
    """One of :data:`STATES`: the subscriber list's course states, plus ``not_converted``."""
    if state == "not_converted":
        return Subscriber.converted_at.is_(None)
    return course_state_filter(state, ctx.course, ctx.upsells)


def segment_filter(
    session: Session, segment: Segment, ctx: SegmentContext, now: datetime
) -> ColumnElement[bool]:
    """The ``WHERE`` over :class:`Subscriber` for ``segment`` at ``now`` (both databases).

    Raises :class:`InvalidInput` naming any tag that does not exist: a typo in a tag would
    otherwise silently shrink the audience to nobody (``any``) or everybody (``none``).
    """
    rules: list[ColumnElement[bool]] = [
        Subscriber.status == SubscriberStatus.ACTIVE,
        Subscriber.email.is_not(None),
        Subscriber.newsletter == true(),
    ]
    if segment.tags_any:
        rules.append(_has_tag(_tag_ids(session, segment.tags_any, "segment.tags_any")))
    if segment.tags_all:
        ids = _tag_ids(session, segment.tags_all, "segment.tags_all")
        rules.extend(_has_tag([tag_id]) for tag_id in ids)
    if segment.tags_none:
        rules.append(~_has_tag(_tag_ids(session, segment.tags_none, "segment.tags_none")))
    rules.extend(_state(state, ctx) for state in segment.states)
    if segment.engaged_days is not None:
        rules.append(
            exists().where(
                TrackingEvent.subscriber_id == Subscriber.id,
                TrackingEvent.type.in_(HUMAN_ENGAGEMENT),
                TrackingEvent.machine == false(),
                TrackingEvent.occurred_at >= now - timedelta(days=segment.engaged_days),
            )
        )
    if segment.signup_after is not None:
        rules.append(Subscriber.created_at >= segment.signup_after)
    if segment.signup_before is not None:
        rules.append(Subscriber.created_at < segment.signup_before)
    return and_(*rules)


def audience_count(
    session: Session,
    segment: Segment,
    ctx: SegmentContext,
    now: datetime,
    *,
    max_id: int | None = None,
) -> int:
    """How many subscribers ``segment`` holds now (up to ``max_id``), suppressed ones left out.

    One ``COUNT`` when the suppression list is empty; otherwise the segment's addresses are
    streamed and hashed (the list holds salted hashes only), about a second per million.
    """
    where = segment_filter(session, segment, ctx, now)
    if max_id is not None:
        where = and_(where, Subscriber.id <= max_id)
    suppressed = set(session.scalars(select(Suppression.email_hash)))
    if not suppressed:
        return int(session.scalar(select(func.count()).select_from(Subscriber).where(where)) or 0)
    key = salt(session)
    emails = session.scalars(
        select(Subscriber.email).where(where).execution_options(yield_per=10_000)
    )
    return sum(1 for email in emails if email and hash_with(key, email) not in suppressed)
