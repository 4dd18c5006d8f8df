"""The email backend interface: a batch of recipients in, one result per recipient out.

A batch shares one :class:`Message` (rendered once, with placeholders such as ``%%firstname%%``)
and each :class:`Recipient` carries the values for those placeholders. Backends that build MIME
themselves fill the placeholders with :func:`personalize`; SendGrid sends them as substitutions.

Error contract: a send has three outcomes, not two. A failure of the whole request raises one of
(see :mod:`drip.errors`):

- :class:`~drip.errors.TransientBackendError`: certainly nothing sent (connection refused, connect
  timeout, SMTP 4xx before DATA); retried.
- :class:`~drip.errors.ThrottledBackendError` (a transient error): the provider answered 429 or
  5xx; nothing sent; every worker slows down, honouring ``retry_after``.
- :class:`~drip.errors.AmbiguousBackendError`: the request left and no answer came back (read
  timeout, reset while reading, the call's deadline passed); maybe sent, never retried blindly.
- :class:`~drip.errors.PermanentBackendError`: 400, 401, 403, 413, SMTP 5xx on connect.

Every call is bounded by a total deadline (the backend's ``timeout``), not a per-read timeout.
A failure of one recipient only is reported in its :class:`SendResult`, never raised; once part
of a batch has been accepted, later failures are reported in the remaining results (``transient``
for certainly-not-sent, ``unknown`` for maybe-sent) instead of raised, so nothing is sent twice.
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
    transient: bool = False  # only meaningful when not ok: certainly not sent, retry later
    unknown: bool = False  # only meaningful when not ok: maybe sent, never retried blindly
    # A per-recipient permanent refusal of the address itself (SMTP 550 no such user): the
    # address is suppressed like a bounce. Only meaningful when not ok and not transient.
    invalid_address: bool = False
    # The provider's wait hint (seconds) when this recipient was not sent because a later request
    # of the batch was throttled (429, 5xx): the engine holds every sender off, uses no attempt.
    retry_after: float | None = None


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

    def probe(self) -> None:  # noqa: B027 - optional hook: most backends have nothing to ask
        """Ask the provider whether sending would work now, sending no email.

        Returns quietly when it would; raises a :class:`~drip.errors.BackendError` saying why
        not (a revoked key is permanent, an unreachable server transient). A paused sender
        calls it to decide when to resume by itself.
        """

    def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing open
        """Release connections. Safe to call twice."""
