"""Hand queued delivery ids to the workers, for a person's actions in the CLI and the dashboard.

Beat's tick enqueues what it claims by itself; this module is for the rows a person queues
again: ``drip sending resume`` / the dashboard's "Resume sending", and ``drip deliveries resend``
/ the dashboard's "Resend". Both hand the ids to the Celery send task at once. When the broker
can't be reached the rows stay ``queued`` and beat's stale-queue pass (drip.engine.claim.reap, after
10 minutes) hands them over instead: nothing is lost, it only goes out a little later, and the
caller gets a sentence saying so to show the person.

Callers pass ``enqueue``: the Celery send task (:func:`workers.producer.celery_enqueue`) or,
in tests, a list's ``append``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drip.models import DeliveryStatus

if TYPE_CHECKING:
    from drip.runtime import Runtime

Enqueue = Callable[[list[int]], None]


def hand_over(rt: Runtime, ids: list[int], enqueue: Enqueue) -> str | None:
    """Enqueue ``ids`` in batches of ``DRIP_SEND_BATCH_SIZE``.

    Returns None when every batch was handed over, or a sentence for a person when the broker
    could not be reached (the rows stay queued; beat hands them over within 10 minutes).
    """
    if not ids:
        return None
    size = rt.settings.send_batch_size
    try:
        for start in range(0, len(ids), size):
            enqueue(ids[start : start + size])
    except Exception as err:  # any broker failure: the stale-queue pass takes over
        return (
            f"could not reach the workers' queue ({err}); the {len(ids)} emails stay "
            "queued and beat hands them over within 10 minutes"
        )
    return None


@dataclass(frozen=True)
class Resumed:
    """What lifting the pause did: whether it was on, the ids handed over, a broker problem."""

    was_paused: bool
    handed: list[int]
    problem: str | None


def resume_sending(rt: Runtime, enqueue: Enqueue) -> Resumed:
    """Lift the pause (and reset the failure streak), then hand every queued email over.

    Waiting rows are handed over even when sending was not paused: their tasks may have ended
    during a pause, and a row sent twice to the workers is still sent once (the send claims it).
    """
    from drip.engine import pause as engine_state
    from drip.engine.claim import requeue_waiting

    with rt.transaction() as session:
        was_paused = engine_state.resume(session)
    ids: list[int] = []
    requeue_waiting(rt, rt.clock(), ids.extend)
    return Resumed(was_paused, ids, hand_over(rt, ids, enqueue))


@dataclass(frozen=True)
class Resent:
    """What a resend did: how many ids were asked for, those queued again, a broker problem."""

    asked: int
    queued: list[int]
    problem: str | None

    @property
    def left_alone(self) -> int:
        """Ids asked for that were neither unknown nor failed (already sent, say)."""
        return self.asked - len(self.queued)


def resend_deliveries(
    rt: Runtime,
    ids: Iterable[int] = (),
    *,
    all_unknown: bool = False,
    all_failed: bool = False,
    enqueue: Enqueue,
) -> Resent:
    """Queue unknown or failed deliveries again (a person's decision) and hand them over.

    ``all_unknown`` adds every unknown row past ``DRIP_UNKNOWN_SETTLE_MINUTES`` (the younger
    ones still await the provider's events); ``all_failed`` every failed row. Rows in another
    state are left alone: a sent email is never sent again this way (drip.engine.reconcile.resend).
    """
    from drip.engine.reconcile import resend, settle_cutoff, waiting_rows

    now = rt.clock()
    wanted = set(ids)
    with rt.transaction() as session:
        if all_unknown:
            cutoff = settle_cutoff(now, rt.settings.unknown_settle_minutes)
            rows = waiting_rows(session, DeliveryStatus.UNKNOWN, older_than=cutoff, limit=10**6)
            wanted.update(r.id for r in rows)
        if all_failed:
            rows = waiting_rows(session, DeliveryStatus.FAILED, limit=10**6)
            wanted.update(r.id for r in rows)
        queued = sorted(resend(session, sorted(wanted), now))
    return Resent(len(wanted), queued, hand_over(rt, queued, enqueue))
