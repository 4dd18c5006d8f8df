"""Shared fixtures: real PostgreSQL and Redis, a SQLite file, settings and a runtime.

Services: outside CI a missing PostgreSQL or Redis skips the tests that need it; with CI=true it
fails them (a green CI run must have exercised everything).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, create_engine, text

from drip import suppress
from drip.clock import FrozenClock
from drip.content import loading
from drip.db import make_engine
from drip.esp.memory import MemoryBackend
from drip.migrate import upgrade
from drip.models import Base
from drip.runtime import Runtime
from drip.settings import ENV_PREFIX, Settings, get_settings
from tests.fakes.sendgrid_sink import SendGridSink

IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parent.parent
START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday, a week before US DST starts


def service_missing(what: str, err: BaseException) -> None:
    message = f"{what} is not reachable: {err}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing service is a failure)")
    pytest.skip(message)


def _candidate_pg_urls() -> list[str]:
    if os.environ.get("DRIP_TEST_DATABASE_URL"):
        return [os.environ["DRIP_TEST_DATABASE_URL"]]
    # Without an explicit URL (a developer's run), each test session gets its own database, so
    # two runs side by side don't drop each other's schema. .ci/run sets the URL.
    name = f"drip_test_{os.getpid()}"
    return [f"postgresql+psycopg://{role}@127.0.0.1:5432/{name}" for role in ("postgres", "root")]


def _drop_database(url: str) -> None:
    base, _, name = url.rpartition("/")
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'drop database if exists "{name}" with (force)'))
    finally:
        admin.dispose()


def _ensure_database(url: str) -> None:
    base, _, name = url.rpartition("/")
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(text("select 1 from pg_database where datname = :n"), {"n": name})
            if not exists:
                conn.execute(text(f'create database "{name}"'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def pg_engine() -> Iterator[Engine]:
    """A migrated PostgreSQL test database (schema rebuilt once per session)."""
    last: BaseException | None = None
    for url in _candidate_pg_urls():
        try:
            _ensure_database(url)
            engine = make_engine(url)
            with engine.begin() as conn:
                conn.execute(text("drop schema public cascade; create schema public"))
            upgrade(engine)
        except Exception as err:  # any failure means "no usable server"
            last = err
            continue
        yield engine
        engine.dispose()
        if not os.environ.get("DRIP_TEST_DATABASE_URL"):
            _drop_database(url)
        return
    assert last is not None
    service_missing("PostgreSQL", last)


_EMPTYING: dict[str, str] = {}


def truncate_all(engine: Engine) -> None:
    """Empty every table and restart every id sequence, as ``TRUNCATE ... RESTART IDENTITY``
    would, but with DELETEs (children first): on tables of a few rows that is about 10 ms
    where TRUNCATE of twenty tables takes about 140 ms, once per PostgreSQL test."""
    key = str(engine.url)
    if key not in _EMPTYING:
        with engine.connect() as conn:
            sequences = conn.scalars(
                text(
                    "select sequence_name from information_schema.sequences"
                    " where sequence_schema = 'public' order by sequence_name"
                )
            ).all()
        deletes = [f"delete from {t.name}" for t in reversed(Base.metadata.sorted_tables)]
        restarts = [f"alter sequence {name} restart" for name in sequences]
        _EMPTYING[key] = "; ".join(deletes + restarts)
    with engine.begin() as conn:
        conn.exec_driver_sql(_EMPTYING[key])
    suppress._salt_cache.clear()


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("DRIP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        client = redis.Redis.from_url(url)
        client.ping()
        client.close()
    except redis.RedisError as err:
        service_missing("Redis", err)
    return url


@pytest.fixture
def broker(redis_url: str) -> Iterator[str]:
    """The Redis test database as a Celery broker, emptied before and after the test."""
    conn = redis.Redis.from_url(redis_url)
    conn.flushdb()
    yield redis_url
    conn.flushdb()
    conn.close()


@pytest.fixture
def sink() -> Iterator[SendGridSink]:
    """A local server answering like SendGrid, checking each request against the spec."""
    with SendGridSink(validate=True) as server:
        yield server


@pytest.fixture(scope="session")
def _migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session (Alembic takes about 160 ms a run)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "drip.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection closing checkpoints the WAL into the main file
    assert not Path(f"{path}-wal").exists(), "the template's WAL was not checkpointed"
    return path


@pytest.fixture
def sqlite_engine(tmp_path: Path, _migrated_sqlite: Path) -> Iterator[Engine]:
    """A fresh migrated SQLite database of the test's own: a copy of the session's template."""
    path = tmp_path / "drip.sqlite3"
    shutil.copyfile(_migrated_sqlite, path)
    engine = make_engine(f"sqlite:///{path}")
    suppress._salt_cache.clear()
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True, scope="session")
def _content_read_once_per_version() -> Iterator[None]:
    """Runtimes built by the tests read the content through a cache keyed by the bytes of every
    file under the content and forms folders (and the settings that matter): checking the
    shipped course (Jinja and Markdown over every lesson) took about 30 ms per runtime, a
    minute of the suite. A test that changes a file gets a fresh read: the key is the content
    itself, never a timestamp."""
    real = loading.survey_content
    cache: dict[str, loading.ContentSurvey] = {}

    def cached(settings: Settings) -> loading.ContentSurvey:
        key = _content_key(settings)
        if key not in cache:
            cache[key] = real(settings)
        found = cache[key]
        return loading.ContentSurvey(dict(found.forms), dict(found.sequences), list(found.problems))

    loading.survey_content = cached
    yield
    loading.survey_content = real


def _content_key(settings: Settings) -> str:
    digest = hashlib.sha256()
    digest.update(
        repr((settings.content_dir, settings.forms_dir, settings.runners_lab_url)).encode()
    )
    for folder in (settings.content_dir, settings.forms_folder):
        if not folder.is_dir():
            digest.update(f"missing {folder}".encode())
            continue
        for path in sorted(folder.rglob("*")):
            digest.update(str(path).encode())
            if path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """Each test using this runs twice: on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_engine")
        return
    pg: Engine = request.getfixturevalue("pg_engine")
    truncate_all(pg)
    yield pg


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
        "email_backend": "memory",
        "outbox_dir": tmp_path / "outbox",
        "secret_key": "test-secret-key-0123456789",
        "public_url": "https://drip.test",
        "from_email": "coach@drip.test",
        "from_name": "Coach Test",
        "postal_address": "1 Test Road, Testville",
        "runners_lab_url": "https://lab.test/join",
        "default_timezone": "America/New_York",
        "content_dir": REPO / "content" / "lessons",
        "templates_dir": REPO / "templates",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``DRIP_*`` variable from the environment the tests run in, and no cached settings:
    for tests of what the commands read from the environment."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def memory_backend(clock: FrozenClock) -> MemoryBackend:
    return MemoryBackend(clock=clock)


@pytest.fixture
def rt(
    settings: Settings, engine: Engine, memory_backend: MemoryBackend, clock: FrozenClock
) -> Runtime:
    """A runtime on both databases, with the memory backend and a frozen clock."""
    return Runtime.build(settings, engine=engine, backend=memory_backend, clock=clock)
