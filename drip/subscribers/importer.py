"""``drip subscribers import``: a whole CSV file in one transaction, or nothing.

Rules: suppressed and erased addresses are never (re)activated; an address unsubscribed here
stays unsubscribed whatever the file says; an unsubscribe or a bounce in the file is honoured,
and so is a suppression in drip's own export (its reason and date are kept).
Rows that were not confirmed on the old platform are left out (we can't prove their consent).
An opt-out wins from either side: the file's ``course_emails``/``newsletter`` false turns that
choice off here, and the file's true never turns back on one that is off here. A row whose columns
disagree is read the way that sends less mail (:mod:`drip.subscribers.import_conflicts`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from drip.content.types import Sequence
from drip.engine.consent import record_consent, unsubscribe
from drip.engine.enrollments import enroll, stop_enrollments
from drip.errors import InvalidInput
from drip.models import Subscriber, SubscriberStatus
from drip.subscribers import csvmap
from drip.subscribers.csvmap import ImportRow, ParsedFile, RowIssue
from drip.subscribers.import_conflicts import safer_reading
from drip.subscribers.store import add_tags
from drip.suppress import email_hash, salt, suppress_since, suppressed_hashes

if TYPE_CHECKING:
    from drip.runtime import Runtime

log = logging.getLogger(__name__)
CHUNK = 500
Progress = Callable[[int], None]


@dataclass
class ImportReport:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unsubscribed: int = 0
    suppressed: int = 0
    invalid: list[RowIssue] = field(default_factory=list)
    skipped: list[RowIssue] = field(default_factory=list)
    # rows read the way that sends less mail: columns that disagree, or a choice off here
    conflicts: list[RowIssue] = field(default_factory=list)
    written: bool = False


@dataclass(frozen=True)
class ImportOptions:
    source: str  # recorded in the consent log, e.g. "import:kit-export.csv"
    enroll_in: Sequence | None = None  # put new active subscribers into this sequence
    fallback_tz: str = "UTC"


def read_file(path: Path) -> ParsedFile:
    """Parse ``path`` (UTF-8, with or without a BOM); :class:`InvalidInput` on ``file``."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return csvmap.read_rows(handle)
    except UnicodeDecodeError as err:
        raise InvalidInput(
            "file", f"is not UTF-8 text (byte {err.start}); save it as UTF-8"
        ) from None


def apply_rows(
    session: Session,
    rows: list[ImportRow],
    now: datetime,
    options: ImportOptions,
    report: ImportReport,
    progress: Progress | None = None,
) -> None:
    """Write ``rows`` in ``session`` (the caller commits or rolls back)."""
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        emails = [r.email for r in chunk]
        existing = {
            s.email: s
            for s in session.scalars(select(Subscriber).where(Subscriber.email.in_(emails)))
        }
        blocked = suppressed_hashes(session, emails)
        for row in chunk:
            if email_hash(session, row.email) in blocked:
                report.skipped.append(RowIssue(row.line, "suppressed or erased address: left out"))
            else:
                _apply(session, row, existing.get(row.email), now, options, report)
        session.flush()
        if progress is not None:
            progress(len(chunk))


def _apply(
    session: Session,
    row: ImportRow,
    subscriber: Subscriber | None,
    now: datetime,
    options: ImportOptions,
    report: ImportReport,
) -> None:
    row, conflicts = safer_reading(row)
    report.conflicts.extend(RowIssue(row.line, sentence) for sentence in conflicts)
    if row.suppressed:  # bounce, complaint...: listed, never made a subscriber who gets mail
        suppress_since(session, row.email, row.status, row.suppressed_at, detail=options.source)
        if subscriber is not None:
            stop_enrollments(session, subscriber.id, "suppressed")
        report.suppressed += 1
        return
    if subscriber is None:
        subscriber = _create(session, row, now, options)
        add_tags(session, subscriber, row.tags)
        if row.status == csvmap.UNSUBSCRIBED:
            report.unsubscribed += 1  # kept, so a later file can't make them active
            return
        report.created += 1
    elif row.status == csvmap.UNSUBSCRIBED:
        add_tags(session, subscriber, row.tags)
        report.updated += 1
        if unsubscribe(session, subscriber, row.unsubscribed_at or now, options.source):
            report.unsubscribed += 1
        return
    elif subscriber.status == SubscriberStatus.UNSUBSCRIBED:
        report.skipped.append(RowIssue(row.line, "unsubscribed here: an import never resubscribes"))
        return
    else:
        report.updated += 1
        subscriber.first_name = subscriber.first_name or row.first_name
        subscriber.time_zone = subscriber.time_zone or row.time_zone
        subscriber.source = subscriber.source or row.source or ""
        add_tags(session, subscriber, row.tags)
        _merge_choices(session, subscriber, row, report)
    if subscriber.status == SubscriberStatus.PENDING:
        subscriber.status = SubscriberStatus.ACTIVE
        subscriber.confirmed_at = row.confirmed_at or row.signed_up_at or now
    if (
        subscriber.status == SubscriberStatus.ACTIVE
        and subscriber.course_emails
        and options.enroll_in is not None
    ):
        enroll(session, subscriber, options.enroll_in, now, options.fallback_tz)


