"""One typed settings object, read from ``DRIP_*`` environment variables.

Contract: :func:`load_settings` either returns a fully validated :class:`Settings` or raises
:class:`SettingsError` whose message names every offending variable (``DRIP_PUBLIC_URL: ...``).
Embedded defaults run the engine with no server: a SQLite file and the file outbox.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from drip.errors import SettingsError
from drip.outgoing_endpoints import Endpoint, parse_setting

ENV_PREFIX = "DRIP_"
# The project root: content/ and templates/ live beside the package in a checkout.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# In an installed wheel, the default course and templates (copied there by setup.py's build step).
PACKAGED_DEFAULTS = Path(__file__).resolve().parent / "_defaults"
# Where each folder of the defaults lives in a checkout, and in the current directory.
_DEFAULT_FOLDERS = {"content_dir": Path("content", "lessons"), "templates_dir": Path("templates")}
_PACKAGED_NAMES = {"content_dir": "lessons", "templates_dir": "templates"}
# One or more DNS labels: what may stand before "._domainkey." in a DKIM record's name.
_DNS_LABELS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}(\.[A-Za-z0-9][A-Za-z0-9_-]{0,62})*")


class Settings(BaseSettings):
    """Everything configurable about drip. Field ``foo`` is read from ``DRIP_FOO``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # SQLAlchemy URL: sqlite:///path, or postgresql+psycopg://... in production.
    database_url: str = "sqlite:///var/drip.sqlite3"
    # The Celery broker (Redis) that carries tasks to the workers.
    broker_url: str = "redis://127.0.0.1:6379/0"
    # Redis for rate limits, shared counters and the tracking stream.
    redis_url: str = "redis://127.0.0.1:6379/1"
    # How emails leave: outbox (.eml files), smtp, sendgrid or memory (tests).
    email_backend: Literal["outbox", "smtp", "sendgrid", "memory"] = "outbox"
    # Where the outbox backend writes .eml files.
    outbox_dir: Path = Path("var", "outbox")
    # The folder of sequences of lessons.
    content_dir: Path = _DEFAULT_FOLDERS["content_dir"]
    # Email layouts and web pages.
    templates_dir: Path = _DEFAULT_FOLDERS["templates_dir"]
    # The folder of signup forms (<slug>.toml); unset = the forms folder beside DRIP_CONTENT_DIR.
    forms_dir: Path | None = None

    # Signs links (unsubscribe, confirm, tracking); at least 16 characters; set it in production.
    secret_key: SecretStr = SecretStr("dev-insecure-secret-key-change-me")
    # The public https address of the web app, used in every link.
    public_url: str = "http://127.0.0.1:8000"
    # The sender address.
    from_email: str = "coach@example.com"
    # The sender name.
    from_name: str = "Glute Accelerator Coach"
    # The Reply-To address; unset = none.
    reply_to: str | None = None
    # The sender's postal address, in every footer (CAN-SPAM).
    postal_address: str = "123 Example Street, Springfield, OR 97477, USA"
    # The Runners Lab sales page, {{ runners_lab_url }} in lessons.
    runners_lab_url: str = "https://example.com/runners-lab"
    # The IANA time zone of subscribers without a valid one.
    default_timezone: str = "America/New_York"
    # The sequence a confirmed subscriber enters.
    course_sequence: str = "glute-accelerator"

    # Drip engine

    # How often beat fires the drip tick, in seconds.
    tick_seconds: int = Field(default=60, ge=1, le=3600)
    # Enrollments claimed per transaction by the tick.
    claim_chunk: int = Field(default=1000, ge=1, le=100_000)
    # Deliveries per send task.
    send_batch_size: int = Field(default=500, ge=1, le=1000)
    # Sends refused in a row for reasons a retry can't fix (bad key, request refused) before
    # all sending pauses; throttles, outages and per-address refusals never count.
    max_consecutive_failures: int = Field(default=50, ge=1)
    # How long an email that certainly did not go out (provider unreachable) is retried, from
    # when it was queued; then it is ``failed`` and a lesson is due again the next allowed day.
    send_retry_hours: float = Field(default=12.0, gt=0, le=168)
    # A paused sender asks the provider (without sending) this often whether it may resume.
    sending_probe_seconds: int = Field(default=300, ge=10, le=86_400)
    # An ``unknown`` delivery (maybe sent) waits this long for the provider's events before
    # ``drip deliveries unknown`` lists it as needing a person.
    unknown_settle_minutes: int = Field(default=60, ge=1, le=10_080)

    # SendGrid

    # The API key (Mail Send permission); required with the sendgrid backend.
    sendgrid_api_key: SecretStr | None = None
    # The API base URL (tests point it at a local server).
    sendgrid_api_url: str = "https://api.sendgrid.com"
    # Seconds for a whole request (connect, send, answer): a deadline, not a per-read timeout.
    sendgrid_timeout: float = Field(default=10.0, gt=0)
    # Sandbox mode: SendGrid accepts every email and delivers none.
    sendgrid_sandbox: bool = False

    # SMTP

    # The SMTP relay's host.
    smtp_host: str = "127.0.0.1"
    # The SMTP relay's port.
    smtp_port: int = Field(default=25, ge=1, le=65535)
    # The SMTP AUTH user name; unset = no AUTH.
    smtp_username: str | None = None
    # The SMTP AUTH password.
    smtp_password: SecretStr | None = None
    # Transport security: none, starttls or ssl.
    smtp_tls: Literal["none", "starttls", "ssl"] = "none"
    # Seconds for one message's whole SMTP transaction (and for connecting): a deadline.
    smtp_timeout: float = Field(default=30.0, gt=0)

    # Subscribers and the web app. Token lists are comma-separated in the environment.

    # Bearer tokens of the admin API (/api/v1/admin/...); empty = admin API closed.
    admin_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    # Bearer tokens accepted by the JSON signup webhook POST /api/v1/subscribers.
    api_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    # Shared secret for X-Drip-Signature (HMAC-SHA256 of the raw body) on the JSON webhook.
    webhook_secret: SecretStr | None = None
    # Replay window for signed webhook calls that send X-Drip-Timestamp (seconds either way).
    webhook_max_skew_seconds: int = Field(default=300, ge=1, le=86_400)
    # True: a signature without X-Drip-Timestamp is refused (no replay of captured requests).
    webhook_require_timestamp: bool = False
    # Where POST /subscribe sends the visitor (303); unset = our own /thanks page.
    thank_you_url: str | None = None
    # Confirmation links expire after this many days.
    confirm_max_age_days: int = Field(default=7, ge=1, le=90)
    # A new confirmation email for the same address at most this often (mail-bombing guard).
    confirm_resend_minutes: int = Field(default=10, ge=0, le=1440)
    # Pending signups that never confirm are deleted after this many days.
    pending_purge_days: int = Field(default=30, ge=1, le=3650)
    # Form posts and confirmation resends per client address per window, counted in Redis
    # (DRIP_REDIS_URL); 0 = no limit.
    signup_rate_limit: int = Field(default=20, ge=0)
    # JSON webhook calls per client address per window (0 = no limit).
    api_rate_limit: int = Field(default=600, ge=0)
    # The fixed window of both per-address rate limits, in seconds.
    rate_limit_window_seconds: int = Field(default=600, ge=1, le=86_400)
    # The consent text shown next to the signup form, stored with every signup (GDPR Art. 7).
    consent_text: str = (
        "Yes, send me the free Glute Accelerator Crash Course by email, one lesson a day, "
        "then occasional news and offers about The Runners Lab. I can unsubscribe at any time."
    )
    # Requests bigger than this are refused with 413 before any parsing.
    max_body_bytes: int = Field(default=65_536, ge=1024)
    # Proxies whose X-Forwarded-For is trusted for the client IP (uvicorn forwarded_allow_ips).
    forwarded_allow_ips: str = "127.0.0.1"

    # Broadcasts: the global send rate shared by every worker (through DRIP_REDIS_URL;
    # 0 = no limit), the page of subscribers written per step, and the quiet rule's default.

    # Broadcast emails per second, all workers together (0 = no limit).
    broadcast_rate_per_second: int = Field(default=0, ge=0, le=1_000_000)
    # Broadcast emails per UTC hour, all workers together (0 = no limit).
    broadcast_rate_per_hour: int = Field(default=0, ge=0)
    # Broadcast emails per UTC day, all workers together (0 = no limit).
    broadcast_rate_per_day: int = Field(default=0, ge=0)
    # Subscribers per broadcast page (one transaction and checkpoint each).
    broadcast_page_size: int = Field(default=1000, ge=1, le=10_000)
    # No broadcast to someone who was sent a lesson within this many hours (0 = off).
    broadcast_quiet_hours: int = Field(default=0, ge=0, le=168)

    # Tracking: our open pixel and click redirect, the SendGrid Event Webhook, the
    # purchase webhook and attribution. README's configuration table explains each one.

    track_opens: bool = True  # a 1x1 pixel in marketing emails (never in confirmations)
    track_clicks: bool = True  # HTML links rewritten to /t/c/<signed token> (not unsubscribe)
    # The Event Webhook's verification key as SendGrid shows it (base64 DER, PEM also accepted);
    # unset = POST /webhooks/sendgrid answers 503 (nothing unverified is ever stored).
    sendgrid_webhook_public_key: SecretStr | None = None
    # Oldest accepted X-Twilio-Email-Event-Webhook-Timestamp, in seconds; 0 switches the check off.
    sendgrid_webhook_max_age: int = Field(default=600, ge=0, le=7 * 86_400)
    # SendGrid posts batches up to ~768 KB: this path alone may exceed DRIP_MAX_BODY_BYTES.
    sendgrid_webhook_max_bytes: int = Field(default=4_194_304, ge=65_536)
    # Shared secret of X-Drip-Signature on POST /webhooks/purchase; unset = the webhook is off.
    purchase_webhook_secret: SecretStr | None = None
    # A purchase is credited to the last human click within this many days before it.
    attribution_window_days: int = Field(default=30, ge=1, le=365)
    # A click this soon after the send is a link scanner's, whatever its user agent says.
    scanner_click_seconds: int = Field(default=10, ge=0, le=3600)
    # Redis stream between the tracking endpoints and the drain into the database.
    tracking_stream: str = Field(default="drip:tracking", min_length=1, max_length=200)
    # Events per bulk insert when draining the tracking stream into the database.
    tracking_drain_batch: int = Field(default=2000, ge=1, le=50_000)
    # How often beat drains the tracking stream, in seconds.
    tracking_drain_seconds: float = Field(default=2.0, gt=0, le=300)

    # The dashboard (/admin): session lifetime, idle expiry and the sign-in lock-out
    # (failures per account and per client address within the window lock both for the window).

    # A dashboard session ends this many hours after sign-in.
    admin_session_hours: int = Field(default=12, ge=1, le=24 * 30)
    # A dashboard session also ends after this many minutes without a request.
    admin_idle_minutes: int = Field(default=120, ge=5, le=24 * 60 * 30)
    # Failed sign-ins per account, and per client address, within the window that lock both.
    admin_lockout_attempts: int = Field(default=5, ge=1, le=1000)
    # The window of those failed sign-ins, and how long the lock lasts, in minutes.
    admin_lockout_minutes: int = Field(default=15, ge=1, le=24 * 60)
    # Overview and course figures are cached this long per web process (0 = always fresh).
    admin_stats_cache_seconds: int = Field(default=60, ge=0, le=3600)
    # The zone the dashboard shows times and counts days in (default: default_timezone).
    admin_timezone: str | None = None

    # `drip doctor`: how it looks up the From domain's SPF, DKIM and DMARC records.

    # The DNS server asked: an IP address, optionally with :port; unset = the system's resolver.
    dns_nameserver: str | None = None
    # The DKIM selectors SendGrid signs with, comma-separated: s1,s2 unless a custom one is set.
    dkim_selectors: Annotated[tuple[str, ...], NoDecode] = ("s1", "s2")

    # Outgoing webhooks (docs/webhooks-outgoing.md): events posted to the coach's other tools.

    # A JSON list of {"url", "events", "secret": "whsec_..."} (or "secret_env": a variable name).
    outgoing_webhooks: Annotated[tuple[Endpoint, ...], NoDecode] = ()
    # Seconds for one whole attempt (connect, send, answer): a deadline, not a per-read timeout.
    outgoing_webhook_timeout: float = Field(default=5.0, gt=0, le=30)
    # Attempts made per beat run, all at once: a run lasts about one timeout at most.
    outgoing_webhook_batch: int = Field(default=20, ge=1, le=50)
    # How often beat runs the due attempts, in seconds.
    outgoing_webhook_seconds: float = Field(default=5.0, gt=0, le=300)

    @field_validator("outgoing_webhooks", mode="before")
    @classmethod
    def _outgoing_endpoints(cls, value: object) -> tuple[Endpoint, ...]:
        return parse_setting(value)  # ValueError naming the entry and its key

    @field_validator("sendgrid_webhook_public_key")
    @classmethod
    def _ec_public_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        from drip.signature import load_public_key  # cryptography: load only if set

        load_public_key(value.get_secret_value())  # raises ValueError with the reason
        return value

    @field_validator("purchase_webhook_secret", "webhook_secret")
    @classmethod
    def _optional_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("public_url", "runners_lab_url", "sendgrid_api_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or value[-3:] == "://":
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("admin_tokens", "api_tokens", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("admin_tokens", "api_tokens")
    @classmethod
    def _strong_tokens(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        if any(len(token.get_secret_value()) < 16 for token in value):
            raise ValueError("every token must be at least 16 characters")
        return value

    @field_validator("thank_you_url")
    @classmethod
    def _optional_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return cls._absolute_http_url(value.strip())

    @field_validator("forms_dir", mode="before")
    @classmethod
    def _optional_folder(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def forms_folder(self) -> Path:
        """Where the signup forms are: DRIP_FORMS_DIR, else ``forms`` beside the lessons folder
        (``content/forms`` for ``content/lessons``), so forms always go with their sequences."""
        return self.forms_dir or self.content_dir.parent / "forms"

    @field_validator("from_email", "reply_to")
    @classmethod
    def _email_like(cls, value: str | None) -> str | None:
        if value is not None and ("@" not in value or value.startswith("@") or value.endswith("@")):
            raise ValueError("must be an email address")
        return value

    @field_validator("postal_address", "from_name", "consent_text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("default_timezone", "admin_timezone")
    @classmethod
    def _iana_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown IANA time zone {value!r}") from err
        return value

    @property
    def dashboard_zone(self) -> ZoneInfo:
        """Where the dashboard's times and days are: the admin zone, else the default zone."""
        return ZoneInfo(self.admin_timezone or self.default_timezone)

    @field_validator("dns_nameserver")
    @classmethod
    def _nameserver(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_nameserver(value)  # raises ValueError with the reason
        return value.strip()

    @field_validator("dkim_selectors", mode="before")
    @classmethod
    def _selectors(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, tuple | list):
            if not value:
                raise ValueError("name at least one DKIM selector")
            for selector in value:
                if not isinstance(selector, str) or not _DNS_LABELS.fullmatch(selector):
                    raise ValueError(f"not a DKIM selector: {selector!r}")
        return value

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        # The messages never quote the URL: it may hold a password.
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError(
                "not a database URL (sqlite:///path or postgresql+psycopg://...)"
            ) from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        try:
            url.get_dialect()
        except NoSuchModuleError:
            raise ValueError(f"unknown database driver {url.drivername!r}") from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_here(cls, data: object) -> object:
        """Paths left unset, resolved once against the current directory: the database and
        the outbox under ``./var``, and ``./content/lessons`` and ``./templates`` when it has
        them (a coach's own folder), else the ones packaged with drip."""
        if not isinstance(data, dict):
            return data
        here = Path.cwd()
        resolved = dict(data)
        resolved.setdefault("database_url", f"sqlite:///{here / 'var' / 'drip.sqlite3'}")
        resolved.setdefault("outbox_dir", here / "var" / "outbox")
        for name, folder in _DEFAULT_FOLDERS.items():
            if name not in resolved:
                local = here / folder
                resolved[name] = local if local.is_dir() else packaged_dir(name)
        return resolved


def packaged_dir(name: str) -> Path:
    """The default course or templates shipped with drip: copied into the installed wheel, or
    at the root of the checkout drip runs from."""
    installed = PACKAGED_DEFAULTS / _PACKAGED_NAMES[name]
    return installed if installed.is_dir() else PROJECT_ROOT / _DEFAULT_FOLDERS[name]


def parse_nameserver(value: str) -> tuple[str, int]:
    """``DRIP_DNS_NAMESERVER`` as ``(address, port)``: an IP address, optionally with ``:port``
    (IPv6 with a port as ``[::1]:5353``); port 53 when none is given. Raises ValueError."""
    text = value.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError("write an IPv6 address with a port as [address]:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("must be an IP address, optionally with :port") from None
    port = int(port_text) if port_text.isdigit() else (53 if not port_text else 0)
    if not 1 <= port <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    return host, port


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
