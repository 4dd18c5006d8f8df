"""docker-compose.yml and the Dockerfile, checked by parsing them (Docker does not run here).

The stack: Caddy in front (TLS), PostgreSQL and Redis with health checks, a one-shot ``migrate``
service, and web, worker and beat, which start only once the migration finished and Redis
answers. Every drip service reads the whole .env (``env_file``); its ``environment`` sets only
what follows from the compose file itself and stops ``docker compose up`` on a missing required
value.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from drip.cli.env_example import COMPOSE_DEFAULTS, COMPOSE_SETS, IMAGE_SETS, REQUIRED
from drip.cli.main import main
from drip.errors import SettingsError
from drip.settings import ENV_PREFIX, Settings, get_settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
FIELDS = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
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


def env_files(service: str) -> list[tuple[str, bool]]:
    """(path, required) of each env_file of ``service``, in order."""
    raw = SERVICES[service].get("env_file", [])
    items = [raw] if isinstance(raw, str | dict) else raw
    return [
        (item, True) if isinstance(item, str) else (item["path"], item.get("required", True))
        for item in items
    ]


def parse_dotenv(text: str) -> dict[str, str]:
    """KEY=value lines of an env file (comments and blank lines skipped, quotes removed)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def container_env(service: str, dot_env: Mapping[str, str]) -> dict[str, str]:
    """What a container of ``service`` gets when .env holds ``dot_env``: the env_file, then
    ``environment`` (interpolated from the same .env) over it, as docker compose does."""
    env = dict(dot_env) if env_files(service) else {}
    env.update({name: interpolate(raw, dot_env) for name, raw in environment(service).items()})
    return env


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

    # The other secrets are not named here at all: they reach the containers through .env.
    assert {name for _, name, _ in secrets} >= {"DRIP_SECRET_KEY", "POSTGRES_PASSWORD"}
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
        assert match and match["op"] == ":?", f"{name} must be required (${{{name}:?...}})"
    password = INTERPOLATION.fullmatch(environment("postgres")["POSTGRES_PASSWORD"])
    assert password and password["op"] == ":?", "POSTGRES_PASSWORD must be required"


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
    for name, value in container_env("web", DOT_ENV).items():
        clean_env.setenv(name, value)

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
    for name, value in container_env("web", {**DOT_ENV, "DRIP_SECRET_KEY": "changeme"}).items():
        clean_env.setenv(name, value)

    with pytest.raises(SettingsError, match="DRIP_SECRET_KEY"):
        load_settings()


# --------------------------------------------------------------------------- every setting arrives


def compose_env_kinds(env: Mapping[str, str]) -> tuple[dict[str, str], set[str], dict[str, str]]:
    """The DRIP_ variables of an ``environment``: (set by compose itself, required, defaulted).

    A required or defaulted variable passes on the .env value of the same name: ``${NAME:?...}``
    or ``${NAME:-default}``. Anything else is compose's own value (``${POSTGRES_PASSWORD}``
    inside a URL shown without its error message).
    """
    owned: dict[str, str] = {}
    required: set[str] = set()
    defaulted: dict[str, str] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        match = INTERPOLATION.fullmatch(raw)
        if match and match["name"] == name and match["op"] == ":?":
            required.add(name)
        elif match and match["name"] == name and match["op"] == ":-":
            defaulted[name] = match["arg"]
        else:
            owned[name] = INTERPOLATION.sub(lambda m: f"${{{m['name']}}}", raw)
    return owned, required, defaulted


@pytest.mark.parametrize("service", DRIP_SERVICES)
def test_drip_services_read_the_whole_env_file(service: str) -> None:
    files = [(path.removeprefix("./"), required) for path, required in env_files(service)]

    # Required: without .env, `docker compose up` stops instead of starting on defaults.
    assert (".env", True) in files, f"{service}: env_file .env (required) is missing"


