"""Benchmark: SendGrid Event Webhook ingestion, signed batches of 1,000 events.

    .venv/bin/python bench/sendgrid_webhook.py [--batches 60] [--duplicate-batches 6]
        [--workers 1] [--threads 2] [--shared-socket]

The app runs under uvicorn in subprocesses against PostgreSQL (``--workers`` processes, each on
a port of its own unless ``--shared-socket``); this process posts signed batches
(ECDSA P-256 over timestamp + body, as SendGrid signs) from threads on loopback: a realistic
mix of event types, most carrying our custom args, some matched by X-Message-Id and address
instead, and a share of batches posted twice (SendGrid retries). The mix of event types is in
``KINDS``/``WEIGHTS``. Every answer must be 200 and
the stored count must equal the unique events. The last line printed is the figures, as
key=value pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select, text

from bench.common import REPO, cpu_line, cpu_seconds_by_group, fresh_database, process_tree
from bench.tracking_endpoints import free_port, wait_healthy
from drip.models import MessageStats, TrackingEvent
from drip.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

BATCH = 1000
# A mix like a real account's (per 100 events): processed and delivered for every email, opens
# and clicks for some, bounces ~2%, spam reports and unsubscribes a fraction of a percent.
KINDS = ["processed", "delivered", "open", "click", "deferred", "bounce", "spamreport",
         "unsubscribe", "group_resubscribe", "dropped"]  # fmt: skip
WEIGHTS = [24, 26, 30, 10, 5, 3, 0.2, 0.5, 0.1, 1.2]
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


def load(engine: object, deliveries: int) -> None:
    with engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(
            text(
                "insert into subscribers (email, first_name, status, source, course_emails,"
                " newsletter, created_at, confirmed_at) select 'runner' || i || '@example.com',"
                " 'Runner', 'active', 'bench', true, true, now(), now()"
                " from generate_series(1, :n) i"
            ),
            {"n": deliveries},
        )
        conn.execute(
            text(
                "insert into deliveries (subscriber_id, message_key, kind, sequence, position,"
                " status, attempts, created_at, updated_at, sent_at, provider_message_id)"
                " select id, 'glute-accelerator/' || (1 + id % 7), 'lesson', 'glute-accelerator',"
                " 1 + id % 7, 'sent', 1, now(), now(), now() - interval '1 hour',"
                " 'msg' || (id / 500) from subscribers"
            )
        )
        conn.execute(text("analyze"))


def event(rng: random.Random, delivery: int, now: int) -> dict[str, object]:
    kind = rng.choices(KINDS, weights=WEIGHTS)[0]
    item: dict[str, object] = {
        "email": f"runner{delivery}@example.com",
        "timestamp": now - rng.randint(0, 3000),
        "event": kind,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": f"msg{delivery // 500}.filterdrecv-5cd5c9b9-dd8hl-1-5F3D5E3A-3.0",
        "category": ["course"],
        "smtp-id": f"<{uuid.uuid4().hex}@ismtpd-555>",
    }
    if rng.random() < 0.9 and kind != "spamreport":  # async reports come without custom args
        item["delivery_id"] = str(delivery)
        item["message_key"] = f"glute-accelerator/{1 + delivery % 7}"
    if kind in ("open", "click"):
        item["useragent"], item["ip"] = UA, "203.0.113.9"
        item["sg_machine_open"] = kind == "open" and rng.random() < 0.3
    if kind == "click":
        item["url"] = "https://example.com/runners-lab"
    if kind == "bounce":
        hard = rng.random() < 0.6
        item.update(type="bounce" if hard else "blocked", status="5.1.1", reason="550 unknown")
    if kind == "dropped":
        item.update(reason="Bounced Address", status="5.0.0")
    if kind in ("delivered", "deferred"):
        item["response"] = "250 OK"
    return item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/drip_bench_webhook"
    )
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--duplicate-batches", type=int, default=6)
    parser.add_argument("--deliveries", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=1, help="app processes")
    parser.add_argument("--shared-socket", action="store_true", help="one uvicorn --workers N")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()  # fmt: skip

    engine = fresh_database(args.database_url)
    load(engine, args.deliveries)
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import base64

    rng = random.Random(7)
    now = int(time.time())
    bodies = []
    for _ in range(args.batches):
        items = [event(rng, rng.randint(1, args.deliveries), now) for _ in range(BATCH)]
        body = json.dumps(items).encode()
        bodies.append(
            (body, {SIGNATURE_HEADER: sign(key, str(now), body), TIMESTAMP_HEADER: str(now)})
        )
    posts = bodies + rng.sample(bodies, args.duplicate_batches)  # SendGrid retrying some
    unique = args.batches * BATCH

    env = {
        **os.environ,
        "DRIP_DATABASE_URL": args.database_url,
        "DRIP_SECRET_KEY": "bench-secret-key-0123456789",
        "DRIP_EMAIL_BACKEND": "memory",
        "DRIP_SENDGRID_WEBHOOK_PUBLIC_KEY": base64.b64encode(public).decode(),
        "DRIP_SENDGRID_WEBHOOK_MAX_AGE": "3600",
    }
    # By default each app process listens on a port of its own and the posting threads take the
    # ports in turn, as a load balancer in front of N app processes would spread them. With
    # --shared-socket, one uvicorn with --workers N: the kernel hands each connection to
    # whichever process accepts first, and two long-lived connections often both land on one
    # process, which then does all the work (one GIL) while the other idles.
    listeners = 1 if args.shared_socket else args.workers
    per_listener = args.workers if args.shared_socket else 1
    ports = [free_port() for _ in range(listeners)]
    command = [sys.executable, "-m", "uvicorn", "drip.web.app:create_app", "--factory",
               "--host", "127.0.0.1", "--workers", str(per_listener), "--loop", "uvloop",
               "--http", "httptools", "--no-access-log", "--log-level", "warning"]  # fmt: skip
    servers = [
        subprocess.Popen([*command, "--port", str(port)], env=env, cwd=REPO) for port in ports
    ]
    statuses: list[int] = []
    latencies: list[float] = []
    lock = threading.Lock()

    def poster(port: int, share: list[tuple[bytes, dict[str, str]]]) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for body, headers in share:
                started = time.perf_counter()
                answer = client.post("/webhooks/sendgrid", content=body, headers=headers)
                with lock:
                    statuses.append(answer.status_code)
                    latencies.append(time.perf_counter() - started)

    try:
        for port, server in zip(ports, servers, strict=True):
            wait_healthy(port, server)
        threads = [
            threading.Thread(target=poster, args=(ports[i % len(ports)], posts[i :: args.threads]))
            for i in range(args.threads)
        ]
        app = [pid for server in servers for pid in process_tree(server.pid)]
        groups = {"server": app, "poster": [os.getpid()]}
        cpu_before = cpu_seconds_by_group(groups)
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        cpu = {k: v - cpu_before[k] for k, v in cpu_seconds_by_group(groups).items()}
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)

    with engine.connect() as conn:
        # SendGrid's events only: each unsubscribe also stores our own "unsubscribed" credit.
        sendgrid = TrackingEvent.provider == "sendgrid"
        stored = int(conn.scalar(select(func.count()).where(sendgrid)) or 0)
        unmatched = int(
            conn.scalar(select(func.count()).where(sendgrid, TrackingEvent.delivery_id.is_(None)))
            or 0
        )
        delivered = int(conn.scalar(select(func.sum(MessageStats.delivered))) or 0)
    latencies.sort()
    posted = len(posts) * BATCH
    print(cpu_line("event", cpu, posted, elapsed), flush=True)
    figures = {
        "events_per_s": round(posted / elapsed),
        "batches": len(posts),
        "events_posted": posted,
        "events_stored": stored,
        "duplicates_dropped": posted - stored,
        "all_unique_stored": stored == unique,
        "non_200": sum(1 for s in statuses if s != 200),
        "unmatched": unmatched,
        "unique_delivered": delivered,
        "batch_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "batch_max_ms": round(latencies[-1] * 1000, 1),
        "workers": args.workers,
        "shared_socket": args.shared_socket,
        "threads": args.threads,
        "cpus": os.cpu_count(),
    }
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
