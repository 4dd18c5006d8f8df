"""The email backend interface: a batch of recipients in, one result per recipient out.

A batch shares one :class:`Message` (rendered once, with placeholders such as ``%%firstname%%``)
and each :class:`Recipient` carries the values for those placeholders. Backends that build MIME
themselves fill the placeholders with :func:`personalize`; SendGrid sends them as substitutions.

Error contract: a failure of the whole request raises :class:`~drip.errors.TransientBackendError`
(retry later: 429, 5xx, timeouts, connection errors, SMTP 4xx on connect) or
:class:`~drip.errors.PermanentBackendError` (400, 401, 403, 413, SMTP 5xx on connect). A failure of
one recipient only is reported in its :class:`SendResult`, never raised.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

PLACEHOLDER = re.compile(r"%%[a-z0-9]+(?:\.t)?%%")


@dataclass(frozen=True)
class Message:
    """What every recipient of a batch shares. Texts may contain placeholders."""

    message_key: str  # "glute-accelerator/3", "broadcast/7", "confirm"
    subject: str
    html: str
    text: str
    from_email: str
    from_name: str
    reply_to: str | None = None
    category: str = "drip"  # never personal data: SendGrid keeps categories long-term
    headers: Mapping[str, str] = field(default_factory=dict)
    # Click tracking (drip.tracking.links): the original URL of each "%%linkN%%" in ``html``,
    # in order; the send path gives every recipient a signed redirect for each of them.
    links: tuple[str, ...] = ()
    open_tracking: bool = False  # ``html`` carries the "%%openpixelurl%%" pixel


@dataclass(frozen=True)
class Recipient:
    """One addressee of a batch and the values of its placeholders."""

    delivery_id: int
    email: str
    name: str = ""
    substitutions: Mapping[str, str] = field(default_factory=dict)  # "%%firstname%%" -> "Ana"
    headers: Mapping[str, str] = field(default_factory=dict)  # List-Unsubscribe, per recipient
    time_zone: str | None = None  # for the outbox manifest's local time


@dataclass(frozen=True)
class SendResult:
    delivery_id: int
    ok: bool
    provider_message_id: str | None = None
    error: str | None = None
    transient: bool = False  # only meaningful when not ok


def personalize(template: str, substitutions: Mapping[str, str]) -> str:
    """Fill every known placeholder of ``template``; unknown ones are left as they are."""
    if "%%" not in template:
        return template
    return PLACEHOLDER.sub(lambda m: substitutions.get(m.group(0), m.group(0)), template)


class EmailBackend(ABC):
    """One way of handing email over. Subclasses fill in :meth:`send_batch`."""

    name: str = "base"
    max_batch: int = 1000

    @abstractmethod
    def send_batch(self, message: Message, recipients: Sequence[Recipient]) -> list[SendResult]:
        """Send ``message`` to each recipient; one result per recipient, in the same order."""

    def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing open
        """Release connections. Safe to call twice."""
