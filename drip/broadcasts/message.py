"""A broadcast as an email, compiled once per version.

:func:`broadcast_message` is what the send path (:func:`drip.dispatch._message_for`) uses for
``broadcast/<id>`` deliveries: the same pipeline and base layout as lessons, the ``broadcast``
template, tracking on. It is cached per process by (broadcast id, digest of subject, preheader and
body): ``updated_at`` moves with every progress update, so it can't serve as the version.

This module is imported by drip.dispatch, so it imports nothing that imports dispatch back.
"""

from __future__ import annotations

import hashlib
import weakref

from sqlalchemy import select

from drip.esp.base import Message
from drip.models import Broadcast
from drip.render import Renderer
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
