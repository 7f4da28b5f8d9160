"""Stripe Connect transfers over Stripe's plain HTTP API (httpx, no SDK).

Idempotency: every create carries `Idempotency-Key: spacemusic-payout-<payout_id>`, so a
retried request returns Stripe's stored answer instead of moving money twice. The payout id is
also the `transfer_group`, which is what `lookup` lists by.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from infra.logging import get_logger
from infra.providers.base import (
    OwnedHttpClient,
    ProviderReadError,
    StripeDestination,
    TransferRequest,
    TransferResult,
    TransferStatus,
    json_or_none,
    log_lookup_outcome,
    log_transfer_outcome,
    send_with_rate_limit_retry,
)
from models.money import CURRENCY_EXPONENTS

PROVIDER = "STRIPE"
_DEFINITE_ERROR_STATUSES = frozenset({400, 402, 403, 404})
# Where Stripe's API unit differs from ISO 4217: ISK is whole krónur in ISO (and in our minor
# units) but stays two-decimal in Stripe's API ("100" = 1 króna, multiples of 100 only).
_STRIPE_API_EXPONENTS = {"ISK": 2}


def stripe_amount(amount_minor: int, currency: str) -> int:
    """Our minor units -> the integer Stripe's `amount` expects for this currency."""
    ours = CURRENCY_EXPONENTS[currency]
    theirs = _STRIPE_API_EXPONENTS.get(currency, ours)
    if theirs < ours:
        raise ValueError(f"{currency}: Stripe's unit is coarser than ours; refusing to round money")
    return amount_minor * 10 ** (theirs - ours)


def from_stripe_amount(amount: int, currency: str) -> int | None:
    """Stripe's API integer -> our minor units; None for an unknown currency or an amount our
    unit cannot hold exactly (e.g. ISK "150" = 1.5 krónur)."""
    if currency not in CURRENCY_EXPONENTS:
        return None
    ours = CURRENCY_EXPONENTS[currency]
    factor = 10 ** (_STRIPE_API_EXPONENTS.get(currency, ours) - ours)
    return amount // factor if amount % factor == 0 else None


def idempotency_key(req: TransferRequest) -> str:
    key = f"spacemusic-payout-{req.payout_id}"
    # See TransferRequest.attempt: a fresh key only when the old one is known to replay a 5xx.
    return key if req.attempt == 0 else f"{key}-r{req.attempt}"


def needs_fresh_key(result: TransferResult) -> bool:
    """True when Stripe will replay this same failure for the same idempotency key (a stored
    5xx): only then should the caller bump `TransferRequest.attempt`, and only after a lookup
    found nothing. Timeouts, transport errors, 409 and 429 are not stored as failures, so the
    same key stays both usable and the guard against a still in-flight first request."""
    reason = result.failure_reason or ""
    return result.status is TransferStatus.UNKNOWN and reason.startswith("http_5")


