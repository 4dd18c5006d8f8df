"""Shared set-up for the benchmarks: a fresh PostgreSQL database, the sink, process RSS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, text

from drip.db import make_engine
from drip.migrate import upgrade

REPO = Path(__file__).resolve().parent.parent
ZONES = ("America/New_York", "Europe/London", "Asia/Tokyo", "Australia/Sydney", "America/Denver")


def fresh_database(url: str) -> Engine:
    """Create (or wipe) the database at ``url`` and migrate it."""
    base, _, name = url.rpartition("/")
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.scalar(text("select 1 from pg_database where datname = :n"), {"n": name}):
            conn.execute(text(f'create database "{name}"'))
    admin.dispose()
    engine = make_engine(url, pool_size=5)
    with engine.begin() as conn:
        conn.execute(text("drop schema public cascade; create schema public"))
    upgrade(engine)
    return engine


def insert_active_subscribers(conn: Connection, count: int) -> None:
    """``count`` active subscribers ``runner<i>@example.com``, spread over :data:`ZONES`."""
    zones = "array[" + ",".join(f"'{z}'" for z in ZONES) + "]"
    conn.execute(
        text(
            "insert into subscribers (email, first_name, time_zone, status, source,"
            " course_emails, newsletter, created_at, confirmed_at)"
            f" select 'runner' || i || '@example.com', 'Runner' || i, ({zones})[1 + i % 5],"
            " 'active', 'bench', true, true, now(), now()"
            " from generate_series(1, :n) as i"
        ),
        {"n": count},
    )


def load_subscribers(engine: Engine, count: int, *, due: bool = True) -> None:
    """``count`` active subscribers, each enrolled in the course, due now (or tomorrow)."""
    when = "now() - interval '1 minute'" if due else "now() + interval '1 day'"
    with engine.begin() as conn:
        insert_active_subscribers(conn, count)
        conn.execute(
            text(
                "insert into enrollments (subscriber_id, sequence, position, status,"
                " next_send_at, enrolled_at)"
                f" select id, 'glute-accelerator', 0, 'active', {when}, now() from subscribers"
            )
        )
        conn.execute(text("analyze"))


class Sink:
    """The SendGrid-compatible sink in its own process (so it doesn't share our GIL).

    ``command``: another way to start it (a sink with extra endpoints, a rate limit); it must
    print its base URL as the first line of stdout. Default: the plain sink, ``--no-validate``.
    """

    def __init__(self, command: Sequence[str] | None = None) -> None:
        if command is None:
            sink = REPO / "tests" / "fakes" / "sendgrid_sink.py"
            command = [sys.executable, str(sink), "--no-validate"]
        self.proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/_sink/stats", timeout=5) as resp:
            return dict(json.load(resp))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of one process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds_by_group(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each group of live processes, from /proc.

    Also ``postgres``: every PostgreSQL server process. Take it before and after a run and
    subtract: what each part of the path costs, on a machine where they all share two cores.
    """
    tick = os.sysconf("SC_CLK_TCK")

    def used(pid: int) -> float:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    out = {name: sum(used(pid) for pid in pids) for name, pids in groups.items()}
    postgres = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith("postgres"):
                postgres += used(int(entry))
    out["postgres"] = postgres
    return out


def cpu_line(unit: str, cpu: dict[str, float], count: int, elapsed: float) -> str:
    """``CPU per <unit> (µs): a=.. b=..; machine busy ..%`` from the CPU seconds each group used
    (a difference of two :func:`cpu_seconds_by_group`) over ``count`` items in ``elapsed`` s."""
    parts = " ".join(f"{k}={v / count * 1e6:.0f}" for k, v in cpu.items())
    busy = sum(cpu.values()) / (elapsed * (os.cpu_count() or 1))
    return f"CPU per {unit} (µs): {parts}; machine busy {busy:.0%}"


def bench_slugs(count: int) -> list[str]:
    """The slugs of :func:`copy_course`'s sequences: ``bench-01`` .. ``bench-NN``."""
    width = max(2, len(str(count)))
    return [f"bench-{i:0{width}d}" for i in range(1, count + 1)]


def copy_sequence(
    source: Path, folder: Path, slug: str, *, priority: int = 0, rules: str = ""
) -> None:
    """A copy of the sequence folder ``source`` as ``folder``, with a sequence.toml of its own:
    ``slug`` and a name from it, every day at the course's hour, ``first_lesson =
    "next_send_hour"`` (so that a first lesson due now goes through the one-a-day check,
    drip.engine.claim.one_a_day), ``priority``, then ``rules`` (``[[triggers]]`` tables)."""
    with (source / "sequence.toml").open("rb") as f:
        course = tomllib.load(f)
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("sequence.toml"))
    fields = {
        "slug": slug,
        "name": f"{course['name']} ({slug})",
        "kind": course["kind"],
        "send_hour": course["send_hour"],
        "send_minute": course.get("send_minute", 0),
        "send_days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "first_lesson": "next_send_hour",
        "category": course.get("category", "course"),
        "priority": priority,
    }
    # json.dumps writes strings, integers and lists of strings the way TOML reads them.
    lines = [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    (folder / "sequence.toml").write_text("\n".join(lines) + "\n" + rules, encoding="utf-8")


def copy_course(source: Path, target: Path, count: int) -> list[str]:
    """``count`` copies of the course folder ``source`` under ``target`` (a content directory,
    created), one per :func:`bench_slugs` slug (:func:`copy_sequence`); returns the slugs.
    Priorities are all different (the first copy highest); no triggers or exits: nothing in the
    benchmark signs up."""
    slugs = bench_slugs(count)
    for rank, slug in enumerate(slugs):
        copy_sequence(source, target / slug, slug, priority=count - rank)
    return slugs


def load_spread_subscribers(engine: Engine, count: int, slugs: Sequence[str]) -> None:
    """``count`` active subscribers spread evenly over the sequences ``slugs`` (two or more).

    Subscriber ``i`` is due now in one sequence (``slugs[i % n]``, first lesson) and enrolled
    in the next one (``slugs[(i + 1) % n]``) with its first lesson sent 26 hours ago and the
    next one due tomorrow: a row :func:`drip.engine.claim._sent_today` reads for every
    subscriber it claims, from another local day, so that every subscriber still gets one email.
    """
    if len(slugs) < 2:
        raise ValueError("load_spread_subscribers needs two sequences or more")
    names = "array[" + ",".join(f"'{s}'" for s in slugs) + "]"
    with engine.begin() as conn:
        insert_active_subscribers(conn, count)
        conn.execute(
            text(
                "insert into enrollments (subscriber_id, sequence, position, status,"
                " next_send_at, enrolled_at)"
                f" select id, ({names})[1 + id % :k], 0, 'active',"
                " now() - interval '1 minute', now() from subscribers"
            ),
            {"k": len(slugs)},
        )
        conn.execute(
            text(
                "insert into enrollments (subscriber_id, sequence, position, status,"
                " next_send_at, enrolled_at, last_sent_at)"
                f" select id, ({names})[1 + (id + 1) % :k], 1, 'active',"
                " now() + interval '1 day', now() - interval '2 days',"
                " now() - interval '26 hours' from subscribers"
            ),
            {"k": len(slugs)},
        )
        conn.execute(text("analyze"))
