"""The store seam (drip.store): SQL that differs between PostgreSQL and SQLite lives in one place.

A domain module that branches on the dialect, or writes SQL only one of the databases speaks,
fails here: the statement belongs in drip/store/postgres.py and drip/store/sqlite.py, behind an
operation of drip.store.base.Store.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from drip import engagement
from drip.models import Delivery
from drip.store import ENGAGEMENT_FIRSTS, MESSAGE_COUNTERS, one_of, store_for

REPO = Path(__file__).resolve().parent.parent

# Where the dialect may be named: the store itself, the engine factory (SQLite's pragmas and
# BEGIN IMMEDIATE), the schema (its type decorators and PostgreSQL-only indexes) and migrations.
ALLOWED = ("drip/store/", "drip/db.py", "drip/models.py", "drip/migrations/")

DIALECT_BRANCHES = {
    "reads the database's dialect": r"\.dialect\b",
    "asks whether it runs on PostgreSQL": r"\bis_postgres\b",
    "builds a dialect's own statement": (
        r"\bsqlalchemy\.dialects\b|\bdialect_insert\b|\b(?:postgresql|sqlite)\.\w"
    ),
    "compares with a dialect's name": (
        r"[\"'](?:postgresql|sqlite)[\"']\s*(?:==|!=)|(?:==|!=)\s*[\"'](?:postgresql|sqlite)[\"']"
    ),
    "writes SQL only PostgreSQL speaks": (
        r"json_to_recordset|\bunnest\s*\(|=\s*ANY\s*\(|"
        r"\b(?:bigint|integer|varchar|text|timestamptz)\[\]|\bfunc\.timezone\b"
    ),
}


# A URL's backend may decide how to connect (a connect timeout, whether a SQLite file exists),
# as drip.db's engine factory does: that is no SQL, and a session's code has no URL to ask.
CONNECTING = r"\bget_backend_name\(\)"


def dialect_branches(source: str) -> list[str]:
    """What in ``source`` speaks to one dialect: one ``line N: why`` per finding."""
    found = []
    for number, line in enumerate(source.splitlines(), start=1):
        for why, pattern in DIALECT_BRANCHES.items():
            if re.search(pattern, line) and not re.search(CONNECTING, line):
                found.append(f"line {number}: {why}: {line.strip()}")
    return found


def _modules() -> list[Path]:
    paths = [*(REPO / "drip").rglob("*.py"), *(REPO / "workers").rglob("*.py")]
    return sorted(p for p in paths if not p.relative_to(REPO).as_posix().startswith(ALLOWED))


def test_no_module_outside_the_store_branches_on_the_dialect() -> None:
    offenders = {
        path.relative_to(REPO).as_posix(): found
        for path in _modules()
        if (found := dialect_branches(path.read_text(encoding="utf-8")))
    }
    assert not offenders, (
        "dialect SQL outside drip.store (move it behind an operation of drip.store.base.Store):\n"
        + "\n".join(f"{path} {line}" for path, lines in offenders.items() for line in lines)
    )


@pytest.mark.parametrize(
    "line",
    [
        'if session.get_bind().dialect.name == "postgresql":',
        "if is_postgres(session):",
        "from sqlalchemy.dialects import postgresql, sqlite",
        "insert = postgresql.insert if pg else sqlite.insert",
        "stmt = dialect_insert(session, Enrollment)",
        'if name != "sqlite":',
        "FROM json_to_recordset(CAST(:rows AS json))",
        "FROM unnest(CAST(:ids AS bigint[])) AS v(id)",
        "WHERE id = ANY(CAST(:ids AS bigint[]))",
        "day = func.timezone(zone.key, column)",
    ],
)
def test_the_check_recognises_a_dialect_branch(line: str) -> None:
    assert dialect_branches(line)


@pytest.mark.parametrize(
    "line",
    [
        "store_for(session).insert_ignore(Tag, ['name'])",
        "select(Delivery.id).where(one_of(Delivery.id, ids, session))",
        'raise ValueError("must be a sqlite:// or postgresql:// URL")',
        "INSERT ... ON CONFLICT (provider_event_id) DO NOTHING RETURNING",
        'if url.get_backend_name() == "postgresql":  # a connect timeout',
    ],
)
def test_the_check_leaves_portable_code_alone(line: str) -> None:
    assert not dialect_branches(line)


def test_each_database_has_its_store(engine: Engine) -> None:
    store = store_for(engine)
    assert store.dialect == engine.dialect.name
    with Session(engine) as session:
        assert store_for(session) is store
        found = session.query(Delivery.id).filter(one_of(Delivery.id, [1, 2], session)).all()
    assert found == []


def test_a_database_without_a_store_is_refused() -> None:
    other: Any = SimpleNamespace(dialect=SimpleNamespace(name="mysql"))
    with pytest.raises(LookupError, match="mysql"):
        store_for(other)


def test_the_rollup_names_are_the_columns_the_store_writes() -> None:
    """engagement's counters and firsts are the tables' columns: a counter missing from the rows
    would be added as NULL, and NULL plus a count is NULL."""
    assert set(engagement.COUNTERS) == set(MESSAGE_COUNTERS)
    assert set(engagement.METRICS) == set(ENGAGEMENT_FIRSTS)
