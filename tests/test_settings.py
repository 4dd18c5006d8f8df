"""Settings: the embedded defaults, every DRIP_* variable, and errors that name the variable.

Every test starts from an environment with no DRIP_* variable and an empty ``get_settings``
cache, so what the developer's shell exports cannot change a result.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from drip.cli.main import main
from drip.errors import SettingsError
from drip.settings import (
    ENV_PREFIX,
    PROJECT_ROOT,
    Settings,
    get_settings,
    load_settings,
    packaged_dir,
)

DRIP_BIN = Path(sys.executable).parent / "drip"


def _clear_drip_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _clear_drip_env(monkeypatch)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _problem_lines(err: SettingsError) -> dict[str, str]:
    """``{"DRIP_X": "message"}`` from a SettingsError's message."""
    lines = str(err).splitlines()
    assert lines[0] == "invalid configuration:"
    found = {}
    for line in lines[1:]:
        name, sep, message = line.strip().partition(": ")
        assert sep, f"problem line without 'NAME: message': {line!r}"
        found[name] = message
    return found


# --------------------------------------------------------------------------- defaults


def test_defaults_run_without_any_server() -> None:
    settings = load_settings()  # the tests run from the checkout's root

    assert settings.database_url == f"sqlite:///{Path.cwd() / 'var' / 'drip.sqlite3'}"
    assert settings.email_backend == "outbox"
    assert settings.outbox_dir == Path.cwd() / "var" / "outbox"
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.content_dir == PROJECT_ROOT / "content" / "lessons"
    assert settings.templates_dir == PROJECT_ROOT / "templates"
    assert (settings.content_dir / "glute-accelerator" / "sequence.toml").is_file()
    assert settings.default_timezone == "America/New_York"
    assert settings.tick_seconds == 60


def test_default_sqlite_file_lives_under_var() -> None:
    url = Settings().database_url
    path = Path(url.removeprefix("sqlite:///"))

    assert url.startswith("sqlite:///")
    assert path.is_absolute()
    assert path.parent == Path.cwd() / "var"


def test_an_empty_directory_gets_var_here_and_the_packaged_course_and_templates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    settings = Settings()

    assert settings.database_url == f"sqlite:///{tmp_path / 'var' / 'drip.sqlite3'}"
    assert settings.outbox_dir == tmp_path / "var" / "outbox"
    assert settings.content_dir == packaged_dir("content_dir")
    assert settings.templates_dir == packaged_dir("templates_dir")
    assert (settings.content_dir / "glute-accelerator" / "sequence.toml").is_file()
    assert (settings.templates_dir / "email" / "base.html").is_file()
    assert not (tmp_path / "var").exists()  # made only when something is written


def test_a_coach_folder_with_content_and_templates_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "content" / "lessons").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)

    settings = Settings()

    assert settings.content_dir == tmp_path / "content" / "lessons"
    assert settings.templates_dir == packaged_dir("templates_dir")  # each one on its own
    (tmp_path / "templates").mkdir()
    assert Settings().templates_dir == tmp_path / "templates"


def test_a_set_path_is_kept_even_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DRIP_CONTENT_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("DRIP_OUTBOX_DIR", "mail")

    settings = load_settings()

    assert settings.content_dir == tmp_path / "nowhere"  # never the packaged course instead
    assert settings.outbox_dir == Path("mail")


def test_get_settings_is_loaded_once_and_cached() -> None:
    first = get_settings()

    assert get_settings() is first


def test_get_settings_cache_clear_rereads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert get_settings().email_backend == "outbox"
    monkeypatch.setenv("DRIP_EMAIL_BACKEND", "smtp")

    assert get_settings().email_backend == "outbox"  # cached
    get_settings.cache_clear()
    assert get_settings().email_backend == "smtp"


def test_settings_are_frozen() -> None:
    settings = Settings()

    with pytest.raises(ValueError):
        settings.email_backend = "smtp"  # type: ignore[misc]


# --------------------------------------------------------------------------- each variable

