"""Benchmark: the whole drip path for N due subscribers, and the machine's floor.

    .venv/bin/python bench/dispatch.py --subscribers 100000 [--workers 2]

Path measured end to end: the tick (claim due enrollments in PostgreSQL, write delivery rows) ->
Celery on Redis -> real worker processes (render, exit checks) -> the official sendgrid library ->
a local SendGrid-compatible sink over HTTP -> delivery rows committed as sent. The floor is the
same machine's cost of render + serialize + insert per email with no Celery and no HTTP, measured
in the same run. The last line printed is the figures, as key=value pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from sqlalchemy import func, insert, select, text

from bench.common import (
    Sink,
    cpu_line,
    cpu_seconds_by_group,
    fresh_database,
    load_subscribers,
    peak_rss_mb,
    process_tree,
)
from drip.content.render import RecipientData, recipient_substitutions, unsubscribe_headers
from drip.engine.claim import tick
from drip.esp.memory import MemoryBackend
from drip.models import Delivery, DeliveryStatus, Subscriber
from drip.runtime import Runtime
from drip.settings import Settings
from tests.worker_harness import WorkerProcess, client, worker_env


def measure_floor(rt: Runtime, sample: int) -> float:
    """Emails/s for render + serialize + insert alone: one process, no Celery, no HTTP."""
    from drip.esp.base import Recipient
    from drip.esp.sendgrid import _personalization

    sequence = rt.course()
    message = rt.renderer.lesson(sequence, sequence.lessons[0])
    with rt.sessions() as session:
        subs = session.execute(
            select(Subscriber.id, Subscriber.email, Subscriber.first_name).limit(sample)
        ).all()
    start = time.perf_counter()
    with rt.transaction() as session:
        rows = [
            {
                "subscriber_id": s.id,
                "message_key": "floor/1",
                "kind": "lesson",
                "status": DeliveryStatus.SENT,
            }
            for s in subs
        ]
        session.execute(insert(Delivery), rows)
        for start_at in range(0, len(subs), 1000):
            chunk = subs[start_at : start_at + 1000]
            personalizations = []
            for s in chunk:
                url = rt.unsubscribe_url(s.id)
                recipient = Recipient(
                    delivery_id=s.id,
                    email=s.email,
                    name=s.first_name,
                    substitutions=recipient_substitutions(RecipientData(s.first_name, url)),
                    headers=unsubscribe_headers(url),
                )
                personalizations.append(_personalization(message, recipient))
            json.dumps({"personalizations": personalizations, "content": [message.html]})
    elapsed = time.perf_counter() - start
    with rt.transaction() as session:
        session.execute(text("delete from deliveries where message_key = 'floor/1'"))
    return len(subs) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2, help="worker pool processes")
    parser.add_argument("--batch", type=int, default=1000, help="delivery ids per send task")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "DRIP_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/drip_bench"
        ),
    )
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()

    print(f"setting up {args.subscribers} due subscribers ...", flush=True)
    engine = fresh_database(args.database_url)
    load_subscribers(engine, args.subscribers)
    redis.Redis.from_url(args.broker).flushdb()
    settings = Settings(
        database_url=args.database_url,
        send_batch_size=args.batch,
        claim_chunk=5000,
        email_backend="memory",
    )
    rt = Runtime.build(settings, engine=engine, backend=MemoryBackend())
    floor = measure_floor(rt, min(20_000, args.subscribers))
    print(f"floor: {floor:,.0f} emails/s (render + serialize + insert, one process)", flush=True)

    sink = Sink()
    env = worker_env(
        database_url=args.database_url,
        broker_url=args.broker,
        sendgrid_url=sink.url,
        extra={"DRIP_SEND_BATCH_SIZE": str(args.batch)},
    )
    log = Path("var/bench-worker.log")
    log.parent.mkdir(exist_ok=True)
    worker = WorkerProcess(env, concurrency=args.workers, log=log).start()
    producer = client(args.broker)
    peak_rss = 0.0
    try:
        time.sleep(3)  # let the pool fork before the clock starts
        groups = {
            "tick": [os.getpid()],
            "workers": process_tree(worker.proc.pid),  # type: ignore[union-attr]
            "sink": [sink.proc.pid],
        }
        cpu_before = cpu_seconds_by_group(groups)
        start = time.perf_counter()
        report = tick(
            rt,
            datetime.now(UTC),
            enqueue=lambda ids: producer.send_task("drip.send", args=[ids], queue="drip"),
            max_claims=args.subscribers,
        )
        tick_s = time.perf_counter() - start
        print(
            f"tick claimed {report.claimed} in {tick_s:.1f}s ({report.batches} tasks)", flush=True
        )
        # Progress from the sink (one cheap HTTP call), not from counting deliveries, which
        # would put the harness's own scans on the database being measured. Once the sink holds
        # every email, wait for the last batches' results to be committed.
        in_flight = report.claimed
        while in_flight:
            time.sleep(0.25)
            for pid in process_tree(worker.proc.pid):  # type: ignore[union-attr]
                peak_rss = max(peak_rss, peak_rss_mb(pid))
            if sink.stats()["personalizations"] < report.claimed:
                continue
            with rt.sessions() as session:
                in_flight = session.scalar(
                    select(func.count()).where(
                        Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.SENDING])
                    )
                )
            if time.perf_counter() - start > 1800:
                raise SystemExit(f"gave up after 30 minutes with {in_flight} in flight")
        elapsed = time.perf_counter() - start
        cpu_after = cpu_seconds_by_group(groups)
    finally:
        worker.stop()
        stats = sink.stats()
        sink.stop()
    assert stats["personalizations"] == report.claimed, stats
    with rt.sessions() as session:
        sent = session.scalar(select(func.count()).where(Delivery.status == DeliveryStatus.SENT))
    assert sent == report.claimed, (sent, report.claimed)

    # The idle tick: everyone's next lesson is tomorrow now.
    samples = []
    for _ in range(20):
        t0 = time.perf_counter()
        idle = tick(rt, datetime.now(UTC), enqueue=lambda ids: None)
        samples.append((time.perf_counter() - t0) * 1000)
        assert idle.claimed == 0
    rate = report.claimed / elapsed
    cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
    print(cpu_line("email", cpu, report.claimed, elapsed), flush=True)
    print(
        f"sent {report.claimed} in {elapsed:.1f}s; sink accepted {stats['accepted']} requests",
        flush=True,
    )
    print(
        f"emails_per_s={rate:.0f} floor_per_s={floor:.0f} ratio={rate / floor:.2f} "
        f"worker_rss_mb={peak_rss:.0f} idle_tick_ms={statistics.median(samples):.1f} "
        f"subscribers={args.subscribers} workers={args.workers}"
    )


if __name__ == "__main__":
    main()
