"""The SQLite store: the embedded database of the demo and of small installations.

SQLite has no arrays, no ``json_to_recordset`` and no row locks: batches are written with
executemany or a VALUES list, and every transaction is a single writer (``BEGIN IMMEDIATE``,
see :func:`drip.db.make_engine`), so no lock order is needed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Insert, Table, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from drip.models import (
    Base,
    Delivery,
    DeliveryEngagement,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    MessageStats,
    Suppression,
    TrackingEvent,
    lesson_key,
)
from drip.store.base import (
    MESSAGE_COUNTERS,
    Advance,
    EngagementFirst,
    LessonDelivery,
    NewEnrollment,
)

_CHUNK = 1000  # rows per VALUES list: far below SQLite's bound-parameter limit
# A plain INSERT with a prefix is cached by SQLAlchemy; one with ON CONFLICT is not.
_START_ENROLLMENTS = cast(Table, Enrollment.__table__).insert().prefix_with("OR IGNORE")


class SqliteStore:
    """:class:`drip.store.base.Store` for SQLite."""

    dialect = "sqlite"

    def one_of(self, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
        return cast(ColumnElement[bool], column.in_(list(values)))

    def insert_ignore(self, table: type[Base], conflict_columns: Sequence[str]) -> Insert:
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=conflict_columns)

    def start_enrollments(self, session: Session, rows: Sequence[NewEnrollment]) -> None:
        values = [
            {
                "subscriber_id": subscriber_id,
                "sequence": slug,
                "trigger": trigger,
                "next_send_at": due,
                "enrolled_at": enrolled_at,
                "position": 0,
                "entry": 1,
                "status": EnrollmentStatus.ACTIVE,
            }
            for subscriber_id, slug, trigger, due, enrolled_at in rows
        ]
        session.connection().execute(_START_ENROLLMENTS, values)

    def insert_lesson_deliveries(
        self, session: Session, deliveries: Sequence[LessonDelivery], now: datetime
    ) -> list[int]:
        insert = sqlite.insert(Delivery)
        stmt = insert.on_conflict_do_update(
            index_elements=["subscriber_id", "message_key"],
            set_={
                "status": DeliveryStatus.QUEUED,
                "error": None,
                "backend": None,
                "attempts": 0,
                "updated_at": insert.excluded.updated_at,
                "queued_at": insert.excluded.updated_at,
            },
            # Spelled out: an IN list would expand per call, which executemany can't do.
            where=(Delivery.status == DeliveryStatus.SKIPPED)
            | (Delivery.status == DeliveryStatus.FAILED),
        )
        rows = [
            {
                "subscriber_id": subscriber_id,
                "message_key": lesson_key(slug, position, entry),
                "kind": DeliveryKind.LESSON,
                "sequence": slug,
                "position": position,
                "status": DeliveryStatus.QUEUED,
                "created_at": now,
                "updated_at": now,
            }
            for subscriber_id, slug, position, entry in deliveries
        ]
        return list(session.scalars(stmt.returning(Delivery.id), rows))

    def advance_enrollments(
        self, session: Session, advanced: Sequence[Advance], now: datetime
    ) -> None:
        updates = [
            {
                "id": enrollment_id,
                "position": position,
                "last_sent_at": now,
                "next_send_at": due,
                "status": EnrollmentStatus.ACTIVE
                if due is not None
                else EnrollmentStatus.COMPLETED,
                "completed_at": None if due is not None else now,
            }
            for enrollment_id, position, due in advanced
        ]
        session.execute(update(Enrollment), updates)

    def record_outcomes(
        self, session: Session, changes: Sequence[Mapping[str, Any]], backend: str, now: datetime
    ) -> None:
        ids = [c["id"] for c in changes]
        found = session.execute(
            select(Delivery.id, Delivery.attempts).where(self.one_of(Delivery.id, ids))
        ).all()
        attempts = {row.id: row.attempts for row in found}
        rows = []
        for ch in changes:
            row = {k: v for k, v in ch.items() if k != "uncount"}
            row.update(backend=backend, updated_at=now, attempts=attempts[ch["id"]] - ch["uncount"])
            rows.append(row)
        session.execute(update(Delivery), rows)

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
        rows = [
            {
                "subscriber_id": i,
                "message_key": message_key,
                "kind": DeliveryKind.BROADCAST,
                "broadcast_id": broadcast_id,
                "status": status,
                "error": error,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for i in subscriber_ids
        ]
        stmt = self.insert_ignore(Delivery, ["subscriber_id", "message_key"])
        return list(session.scalars(stmt.returning(Delivery.id), rows))

    def insert_events(
        self, session: Session, rows: Sequence[Mapping[str, Any]], received_at: datetime
    ) -> set[str]:
        table = cast(Table, TrackingEvent.__table__)
        stmt = (
            sqlite.insert(table)
            .on_conflict_do_nothing(index_elements=["provider_event_id"])
            .returning(table.c.provider_event_id)
        )
        params = [{**r, "received_at": received_at} for r in rows]
        return set(session.connection().execute(stmt, params).scalars())

    def add_counts(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
        stmt = sqlite.insert(MessageStats)
        table = MessageStats.__table__
        stmt = stmt.on_conflict_do_update(
            index_elements=["message_key"],
            set_={c: table.c[c] + stmt.excluded[c] for c in MESSAGE_COUNTERS},
        )
        session.execute(stmt.values(list(rows)))

    def record_firsts(
        self, session: Session, by_column: Mapping[str, Mapping[int, EngagementFirst]]
    ) -> list[tuple[str, str]]:
        changed: list[tuple[str, str]] = []
        for column in sorted(by_column):
            items = [by_column[column][d] for d in sorted(by_column[column])]
            changed += [(column, key) for key in _set_where_null(session, column, items)]
        return changed

    def suppress_hashes(
        self, session: Session, rows: Sequence[Mapping[str, Any]], now: datetime
    ) -> int:
        stmt = (
            sqlite.insert(Suppression)
            .values([{**row, "created_at": now} for row in rows])
            .on_conflict_do_nothing(index_elements=["email_hash"])
            .returning(Suppression.id)
        )
        return len(list(session.scalars(stmt)))

    def count_per_day(
        self, session: Session, column: Any, since: datetime, zone: ZoneInfo
    ) -> dict[date, int]:
        # SQLite has no time zone database: the window's timestamps are bucketed here (the demo's
        # database, a few thousand rows at most).
        out: dict[date, int] = defaultdict(int)
        for moment in session.scalars(select(column).where(column >= since)):
            out[moment.astimezone(zone).date()] += 1
        return out


def _set_where_null(session: Session, column: str, items: list[EngagementFirst]) -> list[str]:
    """Set ``column`` where still NULL; the message keys of the rows set now."""
    table = DeliveryEngagement.__table__
    keys: list[str] = []
    for start in range(0, len(items), _CHUNK):
        rows = [
            {
                "delivery_id": f.delivery_id,
                "message_key": f.message_key,
                "subscriber_id": f.subscriber_id,
                column: f.at,
            }
            for f in items[start : start + _CHUNK]
        ]
        insert = sqlite.insert(DeliveryEngagement).values(rows)
        upsert = insert.on_conflict_do_update(
            index_elements=["delivery_id"],
            set_={column: insert.excluded[column]},
            where=table.c[column].is_(None),
        ).returning(table.c.message_key)
        keys.extend(session.scalars(upsert))
    return keys
