"""Benchmark: one broadcast to N subscribers through real workers and the SendGrid-like sink.

    .venv/bin/python bench/broadcast.py --subscribers 1000000 [--rate 2000]

Path measured end to end: beat's broadcast tick (snapshot, count) -> page tasks on real Celery
worker processes (segment page by id, delivery rows, checkpoint) -> send tasks
(drip.engine.dispatch:
exit checks, render once, personalize) -> the official sendgrid library -> the local
SendGrid-compatible sink over HTTP (its own process, no validation) -> rows committed as sent.

Two runs:

1. **unthrottled**, N subscribers: emails/s from the tick to the last row committed ``sent``,
   and the peak RSS of any worker process;
2. **throttled** at ``--rate`` emails/s (``DRIP_BROADCAST_RATE_PER_SECOND``), a shorter run of
   ``--throttled-subscribers``: the achieved rate (emails / time from the tick to the sink's last
   accepted email) and its deviation from the configured rate.

The last line printed is the figures, as key=value pairs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from sqlalchemy import Engine, func, select

from bench.common import Sink, fresh_database, load_subscribers, peak_rss_mb, process_tree
from drip.broadcasts import compose, zones
from drip.broadcasts.tick import broadcasts_tick
from drip.esp.memory import MemoryBackend
from drip.models import Delivery, DeliveryStatus
from drip.runtime import Runtime
from drip.settings import Settings
from tests.worker_harness import WorkerProcess, client, worker_env

BODY = """Hi {{ first_name }},

This week's session: **three short hill repeats**, walking back down. Keep the hips level and
push the ground away behind you.

[See the full plan in The Runners Lab]({{ runners_lab_url }})
"""


def _database(url: str, count: int) -> Engine:
    engine = fresh_database(url)
    load_subscribers(engine, count, due=False)  # enrolled, next lesson tomorrow: inert here
    return engine


def _broadcast(rt: Runtime) -> int:
    now = datetime.now(UTC)
    with rt.transaction() as session:
        b = compose.create_broadcast(
            session,
            rt,
            subject="Hill week, {{ first_name }}",
            preheader="Three short climbs, and why they make you faster on the flat.",
            body_md=BODY,
            actor="bench",
            now=now,
        )
        zones.schedule(session, rt, b.id, at=now, actor="bench", now=now)
        return b.id


def _sent(rt: Runtime, broadcast_id: int) -> int:
    with rt.sessions() as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    Delivery.broadcast_id == broadcast_id, Delivery.status == DeliveryStatus.SENT
                )
            )
            or 0
        )


def run(args: argparse.Namespace, url: str, count: int, rate: int, log: Path) -> dict[str, float]:
    """One broadcast to ``count`` subscribers; returns its figures."""
    print(f"setting up {count:,} subscribers in {url.rsplit('/', 1)[1]} ...", flush=True)
    engine = _database(url, count)
    redis.Redis.from_url(args.broker).flushdb()
    settings = Settings(database_url=url, email_backend="memory")
    rt = Runtime.build(settings, engine=engine, backend=MemoryBackend())
    sink = Sink()
    env = worker_env(
        database_url=url,
        broker_url=args.broker,
        sendgrid_url=sink.url,
        extra={
            "DRIP_REDIS_URL": args.broker,
            "DRIP_BROADCAST_PAGE_SIZE": str(args.page),
            "DRIP_SEND_BATCH_SIZE": str(args.batch),
            "DRIP_BROADCAST_RATE_PER_SECOND": str(rate),
        },
    )
    worker = WorkerProcess(env, concurrency=args.workers, log=log).start()
    producer = client(args.broker)
    peak = 0.0
    try:
        time.sleep(3)  # let the pool fork before the clock starts
        broadcast_id = _broadcast(rt)
        start = time.perf_counter()
        broadcasts_tick(
            rt,
            datetime.now(UTC),
            kick=lambda b, runner, _: producer.send_task("drip.broadcast_send", args=[b, runner]),
        )
        tick_s = time.perf_counter() - start
        accepted_at = None
        while True:
            time.sleep(0.05)
            for pid in process_tree(worker.proc.pid):  # type: ignore[union-attr]
                peak = max(peak, peak_rss_mb(pid))
            if accepted_at is None and sink.stats()["personalizations"] >= count:
                accepted_at = time.perf_counter()
            if accepted_at is not None and _sent(rt, broadcast_id) >= count:
                break
            if time.perf_counter() - start > 1800:
                raise SystemExit("gave up after 30 minutes")
        done_at = time.perf_counter()
    finally:
        worker.stop()
        stats = sink.stats()
        sink.stop()
        engine.dispose()
    assert stats["personalizations"] == count, stats  # each subscriber exactly once
    elapsed, to_sink = done_at - start, accepted_at - start
    print(
        f"{count:,} emails: tick {tick_s:.2f}s, last accepted by the sink {to_sink:.1f}s, "
        f"all rows sent {elapsed:.1f}s; {stats['accepted']} requests; peak worker RSS "
        f"{peak:.0f} MB",
        flush=True,
    )
    return {"elapsed": elapsed, "to_sink": to_sink, "rss": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=2000, help="emails/s of the throttled run")
    parser.add_argument("--throttled-subscribers", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2, help="worker pool processes")
    parser.add_argument("--page", type=int, default=1000, help="DRIP_BROADCAST_PAGE_SIZE")
    parser.add_argument("--batch", type=int, default=1000, help="DRIP_SEND_BATCH_SIZE")
    parser.add_argument("--skip-throttled", action="store_true")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "DRIP_BENCH_DATABASE_URL",
            "postgresql+psycopg://postgres@127.0.0.1:5432/drip_bench_broadcast",
        ),
    )
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/9")
    args = parser.parse_args()
    log = Path("var/bench-broadcast-worker.log")
    log.parent.mkdir(exist_ok=True)

    fast = run(args, args.database_url, args.subscribers, 0, log)
    figures = (
        f"emails_per_s={args.subscribers / fast['elapsed']:.0f} "
        f"worker_rss_mb={fast['rss']:.0f} subscribers={args.subscribers} workers={args.workers}"
    )
    if not args.skip_throttled:
        slow = run(args, args.database_url, args.throttled_subscribers, args.rate, log)
        achieved = args.throttled_subscribers / slow["to_sink"]
        figures += (
            f" rate={args.rate} achieved_per_s={achieved:.0f} "
            f"rate_error_pct={100 * (achieved - args.rate) / args.rate:+.1f} "
            f"throttled_subscribers={args.throttled_subscribers}"
        )
    print(figures)


if __name__ == "__main__":
    main()