def _merge_choices(
    session: Session, subscriber: Subscriber, row: ImportRow, report: ImportReport
) -> None:
    """The file's choices into an existing subscriber: a false turns the choice off (course
    emails off stops the course, as on the preferences page); a true never turns one back on."""
    if row.course_emails is False and subscriber.course_emails:
        subscriber.course_emails = False
        stop_enrollments(session, subscriber.id, "preferences")
    if row.newsletter is False:
        subscriber.newsletter = False
    for name, in_file, here in (
        ("course_emails", row.course_emails, subscriber.course_emails),
        ("newsletter", row.newsletter, subscriber.newsletter),
    ):
        if in_file and not here:
            report.conflicts.append(
                RowIssue(
                    row.line,
                    f"{name} is true, but off here: kept off, an import never turns mail back on",
                )
            )


def _create(session: Session, row: ImportRow, now: datetime, options: ImportOptions) -> Subscriber:
    active = row.status == csvmap.ACTIVE
    subscriber = Subscriber(
        email=row.email,
        first_name=row.first_name,
        time_zone=row.time_zone,
        status=SubscriberStatus.ACTIVE if active else SubscriberStatus.UNSUBSCRIBED,
        source=row.source or options.source[:100],
        course_emails=row.course_emails is not False,
        newsletter=row.newsletter is not False,
        created_at=row.signed_up_at or now,
        confirmed_at=(row.confirmed_at or row.signed_up_at or now) if active else None,
        unsubscribed_at=None if active else (row.unsubscribed_at or now),
    )
    session.add(subscriber)
    session.flush()
    opted_in = (row.confirmed_at or row.signed_up_at or now).isoformat()
    record_consent(
        session,
        subscriber,
        "import",
        now,
        source=options.source,
        text=f"Imported by the list owner; opted in on the previous platform at {opted_in}.",
    )
    return subscriber


def import_file(
    rt: Runtime,
    path: Path,
    *,
    dry_run: bool = False,
    skip_invalid: bool = False,
    enroll_new: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Read and import ``path`` (see :func:`import_parsed`)."""
    parsed = read_file(path)
    return import_parsed(
        rt,
        parsed,
        source=f"import:{path.name}",
        dry_run=dry_run,
        skip_invalid=skip_invalid,
        enroll_new=enroll_new,
        progress=progress,
    )


def import_parsed(
    rt: Runtime,
    parsed: ParsedFile,
    *,
    source: str,
    dry_run: bool = False,
    skip_invalid: bool = False,
    enroll_new: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import checked rows in one transaction. With bad rows nothing is written unless
    ``skip_invalid``; ``dry_run`` runs everything and rolls back, so its report counts exactly
    what a real run would do."""
    report = ImportReport(rows=len(parsed.rows) + len(parsed.invalid) + len(parsed.skipped))
    report.invalid = list(parsed.invalid)
    report.skipped = list(parsed.skipped)
    if report.invalid and not skip_invalid:
        return report
    with rt.transaction() as session:
        salt(session)  # committed before the import's own transaction, which may roll back
    options = ImportOptions(
        source=source[:100],
        enroll_in=rt.course() if enroll_new else None,
        fallback_tz=rt.settings.default_timezone,
    )
    with rt.sessions() as session:
        transaction = session.begin()
        try:
            apply_rows(session, parsed.rows, rt.clock(), options, report, progress)
        except BaseException:
            transaction.rollback()
            raise
        if dry_run:
            transaction.rollback()
        else:
            transaction.commit()
            report.written = True
    report.skipped.sort(key=lambda issue: issue.line)
    report.conflicts.sort(key=lambda issue: issue.line)
    log.info("import from %s: %s", source, "written" if report.written else "not written")
    return report
