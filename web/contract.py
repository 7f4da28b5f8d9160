"""The request models of the HTTP API: what each body and query may hold, strictly.

Bodies are validated in strict mode from the raw JSON (no coercion: money is an integer
count of minor units, never a float, a string or a boolean), unknown fields are refused and
ids come out as canonical lower-case UUID strings. The same models describe the API in the
OpenAPI document (their JSON schema), so what is documented is what is enforced.

Problems pydantic's types cannot express (a month given twice, "a Stripe account or a bank
account") are :meth:`RequestModel.problems`, checked after the shape is valid.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from models.deal import DealStatus
from models.events import RoyaltyPeriod
from models.iban import is_valid_iban, normalize_iban
from models.money import CURRENCY_EXPONENTS, is_known_currency
from models.offers import MAX_REASON_CHARS
from models.pricing import month_index

MAX_HISTORY_MONTHS = 600
MAX_AMOUNT_MINOR = 10**15
MAX_PAGE = 200
# Change sequences and cursors are Postgres bigints: anything larger is refused as input
# (it would otherwise overflow in the query and answer 500).
MAX_SEQ = 2**63 - 1
Problem = dict[str, str]


def _invalid(code: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(f"spacemusic_{code}", message)


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise _invalid("uuid", "must be a UUID") from None


def _currency(value: str) -> str:
    if not is_known_currency(value):
        raise _invalid("currency", "must be a known ISO 4217 currency code, e.g. EUR")
    return value


def _period(value: str) -> str:
    try:
        month_index(value)
    except ValueError:
        raise _invalid("period", "must be a calendar month YYYY-MM") from None
    return value


def _stripped(low: int, high: int) -> Any:
    def check(value: str) -> str:
        if not low <= len(value.strip()) <= high:
            raise _invalid("length", f"is required: {low} to {high} characters")
        return value.strip()

    return check


def _country(value: str) -> str:
    if len(value) != 2 or not value.isalpha():
        raise _invalid("country", "must be an ISO 3166-1 alpha-2 code, e.g. DE")
    return value.upper()


def _stripe_account(value: str) -> str:
    if not value.startswith("acct_") or len(value) > 64:
        raise _invalid("stripe_account", "must be a Stripe connected account id (acct_...)")
    return value


def _iban(value: str) -> str:
    if not is_valid_iban(value):
        raise _invalid("iban", "must be a valid IBAN (checksum verified)")
    return normalize_iban(value)


def _bic(value: str) -> str:
    if len(value) not in (8, 11) or not value.isalnum():
        raise _invalid("bic", "must be an 8 or 11 character BIC")
    return value


Uuid = Annotated[str, AfterValidator(_uuid), WithJsonSchema({"type": "string", "format": "uuid"})]
Currency = Annotated[
    str,
    AfterValidator(_currency),
    WithJsonSchema({"type": "string", "enum": sorted(CURRENCY_EXPONENTS), "description": "ISO 4217 code"}),
]
Period = Annotated[
    str,
    AfterValidator(_period),
    WithJsonSchema({"type": "string", "pattern": r"^\d{4}-(0[1-9]|1[0-2])$", "examples": ["2024-01"]}),
]
MinorUnits = Annotated[
    int,
    Field(ge=0, le=MAX_AMOUNT_MINOR, description="an integer count of the currency's minor units (cents)"),
]
DisplayName = Annotated[
    str, AfterValidator(_stripped(1, 200)), WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 200})
]
HolderName = Annotated[
    str, AfterValidator(_stripped(2, 140)), WithJsonSchema({"type": "string", "minLength": 2, "maxLength": 140})
]
Country = Annotated[str, AfterValidator(_country), WithJsonSchema({"type": "string", "pattern": "^[A-Za-z]{2}$"})]
StripeAccount = Annotated[
    str, AfterValidator(_stripe_account), WithJsonSchema({"type": "string", "pattern": "^acct_", "maxLength": 64})
]
Iban = Annotated[str, AfterValidator(_iban), WithJsonSchema({"type": "string", "description": "IBAN"})]
Bic = Annotated[
    str, AfterValidator(_bic), WithJsonSchema({"type": "string", "pattern": "^[A-Za-z0-9]{8}([A-Za-z0-9]{3})?$"})
]


class RequestModel(BaseModel):
    """A JSON body: strict types, unknown fields refused, immutable once parsed."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    # Problem text for a field whatever went wrong with it (else derived from the error).
    FIELD_PROBLEMS: ClassVar[dict[str, str]] = {}

    def problems(self) -> list[Problem]:
        """Rules across fields, checked once the shape is valid."""
        return []


class QueryModel(RequestModel):
    """A query string: values arrive as text, so numbers are parsed; other parameters
    (e.g. a cache-buster) are ignored."""

    model_config = ConfigDict(strict=False, extra="ignore", frozen=True)


class RoyaltyPeriodIn(RequestModel):
    period: Period
    amount_minor: MinorUnits


def _duplicate_months(history: tuple[RoyaltyPeriodIn, ...]) -> list[Problem]:
    seen: set[str] = set()
    problems = []
    for i, item in enumerate(history):
        if item.period in seen:
            problems.append({"field": f"royalty_history[{i}].period", "problem": f"duplicate month {item.period}"})
        seen.add(item.period)
    return problems


