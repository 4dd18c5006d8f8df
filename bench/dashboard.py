"""Benchmark: the dashboard's pages at 1,000,000 subscribers (PostgreSQL).

    .venv/bin/python bench/dashboard.py [--subscribers 1000000] [--url postgresql+psycopg://...]

Loads the subscribers with generate_series (about a minute): statuses 90% active, 4% pending,
5% unsubscribed, 1% erased; signups spread over the last 180 days (so the growth chart's window
holds every one of them: the worst case); 10% tagged ``5k``, 1% ``trail``; course enrollments in
every state; 1,000 suppressed addresses. Then signs in through the real form and times each page
as a browser asks for it (in-process ASGI client): ``cold`` with the figures cache emptied (every
count runs: once a minute per web process), ``warm`` the median of 4 more requests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, text

from bench.common import REPO, fresh_database
from drip.clock import system_clock
from drip.esp.memory import MemoryBackend
from drip.runtime import Runtime
from drip.settings import Settings
from drip.web.dashboard.cache import FigureCache

LOAD = [
    """
    insert into subscribers (email, first_name, time_zone, status, source, course_emails,
        newsletter, created_at, confirmed_at, unsubscribed_at)
    select case when i % 100 = 0 then null else 'runner' || i || '@example.com' end,
        case when i % 100 = 0 then '' else 'Runner' || (i % 5000) end,
        'America/New_York',
        case when i % 100 = 0 then 'erased' when i % 20 = 1 then 'unsubscribed'
             when i % 25 = 2 then 'pending' else 'active' end,
        'bench', true, true,
        now() - (i % 180) * interval '1 day',
        case when i % 25 = 2 then null else now() - (i % 180) * interval '1 day' end,
        case when i % 20 = 1 then now() else null end
    from generate_series(1, :n) as i
    """,
    "insert into tags (name) values ('5k'), ('trail')",
    """
    insert into subscriber_tags (subscriber_id, tag_id)
    select s.id, t.id from subscribers s join tags t on t.name = '5k' where s.id % 10 = 3
    union all
    select s.id, t.id from subscribers s join tags t on t.name = 'trail' where s.id % 100 = 7
    """,
    """
    insert into enrollments (subscriber_id, sequence, position, status, stop_reason, enrolled_at)
    select id, 'glute-accelerator', id % 8,
        case when status = 'unsubscribed' then 'stopped' when id % 8 = 7 then 'completed'
             else 'active' end,
        case when status = 'unsubscribed' then 'unsubscribed' else null end, created_at
    from subscribers where status in ('active', 'unsubscribed')
    """,
    """
    insert into suppressions (email_hash, reason, created_at)
    select md5('suppressed' || i) || md5('x' || i), 'bounce', now()
    from generate_series(1, 1000) as i
    """,
    "analyze",
]
PAGES = [
    "/admin",
    "/admin?by=day",
    "/admin/course",
    "/admin/subscribers",
    "/admin/subscribers?status=pending",
    "/admin/subscribers?status=erased",
    "/admin/subscribers?tag=trail",
    "/admin/subscribers?state=completed_course",
    "/admin/subscribers?q=runner4242",
    "/admin/subscribers?q=runner4242@example.com",
    "/admin/subscribers?q=nobody-like-this",
    "/admin/subscribers?after=900000",
    "/admin/subscribers/500000",
    "/admin/broadcasts",
    "/admin/broadcasts/new",
]


def load(engine: Engine, count: int) -> None:
    with engine.begin() as conn:
        for sql in LOAD:
            conn.execute(text(sql), {"n": count})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument(
        "--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/drip_bench_dashboard"
    )
    args = parser.parse_args()
    from tests.dashboard_support import client, make_admin, page_token, sign_in

    engine = fresh_database(args.url)
    started = time.perf_counter()
    load(engine, args.subscribers)
    print(f"loaded {args.subscribers} subscribers in {time.perf_counter() - started:.0f} s")
    tmp = Path(tempfile.mkdtemp())
    settings = Settings(
        database_url=args.url,
        email_backend="memory",
        secret_key="bench-secret-key-0123456789",
        public_url="https://bench.example",
        content_dir=REPO / "content" / "lessons",
        templates_dir=REPO / "templates",
        outbox_dir=tmp,
    )
    rt = Runtime.build(settings, engine=engine, backend=MemoryBackend(), clock=system_clock)
    make_admin(rt)
    http = client(rt)
    assert sign_in(http).status_code == 303
    for path in PAGES:
        http.app.state.dashboard_cache = FigureCache(rt.clock, 60)  # nothing cached yet
        times = []
        for _ in range(5):
            began = time.perf_counter()
            answer = http.get(path)
            times.append((time.perf_counter() - began) * 1000)
            assert answer.status_code == 200, (path, answer.status_code)
        print(f"{path:48s} cold {times[0]:7.1f} ms  warm {statistics.median(times[1:]):7.1f} ms")
    token = page_token(http.get("/admin/broadcasts/new").text)
    for fields in ({}, {"tags_any": "trail"}):
        began = time.perf_counter()
        answer = http.post(
            "/admin/api/broadcasts/audience", data=fields, headers={"X-CSRF-Token": token}
        )
        took = (time.perf_counter() - began) * 1000
        print(f"live audience count {fields!s:28s} {took:7.1f} ms  ({answer.json()['count']})")
    engine.dispose()


if __name__ == "__main__":
    main()
