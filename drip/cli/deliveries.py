"""``drip sending ...`` and ``drip deliveries ...``: the pause, and the emails a person may need.

Queuing again (``sending resume``, ``deliveries resend``) hands the ids to the workers at once
through the broker (drip.engine.handover, shared with the dashboard); if the broker can't be reached
the rows stay ``queued`` and beat's tick hands them over within its stale-queue period
(10 minutes), so nothing is lost either way.
"""

from __future__ import annotations

import sys

import click

from drip.cli.support import runtime_or_exit
from drip.engine.handover import Enqueue
from drip.runtime import Runtime
from workers.producer import celery_enqueue


def _runtime() -> Runtime:  # tests replace it
    return runtime_or_exit()


def _enqueue() -> Enqueue:  # tests replace it
    """How delivery ids reach the workers: the Celery send task through the broker."""
    return celery_enqueue


def _say_problem(problem: str | None) -> None:
    """Tell the person the broker could not be reached (the rows stay queued for beat)."""
    if problem:
        click.echo(f"drip: {problem}", err=True)


@click.group()
def sending() -> None:
    """The pause after repeated refusals by the provider (a revoked key, refused requests)."""


@sending.command("status")
def sending_status() -> None:
    """Say whether sending is paused and why, and how many emails wait; exit 1 when paused."""
    from drip.engine import pause as engine_state
    from drip.engine.reconcile import counts_by_status

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
    from drip.engine.handover import resume_sending

    resumed = resume_sending(_runtime(), _enqueue())
    _say_problem(resumed.problem)
    state = "sending resumed" if resumed.was_paused else "sending was not paused"
    click.echo(f"{state}; {len(resumed.handed)} queued emails handed to the workers")


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
    from drip.engine.reconcile import settle_cutoff, waiting_rows
    from drip.models import DeliveryStatus

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
    from drip.engine.reconcile import waiting_rows
    from drip.models import DeliveryStatus

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
    from drip.engine.handover import resend_deliveries

    if not ids and not all_unknown and not all_failed:
        raise click.UsageError("name delivery ids, or --all-unknown / --all-failed")
    resent = resend_deliveries(
        _runtime(), ids, all_unknown=all_unknown, all_failed=all_failed, enqueue=_enqueue()
    )
    _say_problem(resent.problem)
    skipped = resent.left_alone
    note = f" ({skipped} not unknown or failed, left alone)" if skipped else ""
    click.echo(f"{len(resent.queued)} deliveries queued again{note}")
