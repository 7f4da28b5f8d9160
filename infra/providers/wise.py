"""Wise Platform payouts over Wise's HTTP API (httpx): recipient -> quote -> transfer -> fund.

Money moves only at the last step (funding from the Wise balance). Idempotency is Wise's
`customerTransactionId`: a UUID derived from the payout id, so every attempt for one payout
re-creates *the same* transfer and Wise answers with the existing one instead of a second.
The recipient is created before the quote so the quote can carry `targetAccount` (Wise's
documented alternative to PATCHing the quote afterwards; fees and route depend on it).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from infra.logging import get_logger
from infra.providers.base import (
    MemoryObjects,
    OwnedHttpClient,
    ProviderObjects,
    ProviderReadError,
    TransferRequest,
    TransferResult,
    WiseDestination,
    json_or_none,
    log_lookup_outcome,
    log_transfer_outcome,
    send_with_rate_limit_retry,
)
from models.money import CURRENCY_EXPONENTS

PROVIDER = "WISE"

# Fixed forever: changing it would give every payout a new Wise identity (double payment risk).
CUSTOMER_TRANSACTION_NAMESPACE = uuid.UUID("0f4b3e6a-5c1d-5b8e-9a41-6d2f7c3b9e10")

# Transfer statuses (Wise "track transfer status"). Funded ones mean money left our balance.
_AWAITING_FUNDS = "incoming_payment_waiting"
_FUNDED = frozenset({"processing", "funds_converted", "outgoing_payment_sent", "waiting_recipient_input_to_proceed"})
_DEAD = frozenset({"cancelled", "funds_refunded", "bounced_back", "charged_back"})
_DEFINITE_ERROR_STATUSES = frozenset({400, 403, 404, 422})
# A stored quote is reused until this close to its expiry; then a fresh one is created.
_QUOTE_MARGIN = timedelta(minutes=2)
_QUOTE_DEFAULT_LIFETIME = timedelta(minutes=25)


def customer_transaction_id(payout_id: str) -> str:
    """Wise's idempotency key for a payout: deterministic, independent of retry attempts."""
    return str(uuid.uuid5(CUSTOMER_TRANSACTION_NAMESPACE, str(uuid.UUID(payout_id))))


def major_units(amount_minor: int, currency: str) -> Decimal:
    """Exact decimal amount in major units, e.g. (123456, "EUR") -> Decimal("1234.56")."""
    exponent = CURRENCY_EXPONENTS[currency]
    return Decimal(amount_minor).scaleb(-exponent)


def payment_reference(payout_id: str) -> str:
    # Some routes allow only 10 characters of [A-Za-z0-9- ] (e.g. US ACH); stay inside that.
    return "SM" + payout_id.replace("-", "")[:8].upper()


class _StepFailed(Exception):
    def __init__(self, result: TransferResult) -> None:
        super().__init__(result.failure_reason)
        self.result = result


