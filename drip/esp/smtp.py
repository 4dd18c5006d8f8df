"""SMTP backend: one connection kept across batches, one SMTP transaction per recipient.

Contract (see :mod:`drip.esp.base`): a send has three outcomes, and the stage where a
transaction fails decides which one.

- **Before the final dot left** (MAIL FROM, RCPT TO, DATA and its 354, writing the message): the
  server cannot have the message. A lost connection, a timeout or a 421 (the server closing)
  discards the connection and the recipient is tried once more on a fresh one; if that fails too,
  the failure is a :class:`TransientBackendError` (a :class:`ThrottledBackendError` when the
  server said 421 both times). A refusal of the recipient is that recipient's result: 4xx
  ``transient``, 5xx permanent, and ``invalid_address`` for a mailbox that does not exist (an
  enhanced status 5.1.x, or without one 550, 551 or 553). A refusal of our sender (MAIL FROM)
  concerns the whole batch and raises.
- **After the final dot left, before a complete reply** (timeout, reset, the deadline passed, a
  garbled reply): the server may have accepted it. That recipient's result is ``unknown``, the
  connection is discarded, the batch stops and the remaining recipients get ``transient``
  (certainly not sent) results. The message is never sent again by this backend.
- **A complete reply to the final dot**: 2xx sent, 4xx ``transient`` (421 also discards the
  connection), 5xx permanent. Not resubmitted within the call.

Deadlines, not per-read timeouts: ``timeout`` bounds one recipient's whole transaction, and
separately the connect, greeting, EHLO, STARTTLS and AUTH sequence. Every socket read and write is
given only the time left, so a server trickling its reply a byte at a time cannot hold a worker
past the deadline. A recipient costs at most two connections and two transactions.

Connecting raises: :class:`TransientBackendError` for a refused connection, a timeout, a reset or
a TLS failure; :class:`ThrottledBackendError` for a 4xx greeting or a 421 at any step (nothing was
sent, the server asks us to slow down); :class:`PermanentBackendError` for 5xx replies (535 bad
credentials), a server without STARTTLS or AUTH (or no common AUTH mechanism), and a certificate
that does not verify. Once a recipient of a batch has been accepted, later failures are reported
in the remaining results (``transient``) instead of raised, so a retry of the batch cannot send
twice. :meth:`SmtpBackend.probe` connects and says NOOP, sending no email.
"""

from __future__ import annotations

import io
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.policy import EmailPolicy
from typing import TYPE_CHECKING, Any, Literal

from drip.clock import Clock
from drip.errors import (
    BackendError,
    PermanentBackendError,
    ThrottledBackendError,
    TransientBackendError,
)
from drip.esp.base import EmailBackend, Message, Recipient, SendResult
from drip.esp.mime import InvalidAddress, build_mime, sender_domain

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

TlsMode = Literal["none", "starttls", "ssl"]

CLOSING = 421  # "service not available, closing transmission channel": nothing was accepted
# Replies to RCPT TO that say the mailbox does not exist, when no enhanced status code says more.
NO_SUCH_MAILBOX = frozenset({550, 551, 553})
# An enhanced status code (RFC 3463) at the start of a reply's text: "5.1.1 No such user".
ENHANCED_STATUS = re.compile(rb"([245])\.(\d{1,3})\.\d{1,3}\b")
LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


class _NotDelivered(Exception):
    """The transaction failed before the final dot left: the server cannot have the message.

    Worth one more try on a fresh connection. ``closing`` is true when the server said 421.
    """

    def __init__(self, reason: str, *, closing: bool = False) -> None:
        self.closing = closing
        super().__init__(reason)

    def as_backend_error(self) -> TransientBackendError:
        if self.closing:
            return ThrottledBackendError(f"SMTP server keeps closing: {self}", status=CLOSING)
        return TransientBackendError(f"SMTP connection lost: {self}")


class _DeadlineReader(io.RawIOBase):
    """Reads from a socket, each read given only the time left before the deadline."""

    def __init__(self, sock: socket.socket, time_left: Callable[[], float]) -> None:
        super().__init__()
        self._sock = sock
        self._time_left = time_left

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        self._sock.settimeout(self._time_left())
        return self._sock.recv_into(buffer)


