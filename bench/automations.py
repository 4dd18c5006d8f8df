"""Benchmark: tagging a CSV of 100,000 addresses, and trigger events one subscriber at a time.

    .venv/bin/python bench/automations.py --subscribers 100000 --events 5000

On a fresh PostgreSQL database (``drip_bench_automations``): N active subscribers and a content
directory with the course and two sequences started by tags (``5k-plan``, ``hill-week``).

1. The CSV: a file of the N addresses, tagged ``5k-plan`` through ``tag_csv_file``, the function
   ``drip subscribers tag --csv`` calls (chunks of 5,000: lookup, tag insert, the ``tag_added``
   event's enrollments, one transaction each). ``tagged_per_s`` and ``enrolled_per_s`` are N and
   the enrollments started over the wall time, which must be under 30 s.
2. Trigger events, each ``tag_added`` of ``hill-week`` (which starts a sequence) for one
   subscriber through ``drip.engine.automations.handle`` (the exit and trigger lookups, then the
   start: who is active, who was in it, the enrollment insert): ``--events`` of them one call
   each, ``--per-transaction`` calls per commit (``events_per_s``, target 5,000); as many again
   with the events of a transaction in one call, the bulk form (``grouped_events_per_s``); and
   ``--events`` events that start and end nothing, the lookups alone (``lookup_events_per_s``).
3. ``--api-events`` more, the way the admin API makes them: ``add_tags`` for one subscriber and
   one tag, one transaction each (``api_events_per_s``, for reference; no target).

The last line printed is the figures, as key=value pairs.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, func, select, text

from bench.common import REPO, copy_sequence, fresh_database, insert_active_subscribers
from drip.engine.automations import handle
from drip.esp.memory import MemoryBackend
from drip.models import Enrollment, Subscriber
from drip.runtime import Runtime
from drip.settings import Settings
from drip.subscribers.tag_csv import tag_csv_file
from drip.subscribers.tags import add_tags

COURSE_DIR = REPO / "content" / "lessons" / "glute-accelerator"
CSV_TAG, EVENT_TAG = "5k-plan", "hill-week"
TARGET_CSV_S = 30.0
TARGET_EVENTS_PER_S = 5_000


def write_content(target: Path) -> None:
    """The course, and two copies of it started by the tags :data:`CSV_TAG` and
    :data:`EVENT_TAG`."""
    shutil.copytree(COURSE_DIR, target / COURSE_DIR.name)
    for slug, tag in ((f"seq-{CSV_TAG}", CSV_TAG), (f"seq-{EVENT_TAG}", EVENT_TAG)):
        trigger = f'[[triggers]]\non = "tag_added"\ntag = "{tag}"\n'
        copy_sequence(COURSE_DIR, target / slug, slug, rules=trigger)


def load_active(engine: Engine, count: int) -> None:
    """``count`` active subscribers, in no sequence, addresses ``runner<i>@example.com``."""
    with engine.begin() as conn:
        insert_active_subscribers(conn, count)
        conn.execute(text("analyze"))


def write_csv(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["email", "first_name"])
        out.writerows([f"runner{i}@example.com", f"Runner{i}"] for i in range(1, count + 1))


def enrolled(rt: Runtime, slug: str) -> int:
    with rt.sessions() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Enrollment).where(Enrollment.sequence == slug)
            )
            or 0
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--per-transaction", type=int, default=100)
    parser.add_argument("--api-events", type=int, default=1_000)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "DRIP_BENCH_DATABASE_URL",
            "postgresql+psycopg://postgres@127.0.0.1:5432/drip_bench_automations",
        ),
    )
    args = parser.parse_args()
    print(f"setting up {args.subscribers} active subscribers ...", flush=True)
    engine = fresh_database(args.database_url)
    load_active(engine, args.subscribers)
    with tempfile.TemporaryDirectory(prefix="drip-bench-automations-") as tmp:
        content = Path(tmp) / "lessons"
        write_content(content)
        settings = Settings(
            database_url=args.database_url, email_backend="memory", content_dir=content
        )
        rt = Runtime.build(settings, engine=engine, backend=MemoryBackend())
        addresses = Path(tmp) / "addresses.csv"
        write_csv(addresses, args.subscribers)

        started = time.perf_counter()
        report = tag_csv_file(rt, addresses, [CSV_TAG])
        csv_s = time.perf_counter() - started
        assert report.tagged == {CSV_TAG: args.subscribers}, report.tagged
        assert enrolled(rt, f"seq-{CSV_TAG}") == report.enrollments_started == args.subscribers
        print(
            f"csv: {args.subscribers:,} addresses tagged and enrolled in {csv_s:.1f} s "
            f"(target {TARGET_CSV_S:.0f} s)",
            flush=True,
        )

        wanted = 2 * args.events + args.api_events
        with rt.sessions() as session:
            ids = list(session.scalars(select(Subscriber.id).order_by(Subscriber.id).limit(wanted)))
        one_by_one, grouped = ids[: args.events], ids[args.events : 2 * args.events]
        api_events = ids[2 * args.events :]
        now = rt.clock()
        per = args.per_transaction

        started = time.perf_counter()
        for first in range(0, len(one_by_one), per):
            with rt.transaction() as session:
                for sid in one_by_one[first : first + per]:
                    handle(rt, session, "tag_added", EVENT_TAG, [sid], now)
        events_per_s = len(one_by_one) / (time.perf_counter() - started)
        print(
            f"events: {len(one_by_one):,} through handle one by one, {per} per transaction: "
            f"{events_per_s:,.0f}/s (target {TARGET_EVENTS_PER_S:,})",
            flush=True,
        )

        started = time.perf_counter()
        for first in range(0, len(grouped), per):
            with rt.transaction() as session:
                handle(rt, session, "tag_added", EVENT_TAG, grouped[first : first + per], now)
        grouped_per_s = len(grouped) / (time.perf_counter() - started)
        print(
            f"events: {len(grouped):,} through handle, the {per} of a transaction in one call: "
            f"{grouped_per_s:,.0f}/s",
            flush=True,
        )

        started = time.perf_counter()
        with rt.transaction() as session:
            for sid in one_by_one:
                handle(rt, session, "tag_added", "starts-nothing", [sid], now)
        lookup_per_s = len(one_by_one) / (time.perf_counter() - started)
        print(f"events that start and end nothing (the lookups alone): {lookup_per_s:,.0f}/s")

        started = time.perf_counter()
        for sid in api_events:
            with rt.transaction() as session:
                add_tags(rt, session, [sid], [EVENT_TAG], now)
        api_per_s = len(api_events) / (time.perf_counter() - started)
        assert enrolled(rt, f"seq-{EVENT_TAG}") == len(ids)
        print(
            f"events: {len(api_events):,} through add_tags, a transaction each: {api_per_s:,.0f}/s"
        )

    print(
        f"subscribers={args.subscribers} csv_s={csv_s:.1f} "
        f"tagged_per_s={args.subscribers / csv_s:.0f} "
        f"enrolled_per_s={report.enrollments_started / csv_s:.0f} "
        f"events={len(one_by_one)} events_per_s={events_per_s:.0f} "
        f"grouped_events_per_s={grouped_per_s:.0f} lookup_events_per_s={lookup_per_s:.0f} "
        f"api_events_per_s={api_per_s:.0f}"
    )


if __name__ == "__main__":
    main()
