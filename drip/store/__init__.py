"""The store seam: the SQL that differs between PostgreSQL and SQLite, in one place.

Domain modules say what they want written in domain terms (:class:`Store`) and never look at
the database's dialect; :func:`store_for` is the one place that does, and picks one of two
stateless instances by the dialect's name. A module outside this package that branches on the
dialect fails ``tests/test_store_seam.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Engine
from sqlalchemy.orm import Session

from drip.store.base import ENGAGEMENT_FIRSTS, MESSAGE_COUNTERS, EngagementFirst, Store
from drip.store.postgres import PostgresStore
from drip.store.sqlite import SqliteStore

__all__ = [
    "ENGAGEMENT_FIRSTS",
    "MESSAGE_COUNTERS",
    "EngagementFirst",
    "Store",
    "one_of",
    "store_for",
]

_STORES: dict[str, Store] = {store.dialect: store for store in (PostgresStore(), SqliteStore())}


def store_for(bind: Session | Engine) -> Store:
    """The store of the database behind ``bind`` (a session or an engine).

    Raises LookupError for a database drip does not speak (the settings refuse such a URL first).
    """
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    try:
        return _STORES[engine.dialect.name]
    except KeyError:
        raise LookupError(f"no store for the {engine.dialect.name!r} database") from None


def one_of(column: Any, values: Sequence[Any], session: Session) -> ColumnElement[bool]:
    """``column`` is one of ``values``, as the session's database says it best
    (:meth:`Store.one_of`: one array parameter on PostgreSQL, an IN list on SQLite)."""
    return store_for(session).one_of(column, values)
