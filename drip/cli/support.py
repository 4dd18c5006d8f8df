"""What every ``drip`` sub-command shares: settings and runtime, or a clean exit.

A bad ``DRIP_*`` variable exits 2 with its name; broken content exits 1 with every problem as
``path:line: message``. Never a traceback.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

import click

from drip.errors import ContentError, SettingsError
from drip.settings import Settings, get_settings

if TYPE_CHECKING:
    from drip.runtime import Runtime


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except SettingsError as err:
        click.echo(f"drip: {err}", err=True)
        sys.exit(2)


def runtime_or_exit() -> Runtime:
    """The process's runtime: settings validated, content loaded and checked."""
    from drip.runtime import Runtime

    settings = settings_or_exit()
    try:
        return Runtime.build(settings)
    except SettingsError as err:
        click.echo(f"drip: {err}", err=True)
        sys.exit(2)
    except ContentError as err:
        content_failure(err)


def content_failure(err: ContentError) -> NoReturn:
    for problem in err.problems:
        click.echo(str(problem), err=True)
    click.echo(
        "drip: refusing to start: the content has problems (see above; "
        "`drip lessons check` lists them)",
        err=True,
    )
    sys.exit(1)
