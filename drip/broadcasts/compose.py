"""Create and edit broadcasts, checked by the same rules as lessons.

A body is Markdown with ``{{ variables }}`` (:data:`drip.content.types.TEMPLATE_VARIABLES`,
except the lesson-only ``lesson_number`` and ``lesson_count``): no statement tags, no raw HTML,
no images, https links only (:mod:`drip.broadcasts.validation`). Every problem of a broadcast
is reported at once: the content's, the segment's and ``quiet_hours``'s together, in one
:class:`~drip.broadcasts.validation.InvalidBroadcast` whose ``problems`` each name their field
(``subject``, ``preheader``, ``body_md``, ``segment...``, ``quiet_hours``) and whose message
lists them as ``field: problem`` or ``field:line: problem`` lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from drip.broadcasts.segments import context_of, parse_segment, segment_filter
from drip.broadcasts.status import (
    EDITABLE,
    BroadcastStatus,
    get_broadcast,
    record,
    require,
)
from drip.broadcasts.validation import (
    FieldProblem,
    InvalidBroadcast,
    collect,
    content_problems,
    raise_problems,
)
from drip.errors import InvalidInput
from drip.models import Broadcast

if TYPE_CHECKING:
    from drip.runtime import Runtime

__all__ = [
    "InvalidBroadcast",
    "check_content",
    "checked_segment",
    "create_broadcast",
    "update_broadcast",
]

QUIET_HOURS_MAX = 168
_CHANGEABLE = ("body_md", "preheader", "quiet_hours", "segment", "subject")


def check_content(subject: str, preheader: str, body_md: str, runners_lab_url: str) -> None:
    """Raise :class:`InvalidBroadcast` listing every problem of the message, or return quietly."""
    raise_problems(content_problems(subject, preheader, body_md, runners_lab_url))


def _quiet_hours(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= QUIET_HOURS_MAX:
        raise InvalidInput("quiet_hours", f"must be a whole number of hours, 0..{QUIET_HOURS_MAX}")
    return value


def checked_segment(
    session: Session, rt: Runtime, spec: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """The canonical JSON of a valid segment whose tags all exist, or :class:`InvalidInput`."""
    segment = parse_segment(spec)
    segment_filter(session, segment, context_of(rt), now)  # raises on unknown tags
    return segment.to_json()


def create_broadcast(
    session: Session,
    rt: Runtime,
    *,
    subject: str,
    body_md: str,
    preheader: str = "",
    segment: Mapping[str, Any] | None = None,
    quiet_hours: int | None = None,
    actor: str,
    now: datetime,
) -> Broadcast:
    """A new draft, validated (every problem at once), with its ``created`` audit row."""
    problems = content_problems(subject, preheader, body_md, rt.settings.runners_lab_url)
    spec = collect(problems, lambda: checked_segment(session, rt, segment, now))
    hours = collect(problems, lambda: _quiet_hours(quiet_hours))
    raise_problems(problems)
    broadcast = Broadcast(
        subject=subject.strip(),
        preheader=preheader.strip(),
        body_md=body_md,
        segment=spec,
        quiet_hours=hours,
        status=BroadcastStatus.DRAFT,
        created_by=actor[:100],
        created_at=now,
        updated_at=now,
    )
    session.add(broadcast)
    session.flush()
    record(session, broadcast, action="created", actor=actor, now=now, from_status=None)
    return broadcast


def update_broadcast(
    session: Session,
    rt: Runtime,
    broadcast_id: int,
    *,
    changes: Mapping[str, Any],
    actor: str,
    now: datetime,
) -> Broadcast:
    """Apply ``changes`` (any of subject, preheader, body_md, segment, quiet_hours).

    Only drafts and scheduled broadcasts can change, and a scheduled one keeps its audience:
    a new segment means unscheduling first (its zone groups and count were planned for the old
    one). Every problem of the changes is reported at once (:class:`InvalidBroadcast`); a
    broadcast that does not exist or can't be edited is refused before they are looked at.
    """
    problems = [
        FieldProblem(key, f"cannot be changed (changeable: {', '.join(_CHANGEABLE)})")
        for key in sorted(set(changes) - set(_CHANGEABLE))
    ]
    broadcast = get_broadcast(session, broadcast_id, lock=True)
    require(broadcast, EDITABLE, "edit")
    subject = changes.get("subject", broadcast.subject)
    preheader = changes.get("preheader", broadcast.preheader)
    body_md = changes.get("body_md", broadcast.body_md)
    problems += content_problems(subject, preheader, body_md, rt.settings.runners_lab_url)
    spec: dict[str, Any] | None = None
    if "segment" in changes and broadcast.status != BroadcastStatus.DRAFT:
        problems.append(
            FieldProblem(
                "segment", "the broadcast is scheduled: unschedule it before changing its segment"
            )
        )
    elif "segment" in changes:
        spec = collect(problems, lambda: checked_segment(session, rt, changes["segment"], now))
    hours = collect(problems, lambda: _quiet_hours(changes.get("quiet_hours")))
    raise_problems(problems)
    broadcast.subject, broadcast.preheader, broadcast.body_md = (
        subject.strip(),
        preheader.strip(),
        body_md,
    )
    if spec is not None:  # a new segment, checked (null is {}: every newsletter subscriber)
        broadcast.segment = spec
    if "quiet_hours" in changes:
        broadcast.quiet_hours = hours
    broadcast.updated_at = now
    record(
        session,
        broadcast,
        action="updated",
        actor=actor,
        now=now,
        from_status=broadcast.status,
        note="changed " + ", ".join(sorted(changes)) if changes else None,
    )
    return broadcast
