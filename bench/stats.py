"""Benchmark: ``drip stats`` at 1,000,000 subscribers and 10,000,000 tracking events.

    .venv/bin/python bench/stats.py [--subscribers 1000000] [--events 10000000]

Loads the data with generate_series in PostgreSQL (a few minutes): subscribers (3% never
confirmed, 3% unsubscribed), course enrollments and ~4.2 million deliveries (each confirmed
subscriber reached lesson 1 + id % 7; those who completed got 1-3 upsell emails), then exactly
``--events`` events: delivered, human and machine opens, second opens, human and machine clicks,
bounces, complaints, and "processed" for the rest; plus conversions, most credited to an upsell
email. The rollups are rebuilt from those rows (timed), then ``drip stats`` is timed as a user
runs it (a new process) and ``collect()`` in-process. The last line printed is the figures, as
key=value pairs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Connection, Engine, text

from bench.common import REPO, fresh_database
from drip import engagement
from drip.reports.stats import collect
from drip.runtime import Runtime
from drip.settings import Settings

DELIVERIES = """
insert into deliveries (subscriber_id, message_key, kind, sequence, position, status, attempts,
    created_at, updated_at, sent_at)
select s.id, 'glute-accelerator/' || p, 'lesson', 'glute-accelerator', p, 'sent', 1,
    s.created_at, s.created_at, s.created_at + (p - 1) * interval '1 day'
from subscribers s cross join generate_series(1, 7) p
where s.confirmed_at is not null and p <= 1 + s.id % 7;
insert into deliveries (subscriber_id, message_key, kind, sequence, position, status, attempts,
    created_at, updated_at, sent_at)
select s.id, 'runners-lab-upsell/' || p, 'lesson', 'runners-lab-upsell', p, 'sent', 1,
    s.created_at, s.created_at, s.created_at + (6 + p) * interval '1 day'
from subscribers s cross join generate_series(1, 3) p
where s.confirmed_at is not null and s.id % 7 = 6 and p <= 1 + s.id % 3;
"""
# (provider_event_id prefix, type, machine, which deliveries): each statement one kind of event.
EVENTS = [
    ("d", "delivered", False, "true"),
    ("o", "opened", False, "d.id % 10 < 4"),
    ("m", "opened", True, "d.id % 10 = 4"),
    ("o2", "opened", False, "d.id % 10 = 0"),
    (
        "c",
        "clicked",
        False,
        "d.id % 20 = 0 or (d.sequence = 'runners-lab-upsell' and d.id % 5 = 1)",
    ),
    ("s", "clicked", True, "d.id % 40 = 1"),
    ("b", "bounced", False, "d.id % 100 = 99"),
    ("x", "complained", False, "d.id % 2000 = 7"),
    ("p", "queued", False, "true"),
]


UNSUBSCRIBES = """
insert into tracking_events (type, occurred_at, received_at, delivery_id, subscriber_id, provider,
    provider_event_id, machine)
select distinct on (d.subscriber_id) 'unsubscribed', s.unsubscribed_at, s.unsubscribed_at, d.id,
    d.subscriber_id, 'drip', 'drip:unsubscribe:' || d.subscriber_id, false
from deliveries d join subscribers s on s.id = d.subscriber_id
where s.status = 'unsubscribed' and d.sent_at <= s.unsubscribed_at
order by d.subscriber_id, d.sent_at desc
"""
CONVERSIONS = """
insert into conversions (order_id, subscriber_id, email_hash, product, amount_cents, currency,
    occurred_at, received_at, attributed_delivery_id)
select 'order-' || d.id, d.subscriber_id, md5(d.subscriber_id::text), 'The Runners Lab', 19700,
    'USD', d.sent_at + interval '3 hours', d.sent_at + interval '3 hours', d.id
from deliveries d where d.message_key = 'runners-lab-upsell/1' and d.subscriber_id % 50 = 6;
insert into conversions (order_id, email_hash, product, amount_cents, currency, occurred_at,
    received_at)
