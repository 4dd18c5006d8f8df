"""Reading subscriber CSV files from Kit, Mailchimp or drip itself into checked rows.

Headers are matched case-insensitively, spaces and hyphens counting as underscores, so
``Email Address`` (Mailchimp), ``email_address`` (Kit) and ``email`` (drip) all name the address.
Mailchimp exports one file per status and has no status column: a filled ``UNSUB_TIME`` or
``CLEAN_TIME`` says the row is an unsubscribe or a cleaned (bounced) address. drip's own export
says a suppressed address in ``suppressed_reason`` and ``suppressed_at``, which win over the
status: such a row only ever joins the suppression list.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from drip.errors import InvalidInput
from drip.subscribers.csv_choices import import_source, parse_choice
from drip.subscribers.validation import clean_name, clean_tags, clean_zone, normalize_address

EMAIL = ("email", "email_address", "e_mail", "e_mail_address")
FIRST_NAME = ("first_name", "firstname", "fname", "first")
TAGS = ("tags", "tag")
SIGNED_UP = ("optin_time", "created_at", "signup_date", "subscribed_at", "date_added")
CONFIRMED = ("confirm_time", "confirmed_at")
STATUS = ("status", "state", "member_status")
ZONE = ("timezone", "time_zone", "tz")
UNSUB_TIME = ("unsub_time", "unsubscribed_at")
CLEAN_TIME = ("clean_time",)
SUPPRESSED_REASON = ("suppressed_reason",)
SUPPRESSED_AT = ("suppressed_at",)
COURSE_EMAILS = ("course_emails",)
NEWSLETTER = ("newsletter",)
SOURCE = ("source",)

ACTIVE = "active"
UNSUBSCRIBED = "unsubscribed"
BOUNCE = "bounce"
COMPLAINT = "complaint"
UNCONFIRMED = "unconfirmed"
STATUS_MAP = {
    "": ACTIVE,
    "active": ACTIVE,
    "subscribed": ACTIVE,
    "confirmed": ACTIVE,
    "cold": ACTIVE,  # Kit: active but not engaging lately
    "unsubscribed": UNSUBSCRIBED,
    "cancelled": UNSUBSCRIBED,
    "canceled": UNSUBSCRIBED,
    "opted_out": UNSUBSCRIBED,
    "cleaned": BOUNCE,
    "bounced": BOUNCE,
    "bounce": BOUNCE,
    "complained": COMPLAINT,
    "complaint": COMPLAINT,
    "spam": COMPLAINT,
    "pending": UNCONFIRMED,
    "unconfirmed": UNCONFIRMED,
    "inactive": UNCONFIRMED,  # Kit: signed up, never confirmed
}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# The reasons drip stores on its suppression list (drip.suppress), as its export writes them.
SUPPRESSION_REASONS = (BOUNCE, COMPLAINT, "invalid", "manual", "erased")


@dataclass(frozen=True)
class ImportRow:
    line: int
    email: str
    status: str  # active, unsubscribed, or a suppression reason (bounce, complaint...)
    first_name: str = ""
    tags: tuple[str, ...] = ()
    time_zone: str | None = None
    signed_up_at: datetime | None = None
    confirmed_at: datetime | None = None
    unsubscribed_at: datetime | None = None
    suppressed_at: datetime | None = None  # when the old list suppressed it, if it says
    stated_status: str = ""  # what the status column itself says, mapped ("" if empty)
    course_emails: bool | None = None  # drip's export; None: the file doesn't say
    newsletter: bool | None = None
    source: str | None = None  # drip's export: where the subscriber signed up

    @property
    def suppressed(self) -> bool:
        """The address joins the suppression list; no subscriber is made of it."""
        return self.status in SUPPRESSION_REASONS


@dataclass(frozen=True)
class RowIssue:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ParsedFile:
    rows: list[ImportRow] = field(default_factory=list)
    invalid: list[RowIssue] = field(default_factory=list)  # errors: block the import
    skipped: list[RowIssue] = field(default_factory=list)  # left out on purpose


def _key(header: str) -> str:
    return header.strip().lower().replace(" ", "_").replace("-", "_")


def _column(headers: dict[str, int], names: Iterable[str]) -> int | None:
    return next((headers[n] for n in names if n in headers), None)


def parse_date(value: str, name: str) -> datetime | None:
    """ISO dates and Mailchimp's ``2024-03-01 14:05:11``; naive times are taken as UTC."""
    text = value.strip()
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            name, f"unreadable date {text!r} (expected YYYY-MM-DD[ HH:MM:SS])"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def unformula(value: str) -> str:
    """Undo the apostrophe our CSV export puts before text a spreadsheet would run."""
    return value[1:] if value.startswith("'") and value[1:].startswith(FORMULA_START) else value


