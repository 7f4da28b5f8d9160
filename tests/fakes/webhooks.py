"""The provider side of webhooks, for the provider fake and the tests: build, sign, send.

- Stripe: ``Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` under the
  endpoint's signing secret (Stripe's documented scheme; our side checks it with the official
  library, so this is an independent implementation of the same rule).
- Wise: ``X-Signature-SHA256: base64(RSA-SHA256 PKCS#1 v1.5 of the body)`` under a private
  key generated here (Wise's real key never leaves Wise); the web app is configured with the
  public half (``WISE_WEBHOOK_PUBLIC_KEY``). ``X-Delivery-Id`` is new for every attempt, as
  Wise documents.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# The committed dev value (infra/local/dev.env STRIPE_WEBHOOK_SECRET): `make run` with the fake just works.
DEFAULT_STRIPE_SECRET = "whsec_dev_only_local_stripe_webhook_secret_0123456789"


@dataclass
class WebhookDelivery:
    provider: str  # "stripe" | "wise"
    path: str  # /webhooks/stripe | /webhooks/wise
    event_id: str
    body: bytes
    headers: dict[str, str]
    answers: list[int] = field(default_factory=list)  # HTTP status of every send

    def public(self) -> dict[str, Any]:
        return {"provider": self.provider, "event_id": self.event_id, "path": self.path, "answers": self.answers}


def new_wise_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def stripe_signature(body: bytes, secret: str, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def wise_signature(body: bytes, key: rsa.RSAPrivateKey) -> str:
    return base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


def stripe_event_body(
    transfer: dict[str, Any], event_type: str = "transfer.reversed", event_id: str | None = None
) -> bytes:
    event = {
        "id": event_id or "evt_" + uuid.uuid4().hex[:24],
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "type": event_type,
        "data": {"object": {k: v for k, v in transfer.items() if not k.startswith("_")}},
    }
    return json.dumps(event, separators=(",", ":")).encode()


def wise_state_change_body(
    transfer: dict[str, Any], previous: str, current: str, *, profile_id: int = 4242, sent_at: datetime | None = None
) -> bytes:
    now = sent_at or datetime.now(UTC)
    event = {
        "data": {
            "resource": {"type": "transfer", "id": int(transfer["id"]), "profile_id": profile_id, "account_id": 0},
            "current_state": current,
            "previous_state": previous,
            "occurred_at": now.isoformat().replace("+00:00", "Z"),
        },
        "subscription_id": "01234567-89ab-cdef-0123-456789abcdef",
        "event_type": "transfers#state-change",
        "schema_version": "2.0.0",
        "sent_at": now.isoformat().replace("+00:00", "Z"),
    }
    return json.dumps(event, separators=(",", ":")).encode()


def signed_stripe(body: bytes, secret: str, timestamp: int | None = None) -> WebhookDelivery:
    event_id = json.loads(body)["id"]
    headers = {"Content-Type": "application/json", "Stripe-Signature": stripe_signature(body, secret, timestamp)}
    return WebhookDelivery("stripe", "/webhooks/stripe", event_id, body, headers)


def signed_wise(body: bytes, key: rsa.RSAPrivateKey) -> WebhookDelivery:
    data = json.loads(body)["data"]
    event_id = f"transfers#state-change:{data['resource']['id']}:{data['current_state']}"
    headers = {
        "Content-Type": "application/json",
        "X-Signature-SHA256": wise_signature(body, key),
        "X-Delivery-Id": str(uuid.uuid4()),
    }
    return WebhookDelivery("wise", "/webhooks/wise", event_id, body, headers)


async def send(delivery: WebhookDelivery, base_url: str, timeout: float = 10.0) -> int:
    """POST the delivery (a fresh X-Delivery-Id per Wise attempt); returns the status."""
    headers = dict(delivery.headers)
    if delivery.provider == "wise":
        headers["X-Delivery-Id"] = str(uuid.uuid4())
    async with httpx.AsyncClient(timeout=timeout) as client:
        response = await client.post(base_url.rstrip("/") + delivery.path, content=delivery.body, headers=headers)
    delivery.answers.append(response.status_code)
    return response.status_code