select 'walkin-' || i, md5(i::text), 'The Runners Lab', 19700, 'USD', now(), now()
from generate_series(1, 500) i
"""


def _drop_indexes(conn: Connection) -> list[str]:
    """Drop the secondary indexes of tracking_events; the statements that rebuild them."""
    rebuild = []
    for name, definition in conn.execute(
        text(
            "select indexname, indexdef from pg_indexes where tablename = 'tracking_events'"
            " and indexname not like 'pk_%'"
        )
    ).all():
        if name.startswith("uq_"):
            conn.execute(text(f'alter table tracking_events drop constraint "{name}"'))
            rebuild.append(
                f'alter table tracking_events add constraint "{name}" unique (provider_event_id)'
            )
        else:
            conn.execute(text(f'drop index "{name}"'))
            rebuild.append(definition)
    return rebuild


def load(engine: Engine, subscribers: int, events: int) -> dict[str, float]:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into subscribers (email, first_name, time_zone, status, source,"
                " course_emails, newsletter, created_at, confirmed_at, unsubscribed_at)"
                " select 'runner' || i || '@example.com', 'Runner', 'America/New_York',"
                " case when i % 100 < 3 then 'pending' when i % 100 < 6 then 'unsubscribed'"
                " else 'active' end, 'bench', true, true,"
                " timestamptz '2026-01-01' + (i % 50) * interval '1 day',"
                " case when i % 100 < 3 then null else timestamptz '2026-01-01'"
                " + (i % 50) * interval '1 day' end,"
                " case when i % 100 between 3 and 5 then timestamptz '2026-01-01'"
                " + (i % 50 + i % 9) * interval '1 day' + interval '1 hour' end"
                " from generate_series(1, :n) i"
            ),
            {"n": subscribers},
        )
        conn.execute(
            text(
                "insert into enrollments (subscriber_id, sequence, position, status, enrolled_at,"
                " completed_at) select id, 'glute-accelerator', 1 + id % 7,"
                " case when id % 7 = 6 then 'completed' else 'active' end, created_at,"
                " case when id % 7 = 6 then created_at + interval '6 days' end"
                " from subscribers where confirmed_at is not null"
            )
        )
        for statement in DELIVERIES.split(";"):
            if statement.strip():
                conn.execute(text(statement))
    timings["load_subscribers_s"] = time.perf_counter() - started

    started = time.perf_counter()
    with engine.begin() as conn:
        # Bulk load first, index after, no per-row foreign key checks: what a restore does.
        conn.execute(text("set local session_replication_role = replica"))
        indexes = _drop_indexes(conn)
        # What drip.engagement.credit_unsubscribe stores: each unsubscribe credited to the last
        # email sent before it.
        left = events - conn.execute(text(UNSUBSCRIBES)).rowcount
        for prefix, kind, machine, where in EVENTS:
            if left <= 0:
                break
            result = conn.execute(
                text(
                    "insert into tracking_events (type, occurred_at, received_at, delivery_id,"
                    " subscriber_id, provider, provider_event_id, machine, user_agent)"
                    " select :kind, d.sent_at + interval '2 hours',"
                    " d.sent_at + interval '3 hours', d.id, d.subscriber_id, 'sendgrid',"
                    f" '{prefix}:' || d.id, :machine, 'Mozilla/5.0' from deliveries d"
                    f" where {where} order by d.id limit :left"
                ),
                {"kind": kind, "machine": machine, "left": left},
            )
            left -= result.rowcount
        for definition in indexes:
            conn.execute(text(definition))
        for statement in CONVERSIONS.split(";"):
            conn.execute(text(statement))
    timings["load_events_s"] = time.perf_counter() - started
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/drip_bench_stats"
    )
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--reuse", action="store_true", help="keep the data of the last run")
    args = parser.parse_args()  # fmt: skip

    env = {**os.environ, "DRIP_DATABASE_URL": args.database_url, "DRIP_EMAIL_BACKEND": "memory"}
    settings = Settings(database_url=args.database_url, email_backend="memory")
    timings: dict[str, float] = {}
    if args.reuse:
        from drip.db import make_engine

        engine = make_engine(args.database_url)
    else:
        engine = fresh_database(args.database_url)
        timings = load(engine, args.subscribers, args.events)
    rt = Runtime.build(settings, engine=engine)
    if not args.reuse:
        started = time.perf_counter()
        with rt.transaction() as session:
            engagement.rebuild(session)
        timings["rebuild_s"] = time.perf_counter() - started
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("vacuum analyze"))
    with engine.connect() as conn:
        counts = {
            table: int(conn.scalar(text(f"select count(*) from {table}")) or 0)
            for table in ("subscribers", "deliveries", "tracking_events", "conversions")
        }

    collect_runs = []
    for _ in range(3):
        started = time.perf_counter()
        with rt.sessions() as session:
            figures = collect(session, rt.library, settings.course_sequence, rt.clock())
        collect_runs.append(time.perf_counter() - started)
    cli_runs = []
    for flags in ([], ["--json"], []):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "drip.cli", "stats", *flags],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        cli_runs.append(time.perf_counter() - started)
    print(out.stdout)
    results = {
        **{k: round(v, 1) for k, v in timings.items()},
        **counts,
        "collect_s": round(min(collect_runs), 3),
        "collect_first_s": round(collect_runs[0], 3),
        "drip_stats_s": round(max(cli_runs), 3),
        "converted": figures.funnel.converted,
        "cpus": os.cpu_count(),
    }
    print(" ".join(f"{k}={v}" for k, v in results.items()))


if __name__ == "__main__":
    main()
