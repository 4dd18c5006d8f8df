"""``drip broadcast ...``: compose, segment, preview, test, schedule, follow, pause, cancel.

Segments are given as JSON or as ``key=value`` words (docs/broadcasts.md)::

    drip broadcast create news.md --subject "Hill week" --segment "tags=5k state=in_course"
    drip broadcast schedule 3 --at "2026-03-09 09:00" --local-time --past-zones tomorrow
    drip broadcast show 3 --follow

Exit codes: 0 done, 1 refused (unknown broadcast, a change the status machine forbids, a failed
test send), 2 bad input (the message names the field).
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import yaml

from drip.cli.support import runtime_or_exit as _runtime
from drip.errors import BackendError, InvalidInput

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from drip.broadcasts.queries import BroadcastDetail, BroadcastSummary
    from drip.broadcasts.results import Progress
    from drip.models import Broadcast
    from drip.runtime import Runtime

FOLLOW_INTERVAL = 2.0
_sleep: Callable[[float], None] = time.sleep  # tests replace it to drive a send between polls


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"drip: {message}", err=True)
    sys.exit(code)


@contextmanager
def _answers() -> Iterator[None]:
    """Turn the engine's errors into one line on stderr and an exit code."""
    from drip.broadcasts.status import BroadcastError

    try:
        yield
    except InvalidInput as err:
        _fail(str(err), 2)  # "field: message"; every problem, one a line, for a broadcast's
    except BroadcastError as err:
        _fail(str(err), 1)


def _actor(ctx: click.Context) -> str:
    return str(ctx.obj["actor"])


@click.group()
@click.option("--as", "actor", default=None, help="Who to record as (default: cli:$USER).")
@click.pass_context
def broadcast(ctx: click.Context, actor: str | None) -> None:
    """Newsletter broadcasts: compose, segment, preview, test, schedule, send."""
    if actor is None:
        try:
            actor = f"cli:{getpass.getuser()}"
        except (KeyError, OSError):
            actor = "cli"
    ctx.obj = {"actor": actor}


def _read_file(path: Path) -> tuple[dict[str, Any], str]:
    """A Markdown file, with optional YAML front matter (subject, preheader, segment)."""
    text = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    if not text.startswith("---\n"):
        return {}, text
    head, sep, body = text[4:].partition("\n---\n")
    if not sep:
        _fail(f"{path}: front matter is never closed: add a '---' line after it", 2)
    try:
        meta = yaml.safe_load(head) or {}
    except yaml.YAMLError as err:
        _fail(f"{path}: front matter is not valid YAML: {err}", 2)
    if not isinstance(meta, dict):
        _fail(f"{path}: front matter must be a mapping", 2)
    return meta, body


def _segment(value: Any) -> dict[str, Any] | None:
    from drip.broadcasts.segments import parse_segment, parse_segment_text

    if value is None:
        return None
    if isinstance(value, dict):
        return parse_segment(value).to_json()
    return parse_segment_text(str(value)).to_json()


