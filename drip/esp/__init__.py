"""Email backends: the interface (:mod:`drip.esp.base`) and :func:`make_backend`.

``DRIP_EMAIL_BACKEND`` picks one: ``outbox`` (files, the default), ``smtp``, ``sendgrid`` or
``memory`` (tests).
"""

from __future__ import annotations

from drip.clock import Clock, system_clock
from drip.errors import SettingsError
from drip.esp.base import EmailBackend, Message, Recipient, SendResult, personalize
from drip.esp.memory import MemoryBackend
from drip.esp.outbox import OutboxBackend
from drip.esp.sendgrid import SendGridBackend
from drip.esp.smtp import SmtpBackend
from drip.settings import Settings

__all__ = [
    "EmailBackend",
    "Message",
    "Recipient",
    "SendResult",
    "make_backend",
    "personalize",
]


def make_backend(settings: Settings, *, clock: Clock | None = None) -> EmailBackend:
    """The backend ``settings.email_backend`` names, configured from ``settings``.

    Raises :class:`SettingsError` naming ``DRIP_SENDGRID_API_KEY`` when SendGrid is chosen
    without a key.
    """
    clock = clock or system_clock
    kind = settings.email_backend
    if kind == "outbox":
        return OutboxBackend(settings.outbox_dir, clock=clock)
    if kind == "memory":
        return MemoryBackend(clock=clock)
    if kind == "smtp":
        password = settings.smtp_password
        return SmtpBackend(
            settings.smtp_host,
            settings.smtp_port,
            tls=settings.smtp_tls,
            username=settings.smtp_username,
            password=password.get_secret_value() if password is not None else None,
            timeout=settings.smtp_timeout,
            clock=clock,
        )
    if kind == "sendgrid":
        key = settings.sendgrid_api_key
        if key is None or not key.get_secret_value().strip():
            raise SettingsError("DRIP_SENDGRID_API_KEY: required when DRIP_EMAIL_BACKEND=sendgrid")
        return SendGridBackend(
            key.get_secret_value().strip(),
            api_url=settings.sendgrid_api_url,
            timeout=settings.sendgrid_timeout,
            sandbox=settings.sendgrid_sandbox,
            clock=clock,
        )
    raise SettingsError(f"DRIP_EMAIL_BACKEND: unknown backend {kind!r}")
