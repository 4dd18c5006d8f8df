"""The durable path of opens and clicks: a Redis stream, drained into the database in batches.

The endpoints only ``XADD`` one entry per request (:class:`EventQueue`), so they answer in well
under a millisecond of work. :func:`drain` (a Celery beat task every few seconds, or
``drip tracking drain``) reads the stream through a consumer group, stores each batch with one
bulk insert (:func:`drip.ingest.events.ingest`), commits, and only then acknowledges and deletes the
entries. A drainer that dies mid-batch leaves its entries pending; the next drain claims them
after :data:`RECLAIM_IDLE_MS`. Storing twice is harmless: an entry's event id is
``drip:<stream entry id>``, and the insert skips ids already there.

If Redis cannot take an entry, the endpoint stores the event directly (:func:`store_now`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio

from drip.ingest.events import Event, EventType, IngestReport, store

if TYPE_CHECKING:
    from drip.runtime import Runtime

log = logging.getLogger(__name__)

GROUP = "drip-drain"
RECLAIM_IDLE_MS = 60_000
OPEN, CLICK = "o", "c"


def entry(
    kind: str,
    delivery_id: int,
    *,
    at: datetime,
    ip: str | None,
    user_agent: str | None,
    head: bool = False,
    index: int | None = None,
    url: str | None = None,
) -> dict[str, str]:
    """The stream entry for one open (``kind`` "o") or click ("c"): flat strings only."""
    fields = {"k": kind, "d": str(delivery_id), "ts": f"{at.timestamp():.6f}"}
    if ip:
        fields["ip"] = ip
    if user_agent:
        fields["ua"] = user_agent[:512]
    if head:
        fields["h"] = "1"
    if index is not None and url is not None:
        fields["n"], fields["u"] = str(index), url
    return fields


def to_event(event_id: str, fields: Mapping[str, str]) -> Event:
    """The :class:`Event` for one entry (ValueError if the entry is malformed)."""
    kind = fields["k"]
    if kind not in (OPEN, CLICK):
        raise ValueError(f"unknown entry kind {kind!r}")
    return Event(
        type=EventType.OPENED if kind == OPEN else EventType.CLICKED,
        occurred_at=datetime.fromtimestamp(float(fields["ts"]), UTC),
        provider="drip",
        provider_event_id=f"drip:{event_id}",
        delivery_id=int(fields["d"]),
        url=fields.get("u"),
        ip=fields.get("ip"),
        user_agent=fields.get("ua"),
        head=fields.get("h") == "1",
        raw={"link": int(fields["n"])} if "n" in fields else None,
    )


def store_now(rt: Runtime, fields: Mapping[str, str]) -> IngestReport:
    """Store one entry directly in the database (the fallback when Redis is unreachable)."""
    return store(rt, [to_event(f"direct:{uuid.uuid4().hex}", fields)])


class EventQueue:
    """The endpoints' side: ``XADD`` with group commit, on one asyncio Redis connection.

    :meth:`put` returns once Redis has the entry. Entries that arrive while a write is in flight
    wait for the next one, which sends all of them in one pipeline: under load, one round trip
    carries many events, and the number of connections stays at one per process.
    """

    def __init__(self, redis_url: str, stream: str) -> None:
        self._client = redis.asyncio.Redis.from_url(
            redis_url, socket_timeout=5, socket_connect_timeout=2
        )
        self.stream = stream
        self._pending: list[tuple[dict[str, str], asyncio.Future[None]]] = []
        self._flushing = False

    async def put(self, fields: dict[str, str]) -> None:
        """Store one entry in the stream (raises if Redis fails)."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((fields, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    pipe = self._client.pipeline(transaction=False)
                    for fields, _ in batch:
                        pipe.xadd(self.stream, fields)  # type: ignore[arg-type]
                    await pipe.execute()
                except Exception as err:  # every waiter learns; each falls back on its own
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(err)
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._flushing = False

    async def close(self) -> None:
        await self._client.aclose()


@dataclass
class DrainReport:
    batches: int = 0
    entries: int = 0
    stored: int = 0
    duplicates: int = 0
    malformed: int = 0


