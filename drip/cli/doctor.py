"""``drip doctor``: check a deploy and say what to fix, one line per check.

Exit 0 when nothing failed (warnings and skips allowed), 1 when any check failed; ``--json``
prints the list of ``{"check", "status", "detail", "fix"}`` for monitoring. The checks live in
:mod:`drip.reports.doctor`; this module adds the one thing they can't reach from their layer,
a ping of the workers through the Celery app, and prints.
"""

from __future__ import annotations

import json
import sys

import click

from drip.reports.doctor.checklist import diagnose
from drip.reports.doctor.findings import CheckResult, Status
from drip.settings import Settings, load_settings

INDENT = " " * 24


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (monitoring).")
def doctor(as_json: bool) -> None:
    """Check settings, database, Redis, workers, beat, content, SendGrid, DNS, webhooks and
    /healthz; print what to fix; exit 1 when any check fails."""
    results = diagnose(load_settings, ping_workers=ping_workers)
    if as_json:
        click.echo(json.dumps([result.as_json() for result in results], indent=2))
    else:
        for line in report_lines(results):
            click.echo(line)
    sys.exit(1 if any(result.status is Status.FAIL for result in results) else 0)


def ping_workers(settings: Settings, timeout: float) -> list[str]:
    """The names of the workers that answer a Celery ping on the settings' broker within
    ``timeout`` seconds, through the same app configuration the workers run."""
    from workers.celery_app import make_celery

    app = make_celery(settings)
    try:
        replies = app.control.ping(timeout=timeout) or []
    finally:
        app.close()
    return sorted(name for reply in replies for name in reply)


def report_lines(results: list[CheckResult]) -> list[str]:
    """One line per check (``status  check  detail: fix``), the rest of a long detail (the
    content's problems) indented below it, then a summary."""
    lines = []
    for result in results:
        first, *more = result.detail.splitlines() or [""]
        fix = f": {result.fix}" if result.fix else ""
        first = first.rstrip(".") if fix else first  # "timed out.: check" reads badly
        lines.append(f"{result.status.value:<5} {result.check:<17} {first}{fix}")
        lines += [f"{INDENT}{line}" for line in more]
    counts = {status: sum(r.status is status for r in results) for status in Status}
    verdict = "this deploy has problems" if counts[Status.FAIL] else "all checks passed"
    lines.append(
        f"{verdict}: {counts[Status.OK]} ok, {counts[Status.WARN]} warning(s), "
        f"{counts[Status.FAIL]} failed, {counts[Status.SKIP]} skipped"
    )
    return lines
