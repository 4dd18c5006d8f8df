"""The ``drip`` command."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from drip.cli.support import content_failure as _content_failure
from drip.cli.support import runtime_or_exit as _runtime_or_exit
from drip.cli.support import settings_or_exit as _settings
from drip.content.checks import check_library
from drip.content.forms import check_forms, sequence_slugs
from drip.content.loading import load_content, load_library
from drip.errors import ContentError
from drip.settings import Settings, packaged_dir

if TYPE_CHECKING:
    from drip.content.types import Sequence


@click.group()
def main() -> None:
    """drip: email drip courses and newsletters."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration to DRIP_DATABASE_URL."""
    from drip.db import make_engine
    from drip.migrate import upgrade

    settings = _settings()
    engine = make_engine(settings.database_url)
    upgrade(engine)
    click.echo(f"database at {engine.url.render_as_string(hide_password=True)} is up to date")


@main.group()
def lessons() -> None:
    """Course content."""


@lessons.command("check")
@click.option(
    "--content",
    "content_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of sequences (default: DRIP_CONTENT_DIR).",
)
@click.option(
    "--forms",
    "forms_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of signup forms (default: DRIP_FORMS_DIR, else forms beside the sequences).",
)
def lessons_check(content_dir: Path | None, forms_dir: Path | None) -> None:
    """Check every sequence and signup form; print problems as path:line: message."""
    settings = _settings()
    folder = content_dir or settings.content_dir
    folder = _relative(folder)
    packaged = folder.is_absolute() and folder == packaged_dir("content_dir")
    click.echo(
        f"checking content in {_shown(folder)}"
        + (" (the course packaged with drip)" if packaged else ""),
        err=True,
    )
    named = forms_dir or settings.forms_dir  # a folder named explicitly must exist
    forms_folder = _relative(named or folder.parent / "forms")
    click.echo(f"checking forms in {_shown(forms_folder)}", err=True)
    forms = check_forms(
        forms_folder,
        sequences=sequence_slugs(folder),
        runners_lab_url=settings.runners_lab_url,
        required=named is not None,
    )
    library_problems = check_library(
        folder, runners_lab_url=settings.runners_lab_url, forms=forms.slugs
    )
    problems = [*library_problems, *forms.problems]
    for problem in problems:
        click.echo(str(problem))
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        click.echo(f"{len(problems)} {noun} found", err=True)
        sys.exit(1)
    library = load_library(folder, runners_lab_url=settings.runners_lab_url, forms=forms.slugs)
    total = sum(s.length for s in library.values())
    click.echo(f"ok: {len(library)} sequences, {total} emails")


@lessons.command("preview")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("var/preview"),
    show_default=True,
    help="Folder to write the previews to.",
)
def lessons_preview(out: Path) -> None:
    """Write each lesson as .html, .txt and .eml, with an index.html."""
    from drip.content.preview import write_previews
    from drip.content.render import Renderer

    settings = _settings()
    library = _library(settings)
    files = write_previews(Renderer(settings), library, out, public_url=settings.public_url)
    click.echo(f"wrote {len(files)} files; open {files[-1]}")


@main.command()
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First simulated day (UTC date; default: today).",
)
@click.option(
    "--days",
    type=click.IntRange(1, 366),
    default=14,
    show_default=True,
    help="How many days to simulate.",
)
@click.option(
    "--tz",
    "zones",
    multiple=True,
    help="Time zone of a demo subscriber (repeatable; default: five zones).",
)
def demo(start: datetime | None, days: int, zones: tuple[str, ...]) -> None:
    """Deliver the course to demo subscribers over simulated days, into the file outbox (one per
    zone through the default form, one more through the lead magnet's form)."""
    from drip.demo import DEFAULT_ZONES, run_demo
    from drip.schedule import is_valid_zone

    for zone in zones:
        if not is_valid_zone(zone):
            raise click.BadParameter(f"unknown IANA time zone {zone!r}", param_hint="--tz")
    settings = _settings()
    if settings.email_backend != "outbox":
        click.echo(
            f"note: the demo always uses the file outbox (DRIP_EMAIL_BACKEND="
            f"{settings.email_backend} is ignored)",
            err=True,
        )
    first_day = start.date() if start else datetime.now(UTC).date()
    database = settings.outbox_dir.parent / "demo.sqlite3"
    try:
        rows = run_demo(
            settings, start=first_day, days=days, zones=zones or DEFAULT_ZONES, database=database
        )
    except ContentError as err:
        _content_failure(err)
    click.echo(f"Simulated {days} days from {first_day.isoformat()} (UTC).\n")
    header = (
        f"{'subscriber':<24} {'time zone':<22} {'form':<11} {'emails':>6}  "
        f"{'first (local)':<26} last (local)"
    )
    click.echo(header)
    click.echo("-" * len(header))
    for row in rows:
        click.echo(
            f"{row.email:<24} {row.zone:<22} {row.form:<11} {row.emails:>6}  "
            f"{row.first_local:<26} {row.last_local}"
        )
    outbox = _relative(settings.outbox_dir)
    click.echo(
        f"\nEmails:   {outbox}/*.eml\nManifest: {outbox}/manifest.jsonl\n"
        f"Browse:   {outbox}/index.html\nDatabase: {_relative(database)}"
    )


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Start a Celery worker (extra options go to celery); refuses a broken course or setting."""
    _ready_to_run()
    _exec_celery(["worker", "--loglevel", "INFO", *ctx.args])


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Start Celery beat, which fires the drip tick every DRIP_TICK_SECONDS; refuses a broken
    course or setting."""
    _ready_to_run()
    _exec_celery(["beat", "--loglevel", "INFO", *ctx.args])


def _ready_to_run() -> None:
    """Build the runtime once before Celery starts: a bad setting exits 2 naming it, a broken
    course exits 1 with every problem as ``path:line: message``, as ``drip serve`` does; a worker
    that started anyway would fail every task with the same error."""
    _runtime_or_exit()


def _library(settings: Settings) -> dict[str, Sequence]:
    try:
        return load_content(settings)[1]
    except ContentError as err:
        _content_failure(err)


def _exec_celery(args: list[str]) -> None:
    os.execvp(sys.executable, [sys.executable, "-m", "celery", "-A", "workers.celery_app", *args])


def _shown(folder: Path) -> str:
    """A folder as the check names it: absolute, or ``./`` plus the path below the cwd."""
    return str(folder) if folder.is_absolute() or folder.parts[:1] == ("..",) else f"./{folder}"


def _relative(path: Path) -> Path:
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


from drip.cli.admin import admin  # noqa: E402
from drip.cli.broadcast import broadcast  # noqa: E402
from drip.cli.deliveries import deliveries, sending  # noqa: E402
from drip.cli.doctor import doctor  # noqa: E402
from drip.cli.env_example import settings_group  # noqa: E402
from drip.cli.sequences import sequences  # noqa: E402
from drip.cli.stats import stats, tracking  # noqa: E402
from drip.cli.subscribers import serve, subscribers  # noqa: E402 - registered last, on purpose
from drip.cli.tags import tag, untag  # noqa: E402
from drip.cli.webhooks import webhooks  # noqa: E402

main.add_command(serve)
main.add_command(subscribers)
subscribers.add_command(tag)
subscribers.add_command(untag)
main.add_command(sequences)
main.add_command(stats)
main.add_command(tracking)
main.add_command(broadcast)
main.add_command(admin)
main.add_command(sending)
main.add_command(deliveries)
main.add_command(doctor)
main.add_command(settings_group)
main.add_command(webhooks)

if __name__ == "__main__":
    main()
