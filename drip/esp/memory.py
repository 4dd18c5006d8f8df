"""An in-memory backend for tests: records what would have been sent, fails when told to.

Contract: every accepted recipient becomes one :class:`SentEmail` in ``outbox`` (in send order),
holding the personalized subject, HTML and text and the MIME message :func:`build_mime` makes.
Scripted failures: :meth:`MemoryBackend.raise_next` makes the next N ``send_batch`` calls raise
(nothing is recorded for them); :meth:`MemoryBackend.fail_address` makes one address fail in its
own :class:`SendResult` on every call until :meth:`MemoryBackend.clear` or :meth:`unfail_address`.
``probe_failure``, when set, is what :meth:`MemoryBackend.probe` raises.
Thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage

from drip.clock import Clock, system_clock
from drip.errors import BackendError
from drip.esp.base import EmailBackend, Message, Recipient, SendResult, personalize
from drip.esp.mime import InvalidAddress, build_mime, sender_domain


@dataclass(frozen=True)
class SentEmail:
    """One recipient's copy as it would have left."""

    message: Message
    recipient: Recipient
    subject: str
    html: str
    text: str
    mime: EmailMessage
    sent_at: datetime

    @property
    def to(self) -> str:
        return self.recipient.email


@dataclass(frozen=True)
class _AddressFailure:
    error: str
    transient: bool
    unknown: bool
    invalid_address: bool


class MemoryBackend(EmailBackend):
    """Keeps sent email in ``outbox``; ``calls`` counts ``send_batch`` calls (failed ones too)."""

    name = "memory"

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or system_clock
        self._lock = threading.Lock()
        self.outbox: list[SentEmail] = []
        self.calls = 0
        self.closed = False
        self._raises: list[BackendError] = []
        self._failing: dict[str, _AddressFailure] = {}
        self.probe_failure: BackendError | None = None  # what probe() raises; None: it passes
        self.probes = 0

    def raise_next(self, error: BackendError, times: int = 1) -> None:
        """Make the next ``times`` calls of ``send_batch`` raise ``error`` (queued after others)."""
        with self._lock:
            self._raises.extend([error] * times)

    def fail_address(
        self,
        email: str,
        *,
        transient: bool = False,
        unknown: bool = False,
        invalid_address: bool = False,
        error: str = "550 5.1.1 mailbox unavailable",
    ) -> None:
        """Make every send to ``email`` (case-insensitive) fail in its result, with the flags
        given (``unknown``: as if the answer for it never came)."""
        with self._lock:
            self._failing[email.lower()] = _AddressFailure(
                error, transient, unknown, invalid_address
            )

    def unfail_address(self, email: str) -> None:
        with self._lock:
            self._failing.pop(email.lower(), None)

    def clear(self) -> None:
        """Forget the outbox, the call count and every scripted failure."""
        with self._lock:
            self.outbox.clear()
            self.calls = 0
            self._raises.clear()
            self._failing.clear()

    def sent_to(self, email: str) -> list[SentEmail]:
        """The copies sent to ``email`` (case-insensitive), oldest first."""
        with self._lock:
            return [s for s in self.outbox if s.to.lower() == email.lower()]

    def send_batch(self, message: Message, recipients: Sequence[Recipient]) -> list[SendResult]:
        with self._lock:
            self.calls += 1
            if self._raises:
                raise self._raises.pop(0)
            now = self._clock()
            results: list[SendResult] = []
            for recipient in recipients:
                results.append(self._send_one(message, recipient, now))
            return results

    def _send_one(self, message: Message, recipient: Recipient, now: datetime) -> SendResult:
        failure = self._failing.get(recipient.email.lower())
        if failure is not None:
            return SendResult(
                recipient.delivery_id,
                False,
                error=failure.error,
                transient=failure.transient,
                unknown=failure.unknown,
                invalid_address=failure.invalid_address,
            )
        try:
            mime = build_mime(
                message,
                recipient,
                date=now.astimezone(UTC),
                message_id_domain=sender_domain(message.from_email),
            )
        except InvalidAddress as err:  # that recipient's problem only
            return SendResult(recipient.delivery_id, False, error=str(err))
        subs = recipient.substitutions
        self.outbox.append(
            SentEmail(
                message=message,
                recipient=recipient,
                subject=personalize(message.subject, subs),
                html=personalize(message.html, subs),
                text=personalize(message.text, subs),
                mime=mime,
                sent_at=now,
            )
        )
        return SendResult(recipient.delivery_id, True, provider_message_id=str(mime["Message-ID"]))

    def probe(self) -> None:
        with self._lock:
            self.probes += 1
            if self.probe_failure is not None:
                raise self.probe_failure

    def close(self) -> None:
        self.closed = True
