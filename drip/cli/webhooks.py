"""``drip webhooks ...``: the outgoing webhooks, as a person looks at them."""

from __future__ import annotations

import click

from drip.cli.support import runtime_or_exit
from drip.models import OutgoingWebhookStatus
from drip.runtime import Runtime

COLUMNS = ("id", "created", "event", "endpoint", "status", "attempts", "last", "next attempt")


def _runtime() -> Runtime:  # tests replace it
    return runtime_or_exit()


@click.group()
def webhooks() -> None:
    """Outgoing webhooks: the events posted to the coach's other tools."""


@webhooks.command("log")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option(
    "--status",
    type=click.Choice([str(s) for s in OutgoingWebhookStatus]),
    default=None,
    help="Only the deliveries in this state.",
)
def webhooks_log(limit: int, status: str | None) -> None:
    """Recent deliveries, newest first: event, endpoint, status, attempts, the last answer or
    error, and when the next attempt is due (pending only). Tab-separated."""
    from drip.outgoing import endpoints_of
    from drip.outgoing.queries import recent_webhooks, status_counts

    rt = _runtime()
    with rt.sessions() as session:
        rows = recent_webhooks(session, limit=limit, status=status)
        counts = status_counts(session)
        configured = len(endpoints_of(session))
    click.echo("\t".join(COLUMNS))
    for row in rows:
        due = row.next_attempt_at.isoformat() if row.next_attempt_at else "-"
        last = row.last_result.replace("\t", " ").replace("\n", " ")[:200]
        click.echo(
            f"{row.id}\t{row.created_at.isoformat()}\t{row.event_type}\t{row.endpoint_url}\t"
            f"{row.status}\t{row.attempts}\t{last}\t{due}"
        )
    summary = ", ".join(f"{name} {n}" for name, n in counts.items())
    click.echo(f"{len(rows)} shown; {summary}; {configured} endpoints configured", err=True)
