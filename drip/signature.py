"""SendGrid Signed Event Webhook: ECDSA P-256 / SHA-256 over ``timestamp + raw body``.

The public key is the base64 text SendGrid shows under Mail Settings (a DER
SubjectPublicKeyInfo); a PEM block is accepted too. The signature header is the base64 of a DER
ECDSA signature. Verification runs on the exact bytes received: re-serialized JSON would fail.

Errors: :class:`SignatureError` with ``status`` 400 (a header missing, not base64, a timestamp
that is not a number) or 403 (a well-formed signature that does not verify, or a timestamp older
than the allowed age).
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from drip.errors import DripError

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
_PEM_ARMOR = re.compile(r"-----(BEGIN|END) PUBLIC KEY-----")
_ALGORITHM = ec.ECDSA(hashes.SHA256())
_FUTURE_SKEW = 300  # seconds: a sender's clock may run a little ahead of ours


class SignatureError(DripError):
    """The request is not provably from SendGrid; ``status`` is the HTTP answer to give."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The P-256 key in ``text``; ValueError saying what is wrong with it."""
    body = "".join(_PEM_ARMOR.sub("", text).split())
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 (paste the key exactly as SendGrid shows it)") from None
    try:
        key = load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("not a public key (expected SendGrid's base64 verification key)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("not an ECDSA P-256 public key")
    return key


def verify(
    key: ec.EllipticCurvePublicKey,
    *,
    signature: str | None,
    timestamp: str | None,
    body: bytes,
    now: datetime,
    max_age: int,
) -> None:
    """Return if ``body`` is signed by ``key``; raise :class:`SignatureError` otherwise."""
    if not signature or not timestamp:
        raise SignatureError(400, f"{SIGNATURE_HEADER} and {TIMESTAMP_HEADER} are required")
    stamp = timestamp.strip()
    if not stamp.isascii() or not stamp.isdigit():
        raise SignatureError(400, f"{TIMESTAMP_HEADER} must be unix seconds")
    try:
        raw_signature = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(400, f"{SIGNATURE_HEADER} is not base64") from None
    try:
        key.verify(raw_signature, stamp.encode() + body, _ALGORITHM)
    except InvalidSignature:
        raise SignatureError(403, "signature does not verify") from None
    if max_age:
        age = now.timestamp() - int(stamp)
        if age > max_age or age < -_FUTURE_SKEW:
            raise SignatureError(403, "timestamp outside the allowed age")


def sign(private_key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    """The signature header SendGrid would send (tests and benchmarks sign with this)."""
    return base64.b64encode(private_key.sign(timestamp.encode() + body, _ALGORITHM)).decode()