def test_only_drip_services_read_the_env_file() -> None:
    # The app's secrets stay out of the postgres, redis and proxy containers.
    for service in set(SERVICES) - set(DRIP_SERVICES):
        assert env_files(service) == [], f"{service} reads an env_file"


def test_compose_sets_only_what_follows_from_the_stack_and_the_required_values() -> None:
    owned, required, defaulted = compose_env_kinds(environment("web"))

    # What .env.example calls [compose], [required] and [compose default] (drip.cli.env_example).
    assert owned == COMPOSE_SETS
    assert required == set(REQUIRED) - {"POSTGRES_PASSWORD"}
    assert defaulted == COMPOSE_DEFAULTS


def test_every_setting_in_dot_env_reaches_every_drip_service() -> None:
    dot_env = {name: f"from-dot-env-{name.lower()}" for name in FIELDS}
    dot_env["POSTGRES_PASSWORD"] = "pg-password-from-env"

    for service in DRIP_SERVICES:
        env = container_env(service, dot_env)
        for name in FIELDS - set(COMPOSE_SETS):
            assert env.get(name) == dot_env[name], f"{service}: {name} from .env does not arrive"
        for name in COMPOSE_SETS:
            assert env[name] != dot_env[name], f"{service}: {name} must be compose's, not .env's"


@pytest.fixture
def ec_public_key() -> str:
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    der = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode()


def test_the_webhooks_tokens_and_rate_limits_set_in_dot_env_take_effect(
    clean_env: pytest.MonkeyPatch, ec_public_key: str
) -> None:
    dot_env = {
        **DOT_ENV,
        "DRIP_SENDGRID_WEBHOOK_PUBLIC_KEY": ec_public_key,
        "DRIP_PURCHASE_WEBHOOK_SECRET": "purchase-secret-0123456789",
        "DRIP_API_TOKENS": "api-token-0123456789abcdef",
        "DRIP_BROADCAST_RATE_PER_SECOND": "25",
        "DRIP_FORWARDED_ALLOW_IPS": "127.0.0.1",  # ignored: compose knows where the proxy is
    }
    for name, value in container_env("web", dot_env).items():
        clean_env.setenv(name, value)

    settings = load_settings()

    assert settings.sendgrid_webhook_public_key is not None
    assert settings.purchase_webhook_secret is not None
    assert [t.get_secret_value() for t in settings.api_tokens] == ["api-token-0123456789abcdef"]
    assert settings.broadcast_rate_per_second == 25
    assert settings.forwarded_allow_ips == "*"


def test_env_example_copied_as_is_stops_compose_until_filled_in() -> None:
    example = parse_dotenv((ROOT / ".env.example").read_text(encoding="utf-8"))

    assert set(example) == set(REQUIRED)  # everything else stays commented out
    with pytest.raises(AssertionError, match="is required"):
        container_env("web", example)


def test_env_example_filled_in_is_a_valid_configuration(clean_env: pytest.MonkeyPatch) -> None:
    example = parse_dotenv((ROOT / ".env.example").read_text(encoding="utf-8"))
    for name, value in container_env("web", {**example, **DOT_ENV}).items():
        clean_env.setenv(name, value)

    assert load_settings().redis_url == "redis://redis:6379/1"


# --------------------------------------------------------------------------- TLS proxy


def web_port() -> str:
    command = SERVICES["web"]["command"]
    return str(command[command.index("--port") + 1])


def test_the_proxy_serves_the_public_url_over_tls_and_forwards_to_web() -> None:
    proxy = SERVICES["proxy"]
    command = proxy["command"]

    assert str(proxy["image"]).startswith("caddy:")
    assert command[:2] == ["caddy", "reverse-proxy"]
    source = INTERPOLATION.fullmatch(command[command.index("--from") + 1])
    assert source and source["name"] == "DRIP_PUBLIC_URL" and source["op"] == ":?"
    assert command[command.index("--to") + 1] == f"web:{web_port()}"
    assert {"80:80", "443:443"} <= {str(port) for port in proxy["ports"]}
    # Certificates and the ACME account survive a re-created container (rate limits).
    assert any(str(volume).endswith(":/data") for volume in proxy["volumes"])
    assert "web" in depends_on("proxy")


