"""One typed settings object, read from ``DRIP_*`` environment variables.

Contract: :func:`load_settings` either returns a fully validated :class:`Settings` or raises
:class:`SettingsError` whose message names every offending variable (``DRIP_PUBLIC_URL: ...``).
Embedded defaults run the engine with no server: a SQLite file and the file outbox.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from drip.errors import SettingsError

ENV_PREFIX = "DRIP_"
# The project root: content/ and templates/ live beside the package in a checkout.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Everything configurable about drip. Field ``foo`` is read from ``DRIP_FOO``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    database_url: str = f"sqlite:///{PROJECT_ROOT / 'var' / 'drip.sqlite3'}"
    broker_url: str = "redis://127.0.0.1:6379/0"
    redis_url: str = "redis://127.0.0.1:6379/1"
    email_backend: Literal["outbox", "smtp", "sendgrid", "memory"] = "outbox"
    outbox_dir: Path = PROJECT_ROOT / "var" / "outbox"
    content_dir: Path = PROJECT_ROOT / "content" / "lessons"
    templates_dir: Path = PROJECT_ROOT / "templates"

    secret_key: SecretStr = SecretStr("dev-insecure-secret-key-change-me")
    public_url: str = "http://127.0.0.1:8000"
    from_email: str = "coach@example.com"
    from_name: str = "Glute Accelerator Coach"
    reply_to: str | None = None
    postal_address: str = "123 Example Street, Springfield, OR 97477, USA"
    runners_lab_url: str = "https://example.com/runners-lab"
    default_timezone: str = "America/New_York"
    course_sequence: str = "glute-accelerator"

    # Drip engine
    tick_seconds: int = Field(default=60, ge=1, le=3600)
    claim_chunk: int = Field(default=1000, ge=1, le=100_000)
    send_batch_size: int = Field(default=500, ge=1, le=1000)
    max_consecutive_failures: int = Field(default=50, ge=1)
    max_send_retries: int = Field(default=5, ge=0, le=20)

    # SendGrid
    sendgrid_api_key: SecretStr | None = None
    sendgrid_api_url: str = "https://api.sendgrid.com"
    sendgrid_timeout: float = Field(default=10.0, gt=0)
    sendgrid_sandbox: bool = False

    # SMTP
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["none", "starttls", "ssl"] = "none"
    smtp_timeout: float = Field(default=30.0, gt=0)

    @field_validator("public_url", "runners_lab_url", "sendgrid_api_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or value[-3:] == "://":
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("from_email", "reply_to")
    @classmethod
    def _email_like(cls, value: str | None) -> str | None:
        if value is not None and ("@" not in value or value.startswith("@") or value.endswith("@")):
            raise ValueError("must be an email address")
        return value

    @field_validator("postal_address", "from_name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("default_timezone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown IANA time zone {value!r}") from err
        return value

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value


def load_settings() -> Settings:
    """Read and validate the environment; raise :class:`SettingsError` naming each bad variable."""
    try:
        return Settings()
    except ValidationError as err:
        problems = []
        for item in err.errors():
            field = str(item["loc"][0]) if item["loc"] else "?"
            problems.append(f"{ENV_PREFIX}{field.upper()}: {item['msg']}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded once. Tests build their own :class:`Settings`."""
    return load_settings()
