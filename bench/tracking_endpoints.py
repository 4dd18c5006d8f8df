"""Benchmark: the open pixel and click redirect under load, every event stored.

    .venv/bin/python bench/tracking_endpoints.py [--requests 60000] [--connections 64]
        [--workers 1] [--drain-during]

The app runs under uvicorn (uvloop + httptools) in a subprocess against PostgreSQL and Redis,
exactly as ``create_app`` wires it; the load comes from bench/loadgen.py in a second process on
loopback (half pixels, half clicks, over thousands of deliveries). Then the Redis stream is
drained into PostgreSQL (timed) and the stored events are counted: ``events_stored`` must equal
``requests`` (warm-up included). ``--drain-during`` also runs a drainer while the load runs, as
a worker would. The last line printed is the figures, as key=value pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from sqlalchemy import func, select, text

from bench.common import REPO, fresh_database
from drip.ingest.stream import drain
from drip.models import TrackingEvent
from drip.runtime import Runtime
from drip.settings import Settings
from drip.tracking.tokens import TrackingSigner

SECRET = "bench-secret-key-0123456789"
PUBLIC = "https://drip.example"
LINKS = ["https://example.com/runners-lab", "https://example.com/blog/glutes?utm_source=drip"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_deliveries(engine: object, count: int) -> None:
    with engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(
            text(
                "insert into subscribers (email, first_name, time_zone, status, source,"
                " course_emails, newsletter, created_at, confirmed_at)"
                " select 'runner' || i || '@example.com', 'Runner', 'America/New_York',"
                " 'active', 'bench', true, true, now(), now() from generate_series(1, :n) i"
            ),
            {"n": count},
        )
        conn.execute(
            text(
                "insert into deliveries (subscriber_id, message_key, kind, sequence, position,"
                " status, attempts, created_at, updated_at, sent_at)"
                " select id, 'runners-lab-upsell/1', 'lesson', 'runners-lab-upsell', 1, 'sent', 1,"
                " now(), now(), now() - interval '1 hour' from subscribers"
            )
        )
        conn.execute(text("analyze"))


def env_for(database_url: str, redis_url: str, stream: str) -> dict[str, str]:
    return {
        **os.environ,
        "DRIP_DATABASE_URL": database_url,
        "DRIP_REDIS_URL": redis_url,
        "DRIP_TRACKING_STREAM": stream,
        "DRIP_SECRET_KEY": SECRET,
        "DRIP_PUBLIC_URL": PUBLIC,
        "DRIP_EMAIL_BACKEND": "memory",
    }


def wait_healthy(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the server exited at start-up")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not answer /healthz in 30 s")


def run_load(port: int, paths: Path, requests: int, connections: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "loadgen.py"), "--port", str(port),
         "--paths", str(paths), "--requests", str(requests), "--connections", str(connections)],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return dict(json.loads(out.stdout))


def measure_signing(samples: int = 20_000) -> float:
    """Microseconds per email to sign two links and the pixel (the send path's extra cost)."""
    from drip.esp.base import Message
    from drip.tracking.links import tracking_substitutions

    signer = TrackingSigner(SECRET, PUBLIC)
    message = Message("k/1", "s", "<p>%%link0%% %%link1%%</p>", "t", "f@x.test", "F",
                      links=tuple(LINKS), open_tracking=True)  # fmt: skip
    started = time.perf_counter()
    for i in range(samples):
        tracking_substitutions(signer, message, i)  # what drip.engine.dispatch adds per recipient
    return (time.perf_counter() - started) / samples * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/drip_bench_tracking"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--requests", type=int, default=60_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--deliveries", type=int, default=5_000)
    parser.add_argument("--drain-during", action="store_true", help="drain while loading")
    args = parser.parse_args()  # fmt: skip

    engine = fresh_database(args.database_url)
    load_deliveries(engine, args.deliveries)
    stream = f"drip:bench:{os.getpid()}"
    signer = TrackingSigner(SECRET, PUBLIC)
    rng = random.Random(5)
    paths = []
    for i in range(20_000):
        delivery_id = rng.randint(1, args.deliveries)
        if i % 2:
            paths.append(f"/t/o/{signer.open_token(delivery_id)}.gif")
        else:
            n = rng.randrange(len(LINKS))
            paths.append(f"/t/c/{signer.click_token(delivery_id, n, LINKS[n])}")
    paths_file = Path(tempfile.mkstemp(suffix=".txt")[1])
    paths_file.write_text("\n".join(paths))

    port = free_port()
    env = env_for(args.database_url, args.redis_url, stream)
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "drip.web.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
         "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"],
        env=env, cwd=REPO,
    )  # fmt: skip
    drainer = None
    try:
        wait_healthy(port, server)
        warm = run_load(port, paths_file, 2_000, args.connections)
        if args.drain_during:
            drainer = subprocess.Popen(
                [sys.executable, "-m", "drip.cli", "tracking", "drain", "--forever"],
                env={**env, "DRIP_TRACKING_DRAIN_SECONDS": "0.5"}, cwd=REPO,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        result = run_load(port, paths_file, args.requests, args.connections)
    finally:
        for proc in (drainer, server):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
        paths_file.unlink()

    settings = Settings(**{  # type: ignore[arg-type]
        "database_url": args.database_url, "redis_url": args.redis_url,
        "tracking_stream": stream, "secret_key": SECRET, "public_url": PUBLIC,
        "email_backend": "memory", "tracking_drain_batch": 5000,
    })  # fmt: skip
    rt = Runtime.build(settings, engine=engine)
    client = redis.Redis.from_url(args.redis_url)
    backlog = int(client.xlen(stream))
    started = time.perf_counter()
    drained = drain(rt, client, reclaim_idle_ms=0)  # the drainer above is dead
    drain_seconds = time.perf_counter() - started
    client.delete(stream)
    client.close()
    with rt.sessions() as session:
        stored = int(session.scalar(select(func.count()).select_from(TrackingEvent)) or 0)
        machine = int(session.scalar(select(func.count()).where(TrackingEvent.machine)) or 0)
    total = int(warm["requests"]) + int(result["requests"])  # type: ignore[call-overload]
    bad = {k: v for k, v in dict(result["statuses"]).items() if k not in ("200", "302")}  # type: ignore[call-overload]
    print(json.dumps({"load": result, "backlog_after_load": backlog, "drained": drained.entries}))
    figures = {
        "requests_per_s": result["requests_per_s"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "requests": total,
        "events_stored": stored,
        "all_stored": stored == total,
        "bad_statuses": sum(bad.values()),
        "machine_events": machine,
        "drain_events_per_s": round(drained.entries / drain_seconds) if drained.entries else 0,
        "sign_us_per_email": round(measure_signing(), 2),
        "workers": args.workers,
        "connections": args.connections,
        "drain_during": args.drain_during,
        "cpus": os.cpu_count(),
    }
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
