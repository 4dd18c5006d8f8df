"""Where outgoing webhooks go: the event types, and the endpoints that want them.

An endpoint is a URL, the event types it wants, and its signing secret in the Standard Webhooks
form ``whsec_<base64 of 24 to 64 random bytes>``. Endpoints come from two places:

- ``DRIP_OUTGOING_WEBHOOKS``: a JSON list of objects ``{"url", "events", "secret"}``, or with
  ``"secret_env"`` (the name of the environment variable holding the secret) instead of
  ``"secret"``; read with the other settings (:mod:`drip.settings`);
- ``webhooks.toml`` beside the lessons folder (``content/webhooks.toml``): ``[[endpoints]]``
  tables with ``url``, ``events`` and ``secret_env`` only, since a secret never lives in the
  repository; read when the runtime is built (:func:`drip.outgoing.load_endpoints`).

This module only parses and checks. Every problem raises ``ValueError`` naming the entry
(``entry 2 (https://...)``) and its key; a secret's value is never quoted. It sits in the bottom
layer because the settings validate ``DRIP_OUTGOING_WEBHOOKS`` with it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

# Event types: "<what it is about>.<what happened to it>", lower case, past tense.
SUBSCRIBER_SUBSCRIBED = "subscriber.subscribed"  # signed up (pending the confirmation click)
SUBSCRIBER_CONFIRMED = "subscriber.confirmed"  # clicked the confirmation link: active
SUBSCRIBER_UNSUBSCRIBED = "subscriber.unsubscribed"  # any unsubscribe path
TAG_ADDED = "tag.added"  # a tag was put on a subscriber
SEQUENCE_COMPLETED = "sequence.completed"  # a subscriber got the last email of a sequence
PURCHASE_COMPLETED = "purchase.completed"  # the checkout reported a sale
EMAIL_BOUNCED = "email.bounced"  # the recipient's server refused an email for good
EMAIL_COMPLAINED = "email.complained"  # the recipient marked an email as spam
EVENT_TYPES = (
    SUBSCRIBER_SUBSCRIBED,
    SUBSCRIBER_CONFIRMED,
    SUBSCRIBER_UNSUBSCRIBED,
    TAG_ADDED,
    SEQUENCE_COMPLETED,
    PURCHASE_COMPLETED,
    EMAIL_BOUNCED,
    EMAIL_COMPLAINED,
)

SECRET_PREFIX = "whsec_"
SECRET_BYTES = (24, 64)  # the Standard Webhooks range of a secret's length
SECRET_HINT = (
    'must be "whsec_" followed by the base64 of 24 to 64 random bytes '
    '(echo "whsec_$(openssl rand -base64 32)")'
)
URL_MAX = 2000
_ENV_KEYS = frozenset({"url", "events", "secret", "secret_env"})
_TOML_KEYS = frozenset({"url", "events", "secret_env"})


@dataclass(frozen=True)
class Endpoint:
    """One receiver: where to post, which event types, and the secret that signs each post."""

    url: str
    events: frozenset[str]
    secret: str = field(repr=False)  # whsec_<base64>; never logged, never stored in the database

    def wants(self, event_type: str) -> bool:
        return event_type in self.events

    @property
    def key(self) -> bytes:
        """The HMAC key: the secret's base64 part, decoded."""
        return secret_key(self.secret)


def secret_key(secret: str) -> bytes:
    """The key of a ``whsec_<base64>`` secret; ValueError (without the value) if malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(SECRET_HINT)
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(SECRET_HINT) from None
    if not SECRET_BYTES[0] <= len(key) <= SECRET_BYTES[1]:
        raise ValueError(SECRET_HINT)
    return key


def parse_setting(value: object, environ: Mapping[str, str] | None = None) -> tuple[Endpoint, ...]:
    """``DRIP_OUTGOING_WEBHOOKS``: a JSON text (or its list already decoded, or endpoints)."""
    if isinstance(value, tuple) and all(isinstance(item, Endpoint) for item in value):
        return value
    if isinstance(value, str):
        if not value.strip():
            return ()
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"not JSON ({err.msg} at character {err.pos})") from None
    return parse_entries(value, environ=environ, inline_secrets=True)


def read_toml(path: Path, environ: Mapping[str, str] | None = None) -> tuple[Endpoint, ...]:
    """The ``[[endpoints]]`` of a ``webhooks.toml``; none if the file does not exist."""
    if not path.is_file():
        return ()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"not TOML: {err}") from None
    unknown = sorted(set(data) - {"endpoints"})
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (only [[endpoints]] tables)")
    return parse_entries(data.get("endpoints", []), environ=environ, inline_secrets=False)


def parse_entries(
    entries: object, *, environ: Mapping[str, str] | None, inline_secrets: bool
) -> tuple[Endpoint, ...]:
    """Check each entry; ``inline_secrets``: whether ``secret`` may hold the value itself."""
    if not isinstance(entries, list):
        raise ValueError("must be a list of endpoints")
    env = os.environ if environ is None else environ
    endpoints: list[Endpoint] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries, start=1):
        label = f"entry {number}"
        if isinstance(entry, dict) and isinstance(entry.get("url"), str):
            label += f" ({entry['url'][:200]})"
        try:
            endpoint = _endpoint(entry, env, inline_secrets)
        except ValueError as err:
            raise ValueError(f"{label}: {err}") from None
        if endpoint.url in seen:
            raise ValueError(f"{label}: url: listed twice")
        seen.add(endpoint.url)
        endpoints.append(endpoint)
    return tuple(endpoints)


def _endpoint(entry: object, env: Mapping[str, str], inline_secrets: bool) -> Endpoint:
    if not isinstance(entry, dict):
        raise ValueError("must be an object with url, events and a secret")
    allowed = _ENV_KEYS if inline_secrets else _TOML_KEYS
    unknown = sorted(set(entry) - allowed)
    if unknown:
        if unknown[0] == "secret":
            raise ValueError("secret: not in a file; name its environment variable in secret_env")
        raise ValueError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
    return Endpoint(
        url=_url(entry.get("url")), events=_events(entry.get("events")), secret=_secret(entry, env)
    )


def _url(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("url: required, an absolute http(s) URL")
    url = value.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url: must be an absolute http(s) URL")
    if len(url) > URL_MAX or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValueError(f"url: at most {URL_MAX} characters, no spaces or control characters")
    try:
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise ValueError("url: the port must be a number from 1 to 65535") from None
    return url


def _events(value: object) -> frozenset[str]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"events: required, a list of event types ({', '.join(EVENT_TYPES)})")
    for name in value:
        if name not in EVENT_TYPES:
            raise ValueError(
                f"events: unknown event type {name!r} (known: {', '.join(EVENT_TYPES)})"
            )
    return frozenset(value)


def _secret(entry: dict[str, object], env: Mapping[str, str]) -> str:
    has_secret, has_env = "secret" in entry, "secret_env" in entry
    if has_secret == has_env:
        raise ValueError("give either secret or secret_env (the environment variable holding it)")
    if has_secret:
        secret = entry["secret"]
        where = "secret"
    else:
        name = entry["secret_env"]
        if not isinstance(name, str) or not name:
            raise ValueError("secret_env: the name of an environment variable")
        if name not in env or not env[name]:
            raise ValueError(f"secret_env: the environment variable {name} is not set")
        secret = env[name]
        where = f"secret_env: {name}"
    if not isinstance(secret, str):
        raise ValueError(f"{where}: {SECRET_HINT}")
    try:
        secret_key(secret.strip())
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return secret.strip()
