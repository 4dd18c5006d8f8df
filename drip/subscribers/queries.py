"""Listing subscribers for the admin API: filters and keyset pagination by id."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from drip.models import Subscriber, SubscriberTag, Tag

PAGE_MAX = 200


@dataclass(frozen=True)
class Page:
    items: list[Subscriber]
    next_after: int | None  # pass as ``after`` for the next page; None on the last page


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_subscribers(
    session: Session,
    *,
    status: str | None = None,
    tag: str | None = None,
    q: str | None = None,
    after: int = 0,
    limit: int = 50,
) -> Page:
    """Subscribers with ``id > after`` in id order, filtered by status, tag and a search text
    (case-insensitive substring of the address or the first name)."""
    limit = max(1, min(limit, PAGE_MAX))
    stmt = select(Subscriber).where(Subscriber.id > after).order_by(Subscriber.id).limit(limit + 1)
    if status:
        stmt = stmt.where(Subscriber.status == status)
    if tag:
        stmt = stmt.where(
            Subscriber.id.in_(
                select(SubscriberTag.subscriber_id)
                .join(Tag, Tag.id == SubscriberTag.tag_id)
                .where(Tag.name == tag.strip().lower())
            )
        )
    if q:
        pattern = f"%{_like_escape(q.strip().lower())}%"
        stmt = stmt.where(
            or_(
                Subscriber.email.like(pattern, escape="\\"),
                Subscriber.first_name.ilike(pattern, escape="\\"),
            )
        )
    rows = list(session.scalars(stmt))
    more = len(rows) > limit
    items = rows[:limit]
    return Page(items, items[-1].id if more and items else None)
