"""Checking and normalizing what a visitor, an integration or a CSV file gives us.

Every function either returns a clean value or raises :class:`~drip.errors.InvalidInput` naming
the field, so the HTTP layer can answer with a 4xx that says which field was wrong.

Addresses: trimmed, Unicode NFC, checked by ``email-validator`` (syntax only, no DNS), the
domain in its ASCII (IDNA) form and the whole address lowercased, local part included (see
docs/decisions.md): the stored form is also the form :mod:`drip.suppress` hashes.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from drip.content.forms import SLUG_MAX, Form
from drip.content.types import DEFAULT_FORM
from drip.engine.consent import SOURCE_MAX, USER_AGENT_MAX, clip
from drip.errors import InvalidInput
from drip.schedule import is_valid_zone

EMAIL_INPUT_MAX = 320  # refuse to even parse anything longer
LOCAL_PART_MAX = 64
NAME_MAX = 100  # Subscriber.first_name
ZONE_MAX = 64  # Subscriber.time_zone
TAG_MAX = 64  # Tag.name
TAGS_MAX = 20  # tags per signup
TAGS_INPUT_MAX = 1000
CONSENT_TEXT_MAX = 2000

# C0 and C1 controls, DEL, and the Unicode line/paragraph separators: header injection material.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Bidirectional formatting characters (embeddings, overrides, isolates, the directional marks):
# in a name they reorder what follows them in the recipient's display name and the dashboard.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SPACES = re.compile(r"\s+")
_SOURCE = re.compile(r"^[\w .:/@+-]*$")


@dataclass(frozen=True)
class SignupData:
    """A validated signup, ready to store."""

    email: str
    first_name: str = ""
    time_zone: str | None = None
    tags: tuple[str, ...] = ()
    source: str = ""
    ip: str | None = None
    user_agent: str | None = None
    consent_text: str = ""
    form: str = DEFAULT_FORM  # the signup form's slug (drip.content.forms)


def _text(value: object, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(name, "must be a string")
    return unicodedata.normalize("NFC", value)


def storable_text(value: str, field: str) -> str:
    """``value`` unchanged, or :class:`InvalidInput` on ``field`` if it holds a NUL character or
    a lone surrogate (from a JSON ``\\ud800``): PostgreSQL text cannot store either, and the
    database error would be a 500 instead of an answer naming the field."""
    if "\x00" in value:
        raise InvalidInput(field, "must not contain NUL characters")
    if not value.isascii() and _SURROGATE.search(value):
        raise InvalidInput(field, "is not valid Unicode text (it holds a lone surrogate)")
    return value


def normalize_address(value: object) -> str:
    """The canonical form of an email address, or :class:`InvalidInput` on ``email``."""
    raw = _text(value, "email").strip()
    if not raw:
        raise InvalidInput("email", "is required")
    if len(raw) > EMAIL_INPUT_MAX:
        raise InvalidInput("email", f"is too long (at most {EMAIL_INPUT_MAX} characters)")
    if _CONTROL.search(raw):
        raise InvalidInput("email", "must not contain control characters or line breaks")
    try:
        checked = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as err:
        reason = str(err).rstrip(".")
        raise InvalidInput("email", f"is not a valid email address ({reason})") from None
    if len(checked.local_part) > LOCAL_PART_MAX:  # RFC 5321; email-validator lets it pass
        raise InvalidInput("email", f"has more than {LOCAL_PART_MAX} characters before the @")
    address = checked.ascii_email or checked.normalized
    return address.lower()


def clean_name(value: object, name: str = "first_name") -> str:
    """A display name: trimmed, spaces collapsed, no control characters, at most 100 characters.

    Bidirectional formatting characters are removed, not refused: a right-to-left override would
    reverse the rest of the recipient's display name, and a visitor cannot see them to fix them.
    HTML is kept as text (``<b>`` stays ``<b>``); templates escape it when they render.
    """
    text = _BIDI.sub("", _text(value, name))
    if _CONTROL.search(text):
        raise InvalidInput(name, "must not contain line breaks or control characters")
    text = _SPACES.sub(" ", text).strip()
    if len(text) > NAME_MAX:
        raise InvalidInput(name, f"is too long (at most {NAME_MAX} characters)")
    return text


def clean_zone(value: object) -> str | None:
    """An IANA zone name, or None when empty *or unknown*.

    Forms fill this field from the visitor's browser, so a zone this host doesn't know is not the
    visitor's mistake: it is dropped (the default zone applies) instead of refusing the signup.
    Garbage (too long, control characters) is still an error.
    """
    text = _text(value, "timezone").strip()
    if not text:
        return None
    if len(text) > ZONE_MAX or _CONTROL.search(text):
        raise InvalidInput("timezone", "is not a time zone name")
    return text if is_valid_zone(text) else None


def clean_tag(value: str, name: str = "tags") -> str:
    text = unicodedata.normalize("NFC", value)
    if _CONTROL.search(text) or "," in text:
        raise InvalidInput(name, "must not contain commas or control characters in a tag")
    tag = _SPACES.sub(" ", text).strip().strip('"').strip()
    if len(tag) > TAG_MAX:
        raise InvalidInput(name, f"must hold tags of at most {TAG_MAX} characters")
    return tag.lower()


def clean_tags(value: object, name: str = "tags") -> tuple[str, ...]:
    """Tags from a comma-separated string or a list of strings: trimmed, lowercased, unique."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        if len(value) > TAGS_INPUT_MAX:
            raise InvalidInput(name, f"is too long (at most {TAGS_INPUT_MAX} characters)")
        items: list[object] = list(value.split(","))
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise InvalidInput(name, "must be a comma-separated string or a list of strings")
    tags: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidInput(name, "must be a comma-separated string or a list of strings")
        tag = clean_tag(item, name)
        if tag and tag not in tags:
            tags.append(tag)
    if len(tags) > TAGS_MAX:
        raise InvalidInput(name, f"must hold at most {TAGS_MAX} tags")
    return tuple(tags)


