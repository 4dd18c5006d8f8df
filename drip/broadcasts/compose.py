"""Create and edit broadcasts, checked by the same rules as lessons.

A body is Markdown with ``{{ variables }}`` (:data:`drip.content.types.TEMPLATE_VARIABLES`,
except the
lesson-only ``lesson_number`` and ``lesson_count``): no statement tags, no raw HTML, no images,
https links only. Every problem found is reported at once in one :class:`InvalidInput` whose
``field`` is ``subject``, ``preheader``, ``body_md``, ``segment...`` or ``quiet_hours`` and whose
message lists ``field:line: problem`` lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, TemplateSyntaxError, meta
from sqlalchemy.orm import Session

from drip.broadcasts.segments import context_of, parse_segment, segment_filter
from drip.broadcasts.status import (
    EDITABLE,
    BroadcastStatus,
    get_broadcast,
    record,
    require,
)
from drip.content.checks import check_body
from drip.content.types import PREHEADER_MAX, SUBJECT_MAX
from drip.errors import InvalidInput
from drip.models import Broadcast
from drip.subscribers.validation import storable_text

if TYPE_CHECKING:
    from drip.runtime import Runtime

LESSON_ONLY = ("lesson_count", "lesson_number")
BODY_MAX = 100_000
QUIET_HOURS_MAX = 168
_PARSER = Environment()


def check_content(subject: str, preheader: str, body_md: str, runners_lab_url: str) -> None:
    """Raise :class:`InvalidInput` listing every problem of the message, or return quietly."""
    for text, field in ((subject, "subject"), (preheader, "preheader"), (body_md, "body_md")):
        storable_text(text, field)
    subject = subject.strip()
    if not subject:
        raise InvalidInput("subject", "is required")
    if "\n" in subject or "\r" in subject:
        raise InvalidInput("subject", "must be one line")
    if len(subject) > SUBJECT_MAX:
        raise InvalidInput("subject", f"is {len(subject)} characters; at most {SUBJECT_MAX}")
    _raise_problems(
        "subject",
        check_body(subject, runners_lab_url=runners_lab_url, origin="subject", markdown=False),
    )
    if len(preheader) > PREHEADER_MAX:
        raise InvalidInput("preheader", f"is {len(preheader)} characters; at most {PREHEADER_MAX}")
    if "{{" in preheader or "{%" in preheader:
        raise InvalidInput("preheader", "is not a template: its braces would be sent as is")
    if not body_md.strip():
        raise InvalidInput("body_md", "is empty")
    if len(body_md) > BODY_MAX:
        raise InvalidInput("body_md", f"is {len(body_md)} characters; at most {BODY_MAX}")
    _raise_problems(
        "body_md", check_body(body_md, runners_lab_url=runners_lab_url, origin="body_md")
    )
    for source, field in ((subject, "subject"), (body_md, "body_md")):
        _lesson_only(source, field)


def _raise_problems(field: str, problems: list[Any]) -> None:
    if problems:
        raise InvalidInput(field, "\n".join(str(p) for p in problems))


def _lesson_only(source: str, field: str) -> None:
    try:
        names = meta.find_undeclared_variables(_PARSER.parse(source))
    except TemplateSyntaxError:  # reported by check_body already
        return
    used = sorted(names & set(LESSON_ONLY))
    if used:
        raise InvalidInput(
            field, f"{', '.join(used)} only exist in lessons; a broadcast has no lesson number"
        )


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
    """A new draft, validated, with its ``created`` audit row."""
    check_content(subject, preheader, body_md, rt.settings.runners_lab_url)
    broadcast = Broadcast(
        subject=subject.strip(),
        preheader=preheader.strip(),
        body_md=body_md,
        segment=checked_segment(session, rt, segment, now),
        quiet_hours=_quiet_hours(quiet_hours),
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
    one).
    """
    allowed = {"subject", "preheader", "body_md", "segment", "quiet_hours"}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise InvalidInput(
            unknown[0], f"cannot be changed (changeable: {', '.join(sorted(allowed))})"
        )
    broadcast = get_broadcast(session, broadcast_id, lock=True)
    require(broadcast, EDITABLE, "edit")
    if "segment" in changes and broadcast.status != BroadcastStatus.DRAFT:
        raise InvalidInput(
            "segment", "the broadcast is scheduled: unschedule it before changing its segment"
        )
    subject = changes.get("subject", broadcast.subject)
    preheader = changes.get("preheader", broadcast.preheader)
    body_md = changes.get("body_md", broadcast.body_md)
    check_content(subject, preheader, body_md, rt.settings.runners_lab_url)
    broadcast.subject, broadcast.preheader, broadcast.body_md = (
        subject.strip(),
        preheader.strip(),
        body_md,
    )
    if "segment" in changes:
        broadcast.segment = checked_segment(session, rt, changes["segment"], now)
    if "quiet_hours" in changes:
        broadcast.quiet_hours = _quiet_hours(changes["quiet_hours"])
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
