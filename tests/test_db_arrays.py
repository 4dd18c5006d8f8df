"""Array literals for PostgreSQL parameters: what goes in comes back out, exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, text

from drip.db import int_array, text_array, timestamp_array


def test_an_integer_array_round_trips(pg_engine: Engine) -> None:
    values = [1, 0, -5, 9_223_372_036_854_775_807]
    with pg_engine.connect() as conn:
        back = conn.scalar(text("SELECT CAST(:v AS bigint[])"), {"v": int_array(values)})
    assert back == values


def test_anything_but_integers_is_refused_before_it_reaches_sql() -> None:
    with pytest.raises(ValueError):
        int_array(["1}, {2"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "value", ["plain", 'with "quotes"', "back\\slash", "comma, brace } {", "", "NULL", "é ü"]
)
def test_a_text_array_round_trips_any_string(pg_engine: Engine, value: str) -> None:
    values = [value, None, "x"]
    with pg_engine.connect() as conn:
        back = conn.scalar(text("SELECT CAST(:v AS text[])"), {"v": text_array(values)})
    assert back == values


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        timestamp_array([datetime(2026, 3, 8, 7, 0)])


def test_a_timestamp_array_round_trips_aware_datetimes(pg_engine: Engine) -> None:
    values = [
        datetime(2026, 3, 8, 7, 0, tzinfo=UTC),
        None,
        datetime(2026, 11, 1, 1, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-5))),
    ]
    with pg_engine.connect() as conn:
        back = conn.scalar(text("SELECT CAST(:v AS timestamptz[])"), {"v": timestamp_array(values)})
    assert back == values


def test_an_id_list_reaches_the_planner_as_a_constant_array(pg_engine: Engine) -> None:
    """``one_of`` on an integer column: the server reads the literal as ``bigint[]`` itself.

    Sent as varchar and cast in SQL, the array was an expression the planner could neither
    count nor hash; with stale statistics that made the claim compare every in-flight row with
    every id of the batch (a second per 1,000 ids at 30,000 rows).
    """
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from drip.models import Delivery
    from drip.store import one_of

    with Session(pg_engine) as session:
        stmt = select(func.count()).where(one_of(Delivery.id, [3, 1, 2], session))
        compiled = stmt.compile(dialect=pg_engine.dialect)
        plan = "\n".join(
            row[0]
            for row in session.connection().exec_driver_sql(
                "EXPLAIN " + str(compiled), compiled.params
            )
        )
    assert "'{3,1,2}'::bigint[]" in plan, plan
    assert "cstring" not in plan and "character varying" not in plan, plan
