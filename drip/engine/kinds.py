"""Kinds of email and where each one's message comes from: the send path asks, never branches.

A delivery row names its kind (:class:`~drip.models.DeliveryKind`); the runtime holds one
:class:`MessageSource` per kind (``rt.sources``, wired in :mod:`drip.runtime`). The send path
(:mod:`drip.engine.dispatch`) asks the row's source who may receive it, why it should not go
out now, what the shared message is, and which per-recipient fields it adds: a new kind of email
(a sequence's webhook, an A/B variant) is a new source, not a new branch in the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Row

from drip.esp.base import Message
from drip.models import DeliveryKind

if TYPE_CHECKING:
    from drip.runtime import Runtime


class MessageSource(Protocol):
    """One kind of email, as the send path sees it."""

    @property
    def kind(self) -> DeliveryKind:
        """The kind of delivery rows this source serves."""
        ...

    @property
    def receivers(self) -> frozenset[str]:
        """The subscriber statuses that may receive it."""
        ...

    def message(self, rt: Runtime, message_key: str) -> Message:
        """The message every recipient of ``message_key`` shares (rendered once, cached)."""
        ...

    def exit_reason(self, rt: Runtime, subscriber: Row[Any], sequence: str | None) -> str | None:
        """Why this email must not go to ``subscriber`` now (beyond status and suppression)."""
        ...

    def recipient_fields(self, rt: Runtime, subscriber_id: int, now: datetime) -> dict[str, str]:
        """Extra per-recipient fields of :class:`drip.content.render.RecipientData`."""
        ...


# Keyed by DeliveryKind, a str enum: the plain string of a delivery row finds its source.
Sources = Mapping[str, MessageSource]


def source_for(sources: Sources, kind: str) -> MessageSource:
    """The source of ``kind``; a row of a kind nobody serves is a programming error."""
    found = sources.get(kind)
    if found is None:
        raise LookupError(f"no message source for deliveries of kind {kind!r}")
    return found
