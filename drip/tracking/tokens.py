"""Signed tracking tokens: one truncated HMAC-SHA256 per token, no JSON, no compression.

Open token: ``<delivery_id>.<sig>``; click token: ``<delivery_id>.<n>.<url_b64>.<sig>`` where
``url_b64`` is the exact target URL in unpadded base64url and ``sig`` signs the delivery id, the
link's position ``n`` and that URL. So a click token redirects to one URL only, the one the email
carried: editing any part (another URL, another delivery) breaks the signature, and there is no
open redirect. The ids inside are not secret; what cannot be guessed is the signature.

Opens and clicks use keys derived from ``DRIP_SECRET_KEY`` for each purpose, so a token of one
kind is never valid as the other (nor as any other drip token). Tokens never expire: a click in
an old email must keep working.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from functools import lru_cache

from drip.macs import PrekeyedHmac
from drip.tokens import BadToken

SIG_BYTES = 16  # 128 bits: unforgeable, and 22 characters in a link
_MAX_ID = 19  # digits of a BIGINT


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as err:
        raise BadToken("invalid link") from err


def _number(text: str) -> int:
    if not (0 < len(text) <= _MAX_ID and text.isascii() and text.isdigit()):
        raise BadToken("invalid link")
    return int(text)


class TrackingSigner:
    """Makes and reads tracking URLs for one secret and public URL (build once, reuse)."""

    def __init__(self, secret: str, public_url: str) -> None:
        master = secret.encode()
        self._open_mac = PrekeyedHmac(hmac.digest(master, b"drip/tracking/open", "sha256"))
        self._click_mac = PrekeyedHmac(hmac.digest(master, b"drip/tracking/click", "sha256"))
        self.public_url = public_url.rstrip("/")
        self._open_prefix = f"{self.public_url}/t/o/"
        self._click_prefix = f"{self.public_url}/t/c/"

    # ------------------------------------------------------------------ opens

    def _open_sig(self, delivery: str) -> str:
        return _b64(self._open_mac.digest(delivery.encode())[:SIG_BYTES])

    def open_token(self, delivery_id: int) -> str:
        delivery = str(delivery_id)
        return f"{delivery}.{self._open_sig(delivery)}"

    def open_url(self, delivery_id: int) -> str:
        return f"{self._open_prefix}{self.open_token(delivery_id)}.gif"

    def read_open(self, token: str) -> int:
        """The delivery id of a genuine open token; :class:`BadToken` otherwise."""
        delivery, _, sig = token.partition(".")
        number = _number(delivery)
        if not hmac.compare_digest(sig.encode(), self._open_sig(delivery).encode()):
            raise BadToken("invalid link")
        return number

    # ------------------------------------------------------------------ clicks

    def _click_sig(self, head: str, url: bytes) -> str:
        # head is "<delivery>.<n>." so that no two (delivery, n, url) share a signed string.
        return _b64(self._click_mac.digest(head.encode() + url)[:SIG_BYTES])

    def click_token(self, delivery_id: int, index: int, url: str) -> str:
        encoded, url_b64 = _encoded_url(url)
        head = f"{delivery_id}.{index}."
        return f"{head}{url_b64}.{self._click_sig(head, encoded)}"

    def click_url(self, delivery_id: int, index: int, url: str) -> str:
        return self._click_prefix + self.click_token(delivery_id, index, url)

    def read_click(self, token: str) -> tuple[int, int, str]:
        """``(delivery_id, n, url)`` of a genuine click token; :class:`BadToken` otherwise."""
        parts = token.split(".")
        if len(parts) != 4:
            raise BadToken("invalid link")
        delivery, index, url_b64, sig = parts
        delivery_id, number = _number(delivery), _number(index)
        raw = _unb64(url_b64)
        expected = self._click_sig(f"{delivery}.{index}.", raw)
        if not hmac.compare_digest(sig.encode(), expected.encode()):
            raise BadToken("invalid link")
        try:
            url = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadToken("invalid link") from err
        if not url.lower().startswith(("https://", "http://")):
            raise BadToken("invalid link")  # we only ever sign web links
        return delivery_id, number, url


@lru_cache(maxsize=256)
def _encoded_url(url: str) -> tuple[bytes, str]:
    """The URL's bytes and base64url form: computed once per link of a message, not per email."""
    raw = url.encode("utf-8")
    return raw, _b64(raw)


@lru_cache(maxsize=8)
def signer_for(secret: str, public_url: str) -> TrackingSigner:
    """One signer per (secret, public URL) per process."""
    return TrackingSigner(secret, public_url)
