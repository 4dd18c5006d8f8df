"""``drip subscribers tag`` and ``drip subscribers untag``: tags as events, from the shell.

Registered on the ``drip subscribers`` group by drip.cli.main. Adding a tag starts the sequences
whose ``[[triggers]]`` name it (and stops those whose ``[[exits]]`` do); a tag someone has
already changes nothing. Exit status: 0 done, 1 an unknown subscriber or a file that can't be
read, 2 a bad tag or address.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click

from drip.cli.support import runtime_or_exit as _runtime
from drip.errors import InvalidInput

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@click.command("tag")
@click.argument("args", nargs=-1, required=True, metavar="EMAIL TAG... | --csv FILE TAG...")
@click.option(
    "--csv",
    "csv_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Tag every address of this CSV file (it needs an email column).",
)
def tag(args: tuple[str, ...], csv_file: Path | None) -> None:
    """Add tags to one subscriber, or to every address of a CSV file (--csv)."""
    if csv_file is not None:
        _tag_file(csv_file, args)
        return
    if len(args) < 2:
        raise click.UsageError("give an address and at least one tag (or --csv FILE TAG...)")
    from drip.subscribers.tags import add_tags

    email, tags = args[0], _tags(args[1:])
    rt = _runtime()
    with rt.transaction() as session:
        result = add_tags(rt, session, [_find(session, email)], tags, rt.clock())
    added = list(result.changed)
    already = [t for t in tags if t not in result.changed]
    click.echo(
        f"tagged {email}: added {_names(added)}"
        + (f"; had already {_names(already)}" if already else "")
        + f"; {_started(result.started)}"
    )


@click.command("untag")
@click.argument("email")
@click.argument("tag_name", metavar="TAG")
def untag(email: str, tag_name: str) -> None:
    """Remove one tag from one subscriber."""
    from drip.subscribers.tags import remove_tag

    name = _tags((tag_name,), "TAG")[0]
    rt = _runtime()
    with rt.transaction() as session:
        result = remove_tag(rt, session, [_find(session, email)], name, rt.clock())
    if not result.changed:
        click.echo(f"{email} did not have the tag {name}")
        return
    stopped = sum(result.stopped.values())
    click.echo(
        f"removed {name} from {email}; {_started(result.started)}, {stopped} stopped"
        + _per_slug(result.stopped)
    )


def _tag_file(path: Path, args: tuple[str, ...]) -> None:
    from drip.subscribers.tag_csv import tag_csv_file

    tags = _tags(args)
    rt = _runtime()
    try:
        report = tag_csv_file(rt, path, tags)
    except InvalidInput as err:
        click.echo(f"drip: {path}: {err.field} {err.message}", err=True)
        sys.exit(1)
    for problem in report.problems:
        click.echo(f"{path}:{problem.line}: {problem.reason}", err=True)
    shown = len(report.problems)
    if report.unknown + report.invalid > shown:
        click.echo(f"... and {report.unknown + report.invalid - shown} more", err=True)
    tagged = ", ".join(f"{report.tagged.get(t, 0)} tagged {t}" for t in tags)
    click.echo(
        f"{report.rows} rows: {report.found} subscribers, {report.unknown} unknown addresses, "
        f"{report.invalid} invalid; {tagged}; {_started(report.started)}"
    )


def _tags(values: tuple[str, ...], hint: str = "TAG") -> list[str]:
    from drip.subscribers.tags import clean_tag_names

    try:
        tags = clean_tag_names(values)
    except InvalidInput as err:
        raise click.BadParameter(err.message, param_hint=hint) from None
    if not tags:
        raise click.BadParameter("give at least one tag", param_hint=hint)
    return tags


def _find(session: Session, email: str) -> int:
    """The id of the subscriber with ``email``; exit 2 for a bad address, 1 for an unknown one."""
    from drip.subscribers.store import find_by_email
    from drip.subscribers.validation import normalize_address

    try:
        address = normalize_address(email)
    except InvalidInput as err:
        raise click.BadParameter(err.message, param_hint="EMAIL") from None
    sub = find_by_email(session, address)
    if sub is None:
        click.echo(f"drip: no subscriber with the address {address}", err=True)
        sys.exit(1)
    return sub.id


def _names(tags: list[str]) -> str:
    return ", ".join(tags) if tags else "nothing"


def _started(started: Mapping[str, int]) -> str:
    return f"{sum(started.values())} enrollments started" + _per_slug(started)


def _per_slug(counts: Mapping[str, int]) -> str:
    shown = ", ".join(f"{slug}: {n}" for slug, n in sorted(counts.items()) if n)
    return f" ({shown})" if shown else ""