# (field, raw environment value, expected attribute value)
ENV_VALUES: list[tuple[str, str, Any]] = [
    ("database_url", "postgresql+psycopg://drip@db.internal:5432/drip", None),
    ("broker_url", "redis://broker.internal:6379/3", None),
    ("redis_url", "redis://cache.internal:6379/4", None),
    ("email_backend", "sendgrid", None),
    ("outbox_dir", "/srv/drip/outbox", Path("/srv/drip/outbox")),
    ("content_dir", "/srv/drip/content", Path("/srv/drip/content")),
    ("templates_dir", "/srv/drip/templates", Path("/srv/drip/templates")),
    ("secret_key", "a-long-enough-secret-key-0123456789", None),
    ("public_url", "https://news.example.org/", "https://news.example.org"),
    ("from_email", "hello@example.org", None),
    ("from_name", "  Coach Kim  ", "Coach Kim"),
    ("reply_to", "replies@example.org", None),
    ("postal_address", " 9 Harbour Lane, Cork, Ireland ", "9 Harbour Lane, Cork, Ireland"),
    ("runners_lab_url", "https://lab.example.org/join/", "https://lab.example.org/join"),
    ("default_timezone", "Europe/Berlin", None),
    ("course_sequence", "another-course", None),
    ("tick_seconds", "30", 30),
    ("claim_chunk", "250", 250),
    ("send_batch_size", "100", 100),
    ("max_consecutive_failures", "7", 7),
    ("send_retry_hours", "1.5", 1.5),
    ("sending_probe_seconds", "60", 60),
    ("unknown_settle_minutes", "15", 15),
    ("sendgrid_api_key", "SG.not-a-real-key", None),
    ("sendgrid_api_url", "http://127.0.0.1:9999", None),
    ("sendgrid_timeout", "2.5", 2.5),
    ("sendgrid_sandbox", "true", True),
    ("smtp_host", "mail.example.org", None),
    ("smtp_port", "2525", 2525),
    ("smtp_username", "mailer", None),
    ("smtp_password", "smtp-pass-word", None),
    ("smtp_tls", "starttls", None),
    ("smtp_timeout", "5", 5.0),
]


# The variables issue 2 requires at least, plus those of the drip engine (issue 3).
REQUIRED_VARIABLES = {
    "database_url", "broker_url", "email_backend", "outbox_dir", "secret_key", "public_url",
    "from_email", "from_name", "postal_address", "runners_lab_url", "sendgrid_api_url",
    "sendgrid_api_key", "tick_seconds",
}  # fmt: skip


def test_env_table_covers_the_required_variables_and_only_real_fields() -> None:
    fields = {field for field, _, _ in ENV_VALUES}

    assert fields <= set(Settings.model_fields)
    assert fields >= REQUIRED_VARIABLES


@pytest.mark.parametrize(
    ("field", "raw", "expected"), ENV_VALUES, ids=[f for f, _, _ in ENV_VALUES]
)
def test_each_drip_variable_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, field: str, raw: str, expected: Any
) -> None:
    variable = f"DRIP_{field.upper()}"
    default = getattr(Settings(), field)
    monkeypatch.setenv(variable, raw)

    value = getattr(get_settings(), field)

    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    want = raw if expected is None else expected
    assert value == want
    assert value != (default.get_secret_value() if isinstance(default, SecretStr) else default)


# --------------------------------------------------------------------------- errors

