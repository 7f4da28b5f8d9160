"""The contract every payout provider adapter (Stripe, Wise) fulfils for the payouts agent.

The one distinction that matters for money safety is *definite* versus *unknown*: a definite
failure means the provider refused and nothing moved, so falling back to another provider is
safe; an unknown outcome means the transfer may have executed, so the caller must look it up
before doing anything else.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import httpx

from infra.retry import RetryPolicy, retry
from models.money import CURRENCY_EXPONENTS


class TransferStatus(enum.StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class StripeDestination:
    connected_account_id: str  # "acct_..."

    def __post_init__(self) -> None:
        if not self.connected_account_id.startswith("acct_"):
            raise ValueError("connected_account_id must be a Stripe account id (acct_...)")


@dataclass(frozen=True)
class WiseDestination:
    # Personal data: kept out of repr so a logged or raised request never carries it.
    holder_name: str = field(repr=False)
    iban: str = field(repr=False)
    bic: str | None = field(default=None, repr=False)
    legal_type: str = "PRIVATE"

    def __post_init__(self) -> None:
        if self.legal_type not in ("PRIVATE", "BUSINESS"):
            raise ValueError("legal_type must be PRIVATE or BUSINESS")
        if not self.holder_name.strip() or not self.iban.strip():
            raise ValueError("holder_name and iban are required")


Destination = StripeDestination | WiseDestination


@dataclass(frozen=True)
class TransferRequest:
    payout_id: str  # UUID; every provider idempotency key is derived from it
    offer_id: str
    amount_minor: int
    currency: str  # ISO 4217, upper case
    destination: Destination
    # Bumped by the caller (and persisted BEFORE the call) only when a Stripe idempotency key
    # is known to be poisoned: Stripe replays a stored 5xx for the same key for 24 hours, so
    # after "500, lookup finds nothing" a retry needs a fresh key. 0 keeps the plain key.
    attempt: int = 0
    # Our recipient id: lets an adapter create its provider-side recipient once per recipient
    # and currency and reuse it (Wise). None: keyed by a digest of the destination instead.
    recipient_ref: str | None = None

    def __post_init__(self) -> None:
        # Normalise to the canonical UUID spelling so "ABC..." and "abc..." map to one key.
        object.__setattr__(self, "payout_id", str(uuid.UUID(self.payout_id)))
        if not isinstance(self.amount_minor, int) or isinstance(self.amount_minor, bool):
            raise ValueError("amount_minor must be an integer")
        if self.amount_minor <= 0:
            raise ValueError("amount_minor must be positive")
        if self.currency not in CURRENCY_EXPONENTS:
            raise ValueError(f"unsupported currency {self.currency!r} (ISO 4217, upper case)")
        if self.attempt < 0:
            raise ValueError("attempt must be >= 0")


@dataclass(frozen=True)
class TransferResult:
    status: TransferStatus
    provider: str  # "STRIPE" | "WISE"
    reference: str | None  # provider's transfer id when known
    failure_reason: str | None  # short machine code, never a provider message or personal data
    definite: bool  # True: the provider's answer is final; False: the outcome is not known

    @property
    def succeeded(self) -> bool:
        return self.status is TransferStatus.SUCCEEDED

    @property
    def may_fall_back(self) -> bool:
        """Only a definite refusal makes trying another provider safe."""
        return self.status is TransferStatus.FAILED and self.definite

    @classmethod
    def success(cls, provider: str, reference: str) -> TransferResult:
        return cls(TransferStatus.SUCCEEDED, provider, reference, None, True)

    @classmethod
    def refused(cls, provider: str, reason: str, reference: str | None = None) -> TransferResult:
        return cls(TransferStatus.FAILED, provider, reference, reason, True)

    @classmethod
    def unknown(cls, provider: str, reason: str, reference: str | None = None) -> TransferResult:
        return cls(TransferStatus.UNKNOWN, provider, reference, reason, False)


@runtime_checkable
class PayoutProvider(Protocol):
    name: str

    async def transfer(self, req: TransferRequest) -> TransferResult:
        """Execute the payout, idempotently for the same request: never raises for provider
        or network errors, it classifies them."""
        ...

    async def lookup(self, req: TransferRequest) -> TransferResult | None:
        """What the provider knows about this payout. None: it has no executed transfer for
        it (safe to retry the same provider with the same idempotency key). A result with
        status UNKNOWN: the lookup itself could not complete; ask again later."""
        ...


class ProviderReadError(Exception):
    """A read-only provider call (reconciliation listing) could not be answered."""


class ProviderObjects(Protocol):
    """Objects an adapter created at its provider, stored once and reused (first writer wins)."""

    async def get(self, kind: str, key: str) -> tuple[str, datetime | None] | None: ...

    async def put(self, kind: str, key: str, object_id: str) -> str:
        """Store if absent; return the stored id (ours or the one stored first)."""
        ...

    async def replace(self, kind: str, key: str, object_id: str, expires_at: datetime | None) -> None: ...


class MemoryObjects:
    """In-process ``ProviderObjects`` for unit tests (a worker uses the Postgres store)."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], tuple[str, datetime | None]] = {}

    async def get(self, kind: str, key: str) -> tuple[str, datetime | None] | None:
        return self.items.get((kind, key))

    async def put(self, kind: str, key: str, object_id: str) -> str:
        return self.items.setdefault((kind, key), (object_id, None))[0]

    async def replace(self, kind: str, key: str, object_id: str, expires_at: datetime | None) -> None:
        self.items[(kind, key)] = (object_id, expires_at)


class OwnedHttpClient:
    """Closes the httpx client an adapter created itself (never one it was handed)."""

    _client: httpx.AsyncClient
    _owns_client: bool

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def log_transfer_outcome(log: Any, result: TransferResult) -> TransferResult:
    """The one log line per transfer call: outcome fields only, never request details."""
    log.info(
        "provider_transfer_finished",
        status=str(result.status),
        definite=result.definite,
        reference=result.reference,
        failure_reason=result.failure_reason,
    )
    return result


def log_lookup_outcome(log: Any, result: TransferResult | None) -> TransferResult | None:
    log.info(
        "provider_lookup_finished",
        found=result is not None,
        status=str(result.status) if result else None,
        reference=result.reference if result else None,
        failure_reason=result.failure_reason if result else None,
    )
    return result


# --- helpers shared by the adapters ------------------------------------------------------

_MAX_RETRY_AFTER_SECONDS = 5.0


class _RateLimited(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__("429 Too Many Requests")
        self.response = response


def _retry_after(exc: BaseException) -> float | None:
    if not isinstance(exc, _RateLimited):
        return None
    header = exc.response.headers.get("Retry-After")
    try:
        return float(header) if header is not None else None
    except ValueError:
        return None


async def send_with_rate_limit_retry(
    send: Callable[[], Awaitable[httpx.Response]], *, max_retries: int, backoff_seconds: float
) -> httpx.Response:
    """Retry only 429: the provider did not process the request, so repeating it is always
    safe. Every other outcome goes back to the adapter to classify (a timeout or 5xx may have
    executed and must be reconciled by the caller, not blindly repeated here)."""

    async def once() -> httpx.Response:
        response = await send()
        if response.status_code == 429:
            raise _RateLimited(response)
        return response

    policy = RetryPolicy("provider_rate_limit", backoff_seconds, _MAX_RETRY_AFTER_SECONDS, max_attempts=max_retries + 1)
    try:
        return await retry(policy, once, what="provider_rate_limit", retry_on=(_RateLimited,), wait_hint=_retry_after)
    except _RateLimited as limited:
        return limited.response


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
