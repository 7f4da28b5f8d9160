"""Provider webhook signatures: is this delivery really from Stripe / Wise, and fresh?

- Stripe signs ``<timestamp>.<raw body>`` with HMAC-SHA256 under the endpoint's signing
  secret (``Stripe-Signature: t=...,v1=...``). The official library checks it, including the
  timestamp's tolerance (a captured delivery replayed later is stale).
- Wise signs the raw body with RSA-SHA256 (PKCS#1 v1.5) under its private key, base64 in
  ``X-Signature-SHA256``; we verify with Wise's public key. The signature carries no
  timestamp, so staleness is judged from the signed body's ``sent_at``.

Replays inside the tolerance are caught by the caller's dedup on the provider's event id.
A failure raises ``WebhookRejected`` with a short machine code (never the payload, which may
name accounts).
"""

from __future__ import annotations

import base64
import binascii
import functools
from datetime import UTC, datetime

import stripe
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

DEFAULT_TOLERANCE_SECONDS = 300
# Webhook bodies are small (one event); anything larger is refused before it is read whole.
MAX_WEBHOOK_BYTES = 64 * 1024


class WebhookRejected(Exception):
    """The delivery is not one we accept: ``reason`` is a machine code for logs and the 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify_stripe(body: bytes, header: str | None, secret: str, tolerance: int = DEFAULT_TOLERANCE_SECONDS) -> None:
    if not secret:
        raise WebhookRejected("not_configured")
    if not header:
        raise WebhookRejected("missing_signature")
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookRejected("bad_signature") from None
    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance)
    except stripe.SignatureVerificationError as exc:
        # The library says "Timestamp outside the tolerance zone" for a stale (or future) t=.
        raise WebhookRejected("stale" if "tolerance" in str(exc) else "bad_signature") from None


@functools.lru_cache(maxsize=4)
def load_wise_public_key(pem: str) -> rsa.RSAPublicKey:
    """A PEM public key; ``\\n`` escapes are accepted so the key fits on one env-file line."""
    text = pem.strip().replace("\\n", "\n")
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("WISE_WEBHOOK_PUBLIC_KEY is not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("WISE_WEBHOOK_PUBLIC_KEY must be an RSA public key")
    return key


def verify_wise(body: bytes, header: str | None, public_key_pem: str) -> None:
    if not public_key_pem.strip():
        raise WebhookRejected("not_configured")
    if not header:
        raise WebhookRejected("missing_signature")
    try:
        signature = base64.b64decode(header, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected("bad_signature") from None
    try:
        key = load_wise_public_key(public_key_pem)
    except ValueError:  # Settings refuses a malformed key at start-up; never a 500 here
        raise WebhookRejected("not_configured") from None
    try:
        key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise WebhookRejected("bad_signature") from None


def check_fresh(sent_at: datetime, now: datetime | None = None, tolerance: int = DEFAULT_TOLERANCE_SECONDS) -> None:
    """Wise: the signed ``sent_at`` must be within ``tolerance`` of now (either side)."""
    if sent_at.tzinfo is None:
        raise WebhookRejected("stale")
    now = now or datetime.now(UTC)
    if abs((now - sent_at).total_seconds()) > tolerance:
        raise WebhookRejected("stale")