class _Client(smtplib.SMTP):
    """``smtplib.SMTP`` whose every read and write must end before ``deadline`` (monotonic).

    smtplib's own timeout is per socket operation: a reply trickled a byte at a time never trips
    it. Here each read and write gets the time left instead, and none is left after the deadline.
    Construction connects and reads the greeting, already under ``deadline``.
    """

    def __init__(self, host: str, port: int, deadline: float, **options: Any) -> None:
        self.deadline = deadline
        super().__init__(host, port, timeout=self.time_left(), **options)

    def time_left(self) -> float:
        """Seconds before the deadline; raises ``TimeoutError`` once it has passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out: the deadline passed")
        return left

    def start(self, seconds: float) -> None:
        """Give the next steps ``seconds`` in all."""
        self.deadline = time.monotonic() + seconds

    def send(self, s: ReadableBuffer | str) -> None:
        # smtplib's send, bounded by the deadline and letting the OSError through: its own turns
        # every failure into "Server not connected", which hides a timeout.
        if self.sock is None:
            raise smtplib.SMTPServerDisconnected("please run connect() first")
        data = s.encode(self.command_encoding) if isinstance(s, str) else s
        self.sock.settimeout(self.time_left())
        self.sock.sendall(data)

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None and self.sock is not None:  # after connecting and after STARTTLS
            self.file = io.BufferedReader(_DeadlineReader(self.sock, self.time_left))
        return super().getreply()


class _SslClient(_Client, smtplib.SMTP_SSL):
    """:class:`_Client` over implicit TLS (port 465); takes ``context=``."""


@dataclass(frozen=True)
class _Mail:
    """One recipient's transaction: the envelope and the message, ready for DATA."""

    delivery_id: int
    sender: str
    recipient: str
    message_id: str
    size: int  # of the message before dot-stuffing, for the SIZE extension
    data: bytes  # dot-stuffed, ending with the final dot
    utf8: bool  # the envelope needs SMTPUTF8

    @classmethod
    def build(cls, message: Message, recipient: Recipient, mime: EmailMessage) -> _Mail:
        utf8 = not (message.from_email + recipient.email).isascii()
        flat = _flatten(mime, utf8=utf8)
        return cls(
            delivery_id=recipient.delivery_id,
            sender=message.from_email,
            recipient=recipient.email,
            message_id=str(mime["Message-ID"]),
            size=len(flat),
            data=_with_final_dot(flat),
            utf8=utf8,
        )

    def mail_options(self, client: smtplib.SMTP) -> list[str]:
        options = ["SMTPUTF8", "BODY=8BITMIME"] if self.utf8 else []
        if client.has_extn("size"):
            options.append(f"SIZE={self.size}")
        return options


def _flatten(mime: EmailMessage, *, utf8: bool) -> bytes:
    out = io.BytesIO()
    policy = mime.policy
    if utf8 and isinstance(policy, EmailPolicy):  # build_mime's policy always is one
        policy = policy.clone(utf8=True)
    BytesGenerator(out, policy=policy).flatten(mime, linesep="\r\n")
    return out.getvalue()


def _with_final_dot(flat: bytes) -> bytes:
    """The DATA payload (RFC 5321 4.5.2): a dot doubled at each line start, then CRLF.CRLF."""
    body = LEADING_DOT.sub(b"..", flat)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _describe(err: BaseException) -> str:
    return str(err) or type(err).__name__


def _is_invalid_address(code: int, reply: bytes) -> bool:
    """A permanent refusal of the mailbox itself, not of the message or of us.

    An enhanced status code is trusted over the basic one: "550 5.7.1 relaying denied" is about
    our configuration, and suppressing every address over it would be a disaster.
    """
    if not 500 <= code < 600:
        return False
    enhanced = ENHANCED_STATUS.match(reply)
    if enhanced is not None:
        return enhanced.group(1) == b"5" and enhanced.group(2) == b"1"
    return code in NO_SUCH_MAILBOX


def _refusal_result(mail: _Mail, stage: str, code: int, reply: bytes) -> SendResult:
    error = f"SMTP {stage}: {code} {_text(reply)}"
    if 400 <= code < 500:
        return SendResult(mail.delivery_id, False, error=error, transient=True)
    invalid = stage == "RCPT" and _is_invalid_address(code, reply)
    return SendResult(mail.delivery_id, False, error=error, invalid_address=invalid)


def _sender_refusal(code: int, reply: bytes) -> BackendError:
    message = f"SMTP MAIL FROM: {code} {_text(reply)}"
    if 500 <= code < 600:
        return PermanentBackendError(message, status=code)
    return TransientBackendError(message, status=code)


