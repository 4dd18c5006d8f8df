"""Checks of the settings themselves: valid at all, a real secret key, the webhooks set up."""

from __future__ import annotations

from collections.abc import Callable

from drip.errors import SettingsError
from drip.reports.doctor.findings import Finding, fail, first_line, ok, skip
from drip.reports.doctor.runner import Context
from drip.settings import Settings

SETTINGS_FIX = "correct each DRIP_* variable named (README.md, Configuration, says what it takes)"


def load_checked(load: Callable[[], Settings]) -> tuple[Settings | None, Finding]:
    """The settings ``load`` returns, with the settings check's finding; ``(None, fail)`` naming
    every bad variable when they don't load."""
    try:
        settings = load()
    except SettingsError as err:
        lines = [line.strip() for line in str(err).splitlines()]
        problems = [line for line in lines if line.startswith("DRIP_")] or lines
        return None, fail("\n".join(problems), SETTINGS_FIX)
    except Exception as err:  # e.g. an unreadable .env: still a line, never a traceback
        return None, fail(f"the settings could not be read: {first_line(err)}", SETTINGS_FIX)
    return settings, ok(
        f"every DRIP_* variable is valid (email backend {settings.email_backend}, "
        f"From {settings.from_email})"
    )


def check_secret_key(context: Context) -> Finding:
    default = Settings.model_fields["secret_key"].default
    if context.settings.secret_key.get_secret_value() == default.get_secret_value():
        return fail(
            "DRIP_SECRET_KEY: still the development default, so anyone can forge unsubscribe "
            "and confirmation links",
            "set DRIP_SECRET_KEY to a long random value, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
        )
    return ok("DRIP_SECRET_KEY is set")


def check_event_webhook(context: Context) -> Finding:
    settings = context.settings
    if settings.email_backend != "sendgrid":
        return skip(f"DRIP_EMAIL_BACKEND={settings.email_backend}: no SendGrid events to receive")
    url = f"{settings.public_url}/webhooks/sendgrid"
    if settings.sendgrid_webhook_public_key is None:
        return fail(
            "DRIP_SENDGRID_WEBHOOK_PUBLIC_KEY is not set: POST /webhooks/sendgrid answers 503, "
            "so bounces and spam reports are never suppressed and unknown sends never settle",
            f"in SendGrid (Settings > Mail Settings > Event Webhook) set the POST URL to {url}, "
            "turn on the Signed Event Webhook and copy its verification key into "
            "DRIP_SENDGRID_WEBHOOK_PUBLIC_KEY",
        )
    return ok(f"signed SendGrid events are accepted at {url}")


def check_purchase_webhook(context: Context) -> Finding:
    url = f"{context.settings.public_url}/webhooks/purchase"
    if context.settings.purchase_webhook_secret is None:
        return fail(
            "DRIP_PURCHASE_WEBHOOK_SECRET is not set: POST /webhooks/purchase answers 503, so "
            "buyers keep getting the upsell and no sale is credited",
            "set DRIP_PURCHASE_WEBHOOK_SECRET (16 or more random characters) and have the "
            f"checkout POST each purchase to {url}, signed with X-Drip-Signature "
            "(docs/tracking.md)",
        )
    return ok(f"signed purchases are accepted at {url}")
