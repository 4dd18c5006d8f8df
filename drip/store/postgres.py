"""The PostgreSQL store: each batch in one statement of fixed text.

A thousand-row VALUES list costs more to compile and parse than the work itself (bench/
dispatch.py), so batches travel as one parameter: integer, string and timestamp arrays as text
literals (:func:`drip.db.int_array` and friends: psycopg's list adapter runs a regex per
element), rows of many columns as one JSON document unpacked by ``json_to_recordset``. Rows are
written in a fixed order (ORDER BY the conflict key) so that concurrent batches queue on their
row locks instead of deadlocking.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Insert,
    Integer,
    any_,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from drip.db import int_array, text_array, timestamp_array
from drip.models import Base
from drip.store.base import (
    ENGAGEMENT_FIRSTS,
    MESSAGE_COUNTERS,
    Advance,
    EngagementFirst,
    LessonDelivery,
    NewEnrollment,
)

# The tick. A row that exists already is queued again only if it was skipped or failed.
_INSERT_LESSON_DELIVERIES = text(
    """
    INSERT INTO deliveries (subscriber_id, message_key, kind, sequence, position, status,
                            attempts, created_at, updated_at)
    SELECT v.subscriber_id,
           v.sequence || '/' || v.position || CASE WHEN v.entry > 1 THEN '#' || v.entry ELSE '' END,
           'lesson', v.sequence, v.position, 'queued', 0, :now, :now
    FROM unnest(
        CAST(:subscriber_id AS bigint[]), CAST(:sequence AS varchar[]),
        CAST(:position AS integer[]), CAST(:entry AS integer[])
    ) AS v(subscriber_id, sequence, position, entry)
    ON CONFLICT (subscriber_id, message_key) DO UPDATE
    SET status = 'queued', error = NULL, backend = NULL, attempts = 0, updated_at = :now,
        queued_at = :now
    WHERE deliveries.status IN ('skipped', 'failed')
    RETURNING id
    """
)

_START_ENROLLMENTS = text(
    """
    INSERT INTO enrollments (subscriber_id, sequence, trigger, next_send_at, enrolled_at,
                             position, entry, status)
    SELECT v.subscriber_id, v.sequence, v.trigger, v.next_send_at, v.enrolled_at, 0, 1, 'active'
    FROM unnest(
        CAST(:subscriber_id AS bigint[]), CAST(:sequence AS varchar[]),
        CAST(:trigger AS varchar[]), CAST(:next_send_at AS timestamptz[]),
        CAST(:enrolled_at AS timestamptz[])
    ) AS v(subscriber_id, sequence, trigger, next_send_at, enrolled_at)
    ON CONFLICT (subscriber_id, sequence) DO NOTHING
    """
)

# next_send_at NULL means the claim completed the enrollment.
_ADVANCE_ENROLLMENTS = text(
    """
    UPDATE enrollments AS e
    SET position = v.position, next_send_at = v.next_send_at, last_sent_at = :now,
        status = CASE WHEN v.next_send_at IS NULL THEN 'completed' ELSE 'active' END,
        completed_at = CASE WHEN v.next_send_at IS NULL THEN CAST(:now AS timestamptz) END
    FROM unnest(
        CAST(:id AS bigint[]), CAST(:position AS integer[]), CAST(:next_send_at AS timestamptz[])
    ) AS v(id, position, next_send_at)
    WHERE e.id = v.id
    """
)

# The outcomes of a SendGrid batch are few (one provider message id per request, one error per
# failed request): one UPDATE per distinct outcome, its ids as one array literal. Backends that
# give each email its own id (SMTP, the outbox) take one UPDATE over arrays instead.
_RECORD_ONE_OUTCOME = text(
    """
    UPDATE deliveries
    SET status = :status, provider_message_id = :provider_message_id, error = :error,
        sent_at = :sent_at, backend = :backend, updated_at = :now,
        attempts = attempts - :uncount
    WHERE id = ANY(CAST(:ids AS bigint[]))
    """
)
_RECORD_MANY_OUTCOMES = text(
    """
    UPDATE deliveries AS d
    SET status = v.status, provider_message_id = v.provider_message_id, error = v.error,
        sent_at = CASE WHEN v.status = 'sent' THEN CAST(:now AS timestamptz) END,
        backend = :backend, updated_at = :now, attempts = d.attempts - v.uncount
    FROM unnest(
        CAST(:ids AS bigint[]), CAST(:status AS varchar[]),
        CAST(:provider_message_id AS varchar[]), CAST(:error AS text[]),
        CAST(:uncount AS integer[])
    ) AS v(id, status, provider_message_id, error, uncount)
    WHERE d.id = v.id
    """
)
_FEW_OUTCOMES = 4

# As for lessons: one statement over an array, cheaper than a VALUES list.
_INSERT_BROADCAST_DELIVERIES = text(
    """
    INSERT INTO deliveries (subscriber_id, message_key, kind, broadcast_id, status, error,
                            attempts, created_at, updated_at)
    SELECT v.subscriber_id, :key, 'broadcast', :broadcast_id, :status, :error, 0, :now, :now
    FROM unnest(CAST(:ids AS bigint[])) AS v(subscriber_id)
    ON CONFLICT (subscriber_id, message_key) DO NOTHING
    RETURNING id
    """
)

# Tracking events: one statement of fixed text whatever the batch size (nothing to compile or
# parse again per batch), and one C-speed json.dumps instead of quoting thirteen arrays.
_EVENT_COLUMNS = (
    "type",
    "occurred_at",
    "delivery_id",
    "subscriber_id",
    "provider",
    "provider_event_id",
    "machine",
    "url",
    "reason",
    "ip",
    "user_agent",
    "raw",
)
_EVENT_TYPES = (
    "varchar", "timestamptz", "bigint", "bigint", "varchar", "varchar", "boolean", "text",
    "text", "varchar", "varchar", "json",
)  # fmt: skip
_INSERT_EVENTS = text(
    f"INSERT INTO tracking_events ({', '.join(_EVENT_COLUMNS)}, received_at) "
    f"SELECT {', '.join(_EVENT_COLUMNS)}, CAST(:received_at AS timestamptz) "
    "FROM json_to_recordset(CAST(:rows AS json)) AS x("
    + ", ".join(f"{c} {t}" for c, t in zip(_EVENT_COLUMNS, _EVENT_TYPES, strict=True))
    + ") ORDER BY provider_event_id"  # one lock order for every batch: no deadlocks
    " ON CONFLICT (provider_event_id) DO NOTHING RETURNING provider_event_id"
)

_COUNTERS = ", ".join(MESSAGE_COUNTERS)
_ADD_COUNTS = text(
    f"INSERT INTO message_stats (message_key, {_COUNTERS}) "
    f"SELECT message_key, {_COUNTERS} FROM json_to_recordset(CAST(:rows AS json)) "
    f"AS v(message_key varchar, {', '.join(f'{c} bigint' for c in MESSAGE_COUNTERS)}) "
    "ORDER BY message_key ON CONFLICT (message_key) DO UPDATE SET "
    + ", ".join(f"{c} = message_stats.{c} + excluded.{c}" for c in MESSAGE_COUNTERS)
)

# Firsts, two statements whatever the batch. Step 1 inserts the deliveries not seen before,
# with all their firsts, in delivery order; the rows it returns are new, so each of their firsts
# counts. Step 2 locks the other rows in delivery order, reads their current firsts and fills
# the NULL ones, returning which changed. Two batches never hold rows the other wants out of
# order, so they queue instead of deadlocking.
_FIRSTS = ", ".join(f"{c} timestamptz" for c in ENGAGEMENT_FIRSTS)
_INSERT_NEW_FIRSTS = text(
    "INSERT INTO delivery_engagement (delivery_id, message_key, subscriber_id, "
    + ", ".join(ENGAGEMENT_FIRSTS)
    + ") SELECT d, k, s, "
    + ", ".join(ENGAGEMENT_FIRSTS)
    + f" FROM json_to_recordset(CAST(:rows AS json)) AS v(d bigint, k varchar, s bigint, {_FIRSTS})"
    " ORDER BY d ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id"
)
_FILL_FIRSTS = text(
    f"WITH v AS (SELECT * FROM json_to_recordset(CAST(:rows AS json)) AS v(d bigint, {_FIRSTS})), "
    "old AS MATERIALIZED (SELECT delivery_id, "
    + ", ".join(ENGAGEMENT_FIRSTS)
    + " FROM delivery_engagement WHERE delivery_id = ANY(CAST(:d AS bigint[])) "
    "ORDER BY delivery_id FOR UPDATE) "
    "UPDATE delivery_engagement AS e SET "
    + ", ".join(f"{c} = COALESCE(old.{c}, v.{c})" for c in ENGAGEMENT_FIRSTS)
    + " FROM old JOIN v ON v.d = old.delivery_id WHERE e.delivery_id = old.delivery_id AND ("
    + " OR ".join(f"(old.{c} IS NULL AND v.{c} IS NOT NULL)" for c in ENGAGEMENT_FIRSTS)
    + ") RETURNING e.message_key, "
    + ", ".join(f"old.{c} IS NULL AND v.{c} IS NOT NULL" for c in ENGAGEMENT_FIRSTS)
)

_SUPPRESS = text(
    "INSERT INTO suppressions (email_hash, reason, detail, created_at) "
    "SELECT email_hash, reason, detail, CAST(:now AS timestamptz) "
    "FROM json_to_recordset(CAST(:rows AS json)) AS v(email_hash varchar, reason varchar, "
    "detail text) ORDER BY email_hash ON CONFLICT (email_hash) DO NOTHING RETURNING id"
)


class PostgresStore:
    """:class:`drip.store.base.Store` for PostgreSQL."""

    dialect = "postgresql"

    def one_of(self, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
        """``column = ANY(:array)``: one bound parameter, compiled once and cached.

        An IN list of a thousand ids renders a thousand placeholders that the driver must parse
        on every call. Integer arrays travel as one text literal (:func:`drip.db.int_array`):
        the driver's list adapter costs about 2 µs per element in Python, ``",".join(...)`` a
        twentieth.
        """
        element_type = column.type
        if isinstance(element_type, Integer | BigInteger):
            # Untyped, so the server reads the literal as the array itself: a constant the
            # planner can count and hash. Sent as varchar and cast in SQL, it was an expression
            # evaluated per row, and a plan from stale statistics that filtered 30,000 rows
            # through it compared each row with every element (a second per 1,000 ids).
            literal = bindparam(None, int_array(values), type_=NullType())
            return cast(ColumnElement[bool], column == any_(sql_cast(literal, ARRAY(BigInteger))))
        return cast(
            ColumnElement[bool],
            column == any_(bindparam(None, list(values), type_=ARRAY(element_type))),
        )

    def insert_ignore(self, table: type[Base], conflict_columns: Sequence[str]) -> Insert:
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=conflict_columns)

    def start_enrollments(self, session: Session, rows: Sequence[NewEnrollment]) -> None:
        subscriber_ids, slugs, triggers, dues, enrolled = zip(*rows, strict=True)
        params = {
            "subscriber_id": int_array(subscriber_ids),
            "sequence": text_array(slugs),
            "trigger": text_array(triggers),
            "next_send_at": timestamp_array(dues),
            "enrolled_at": timestamp_array(enrolled),
        }
        session.execute(_START_ENROLLMENTS, params)

    def insert_lesson_deliveries(
        self, session: Session, deliveries: Sequence[LessonDelivery], now: datetime
    ) -> list[int]:
        subscriber_ids, slugs, positions, entries = zip(*deliveries, strict=True)
        params = {
            "subscriber_id": int_array(subscriber_ids),
            "sequence": text_array(slugs),
            "position": int_array(positions),
            "entry": int_array(entries),
            "now": now,
        }
        return list(session.scalars(_INSERT_LESSON_DELIVERIES, params))

    def advance_enrollments(
        self, session: Session, advanced: Sequence[Advance], now: datetime
    ) -> None:
        ids, positions, dues = zip(*advanced, strict=True)
        params = {
            "id": int_array(ids),
            "position": int_array(positions),
            "next_send_at": timestamp_array(dues),
            "now": now,
        }
        session.execute(_ADVANCE_ENROLLMENTS, params)

    def record_outcomes(
        self, session: Session, changes: Sequence[Mapping[str, Any]], backend: str, now: datetime
    ) -> None:
        outcomes: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for ch in changes:
            outcome = (
                ch["status"],
                ch["provider_message_id"],
                ch["error"],
                ch["sent_at"],
                ch["uncount"],
            )
            outcomes[outcome].append(ch["id"])
            if len(outcomes) > _FEW_OUTCOMES:
                break
        if len(outcomes) <= _FEW_OUTCOMES:
            for (status, message_id, error, sent_at, uncount), ids in outcomes.items():
                params = {
                    "ids": int_array(ids),
                    "status": status,
                    "provider_message_id": message_id,
                    "error": error,
                    "sent_at": sent_at,
                    "backend": backend,
                    "now": now,
                    "uncount": uncount,
                }
                session.execute(_RECORD_ONE_OUTCOME, params)
            return
        session.execute(
            _RECORD_MANY_OUTCOMES,
            {
                "ids": int_array(ch["id"] for ch in changes),
                "status": text_array(ch["status"] for ch in changes),
                "provider_message_id": text_array(ch["provider_message_id"] for ch in changes),
                "error": text_array(ch["error"] for ch in changes),
                "uncount": int_array(ch["uncount"] for ch in changes),
                "backend": backend,
                "now": now,
            },
        )

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
        params = {
            "ids": list(subscriber_ids),
            "key": message_key,
            "broadcast_id": broadcast_id,
            "status": status,
            "error": error,
            "now": now,
        }
        return list(session.scalars(_INSERT_BROADCAST_DELIVERIES, params))

    def insert_events(
        self, session: Session, rows: Sequence[Mapping[str, Any]], received_at: datetime
    ) -> set[str]:
        document = [{**row, "occurred_at": row["occurred_at"].isoformat()} for row in rows]
        params = {"rows": json.dumps(document, default=str), "received_at": received_at}
        return set(session.scalars(_INSERT_EVENTS, params))

    def add_counts(self, session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
        session.execute(_ADD_COUNTS, {"rows": json.dumps(list(rows))})

    def record_firsts(
        self, session: Session, by_column: Mapping[str, Mapping[int, EngagementFirst]]
    ) -> list[tuple[str, str]]:
        rows: dict[int, EngagementFirst] = {}
        for firsts in by_column.values():
            rows.update(firsts)
        ids = sorted(rows)
        entries: dict[int, dict[str, object]] = {}
        for d in ids:
            entry: dict[str, object] = {
                "d": d,
                "k": rows[d].message_key,
                "s": rows[d].subscriber_id,
            }
            for column in ENGAGEMENT_FIRSTS:
                first = by_column.get(column, {}).get(d)
                entry[column] = first.at.isoformat() if first is not None else None
            entries[d] = entry
        document = json.dumps(list(entries.values()))
        inserted = set(session.scalars(_INSERT_NEW_FIRSTS, {"rows": document}))
        changed = [
            (c, rows[d].message_key)
            for d in sorted(inserted)
            for c in ENGAGEMENT_FIRSTS
            if d in by_column.get(c, {})
        ]
        existing = [d for d in ids if d not in inserted]
        if existing:
            fill = {"rows": json.dumps([entries[d] for d in existing]), "d": existing}
            for key, *flags in session.execute(_FILL_FIRSTS, fill).all():
                changed += [
                    (c, key) for c, flag in zip(ENGAGEMENT_FIRSTS, flags, strict=True) if flag
                ]
        return changed

    def suppress_hashes(
        self, session: Session, rows: Sequence[Mapping[str, Any]], now: datetime
    ) -> int:
        params = {"rows": json.dumps(list(rows)), "now": now}
        return len(list(session.scalars(_SUPPRESS, params)))

    def count_per_day(
        self, session: Session, column: Any, since: datetime, zone: ZoneInfo
    ) -> dict[date, int]:
        out: dict[date, int] = defaultdict(int)
        day = func.date(func.timezone(zone.key, column))
        rows = session.execute(select(day, func.count()).where(column >= since).group_by(day))
        for value, count in rows.tuples():
            out[value] += int(count)
        return out
