"""Automations: what subscribers do starts and ends sequences (``[[triggers]]``, ``[[exits]]``).

An event is a kind and a value (``("tag_added", "5k-plan")``, ``("purchased", "runners-lab")``,
``("form", "default")``) that happened to some subscribers. :func:`handle` applies it in the
caller's transaction: first the exits (the sequences that list it stop for them), then the
starts (the sequences it triggers begin for them). Its cost is a fixed number of statements per
event and sequence, whatever the number of subscribers, so a CSV of 100,000 tags is one event.

Rules, as :class:`Automations` reads them from the library:

- a sequence starts only for ``active`` subscribers (confirmed, not unsubscribed or erased);
- once ever, unless the sequence says ``reentry = true``: then someone who completed or left it
  starts over (the same enrollment row, ``entry`` + 1); someone in it now is left alone, so an
  event that repeats (a tag added twice) never starts anything twice;
- the legacy setup keeps working: ``on_complete = "x"`` is a ``completed`` trigger of ``x``, and
  when no sequence names the default form, the ``DRIP_COURSE_SEQUENCE`` course is its sequence.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from drip.content.types import DEFAULT_FORM, Sequence
from drip.engine.enrollments import first_lesson_due
from drip.models import Enrollment, EnrollmentStatus, Subscriber, SubscriberStatus
from drip.store import one_of, store_for

if TYPE_CHECKING:
    from drip.runtime import Runtime

__all__ = ["Automations", "Handled", "handle", "start"]

Key = tuple[str, str]


@dataclass(frozen=True)
class Automations:
    """The library's triggers and exits, indexed by event: finding the sequences an event
    starts or ends is one dictionary lookup."""

    starts: Mapping[Key, tuple[Sequence, ...]] = field(default_factory=dict)
    ends: Mapping[Key, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, library: Mapping[str, Sequence], course: str | None = None) -> Automations:
        """Index ``library``; ``course`` is the default form's sequence when none names it."""
        starts: dict[Key, list[Sequence]] = defaultdict(list)
        ends: dict[Key, list[str]] = defaultdict(list)
        for slug in sorted(library):
            sequence = library[slug]
            for rule in sequence.triggers:
                starts[(rule.on, rule.value)].append(sequence)
            for rule in sequence.exits:
                ends[(rule.on, rule.value)].append(slug)
            follow_on = library.get(sequence.on_complete or "")
            if follow_on is not None and follow_on not in starts[("completed", slug)]:
                starts[("completed", slug)].append(follow_on)
        default = ("form", DEFAULT_FORM)
        if not starts.get(default) and course is not None and course in library:
            starts[default].append(library[course])
        return cls(
            {k: tuple(v) for k, v in starts.items() if v},
            {k: tuple(v) for k, v in ends.items() if v},
        )

    def started_by(self, kind: str, value: str = "") -> tuple[Sequence, ...]:
        return self.starts.get((kind, value), ())

    def ended_by(self, kind: str, value: str = "") -> tuple[str, ...]:
        return self.ends.get((kind, value), ())

    def triggers_of(self, slug: str) -> list[str]:
        """Labels of everything that starts ``slug`` (``"form:default"``), for people to read."""
        return sorted(
            f"{kind}:{value}" if value else kind
            for (kind, value), sequences in self.starts.items()
            if any(s.slug == slug for s in sequences)
        )


@dataclass
class Handled:
    """What one event did: per sequence slug, enrollments started and stopped."""

    started: dict[str, int] = field(default_factory=dict)
    stopped: dict[str, int] = field(default_factory=dict)


def handle(
    rt: Runtime,
    session: Session,
    kind: str,
    value: str,
    subscriber_ids: Iterable[int],
    now: datetime,
) -> Handled:
    """Apply the event ``(kind, value)`` that happened to ``subscriber_ids``: exits, then starts."""
    ids = sorted(set(subscriber_ids))
    handled = Handled()
    if not ids:
        return handled
    label = f"{kind}:{value}" if value else kind
    for slug in rt.automations.ended_by(kind, value):
        handled.stopped[slug] = _stop(session, ids, slug, f"exit {label}")
    for sequence in rt.automations.started_by(kind, value):
        fallback = rt.settings.default_timezone
        handled.started[sequence.slug] = start(session, ids, sequence, now, fallback, label)
    return handled


def start(
    session: Session,
    subscriber_ids: Iterable[int],
    sequence: Sequence,
    now: datetime,
    fallback_tz: str,
    trigger: str,
) -> int:
    """Start ``sequence`` for those of ``subscriber_ids`` who may start it; returns how many.

    Three statements whatever the number: who is active, who was in it before, and the writes.
    """
    ids = sorted(set(subscriber_ids))
    if not ids:
        return 0
    active = select(Subscriber.id, Subscriber.time_zone).where(
        one_of(Subscriber.id, ids, session), Subscriber.status == SubscriberStatus.ACTIVE
    )
    zones = {sid: zone for sid, zone in session.execute(active)}
    if not zones:
        return 0
    before = {
        row.subscriber_id: row
        for row in session.execute(
            select(
                Enrollment.id, Enrollment.subscriber_id, Enrollment.status, Enrollment.entry
            ).where(
                Enrollment.sequence == sequence.slug,
                one_of(Enrollment.subscriber_id, sorted(zones), session),
            )
        )
    }
    due_in: dict[str | None, datetime] = {}

    def due(zone: str | None) -> datetime:
        if zone not in due_in:
            due_in[zone] = first_lesson_due(sequence, now, zone, fallback_tz)
        return due_in[zone]

    fresh = [
        {
            "subscriber_id": sid,
            "sequence": sequence.slug,
            "position": 0,
            "entry": 1,
            "trigger": trigger[:100],
            "status": EnrollmentStatus.ACTIVE,
            "next_send_at": due(zone),
            "enrolled_at": now,
        }
        for sid, zone in zones.items()
        if sid not in before
    ]
    again = [
        {
            "id": row.id,
            "position": 0,
            "entry": row.entry + 1,
            "trigger": trigger[:100],
            "status": EnrollmentStatus.ACTIVE,
            "stop_reason": None,
            "completed_at": None,
            "next_send_at": due(zones[sid]),
            "enrolled_at": now,
        }
        for sid, row in before.items()
        if sequence.reentry and row.status != EnrollmentStatus.ACTIVE
    ]
    if fresh:
        # Ignoring conflicts: a concurrent event may have started the same enrollment.
        session.execute(
            store_for(session).insert_ignore(Enrollment, ["subscriber_id", "sequence"]), fresh
        )
    if again:
        session.execute(update(Enrollment).execution_options(synchronize_session=False), again)
    return len(fresh) + len(again)


def _stop(session: Session, ids: list[int], slug: str, reason: str) -> int:
    """Stop the active enrollments of ``ids`` in ``slug``; returns how many."""
    stopped = session.scalars(
        update(Enrollment)
        .where(
            Enrollment.sequence == slug,
            one_of(Enrollment.subscriber_id, ids, session),
            Enrollment.status == EnrollmentStatus.ACTIVE,
        )
        .values(status=EnrollmentStatus.STOPPED, stop_reason=reason[:64], next_send_at=None)
        .returning(Enrollment.id)
        .execution_options(synchronize_session=False)
    ).all()
    return len(stopped)
