"""Engine and session factory.

Sessions are opened at the edge (command, task, request) and passed in. The SQL that differs
between PostgreSQL and SQLite is not here but in :mod:`drip.store`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; on SQLite the folder is created, WAL and foreign keys on."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" below issue the BEGIN, not the driver.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin_immediate(conn: Any) -> None:
            # SQLite has no row locks: taking the write lock at BEGIN makes every transaction a
            # single writer, so two ticks can't both claim the same due enrollments.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One shared engine (and pool) per URL per process."""
    return make_engine(url)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with session_factory(engine)() as session, session.begin():
        yield session


# PostgreSQL array literals, for ``CAST(:param AS bigint[])`` and the like (the statements that
# use them are drip.store.postgres's). Only for values whose text form needs no quoting
# (integers, ISO timestamps without spaces); strings go through text_array, which quotes every
# element.


def int_array(values: Iterable[int]) -> str:
    """``{1,2,3}``: the literal of an integer array (``None`` is not allowed)."""
    return "{" + ",".join(map(str, map(int, values))) + "}"


def timestamp_array(values: Iterable[datetime | None]) -> str:
    """``{2026-03-08T12:00:00+00:00,NULL}``: aware datetimes in ISO form, ``None`` as NULL.

    A naive datetime raises ValueError, as the models do: the server would read it in its own
    time zone.
    """
    return "{" + ",".join("NULL" if v is None else _aware_iso(v) for v in values) + "}"


def _aware_iso(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: drip stores aware datetimes only")
    return value.isoformat()


def text_array(values: Iterable[str | None]) -> str:
    """A text array literal, every element double-quoted (backslash and quote escaped)."""
    return "{" + ",".join("NULL" if v is None else _quoted(v) for v in values) + "}"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