def test_web_is_reached_only_through_the_proxy() -> None:
    publishing = {name for name, service in SERVICES.items() if service.get("ports")}

    # Only the proxy can reach web, and Caddy replaces a client's X-Forwarded-For with the
    # address it sees: so trusting every peer's header ("*") gives each client its own address
    # (and rate-limit bucket). Publishing web's port would let anyone forge it.
    assert publishing == {"proxy"}
    assert environment("web")["DRIP_FORWARDED_ALLOW_IPS"] == "*"


# --------------------------------------------------------------------------- health, restarts, data


def test_web_healthcheck_asks_healthz_on_its_own_port() -> None:
    check = SERVICES["web"]["healthcheck"]

    assert check["test"][0] in ("CMD", "CMD-SHELL")
    assert f"http://127.0.0.1:{web_port()}/healthz" in " ".join(check["test"][1:])
    assert int(check.get("retries", 3)) >= 1


def test_long_running_services_restart() -> None:
    for name, service in SERVICES.items():
        if name != "migrate":
            assert service.get("restart") in ("unless-stopped", "always"), name


@pytest.mark.parametrize(
    ("service", "path"), [("postgres", "/var/lib/postgresql/data"), ("redis", "/data")]
)
def test_data_lives_in_named_volumes(service: str, path: str) -> None:
    mounts = dict(str(volume).split(":", 1) for volume in SERVICES[service]["volumes"])
    by_path = {target: source for source, target in mounts.items()}

    assert path in by_path, f"{service}: nothing mounted at {path}"
    assert by_path[path] in COMPOSE["volumes"], f"{service}: {by_path[path]} is not declared"


def test_redis_persists_to_its_append_only_file() -> None:
    # The tracking stream waits in Redis for the drain: an append-only file keeps it on restart.
    command = SERVICES["redis"]["command"]

    assert command[command.index("--appendonly") + 1] == "yes"


# --------------------------------------------------------------------------- the Dockerfile


def dockerfile_instructions(keyword: str) -> list[str]:
    prefix = f"{keyword} "
    return [
        line[len(prefix) :].strip() for line in DOCKERFILE.splitlines() if line.startswith(prefix)
    ]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in dockerfile_instructions("ENV"):
        words = shlex.split(args)
        if all("=" in word for word in words):
            env.update(dict(word.split("=", 1) for word in words))
        else:
            env[words[0]] = " ".join(words[1:])
    return env


def test_the_dockerfile_sets_only_the_image_paths_and_compose_leaves_them() -> None:
    image = {k: v for k, v in dockerfile_env().items() if k.startswith(ENV_PREFIX)}

    assert image == IMAGE_SETS
    for name in image:
        assert name not in drip_variables(), f"docker-compose.yml contradicts the image's {name}"


def test_the_image_paths_are_where_the_dockerfile_copies_content_and_templates() -> None:
    [workdir] = dockerfile_instructions("WORKDIR")
    copied = {shlex.split(args)[-1] for args in dockerfile_instructions("COPY")}

    for value in IMAGE_SETS.values():
        relative = Path(value).relative_to(workdir)
        assert f"./{relative.parts[0]}" in copied, f"{value} is not copied into the image"


def test_services_inherit_no_command_or_healthcheck_from_the_image() -> None:
    # A HEALTHCHECK in the image would apply to worker and beat, which serve no HTTP.
    assert dockerfile_instructions("HEALTHCHECK") == []
    for service in DRIP_SERVICES:
        assert SERVICES[service].get("command"), f"{service} would run the image's CMD"


def test_beat_keeps_its_schedule_where_the_image_user_can_write() -> None:
    [user] = dockerfile_instructions("USER")
    command = SERVICES["beat"]["command"]

    assert user == "nobody"
    assert command[command.index("--schedule") + 1].startswith("/tmp/")
