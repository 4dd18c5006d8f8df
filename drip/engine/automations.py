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
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from drip.content.types import DEFAULT_FORM, Sequence
from drip.engine.enrollments import first_lesson_due
from drip.models import Enrollment, EnrollmentStatus, Subscriber, SubscriberStatus
from drip.store import one_of, store_for
from drip.store.base import NewEnrollment

if TYPE_CHECKING:
    from drip.runtime import Runtime

__all__ = ["Automations", "Handled", "handle", "handle_many", "start"]

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
    """Apply the event ``(kind, value)`` that happened to ``subscriber_ids``: exits, then starts.

    No statement at all when the event ends and starts nothing (the common case: most tags and
    products name no sequence); else one for the exits and two for the starts (who may start,
    with their enrollments in those sequences; the writes), however many subscribers and
    sequences.
    """
    ends = rt.automations.ended_by(kind, value)
    starts = rt.automations.started_by(kind, value)
    handled = Handled()
    if not ends and not starts:
        return handled
    ids = sorted(set(subscriber_ids))
    if not ids:
        return handled
    label = f"{kind}:{value}" if value else kind
    if ends:
        handled.stopped = _stop(session, ids, ends, f"exit {label}")
    if starts:
        fallback = rt.settings.default_timezone
        handled.started = _start_all(session, ids, starts, now, fallback, label)
    return handled


def handle_many(
    rt: Runtime, session: Session, events: Iterable[tuple[str, str, int]], now: datetime
) -> Handled:
    """Apply many ``(kind, value, subscriber id)`` events at once: one :func:`handle` per
    distinct (kind, value), so a batch of events costs statements per kind of event, not per
    event. Counts add up over the batch."""
    groups: dict[Key, list[int]] = defaultdict(list)
    for kind, value, subscriber_id in events:
        groups[(kind, value)].append(subscriber_id)
    total = Handled()
    for (kind, value), ids in sorted(groups.items()):
        one = handle(rt, session, kind, value, ids, now)
        for slug, n in one.started.items():
            total.started[slug] = total.started.get(slug, 0) + n
        for slug, n in one.stopped.items():
            total.stopped[slug] = total.stopped.get(slug, 0) + n
    return total


def start(
    session: Session,
    subscriber_ids: Iterable[int],
    sequence: Sequence,
    now: datetime,
    fallback_tz: str,
    trigger: str,
) -> int:
    """Start ``sequence`` for those of ``subscriber_ids`` who may start it; returns how many."""
    ids = sorted(set(subscriber_ids))
    if not ids:
        return 0
    return _start_all(session, ids, (sequence,), now, fallback_tz, trigger)[sequence.slug]


def _start_all(
    session: Session,
    ids: list[int],
    sequences: tuple[Sequence, ...],
    now: datetime,
    fallback_tz: str,
    trigger: str,
) -> dict[str, int]:
    """Start each of ``sequences`` for the active subscribers among ``ids``; how many per slug.

    One read (the active subscribers with their enrollments in these sequences, an outer join)
    and at most two writes (the new enrollments; the re-entries).
    """
    by_slug = {s.slug: s for s in sequences}
    rows = session.execute(
        select(
            Subscriber.id,
            Subscriber.time_zone,
            Enrollment.id,
            Enrollment.sequence,
            Enrollment.status,
            Enrollment.entry,
        )
        .select_from(Subscriber)
        .outerjoin(
            Enrollment,
            and_(
                Enrollment.subscriber_id == Subscriber.id,
                Enrollment.sequence.in_(sorted(by_slug)),
            ),
        )
        .where(one_of(Subscriber.id, ids, session), Subscriber.status == SubscriberStatus.ACTIVE)
    ).all()
    zones: dict[int, str | None] = {}
    before: dict[tuple[int, str], Any] = {}
    for sid, zone, enrollment_id, slug, status, entry in rows:
        zones[sid] = zone
        if enrollment_id is not None:
            before[(sid, slug)] = (enrollment_id, status, entry)
    due_in: dict[tuple[str, str | None], datetime] = {}

    def due(sequence: Sequence, zone: str | None) -> datetime:
        key = (sequence.slug, zone)
        if key not in due_in:
            due_in[key] = first_lesson_due(sequence, now, zone, fallback_tz)
        return due_in[key]

    fresh: list[NewEnrollment] = []
    again: list[dict[str, object]] = []
    started = dict.fromkeys(by_slug, 0)
    label = trigger[:100]
    for sequence in sequences:
        for sid, zone in zones.items():
            found = before.get((sid, sequence.slug))
            if found is None:
                fresh.append((sid, sequence.slug, label, due(sequence, zone), now))
            elif sequence.reentry and found[1] != EnrollmentStatus.ACTIVE:
                again.append(_reentry(found[0], found[2] + 1, due(sequence, zone), now, label))
            else:
                continue
            started[sequence.slug] += 1
    if fresh:
        store_for(session).start_enrollments(session, fresh)
    if again:
        session.execute(update(Enrollment).execution_options(synchronize_session=False), again)
    return started


def _reentry(
    enrollment_id: int, entry: int, due: datetime, now: datetime, trigger: str
) -> dict[str, object]:
    """The same enrollment row, started over: its ``entry`` counts the times through."""
    return {
        "id": enrollment_id,
        "position": 0,
        "entry": entry,
        "trigger": trigger[:100],
        "status": EnrollmentStatus.ACTIVE,
        "stop_reason": None,
        "completed_at": None,
        "next_send_at": due,
        "enrolled_at": now,
    }


def _stop(session: Session, ids: list[int], slugs: tuple[str, ...], reason: str) -> dict[str, int]:
    """Stop the active enrollments of ``ids`` in ``slugs``; how many per slug."""
    stopped = session.scalars(
        update(Enrollment)
        .where(
            Enrollment.sequence.in_(sorted(slugs)),
            one_of(Enrollment.subscriber_id, ids, session),
            Enrollment.status == EnrollmentStatus.ACTIVE,
        )
        .values(status=EnrollmentStatus.STOPPED, stop_reason=reason[:64], next_send_at=None)
        .returning(Enrollment.sequence)
        .execution_options(synchronize_session=False)
    ).all()
    counts = dict.fromkeys(slugs, 0)
    for slug in stopped:
        counts[slug] += 1
    return counts
