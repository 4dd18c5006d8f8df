"""A broadcast as an email, compiled once per version.

:func:`broadcast_message` is what the send path uses for ``broadcast/<id>`` deliveries (through
:class:`BroadcastSource`, which :mod:`drip.engine.dispatch` asks): the same pipeline and base
layout as lessons, the ``broadcast`` template, tracking on. It is cached per process by
(broadcast id, digest of subject, preheader and body): ``updated_at`` moves with every progress
update, so it can't serve as the version.
"""

from __future__ import annotations

import hashlib
import weakref
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, select

from drip.content.render import Renderer
from drip.esp.base import Message
from drip.models import Broadcast, DeliveryKind, SubscriberStatus

if TYPE_CHECKING:
    from drip.runtime import Runtime

CATEGORY = "broadcast"
_CACHE_SIZE = 16
_cache: weakref.WeakKeyDictionary[Renderer, dict[tuple[int, str, bool], Message]] = (
    weakref.WeakKeyDictionary()
)


def message_key(broadcast_id: int) -> str:
    return f"broadcast/{broadcast_id}"


def _digest(subject: str, preheader: str, body_md: str) -> str:
    return hashlib.sha256("\0".join((subject, preheader, body_md)).encode()).hexdigest()


def compile_broadcast(
    rt: Runtime, broadcast_id: int, subject: str, preheader: str, body_md: str, *, tracked: bool
) -> Message:
    """The shared :class:`Message` of this version of the broadcast (cached)."""
    cache = _cache.setdefault(rt.renderer, {})
    key = (broadcast_id, _digest(subject, preheader, body_md), tracked)
    if key not in cache:
        if len(cache) >= _CACHE_SIZE:
            cache.pop(next(iter(cache)))
        from_name = rt.settings.from_name
        cache[key] = rt.renderer.compile(
            message_key=message_key(broadcast_id),
            template="broadcast",
            subject=subject,
            preheader=preheader,
            body_md=body_md,
            category=CATEGORY,
            brand=from_name,
            footer_reason=f"You get this because you subscribed to news from {from_name}.",
            tracked=tracked,
        )
    return cache[key]


def broadcast_message(rt: Runtime, broadcast_id: int) -> Message:
    """The message for ``broadcast/<id>`` deliveries; :class:`LookupError` if it is gone."""
    with rt.sessions() as session:
        row = session.execute(
            select(Broadcast.subject, Broadcast.preheader, Broadcast.body_md).where(
                Broadcast.id == broadcast_id
            )
        ).one_or_none()
    if row is None:
        raise LookupError(f"no broadcast {broadcast_id}")
    return compile_broadcast(rt, broadcast_id, *row, tracked=True)


class BroadcastSource:
    """The message source of broadcasts (see drip.engine.kinds): active subscribers who take
    the newsletter."""

    kind = DeliveryKind.BROADCAST
    receivers = frozenset({SubscriberStatus.ACTIVE})

    def message(self, rt: Runtime, message_key: str) -> Message:
        return broadcast_message(rt, int(message_key.rpartition("/")[2]))

    def exit_reason(self, rt: Runtime, subscriber: Row[Any], sequence: str | None) -> str | None:
        return None if subscriber.newsletter else "preferences"

    def recipient_fields(self, rt: Runtime, subscriber_id: int, now: datetime) -> dict[str, str]:
        return {}
