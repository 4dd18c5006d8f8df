"""Build the RFC 5322 message one recipient receives (SMTP, the file outbox, the memory backend).

Contract of :func:`build_mime`: placeholders are filled with :func:`~drip.esp.base.personalize`
(the subject and text templates use the ``.t`` placeholders, the HTML the escaped ones; the caller
provides every key); the body is multipart/alternative, text/plain first, then text/html, both
utf-8. No value can add a header: CR, LF and other control characters in names, addresses, the
subject and header values are replaced by a space before they reach the header.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from email import policy
from email.headerregistry import BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime, formataddr

from drip.esp.base import Message, Recipient, personalize

# Everything below a space except TAB, and DEL: CR and LF would start a new header line, the rest
# has no business in a header either.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]+")
# Bidirectional overrides and isolates: in a display name or subject they reorder what the
# recipient reads ("moc.knab@..."). Names are cleaned at signup too; this covers stored ones.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# A plain addr-spec: one "@", no whitespace, no address-list specials. Addresses are validated
# when people subscribe; this only stops a malformed one from becoming several recipients.
_ADDR_SPEC = re.compile(r'[^\s<>()\[\],;:"@]+@[^\s<>()\[\],;:"@]+')
# RFC 5322 field-name: printable US-ASCII except the colon.
_FIELD_NAME = re.compile(r"[!-9;-~]+")
# Headers build_mime sets itself; extra headers may not replace or duplicate them.
_OWN_HEADERS = frozenset(
    h.lower()
    for h in (
        "From", "To", "Cc", "Bcc", "Reply-To", "Subject", "Date", "Message-ID",
        "X-Drip-Delivery-Id", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
    )
)  # fmt: skip


class InvalidAddress(ValueError):
    """An address is not one plain addr-spec: that recipient cannot be sent to, the batch can."""


class _VerbatimHeader(UnstructuredHeader, BaseHeader):
    """An extra header written as given when it is ASCII and fits SMTP's 998-octet line.

    The stock folder turns a long unbreakable token, such as a signed List-Unsubscribe URL, into
    RFC 2047 encoded-words, which List-Unsubscribe readers do not decode: one-click would break.
    """

    def fold(self, *, policy: Policy) -> str:
        line = f"{self.name}: {self}"
        if line.isascii() and len(line) <= 998:
            return line + policy.linesep
        return super().fold(policy=policy)


# CRLF line ends; headers with no class of their own (the extra ones) are written verbatim.
_POLICY = policy.SMTP.clone(header_factory=HeaderRegistry(default_class=_VerbatimHeader))


def clean_header_value(value: str) -> str:
    """``value`` with every run of control characters (CR, LF, ...) replaced by one space and
    bidirectional controls removed."""
    if value.isprintable():  # no control character at all: the common case, 10x cheaper
        return value.strip()
    return _BIDI.sub("", _CONTROL.sub(" ", value)).strip()


def sender_domain(email: str) -> str:
    """The domain of ``email`` for Message-IDs, so they align with the From domain."""
    domain = clean_header_value(email).rpartition("@")[2].strip(" <>")
    return domain or "drip.invalid"


def make_message_id(delivery_id: int, domain: str) -> str:
    """A globally unique Message-ID; the delivery id in it helps when reading logs."""
    return f"<drip.{delivery_id}.{secrets.token_hex(8)}@{clean_header_value(domain)}>"


def extra_headers(message: Message, recipient: Recipient) -> dict[str, str]:
    """``message.headers`` overlaid by ``recipient.headers`` (case-insensitively), cleaned.

    Raises ValueError for a malformed header name or one :func:`build_mime` sets itself: those
    come from code, not from subscribers, so they are bugs to surface, not input to repair.
    """
    merged: dict[str, tuple[str, str]] = {}
    for source in (message.headers, recipient.headers):
        for name, value in source.items():
            if not _FIELD_NAME.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if name.lower() in _OWN_HEADERS:
                raise ValueError(f"header {name!r} is set by build_mime itself")
            merged[name.lower()] = (name, clean_header_value(value))
    return dict(merged.values())


def build_mime(
    message: Message, recipient: Recipient, *, date: datetime, message_id_domain: str
) -> EmailMessage:
    """The complete message for ``recipient``; ``date`` must be timezone-aware.

    Raises :class:`InvalidAddress` for a malformed recipient, sender or reply-to address and
    ValueError for a malformed extra header (see :func:`extra_headers`).

    Header order: From, To, Reply-To (if set), Subject, Date, Message-ID, X-Drip-Delivery-Id,
    then the message's and the recipient's extra headers (List-Unsubscribe, ...). The policy is
    ``email.policy.SMTP`` (CRLF line ends), so the bytes are ready for the wire or an .eml file;
    extra headers that are ASCII are never folded or encoded (List-Unsubscribe URLs stay intact).
    """
    if date.tzinfo is None:
        raise ValueError("build_mime needs a timezone-aware date")
    subs: Mapping[str, str] = recipient.substitutions
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = _address(message.from_name, message.from_email)
    msg["To"] = _address(recipient.name, recipient.email)
    if message.reply_to:
        msg["Reply-To"] = _address("", message.reply_to)
    msg["Subject"] = clean_header_value(personalize(message.subject, subs))
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = make_message_id(recipient.delivery_id, message_id_domain)
    msg["X-Drip-Delivery-Id"] = str(recipient.delivery_id)
    for name, value in extra_headers(message, recipient).items():
        msg[name] = value
    # Quoted-printable keeps every line under SMTP's 998-octet limit and the body 7-bit clean,
    # so no relay has to support 8BITMIME.
    msg.set_content(
        personalize(message.text, subs), subtype="plain", charset="utf-8", cte="quoted-printable"
    )
    msg.add_alternative(
        personalize(message.html, subs), subtype="html", charset="utf-8", cte="quoted-printable"
    )
    return msg


def _address(name: str, email: str) -> str:
    """``"Name" <email>``; :class:`InvalidAddress` if ``email`` is not one plain addr-spec."""
    if not _ADDR_SPEC.fullmatch(email):
        raise InvalidAddress(f"not a single email address: {email!r}")
    # formataddr quotes a name holding specials (":", "@", ",") and encodes non-ASCII (RFC 2047).
    return formataddr((clean_header_value(name), email))
