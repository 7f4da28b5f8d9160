"""Payout provider adapters (Stripe, Wise) behind one contract; see docs/providers.md."""

from infra.providers.base import (
    PayoutProvider,
    StripeDestination,
    TransferRequest,
    TransferResult,
    TransferStatus,
    WiseDestination,
)
from infra.providers.stripe import StripeClient
from infra.providers.wise import WiseClient, customer_transaction_id

__all__ = [
    "PayoutProvider",
    "StripeClient",
    "StripeDestination",
    "TransferRequest",
    "TransferResult",
    "TransferStatus",
    "WiseClient",
    "WiseDestination",
    "customer_transaction_id",
]