class WiseClient(OwnedHttpClient):
    name = PROVIDER

    def __init__(
        self,
        base_url: str,
        token: str,
        profile_id: str | int,
        timeout: float,
        client: httpx.AsyncClient | None = None,
        *,
        source_currency: str | None = None,
        max_rate_limit_retries: int = 2,
        rate_limit_backoff_seconds: float = 0.5,
        objects: ProviderObjects | None = None,
    ) -> None:
        # Where the Wise objects we created live (recipients, quotes, transfers). The payouts
        # worker wires the Postgres store (state.provider_objects); memory is for unit tests.
        self.objects: ProviderObjects = objects or MemoryObjects()
        if not token:
            raise ValueError("a Wise API token is required")
        try:
            self._profile_id = int(profile_id)
        except ValueError:
            raise ValueError("the Wise profile id must be an integer") from None
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = httpx.Timeout(timeout)
        self._client = client or httpx.AsyncClient()
        self._owns_client = client is None
        self._source_currency = source_currency
        self._max_retries = max_rate_limit_retries
        self._backoff = rate_limit_backoff_seconds
        self._log = get_logger(__name__)

    def __repr__(self) -> str:
        return f"WiseClient(base_url={self._base_url!r}, profile_id={self._profile_id})"

    # --- the contract ---------------------------------------------------------------------

    async def transfer(self, req: TransferRequest) -> TransferResult:
        log = self._log.bind(provider=PROVIDER, payout_id=req.payout_id)
        log.info("provider_transfer_started", amount_minor=req.amount_minor, currency=req.currency)
        try:
            transfer = await self._known_transfer(req.payout_id)
            if transfer is None:
                transfer = await self._create_transfer(req)
            result = await self._settle(transfer)
        except _StepFailed as failed:
            result = failed.result
        return log_transfer_outcome(log, result)

    async def lookup(self, req: TransferRequest) -> TransferResult | None:
        """What Wise has for this payout, without creating anything.

        The transfer id is stored (``objects``) as soon as Wise answers the create call and
        BEFORE it is funded; money moves only by funding, which needs that id. So: no stored
        id -> nothing was ever funded for this payout -> None. A stored id -> read the transfer
        (``GET /v1/transfers/{id}``): still waiting for funds -> None (the next ``transfer``
        funds this very transfer), otherwise its status as it stands."""
        log = self._log.bind(provider=PROVIDER, payout_id=req.payout_id)
        try:
            transfer = await self._known_transfer(req.payout_id)
        except _StepFailed as failed:
            result: TransferResult | None = TransferResult.unknown(PROVIDER, f"lookup_{failed.result.failure_reason}")
        else:
            if transfer is None or transfer.get("status") == _AWAITING_FUNDS:
                result = None
            else:
                result = _classify_existing(transfer)
        return log_lookup_outcome(log, result)

    async def get_transfer(self, transfer_id: str) -> dict[str, Any]:
        """One transfer as Wise has it now (reconciliation); raises ``ProviderReadError``."""
        try:
            return await self._step("status", "GET", f"/v1/transfers/{transfer_id}", None)
        except _StepFailed as failed:
            raise ProviderReadError(failed.result.failure_reason or "unreadable") from None

    async def list_transfers(self, since: datetime | None = None, page_size: int = 100) -> list[dict[str, Any]]:
        """Every transfer of our profile created since ``since`` (reconciliation)."""
        found: list[dict[str, Any]] = []
        offset = 0
        while True:
            query = f"/v1/transfers?profile={self._profile_id}&limit={page_size}&offset={offset}"
            if since is not None:
                query += f"&createdDateStart={since.date().isoformat()}"
            try:
                page = await self._step_any("list", "GET", query)
            except _StepFailed as failed:
                raise ProviderReadError(failed.result.failure_reason or "unreadable") from None
            if not isinstance(page, list):
                raise ProviderReadError("list_unreadable_body")
            found.extend(t for t in page if isinstance(t, dict))
            if len(page) < page_size:
                return found
            offset += page_size

    # --- steps ----------------------------------------------------------------------------

    async def _known_transfer(self, payout_id: str) -> dict[str, Any] | None:
        stored = await self.objects.get("transfer", payout_id)
        if stored is None:
            return None
        try:
            return await self._step("status", "GET", f"/v1/transfers/{stored[0]}", None)
        except _StepFailed as failed:
            raise _StepFailed(_with_reference(failed.result, stored[0])) from None

    async def _recipient_id(self, req: TransferRequest) -> str:
        key = f"{req.recipient_ref or _destination_digest(req)}:{req.currency}"
        stored = await self.objects.get("recipient", key)
        if stored is not None:
            return stored[0]
        recipient = await self._step("recipient", "POST", "/v1/accounts", _recipient_body(req, self._profile_id))
        created = str(_required(recipient, "id", "recipient"))
        # First writer wins: a concurrent creator's recipient is reused, ours is only clutter.
        return await self.objects.put("recipient", key, created)

    async def _quote_id(self, req: TransferRequest, recipient_id: str) -> str:
        stored = await self.objects.get("quote", req.payout_id)
        if stored is not None and stored[1] is not None and stored[1] > datetime.now(UTC) + _QUOTE_MARGIN:
            return stored[0]
        quote = await self._step(
            "quote",
            "POST",
            f"/v3/profiles/{self._profile_id}/quotes",
            _quote_body(req, _as_wise_id(recipient_id), self._source_currency or req.currency),
        )
        quote_id = str(_required(quote, "id", "quote"))
        await self.objects.replace("quote", req.payout_id, quote_id, _quote_expiry(quote))
        return quote_id

    async def _create_transfer(self, req: TransferRequest) -> dict[str, Any]:
        if not isinstance(req.destination, WiseDestination):
            raise TypeError("WiseClient needs a WiseDestination")
        recipient_id = await self._recipient_id(req)
        quote_id = await self._quote_id(req, recipient_id)
        body = {
            "targetAccount": _as_wise_id(recipient_id),
            "quoteUuid": quote_id,
            "customerTransactionId": customer_transaction_id(req.payout_id),
            "details": {"reference": payment_reference(req.payout_id)},
        }
        transfer = await self._step("transfer", "POST", "/v1/transfers", body)
        transfer_id = str(_required(transfer, "id", "transfer"))
        # Stored before funding: from here on every lookup reads this transfer, never creates.
        await self.objects.put("transfer", req.payout_id, transfer_id)
        return transfer

    async def _settle(self, transfer: dict[str, Any]) -> TransferResult:
        """Fund a fresh transfer; a transfer an earlier attempt already funded is reported as
        it stands, never funded twice."""
        if transfer.get("status") != _AWAITING_FUNDS:
            return _classify_existing(transfer)
        transfer_id = str(transfer["id"])
        try:
            funding = await self._step(
                "fund", "POST", f"/v3/profiles/{self._profile_id}/transfers/{transfer_id}/payments", {"type": "BALANCE"}
            )
        except _StepFailed as failed:
            if failed.result.failure_reason != "transfer.invalid-state":
                raise _StepFailed(_with_reference(failed.result, transfer_id)) from None
            # Already funded (a lost earlier response) or cancelled: ask Wise which.
            try:
                current = await self._step("status", "GET", f"/v1/transfers/{transfer_id}", None)
            except _StepFailed as unreadable:
                raise _StepFailed(_with_reference(unreadable.result, transfer_id)) from None
            return _classify_existing(current)
        status = funding.get("status")
        if status == "COMPLETED":
            return TransferResult.success(PROVIDER, transfer_id)
        if status == "REJECTED":
            return TransferResult.refused(PROVIDER, str(funding.get("errorCode") or "funding_rejected"), transfer_id)
        return TransferResult.unknown(PROVIDER, "unreadable_funding_body", transfer_id)

    async def _step(self, step: str, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        parsed = await self._step_any(step, method, path, body)
        if isinstance(parsed, dict):
            return parsed
        raise _StepFailed(TransferResult.unknown(PROVIDER, f"{step}_unreadable_body"))

    async def _step_any(self, step: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = dict(self._headers)
        content: bytes | None = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = dumps_exact(body).encode()
        try:
            response = await send_with_rate_limit_retry(
                lambda: self._client.request(
                    method, f"{self._base_url}{path}", content=content, headers=headers, timeout=self._timeout
                ),
                max_retries=self._max_retries,
                backoff_seconds=self._backoff,
            )
        except httpx.TimeoutException:
            raise _StepFailed(TransferResult.unknown(PROVIDER, f"{step}_timeout")) from None
        except httpx.TransportError as exc:
            raise _StepFailed(
                TransferResult.unknown(PROVIDER, f"{step}_transport_error:{type(exc).__name__}")
            ) from None
        parsed = json_or_none(response)
        if 200 <= response.status_code < 300:
            if isinstance(parsed, dict | list):
                return parsed
            raise _StepFailed(TransferResult.unknown(PROVIDER, f"{step}_unreadable_body"))
        failed = classify_error(response.status_code, parsed, step)
        # Only the machine code: Wise's messages can echo back what we sent (IBAN, name).
        self._log.info(
            "provider_step_failed",
            provider=PROVIDER,
            step=step,
            http_status=response.status_code,
            failure_reason=failed.failure_reason,
        )
        raise _StepFailed(failed)


# --- pure classification and request building --------------------------------------------


def classify_error(status: int, body: Any, step: str) -> TransferResult:
    code = wise_error_code(body)
    if status == 401:
        return TransferResult.refused(PROVIDER, "wise_auth")
    if code == "transfer.invalid-state":
        # Not a refusal: the transfer exists and was funded or cancelled already. The fund step
        # resolves it with a status read; anywhere else it stays unknown.
        return TransferResult.unknown(PROVIDER, code)
    if status in _DEFINITE_ERROR_STATUSES:
        return TransferResult.refused(PROVIDER, code or f"{step}_http_{status}")
    if status == 409:
        return TransferResult.unknown(PROVIDER, f"{step}_conflict")
    if status == 429:
        return TransferResult.unknown(PROVIDER, f"{step}_rate_limited")
    return TransferResult.unknown(PROVIDER, f"{step}_http_{status}")


def wise_error_code(body: Any) -> str | None:
    """Wise answers errors as {"errors": [{"code", "message", "path"}]}, as
    {"error": "...", "error_description": "..."} (auth), or as {"errorCode": ...}."""
    if not isinstance(body, dict):
        return None
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict) and errors[0].get("code"):
        return str(errors[0]["code"])
    for key in ("errorCode", "error", "code"):
        if isinstance(body.get(key), str) and body[key]:
            return str(body[key])
    return None


def _classify_existing(transfer: dict[str, Any]) -> TransferResult:
    """An existing transfer as it stands: funded -> done, dead -> refused, else unknown."""
    transfer_id = str(transfer.get("id"))
    status = transfer.get("status")
    if status in _FUNDED:
        return TransferResult.success(PROVIDER, transfer_id)
    if status in _DEAD:
        return TransferResult.refused(PROVIDER, f"wise_status_{status}", transfer_id)
    return TransferResult.unknown(PROVIDER, f"wise_status_{status}", transfer_id)


def _destination_digest(req: TransferRequest) -> str:
    dest = req.destination
    assert isinstance(dest, WiseDestination)
    raw = "|".join((dest.holder_name, dest.iban.replace(" ", "").upper(), dest.bic or "", dest.legal_type))
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def _as_wise_id(value: str) -> Any:
    return int(value) if value.isdigit() else value


def _quote_expiry(quote: dict[str, Any]) -> datetime:
    raw = quote.get("expirationTime")
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.now(UTC) + _QUOTE_DEFAULT_LIFETIME


def _with_reference(result: TransferResult, reference: str) -> TransferResult:
    return TransferResult(result.status, result.provider, reference, result.failure_reason, result.definite)


def _required(obj: dict[str, Any], key: str, step: str) -> Any:
    value = obj.get(key)
    if value is None or value == "":
        raise _StepFailed(TransferResult.unknown(PROVIDER, f"{step}_missing_{key}"))
    return value


def _recipient_body(req: TransferRequest, profile_id: int) -> dict[str, Any]:
    dest = req.destination
    if not isinstance(dest, WiseDestination):
        raise TypeError("WiseClient needs a WiseDestination")
    details: dict[str, Any] = {"legalType": dest.legal_type, "IBAN": dest.iban.replace(" ", "").upper()}
    if dest.bic:
        details["BIC"] = dest.bic
    return {
        "currency": req.currency,
        "type": "iban",
        "profile": profile_id,
        "accountHolderName": dest.holder_name,
        "details": details,
    }


def _quote_body(req: TransferRequest, recipient_id: Any, source_currency: str) -> dict[str, Any]:
    return {
        "sourceCurrency": source_currency,
        "targetCurrency": req.currency,
        "targetAmount": major_units(req.amount_minor, req.currency),
        "targetAccount": recipient_id,
        "payOut": "BANK_TRANSFER",
        # We fund from the Wise balance; Wise prices the quote for BANK_TRANSFER pay-in otherwise.
        "preferredPayIn": "BALANCE",
    }


def dumps_exact(value: Any) -> str:
    """JSON with Decimals written as exact JSON numbers (json.dumps would need a float)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps_exact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps_exact(v) for v in value) + "]"
    return json.dumps(value)