def _connect_refusal(stage: str, where: str, code: int, reply: bytes | str) -> BackendError:
    """The error for a reply refusing us before any transaction: nothing was sent."""
    message = f"SMTP {where} {stage}: {code} {_text(reply)}"
    if code == CLOSING or (stage == "greeting" and 400 <= code < 500):
        return ThrottledBackendError(message, status=code)
    if 500 <= code < 600:
        return PermanentBackendError(message, status=code)
    return TransientBackendError(message, status=code)  # other 4xx, or a code that makes no sense


def _connect_error(stage: str, where: str, err: OSError) -> BackendError:
    if isinstance(err, smtplib.SMTPResponseException):  # greeting, EHLO, STARTTLS or AUTH reply
        return _connect_refusal(stage, where, err.smtp_code, err.smtp_error)
    if isinstance(err, smtplib.SMTPNotSupportedError | ssl.SSLCertVerificationError):
        return PermanentBackendError(f"SMTP {where} {stage}: {err}")  # configuration: no retry
    if stage == "AUTH" and type(err) is smtplib.SMTPException:  # no AUTH mechanism in common
        return PermanentBackendError(f"SMTP {where} {stage}: {err}")
    return TransientBackendError(f"SMTP {where} {stage}: {_describe(err)}")  # refused, timeout...


