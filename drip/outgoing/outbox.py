"""Emitting an event: one outbox row per endpoint that wants it, in the caller's transaction.

The contract of every function here:

- the rows are written with the caller's session and commit or roll back with what the event
  reports, so an event exists if and only if that was committed;
- one row per (event, endpoint that wants its type), all of an event's rows sharing one
  ``webhook-id`` (``message_id``), so a receiver listening at two URLs can tell it is one event;
- nothing is sent here: beat's task posts the rows (:mod:`drip.outgoing.delivery`), so a
  receiver that hangs or is down never slows the request or the send that emitted;
- when no endpoint wants the type, nothing is read, built or written (a dict lookup and a loop
  over the configured endpoints).

``endpoints`` is a sequence of :class:`Endpoint`, or None for those the runtime bound to the
session's factory (:func:`bind_endpoints`): emitters deep in the engine are handed a session,
not the runtime, and pass None.

The body posted is ``{"type", "timestamp", "data"}`` (Standard Webhooks); ``data`` holds the
subscriber's ``subscriber_id`` and ``email`` and the event's own fields.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session, sessionmaker

from drip.models import OutgoingWebhook, OutgoingWebhookStatus, Subscriber
from drip.outgoing_endpoints import EVENT_TYPES, Endpoint
from drip.store import one_of

SESSION_KEY = "drip.outgoing.endpoints"
Endpoints = Sequence[Endpoint]


def bind_endpoints(sessions: sessionmaker[Session], endpoints: Iterable[Endpoint]) -> None:
    """Give every session of ``sessions`` these endpoints (what ``endpoints=None`` means)."""
    info = dict(sessions.kw.get("info") or {})
    info[SESSION_KEY] = tuple(endpoints)
    sessions.configure(info=info)


def endpoints_of(session: Session) -> tuple[Endpoint, ...]:
    """The endpoints bound to ``session``'s factory; none for a session made elsewhere."""
    return cast(tuple[Endpoint, ...], session.info.get(SESSION_KEY, ()))


def emit(
    session: Session,
    endpoints: Endpoints | None,
    event_type: str,
    data: Mapping[str, Any],
    now: datetime,
) -> int:
    """Emit one event; returns the number of outbox rows written."""
    return emit_many(session, endpoints, event_type, (data,), now)


def emit_many(
    session: Session,
    endpoints: Endpoints | None,
    event_type: str,
    items: Iterable[Mapping[str, Any]],
    now: datetime,
) -> int:
    """The bulk form: one event of ``event_type`` per item of ``items`` (its ``data``), in one
    statement; ``items`` is not even iterated when no endpoint wants the type."""
    wanting = _wanting(session, endpoints, event_type)
    if not wanting:
        return 0
    rows = []
    for data in items:
        body = payload(event_type, data, now)
        message_id = f"msg_{uuid.uuid4().hex}"
        rows += [_row(message_id, event_type, endpoint.url, body, now) for endpoint in wanting]
    if rows:
        session.execute(insert(cast(Table, OutgoingWebhook.__table__)), rows)
    return len(rows)


def emit_for_subscribers(
    session: Session,
    endpoints: Endpoints | None,
    event_type: str,
    subscriber_ids: Iterable[int],
    now: datetime,
    fields: Mapping[str, Any] | None = None,
) -> int:
    """The bulk form for subscribers known by id: one event each, ``data`` = their id and email
    (read in one query, only when an endpoint wants the type) and ``fields``."""
    if not _wanting(session, endpoints, event_type):
        return 0
    ids = sorted(set(subscriber_ids))
    if not ids:
        return 0
    found = session.execute(
        select(Subscriber.id, Subscriber.email)
        .where(one_of(Subscriber.id, ids, session))
        .order_by(Subscriber.id)
    ).all()
    extra = dict(fields or {})
    items = [subscriber_data(row.id, row.email, **extra) for row in found]
    return emit_many(session, endpoints, event_type, items, now)


def subscriber_data(subscriber_id: int | None, email: str | None, **fields: Any) -> dict[str, Any]:
    """The ``data`` of an event about a subscriber: who, then the event's own fields."""
    return {"subscriber_id": subscriber_id, "email": email, **fields}


def payload(event_type: str, data: Mapping[str, Any], now: datetime) -> str:
    """The body posted, as text: the same bytes are signed and sent on every attempt."""
    document = {"type": event_type, "timestamp": iso(now), "data": dict(data)}
    return json.dumps(document, default=_json_value, ensure_ascii=False, separators=(",", ":"))


def iso(moment: datetime) -> str:
    """``2026-03-02T07:00:00Z``: UTC, with microseconds only when there are some."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _wanting(session: Session, endpoints: Endpoints | None, event_type: str) -> list[Endpoint]:
    if event_type not in EVENT_TYPES:  # a typo in an emitter must fail its tests
        raise ValueError(f"unknown outgoing event type {event_type!r}")
    configured = endpoints_of(session) if endpoints is None else endpoints
    return [endpoint for endpoint in configured if endpoint.wants(event_type)]


def _row(message_id: str, event_type: str, url: str, body: str, now: datetime) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "event_type": event_type,
        "endpoint_url": url,
        "body": body,
        "status": OutgoingWebhookStatus.PENDING,
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
    }


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON: convert it in the emitter")
