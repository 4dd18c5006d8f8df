"""docker-compose.yml, checked by parsing it (Docker does not run on these machines).

The stack: PostgreSQL and Redis with health checks, a one-shot ``migrate`` service, and web,
worker and beat, which start only once the migration finished and Redis answers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from drip.cli.main import main
from drip.errors import SettingsError
from drip.settings import ENV_PREFIX, Settings, get_settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP_SERVICES = ("web", "worker", "beat")
DRIP_SERVICES = ("migrate", *APP_SERVICES)
# An environment variable that holds a secret, by its name.
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|API_KEY)")
# ${VAR}, ${VAR:?message}, ${VAR?message} or ${VAR:-} (empty default): from the environment only.
FROM_ENVIRONMENT = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?::?\?[^}]*|:?-)?\}")
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    if isinstance(env, list):  # the "KEY=value" list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def all_environments() -> Iterator[tuple[str, str, str]]:
    """(where, name, value) for every variable set anywhere in the file."""
    for key, value in COMPOSE.items():
        if key.startswith("x-") and isinstance(value, dict):
            for name, raw in value.items():
                yield key, str(name), str(raw)
    for service in SERVICES:
        for name, raw in environment(service).items():
            yield service, name, raw


def drip_variables() -> set[str]:
    return {name for _, name, _ in all_environments() if name.startswith(ENV_PREFIX)}


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` against ``env``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if present:
            return env[name]
        if op in ("-", ":-"):
            return arg or ""
        if op in ("?", ":?"):
            raise AssertionError(f"{name} is required: {arg}")
        return ""

    return INTERPOLATION.sub(one, value)


def depends_on(service: str) -> dict[str, str]:
    deps = SERVICES[service].get("depends_on", {})
    assert isinstance(deps, dict), f"{service}: depends_on must name a condition per service"
    return {name: spec["condition"] for name, spec in deps.items()}


# --------------------------------------------------------------------------- services


def test_the_stack_has_every_service() -> None:
    assert set(SERVICES) >= {"postgres", "redis", "migrate", "web", "worker", "beat"}


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_wait_for_the_migration_and_a_healthy_redis(service: str) -> None:
    deps = depends_on(service)

    assert deps["migrate"] == "service_completed_successfully"
    assert deps["redis"] == "service_healthy"


def test_migrate_runs_db_upgrade_once_after_postgres_is_healthy() -> None:
    migrate = SERVICES["migrate"]

    assert migrate["command"][:3] == ["drip", "db", "upgrade"]
    assert depends_on("migrate") == {"postgres": "service_healthy"}
    # A restarting one-shot service never "completes successfully": the app would never start.
    assert migrate.get("restart", "no") == "no"


@pytest.mark.parametrize(("service", "probe"), [("postgres", "pg_isready"), ("redis", "redis-cli")])
def test_servers_have_healthchecks(service: str, probe: str) -> None:
    check = SERVICES[service]["healthcheck"]

    test = check["test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    assert probe in " ".join(test[1:])
    assert int(check.get("retries", 3)) >= 1


@pytest.mark.parametrize(
    ("service", "command"),
    [("web", ["drip", "serve"]), ("worker", ["drip", "worker"]), ("beat", ["drip", "beat"])],
)
def test_app_service_commands(service: str, command: list[str]) -> None:
    assert SERVICES[service]["command"][:2] == command


@pytest.mark.parametrize(
    "service",
    [
        "migrate",
        pytest.param(
            "web",
            marks=pytest.mark.xfail(
                "serve" not in main.commands,
                reason="`drip serve` is not a drip command yet (the web app is in progress)",
                strict=True,
            ),
        ),
        "worker",
        "beat",
    ],
)
def test_service_commands_are_real_drip_commands(service: str) -> None:
    words = [w for w in SERVICES[service]["command"][1:] if not w.startswith("-")]
    command: Any = main
    for word in words:
        if not hasattr(command, "commands"):
            break
        assert word in command.commands, f"{service}: `drip {' '.join(words)}` is not a command"
        command = command.commands[word]
    assert not hasattr(command, "commands"), f"{service}: a group, not a command"


@pytest.mark.parametrize("service", DRIP_SERVICES)
def test_drip_services_are_built_from_the_dockerfile(service: str) -> None:
    build = SERVICES[service]["build"]
    context = ROOT / (build if isinstance(build, str) else build.get("context", "."))

    assert (context / "Dockerfile").is_file()


# --------------------------------------------------------------------------- environment


def test_every_drip_variable_in_the_compose_file_is_a_settings_field() -> None:
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    used = drip_variables()

    assert used, "no DRIP_ variable found"
    assert sorted(used - fields) == []


@pytest.mark.parametrize("service", DRIP_SERVICES)
def test_drip_services_share_one_environment(service: str) -> None:
    assert environment(service) == environment("migrate")


def test_app_reaches_postgres_and_redis_by_service_name() -> None:
    env = {name: interpolate(raw, DOT_ENV) for name, raw in environment("web").items()}

    assert urlsplit(env["DRIP_DATABASE_URL"]).hostname == "postgres"
    assert urlsplit(env["DRIP_DATABASE_URL"]).scheme == "postgresql+psycopg"
    assert urlsplit(env["DRIP_BROKER_URL"]).hostname == "redis"
    assert urlsplit(env["DRIP_REDIS_URL"]).hostname == "redis"


def test_no_secret_has_a_literal_value() -> None:
    secrets = [
        (where, name, raw) for where, name, raw in all_environments() if SECRET_NAME.search(name)
    ]

    assert {name for _, name, _ in secrets} >= {
        "DRIP_SECRET_KEY",
        "DRIP_SENDGRID_API_KEY",
        "POSTGRES_PASSWORD",
    }
    for where, name, raw in secrets:
        assert FROM_ENVIRONMENT.fullmatch(raw), f"{where}: {name} has a literal value"


def test_passwords_inside_urls_come_from_the_environment() -> None:
    urls = [
        (where, name, raw) for where, name, raw in all_environments() if "://" in raw and "@" in raw
    ]

    assert urls, "expected at least the database URL"
    for where, name, raw in urls:
        userinfo = raw.split("://", 1)[1].rsplit("@", 1)[0]
        if ":" in userinfo:
            password = userinfo.split(":", 1)[1]
            assert FROM_ENVIRONMENT.fullmatch(password), f"{where}: {name} embeds a password"


def test_required_secrets_have_no_default() -> None:
    env = environment("web")

    for name in ("DRIP_SECRET_KEY", "DRIP_PUBLIC_URL", "DRIP_FROM_EMAIL", "DRIP_POSTAL_ADDRESS"):
        match = INTERPOLATION.fullmatch(env[name])
        assert match and match["op"] in ("?", ":?"), f"{name} must be required (${{{name}:?...}})"


# --------------------------------------------------------------------------- it loads


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


DOT_ENV = {
    "POSTGRES_PASSWORD": "pg-password-from-env",
    "DRIP_SECRET_KEY": "a-production-secret-key-0123456789",
    "DRIP_PUBLIC_URL": "https://news.example.org",
    "DRIP_FROM_EMAIL": "coach@example.org",
    "DRIP_POSTAL_ADDRESS": "9 Harbour Lane, Cork, Ireland",
    "DRIP_RUNNERS_LAB_URL": "https://example.org/runners-lab",
    "DRIP_SENDGRID_API_KEY": "SG.example-key",
}


def test_the_compose_environment_is_a_valid_configuration(
    clean_env: pytest.MonkeyPatch,
) -> None:
    for name, raw in environment("web").items():
        clean_env.setenv(name, interpolate(raw, DOT_ENV))

    settings = load_settings()

    assert settings.database_url == (
        "postgresql+psycopg://drip:pg-password-from-env@postgres:5432/drip"
    )
    assert settings.email_backend == "sendgrid"
    assert settings.public_url == "https://news.example.org"
    assert settings.secret_key.get_secret_value() == DOT_ENV["DRIP_SECRET_KEY"]


def test_a_missing_required_variable_stops_compose() -> None:
    partial = {k: v for k, v in DOT_ENV.items() if k != "DRIP_SECRET_KEY"}

    with pytest.raises(AssertionError, match="DRIP_SECRET_KEY is required"):
        interpolate(environment("web")["DRIP_SECRET_KEY"], partial)


def test_a_too_short_secret_from_the_env_file_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    for name, raw in environment("web").items():
        clean_env.setenv(name, interpolate(raw, {**DOT_ENV, "DRIP_SECRET_KEY": "changeme"}))

    with pytest.raises(SettingsError, match="DRIP_SECRET_KEY"):
        load_settings()