class SmtpBackend(EmailBackend):
    """Hands messages to an SMTP server (a relay, Postfix, Mailpit...). Thread-safe."""

    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: TlsMode = "none",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        clock: Clock,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if tls not in ("none", "starttls", "ssl"):
            raise ValueError(f"tls must be none, starttls or ssl, not {tls!r}")
        self.host, self.port, self.tls = host, port, tls
        self._username, self._password = username, password
        self._timeout = timeout
        self._clock = clock
        self._ssl_context = ssl_context
        self._conn: _Client | None = None
        self._lock = threading.Lock()
        self.connections_opened = 0  # for tests and logs: reuse shows as a small number

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def send_batch(self, message: Message, recipients: Sequence[Recipient]) -> list[SendResult]:
        with self._lock:
            results: list[SendResult] = []
            for i, recipient in enumerate(recipients):
                try:
                    result = self._send_one(message, recipient)
                except BackendError as err:
                    if not any(r.ok for r in results):
                        raise  # nothing accepted yet: the caller may retry the whole batch
                    results += _not_sent(recipients[i:], str(err))
                    break
                results.append(result)
                if result.unknown:  # the connection is in doubt: stop before sending anything more
                    reason = (
                        f"not attempted: the outcome for delivery {result.delivery_id} is unknown"
                    )
                    results += _not_sent(recipients[i + 1 :], reason)
                    break
            return results

    def _send_one(self, message: Message, recipient: Recipient) -> SendResult:
        try:
            mime = build_mime(
                message,
                recipient,
                date=self._clock(),
                message_id_domain=sender_domain(message.from_email),
            )
        except InvalidAddress as err:
            return SendResult(recipient.delivery_id, False, error=str(err))
        mail = _Mail.build(message, recipient, mime)
        failure: _NotDelivered | None = None
        for _attempt in range(2):  # a fresh connection gets one more try
            client = self._connection()
            try:
                result = self._transaction(client, mail)
            except _NotDelivered as err:
                self._discard()
                failure = err
                continue
            except BaseException:  # a time limit, an interrupt: the session's state is unknown
                self._discard()
                raise
            if result.unknown:
                self._discard()
            return result
        assert failure is not None
        raise failure.as_backend_error() from failure

    def _transaction(self, client: _Client, mail: _Mail) -> SendResult:
        """MAIL, RCPT, DATA, the message and the final dot, the reply: within one deadline.

        Raises :class:`_NotDelivered` for a failure before the final dot left (safe to retry),
        and a :class:`BackendError` when the server refuses our sender (the whole batch).
        """
        client.start(self._timeout)
        if mail.utf8 and not client.has_extn("smtputf8"):
            error = "SMTP: this address needs SMTPUTF8, which the server does not offer"
            return SendResult(mail.delivery_id, False, error=error)
        stage = "MAIL FROM"
        try:
            code, reply = client.mail(mail.sender, mail.mail_options(client))
            if code != 250:
                self._end_refused(client, code, reply, stage)
                raise _sender_refusal(code, reply)
            stage = "RCPT"
            code, reply = client.rcpt(mail.recipient)
            if code not in (250, 251):
                self._end_refused(client, code, reply, stage)
                return _refusal_result(mail, stage, code, reply)
            stage = "DATA"
            code, reply = client.docmd("DATA")
            if code != 354:
                self._end_refused(client, code, reply, stage)
                return _refusal_result(mail, stage, code, reply)
            stage = "message"
            # sendall returns only once the final dot is with the kernel: if it raises, the
            # server has at most part of the message and no end to it, so it cannot deliver it.
            client.send(mail.data)
        except OSError as err:  # disconnects, timeouts, the deadline (smtplib's errors too)
            raise _NotDelivered(f"{stage}: {_describe(err)}") from err
        return self._final_reply(client, mail)

    def _final_reply(self, client: _Client, mail: _Mail) -> SendResult:
        """The server's answer to the final dot. Without a complete one the outcome is unknown."""
        try:
            code, reply = client.getreply()
        except OSError as err:
            return _unknown(mail, _describe(err))
        if 200 <= code < 300:
            return SendResult(mail.delivery_id, True, provider_message_id=mail.message_id)
        if code == CLOSING:  # refused, and the server is hanging up: not resubmitted in this call
            self._discard()
        if 400 <= code < 600:
            return _refusal_result(mail, "after DATA", code, reply)
        return _unknown(mail, f"unreadable reply {_text(reply)!r}")

    def _end_refused(self, client: _Client, code: int, reply: bytes, stage: str) -> None:
        """Leave a refused transaction (RSET), so the connection can serve the next recipient.

        421 and nonsense codes mean the session is over or confused: raise to reconnect. If the
        RSET itself fails the connection is discarded; the refusal stands either way.
        """
        if code == CLOSING or not 400 <= code < 600:
            raise _NotDelivered(f"{stage}: {code} {_text(reply)}", closing=code == CLOSING)
        try:
            reset_code, _ = client.rset()
        except OSError:
            reset_code = 0
        if reset_code != 250:
            self._discard()

    def probe(self) -> None:
        """Connect (TLS and AUTH as configured) and say NOOP; no email is sent.

        The connection is kept for the next batch. Raises what connecting would raise, and for a
        refused NOOP the same mapping (421 throttled, 4xx transient, 5xx permanent).
        """
        with self._lock:
            if self._conn is not None:
                try:
                    self._noop(self._conn)
                    return
                except (OSError, BackendError):
                    self._discard()  # the kept connection went stale: judge by a fresh one
            client = self._connection()
            try:
                self._noop(client)
            except OSError as err:
                self._discard()
                raise TransientBackendError(f"SMTP {self._where} NOOP: {_describe(err)}") from err
            except BackendError:
                self._discard()
                raise

    def _noop(self, client: _Client) -> None:
        client.start(self._timeout)
        code, reply = client.noop()
        if code != 250:
            raise _connect_refusal("NOOP", self._where, code, reply)

    def _connection(self) -> _Client:
        if self._conn is None:
            self._conn = self._open()
            self.connections_opened += 1
        return self._conn

    def _open(self) -> _Client:
        """Connect, greeting, EHLO, STARTTLS and AUTH as configured: all within one deadline."""
        deadline = time.monotonic() + self._timeout
        client: _Client | None = None
        stage = "connect"
        try:
            if self.tls == "ssl":
                client = _SslClient(self.host, self.port, deadline, context=self._context())
            else:
                client = _Client(self.host, self.port, deadline)
            stage = "EHLO"
            client.ehlo_or_helo_if_needed()
            if self.tls == "starttls":
                stage = "STARTTLS"
                client.starttls(context=self._context())
                client.ehlo_or_helo_if_needed()  # the session starts over inside TLS
            if self._username:
                stage = "AUTH"
                client.login(self._username, self._password or "")
        except OSError as err:  # smtplib's, ssl's and socket's errors are all OSError
            if client is not None:
                client.close()
            if isinstance(err, smtplib.SMTPConnectError):  # the greeting was not 220
                stage = "greeting"
            raise _connect_error(stage, self._where, err) from err
        return client

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Say QUIT (within the timeout) and close the connection; safe to call twice."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                conn.start(self._timeout)
                conn.quit()
            except OSError:
                pass
            finally:
                conn.close()


def _not_sent(recipients: Sequence[Recipient], reason: str) -> list[SendResult]:
    return [SendResult(r.delivery_id, False, error=reason, transient=True) for r in recipients]


def _unknown(mail: _Mail, reason: str) -> SendResult:
    error = f"SMTP: no reply after the message was sent, it may have been delivered: {reason}"
    return SendResult(mail.delivery_id, False, error=error, unknown=True)
