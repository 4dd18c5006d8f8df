"""Tagging every address of a CSV file (``drip subscribers tag --csv FILE TAG...``).

Contract of :func:`tag_csv`:

- the file needs an ``email`` column (any header the import takes for it: ``email``,
  ``Email Address``...); without one, :class:`InvalidInput` on ``file`` naming the column and
  nothing is written. Other columns are ignored;
- it is streamed: rows are read, looked up and tagged in chunks of :data:`CHUNK` addresses, one
  transaction and one :func:`drip.subscribers.tags.add_tags` per chunk, so memory stays flat
  whatever the size of the file. A failure stops at a chunk boundary; running the same file
  again is safe (a tag someone has already is a no-op and starts nothing);
- an address of no subscriber, and a cell that is not an address, is counted and reported with
  its line, never an error for the file (the first :data:`PROBLEMS_KEPT` are kept with their
  line; all are counted).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from drip.errors import InvalidInput
from drip.models import Subscriber
from drip.store import one_of
from drip.subscribers.csvmap import EMAIL
from drip.subscribers.tags import TagResult, add_tags, clean_tag_names
from drip.subscribers.validation import normalize_address

if TYPE_CHECKING:
    from drip.runtime import Runtime

__all__ = ["CHUNK", "CsvTagReport", "RowProblem", "tag_csv", "tag_csv_file"]

CHUNK = 5_000
PROBLEMS_KEPT = 100
# An address already in its stored form (lowercase ASCII dot-atom): normalize_address() would
# return it unchanged, so the ~50 µs of email-validator per row are skipped for nearly every row.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN_ADDRESS = re.compile(
    rf"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*@{_LABEL}(?:\.{_LABEL})*\.[a-z]{{2,63}}"
)


@dataclass(frozen=True)
class RowProblem:
    line: int
    reason: str


@dataclass
class CsvTagReport:
    """What tagging a file did. ``tagged[tag]``: subscribers who got the tag now (not those who
    had it); ``started``/``stopped``: enrollments per sequence slug."""

    rows: int = 0
    found: int = 0  # rows whose address is a subscriber's
    unknown: int = 0  # a valid address of no subscriber
    invalid: int = 0  # not an email address
    tagged: dict[str, int] = field(default_factory=dict)
    started: dict[str, int] = field(default_factory=dict)
    stopped: dict[str, int] = field(default_factory=dict)
    problems: list[RowProblem] = field(default_factory=list)  # the first PROBLEMS_KEPT

    @property
    def enrollments_started(self) -> int:
        return sum(self.started.values())

    def add(self, result: TagResult) -> None:
        for tag, ids in result.changed.items():
            self.tagged[tag] = self.tagged.get(tag, 0) + len(ids)
        for mine, theirs in ((self.started, result.started), (self.stopped, result.stopped)):
            for slug, count in theirs.items():
                mine[slug] = mine.get(slug, 0) + count

    def problem(self, line: int, reason: str) -> None:
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append(RowProblem(line, reason))


def tag_csv_file(rt: Runtime, path: Path, tags: Iterable[str], chunk: int = CHUNK) -> CsvTagReport:
    """:func:`tag_csv` of the file at ``path`` (UTF-8, with or without a BOM)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return tag_csv(rt, handle, tags, chunk)
    except UnicodeDecodeError as err:
        raise InvalidInput(
            "file", f"is not UTF-8 text (byte {err.start}); save it as UTF-8"
        ) from None


def tag_csv(
    rt: Runtime, lines: Iterable[str], tags: Iterable[str], chunk: int = CHUNK
) -> CsvTagReport:
    """Put ``tags`` on the subscriber of every address of the CSV ``lines``; see the module."""
    names = clean_tag_names(tags)
    if not names:
        raise InvalidInput("tags", "name at least one tag")
    report = CsvTagReport()
    for rows in _chunks(_addresses(lines, report), chunk):
        with rt.transaction() as session:
            wanted = select(Subscriber.email, Subscriber.id).where(
                one_of(Subscriber.email, sorted(rows), session)
            )
            found = {email: sid for email, sid in session.execute(wanted)}
            report.add(add_tags(rt, session, found.values(), names, rt.clock()))
        report.found += sum(len(at) for address, at in rows.items() if address in found)
        for address, at in rows.items():
            if address not in found:
                report.unknown += len(at)
                for line in at:
                    report.problem(line, f"no subscriber with the address {address}")
    return report


def _addresses(lines: Iterable[str], report: CsvTagReport) -> Iterator[tuple[int, str]]:
    """``(line, address)`` of each row with a valid address; the others counted in ``report``."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise InvalidInput("file", "is empty: it needs a header line with an email column")
    keys = [name.strip().lower().replace(" ", "_").replace("-", "_") for name in header]
    column = next((keys.index(name) for name in EMAIL if name in keys), None)
    if column is None:
        found = ", ".join(repr(name) for name in header[:10]) or "none"
        raise InvalidInput("file", f"has no 'email' column (its columns: {found})")
    line = 2
    for record in reader:
        start, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in record):
            continue
        report.rows += 1
        raw = record[column] if column < len(record) else ""
        address = raw.strip().lower()
        if not _PLAIN_ADDRESS.fullmatch(address):
            try:
                address = normalize_address(raw)
            except InvalidInput as err:
                report.invalid += 1
                report.problem(start, f"email {err.message}")
                continue
        yield start, address


def _chunks(rows: Iterator[tuple[int, str]], size: int) -> Iterator[dict[str, list[int]]]:
    """``{address: [its lines]}`` of up to ``size`` rows at a time."""
    batch: dict[str, list[int]] = {}
    count = 0
    for line, address in rows:
        batch.setdefault(address, []).append(line)
        count += 1
        if count >= size:
            yield batch
            batch, count = {}, 0
    if batch:
        yield batch
