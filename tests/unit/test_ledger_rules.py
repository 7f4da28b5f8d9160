"""The pure ledger rules: what a valid posting is, and the payout posting rule."""

from __future__ import annotations

import dataclasses
import uuid
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.ledger import (
    CREATOR_ADVANCES_RECEIVABLE,
    Direction,
    InvalidPosting,
    LedgerEntry,
    Posting,
    UnbalancedPosting,
    balances,
    creator_payable,
    is_valid_account,
    payout_posting,
    payout_reference,
    platform_cash,
    validate_posting,
)
from models.money import CURRENCY_EXPONENTS

AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
OFFER = "6f1c2b9e-3d4a-4e5f-8a7b-1c2d3e4f5a6b"
CREATOR = "0b5e7c1d-2a3b-4c5d-9e8f-7a6b5c4d3e2f"
PAYOUT = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"


def _posting(*entries: LedgerEntry, **overrides: object) -> Posting:
    fields: dict[str, object] = {
        "reference_id": "test:1",
        "offer_id": OFFER,
        "transaction_type": "test",
        "occurred_at": AT,
        "entries": entries,
        "description": "",
    }
    fields.update(overrides)
    return Posting(**fields)  # type: ignore[arg-type]


def debit(amount: int, currency: str = "EUR", account: str = "a") -> LedgerEntry:
    return LedgerEntry(account, Direction.DEBIT, amount, currency)


def credit(amount: int, currency: str = "EUR", account: str = "b") -> LedgerEntry:
    return LedgerEntry(account, Direction.CREDIT, amount, currency)


def _payout(**overrides: object) -> Posting:
    args: dict[str, object] = {
        "payout_id": PAYOUT,
        "offer_id": OFFER,
        "creator_id": CREATOR,
        "amount_minor": 2_556_000,
        "currency": "EUR",
        "provider": "STRIPE",
        "provider_reference": "tr_123",
        "occurred_at": AT,
    }
    args.update(overrides)
    return payout_posting(**args)  # type: ignore[arg-type]


class TestValidatePosting:
    def test_balanced_posting_is_returned_unchanged(self) -> None:
        posting = _posting(debit(100), credit(60), credit(40))
        assert validate_posting(posting) is posting

    def test_balance_is_per_currency(self) -> None:
        validate_posting(_posting(debit(100, "EUR"), credit(100, "EUR"), debit(7, "USD"), credit(7, "USD")))
        # Same grand total, but EUR and USD each unbalanced: money does not convert itself.
        with pytest.raises(UnbalancedPosting, match="EUR.*USD"):
            validate_posting(_posting(debit(100, "EUR"), credit(100, "USD")))

    def test_unbalanced_is_rejected(self) -> None:
        with pytest.raises(UnbalancedPosting, match="EUR debits-credits=1"):
            validate_posting(_posting(debit(101), credit(100)))

    def test_unbalanced_is_an_invalid_posting_and_a_domain_error(self) -> None:
        from models.errors import DomainError

        assert issubclass(UnbalancedPosting, InvalidPosting)
        assert issubclass(InvalidPosting, DomainError)

    @pytest.mark.parametrize("amount", [0, -5])
    def test_non_positive_amounts_are_rejected(self, amount: int) -> None:
        # Even when the posting would "balance", the sign belongs to the direction only.
        with pytest.raises(InvalidPosting, match="positive"):
            validate_posting(_posting(debit(amount), credit(amount)))

    @pytest.mark.parametrize("amount", [1.5, True, "100"])
    def test_non_integer_amounts_are_rejected(self, amount: object) -> None:
        with pytest.raises(InvalidPosting, match="integer"):
            validate_posting(_posting(debit(amount), credit(100)))  # type: ignore[arg-type]

    def test_single_entry_is_rejected(self) -> None:
        with pytest.raises(InvalidPosting, match="at least two"):
            validate_posting(_posting(debit(100)))

    def test_no_entries_is_rejected(self) -> None:
        with pytest.raises(InvalidPosting, match="at least two"):
            validate_posting(_posting())

    def test_naive_time_is_rejected(self) -> None:
        with pytest.raises(InvalidPosting, match="timezone-aware"):
            validate_posting(_posting(debit(1), credit(1), occurred_at=datetime(2026, 11, 26, 12, 0)))

    @pytest.mark.parametrize("currency", ["eur", "XXX", "EURO", ""])
    def test_unknown_currency_is_rejected(self, currency: str) -> None:
        with pytest.raises(InvalidPosting, match="currency"):
            validate_posting(_posting(debit(1, currency), credit(1, currency)))

    @pytest.mark.parametrize("account", ["", "Platform_cash", "platform cash", "a:b:c", "cash:", ":x"])
    def test_bad_account_names_are_rejected(self, account: str) -> None:
        with pytest.raises(InvalidPosting, match="account"):
            validate_posting(_posting(debit(1, account=account), credit(1)))

    def test_direction_must_be_the_enum(self) -> None:
        with pytest.raises(InvalidPosting, match="direction"):
            validate_posting(_posting(LedgerEntry("a", "DEBIT", 1, "EUR"), credit(1)))  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("reference_id", "", "reference_id"),
            ("reference_id", " payout:1", "reference_id"),
            ("transaction_type", "", "transaction_type"),
            ("offer_id", "not-a-uuid", "offer_id"),
            ("entries", [debit(1), credit(1)], "tuple"),
        ],
    )
    def test_bad_header_fields_are_rejected(self, field: str, value: object, message: str) -> None:
        with pytest.raises(InvalidPosting, match=message):
            validate_posting(_posting(debit(1), credit(1), **{field: value}))

    def test_offer_id_may_be_absent(self) -> None:
        validate_posting(_posting(debit(1), credit(1), offer_id=None))


