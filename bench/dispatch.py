"""Benchmark: the whole drip path for N due subscribers, and the machine's floor.

    .venv/bin/python bench/dispatch.py --subscribers 100000 [--workers 2] [--sequences 10]

Path measured end to end: the tick (claim due enrollments in PostgreSQL, write delivery rows) ->
Celery on Redis -> real worker processes (render, exit checks) -> the official sendgrid library ->
a local SendGrid-compatible sink over HTTP -> delivery rows committed as sent. The floor is the
same machine's cost of render + serialize + insert per email with no Celery and no HTTP, measured
in the same run. The last line printed is the figures, as key=value pairs.

``--sequences N``: after that single-course pass, the same path again on a fresh database with N
copies of the course active (bench-01..bench-NN, in a temporary DRIP_CONTENT_DIR), every
subscriber due in one and waiting in another, so that the one-email-a-day check
(drip.engine.claim.one_a_day) reads real rows; the last line then compares the two passes
(``single_per_s``, ``multi_per_s``, ``ratio`` = multi / single).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from sqlalchemy import Engine, func, insert, select, text

from bench.common import (
    REPO,
    Sink,
    copy_course,
    cpu_line,
    cpu_seconds_by_group,
    fresh_database,
    load_spread_subscribers,
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

COURSE_DIR = REPO / "content" / "lessons" / "glute-accelerator"


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


@dataclass
class PassFigures:
    """What one pass measured (the figures of its last line)."""

    rate: float  # emails/s end to end
    floor: float  # emails/s for render + serialize + insert alone (measure_floor)
    claimed: int
    tick_s: float  # how long the tick took to claim everyone
    peak_rss: float
    idle_tick_ms: float


def run_pass(
    args: argparse.Namespace,
    engine: Engine,
    *,
    content_dir: Path | None = None,
    course: str | None = None,
) -> PassFigures:
    """Send to everyone due in ``engine``'s database through real workers, and time it.

    ``content_dir`` and ``course``: the content the Runtime and the worker processes load
    (``DRIP_CONTENT_DIR``, ``DRIP_COURSE_SEQUENCE``); unset, the repository's content.
    """
    redis.Redis.from_url(args.broker).flushdb()
    content: dict[str, Any] = {}
    extra = {"DRIP_SEND_BATCH_SIZE": str(args.batch)}
    if content_dir is not None:
        content["content_dir"] = content_dir
        extra["DRIP_CONTENT_DIR"] = str(content_dir)
    if course is not None:
        content["course_sequence"] = course
        extra["DRIP_COURSE_SEQUENCE"] = course
    settings = Settings(
        database_url=args.database_url,
        send_batch_size=args.batch,
        claim_chunk=5000,
        email_backend="memory",
        **content,
    )
    rt = Runtime.build(settings, engine=engine, backend=MemoryBackend())
    floor = measure_floor(rt, min(20_000, args.subscribers))
    print(f"floor: {floor:,.0f} emails/s (render + serialize + insert, one process)", flush=True)

    sink = Sink()
    env = worker_env(
        database_url=args.database_url, broker_url=args.broker, sendgrid_url=sink.url, extra=extra
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
        in_flight: int | None = report.claimed
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
    cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
    print(cpu_line("email", cpu, report.claimed, elapsed), flush=True)
    print(
        f"sent {report.claimed} in {elapsed:.1f}s; sink accepted {stats['accepted']} requests",
        flush=True,
    )
    return PassFigures(
        rate=report.claimed / elapsed,
        floor=floor,
        claimed=report.claimed,
        tick_s=tick_s,
        peak_rss=peak_rss,
        idle_tick_ms=statistics.median(samples),
    )


def run_sequences_pass(args: argparse.Namespace) -> PassFigures:
    """The ``--sequences N`` pass: N copies of the course (bench.common.copy_course), everyone
    due in one and waiting in another (bench.common.load_spread_subscribers), on a fresh
    database."""
    with tempfile.TemporaryDirectory(prefix="drip-bench-content-") as tmp:
        content_dir = Path(tmp) / "lessons"
        slugs = copy_course(COURSE_DIR, content_dir, args.sequences)
        print(
            f"setting up {args.subscribers} due subscribers over {len(slugs)} sequences"
            f" ({slugs[0]}..{slugs[-1]}) ...",
            flush=True,
        )
        engine = fresh_database(args.database_url)
        load_spread_subscribers(engine, args.subscribers, slugs)
        with engine.connect() as conn:
            waiting = conn.scalar(
                text(
                    "select count(*) from enrollments where next_send_at > now()"
                    " and last_sent_at >= now() - interval '50 hours'"
                )
            )
        print(f"one-a-day: {waiting} enrollments sent within 50 hours, not due", flush=True)
        try:
            return run_pass(args, engine, content_dir=content_dir, course=slugs[0])
        finally:
            engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2, help="worker pool processes")
    parser.add_argument("--batch", type=int, default=1000, help="delivery ids per send task")
    parser.add_argument(
        "--sequences",
        type=int,
        default=0,
        help="also run a pass with this many active sequences (2 or more) and compare",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "DRIP_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/drip_bench"
        ),
    )
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()
    if args.sequences == 1 or args.sequences < 0:
        parser.error(
            f"--sequences must be 2 or more (or 0: the single course only), not {args.sequences}"
        )

    print(f"setting up {args.subscribers} due subscribers ...", flush=True)
    engine = fresh_database(args.database_url)
    load_subscribers(engine, args.subscribers)
    single = run_pass(args, engine)
    engine.dispose()
    if not args.sequences:
        print(
            f"emails_per_s={single.rate:.0f} floor_per_s={single.floor:.0f} "
            f"ratio={single.rate / single.floor:.2f} "
            f"worker_rss_mb={single.peak_rss:.0f} idle_tick_ms={single.idle_tick_ms:.1f} "
            f"subscribers={args.subscribers} workers={args.workers}"
        )
        return
    print(f"single course: {single.rate:,.0f} emails/s", flush=True)
    multi = run_sequences_pass(args)
    print(f"{args.sequences} sequences: {multi.rate:,.0f} emails/s", flush=True)
    print(
        f"single_per_s={single.rate:.0f} multi_per_s={multi.rate:.0f} "
        f"ratio={multi.rate / single.rate:.2f} "
        f"single_floor_per_s={single.floor:.0f} multi_floor_per_s={multi.floor:.0f} "
        f"single_tick_s={single.tick_s:.1f} multi_tick_s={multi.tick_s:.1f} "
        f"single_idle_tick_ms={single.idle_tick_ms:.1f} "
        f"multi_idle_tick_ms={multi.idle_tick_ms:.1f} "
        f"sequences={args.sequences} subscribers={args.subscribers} workers={args.workers}"
    )


if __name__ == "__main__":
    main()