BAD_VALUES = [
    ("DRIP_EMAIL_BACKEND", "pigeon", "'outbox', 'smtp', 'sendgrid'"),
    ("DRIP_PUBLIC_URL", "ftp://drip.example.org", "absolute http(s) URL"),
    ("DRIP_PUBLIC_URL", "drip.example.org", "absolute http(s) URL"),
    ("DRIP_PUBLIC_URL", "https://", "absolute http(s) URL"),
    ("DRIP_RUNNERS_LAB_URL", "/runners-lab", "absolute http(s) URL"),
    ("DRIP_DEFAULT_TIMEZONE", "Mars/Olympus_Mons", "unknown IANA time zone 'Mars/Olympus_Mons'"),
    ("DRIP_DEFAULT_TIMEZONE", "", "unknown IANA time zone"),
    ("DRIP_SECRET_KEY", "too-short", "at least 16 characters"),
    ("DRIP_TICK_SECONDS", "every minute", "valid integer"),
    ("DRIP_TICK_SECONDS", "0", "greater than or equal to 1"),
    ("DRIP_FROM_EMAIL", "coach.example.com", "email address"),
    ("DRIP_FROM_EMAIL", "coach@", "email address"),
    ("DRIP_POSTAL_ADDRESS", "", "must not be empty"),
    ("DRIP_POSTAL_ADDRESS", "   ", "must not be empty"),
    ("DRIP_SMTP_PORT", "70000", "less than or equal to 65535"),
    ("DRIP_DATABASE_URL", "not a url", "database URL"),
    ("DRIP_DATABASE_URL", "mysql://drip@db/drip", "sqlite"),
    ("DRIP_DATABASE_URL", "postgresql+nodriver://drip@db/drip", "driver"),
]


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    BAD_VALUES,
    ids=[f"{v}={r!r}" for v, r, _ in BAD_VALUES],
)
def test_a_bad_value_is_an_error_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, raw: str, expected: str
) -> None:
    monkeypatch.setenv(variable, raw)

    with pytest.raises(SettingsError) as info:
        load_settings()

    problems = _problem_lines(info.value)
    assert list(problems) == [variable]
    assert expected in problems[variable]


def test_get_settings_raises_the_same_named_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIP_EMAIL_BACKEND", "carrier-pigeon")

    with pytest.raises(SettingsError, match="DRIP_EMAIL_BACKEND"):
        get_settings()


def test_the_error_does_not_echo_a_rejected_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIP_SECRET_KEY", "hunter2-secret")

    with pytest.raises(SettingsError) as info:
        load_settings()

    assert "DRIP_SECRET_KEY" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_the_error_does_not_echo_a_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIP_DATABASE_URL", "postgresql+nodriver://drip:s3cr3t-pw@db/drip")

    with pytest.raises(SettingsError) as info:
        load_settings()

    assert "DRIP_DATABASE_URL" in str(info.value)
    assert "s3cr3t-pw" not in str(info.value)


def test_several_bad_variables_are_all_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = {
        "DRIP_EMAIL_BACKEND": "fax",
        "DRIP_PUBLIC_URL": "localhost:8000",
        "DRIP_DEFAULT_TIMEZONE": "Nowhere/Special",
        "DRIP_SECRET_KEY": "abc",
        "DRIP_TICK_SECONDS": "1.5x",
        "DRIP_FROM_EMAIL": "no-at-sign",
        "DRIP_POSTAL_ADDRESS": "",
    }
    for name, value in bad.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DRIP_FROM_NAME", "A Fine Name")  # valid: must not be reported

    with pytest.raises(SettingsError) as info:
        load_settings()

    assert set(_problem_lines(info.value)) == set(bad)


# --------------------------------------------------------------------------- the command line


def test_cli_with_a_bad_variable_exits_2_naming_it_without_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}
    env["DRIP_PUBLIC_URL"] = "not-a-url"

    proc = subprocess.run(
        [str(DRIP_BIN), "lessons", "check"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 2
    assert "DRIP_PUBLIC_URL" in proc.stderr
    assert "absolute http(s) URL" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stdout == ""


def test_cli_runner_reports_every_bad_variable_with_exit_2() -> None:
    result = CliRunner().invoke(
        main,
        ["lessons", "check"],
        env={"DRIP_TICK_SECONDS": "often", "DRIP_SECRET_KEY": "short"},
    )

    assert result.exit_code == 2
    assert "DRIP_TICK_SECONDS" in result.stderr
    assert "DRIP_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.output
    assert "ok:" not in result.stdout


def test_cli_with_a_malformed_database_url_exits_2_without_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["db", "upgrade"], env={"DRIP_DATABASE_URL": "nonsense"})

    assert result.exit_code == 2
    assert "DRIP_DATABASE_URL" in result.stderr
    assert isinstance(result.exception, SystemExit)  # a clean exit, not a crash
