"""Tags as events: adding or removing a tag starts and stops sequences (``[[triggers]]``,
``[[exits]]``), for one subscriber or a hundred thousand at once.

Contract of :func:`add_tags` and :func:`remove_tag`:

- tag names are trimmed and lowercased, then must be tags in the sense of
  :data:`drip.content.triggers.TAG_RE`; a bad one raises :class:`InvalidInput` naming it before
  anything is written;
- they run in the caller's transaction and commit nothing;
- their cost is a fixed number of statements per tag, whatever the number of subscribers: the
  pairs are written with one insert-ignore (or one delete) whose RETURNING says for whom the tag
  really changed;
- :func:`drip.engine.automations.handle` is called once per tag with exactly those subscribers:
  adding a tag someone has already changes nothing and starts nothing, however often it is
  repeated; so is the ``tag.added`` outgoing webhook (docs/webhooks-outgoing.md). A pending
  subscriber gets the tag and starts nothing now; confirming replays their tags
  (drip.subscribers.confirm).

Erased subscribers are never tagged; ids of no subscriber are ignored.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, true
from sqlalchemy.orm import Session

from drip.content.triggers import TAG_RE
from drip.engine.automations import Handled, handle
from drip.errors import InvalidInput
from drip.models import Subscriber, SubscriberStatus, SubscriberTag, Tag
from drip.outgoing import TAG_ADDED, emit_for_subscribers
from drip.store import one_of, store_for
from drip.subscribers.store import ensure_tags

if TYPE_CHECKING:
    from drip.runtime import Runtime

__all__ = [
    "TAG_RULE",
    "TagResult",
    "add_tags",
    "clean_tag_name",
    "clean_tag_names",
    "remove_tag",
    "tag_events",
    "tags_of",
]

TAG_RULE = "lowercase letters, digits, '-', '_' and ':', at most 64 characters"
_SHOWN_MAX = 80  # of a refused tag, quoted in the error


@dataclass
class TagResult:
    """What one call did: per tag, the subscribers for whom it really changed (sorted ids), and
    per sequence slug, the enrollments its events started and stopped."""

    changed: dict[str, list[int]] = field(default_factory=dict)
    started: dict[str, int] = field(default_factory=dict)
    stopped: dict[str, int] = field(default_factory=dict)

    @property
    def subscribers(self) -> int:
        """How many (subscriber, tag) pairs changed."""
        return sum(len(ids) for ids in self.changed.values())

    @property
    def enrollments_started(self) -> int:
        return sum(self.started.values())

    def add(self, handled: Handled) -> None:
        for slug, count in handled.started.items():
            self.started[slug] = self.started.get(slug, 0) + count
        for slug, count in handled.stopped.items():
            self.stopped[slug] = self.stopped.get(slug, 0) + count


def clean_tag_name(value: object, field: str = "tag") -> str:
    """``value`` trimmed and lowercased, if it is then a tag; else :class:`InvalidInput` on
    ``field`` quoting the value."""
    if not isinstance(value, str):
        raise InvalidInput(field, f"must hold tags as strings, not {type(value).__name__}")
    tag = unicodedata.normalize("NFC", value).strip().lower()
    if not TAG_RE.fullmatch(tag):
        shown = value if len(value) <= _SHOWN_MAX else value[:_SHOWN_MAX] + "..."
        raise InvalidInput(field, f"{shown!r} is not a tag ({TAG_RULE})")
    return tag


def clean_tag_names(values: Iterable[object], field: str = "tags") -> list[str]:
    """Every one of ``values`` cleaned (:func:`clean_tag_name`), duplicates dropped, in order."""
    return list(dict.fromkeys(clean_tag_name(v, field) for v in values))


def add_tags(
    rt: Runtime,
    session: Session,
    subscriber_ids: Iterable[int],
    tags: Iterable[str],
    now: datetime,
) -> TagResult:
    """Put ``tags`` on ``subscriber_ids``; then the ``tag_added`` event of each tag for those
    who did not have it. Four statements plus the events, whatever the number of subscribers."""
    names = clean_tag_names(tags)
    ids = sorted(set(subscriber_ids))
    result = TagResult()
    if not names or not ids:
        return result
    tag_ids = {tag.id: tag.name for tag in ensure_tags(session, names)}
    pairs = (
        select(Subscriber.id, Tag.id)
        .join(Tag, true())  # every subscriber with every tag: the pairs wanted
        .where(
            one_of(Subscriber.id, ids, session),
            Subscriber.status != SubscriberStatus.ERASED,
            one_of(Tag.id, sorted(tag_ids), session),
        )
        .order_by(Subscriber.id, Tag.id)  # one lock order for concurrent calls
    )
    insert = (
        store_for(session)
        .insert_ignore(SubscriberTag, ["subscriber_id", "tag_id"])
        .from_select(["subscriber_id", "tag_id"], pairs)
        .returning(SubscriberTag.subscriber_id, SubscriberTag.tag_id)
    )
    added: dict[str, list[int]] = defaultdict(list)
    for subscriber_id, tag_id in session.execute(insert):
        added[tag_ids[tag_id]].append(subscriber_id)
    for name in names:  # in the order given, each tag's event once
        if name in added:
            result.changed[name] = sorted(added[name])
            _tag_added(rt, session, name, result, now)
    return result


def _tag_added(rt: Runtime, session: Session, name: str, result: TagResult, now: datetime) -> None:
    """The ``tag_added`` event of ``name`` for ``result.changed[name]``: sequences, then the
    ``tag.added`` outgoing webhook (nothing read or written when no endpoint wants it)."""
    ids = result.changed[name]
    result.add(handle(rt, session, "tag_added", name, ids, now))
    emit_for_subscribers(session, None, TAG_ADDED, ids, now, {"tag": name})


def remove_tag(
    rt: Runtime,
    session: Session,
    subscriber_ids: Iterable[int],
    tag: str,
    now: datetime,
) -> TagResult:
    """Take ``tag`` off ``subscriber_ids``; then its ``tag_removed`` event for those who had it.
    Two statements plus the event, whatever the number of subscribers."""
    name = clean_tag_name(tag)
    ids = sorted(set(subscriber_ids))
    result = TagResult()
    tag_id = session.scalar(select(Tag.id).where(Tag.name == name)) if ids else None
    if tag_id is None:
        return result
    removed = session.scalars(
        delete(SubscriberTag)
        .where(SubscriberTag.tag_id == tag_id, one_of(SubscriberTag.subscriber_id, ids, session))
        .returning(SubscriberTag.subscriber_id)
        .execution_options(synchronize_session=False)
    ).all()
    if removed:
        result.changed[name] = sorted(removed)
        result.add(handle(rt, session, "tag_removed", name, result.changed[name], now))
    return result


def tag_events(
    rt: Runtime,
    session: Session,
    subscriber_id: int,
    before: Iterable[str],
    after: Iterable[str],
    now: datetime,
) -> TagResult:
    """The ``tag_added`` and ``tag_removed`` events of one subscriber whose tags went from
    ``before`` to ``after`` by other means (the admin API's replace and patch)."""
    old, new = set(before), set(after)
    result = TagResult()
    for name in sorted(old - new):
        result.changed[name] = [subscriber_id]
        result.add(handle(rt, session, "tag_removed", name, [subscriber_id], now))
    for name in sorted(new - old):
        result.changed[name] = [subscriber_id]
        _tag_added(rt, session, name, result, now)
    return result


def tags_of(session: Session, subscriber_id: int) -> list[str]:
    """The subscriber's tags as stored now, sorted."""
    return sorted(
        session.scalars(
            select(Tag.name)
            .join(SubscriberTag, SubscriberTag.tag_id == Tag.id)
            .where(SubscriberTag.subscriber_id == subscriber_id)
        )
    )
