"""Deliveries in the states a person looks at (unknown, failed), for the sending-health tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update

from drip.clock import FrozenClock
from drip.errors import AmbiguousBackendError
from drip.esp.memory import MemoryBackend
from drip.models import Delivery, DeliveryStatus
from drip.runtime import Runtime
from tests.helpers import add_subscriber, run_tick

FAILURE = "refused by the provider: Bounced Address"


@dataclass(frozen=True)
class Unsettled:
    old_unknown: int  # ana's lesson: unknown, past the settle time (needs a person)
    failed: int  # ben's lesson: failed with FAILURE
    young_unknown: int  # cat's lesson: unknown, still awaiting the provider's events


def _maybe_sent(rt: Runtime, backend: MemoryBackend, *emails: str) -> list[int]:
    """Subscribe ``emails`` and run a tick whose send gets no answer: their lessons are unknown."""
    for email in emails:
        add_subscriber(rt, email)
    backend.raise_next(AmbiguousBackendError("SendGrid answered nothing within 10s"))
    batches, report = run_tick(rt)
    ids = sorted(i for batch in batches for i in batch)
    assert report.unknown == len(emails) == len(ids)
    return ids


def unsettled(rt: Runtime, backend: MemoryBackend, clock: FrozenClock) -> Unsettled:
    """Three lessons: one unknown past the settle time, one failed, one unknown still young."""
    old, failed = _maybe_sent(rt, backend, "ana@example.com", "ben@example.com")
    with rt.transaction() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id == failed)
            .values(status=DeliveryStatus.FAILED, error=FAILURE, updated_at=clock())
        )
    clock.advance(timedelta(minutes=rt.settings.unknown_settle_minutes + 1))
    [young] = _maybe_sent(rt, backend, "cat@example.com")
    return Unsettled(old_unknown=old, failed=failed, young_unknown=young)
