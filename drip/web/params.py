"""What every route's parameters must be before they reach the database.

- Row ids are PostgreSQL ``bigint``: an id outside ``1..2**63-1`` would make PostgreSQL raise
  ``NumericValueOutOfRange`` (a 500) instead of finding nothing. :data:`RowId` declares the range,
  so FastAPI refuses it with a 422 naming the parameter, and the OpenAPI schema says so.
- PostgreSQL text cannot hold NUL. :func:`refuse_nul_params`, a dependency of every route, refuses
  a query or path parameter holding one with a 422 naming it, whatever the route does with it.
"""

from __future__ import annotations

from typing import Annotated

from annotated_types import Interval
from fastapi import Request

from drip.subscribers.validation import storable_text

MAX_ID = 2**63 - 1  # PostgreSQL bigint, the type of every id column

# A row id (path, query or body): ``subscriber_id: RowId`` or ``before: RowId | None = None``.
RowId = Annotated[int, Interval(ge=1, le=MAX_ID)]
# A keyset cursor, where 0 means "from the start".
Cursor = Annotated[int, Interval(ge=0, le=MAX_ID)]


async def refuse_nul_params(request: Request) -> None:
    """Raise :class:`~drip.errors.InvalidInput` naming the first query or path parameter that
    holds a NUL character (answered 422 by the app's handler, as JSON under ``/api/``).

    A coroutine, so that this check on every request runs in the event loop instead of costing
    a hop to the thread pool."""
    for name, value in request.query_params.multi_items():
        storable_text(value, name)
    for name, value in request.path_params.items():
        if isinstance(value, str):
            storable_text(value, name)
