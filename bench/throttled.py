"""Benchmark: sending against a provider that answers 429 above a set rate (issue 12).

    .venv/bin/python bench/throttled.py --subscribers 60000 --rate 2000 [--modes whole,ms,none]

N due subscribers in a fresh PostgreSQL database; the tick claims them and queues send tasks on
Redis; 2 real worker processes send through the official ``sendgrid`` library to the local
SendGrid stand-in, which accepts at most ``--rate`` personalizations a second (a token bucket
holding ``--burst``, by default one second's worth, as SendGrid's limits behave) and answers 429
beyond it. The engine's shared hold (drip.throttle, in the broker's Redis) and the send task's
retries must bring the accepted rate close to the allowed one.

Modes (``--modes``, run in turn, each on a fresh database):

- ``whole``: 429s carry ``Retry-After`` in whole seconds and ``X-RateLimit-Reset`` in epoch
  seconds, as SendGrid sends them;
- ``ms``: ``Retry-After`` to the millisecond (``X-RateLimit-Reset`` stays epoch seconds);
- ``none``: no rate-limit headers at all: the engine's default hold;
- ``off``: no rate limit (the unthrottled throughput of the same set-up, for reference).

Measured from the sink's own timestamps (taken when it accepts a request): the steady accepted
rate is the personalizations accepted after the first second (the bucket's initial burst) until
the last accepted request, over that window. ``unused_s``: seconds of the provider's allowance
that nobody asked for (the bucket was full and overflowed), the shortfall's main cause when the
engine waits too long. Every recipient is then checked: the sink's per-recipient acceptance
counts against the deliveries table; a duplicate, a loss or a row not ``sent`` fails the run.
The last line printed is the figures, as key=value pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from sqlalchemy import func, select, text

from bench.common import (
    Sink,
    cpu_line,
    cpu_seconds_by_group,
    fresh_database,
    load_subscribers,
    process_tree,
)
from drip.engine.claim import tick
from drip.esp.memory import MemoryBackend
from drip.models import Delivery, DeliveryStatus
from drip.runtime import Runtime
from drip.settings import Settings
from tests.worker_harness import WorkerProcess, client, worker_env

TIMELINE_PATH = "/_bench/timeline"
ACCEPTANCE_PATH = "/_bench/acceptance"
MODES = ("whole", "ms", "none", "off")
RETRYING = re.compile(r"retrying (\d+) deliveries in ([\d.]+)s")


# -- the sink, with timestamps -------------------------------------------------------------------


def serve_sink(argv: list[str]) -> None:
    """The stand-in with a timeline: when each request was accepted (and how many
    personalizations), when each 429 went out; and the per-recipient acceptance counts."""
    from tests.fakes.sendgrid_sink import SendGridSink, _Handler, serve

    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--burst", type=float, default=None)
    parser.add_argument("--mode", choices=MODES, default="whole")
    args = parser.parse_args(argv)

    class TimedSink(SendGridSink):
        def __init__(self) -> None:
            super().__init__(validate=False, record=True)
            self.accepted_at: list[tuple[float, int]] = []
            self.refused_at: list[float] = []

        def _accept(self, body: dict[str, Any]) -> str:
            message_id = super()._accept(body)
            with self._lock:
                self.accepted_at.append((time.time(), len(body["personalizations"])))
            return message_id

        def _tally(self, status: int) -> None:
            super()._tally(status)
            if status == 429:
                with self._lock:
                    self.refused_at.append(time.time())

    class Handler(_Handler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            sink = self.server.sink
            assert isinstance(sink, TimedSink)
            if path == TIMELINE_PATH:
                with sink._lock:
                    body: Any = {"accepted": sink.accepted_at, "refused": sink.refused_at}
            elif path == ACCEPTANCE_PATH:
                body = [[email, key, n] for (email, key), n in sink.acceptance_counts().items()]
            else:
                super().do_GET()
                return
            self.wfile.write(self._render((200, {}, body)))

    sink = TimedSink()
    if args.rate is not None and args.mode != "off":
        sink.rate_limit(
            args.rate,
            burst=args.burst,
            retry_headers=args.mode != "none",
            whole_seconds=args.mode == "whole",
        )
    serve(sink, handler=Handler)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.load(resp)


# -- figures ---------------------------------------------------------------------------------


def steady_rate(accepted: list[tuple[float, int]], skip: float = 1.0) -> tuple[float, float, int]:
    """(personalizations/s, window seconds, count) after the first ``skip`` seconds until the
    last accepted request."""
    start = accepted[0][0] + skip
    end = accepted[-1][0]
    count = sum(n for t, n in accepted if start < t <= end)
    window = end - start
    return (count / window if window > 0 else float("nan")), window, count


def unused_allowance(
    accepted: list[tuple[float, int]], rate: float, burst: float, start: float, end: float
) -> float:
    """Seconds of allowance the bucket threw away between ``start`` and ``end`` because it was
    full and nobody asked: replays the sink's token bucket over the accepted requests."""
    tokens, last, lost = burst, accepted[0][0], 0.0
    for t, n in accepted:
        fill = tokens + (t - last) * rate
        if t > start:
            # only the part of the overflow that falls inside the window
            over = max(0.0, fill - burst)
            inside = max(0.0, min(over, (t - max(last, start)) * rate))
            lost += inside
        tokens, last = min(burst, fill) - n, t
    if end > last:
        lost += max(0.0, tokens + (end - last) * rate - burst)
    return lost / rate


