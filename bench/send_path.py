"""Benchmark: CPU per email of the tick and of the send, each alone, in one process.

    .venv/bin/python bench/send_path.py [--subscribers 100000]

The end-to-end benchmark (bench/dispatch.py) runs everything at once on two cores, where the
parts slow each other down and the machine's noise is large. This one runs the same code one
part at a time, in this process, against PostgreSQL and the SendGrid-compatible sink: first the
tick over N due subscribers, then every send batch, and reports for each the Python CPU (this
process) and PostgreSQL CPU (all its server processes) per email. The last line printed is the
figures, as key=value pairs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Sink, cpu_seconds_by_group, fresh_database, load_subscribers
from drip.engine.claim import tick
from drip.engine.dispatch import send_deliveries
from drip.runtime import Runtime
from drip.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000, help="delivery ids per send task")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "DRIP_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/drip_bench"
        ),
    )
    args = parser.parse_args()
    n = args.subscribers
    engine = fresh_database(args.database_url)
    load_subscribers(engine, n)
    sink = Sink()
    settings = Settings(
        database_url=args.database_url,
        claim_chunk=5000,
        send_batch_size=args.batch,
        email_backend="sendgrid",
        sendgrid_api_key="SG.bench",
        sendgrid_api_url=sink.url,
    )
    rt = Runtime.build(settings, engine=engine)
    now = datetime.now(UTC)
    batches: list[list[int]] = []
    figures: dict[str, float] = {}

    def phase(name: str, run: Callable[[], None]) -> None:
        before = cpu_seconds_by_group({"python": [os.getpid()], "sink": [sink.proc.pid]})
        started = time.perf_counter()
        run()
        wall = time.perf_counter() - started
        after = cpu_seconds_by_group({"python": [os.getpid()], "sink": [sink.proc.pid]})
        for part in ("python", "postgres", "sink"):
            figures[f"{name}_{part}_us"] = (after[part] - before[part]) / n * 1e6
        figures[f"{name}_per_s"] = n / wall

    def run_tick() -> None:
        report = tick(rt, now, enqueue=batches.append, max_claims=n)
        assert report.claimed == n, report

    def run_sends() -> None:
        for ids in batches:
            send_deliveries(rt, ids, now)

    try:
        phase("tick", run_tick)
        phase("send", run_sends)
        stats = sink.stats()
    finally:
        sink.stop()
    assert stats["personalizations"] == n, stats
    del figures["tick_sink_us"]  # the tick sends nothing
    print(" ".join(f"{k}={v:.0f}" for k, v in figures.items()) + f" subscribers={n}")


if __name__ == "__main__":
    main()
