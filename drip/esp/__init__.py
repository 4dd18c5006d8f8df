"""Email backends: the interface (:mod:`drip.esp.base`) and :func:`make_backend`.

``DRIP_EMAIL_BACKEND`` picks one by name from :data:`BACKENDS`: ``outbox`` (files, the
default), ``smtp``, ``sendgrid`` or ``memory`` (tests). Each factory imports its backend's
module only when called, so a process writing to the outbox never loads the SendGrid client or
the SMTP machinery.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from drip.clock import Clock, system_clock
from drip.errors import SettingsError
from drip.esp.base import EmailBackend, Message, Recipient, SendResult, personalize
from drip.settings import Settings

__all__ = [
    "BACKENDS",
    "BackendFactory",
    "EmailBackend",
    "Message",
    "Recipient",
    "SendResult",
    "make_backend",
    "personalize",
]

BackendFactory = Callable[[Settings, Clock], EmailBackend]
"""Builds one backend from the settings; raises :class:`SettingsError` if they don't suffice."""


def _outbox(settings: Settings, clock: Clock) -> EmailBackend:
    from drip.esp.outbox import OutboxBackend

    return OutboxBackend(settings.outbox_dir, clock=clock)


def _memory(settings: Settings, clock: Clock) -> EmailBackend:
    from drip.esp.memory import MemoryBackend

    return MemoryBackend(clock=clock)


def _smtp(settings: Settings, clock: Clock) -> EmailBackend:
    from drip.esp.smtp import SmtpBackend

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


def _sendgrid(settings: Settings, clock: Clock) -> EmailBackend:
    # Checked before the import: a missing key is a settings mistake, whatever is installed.
    key = settings.sendgrid_api_key
    if key is None or not key.get_secret_value().strip():
        raise SettingsError("DRIP_SENDGRID_API_KEY: required when DRIP_EMAIL_BACKEND=sendgrid")
    from drip.esp.sendgrid import SendGridBackend

    return SendGridBackend(
        key.get_secret_value().strip(),
        api_url=settings.sendgrid_api_url,
        timeout=settings.sendgrid_timeout,
        sandbox=settings.sendgrid_sandbox,
        clock=clock,
    )


BACKENDS: Mapping[str, BackendFactory] = MappingProxyType(
    {"outbox": _outbox, "smtp": _smtp, "sendgrid": _sendgrid, "memory": _memory}
)
"""Every ``DRIP_EMAIL_BACKEND`` value and its factory; read-only."""


def make_backend(settings: Settings, *, clock: Clock | None = None) -> EmailBackend:
    """The backend ``settings.email_backend`` names, configured from ``settings``.

    Raises :class:`SettingsError` naming ``DRIP_EMAIL_BACKEND`` for a name not in
    :data:`BACKENDS`, and naming ``DRIP_SENDGRID_API_KEY`` when SendGrid is chosen without a key.
    """
    factory = BACKENDS.get(settings.email_backend)
    if factory is None:
        raise SettingsError(f"DRIP_EMAIL_BACKEND: unknown backend {settings.email_backend!r}")
    return factory(settings, clock or system_clock)
