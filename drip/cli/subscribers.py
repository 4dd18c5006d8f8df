"""``drip serve`` and ``drip subscribers ...`` (import, export, GDPR, purge)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from drip.cli.support import runtime_or_exit as _runtime
from drip.errors import InvalidInput

if TYPE_CHECKING:
    from drip.runtime import Runtime
    from drip.settings import Settings


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for ``drip serve`` besides host and port.

    The client address comes from ``X-Forwarded-For`` only when the peer is one of
    ``DRIP_FORWARDED_ALLOW_IPS`` (uvicorn's proxy headers); from anyone else it is the TCP peer.
    """
    return {
        "log_config": None,
        "access_log": False,  # drip.web logs every request itself, without the personal tokens
        "proxy_headers": True,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "server_header": False,
    }


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
def serve(host: str, port: int, log_level: str) -> None:
    """Run the web app (signup form, confirm and unsubscribe pages, JSON and admin API)."""
    import uvicorn

    from drip.web.app import create_app
    from drip.web.logs import configure_logging

    configure_logging(log_level.upper())
    rt = _runtime()
    uvicorn.run(create_app(rt), host=host, port=port, **server_options(rt.settings))


@click.group()
def subscribers() -> None:
    """Subscribers: CSV import/export, GDPR export and erasure, purge of stale signups."""


@subscribers.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check and count everything, write nothing.")
@click.option("--skip-invalid", is_flag=True, help="Import the good rows even if some are bad.")
@click.option("--enroll", is_flag=True, help="Also start new active subscribers on the course.")
def import_(file: Path, dry_run: bool, skip_invalid: bool, enroll: bool) -> None:
    """Import a Kit, Mailchimp or drip CSV export: all rows or none.

    Each bad row is reported as FILE:LINE: reason. With any bad row nothing is written, unless
    --skip-invalid. Suppressed and erased addresses are never re-activated. A row whose columns
    disagree is read the way that sends less mail, reported as FILE:LINE: conflict: what was done.
    """
    from drip.subscribers.importer import import_parsed, read_file

    try:
        parsed = read_file(file)
    except InvalidInput as err:
        click.echo(f"drip: {file}: {err.field} {err.message}", err=True)
        sys.exit(1)
    rt = _runtime()
    with click.progressbar(length=len(parsed.rows), label="importing", file=sys.stderr) as bar:
        report = import_parsed(
            rt,
            parsed,
            source=f"import:{file.name}",
            dry_run=dry_run,
            skip_invalid=skip_invalid,
            enroll_new=enroll,
            progress=bar.update,
        )
    for issue in report.invalid:
        click.echo(f"{file}:{issue.line}: invalid: {issue.reason}", err=True)
    for issue in report.skipped:
        click.echo(f"{file}:{issue.line}: skipped: {issue.reason}", err=True)
    for issue in report.conflicts:
        click.echo(f"{file}:{issue.line}: conflict: {issue.reason}", err=True)
    click.echo(
        f"{report.rows} rows: {report.created} new, {report.updated} updated, "
        f"{report.unsubscribed} unsubscribed, {report.suppressed} suppressed, "
        f"{len(report.skipped)} skipped, {len(report.invalid)} invalid, "
        f"{len(report.conflicts)} conflicts"
    )
    if report.invalid and not skip_invalid:
        click.echo("nothing imported: fix the rows above, or use --skip-invalid", err=True)
        sys.exit(1)
    if dry_run:
        click.echo("dry run: nothing written")
    elif report.invalid:
        click.echo(f"imported; the {len(report.invalid)} invalid rows above were left out")
    else:
        click.echo("imported")


@subscribers.command("export")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CSV file to write (default: standard output).",
)
def export(out: Path | None) -> None:
    """Write every subscriber with an address as CSV (re-importable)."""
    from drip.subscribers.csv_export import write_csv

    rt = _runtime()
    with rt.sessions() as session:
        if out is None:
            count = write_csv(session, sys.stdout)
        else:
            with out.open("w", encoding="utf-8", newline="") as handle:
                count = write_csv(session, handle)
    click.echo(f"{count} subscribers exported" + (f" to {out}" if out else ""), err=True)


def _find(rt: Runtime, email: str) -> int:
    from drip.subscribers.store import find_by_email
    from drip.subscribers.validation import normalize_address

    try:
        address = normalize_address(email)
    except InvalidInput as err:
        raise click.BadParameter(err.message, param_hint="EMAIL") from None
    with rt.sessions() as session:
        sub = find_by_email(session, address)
        if sub is None:
            click.echo(f"drip: no subscriber with the address {address}", err=True)
            sys.exit(1)
        return sub.id


@subscribers.command("export-one")
@click.argument("email")
def export_one(email: str) -> None:
    """Print everything stored about one subscriber as JSON (GDPR access request)."""
    from drip.models import Subscriber
    from drip.subscribers.gdpr import export_subscriber

    rt = _runtime()
    subscriber_id = _find(rt, email)
    with rt.sessions() as session:
        sub = session.get(Subscriber, subscriber_id)
        assert sub is not None
        data = export_subscriber(session, sub, rt.clock())
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@subscribers.command("erase")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Don't ask for confirmation.")
def erase(email: str, yes: bool) -> None:
    """Erase one subscriber's personal data (GDPR); the address stays blocked as a hash."""
    from drip.models import Subscriber
    from drip.subscribers.gdpr import erase_subscriber

    rt = _runtime()
    subscriber_id = _find(rt, email)
    if not yes:
        click.confirm(f"Erase subscriber {subscriber_id} for good?", abort=True)
    with rt.transaction() as session:
        sub = session.get(Subscriber, subscriber_id)
        assert sub is not None
        erase_subscriber(session, sub, rt.clock())
    click.echo(f"subscriber {subscriber_id} erased")


@subscribers.command("purge-pending")
@click.option(
    "--days",
    type=click.IntRange(1),
    default=None,
    help="Age in days (default: DRIP_PENDING_PURGE_DAYS).",
)
def purge_pending_command(days: int | None) -> None:
    """Delete signups that never confirmed within the purge period."""
    from drip.subscribers.signup import purge_pending

    rt = _runtime()
    with rt.transaction() as session:
        count = purge_pending(session, rt.clock(), days or rt.settings.pending_purge_days)
    click.echo(f"{count} unconfirmed signups deleted")