def loop_reference() -> float:
    """The docs' speed reference for the VM: a pure-Python loop of 10,000,000 additions."""
    code = "import time\nt=time.perf_counter()\ns=0\nfor i in range(10_000_000): s+=i\n"
    code += "print(time.perf_counter()-t)"
    return float(subprocess.run(["python3", "-c", code], capture_output=True, text=True).stdout)


def check_recipients(rt: Runtime, counts: list[list[Any]]) -> dict[str, int]:
    """Each delivery accepted exactly once, every row ``sent``, nothing accepted that we did not
    write. Returns the tallies (all 0 but ``checked`` when it is right)."""
    accepted = {(email, key): n for email, key, n in counts}
    with rt.sessions() as session:
        rows = session.execute(
            text(
                "select lower(s.email), d.message_key, d.status from deliveries d"
                " join subscribers s on s.id = d.subscriber_id"
            )
        ).all()
    ours = {(email, key) for email, key, _ in rows}
    return {
        "checked": len(rows),
        "duplicates": sum(1 for n in accepted.values() if n > 1),
        "lost": sum(1 for email, key, _ in rows if (email, key) not in accepted),
        "not_sent": sum(1 for *_, status in rows if status != DeliveryStatus.SENT),
        "unexpected": sum(1 for k in accepted if k not in ours),
    }


# -- one run ---------------------------------------------------------------------------------


