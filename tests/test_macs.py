"""The pre-keyed HMAC and the tokens built on it are bit for bit the standard ones."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from itsdangerous import Signer

from drip.macs import PrekeyedHmac
from drip.suppress import hash_with
from drip.tokens import read_subscriber_token, subscriber_token

KEYS = [b"", b"k" * 32, b"x" * 64, b"long" * 40]
MESSAGES = [b"", b"12.0.https://lab.test/join", b"m" * 1000]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("name", ["sha256", "sha1"])
def test_the_prekeyed_hmac_is_hmac(key: bytes, name: str) -> None:
    mac = PrekeyedHmac(key, getattr(hashlib, name))
    for message in MESSAGES:
        assert mac.digest(message) == hmac.digest(key, message, name)
        assert mac.hexdigest(message) == hmac.new(key, message, name).hexdigest()


@pytest.mark.parametrize("subscriber_id", [1, 42, 987_654_321_012])
@pytest.mark.parametrize("purpose", ["unsubscribe", "preferences"])
def test_subscriber_tokens_are_the_ones_itsdangerous_made(subscriber_id: int, purpose: str) -> None:
    # Links sent before the fast signer must keep working, and new ones must read back.
    made_before = Signer("a-secret", salt=purpose).sign(str(subscriber_id)).decode()

    token = subscriber_token("a-secret", purpose, subscriber_id)

    assert token == made_before
    assert read_subscriber_token("a-secret", purpose, token) == subscriber_id


def test_the_suppression_hash_is_hmac_sha256_of_the_normalized_address() -> None:
    expected = hmac.new(b"salt", b"runner@example.com", hashlib.sha256).hexdigest()

    assert hash_with(b"salt", "  Runner@Example.COM ") == expected
