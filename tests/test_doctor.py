"""``drip doctor``: each check passing and failing, the skips, the exit code and ``--json``.

Everything runs against real local servers: PostgreSQL, Redis database 4, the SendGrid sink, a
DNS server on loopback (tests/fakes/dns_server.py), a small HTTP server for ``/healthz``, and for
one test a real Celery worker.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from click.testing import CliRunner, Result
from sqlalchemy import Engine, text

from drip.cli.doctor import ping_workers
from drip.cli.main import main
from drip.clock import FrozenClock, system_clock
from drip.db import make_engine
from drip.errors import SettingsError
from drip.esp.memory import MemoryBackend
from drip.ingest.stream import OPEN, entry
from drip.migrate import upgrade
from drip.reports.doctor import (
    beat,
    configuration,
    content,
    database,
    sending,
    services,
    tracking,
)
from drip.reports.doctor.beat import BEAT_KEY, last_beat_tick, record_beat_tick
from drip.reports.doctor.checklist import CHECKS, check_dkim_records, diagnose
from drip.reports.doctor.dns_lookup import make_resolver
from drip.reports.doctor.findings import Finding, Status, ok
from drip.reports.doctor.mail_dns import check_dkim, check_dmarc, check_domain, check_spf
from drip.reports.doctor.runner import Check, Context, run_checks
from drip.runtime import Runtime
from drip.settings import Settings, get_settings, load_settings, parse_nameserver
from tests.conftest import REPO, START, make_settings
from tests.fakes.dns_server import DnsServer
from tests.fakes.sendgrid_sink import SendGridSink
from tests.tracking_support import new_key, public_b64
from tests.worker_harness import WorkerProcess, wait_for, worker_env

DOMAIN = "drip.test"  # make_settings' DRIP_FROM_EMAIL is coach@drip.test
GOOD_DNS = {
    DOMAIN: {"TXT": ["google-site-verification=abc123", "v=spf1 include:sendgrid.net ~all"]},
    f"s1._domainkey.{DOMAIN}": {"CNAME": ["s1.domainkey.u1234.wl123.sendgrid.net."]},
    f"s2._domainkey.{DOMAIN}": {"CNAME": ["s2.domainkey.u1234.wl123.sendgrid.net."]},
    f"_dmarc.{DOMAIN}": {"TXT": ["v=DMARC1; p=reject; rua=mailto:dmarc@drip.test"]},
}
NAMES = ["settings", *(check.name for check in CHECKS)]
PROBLEM_LINE = re.compile(r"^\S+:\d+: \S")


# --------------------------------------------------------------------------- helpers


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def no_workers(settings: Settings, timeout: float) -> list[str]:
    return []


def context(tmp_path: Path, *, clock: FrozenClock | None = None, **overrides: Any) -> Context:
    return Context(
        make_settings(tmp_path, **overrides),
        ping_workers=no_workers,
        clock=clock or FrozenClock(START),
        worker_timeout=0.5,
    )


def pg_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


class HealthServer:
    """A local web app stand-in: ``GET /healthz`` answers ``status`` (200 until changed)."""

    def __init__(self) -> None:
        self.status = 200
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code = owner.status if self.path == "/healthz" else 404
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HealthServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()


def drip(args: list[str], env: dict[str, str]) -> Result:
    """``drip *args`` in-process with exactly ``env`` as the DRIP_* settings."""
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(main, args, env=env)
    finally:
        get_settings.cache_clear()


@pytest.fixture
def redis4(redis_url: str) -> Iterator[str]:
    """Redis database 4 on the test server, without a beat record before and after."""
    url = urlunsplit(urlsplit(redis_url)._replace(path="/4"))
    client = redis.Redis.from_url(url)
    client.delete(BEAT_KEY)
    yield url
    client.delete(BEAT_KEY)
    client.close()


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer(GOOD_DNS) as server:
        yield server


@pytest.fixture
def web() -> Iterator[HealthServer]:
    with HealthServer() as server:
        yield server


# --------------------------------------------------------------------------- settings


def test_valid_settings_pass(tmp_path: Path) -> None:
    settings, finding = configuration.load_checked(lambda: make_settings(tmp_path))
    assert settings is not None
    assert finding.status is Status.OK


def test_bad_settings_fail_naming_each_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIP_PUBLIC_URL", "ftp://drip.test")
    monkeypatch.setenv("DRIP_DNS_NAMESERVER", "dns.example.com")
    settings, finding = configuration.load_checked(load_settings)
    assert settings is None
    assert finding.status is Status.FAIL
    lines = finding.detail.splitlines()
    assert [line.split(":")[0] for line in lines] == ["DRIP_PUBLIC_URL", "DRIP_DNS_NAMESERVER"]
    assert "must be an IP address" in lines[1]
    assert finding.fix is not None and "DRIP_*" in finding.fix


def test_bad_settings_skip_every_other_check() -> None:
    results = diagnose(_raise_settings_error, ping_workers=no_workers)
    assert [r.check for r in results] == NAMES
    assert results[0].status is Status.FAIL
    assert {r.status for r in results[1:]} == {Status.SKIP}
    assert results[1].detail == "needs settings, which did not pass"


def _raise_settings_error() -> Settings:
    raise SettingsError("invalid configuration:\n  DRIP_PUBLIC_URL: must be an absolute URL")


def test_the_development_secret_key_fails(tmp_path: Path) -> None:
    default = Settings.model_fields["secret_key"].default.get_secret_value()
    finding = configuration.check_secret_key(context(tmp_path, secret_key=default))
    assert finding.status is Status.FAIL
    assert finding.detail.startswith("DRIP_SECRET_KEY:")
    assert configuration.check_secret_key(context(tmp_path)).status is Status.OK


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1", ("127.0.0.1", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
     ("::1", ("::1", 53)), ("[::1]:5353", ("::1", 5353))],
)  # fmt: skip
def test_nameserver_setting_takes_an_address_and_a_port(
    value: str, expected: tuple[str, int]
) -> None:
    assert parse_nameserver(value) == expected


@pytest.mark.parametrize("value", ["dns.example.com", "127.0.0.1:0", "127.0.0.1:x", "[::1"])
def test_nameserver_setting_refuses_anything_else(value: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(value)


def test_dkim_selectors_are_comma_separated_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIP_DKIM_SELECTORS", " em1, em2 ")
    assert load_settings().dkim_selectors == ("em1", "em2")
    monkeypatch.setenv("DRIP_DKIM_SELECTORS", "s1,not a selector")
    with pytest.raises(Exception, match="DRIP_DKIM_SELECTORS"):
        load_settings()


# --------------------------------------------------------------------------- runner


def test_a_check_that_raises_becomes_a_failed_line_and_its_dependents_skip(
    tmp_path: Path,
) -> None:
    def boom(_: Context) -> Finding:
        raise RuntimeError("the wire is cut\nsecond line of noise")

    checks = [
        Check("first", boom),
        Check("second", lambda _: ok("fine"), needs=("first",)),
        Check("third", lambda _: ok("fine")),
    ]
    first, second, third = run_checks(checks, context(tmp_path))
    assert first.status is Status.FAIL
    assert first.detail.endswith("RuntimeError: the wire is cut")
    assert (second.status, second.detail) == (Status.SKIP, "needs first, which did not pass")
    assert third.status is Status.OK


# --------------------------------------------------------------------------- database


def head_revision() -> str:
    """The newest migration, by its file name (``NNNN_what.py``): each release adds one."""
    versions = REPO / "drip" / "migrations" / "versions"
    return max(p.name[:4] for p in versions.glob("[0-9][0-9][0-9][0-9]_*.py"))


@pytest.mark.postgres
def test_a_database_at_head_passes(tmp_path: Path, pg_engine: Engine) -> None:
    ctx = context(tmp_path, database_url=pg_url(pg_engine))
    assert database.check_database(ctx).status is Status.OK
    migrations = database.check_migrations(ctx)
    assert migrations.status is Status.OK
    assert migrations.detail == f"the schema is at the head revision {head_revision()}"


def test_an_unmigrated_database_fails_with_the_upgrade_command(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite3"
    sqlite3.connect(path).close()
    ctx = context(tmp_path, database_url=f"sqlite:///{path}")
    assert database.check_database(ctx).status is Status.OK
    finding = database.check_migrations(ctx)
    assert finding.status is Status.FAIL
    assert "no drip schema" in finding.detail
    assert finding.fix is not None and "drip db upgrade" in finding.fix


def test_a_database_behind_and_one_ahead_of_the_scripts_fail(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine, "0006")
    behind = database.check_migrations(context(tmp_path, database_url=url))
    assert behind.status is Status.FAIL
    assert behind.detail == (
        f"the database is at revision 0006; this release's head is {head_revision()}"
    )
    with engine.begin() as conn:
        conn.execute(text("update alembic_version set version_num = '9999'"))
    engine.dispose()
    ahead = database.check_migrations(context(tmp_path, database_url=url))
    assert ahead.status is Status.FAIL
    assert "9999, which this release does not have" in ahead.detail


def test_a_wrong_database_url_fails_without_its_password_and_skips_migrations(
    tmp_path: Path,
) -> None:
    url = f"postgresql+psycopg://drip:hunter2@127.0.0.1:{closed_port()}/drip"
    results = run_checks(
        [c for c in CHECKS if c.name in ("database", "migrations")],
        context(tmp_path, database_url=url),
    )
    assert [r.status for r in results] == [Status.FAIL, Status.SKIP]
    assert results[0].detail.startswith("DRIP_DATABASE_URL: cannot connect to")
    assert "hunter2" not in results[0].detail
    assert "Traceback" not in results[0].detail


def test_a_missing_sqlite_file_fails_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "drip.sqlite3"
    finding = database.check_database(context(tmp_path, database_url=f"sqlite:///{path}"))
    assert finding.status is Status.FAIL
    assert str(path) in finding.detail
    assert not path.exists()


# --------------------------------------------------------------------------- redis and broker


@pytest.mark.redis
def test_redis_and_broker_reachable_pass(tmp_path: Path, redis4: str) -> None:
    ctx = context(tmp_path, redis_url=redis4, broker_url=redis4)
    assert services.check_redis(ctx).status is Status.OK
    assert services.check_broker(ctx).status is Status.OK


def test_redis_and_broker_on_a_closed_port_fail_naming_the_setting(tmp_path: Path) -> None:
    url = f"redis://:sekrit@127.0.0.1:{closed_port()}/4"
    ctx = context(tmp_path, redis_url=url, broker_url=url)
    for check, setting in [(services.check_redis, "DRIP_REDIS_URL"),
                           (services.check_broker, "DRIP_BROKER_URL")]:  # fmt: skip
        finding = check(ctx)
        assert finding.status is Status.FAIL
        assert finding.detail.startswith(f"{setting}: Redis at 127.0.0.1:")
        assert "sekrit" not in finding.detail


# --------------------------------------------------------------------------- worker


@pytest.mark.redis
def test_no_worker_fails_within_the_timeout(tmp_path: Path, redis4: str) -> None:
    ctx = Context(
        make_settings(tmp_path, broker_url=redis4), ping_workers=ping_workers, worker_timeout=0.5
    )
    started = time.monotonic()
    finding = services.check_worker(ctx)
    assert time.monotonic() - started < 5
    assert finding.status is Status.FAIL
    assert "no worker answered a ping within 0.5 s" in finding.detail


# --------------------------------------------------------------------------- beat


@pytest.mark.redis
def test_a_recent_tick_passes_a_stale_or_absent_one_fails(tmp_path: Path, redis4: str) -> None:
    ctx = context(tmp_path, redis_url=redis4, clock=FrozenClock(START + timedelta(seconds=30)))
    absent = beat.check_beat(ctx)
    assert absent.status is Status.FAIL
    assert "no drip tick recorded" in absent.detail
    record_beat_tick(redis4, START)
    recent = beat.check_beat(ctx)
    assert (recent.status, recent.detail) == (
        Status.OK,
        "the drip tick ran 30 s ago; beat fires it every 60 s",
    )
    stale = beat.check_beat(
        context(tmp_path, redis_url=redis4, clock=FrozenClock(START + timedelta(hours=3)))
    )
    assert stale.status is Status.FAIL
    assert "last ran 3 h 0 min ago" in stale.detail
    assert stale.fix is not None and "drip beat" in stale.fix


def test_recording_a_tick_without_redis_does_not_raise() -> None:
    record_beat_tick(f"redis://127.0.0.1:{closed_port()}/4", START)


@pytest.mark.redis
def test_the_tick_task_records_its_run(
    tmp_path: Path, redis4: str, sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.tasks

    clock = FrozenClock(START)
    rt = Runtime.build(
        make_settings(tmp_path, redis_url=redis4),
        engine=sqlite_engine,
        backend=MemoryBackend(clock=clock),
        clock=clock,
    )
    monkeypatch.setattr(workers.tasks, "_runtime", rt)
    workers.tasks.tick_task()
    client = redis.Redis.from_url(redis4)
    assert last_beat_tick(client) == START
    client.close()


# --------------------------------------------------------------------------- tracking drain


@pytest.fixture
def tracking_stream(redis_url: str) -> Iterator[str]:
    """A stream of its own in the test Redis, deleted afterwards."""
    name = f"drip:test-doctor:{uuid.uuid4().hex}"
    yield name
    client = redis.Redis.from_url(redis_url)
    client.delete(name)
    client.close()


def _waiting(redis_url: str, stream: str, *ages: int) -> None:
    """Open entries that Redis took ``ages`` seconds before START (in increasing id order)."""
    client = redis.Redis.from_url(redis_url)
    for age in sorted(ages, reverse=True):
        millis = int((START - timedelta(seconds=age)).timestamp() * 1000)
        fields = entry(OPEN, 1, at=START, ip=None, user_agent=None)
        client.xadd(stream, fields, id=f"{millis}-0")  # type: ignore[arg-type]
    client.close()


def test_an_empty_tracking_stream_passes(
    tmp_path: Path, redis_url: str, tracking_stream: str
) -> None:
    ctx = context(tmp_path, redis_url=redis_url, tracking_stream=tracking_stream)
    finding = tracking.check_drain(ctx)
    assert finding == ok(
        f"no open or click waits to be stored (Redis stream {tracking_stream}); "
        "the drain runs every 2 s"
    )


def test_a_drain_keeping_up_passes_with_the_backlog(
    tmp_path: Path, redis_url: str, tracking_stream: str
) -> None:
    _waiting(redis_url, tracking_stream, 30, 1)
    finding = tracking.check_drain(
        context(tmp_path, redis_url=redis_url, tracking_stream=tracking_stream)
    )
    assert finding.status is Status.OK
    assert finding.detail.startswith("2 opens and clicks wait to be stored, the oldest for 30 s")


def test_a_backlog_older_than_a_minute_warns_with_what_to_do(
    tmp_path: Path, redis_url: str, tracking_stream: str
) -> None:
    _waiting(redis_url, tracking_stream, 61, 20, 3)
    ctx = context(tmp_path, redis_url=redis_url, tracking_stream=tracking_stream)
    finding = tracking.check_drain(ctx)
    assert finding.status is Status.WARN
    assert finding.detail.startswith("3 opens and clicks wait to be stored, the oldest for 61 s")
    assert finding.fix is not None and "`drip tracking drain`" in finding.fix
    # 60 s is still within the limit: the warning starts past it.
    at_limit = context(
        tmp_path,
        redis_url=redis_url,
        tracking_stream=tracking_stream,
        clock=FrozenClock(START - timedelta(seconds=1)),
    )
    assert tracking.check_drain(at_limit).status is Status.OK


def test_a_slow_drain_setting_waits_three_of_its_runs(
    tmp_path: Path, redis_url: str, tracking_stream: str
) -> None:
    assert tracking.stalled_after(2) == 60
    assert tracking.stalled_after(60) == 180
    _waiting(redis_url, tracking_stream, 150)
    slow = dict(redis_url=redis_url, tracking_stream=tracking_stream, tracking_drain_seconds=60)
    assert tracking.check_drain(context(tmp_path, **slow)).status is Status.OK
    assert (
        tracking.check_drain(
            context(tmp_path, **slow, clock=FrozenClock(START + timedelta(seconds=31)))
        ).status
        is Status.WARN
    )


def test_the_deploy_guide_describes_every_check_in_order() -> None:
    guide = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    table = guide.split("| check | passes when | when it fails |", 1)[1].split("\n\n", 1)[0]
    assert re.findall(r"^\| `([a-z-]+)` \|", table, re.M) == NAMES


# --------------------------------------------------------------------------- content


def test_the_course_passes(tmp_path: Path) -> None:
    finding = content.check_content(context(tmp_path))
    assert finding.status is Status.OK
    assert "'glute-accelerator'" in finding.detail


def test_broken_content_fails_with_every_problem_as_path_line_message(tmp_path: Path) -> None:
    broken = REPO / "tests" / "fixtures" / "content" / "broken"
    finding = content.check_content(context(tmp_path, content_dir=broken))
    assert finding.status is Status.FAIL
    first, *problems = finding.detail.splitlines()
    assert first.startswith("DRIP_CONTENT_DIR: ")
    assert len(problems) >= 6  # one folder per kind of breakage, at least one problem each
    assert all(PROBLEM_LINE.match(line) for line in problems), problems


def test_a_course_sequence_not_in_the_content_fails(tmp_path: Path) -> None:
    finding = content.check_content(context(tmp_path, course_sequence="no-such-course"))
    assert finding.status is Status.FAIL
    assert finding.detail.startswith("DRIP_COURSE_SEQUENCE: no sequence 'no-such-course'")


# --------------------------------------------------------------------------- email backend


def sendgrid_context(tmp_path: Path, url: str, **overrides: Any) -> Context:
    values: dict[str, Any] = {"sendgrid_api_key": "SG.test-key", "sendgrid_api_url": url}
    return context(tmp_path, email_backend="sendgrid", **{**values, **overrides})


def test_a_sendgrid_key_that_may_send_passes(tmp_path: Path, sink: SendGridSink) -> None:
    finding = sending.check_backend(sendgrid_context(tmp_path, sink.url))
    assert finding.status is Status.OK
    assert sink.stats()["scopes_requests"] == 1
    assert sink.stats()["attempts"] == 0  # a probe sends nothing


def test_a_revoked_sendgrid_key_fails(tmp_path: Path, sink: SendGridSink) -> None:
    sink.revoke_key()
    finding = sending.check_backend(sendgrid_context(tmp_path, sink.url))
    assert finding.status is Status.FAIL
    assert finding.detail == "DRIP_SENDGRID_API_KEY: SendGrid refused the key (401)"
    assert finding.fix is not None and finding.fix.startswith("create a key with Mail Send")


def test_a_sendgrid_key_without_mail_send_fails(tmp_path: Path, sink: SendGridSink) -> None:
    sink.set_scopes(["alerts.read", "user.profile.read"])
    finding = sending.check_backend(sendgrid_context(tmp_path, sink.url))
    assert finding.status is Status.FAIL
    assert finding.detail == (
        "DRIP_SENDGRID_API_KEY: the key may not send email (no mail.send scope)"
    )


def test_sendgrid_without_a_key_or_unreachable_fails(tmp_path: Path) -> None:
    missing = sending.check_backend(
        sendgrid_context(tmp_path, "https://api.sendgrid.com", sendgrid_api_key=None)
    )
    assert missing.status is Status.FAIL
    assert missing.detail.startswith("DRIP_SENDGRID_API_KEY: required")
    gone = sending.check_backend(sendgrid_context(tmp_path, f"http://127.0.0.1:{closed_port()}"))
    assert gone.status is Status.FAIL
    assert gone.detail.startswith("DRIP_SENDGRID_API_URL: no answer from http://127.0.0.1:")


def test_the_sandbox_warns(tmp_path: Path, sink: SendGridSink) -> None:
    finding = sending.check_backend(sendgrid_context(tmp_path, sink.url, sendgrid_sandbox=True))
    assert finding.status is Status.WARN
    assert finding.fix == "set DRIP_SENDGRID_SANDBOX=false"


def test_the_outbox_is_skipped_with_a_note_and_a_dead_smtp_relay_fails(tmp_path: Path) -> None:
    outbox = sending.check_backend(context(tmp_path, email_backend="outbox"))
    assert outbox.status is Status.SKIP
    assert "DRIP_EMAIL_BACKEND=outbox sends no email" in outbox.detail
    smtp = sending.check_backend(
        context(tmp_path, email_backend="smtp", smtp_port=closed_port(), smtp_timeout=2)
    )
    assert smtp.status is Status.FAIL
    assert smtp.fix is not None and "DRIP_SMTP_HOST" in smtp.fix


# --------------------------------------------------------------------------- SPF, DKIM, DMARC


def test_sendgrid_ready_dns_passes(dns_server: DnsServer) -> None:
    resolver = make_resolver(dns_server.nameserver)
    assert check_domain(DOMAIN, resolver) == ok("DNS answers for drip.test")
    assert check_spf(DOMAIN, resolver).status is Status.OK
    dkim = check_dkim(DOMAIN, resolver)
    assert dkim.status is Status.OK
    assert "s1._domainkey.drip.test, s2._domainkey.drip.test" in dkim.detail
    assert check_dmarc(DOMAIN, resolver) == ok("DMARC of drip.test: p=reject")


def test_missing_records_fail_naming_each_record(dns_server: DnsServer) -> None:
    dns_server.set_records({DOMAIN: {"MX": ["10 mx.drip.test."]}})
    resolver = make_resolver(dns_server.nameserver)
    spf = check_spf(DOMAIN, resolver)
    assert (spf.status, spf.detail) == (
        Status.FAIL,
        "no SPF record at drip.test (a TXT record starting v=spf1)",
    )
    dkim = check_dkim(DOMAIN, resolver)
    assert dkim.status is Status.FAIL
    assert dkim.detail == "no CNAME at s1._domainkey.drip.test; no CNAME at s2._domainkey.drip.test"
    dmarc = check_dmarc(DOMAIN, resolver)
    assert (dmarc.status, dmarc.detail) == (Status.FAIL, "no DMARC record at _dmarc.drip.test")


def test_spf_without_sendgrid_fails_with_what_to_add(dns_server: DnsServer) -> None:
    dns_server.set_records({DOMAIN: {"TXT": ["v=spf1 include:_spf.google.com -all"]}})
    finding = check_spf(DOMAIN, make_resolver(dns_server.nameserver))
    assert finding.status is Status.FAIL
    assert finding.detail == "SPF of drip.test does not include sendgrid.net"
    assert finding.fix is not None
    assert finding.fix.startswith("add include:sendgrid.net to the TXT record")
    assert ("_spf.google.com", "TXT") in dns_server.queries  # the include was followed


def test_spf_reaching_sendgrid_through_an_include_passes(dns_server: DnsServer) -> None:
    dns_server.set_records(
        {
            DOMAIN: {"TXT": ["v=spf1 mx include:_spf.drip.test ~all"]},
            f"_spf.{DOMAIN}": {"TXT": ["v=spf1 ip4:192.0.2.1 include:sendgrid.net ~all"]},
        }
    )
    finding = check_spf(DOMAIN, make_resolver(dns_server.nameserver))
    assert finding == ok("SPF of drip.test includes sendgrid.net (through _spf.drip.test)")


def test_two_spf_records_and_a_softfail_include_fail(dns_server: DnsServer) -> None:
    resolver = make_resolver(dns_server.nameserver)
    dns_server.set_records({DOMAIN: {"TXT": ["v=spf1 include:sendgrid.net ~all", "v=spf1 mx"]}})
    assert "has 2 SPF records" in check_spf(DOMAIN, resolver).detail
    dns_server.set_records({DOMAIN: {"TXT": ["v=spf1 ~include:sendgrid.net -all"]}})
    assert check_spf(DOMAIN, resolver).status is Status.FAIL


def test_a_looping_include_ends(dns_server: DnsServer) -> None:
    dns_server.set_records({DOMAIN: {"TXT": [f"v=spf1 include:{DOMAIN} ~all"]}})
    assert check_spf(DOMAIN, make_resolver(dns_server.nameserver)).status is Status.FAIL
    assert len(dns_server.queries) == 11  # the record, then the 10 lookups SPF allows


def test_dkim_pointing_outside_sendgrid_fails(dns_server: DnsServer) -> None:
    dns_server.set_records(
        {**GOOD_DNS, f"s2._domainkey.{DOMAIN}": {"CNAME": ["s2.dkim.other-esp.example."]}}
    )
    finding = check_dkim(DOMAIN, make_resolver(dns_server.nameserver))
    assert finding.status is Status.FAIL
    assert finding.detail == (
        "s2._domainkey.drip.test points to s2.dkim.other-esp.example, not into sendgrid.net"
    )


def test_custom_dkim_selectors_come_from_the_settings(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    target = "em7.domainkey.u1234.wl123.sendgrid.net."
    dns_server.set_records({f"em7._domainkey.{DOMAIN}": {"CNAME": [target]}})
    ctx = context(tmp_path, dns_nameserver=dns_server.nameserver, dkim_selectors="em7")
    assert check_dkim_records(ctx).status is Status.OK
    assert check_dkim_records(context(tmp_path, dns_nameserver=dns_server.nameserver)).status == (
        Status.FAIL
    )


def test_dmarc_p_none_warns_and_no_policy_fails(dns_server: DnsServer) -> None:
    resolver = make_resolver(dns_server.nameserver)
    dns_server.set_records({f"_dmarc.{DOMAIN}": {"TXT": ["v=DMARC1; p=none"]}})
    none = check_dmarc(DOMAIN, resolver)
    assert (none.status, none.detail) == (
        Status.WARN,
        "DMARC of drip.test: p=none, which only monitors",
    )
    dns_server.set_records({f"_dmarc.{DOMAIN}": {"TXT": ["v=DMARC1; rua=mailto:x@drip.test"]}})
    assert "has no valid policy" in check_dmarc(DOMAIN, resolver).detail


def test_a_from_domain_that_does_not_exist_fails(dns_server: DnsServer) -> None:
    finding = check_domain("nowhere.test", make_resolver(dns_server.nameserver))
    assert finding.status is Status.FAIL
    assert finding.detail == "DRIP_FROM_EMAIL: the domain nowhere.test does not exist in DNS"


def test_a_dns_server_that_does_not_answer_fails_without_raising() -> None:
    resolver = make_resolver(f"127.0.0.1:{closed_port()}", lifetime=0.3)
    for finding, asked in [(check_domain(DOMAIN, resolver), "drip.test"),
                           (check_spf(DOMAIN, resolver), "TXT drip.test")]:  # fmt: skip
        assert finding.status is Status.FAIL
        assert finding.detail.startswith(f"could not look up {asked}: ")
        assert finding.fix is not None and "DRIP_DNS_NAMESERVER" in finding.fix


# --------------------------------------------------------------------------- webhooks


def test_webhooks_configured_pass_and_unset_fail(tmp_path: Path) -> None:
    configured = context(
        tmp_path,
        email_backend="sendgrid",
        sendgrid_api_key="SG.test-key",
        sendgrid_webhook_public_key=public_b64(new_key()),
        purchase_webhook_secret="purchase-secret-0123456789",
    )
    assert configuration.check_event_webhook(configured).status is Status.OK
    assert configuration.check_purchase_webhook(configured).status is Status.OK
    unset = context(tmp_path, email_backend="sendgrid", sendgrid_api_key="SG.test-key")
    event = configuration.check_event_webhook(unset)
    assert event.status is Status.FAIL
    assert event.detail.startswith("DRIP_SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
    assert event.fix is not None and "https://drip.test/webhooks/sendgrid" in event.fix
    purchase = configuration.check_purchase_webhook(unset)
    assert purchase.status is Status.FAIL
    assert purchase.detail.startswith("DRIP_PURCHASE_WEBHOOK_SECRET is not set")


def test_the_event_webhook_is_skipped_without_sendgrid(tmp_path: Path) -> None:
    finding = configuration.check_event_webhook(context(tmp_path, email_backend="smtp"))
    assert finding.status is Status.SKIP


# --------------------------------------------------------------------------- /healthz


def test_healthz_answering_passes_with_a_warning_for_http(
    tmp_path: Path, web: HealthServer
) -> None:
    finding = services.check_healthz(context(tmp_path, public_url=web.url))
    assert finding.status is Status.WARN  # reachable, but not https
    assert finding.detail.startswith(f"GET {web.url}/healthz answered 200")


def test_healthz_failing_or_unreachable_fails(tmp_path: Path, web: HealthServer) -> None:
    web.status = 503
    unhealthy = services.check_healthz(context(tmp_path, public_url=web.url))
    assert (unhealthy.status, unhealthy.detail) == (
        Status.FAIL,
        f"DRIP_PUBLIC_URL: GET {web.url}/healthz answered 503",
    )
    url = f"http://127.0.0.1:{closed_port()}"
    gone = services.check_healthz(context(tmp_path, public_url=url))
    assert gone.status is Status.FAIL
    assert gone.detail.startswith(f"DRIP_PUBLIC_URL: GET {url}/healthz failed:")


# --------------------------------------------------------------------------- the command


def base_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        "DRIP_DATABASE_URL": f"sqlite:///{tmp_path / 'missing.sqlite3'}",
        "DRIP_BROKER_URL": f"redis://127.0.0.1:{closed_port()}/4",
        "DRIP_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/4",
        "DRIP_EMAIL_BACKEND": "outbox",
        "DRIP_SECRET_KEY": "test-secret-key-0123456789",
        "DRIP_PUBLIC_URL": f"http://127.0.0.1:{closed_port()}",
        "DRIP_FROM_EMAIL": f"coach@{DOMAIN}",
        "DRIP_RUNNERS_LAB_URL": "https://lab.test/join",
        "DRIP_CONTENT_DIR": str(REPO / "content" / "lessons"),
        "DRIP_TEMPLATES_DIR": str(REPO / "templates"),
    }
    return {**env, **overrides}


def test_the_command_exits_1_and_prints_json_when_checks_fail(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    result = drip(
        ["doctor", "--json"], base_env(tmp_path, DRIP_DNS_NAMESERVER=dns_server.nameserver)
    )
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert [line["check"] for line in report] == NAMES
    assert all(set(line) == {"check", "status", "detail", "fix"} for line in report)
    status = {line["check"]: line["status"] for line in report}
    assert status == {
        "settings": "ok", "secret-key": "ok", "database": "fail", "migrations": "skip",
        "redis": "fail", "broker": "fail", "worker": "skip", "beat": "skip",
        "tracking-drain": "skip", "content": "ok",
        "email-backend": "skip", "dns": "ok", "spf": "ok", "dkim": "ok", "dmarc": "ok",
        "event-webhook": "skip", "purchase-webhook": "fail", "healthz": "fail",
    }  # fmt: skip
    fixes = {line["check"]: line["fix"] for line in report}
    assert fixes["content"] is None
    assert "drip db upgrade" in fixes["database"]


def test_the_command_prints_a_line_per_check_and_names_a_bad_setting(tmp_path: Path) -> None:
    result = drip(["doctor"], base_env(tmp_path, DRIP_TICK_SECONDS="0"))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("fail  settings          DRIP_TICK_SECONDS: ")
    assert [line.split()[:2] for line in lines[1:-1]] == [["skip", n] for n in NAMES[1:]]
    assert lines[-1].startswith("this deploy has problems: 0 ok, 0 warning(s), 1 failed")
    assert "Traceback" not in result.output


@pytest.mark.worker
@pytest.mark.postgres
def test_a_healthy_deploy_exits_0_with_a_worker_answering(
    tmp_path: Path,
    pg_engine: Engine,
    redis4: str,
    sink: SendGridSink,
    dns_server: DnsServer,
    web: HealthServer,
) -> None:
    env = base_env(
        tmp_path,
        DRIP_DATABASE_URL=pg_url(pg_engine),
        DRIP_BROKER_URL=redis4,
        DRIP_REDIS_URL=redis4,
        DRIP_EMAIL_BACKEND="sendgrid",
        DRIP_SENDGRID_API_KEY="SG.test-key",
        DRIP_SENDGRID_API_URL=sink.url,
        DRIP_SENDGRID_WEBHOOK_PUBLIC_KEY=public_b64(new_key()),
        DRIP_PURCHASE_WEBHOOK_SECRET="purchase-secret-0123456789",
        DRIP_DNS_NAMESERVER=dns_server.nameserver,
        DRIP_PUBLIC_URL=web.url,
    )
    worker = WorkerProcess(
        worker_env(database_url=env["DRIP_DATABASE_URL"], broker_url=redis4, sendgrid_url=sink.url),
        concurrency=1,
        log=tmp_path / "worker.log",
    ).start()
    try:
        settings = make_settings(tmp_path, broker_url=redis4)
        wait_for(
            lambda: ping_workers(settings, 0.5), timeout=30, what="a worker's pong", log=worker
        )
        record_beat_tick(redis4, system_clock())
        result = drip(["doctor", "--json"], env)
    finally:
        worker.stop()
        redis.Redis.from_url(redis4).flushdb()
    assert result.exit_code == 0, result.output
    status = {line["check"]: line["status"] for line in json.loads(result.stdout)}
    assert status == {name: "ok" for name in NAMES} | {"healthz": "warn"}  # http, not https
