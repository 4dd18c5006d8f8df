"""The store's contract: the writes and predicates whose SQL differs between the two databases.

Domain modules get the store of their session's database from :func:`drip.store.store_for` and
call these operations; they never look at the dialect themselves. Every operation runs in the
caller's session and transaction and commits nothing. The two implementations have the same
effects and differ only in how they say it: PostgreSQL in one statement over array literals or a
JSON document (docs/decisions.md, "Bulk parameters travel as array literals"), SQLite with a
VALUES list or executemany.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Insert
from sqlalchemy.orm import Session

from drip.models import Base, DeliveryEngagement, MessageStats

# The columns the rollup operations write, as the schema has them: the counters of
# ``message_stats`` and the engagement firsts of ``delivery_engagement`` (``opened_at``...).
MESSAGE_COUNTERS = tuple(c.name for c in MessageStats.__table__.c if not c.primary_key)
ENGAGEMENT_FIRSTS = tuple(
    c.name
    for c in DeliveryEngagement.__table__.c
    if c.name not in ("delivery_id", "message_key", "subscriber_id")
)

# (subscriber id, sequence slug, position): a lesson delivery the tick writes.
LessonDelivery = tuple[int, str, int, int]
# (subscriber id, sequence slug, trigger label, first due time, enrolled at): a new enrollment.
NewEnrollment = tuple[int, str, str, datetime, datetime]
# (enrollment id, its new position, its next send time; None: the claim completed it).
Advance = tuple[int, int, datetime | None]


class EngagementFirst(Protocol):
    """A candidate first of one engagement column (say ``opened_at``) of one delivery."""

    @property
    def delivery_id(self) -> int: ...

    @property
    def message_key(self) -> str: ...

    @property
    def subscriber_id(self) -> int: ...

    @property
    def at(self) -> datetime: ...


class Store(Protocol):
    """What the domain asks of the database where PostgreSQL and SQLite need different SQL."""

    dialect: str  # the SQLAlchemy dialect name this store speaks: "postgresql", "sqlite"

    def one_of(self, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
        """``column`` is one of ``values`` (not empty), as a WHERE clause.

        Cheap to compile whatever the number of values: a thousand ids must not become a
        thousand placeholders to parse on every call where the database can take one array.
        """
        ...

    def insert_ignore(self, table: type[Base], conflict_columns: Sequence[str]) -> Insert:
        """An INSERT into ``table`` that skips rows whose ``conflict_columns`` exist already.

        The caller adds ``.values(...)`` and ``.returning(...)`` or executes it with a list of
        rows; with RETURNING, only the rows inserted now come back.
        """
        ...

    def start_enrollments(self, session: Session, rows: Sequence[NewEnrollment]) -> None:
        """Insert active enrollments at position 0, entry 1, skipping any (subscriber, sequence)
        that exists already (a concurrent event may have started it). ``rows`` is not empty.

        One cached statement whatever the number of rows: the ORM's bulk insert with ON CONFLICT
        compiles afresh on every call, which is most of a single trigger event's cost.
        """
        ...

    def insert_lesson_deliveries(
        self, session: Session, deliveries: Sequence[LessonDelivery], now: datetime
    ) -> list[int]:
        """Write a ``queued`` lesson delivery for each of ``deliveries``; the ids to send.

        A row that exists already (same subscriber and message key) is left alone, unless it is
        ``skipped`` or ``failed``: then it is queued again (error, backend and attempts cleared)
        and its id is returned. ``deliveries`` is not empty.
        """
        ...

    def advance_enrollments(
        self, session: Session, advanced: Sequence[Advance], now: datetime
    ) -> None:
        """Move each enrollment to its new position and next send time (``last_sent_at`` now);
        one whose next send time is None is ``completed`` now. ``advanced`` is not empty."""
        ...

    def record_outcomes(
        self, session: Session, changes: Sequence[Mapping[str, Any]], backend: str, now: datetime
    ) -> None:
        """Apply send outcomes to their delivery rows.

        Each change names the row (``id``) and its new ``status``, ``provider_message_id``,
        ``error`` and ``sent_at``, and ``uncount``: how many attempts to give back (1 for a
        retry that used none up). ``backend`` and ``updated_at`` (now) are set on every row.
        ``changes`` is not empty.
        """
        ...

    def insert_broadcast_deliveries(
        self,
        session: Session,
        broadcast_id: int,
        message_key: str,
        subscriber_ids: Sequence[int],
        status: str,
        error: str | None,
        now: datetime,
    ) -> list[int]:
        """One broadcast delivery per subscriber in ``status`` (with ``error``, the reason of a
        skip); a subscriber who has one already gets none. The ids of the rows written now."""
        ...

    def insert_events(
        self, session: Session, rows: Sequence[Mapping[str, Any]], received_at: datetime
    ) -> set[str]:
        """Store tracking events, skipping those whose ``provider_event_id`` is stored already.

        ``rows`` hold the columns of ``tracking_events`` but ``received_at`` (``occurred_at`` an
        aware datetime), sorted by ``provider_event_id``: one lock order for concurrent batches.
        Returns the provider event ids stored now.
        """
        ...

    def add_counts(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
        """Add to the ``message_stats`` counters.

        Each row is a ``message_key`` and a number for every one of :data:`MESSAGE_COUNTERS`;
        rows come sorted by message key (one lock order for concurrent batches). A message seen
        for the first time gets its row.
        """
        ...

    def record_firsts(
        self, session: Session, by_column: Mapping[str, Mapping[int, EngagementFirst]]
    ) -> list[tuple[str, str]]:
        """Set each first where the delivery's column is still NULL.

        ``by_column[column][delivery_id]`` is the earliest candidate for that delivery of that
        column of :data:`ENGAGEMENT_FIRSTS` (``opened_at`` say); a delivery without a
        ``delivery_engagement`` row gets one. Returns one (column, message key) pair per column
        set now: exactly the firsts that count, even with concurrent ingests.
        """
        ...

    def suppress_hashes(
        self, session: Session, rows: Sequence[Mapping[str, Any]], now: datetime
    ) -> int:
        """Add suppression rows (``email_hash``, ``reason``, ``detail``), sorted by hash; a hash
        listed already keeps its first reason. Returns how many were new."""
        ...

    def count_per_day(
        self, session: Session, column: Any, since: datetime, zone: ZoneInfo
    ) -> dict[date, int]:
        """How many rows have ``column >= since``, per calendar day in ``zone``."""
        ...
