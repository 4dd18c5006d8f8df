"""``drip stats`` (tables or ``--json``) and ``drip tracking drain|rebuild``.

The report ends with how sending is doing (:mod:`drip.reports.sending_health`): paused or running,
the
deliveries queued, sending, unknown and failed, and the command to run when some need a person.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from drip.cli.support import runtime_or_exit as _runtime
from drip.errors import ContentError, SettingsError

if TYPE_CHECKING:
    from drip.ingest.stream import DrainReport
    from drip.reports.sending_health import SendingHealth
    from drip.reports.sequences import SequenceFigures
    from drip.reports.stats import Revenue, Stats


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _money(revenue: Revenue) -> str:
    if not revenue:
        return "-"
    return ", ".join(f"{cur} {cents / 100:,.2f}" for cur, cents in sorted(revenue.items()))


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned first column, right-aligned figures, two spaces between columns."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def render_sending(health: SendingHealth) -> list[str]:
    """Paused or running, the deliveries per unsettled state, and what to run about them."""
    from drip.reports.sending_health import RECENT_FAILURES

    pause = health.attention.pause
    state = "running" if pause is None else f"PAUSED ({pause.reason})"
    notes = {
        "unknown": f"({health.attention.unknown_due:,} need a person, "
        f"{health.unknown_awaiting:,} await the provider)",
        "failed": f"({health.attention.failed_recent:,} in the last {RECENT_FAILURES.days} days)",
    }
    states = list(health.counts.items())
    header, rule, *lines = _table(["state", "emails"], [[s, f"{n:,}"] for s, n in states])
    noted = [
        f"{line}  {notes[name]}" if name in notes else line
        for line, (name, _) in zip(lines, states, strict=True)
    ]
    return [f"Sending: {state}", header, rule, *noted, *health.advice()]


def render_sequences(figures: list[SequenceFigures]) -> list[str]:
    """Every sequence: enrollments by status now, conversions, then what starts and ends it and
    why people left, a line each."""
    headers = ["sequence", "priority", "active", "completed", "stopped", "entries", "conv"]
    headers.append("revenue")
    rows = [
        [
            f.slug,
            str(f.priority),
            f"{f.active:,}",
            f"{f.completed:,}",
            f"{f.stopped_total:,}",
            f"{f.entries:,}",
            f"{f.conversions:,}",
            _money(f.revenue),
        ]
        for f in figures
    ]
    notes = []
    for f in figures:
        stopped = ", ".join(f"{reason} {n:,}" for reason, n in f.stopped.items()) or "-"
        notes.append(
            f"{f.slug}: starts on {', '.join(f.triggers) or '-'}; exits on "
            f"{', '.join(f.exits) or '-'}; stopped: {stopped}"
        )
    return ["Per sequence (enrollments now)", *_table(headers, rows), *notes]


def render(stats: Stats) -> str:
    """The terminal report: emails, sequences, funnel, per sequence, sending."""
    headers = ["email", "sent", "deliv", "bounce", "opens", "clicks", "CTO", "unsub", "spam"]
    headers += ["conv", "conv%", "revenue"]
    rows = [
        [
            e.message_key,
            f"{e.sent:,}",
            f"{e.delivered:,}",
            f"{e.bounced:,}",
            f"{e.opened:,}",
            f"{e.clicked:,}",
            _pct(e.click_to_open),
            f"{e.unsubscribed:,}",
            f"{e.complained:,}",
            f"{e.conversions:,}",
            _pct(e.conversion_rate),
            _money(e.revenue),
        ]
        for e in stats.emails
    ]
    out = ["Emails (opens and clicks: unique, human)", *_table(headers, rows), ""]
    seq_rows = [
        [
            s.slug,
            s.kind,
            f"{s.recipients:,}",
            f"{s.conversions:,}",
            _pct(s.conversion_rate),
            _money(s.revenue),
        ]
        for s in stats.sequences
    ]
    out += [
        "Sequences",
        *_table(["sequence", "kind", "recipients", "conv", "conv%", "revenue"], seq_rows),
        "",
    ]
    funnel = stats.funnel
    base = funnel.signed_up
    steps = [[name, f"{n:,}", _pct(n / base if base else None)] for name, n in funnel.steps()]
    out += [f"Funnel ({funnel.sequence})", *_table(["step", "people", "of signups"], steps), ""]
    out += [*render_sequences(stats.per_sequence), ""]
    out.append(
        f"Not credited to an email: {stats.unattributed_conversions:,} purchase(s), "
        f"{_money(stats.unattributed_revenue)}; buyers who are not subscribers: "
        f"{stats.unknown_buyers:,}"
    )
    out += ["", *render_sending(stats.sending)]
    return "\n".join(out)


@click.command()
@click.option("--json", "as_json_", is_flag=True, help="Print JSON instead of tables.")
@click.option("--rebuild", is_flag=True, help="Recompute the rollups from the raw rows first.")
def stats(as_json_: bool, rebuild: bool) -> None:
    """Per-email figures, conversions, the course funnel, every sequence's enrollments and
    triggers, and how sending is doing."""
    from drip import engagement
    from drip.clock import system_clock
    from drip.content.loading import load_content
    from drip.db import make_engine, session_factory
    from drip.reports.stats import as_json, collect
    from drip.runtime import automations_for
    from drip.settings import get_settings

    # Only what the figures need (settings, database, sequences), not a whole Runtime: the
    # renderer and the email backend would double the start-up time of the command.
    try:
        settings = get_settings()
        forms, library = load_content(settings)
    except SettingsError as err:
        click.echo(f"drip: {err}", err=True)
        sys.exit(2)
    except ContentError as err:
        for problem in err.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    if rebuild:
        with sessions() as session, session.begin():
            engagement.rebuild(session)
    with sessions() as session:
        figures = collect(
            session,
            library,
            settings.course_sequence,
            system_clock(),
            unknown_settle_minutes=settings.unknown_settle_minutes,
            automations=automations_for(library, settings.course_sequence, forms),
        )
    engine.dispose()
    if as_json_:
        click.echo(json.dumps(as_json(figures), indent=2))
    else:
        click.echo(render(figures))


@click.group()
def tracking() -> None:
    """Open and click tracking: the Redis stream and the rollups."""


class _StopSignals:
    """SIGTERM and SIGINT ask ``--forever`` to stop (``requested``) instead of killing it
    mid-drain: the drain in hand finishes and the command exits 0. The previous handlers are
    put back on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    SLICE = 0.1  # seconds: how soon a pause notices a stop

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _request(self, signum: int, frame: object) -> None:
        self.requested = True

    def __enter__(self) -> _StopSignals:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._request)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when a stop is requested meanwhile."""
        ends = time.monotonic() + seconds
        while not self.requested and (left := ends - time.monotonic()) > 0:
            time.sleep(min(left, self.SLICE))


def _echo_drained(report: DrainReport) -> None:
    click.echo(
        f"drained {report.entries} entries in {report.batches} batch(es): "
        f"{report.stored} stored, {report.duplicates} duplicates, {report.malformed} malformed"
    )


@tracking.command("drain")
@click.option(
    "--forever",
    is_flag=True,
    help="Keep draining (every DRIP_TRACKING_DRAIN_SECONDS) until SIGTERM (or Ctrl-C).",
)
def tracking_drain(forever: bool) -> None:
    """Move queued opens and clicks from Redis into the database."""
    from drip.ingest.stream import drain

    rt = _runtime()
    if not forever:
        _echo_drained(drain(rt))
        return
    with _StopSignals() as stop:
        while not stop.requested:
            report = drain(rt)
            if report.entries:
                _echo_drained(report)
            stop.pause(rt.settings.tracking_drain_seconds)
    click.echo("stopped")
