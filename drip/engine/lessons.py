"""The message source of lessons: a sequence's emails, one a day (see drip.engine.kinds)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row

from drip.content.triggers import Rule
from drip.esp.base import Message
from drip.models import DeliveryKind, SubscriberStatus, lesson_of_key

if TYPE_CHECKING:
    from drip.runtime import Runtime


class LessonSource:
    """Lessons go to active subscribers who still take course emails, while the sequence exists;
    a sales sequence (``kind = "upsell"``) stops for someone who bought."""

    kind = DeliveryKind.LESSON
    receivers = frozenset({SubscriberStatus.ACTIVE})

    def message(self, rt: Runtime, message_key: str) -> Message:
        slug, position = lesson_of_key(message_key)
        sequence = rt.library[slug]
        lesson = sequence.lesson_at(position)
        if lesson is None:
            raise LookupError(f"no lesson {message_key}")
        return rt.renderer.lesson(sequence, lesson)

    def exit_reason(self, rt: Runtime, subscriber: Row[Any], sequence: str | None) -> str | None:
        found = rt.library.get(sequence or "")
        if found is None:
            return "sequence removed"
        if subscriber.converted_at is not None and found.kind == "upsell":
            return "converted"
        if not subscriber.course_emails:
            return "preferences"
        if not subscriber.newsletter and Rule("unsubscribed", "newsletter") in found.exits:
            return "exit unsubscribed:newsletter"
        return None

    def recipient_fields(self, rt: Runtime, subscriber_id: int, now: datetime) -> dict[str, str]:
        return {}