def read_rows(lines: Iterable[str]) -> ParsedFile:
    """Check every row; :class:`InvalidInput` on ``file`` if there is no usable header."""
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidInput("file", "is empty") from None
    headers: dict[str, int] = {}
    for index, name in enumerate(header):
        headers.setdefault(_key(name), index)
    email_col = _column(headers, EMAIL)
    if email_col is None:
        raise InvalidInput("file", "has no email column (expected email or Email Address)")
    cols = {
        "first_name": _column(headers, FIRST_NAME),
        "tags": _column(headers, TAGS),
        "signed_up": _column(headers, SIGNED_UP),
        "confirmed": _column(headers, CONFIRMED),
        "status": _column(headers, STATUS),
        "zone": _column(headers, ZONE),
        "unsub": _column(headers, UNSUB_TIME),
        "clean": _column(headers, CLEAN_TIME),
        "suppressed_reason": _column(headers, SUPPRESSED_REASON),
        "suppressed_at": _column(headers, SUPPRESSED_AT),
        "course_emails": _column(headers, COURSE_EMAILS),
        "newsletter": _column(headers, NEWSLETTER),
        "source": _column(headers, SOURCE),
    }
    parsed = ParsedFile()
    seen: dict[str, int] = {}
    line = 2
    for record in reader:
        start, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in record):
            continue

        def cell(col: int | None, record: list[str] = record) -> str:
            return record[col] if col is not None and col < len(record) else ""

        try:
            row = _row(start, cell(email_col), cols, cell)
        except InvalidInput as err:
            parsed.invalid.append(RowIssue(start, f"{err.field}: {err.message}"))
            continue
        if row is None:
            parsed.skipped.append(RowIssue(start, "not confirmed on the old platform: left out"))
            continue
        if row.email in seen:
            parsed.skipped.append(
                RowIssue(start, f"same address as line {seen[row.email]}: left out")
            )
            continue
        seen[row.email] = start
        parsed.rows.append(row)
    return parsed


def _row(
    line: int, email: str, cols: dict[str, int | None], get: Callable[[int | None], str]
) -> ImportRow | None:
    raw_status = _key(get(cols["status"]))
    if raw_status not in STATUS_MAP:
        raise InvalidInput("status", f"unknown status {raw_status!r}")
    status = STATUS_MAP[raw_status]
    unsubscribed_at = parse_date(get(cols["unsub"]), "unsub_time")
    cleaned_at = parse_date(get(cols["clean"]), "clean_time")
    reason, suppressed_at = _suppression(get(cols["suppressed_reason"]), get(cols["suppressed_at"]))
    if reason is not None:
        status = reason
    elif cleaned_at is not None:
        status, suppressed_at = BOUNCE, cleaned_at
    elif unsubscribed_at is not None and status == ACTIVE:
        status = UNSUBSCRIBED
    address = normalize_address(email)
    if status == UNCONFIRMED:
        return None
    return ImportRow(
        line=line,
        email=address,
        status=status,
        first_name=clean_name(unformula(get(cols["first_name"]))),
        tags=clean_tags(get(cols["tags"])),
        time_zone=clean_zone(get(cols["zone"])),
        signed_up_at=parse_date(get(cols["signed_up"]), "signup date"),
        confirmed_at=parse_date(get(cols["confirmed"]), "confirm time"),
        unsubscribed_at=unsubscribed_at,
        suppressed_at=suppressed_at,
        stated_status=STATUS_MAP[raw_status] if raw_status else "",
        course_emails=parse_choice(get(cols["course_emails"]), "course_emails"),
        newsletter=parse_choice(get(cols["newsletter"]), "newsletter"),
        source=import_source(unformula(get(cols["source"]).strip())),
    )


def _suppression(reason_cell: str, at_cell: str) -> tuple[str | None, datetime | None]:
    """The ``suppressed_reason`` and ``suppressed_at`` columns of drip's export, checked."""
    reason = reason_cell.strip().lower()
    at = parse_date(at_cell, "suppressed_at")
    expected = ", ".join(SUPPRESSION_REASONS)
    if reason and reason not in SUPPRESSION_REASONS:
        raise InvalidInput(
            "suppressed_reason", f"unknown reason {reason_cell.strip()!r} (expected {expected})"
        )
    if not reason and at is not None:
        raise InvalidInput("suppressed_reason", f"is empty but suppressed_at is set ({expected})")
    return reason or None, at
