"""The email backend would take email now: the backend's own probe, which sends nothing.

For SendGrid that is ``GET /v3/scopes``: the key is valid and has ``mail.send``. For SMTP it is
a connection (TLS and AUTH as configured) and a NOOP. The outbox and memory backends send
nothing, so there is nothing to ask: the check is skipped with a note.
"""

from __future__ import annotations

from drip.errors import (
    BackendError,
    PermanentBackendError,
    SettingsError,
    ThrottledBackendError,
    TransientBackendError,
)
from drip.esp import make_backend
from drip.reports.doctor.findings import Finding, fail, ok, skip, warn
from drip.reports.doctor.runner import Context
from drip.settings import Settings

NEW_KEY = (
    "create a key with Mail Send permission (SendGrid: Settings > API Keys) and put it in "
    "DRIP_SENDGRID_API_KEY"
)
SMTP_SETTINGS = (
    "check DRIP_SMTP_HOST, DRIP_SMTP_PORT, DRIP_SMTP_TLS, DRIP_SMTP_USERNAME and "
    "DRIP_SMTP_PASSWORD against the relay's instructions"
)


def check_backend(context: Context) -> Finding:
    settings = context.settings
    if settings.email_backend not in ("sendgrid", "smtp"):
        return skip(
            f"DRIP_EMAIL_BACKEND={settings.email_backend} sends no email, so there is nothing "
            "to probe; set DRIP_EMAIL_BACKEND=sendgrid to send for real"
        )
    try:
        backend = make_backend(settings)
    except SettingsError as err:
        return fail(str(err), NEW_KEY if settings.email_backend == "sendgrid" else SMTP_SETTINGS)
    try:
        backend.probe()
    except BackendError as err:
        if settings.email_backend == "sendgrid":
            return _sendgrid_refusal(settings, err)
        return fail(
            f"the SMTP relay {settings.smtp_host}:{settings.smtp_port} refused the probe: {err}",
            SMTP_SETTINGS,
        )
    finally:
        backend.close()
    if settings.email_backend == "smtp":
        return ok(f"the SMTP relay {settings.smtp_host}:{settings.smtp_port} answers NOOP")
    if settings.sendgrid_sandbox:
        return warn(
            "SendGrid accepts the key, but DRIP_SENDGRID_SANDBOX is on: it accepts email and "
            "never delivers it",
            "set DRIP_SENDGRID_SANDBOX=false",
        )
    return ok("SendGrid accepts DRIP_SENDGRID_API_KEY and it may send email (mail.send)")


def _sendgrid_refusal(settings: Settings, err: BackendError) -> Finding:
    if isinstance(err, ThrottledBackendError):
        return warn(
            f"SendGrid is busy or rate-limiting ({err.status}): the key could not be judged",
            "run `drip doctor` again in a minute",
        )
    if isinstance(err, TransientBackendError):
        return fail(
            f"DRIP_SENDGRID_API_URL: no answer from {settings.sendgrid_api_url} ({err})",
            "allow outbound HTTPS from this server to api.sendgrid.com (firewall, proxy, DNS) "
            "and check DRIP_SENDGRID_API_URL",
        )
    if isinstance(err, PermanentBackendError) and err.status == 401:
        return fail("DRIP_SENDGRID_API_KEY: SendGrid refused the key (401)", NEW_KEY)
    if isinstance(err, PermanentBackendError) and err.status == 403:
        return fail(
            "DRIP_SENDGRID_API_KEY: the key may not send email (no mail.send scope)",
            "give the key Mail Send permission (Full Access, or Restricted Access with Mail "
            f"Send on), or {NEW_KEY}",
        )
    return fail(f"DRIP_SENDGRID_API_KEY: SendGrid refused the probe: {err}", NEW_KEY)
