"""Engine and session factory.

Sessions are opened at the edge (command, task, request) and passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Engine,
    Integer,
    any_,
    bindparam,
    create_engine,
    event,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import NullType


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


def is_postgres(engine_or_session: Engine | Session) -> bool:
    bind = (
        engine_or_session.get_bind()
        if isinstance(engine_or_session, Session)
        else engine_or_session
    )
    return bind.dialect.name == "postgresql"


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


def one_of(column: Any, values: Sequence[Any], session: Session) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``column = ANY(:array)``, a single bound parameter.

    An IN list of a thousand ids renders a thousand placeholders that the driver must parse on
    every call; one array parameter costs nothing to compile and is cached. Integer and string
    arrays travel as one text literal (:func:`int_array`, :func:`text_array`): the driver's list
    adapter costs about 2 µs per element in Python, ``",".join(map(str, ids))`` a twentieth.
    """
    if session.get_bind().dialect.name == "postgresql":
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
    return cast(ColumnElement[bool], column.in_(list(values)))


# PostgreSQL array literals, for ``CAST(:param AS bigint[])`` and the like. Only for values whose
# text form needs no quoting (integers, ISO timestamps without spaces); strings go through
# text_array, which quotes every element.


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