class TestAccounts:
    def test_provider_cash_accounts(self) -> None:
        assert platform_cash("STRIPE") == "platform_cash:stripe"
        assert platform_cash("wise") == "platform_cash:wise"
        assert is_valid_account(platform_cash("STRIPE"))

    @pytest.mark.parametrize("provider", ["NONE", "", "  "])
    def test_no_cash_account_without_a_provider(self, provider: str) -> None:
        with pytest.raises(InvalidPosting):
            platform_cash(provider)

    def test_creator_payable_is_canonical(self) -> None:
        assert creator_payable(CREATOR.upper()) == f"creator_payable:{CREATOR}"
        assert is_valid_account(creator_payable(CREATOR))
        with pytest.raises(InvalidPosting):
            creator_payable("nope")


class TestPayoutPosting:
    def test_debits_the_receivable_and_credits_the_provider_cash(self) -> None:
        posting = _payout()
        assert posting.entries == (
            LedgerEntry(CREATOR_ADVANCES_RECEIVABLE, Direction.DEBIT, 2_556_000, "EUR"),
            LedgerEntry("platform_cash:stripe", Direction.CREDIT, 2_556_000, "EUR"),
        )
        assert posting.transaction_type == "payout"
        assert posting.offer_id == OFFER
        assert posting.occurred_at == AT
        assert CREATOR in posting.description and "tr_123" in posting.description

    def test_balances(self) -> None:
        posting = _payout(provider="WISE", currency="GBP", amount_minor=1)
        assert validate_posting(posting) is posting
        assert balances(posting.entries) == {
            (CREATOR_ADVANCES_RECEIVABLE, "GBP"): 1,
            ("platform_cash:wise", "GBP"): -1,
        }

    def test_reference_is_derived_from_the_payout_only(self) -> None:
        first = _payout()
        # A redelivered event (even re-stamped, re-described) must collide on the reference.
        again = _payout(occurred_at=datetime(2027, 1, 1, tzinfo=UTC), provider_reference=None)
        assert first.reference_id == again.reference_id == f"payout:{PAYOUT}"
        assert payout_reference(PAYOUT.upper()) == payout_reference("{" + PAYOUT + "}") == first.reference_id
        other = _payout(payout_id=str(uuid.UUID(int=1)))
        assert other.reference_id != first.reference_id

    def test_same_inputs_same_posting(self) -> None:
        assert _payout() == _payout()

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("amount_minor", 0),
            ("amount_minor", -100),
            ("currency", "ZZZ"),
            ("provider", "NONE"),
            ("payout_id", "x"),
            ("offer_id", "x"),
            ("creator_id", "x"),
            ("occurred_at", datetime(2026, 11, 26)),
        ],
    )
    def test_rejects_what_cannot_be_a_successful_payout(self, field: str, value: object) -> None:
        with pytest.raises(InvalidPosting):
            _payout(**{field: value})