class StripeClient(OwnedHttpClient):
    name = PROVIDER

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float,
        client: httpx.AsyncClient | None = None,
        *,
        max_rate_limit_retries: int = 2,
        rate_limit_backoff_seconds: float = 0.5,
    ) -> None:
        if not api_key:
            raise ValueError("a Stripe API key is required")
        self._base_url = base_url.rstrip("/")
        # httpx keeps the key inside the auth flow; it never appears in our log fields.
        self._auth = httpx.BasicAuth(api_key, "")
        self._timeout = httpx.Timeout(timeout)
        self._client = client or httpx.AsyncClient()
        self._owns_client = client is None
        self._max_retries = max_rate_limit_retries
        self._backoff = rate_limit_backoff_seconds
        self._log = get_logger(__name__)

    def __repr__(self) -> str:
        return f"StripeClient(base_url={self._base_url!r})"

    async def transfer(self, req: TransferRequest) -> TransferResult:
        if not isinstance(req.destination, StripeDestination):
            # A programming error in the caller, not a provider answer: nothing was sent.
            raise TypeError("StripeClient needs a StripeDestination")
        form = {
            "amount": str(stripe_amount(req.amount_minor, req.currency)),
            "currency": req.currency.lower(),
            "destination": req.destination.connected_account_id,
            "transfer_group": req.payout_id,
            "metadata[payout_id]": req.payout_id,
            "metadata[offer_id]": req.offer_id,
            "description": f"SpaceMusic payout {req.payout_id}",
        }
        headers = {"Idempotency-Key": idempotency_key(req)}
        log = self._log.bind(provider=PROVIDER, payout_id=req.payout_id, attempt=req.attempt)
        log.info("provider_transfer_started", amount_minor=req.amount_minor, currency=req.currency)
        try:
            response = await send_with_rate_limit_retry(
                lambda: self._client.post(
                    f"{self._base_url}/v1/transfers",
                    data=form,
                    headers=headers,
                    auth=self._auth,
                    timeout=self._timeout,
                ),
                max_retries=self._max_retries,
                backoff_seconds=self._backoff,
            )
        except httpx.TimeoutException:
            result = TransferResult.unknown(PROVIDER, "timeout")
        except httpx.TransportError as exc:
            result = TransferResult.unknown(PROVIDER, f"transport_error:{type(exc).__name__}")
        else:
            result = classify_transfer_response(response)
            log = log.bind(http_status=response.status_code)
        return log_transfer_outcome(log, result)

    async def lookup(self, req: TransferRequest) -> TransferResult | None:
        log = self._log.bind(provider=PROVIDER, payout_id=req.payout_id)
        try:
            response = await send_with_rate_limit_retry(
                lambda: self._client.get(
                    f"{self._base_url}/v1/transfers",
                    params={"transfer_group": req.payout_id, "limit": "1"},
                    auth=self._auth,
                    timeout=self._timeout,
                ),
                max_retries=self._max_retries,
                backoff_seconds=self._backoff,
            )
        except httpx.TimeoutException:
            result: TransferResult | None = TransferResult.unknown(PROVIDER, "lookup_timeout")
        except httpx.TransportError as exc:
            result = TransferResult.unknown(PROVIDER, f"lookup_transport_error:{type(exc).__name__}")
        else:
            result = classify_lookup_response(response)
            log = log.bind(http_status=response.status_code)
        return log_lookup_outcome(log, result)

    async def list_transfers(self, since: datetime | None = None, page_size: int = 100) -> list[dict[str, Any]]:
        """Every transfer on the account created since ``since`` (reconciliation), newest
        first, following Stripe's cursor (``starting_after``); raises ``ProviderReadError``."""
        found: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": str(page_size)}
        if since is not None:
            params["created[gte]"] = str(int(since.timestamp()))
        while True:
            try:
                response = await send_with_rate_limit_retry(
                    lambda: self._client.get(
                        f"{self._base_url}/v1/transfers", params=params, auth=self._auth, timeout=self._timeout
                    ),
                    max_retries=self._max_retries,
                    backoff_seconds=self._backoff,
                )
            except httpx.HTTPError as exc:
                raise ProviderReadError(f"list_{type(exc).__name__}") from None
            body = json_or_none(response)
            if response.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
                raise ProviderReadError(f"list_http_{response.status_code}")
            page = [t for t in body["data"] if isinstance(t, dict)]
            found.extend(page)
            if not body.get("has_more") or not page:
                return found
            params["starting_after"] = str(page[-1]["id"])


def classify_transfer_response(response: httpx.Response) -> TransferResult:
    status = response.status_code
    body = json_or_none(response)
    if 200 <= status < 300:
        transfer_id = body.get("id") if isinstance(body, dict) else None
        if isinstance(transfer_id, str) and transfer_id:
            return TransferResult.success(PROVIDER, transfer_id)
        # Stripe said yes but we cannot read what: the money may have moved.
        return TransferResult.unknown(PROVIDER, "unreadable_success_body")
    if status == 401:
        return TransferResult.refused(PROVIDER, "stripe_auth")
    error = _stripe_error(body)
    if error is not None and error.get("type") == "idempotency_error":
        # Same key, different parameters: an earlier request under this key exists and may
        # have executed. Never a reason to fall back.
        return TransferResult.unknown(PROVIDER, "idempotency_error")
    if status in _DEFINITE_ERROR_STATUSES and error is not None:
        reason = error.get("code") or error.get("type") or f"http_{status}"
        return TransferResult.refused(PROVIDER, str(reason))
    if status == 409:
        return TransferResult.unknown(PROVIDER, "idempotency_conflict")
    if status == 429:
        return TransferResult.unknown(PROVIDER, "rate_limited")
    # 5xx, a 4xx without Stripe's error body (a proxy?), anything unexpected: not knowable.
    return TransferResult.unknown(PROVIDER, f"http_{status}")


def classify_lookup_response(response: httpx.Response) -> TransferResult | None:
    body = json_or_none(response)
    if response.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
        # A failed lookup proves nothing either way: never turn it into "not found".
        return TransferResult.unknown(PROVIDER, f"lookup_http_{response.status_code}")
    data: list[Any] = body["data"]
    if not data:
        return None
    transfer = data[0]
    transfer_id = transfer.get("id") if isinstance(transfer, dict) else None
    if not isinstance(transfer_id, str):
        return TransferResult.unknown(PROVIDER, "lookup_unreadable_body")
    if transfer.get("reversed") is True:
        return TransferResult.refused(PROVIDER, "reversed", reference=transfer_id)
    return TransferResult.success(PROVIDER, transfer_id)


def _stripe_error(body: Any) -> dict[str, Any] | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]
    return None