@dataclass(frozen=True)
class Lag:
    """How far the drain is behind: the entries still in the stream and the oldest one's age.

    ``waiting`` counts every entry not yet stored, including those a drainer read but has not
    acknowledged (they are deleted only once stored). ``oldest_at`` is when Redis took the oldest
    of them (the time in its entry id, Redis's clock), None when nothing waits.
    """

    waiting: int
    oldest_at: datetime | None

    def oldest_seconds(self, now: datetime) -> float:
        """How long the oldest entry has waited at ``now`` (0 when nothing waits)."""
        if self.oldest_at is None:
            return 0.0
        return max((now - self.oldest_at).total_seconds(), 0.0)


def lag(client: redis.Redis, stream: str) -> Lag:
    """The drain's backlog in ``stream``, read-only: XLEN and the first entry, in one MULTI so
    the two agree (a missing stream is an empty one). Raises :class:`redis.RedisError`."""
    pipe = client.pipeline(transaction=True)
    pipe.xlen(stream)
    pipe.xrange(stream, "-", "+", count=1)
    waiting, first = pipe.execute()
    if not first:
        return Lag(0, None)
    raw_id = first[0][0]
    millis = int((raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)).split("-")[0])
    return Lag(int(waiting), datetime.fromtimestamp(millis / 1000, UTC))


def ensure_group(client: redis.Redis, stream: str) -> None:
    try:
        client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as err:
        if "BUSYGROUP" not in str(err):
            raise


def _decode(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }


def _batch(
    client: redis.Redis, stream: str, consumer: str, size: int, reclaim_idle_ms: int | None
) -> list[Any]:
    if reclaim_idle_ms is not None:  # entries a dead drainer read but never acknowledged
        _, claimed, *_ = client.xautoclaim(stream, GROUP, consumer, reclaim_idle_ms, count=size)
        if claimed:
            return list(claimed)
    answer: Any = client.xreadgroup(GROUP, consumer, {stream: ">"}, count=size)
    if not answer:
        return []
    if isinstance(answer, dict):  # RESP3 answers {stream: entries}, RESP2 [[stream, entries]]
        return list(next(iter(answer.values())))
    return list(answer[0][1])


def drain(
    rt: Runtime,
    client: redis.Redis | None = None,
    *,
    max_batches: int | None = None,
    max_seconds: float | None = None,
    reclaim_idle_ms: int | None = None,
) -> DrainReport:
    """Move stream entries into the database until the stream is empty (or a limit is hit).

    Entries another drainer read but left unacknowledged for ``reclaim_idle_ms`` (default
    :data:`RECLAIM_IDLE_MS`) are taken over first: that drainer died.
    """
    idle = RECLAIM_IDLE_MS if reclaim_idle_ms is None else reclaim_idle_ms
    own = client is None
    client = client or redis.Redis.from_url(rt.settings.redis_url)
    stream, size = rt.settings.tracking_stream, rt.settings.tracking_drain_batch
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    report = DrainReport()
    started = time.monotonic()
    try:
        ensure_group(client, stream)
        while max_batches is None or report.batches < max_batches:
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                break
            entries = _batch(client, stream, consumer, size, idle if not report.batches else None)
            if not entries:
                break
            _drain_batch(rt, client, stream, entries, report)
    finally:
        if own:
            client.close()
    return report


def _drain_batch(
    rt: Runtime, client: redis.Redis, stream: str, entries: list[Any], report: DrainReport
) -> None:
    ids, events = [], []
    for raw_id, raw_fields in entries:
        event_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        ids.append(event_id)
        try:
            events.append(to_event(event_id, _decode(raw_fields or {})))
        except (KeyError, ValueError, OverflowError) as err:
            report.malformed += 1  # acknowledged below: retrying cannot fix it
            log.error("dropping malformed tracking entry %s: %s", event_id, err)
    stored = store(rt, events)  # committed here; on error nothing is acknowledged
    pipe = client.pipeline(transaction=False)
    pipe.xack(stream, GROUP, *ids)
    pipe.xdel(stream, *ids)
    pipe.execute()
    report.batches += 1
    report.entries += len(ids)
    report.stored += stored.stored
    report.duplicates += stored.duplicates