def clean_source(value: object) -> str:
    text = _text(value, "source").strip()
    if len(text) > SOURCE_MAX:
        raise InvalidInput("source", f"is too long (at most {SOURCE_MAX} characters)")
    if not _SOURCE.match(text):
        raise InvalidInput("source", "may only hold letters, digits, spaces and . : / @ + - _")
    return text


def clean_ip(value: object) -> str | None:
    """An IP address given by an integration (strict: a bad one is an error on ``ip``)."""
    text = _text(value, "ip").strip()
    if not text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidInput("ip", "is not an IP address") from None


def ip_or_none(value: str | None) -> str | None:
    """The peer address of a request if it is an IP address (test clients use names)."""
    try:
        return str(ipaddress.ip_address(value or ""))
    except ValueError:
        return None


def clean_form(value: object, forms: Mapping[str, Form]) -> Form:
    """The signup form a post names (``form=<slug>``); the default form when it names none.

    A slug that names no form is refused with :class:`InvalidInput` on ``form``, never replaced
    by the default: the site's HTML is wrong, and a silent default would start the wrong emails.
    """
    slug = _text(value, "form").strip()
    if not slug:
        return forms[DEFAULT_FORM]
    if len(slug) > SLUG_MAX or _CONTROL.search(slug):
        raise InvalidInput("form", f"is not a form's slug (at most {SLUG_MAX} characters)")
    found = forms.get(slug)
    if found is None:
        raise InvalidInput("form", f"{slug!r} is not a signup form of this site")
    return found


def clean_signup(
    *,
    email: object,
    first_name: object = "",
    timezone: object = None,
    tags: object = None,
    source: object = "",
    ip: str | None = None,
    user_agent: str | None = None,
    consent_text: str = "",
    form: Form | None = None,
) -> SignupData:
    """Validate every field of a signup; the first bad one raises, named. ``form`` (see
    :func:`clean_form`) adds its tags to the visitor's; ``None`` is the default form."""
    text = storable_text(_text(consent_text, "consent_text"), "consent_text").strip()
    if len(text) > CONSENT_TEXT_MAX:
        raise InvalidInput("consent_text", f"is too long (at most {CONSENT_TEXT_MAX} characters)")
    return SignupData(
        email=normalize_address(email),
        first_name=clean_name(first_name),
        time_zone=clean_zone(timezone),
        tags=tuple(dict.fromkeys((*clean_tags(tags), *(form.tags if form else ())))),
        source=clean_source(source),
        ip=ip_or_none(ip),
        user_agent=clip(user_agent, USER_AGENT_MAX),
        consent_text=text,
        form=form.slug if form else DEFAULT_FORM,
    )
