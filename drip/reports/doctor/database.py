"""The database answers, and its schema is at the migrations' head.

Messages show the URL with its password hidden. Each check opens one connection of its own
(no pool) and closes it: the doctor is one short process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from drip.migrate import alembic_config
from drip.reports.doctor.findings import Finding, fail, first_line, ok
from drip.reports.doctor.runner import Context

CONNECT_SECONDS = 5
UPGRADE = "run `drip db upgrade` (once per release, before web, worker and beat start)"


def check_database(context: Context) -> Finding:
    url = make_url(context.settings.database_url)
    shown = url.render_as_string(hide_password=True)
    missing = _missing_sqlite_file(url)
    if missing is not None:
        return fail(
            f"DRIP_DATABASE_URL: there is no SQLite file at {missing}",
            f"{UPGRADE} to create it, or point DRIP_DATABASE_URL at the production database",
        )
    try:
        with _connection(url) as conn:
            conn.execute(text("select 1"))
    except SQLAlchemyError as err:
        return fail(
            f"DRIP_DATABASE_URL: cannot connect to {shown}: {_driver_message(err)}",
            "check that the database server runs and accepts this host, and the URL's host, "
            "port, user, password and database name",
        )
    return ok(f"connected to {shown}")


def check_migrations(context: Context) -> Finding:
    url = make_url(context.settings.database_url)
    scripts = ScriptDirectory.from_config(alembic_config(context.settings.database_url))
    heads = set(scripts.get_heads())
    with _connection(url) as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    if current == heads:
        return ok(f"the schema is at the head revision {_names(heads)}")
    if not current:
        return fail(
            "DRIP_DATABASE_URL: the database has no drip schema (no Alembic revision)", UPGRADE
        )
    known = {script.revision for script in scripts.walk_revisions()}
    if current - known:
        return fail(
            f"the database is at revision {_names(current - known)}, which this release does "
            "not have: a newer release migrated it",
            "deploy the release that migrated the database (never downgrade it by hand)",
        )
    return fail(
        f"the database is at revision {_names(current)}; this release's head is {_names(heads)}",
        UPGRADE,
    )


@contextmanager
def _connection(url: URL) -> Iterator[Connection]:
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = CONNECT_SECONDS  # a host that drops packets: no hang
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _missing_sqlite_file(url: URL) -> Path | None:
    """The SQLite file ``url`` names when it does not exist (connecting would create an empty
    one, and the doctor changes nothing); None for other databases and in-memory ones."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    path = Path(url.database)
    return None if path.exists() else path


def _driver_message(err: SQLAlchemyError) -> str:
    """The driver's own words (the server's refusal), without SQLAlchemy's links and SQL."""
    cause = err.orig if isinstance(err, DBAPIError) and err.orig is not None else err
    return first_line(cause)


def _names(revisions: set[str]) -> str:
    return ", ".join(sorted(revisions)) or "none"