class TestBalances:
    def test_debit_positive_per_account_and_currency(self) -> None:
        entries = [debit(5, account="x"), credit(3, account="x"), credit(2, account="y"), debit(9, "USD", "x")]
        assert balances(entries) == {("x", "EUR"): 2, ("y", "EUR"): -2, ("x", "USD"): 9}

    def test_empty(self) -> None:
        assert balances([]) == {}


# --- properties ---------------------------------------------------------------------------

ACCOUNTS = st.sampled_from(
    [CREATOR_ADVANCES_RECEIVABLE, "platform_cash:stripe", "platform_cash:wise", f"creator_payable:{CREATOR}"]
)
AMOUNTS = st.integers(min_value=1, max_value=10**15)


@st.composite
def balanced_leg(draw: st.DrawFn, currency: str) -> list[LedgerEntry]:
    """Some debits, and their total split into some credits, all in one currency."""
    debits = draw(st.lists(AMOUNTS, min_size=1, max_size=4))
    total = sum(debits)
    cuts: list[int] = []
    if total > 1:
        cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=total - 1), max_size=3)))
    bounds = [0, *cuts, total]
    credits = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
    return [LedgerEntry(draw(ACCOUNTS), Direction.DEBIT, a, currency) for a in debits] + [
        LedgerEntry(draw(ACCOUNTS), Direction.CREDIT, a, currency) for a in credits
    ]


@st.composite
def balanced_postings(draw: st.DrawFn) -> Posting:
    currencies = draw(st.lists(st.sampled_from(sorted(CURRENCY_EXPONENTS)), min_size=1, max_size=3, unique=True))
    entries = [entry for currency in currencies for entry in draw(balanced_leg(currency))]
    entries = draw(st.permutations(entries))
    return _posting(*entries, reference_id=f"prop:{draw(st.uuids())}")


@given(balanced_postings())
def test_any_balanced_posting_validates_and_its_balances_sum_to_zero(posting: Posting) -> None:
    assert validate_posting(posting) is posting
    per_currency: dict[str, int] = defaultdict(int)
    for (_, currency), amount in balances(posting.entries).items():
        per_currency[currency] += amount
    assert set(per_currency) == {e.currency for e in posting.entries}
    assert all(total == 0 for total in per_currency.values())


@given(balanced_postings(), st.data())
def test_changing_any_one_amount_unbalances_it(posting: Posting, data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(posting.entries) - 1))
    entry = posting.entries[index]
    changed = dataclasses.replace(entry, amount_minor=entry.amount_minor + data.draw(st.integers(1, 1000)))
    entries = posting.entries[:index] + (changed,) + posting.entries[index + 1 :]
    with pytest.raises(UnbalancedPosting, match=entry.currency):
        validate_posting(dataclasses.replace(posting, entries=entries))


@given(
    amount=AMOUNTS,
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
    provider=st.sampled_from(["STRIPE", "WISE"]),
    payout_id=st.uuids(),
)
def test_any_successful_payout_posting_balances(
    amount: int, currency: str, provider: str, payout_id: uuid.UUID
) -> None:
    posting = _payout(amount_minor=amount, currency=currency, provider=provider, payout_id=str(payout_id))
    assert sum(balances(posting.entries).values()) == 0
    assert posting.reference_id == f"payout:{payout_id}"
