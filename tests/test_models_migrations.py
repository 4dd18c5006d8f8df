"""The data model and its Alembic migration, on SQLite and PostgreSQL (the ``engine`` fixture).

The migrated schema must be exactly what the models declare: Alembic's autogenerate comparison
finds nothing to add, drop or alter (types included). No noise filter is needed on either
database: ``UTCDateTime`` compares as its ``DateTime(timezone=True)`` impl and the SQLite
``Integer`` variant of the ids is what the migration creates.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from drip.cli.main import main
from drip.migrate import alembic_config
from drip.models import Base, Delivery, Enrollment, Subscriber
from drip.settings import get_settings
from drip.suppress import normalize_email

HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _subscriber(session: Session, email: str | None, **extra: object) -> Subscriber:
    sub = Subscriber(email=email, first_name="Ana", **extra)
    session.add(sub)
    session.flush()
    return sub


def _delivery(subscriber_id: int, key: str = "glute-accelerator/1") -> Delivery:
    return Delivery(subscriber_id=subscriber_id, message_key=key, kind="lesson")


# --------------------------------------------------------------------------- schema


def _on_this_database(dialect: str) -> Callable[..., bool]:
    """Alembic's ``include_object``: skip what the models declare for other databases only
    (``info={"dialects": (...)}`` with ``ddl_if``, e.g. PostgreSQL's trigram indexes)."""

    def include(obj: object, name: str | None, type_: str, reflected: bool, other: object) -> bool:
        dialects = getattr(obj, "info", {}).get("dialects")
        return dialects is None or dialect in dialects

    return include


def test_migrated_schema_equals_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        opts = {
            "compare_type": True,
            "compare_server_default": True,
            "include_object": _on_this_database(engine.dialect.name),
        }
        context = MigrationContext.configure(conn, opts=opts)
        differences = compare_metadata(context, Base.metadata)

    assert differences == []


def test_migrations_are_at_head_and_create_every_model_table(engine: Engine) -> None:
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    tables = set(inspect(engine).get_table_names())

    assert HEAD is not None
    assert current == HEAD
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


# --------------------------------------------------------------------------- constraints


def test_a_second_delivery_of_the_same_message_key_is_rejected(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        sub = _subscriber(session, "ana@example.com")
        session.add(_delivery(sub.id))
        sub_id = sub.id

    with Session(engine) as session, pytest.raises(IntegrityError), session.begin():
        session.add(_delivery(sub_id))

    with Session(engine) as session:
        count = session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.subscriber_id == sub_id)
        )
    assert count == 1


