"""Clicks that start sequences: the ``clicked`` triggers (drip.content.triggers).

A human click (never a machine one: a link scanner follows every link of an email) on a link
that a sequence's ``[[triggers]] on = "clicked"`` names starts that sequence for the clicker, in
the transaction that stores the click. One :func:`drip.engine.automations.handle` per link
clicked in the batch (:func:`~drip.engine.automations.handle_many`), whatever the number of
clickers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from drip.content.triggers import link_key
from drip.engine.automations import handle_many
from drip.ingest.events import Event, EventType

if TYPE_CHECKING:
    from drip.runtime import Runtime


def start_from_clicks(rt: Runtime, session: Session, events: Sequence[Event], now: datetime) -> int:
    """Apply the ``clicked`` triggers of the newly stored ``events``; returns how many started."""
    if not any(kind == "clicked" for kind, _ in rt.automations.starts):
        return 0
    clicks = [
        ("clicked", link_key(event.url), event.subscriber_id)
        for event in events
        if event.type == EventType.CLICKED
        and not event.machine
        and event.url
        and event.subscriber_id is not None
    ]
    return sum(handle_many(rt, session, clicks, now).started.values())
