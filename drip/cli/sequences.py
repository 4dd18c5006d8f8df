"""``drip sequences start SLUG EMAIL``: start a sequence by hand (the ``manual`` trigger).

Only a sequence whose sequence.toml lists ``[[triggers]] on = "manual"`` starts this way, for an
active subscriber who is not in it (and has not been, unless it allows re-entry). Exit status: 0
started, 1 refused or unknown (the reason printed), 2 a bad address.
"""

from __future__ import annotations

import sys

import click

from drip.cli.support import runtime_or_exit as _runtime
from drip.errors import InvalidInput


@click.group()
def sequences() -> None:
    """Sequences: start one by hand."""


@sequences.command("start")
@click.argument("slug")
@click.argument("email")
def start(slug: str, email: str) -> None:
    """Start the sequence SLUG for the subscriber EMAIL now (its first email follows its
    first_lesson rule)."""
    from drip.subscribers.manual import StartRefused, start_by_hand
    from drip.subscribers.store import find_by_email
    from drip.subscribers.validation import normalize_address

    try:
        address = normalize_address(email)
    except InvalidInput as err:
        raise click.BadParameter(err.message, param_hint="EMAIL") from None
    rt = _runtime()
    with rt.transaction() as session:
        sub = find_by_email(session, address)
        if sub is None:
            click.echo(f"drip: no subscriber with the address {address}", err=True)
            sys.exit(1)
        try:
            started = start_by_hand(rt, session, sub, slug, rt.clock())
        except StartRefused as err:
            click.echo(f"drip: {err.message}", err=True)
            sys.exit(1)
    due = started.next_send_at.isoformat() if started.next_send_at else "never"
    click.echo(f"started {slug} for {address} (entry {started.entry}); first email due {due}")