def run_mode(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    loop = loop_reference()
    print(f"[{mode}] loop reference {loop:.2f}s; load {os.getloadavg()[0]:.1f}", flush=True)
    engine = fresh_database(args.database_url)
    load_subscribers(engine, args.subscribers)
    redis.Redis.from_url(args.broker).flushdb()  # the queue and the provider's hold
    settings = Settings(
        database_url=args.database_url,
        send_batch_size=args.batch,
        claim_chunk=5000,
        email_backend="memory",
    )
    rt = Runtime.build(settings, engine=engine, backend=MemoryBackend())
    burst = args.burst or args.rate
    command = [sys.executable, str(Path(__file__).resolve()), "--serve-sink", "--mode", mode]
    command += ["--rate", str(args.rate), "--burst", str(burst)]
    sink = Sink(command)
    env = worker_env(
        database_url=args.database_url,
        broker_url=args.broker,
        sendgrid_url=sink.url,
        extra={"DRIP_SEND_BATCH_SIZE": str(args.batch)},
    )
    log = Path(f"var/bench-throttled-{mode}.log")
    log.parent.mkdir(exist_ok=True)
    log.write_text("")
    worker = WorkerProcess(env, concurrency=args.workers, log=log).start()
    producer = client(args.broker)
    try:
        time.sleep(3)  # let the pool fork before the clock starts
        groups = {
            "tick": [os.getpid()],
            "workers": process_tree(worker.proc.pid),  # type: ignore[union-attr]
            "sink": [sink.proc.pid],
        }
        cpu_before = cpu_seconds_by_group(groups)
        started = time.time()
        report = tick(
            rt,
            datetime.now(UTC),
            enqueue=lambda ids: producer.send_task("drip.send", args=[ids], queue="drip"),
            max_claims=args.subscribers,
        )
        limit = 120 + 10 * args.subscribers / args.rate
        in_flight = report.claimed
        while in_flight:
            time.sleep(0.25)
            if sink.stats()["personalizations"] >= report.claimed:
                with rt.sessions() as session:
                    in_flight = (
                        session.scalar(
                            select(func.count()).where(
                                Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.SENDING])
                            )
                        )
                        or 0
                    )
            if time.time() - started > limit:
                raise SystemExit(f"[{mode}] gave up after {limit:.0f}s: {sink.stats()}")
        elapsed = time.time() - started
        cpu_after = cpu_seconds_by_group(groups)
    finally:
        worker.stop()
        try:
            stats = sink.stats()
            timeline = _get(sink.url + TIMELINE_PATH)
            counts = _get(sink.url + ACCEPTANCE_PATH)
        finally:
            sink.stop()
    accepted = [(float(t), int(n)) for t, n in timeline["accepted"]]
    refused = [float(t) for t in timeline["refused"]]
    rate, window, _ = steady_rate(accepted)
    start, end = accepted[0][0] + 1.0, accepted[-1][0]
    unused = unused_allowance(accepted, args.rate, burst, start, end) if mode != "off" else 0.0
    retries = [(int(n), float(s)) for n, s in RETRYING.findall(log.read_text(errors="replace"))]
    cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
    check = check_recipients(rt, counts)
    engine.dispose()
    gaps = [b[0] - a[0] for a, b in pairwise(accepted)]
    print(cpu_line("email", cpu, report.claimed, elapsed), flush=True)
    print(
        f"[{mode}] {report.claimed} claimed, {stats['accepted']} requests accepted, "
        f"{stats['rate_limited']} answered 429, {len(retries)} task retries "
        f"(countdown median {statistics.median([s for _, s in retries]) if retries else 0:.2f}s, "
        f"{sum(n for n, _ in retries)} rows), first accept {accepted[0][0] - started:.2f}s after "
        f"the tick, last {accepted[-1][0] - started:.1f}s; gaps between accepted requests: "
        f"median {statistics.median(gaps) if gaps else 0:.2f}s, max {max(gaps, default=0):.2f}s",
        flush=True,
    )
    if refused:
        print(f"[{mode}] 429s in the window: {sum(1 for t in refused if start < t <= end)}")
    return {
        "mode": mode,
        "loop_s": round(loop, 2),
        "allowed_per_s": args.rate,
        "achieved_per_s": round(rate),
        "ratio": round(rate / args.rate, 3),
        "window_s": round(window, 1),
        "unused_s": round(unused, 1),
        "throttled_requests": stats["rate_limited"],
        "accepted_requests": stats["accepted"],
        "task_retries": len(retries),
        "elapsed_s": round(elapsed, 1),
        **check,
    }


def main() -> None:
    if sys.argv[1:2] == ["--serve-sink"]:
        serve_sink(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=60_000)
    parser.add_argument("--rate", type=float, default=2000, help="personalizations/s allowed")
    parser.add_argument("--burst", type=float, default=None, help="default: one second's worth")
    parser.add_argument("--modes", default="whole,ms,none", help=f"of {', '.join(MODES)}")
    parser.add_argument("--workers", type=int, default=2, help="worker pool processes")
    parser.add_argument("--batch", type=int, default=1000, help="delivery ids per send task")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "DRIP_BENCH_DATABASE_URL",
            "postgresql+psycopg://postgres@127.0.0.1:5432/drip_bench_throttled",
        ),
    )
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/9")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes {sorted(unknown)}")

    results = []
    for mode in modes:
        result = run_mode(args, mode)
        print(" ".join(f"{k}={v}" for k, v in result.items()), flush=True)
        results.append(result)
    bad = [r for r in results if r["duplicates"] or r["lost"] or r["not_sent"] or r["unexpected"]]
    summary: dict[str, Any] = {"allowed_per_s": f"{args.rate:g}", "subscribers": args.subscribers}
    for r in results:
        summary[f"ratio_{r['mode']}"] = r["ratio"]
    summary["duplicates"] = sum(r["duplicates"] for r in results)
    summary["lost"] = sum(r["lost"] + r["not_sent"] + r["unexpected"] for r in results)
    print(" ".join(f"{k}={v}" for k, v in summary.items()), flush=True)
    if bad:
        raise SystemExit(f"FAILED: duplicated or lost emails: {bad}")


if __name__ == "__main__":
    main()