class PricingRequest(RequestModel):
    """A royalty history to price: shared by POST /offers and POST /calculator, so a history
    the calculator prices is exactly one the offers API accepts."""

    currency: Currency
    royalty_history: Annotated[
        tuple[RoyaltyPeriodIn, ...],
        Field(max_length=MAX_HISTORY_MONTHS, description="monthly royalties, each month at most once"),
    ]

    def problems(self) -> list[Problem]:
        return _duplicate_months(self.royalty_history)

    def history(self) -> tuple[RoyaltyPeriod, ...]:
        return tuple(RoyaltyPeriod(period=i.period, amount_minor=i.amount_minor) for i in self.royalty_history)


class OfferIn(PricingRequest):
    """POST /offers."""

    creator_id: Uuid


class CalculatorIn(PricingRequest):
    """POST /calculator: like an offer, the creator is optional."""

    creator_id: Uuid | None = None


class CreatorIn(RequestModel):
    """POST /creators: without ``creator_id`` the server picks one."""

    display_name: DisplayName
    country: Country | None = None
    creator_id: Uuid | None = None


class BankAccountIn(RequestModel):
    holder_name: HolderName
    iban: Iban
    bic: Bic | None = None


class RecipientIn(RequestModel):
    """POST /creators/{creator_id}/recipients: a Stripe account, a bank account, or both."""

    currency: Currency
    stripe_account_id: StripeAccount | None = None
    bank_account: BankAccountIn | None = None

    def problems(self) -> list[Problem]:
        if self.stripe_account_id is None and self.bank_account is None:
            return [{"field": "stripe_account_id", "problem": "give a stripe_account_id, a bank_account, or both"}]
        return []


class PayoutIn(RequestModel):
    """POST /offers/{offer_id}/payout (with an ``Idempotency-Key`` header)."""

    recipient_id: Uuid


Reason = Annotated[
    str,
    AfterValidator(_stripped(1, MAX_REASON_CHARS)),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_REASON_CHARS}),
]


class ReasonIn(RequestModel):
    """POST /offers/{offer_id}/decline and /withdraw: the body is optional, and so is the
    reason (a short note shown to the other side; no personal data)."""

    reason: Reason | None = None


class DealsQuery(QueryModel):
    """GET /deals: newest first, ``cursor`` is the ``next_cursor`` of the previous page."""

    FIELD_PROBLEMS: ClassVar[dict[str, str]] = {
        "status": f"must be one of {', '.join(s.value for s in DealStatus)}",
        "limit": f"must be an integer from 1 to {MAX_PAGE}",
        "cursor": "must be the next_cursor of a previous page",
    }

    status: DealStatus | None = None
    creator_id: Uuid | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 50
    cursor: Annotated[int | None, Field(ge=0, le=MAX_SEQ)] = None


class DocumentQuery(QueryModel):
    """GET /offers/{offer_id}/documents/{kind}: ``as=url`` answers a presigned URL instead."""

    as_: Annotated[str | None, Field(alias="as", examples=["url"])] = None


class StreamQuery(QueryModel):
    """GET /offers/events/deals: ``ticket`` from POST /auth/sse-ticket (EventSource cannot
    send a header); ``last_event_id`` resumes like the ``Last-Event-ID`` header."""

    ticket: str | None = None
    last_event_id: Annotated[int | None, Field(ge=0, le=MAX_SEQ)] = None


class RetryPayoutIn(RequestModel):
    """POST /offers/{offer_id}/payout/retry (with an ``Idempotency-Key`` header): ``{}``
    retries to the failed payout's recipient, or name another recipient of the creator."""

    recipient_id: Uuid | None = None


class PayoutsQuery(QueryModel):
    """GET /payouts: ``stuck=true`` lists the payouts neither paid nor refused (parked,
    unknown, mid-call), oldest first, with their age; otherwise the latest payouts."""

    FIELD_PROBLEMS: ClassVar[dict[str, str]] = {
        "stuck": "must be true or false",
        "older_than_seconds": "must be a number of seconds, at least 0",
        "limit": f"must be an integer from 1 to {MAX_PAGE}",
    }

    stuck: bool = False
    older_than_seconds: Annotated[float, Field(ge=0, le=10**9, allow_inf_nan=False)] = 0.0
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 50


class WebhookModel(RequestModel):
    """A provider's webhook body. The signature over the raw bytes is checked first; the body
    is then read leniently (providers add fields without notice, and times are strings)."""

    model_config = ConfigDict(strict=False, extra="allow", frozen=True)


class StripeEventData(WebhookModel):
    object: dict[str, Any]


class StripeWebhookIn(WebhookModel):
    """POST /webhooks/stripe: a Stripe event, signed (``Stripe-Signature``)."""

    id: Annotated[str, Field(min_length=1, max_length=255, examples=["evt_1"])]
    type: Annotated[str, Field(min_length=1, max_length=255, examples=["transfer.reversed"])]
    created: int
    data: StripeEventData


class WiseResource(WebhookModel):
    type: str
    id: int | str


class WiseStateChangeData(WebhookModel):
    resource: WiseResource
    current_state: str
    previous_state: str | None = None
    occurred_at: datetime | None = None


class WiseWebhookIn(WebhookModel):
    """POST /webhooks/wise: a Wise event, signed (``X-Signature-SHA256``)."""

    event_type: Annotated[str, Field(min_length=1, max_length=255, examples=["transfers#state-change"])]
    schema_version: str | None = None
    subscription_id: str | None = None
    sent_at: datetime
    data: dict[str, Any]


# --- answers (the error shape; success bodies are documented per route) ---------------------


class FieldProblem(BaseModel):
    field: str
    problem: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx: a machine-readable ``error`` code, a sentence, and the fields at fault."""

    error: Annotated[str, Field(examples=["validation_failed", "not_found", "conflict", "rate_limited"])]
    message: str
    fields: list[FieldProblem] | None = Field(default=None, description="present when fields are at fault")
