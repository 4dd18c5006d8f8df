"""``drip admin ...``: the dashboard's accounts (there is no sign-up page on purpose)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from drip.errors import InvalidInput, SettingsError


def _password(from_stdin: bool) -> str:
    """The new password: the first line of standard input, or asked twice without echo."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt="Repeat it")
    return value


def _run(action: Callable[..., object], email: str, password: str) -> object:
    from drip.clock import system_clock
    from drip.db import make_engine, session_scope
    from drip.settings import get_settings

    try:
        settings = get_settings()
    except SettingsError as err:
        click.echo(f"drip: {err}", err=True)
        sys.exit(2)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(engine) as session:
            return action(session, email, password, system_clock())
    except InvalidInput as err:
        click.echo(f"drip: {err.field}: {err.message}", err=True)
        sys.exit(1)
    finally:
        engine.dispose()


@click.group()
def admin() -> None:
    """Dashboard accounts (sign in at /admin)."""


@admin.command("create-user")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def create_user(email: str, password_stdin: bool) -> None:
    """Create a dashboard account for EMAIL (password: 12 characters or more)."""
    from drip.web.dashboard.users import create_user as create

    _run(create, email, _password(password_stdin))
    click.echo(f"created dashboard account {email.strip().lower()}")


@admin.command("set-password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def set_password(email: str, password_stdin: bool) -> None:
    """Give EMAIL's account a new password and sign it out everywhere."""
    from drip.web.dashboard.users import set_password as change

    _run(change, email, _password(password_stdin))
    click.echo(f"password changed; {email.strip().lower()} is signed out everywhere")
