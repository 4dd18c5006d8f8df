"""``drip sending ...`` and ``drip deliveries ...``: the pause, and the emails a person may need.

Queuing again (``sending resume``, ``deliveries resend``) hands the ids to the workers at once
through the broker; if the broker can't be reached the rows stay ``queued`` and beat's tick hands
them over within its stale-queue period (10 minutes), so nothing is lost either way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from drip.cli_support import runtime_or_exit
from drip.runtime import Runtime

Enqueue = Callable[[list[int]], None]


def _runtime() -> Runtime:  # tests replace it
    return runtime_or_exit()


def _enqueue() -> Enqueue:  # tests replace it
    """Hand delivery ids to the workers' send task through the broker."""
    from workers.tasks import send_task

    def enqueue(ids: list[int]) -> None:
        send_task.apply_async(args=[ids], retry=False)

    return enqueue


def _hand_over(rt: Runtime, ids: list[int]) -> None:
    size = rt.settings.send_batch_size
    try:
        enqueue = _enqueue()
        for start in range(0, len(ids), size):
            enqueue(ids[start : start + size])
    except Exception as err:  # the broker is down: the tick's stale-queue pass takes over
        click.echo(
            f"drip: could not reach the workers' queue ({err}); the {len(ids)} emails stay "
            "queued and beat hands them over within 10 minutes",
            err=True,
        )


@click.group()
def sending() -> None:
    """The pause after repeated refusals by the provider (a revoked key, refused requests)."""


@sending.command("status")
def sending_status() -> None:
    """Say whether sending is paused and why, and how many emails wait; exit 1 when paused."""
    from drip import engine_state
    from drip.reconcile import counts_by_status

    rt = _runtime()
    with rt.sessions() as session:
        reason = engine_state.paused_reason(session)
        counts = counts_by_status(session)
    click.echo(f"paused: {reason}" if reason else "sending is running")
    hold = rt.throttle.remaining()
    if hold > 0:
        click.echo(f"held back {hold:.1f}s more: the provider asked us to slow down")
    click.echo(", ".join(f"{status} {n}" for status, n in counts.items()))
    sys.exit(1 if reason else 0)


@sending.command("resume")
def sending_resume() -> None:
    """Lift the pause once the cause is fixed, and hand every waiting email to the workers."""
    from drip import engine_state
    from drip.claim import requeue_waiting

    rt = _runtime()
    with rt.transaction() as session:
        was_paused = engine_state.resume(session)
    ids: list[int] = []
    requeue_waiting(rt, rt.clock(), ids.extend)
    _hand_over(rt, ids)
    state = "sending resumed" if was_paused else "sending was not paused"
    click.echo(f"{state}; {len(ids)} queued emails handed to the workers")


@click.group()
def deliveries() -> None:
    """Individual emails: those that maybe went (unknown) and those that failed."""


@deliveries.command("unknown")
@click.option("--all", "show_all", is_flag=True, help="Also those still awaiting the provider.")
def deliveries_unknown(show_all: bool) -> None:
    """Emails that maybe went (no answer from the provider, or a worker died mid-send).

    The provider's events settle most of them by themselves; those with no word after
    DRIP_UNKNOWN_SETTLE_MINUTES are listed here for a person: check the provider's activity
    log, then `drip deliveries resend ID...` if it never arrived.
    """
    from drip.models import DeliveryStatus
    from drip.reconcile import settle_cutoff, waiting_rows

    rt = _runtime()
    cutoff = settle_cutoff(rt.clock(), rt.settings.unknown_settle_minutes)
    with rt.sessions() as session:
        every = waiting_rows(session, DeliveryStatus.UNKNOWN, limit=100_000)
    stale = [r for r in every if r.updated_at < cutoff]
    for row in every if show_all else stale:
        click.echo(f"{row.id}\t{row.email}\t{row.message_key}\t{row.updated_at.isoformat()}")
    click.echo(
        f"{len(stale)} unknown deliveries need a person; "
        f"{len(every) - len(stale)} still awaiting the provider's events",
        err=True,
    )


@deliveries.command("failed")
@click.option("--limit", default=1000, show_default=True, help="At most this many rows.")
def deliveries_failed(limit: int) -> None:
    """Emails that failed for good: refused by the provider or out of retry time.

    A failed lesson is due again the next allowed day by itself; broadcasts and confirmations
    can be queued again with `drip deliveries resend ID...`.
    """
    from drip.models import DeliveryStatus
    from drip.reconcile import waiting_rows

    rt = _runtime()
    with rt.sessions() as session:
        rows = waiting_rows(session, DeliveryStatus.FAILED, limit=limit)
    for row in rows:
        error = (row.error or "").replace("\n", " ")[:200]
        click.echo(
            f"{row.id}\t{row.email}\t{row.message_key}\t{row.updated_at.isoformat()}\t{error}"
        )
    click.echo(f"{len(rows)} failed deliveries", err=True)


@deliveries.command("resend")
@click.argument("ids", nargs=-1, type=click.IntRange(1, 2**63 - 1))
@click.option("--all-unknown", is_flag=True, help="Every unknown delivery past the settle time.")
@click.option("--all-failed", is_flag=True, help="Every failed delivery.")
def deliveries_resend(ids: tuple[int, ...], all_unknown: bool, all_failed: bool) -> None:
    """Queue unknown or failed emails again and hand them to the workers.

    For an unknown email this is your decision that a possible duplicate is better than a
    missing one. Emails already sent are never sent again this way.
    """
    from drip.models import DeliveryStatus
    from drip.reconcile import resend, settle_cutoff, waiting_rows

    if not ids and not all_unknown and not all_failed:
        raise click.UsageError("name delivery ids, or --all-unknown / --all-failed")
    rt = _runtime()
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
        queued = resend(session, sorted(wanted), now)
    _hand_over(rt, sorted(queued))
    skipped = len(wanted) - len(queued)
    note = f" ({skipped} not unknown or failed, left alone)" if skipped else ""
    click.echo(f"{len(queued)} deliveries queued again{note}")
