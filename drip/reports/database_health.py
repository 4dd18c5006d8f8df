"""Whether the database answers: what ``GET /healthz`` reports to a load balancer."""

from __future__ import annotations

from sqlalchemy import Engine, text


def database_problem(engine: Engine) -> str | None:
    """None when the database answers a trivial query on a fresh connection; otherwise the
    class name of the error (never its message: a connection error may quote the URL)."""
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as err:  # any failure means "unreachable" to the caller
        return type(err).__name__
    return None