def test_the_same_message_key_for_another_subscriber_is_fine(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        ana = _subscriber(session, "ana@example.com")
        ben = _subscriber(session, "ben@example.com")
        session.add_all([_delivery(ana.id), _delivery(ben.id), _delivery(ana.id, "broadcast/1")])

    with Session(engine) as session:
        keys = session.execute(select(Delivery.subscriber_id, Delivery.message_key)).all()
    assert len(keys) == 3


def test_normalized_email_is_unique(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        _subscriber(session, normalize_email("  Ana@Example.COM "))

    with Session(engine) as session, pytest.raises(IntegrityError), session.begin():
        _subscriber(session, normalize_email("ana@example.com"))

    with Session(engine) as session:
        emails = session.scalars(select(Subscriber.email)).all()
    assert emails == ["ana@example.com"]


def test_erased_subscribers_without_email_do_not_collide(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        _subscriber(session, None, status="erased")
        _subscriber(session, None, status="erased")

    with Session(engine) as session:
        assert len(session.scalars(select(Subscriber.id)).all()) == 2


def test_one_enrollment_per_subscriber_and_sequence(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        sub = _subscriber(session, "ana@example.com")
        session.add(Enrollment(subscriber_id=sub.id, sequence="glute-accelerator"))
        sub_id = sub.id

    with Session(engine) as session, pytest.raises(IntegrityError), session.begin():
        session.add(Enrollment(subscriber_id=sub_id, sequence="glute-accelerator"))


def test_a_delivery_needs_an_existing_subscriber(engine: Engine) -> None:
    with Session(engine) as session, pytest.raises(IntegrityError), session.begin():
        session.add(_delivery(987654))


# --------------------------------------------------------------------------- UTC datetimes


def test_aware_datetimes_come_back_aware_and_in_utc(engine: Engine) -> None:
    # 07:00 in New York on the first day of DST, and a fixed +05:30 offset.
    new_york = datetime(2026, 3, 8, 7, 0, tzinfo=ZoneInfo("America/New_York"))
    kolkata = datetime(
        2026, 3, 8, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))
    )
    with Session(engine) as session, session.begin():
        sub = _subscriber(session, "ana@example.com", created_at=kolkata)
        session.add(Enrollment(subscriber_id=sub.id, sequence="s", next_send_at=new_york))

    with Session(engine) as session:
        created = session.scalars(select(Subscriber.created_at)).one()
        due = session.scalars(select(Enrollment.next_send_at)).one()

    assert created.tzinfo is not None and created.utcoffset() == timedelta(0)
    assert due.tzinfo is not None and due.utcoffset() == timedelta(0)
    assert created == kolkata
    assert created == datetime(2026, 3, 8, 7, 0, 15, 123456, tzinfo=UTC)
    assert due == datetime(2026, 3, 8, 11, 0, tzinfo=UTC)  # EDT is UTC-4


def test_stored_value_is_utc_on_sqlite_too(engine: Engine) -> None:
    moment = datetime(2026, 11, 1, 1, 30, tzinfo=ZoneInfo("America/New_York"))  # EDT, -04:00
    with Session(engine) as session, session.begin():
        _subscriber(session, "ana@example.com", created_at=moment)

    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            raw = conn.scalar(text("select created_at from subscribers"))
            assert str(raw).startswith("2026-11-01 05:30:00")
        else:
            raw = conn.scalar(text("select created_at at time zone 'UTC' from subscribers"))
            assert raw == datetime(2026, 11, 1, 5, 30)


def test_comparisons_with_aware_datetimes_work_in_queries(engine: Engine) -> None:
    base = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    with Session(engine) as session, session.begin():
        sub = _subscriber(session, "ana@example.com")
        for i, offset in enumerate((-2, -1, 1, 2)):
            session.add(
                Enrollment(
                    subscriber_id=sub.id,
                    sequence=f"s{i}",
                    next_send_at=base + timedelta(hours=offset),
                )
            )
    # The same instant, written in another zone, must compare as that instant.
    now = base.astimezone(ZoneInfo("Asia/Tokyo"))

    with Session(engine) as session:
        due = session.scalars(
            select(Enrollment.sequence)
            .where(Enrollment.next_send_at <= now)
            .order_by(Enrollment.sequence)
        ).all()

    assert due == ["s0", "s1"]


def test_a_naive_datetime_is_refused(engine: Engine) -> None:
    with (
        Session(engine) as session,
        pytest.raises(StatementError, match="naive datetime"),
        session.begin(),
    ):
        _subscriber(session, "ana@example.com", created_at=datetime(2026, 3, 2, 12, 0))


# --------------------------------------------------------------------------- drip db upgrade


def _upgrade(url: str) -> tuple[int, str]:
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["db", "upgrade"], env={"DRIP_DATABASE_URL": url})
    get_settings.cache_clear()
    return result.exit_code, result.output


def _sqlite_tables(path: Path) -> tuple[set[str], list[str]]:
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        versions = [r[0] for r in conn.execute("select version_num from alembic_version")]
    finally:
        conn.close()
    return tables, versions


@pytest.mark.usefixtures("clean_env")
def test_db_upgrade_cli_creates_the_tables_in_a_fresh_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "fresh.sqlite3"

    code, output = _upgrade(f"sqlite:///{path}")

    assert code == 0, output
    assert "is up to date" in output
    tables, versions = _sqlite_tables(path)
    assert set(Base.metadata.tables) <= tables
    assert versions == [HEAD]


@pytest.mark.usefixtures("clean_env")
def test_db_upgrade_cli_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "fresh.sqlite3"
    url = f"sqlite:///{path}"
    assert _upgrade(url)[0] == 0
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("insert into tags (name) values ('kept')")
    conn.close()

    code, output = _upgrade(url)

    assert code == 0, output
    tables, versions = _sqlite_tables(path)
    assert set(Base.metadata.tables) <= tables
    assert versions == [HEAD]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("select name from tags").fetchall() == [("kept",)]
    finally:
        conn.close()
