"""SMTP backend: one connection kept across batches, one SMTP transaction per recipient.

Contract (see :mod:`drip.esp.base`): a recipient the server refuses gets its own result, 4xx
transient and 5xx permanent, with the code and the server's text. A failure to connect, to start
TLS or to log in raises: :class:`TransientBackendError` for refused connections, timeouts and 4xx
replies, :class:`PermanentBackendError` for 5xx replies (535 bad credentials), a server without
STARTTLS or AUTH, and a certificate that does not verify. Once a recipient of a batch has been
accepted, later failures are reported in the remaining results (transient) instead of raised, so a
retry of the batch cannot send twice. A dropped connection (idle timeout, 421) is reopened once.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
from collections.abc import Sequence
from email.message import EmailMessage
from typing import Literal

from drip.clock import Clock
from drip.errors import BackendError, PermanentBackendError, TransientBackendError
from drip.esp.base import EmailBackend, Message, Recipient, SendResult
from drip.esp.mime import InvalidAddress, build_mime, sender_domain

TlsMode = Literal["none", "starttls", "ssl"]


class _Dropped(Exception):
    """The connection is gone mid-transaction; worth one reconnect."""


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _error_for(stage: str, code: int, reply: bytes | str) -> BackendError:
    message = f"SMTP {stage}: {code} {_text(reply)}"
    if 500 <= code < 600:
        return PermanentBackendError(message, status=code)
    return TransientBackendError(message, status=code)  # 4xx, or a code that makes no sense


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
        self._conn: smtplib.SMTP | None = None
        self._lock = threading.Lock()
        self.connections_opened = 0  # for tests and logs: reuse shows as a small number

    def send_batch(self, message: Message, recipients: Sequence[Recipient]) -> list[SendResult]:
        with self._lock:
            results: list[SendResult] = []
            for i, recipient in enumerate(recipients):
                try:
                    results.append(self._send_one(message, recipient))
                except BackendError as err:
                    if not any(r.ok for r in results):
                        raise
                    results += [
                        SendResult(r.delivery_id, False, error=str(err), transient=True)
                        for r in recipients[i:]
                    ]
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
        for attempt in (1, 2):
            conn = self._connection()
            try:
                return self._transaction(conn, mime, message.from_email, recipient)
            except _Dropped as err:
                self._discard()
                if attempt == 2:
                    raise TransientBackendError(f"SMTP connection lost: {err}") from err
        raise AssertionError("unreachable")  # pragma: no cover

    def _transaction(
        self, conn: smtplib.SMTP, mime: EmailMessage, sender: str, recipient: Recipient
    ) -> SendResult:
        rid = recipient.delivery_id
        try:
            # Explicit envelope: never let header contents choose who receives the message.
            conn.send_message(mime, from_addr=sender, to_addrs=[recipient.email])
        except smtplib.SMTPRecipientsRefused as err:
            code, reply = next(iter(err.recipients.values()))
            if code == 421:  # the server is closing the connection, not refusing this person
                raise _Dropped(f"{code} {_text(reply)}") from err
            failure = _error_for("RCPT", code, reply)
            return SendResult(rid, False, error=str(failure), transient=_is_transient(failure))
        except smtplib.SMTPSenderRefused as err:  # about our sender, so about the whole batch
            if err.smtp_code == 421:
                raise _Dropped(f"421 {_text(err.smtp_error)}") from err
            raise _error_for("MAIL FROM", err.smtp_code, err.smtp_error) from err
        except smtplib.SMTPDataError as err:
            if err.smtp_code == 421:
                raise _Dropped(f"421 {_text(err.smtp_error)}") from err
            failure = _error_for("DATA", err.smtp_code, err.smtp_error)
            return SendResult(rid, False, error=str(failure), transient=_is_transient(failure))
        except smtplib.SMTPNotSupportedError as err:  # a UTF-8 address and no SMTPUTF8
            return SendResult(rid, False, error=f"SMTP: {err}")
        except OSError as err:  # disconnects, timeouts, anything else smtplib raises (all OSError)
            # The session is gone or in an unknown state: a fresh connection gets one more try.
            raise _Dropped(str(err) or type(err).__name__) from err
        return SendResult(rid, True, provider_message_id=str(mime["Message-ID"]))

    def _connection(self) -> smtplib.SMTP:
        if self._conn is not None:
            return self._conn
        where = f"{self.host}:{self.port}"
        conn: smtplib.SMTP | None = None
        try:
            if self.tls == "ssl":
                conn = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self._timeout, context=self._context()
                )
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self._timeout)
            if self.tls == "starttls":
                conn.starttls(context=self._context())
            if self._username:
                conn.login(self._username, self._password or "")
        except smtplib.SMTPResponseException as err:  # connect, EHLO, STARTTLS or AUTH replies
            _close(conn)
            raise _error_for(f"connect {where}", err.smtp_code, err.smtp_error) from err
        except smtplib.SMTPNotSupportedError as err:  # no STARTTLS or AUTH: configuration
            _close(conn)
            raise PermanentBackendError(f"SMTP {where}: {err}") from err
        except ssl.SSLCertVerificationError as err:  # retrying will not make it verify
            _close(conn)
            raise PermanentBackendError(f"SMTP {where}: {err}") from err
        except (OSError, smtplib.SMTPException) as err:  # refused, timeout, reset, TLS failure
            _close(conn)
            raise TransientBackendError(f"SMTP {where}: {err or type(err).__name__}") from err
        self._conn = conn
        self.connections_opened += 1
        return conn

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def _discard(self) -> None:
        _close(self._conn)
        self._conn = None

    def close(self) -> None:
        """Say QUIT and close the connection; safe to call twice."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                conn.close()


def _close(conn: smtplib.SMTP | None) -> None:
    if conn is not None:
        conn.close()


def _is_transient(error: BackendError) -> bool:
    return isinstance(error, TransientBackendError)