@broadcast.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--subject", help="Subject line (or `subject:` in the file's front matter).")
@click.option("--preheader", help="Inbox preview text.")
@click.option("--segment", help='JSON, or words like "tags=5k state=in_course engaged=30".')
@click.option(
    "--quiet-hours", type=click.IntRange(0, 168), help="Skip anyone sent a lesson within N h."
)
@click.pass_context
def create(
    ctx: click.Context,
    file: Path,
    subject: str | None,
    preheader: str | None,
    segment: str | None,
    quiet_hours: int | None,
) -> None:
    """Create a draft from a Markdown FILE; prints its id and audience."""
    from drip.broadcasts.compose import create_broadcast

    meta, body = _read_file(file)
    rt = _runtime()
    with _answers(), rt.transaction() as session:
        b = create_broadcast(
            session,
            rt,
            subject=subject or str(meta.get("subject") or ""),
            preheader=preheader if preheader is not None else str(meta.get("preheader") or ""),
            body_md=body,
            segment=_segment(segment if segment is not None else meta.get("segment")),
            quiet_hours=quiet_hours if quiet_hours is not None else meta.get("quiet_hours"),
            actor=_actor(ctx),
            now=rt.clock(),
        )
        count = _count(rt, session, b.segment)
        click.echo(f"created broadcast {b.id} (draft): {count:,} subscribers in its segment now")


@broadcast.command()
@click.argument("broadcast_id", type=int)
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--subject")
@click.option("--preheader")
@click.option("--segment")
@click.option("--quiet-hours", type=click.IntRange(0, 168))
@click.pass_context
def update(
    ctx: click.Context,
    broadcast_id: int,
    file: Path | None,
    subject: str | None,
    preheader: str | None,
    segment: str | None,
    quiet_hours: int | None,
) -> None:
    """Change a draft (or the content of a scheduled broadcast)."""
    from drip.broadcasts.compose import update_broadcast

    changes: dict[str, Any] = {}
    if file is not None:
        meta, changes["body_md"] = _read_file(file)
        changes.update({k: meta[k] for k in ("subject", "preheader") if k in meta})
    for key, value in (("subject", subject), ("preheader", preheader)):
        if value is not None:
            changes[key] = value
    if quiet_hours is not None:
        changes["quiet_hours"] = quiet_hours
    rt = _runtime()
    with _answers():
        if segment is not None:
            changes["segment"] = _segment(segment)
        if not changes:
            _fail("nothing to change: give --file, --subject, --preheader, --segment...", 2)
        with rt.transaction() as session:
            update_broadcast(
                session, rt, broadcast_id, changes=changes, actor=_actor(ctx), now=rt.clock()
            )
    click.echo(f"broadcast {broadcast_id} updated: {', '.join(sorted(changes))}")


def _count(rt: Runtime, session: Session, spec: dict[str, Any] | None) -> int:
    from drip.broadcasts.segments import audience_count, context_of, parse_segment

    return audience_count(session, parse_segment(spec), context_of(rt), rt.clock())


@broadcast.command()
@click.option("--segment", help="A segment (JSON or key=value words).")
@click.option("--id", "broadcast_id", type=int, help="Or: the segment of this broadcast.")
def audience(segment: str | None, broadcast_id: int | None) -> None:
    """How many subscribers a segment holds now (suppressed ones left out)."""
    from drip.broadcasts.segments import parse_segment
    from drip.broadcasts.status import get_broadcast

    rt = _runtime()
    with _answers(), rt.sessions() as session:
        spec = _segment(segment)
        if broadcast_id is not None:
            spec = get_broadcast(session, broadcast_id).segment
        click.echo(f"{_count(rt, session, spec):,} subscribers: {parse_segment(spec).describe()}")


@broadcast.command("list")
@click.option("--status", help="Only this status (draft, scheduled, sending, sent...).")
def list_(status: str | None) -> None:
    """Broadcasts, newest first (the latest 200)."""
    from drip.broadcasts.queries import LIST_MAX, list_broadcasts
    from drip.broadcasts.status import BroadcastStatus

    rt = _runtime()
    rows: tuple[BroadcastSummary, ...] = ()
    # An unknown status matches no broadcast, as it always has: "no broadcasts", exit 0.
    if not status or status in BroadcastStatus.__members__.values():
        wanted = BroadcastStatus(status) if status else None
        with rt.sessions() as session:
            rows = list_broadcasts(session, status=wanted, limit=LIST_MAX).items
    for b in rows:
        when = _when(b)
        click.echo(f"{b.id:>5}  {b.status:<9}  {when:<28}  {b.subject}")
    if not rows:
        click.echo("no broadcasts", err=True)


def _when(b: BroadcastSummary | Broadcast) -> str:
    if b.local_time and b.local_wall_time:
        return f"{b.local_wall_time.replace('T', ' ')} local"
    if b.scheduled_at:
        return f"{b.scheduled_at:%Y-%m-%d %H:%M} UTC"
    return "-"


def _bar(progress: Progress, width: int = 30) -> str:
    total, done = progress.total, progress.done
    share = min(done / total, 1.0) if total else 0.0
    filled = int(share * width)
    counts = progress.by_status
    detail = " · ".join(f"{k} {v:,}" for k, v in counts.items() if v)
    of = f"{done:,}/{total:,}" if total is not None else f"{done:,}"
    return f"[{'#' * filled}{'.' * (width - filled)}] {share * 100:5.1f}%  {of}  {detail}"


def _print_detail(info: BroadcastDetail) -> None:
    b = info.broadcast
    click.echo(f"Broadcast {b.id}: {b.subject!r} [{b.status}]")
    click.echo(f"Segment:   {b.segment_text}")
    if b.local_time:
        click.echo(
            f"Scheduled: {b.local_wall_time} local in each zone "
            f"({len(info.zone_groups)} zone groups; zones already past: {b.past_zones})"
        )
    elif b.scheduled_at:
        click.echo(f"Scheduled: {b.scheduled_at.isoformat()}")
    click.echo(f"Progress:  {_bar(info.progress)}")
    r = info.results
    click.echo(
        f"Results:   sent {r.sent:,} · delivered {r.delivered:,} · opens {r.opens:,} · "
        f"clicks {r.clicks:,} · unsubscribes {r.unsubscribes:,} · bounces "
        f"{r.bounces:,} · complaints {r.complaints:,} · conversions {r.conversions:,}"
    )
    click.echo("History:")
    for ev in info.history:
        note = f"  ({ev.note})" if ev.note else ""
        at = ev.at.isoformat()[:19]
        click.echo(f"  {at}  {ev.actor:<16} {ev.action:<11} -> {ev.to_status}{note}")


def _load_detail(rt: Runtime, broadcast_id: int) -> BroadcastDetail:
    from drip.broadcasts.queries import broadcast_detail

    with rt.sessions() as session:
        return broadcast_detail(session, broadcast_id)


@broadcast.command()
@click.argument("broadcast_id", type=int)
@click.option("--follow", is_flag=True, help="Redraw the progress bar until the send is over.")
@click.option(
    "--interval", type=click.FloatRange(0.1, 60), default=FOLLOW_INTERVAL, show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="Everything as JSON.")
def show(broadcast_id: int, follow: bool, interval: float, as_json: bool) -> None:
    """A broadcast: progress, zone groups, results, history."""
    from drip.broadcasts.status import FINAL

    rt = _runtime()
    with _answers():
        info = _load_detail(rt, broadcast_id)
        if as_json:
            click.echo(json.dumps(info.to_json(), indent=2))
            return
        _print_detail(info)
        if not follow:
            return
        tty = sys.stdout.isatty()
        last = (time.monotonic(), info.progress.done)
        while info.broadcast.status not in FINAL:
            _sleep(interval)
            info = _load_detail(rt, broadcast_id)
            status, now, done = info.broadcast.status, time.monotonic(), info.progress.done
            rate = (done - last[1]) / max(now - last[0], 1e-9)
            last = (now, done)
            line = f"{status:<9} {_bar(info.progress)}  {rate:,.0f}/s"
            click.echo(f"\r\033[K{line}" if tty else line, nl=not tty)
        status = info.broadcast.status
        click.echo(f"\n{status}: sent {info.results.sent:,}" if tty else status)


@broadcast.command()
@click.argument("broadcast_id", type=int)
@click.option(
    "--subscriber", type=int, help="As this subscriber id would get it (default: a sample)."
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Write .html and .txt here."
)
def preview(broadcast_id: int, subscriber: int | None, out: Path | None) -> None:
    """Render the HTML and text parts; prints the text unless --out is given."""
    from drip.broadcasts.preview import preview as render_preview
    from drip.broadcasts.status import get_broadcast

    rt = _runtime()
    with _answers(), rt.sessions() as session:
        shown = render_preview(rt, session, get_broadcast(session, broadcast_id), subscriber)
    if out is None:
        click.echo(f"To: {shown.to}\nSubject: {shown.subject}\n\n{shown.text}")
        return
    out.mkdir(parents=True, exist_ok=True)
    html, text = out / f"broadcast-{broadcast_id}.html", out / f"broadcast-{broadcast_id}.txt"
    html.write_text(shown.html, encoding="utf-8")
    text.write_text(f"Subject: {shown.subject}\n\n{shown.text}", encoding="utf-8")
    click.echo(f"wrote {html} and {text} (as {shown.to})")


@broadcast.command()
@click.argument("broadcast_id", type=int)
@click.option("--to", "to", multiple=True, required=True, help="An address (repeatable).")
@click.pass_context
def test(ctx: click.Context, broadcast_id: int, to: tuple[str, ...]) -> None:
    """Send a [TEST] copy now; no delivery row, no stats."""
    from drip.broadcasts.preview import record_test, send_test
    from drip.broadcasts.status import get_broadcast

    rt = _runtime()
    with _answers():
        with rt.sessions() as session:  # no transaction open during the backend call
            try:
                results = send_test(rt, session, get_broadcast(session, broadcast_id), list(to))
            except BackendError as err:
                _fail(f"the email backend refused the test: {err}", 1)
        with rt.transaction() as session:
            b = get_broadcast(session, broadcast_id)
            record_test(session, b, results, actor=_actor(ctx), now=rt.clock())
    for address, res in zip(to, results, strict=False):
        click.echo(f"{address}: {'sent' if res.ok else 'failed: ' + str(res.error)}")
    if not all(r.ok for r in results):
        sys.exit(1)


@broadcast.command()
@click.argument("broadcast_id", type=int)
@click.option(
    "--at", "at", required=True, help='"2026-03-09 09:00" (UTC unless an offset), or "now".'
)
@click.option(
    "--local-time", is_flag=True, help="--at is a wall-clock time in each subscriber's zone."
)
@click.option(
    "--past-zones",
    type=click.Choice(["now", "tomorrow"]),
    default="now",
    show_default=True,
    help="Zones whose local time has already passed: send at once, or the next day.",
)
@click.pass_context
def schedule(
    ctx: click.Context, broadcast_id: int, at: str, local_time: bool, past_zones: str
) -> None:
    """Schedule (or reschedule); beat sends it when due."""
    from drip.broadcasts.zones import schedule as schedule_broadcast

    rt = _runtime()
    now = rt.clock()
    when: str | datetime = now.astimezone(UTC) if at.strip().lower() == "now" else at
    with _answers(), rt.transaction() as session:
        b = schedule_broadcast(
            session,
            rt,
            broadcast_id,
            at=when,
            local_time=local_time,
            past_zones=past_zones,
            actor=_actor(ctx),
            now=now,
        )
        click.echo(
            f"broadcast {b.id} scheduled: {_when(b)}; "
            f"first send {b.scheduled_at:%Y-%m-%d %H:%M} UTC"
        )


def _simple(name: str, doc: str) -> None:
    @broadcast.command(name=name, help=doc)
    @click.argument("broadcast_id", type=int)
    @click.pass_context
    def command(ctx: click.Context, broadcast_id: int) -> None:
        from drip.broadcasts import control

        act = control.ACTIONS[name]
        rt = _runtime()
        with _answers(), rt.transaction() as session:
            b = act(session, broadcast_id, actor=_actor(ctx), now=rt.clock())
            click.echo(f"broadcast {b.id} is {b.status}")


_simple("unschedule", "Back to draft (to change the segment).")
_simple("pause", "Stop sending now; queued emails are held.")
_simple("resume", "Carry on where it stopped (beat restarts it within a minute).")
_simple("cancel", "Stop for good; unsent emails are dropped.")
