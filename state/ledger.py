"""The ledger's tables, the one way to write a posting, and the checks that recompute it.

The tables live on the projections' ``metadata`` so Alembic's target metadata knows them;
the triggers that make them append-only and balanced are in migration 0003 (SQLAlchemy
metadata cannot express them). Entries copy their transaction's offer_id, reference_id,
type and timestamp so the entry-level indexes the seed defined answer queries without a
join; a trigger in the database rejects copies that differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    CHAR,
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Identity,
    Table,
    Text,
    case,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.sql import TS, jsonable, metadata
from models.ledger import (
    ACCOUNT_PATTERN,
    PLATFORM_CASH,
    Direction,
    Posting,
    TransactionType,
    payout_reversals_prefix,
    validate_posting,
)

ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("reference_id", Text, nullable=False, unique=True),
    Column("offer_id", UUID(as_uuid=False), index=True),
    Column("transaction_type", Text, nullable=False),
    Column("transaction_timestamp", TS, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    # Overwritten with now() by a trigger: the database, not the client, says when.
    Column("created_at", TS, nullable=False, server_default=func.now()),
    CheckConstraint("reference_id <> ''", name="reference_id_not_empty"),
    CheckConstraint("transaction_type <> ''", name="transaction_type_not_empty"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    # index=True: the seed's ix_ledger_entries_id, kept by name although the primary key
    # already indexes id (see migration 0003).
    Column("id", BigInteger, Identity(always=False), primary_key=True, index=True),
    Column("transaction_id", UUID(as_uuid=False), ForeignKey(ledger_transactions.c.id), nullable=False, index=True),
    Column("offer_id", UUID(as_uuid=False), index=True),
    Column("reference_id", Text, nullable=False, index=True),
    Column("account", Text, nullable=False),
    Column("direction", Text, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", CHAR(3), nullable=False),
    Column("transaction_type", Text, nullable=False, index=True),
    Column("transaction_timestamp", TS, nullable=False, index=True),
    CheckConstraint("amount_minor > 0", name="amount_positive"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
    CheckConstraint("direction IN ('DEBIT', 'CREDIT')", name="direction"),
    CheckConstraint(f"account ~ '{ACCOUNT_PATTERN}'", name="account_name"),
)


async def post(conn: AsyncConnection, posting: Posting, transaction_id: str) -> bool:
    """Write a posting inside the caller's transaction; False if its reference is already posted.

    ON CONFLICT DO NOTHING makes a redelivered event a no-op, also against a concurrent
    writer of the same reference (the second waits for the first to commit, then skips).
    Balance is checked again by the database at COMMIT.
    """
    validate_posting(posting)
    inserted = await conn.scalar(
        insert(ledger_transactions)
        .values(
            id=transaction_id,
            reference_id=posting.reference_id,
            offer_id=posting.offer_id,
            transaction_type=posting.transaction_type,
            transaction_timestamp=posting.occurred_at,
            description=posting.description,
        )
        .on_conflict_do_nothing(index_elements=[ledger_transactions.c.reference_id])
        .returning(ledger_transactions.c.id)
    )
    if inserted is None:
        return False
    await conn.execute(
        insert(ledger_entries).values(
            [
                {
                    "transaction_id": transaction_id,
                    "offer_id": posting.offer_id,
                    "reference_id": posting.reference_id,
                    "account": entry.account,
                    "direction": entry.direction.value,
                    "amount_minor": entry.amount_minor,
                    "currency": entry.currency,
                    "transaction_type": posting.transaction_type,
                    "transaction_timestamp": posting.occurred_at,
                }
                for entry in posting.entries
            ]
        )
    )
    return True


async def payout_reversed_minor(conn: AsyncConnection, payout_id: str) -> int:
    """What this payout's reversing postings have given back so far: the sum of their debits
    to ``platform_cash:*`` over every reference ``payout-reversal:<payout_id>:<total>``.
    Called under the payout's row lock (agents/reversals.py), so a concurrent reversal of the
    same payout is either fully counted or not yet begun."""
    total = await conn.scalar(
        select(func.coalesce(func.sum(ledger_entries.c.amount_minor), 0)).where(
            ledger_entries.c.reference_id.startswith(payout_reversals_prefix(payout_id), autoescape=True),
            ledger_entries.c.transaction_type == TransactionType.PAYOUT_REVERSAL.value,
            ledger_entries.c.direction == Direction.DEBIT.value,
            ledger_entries.c.account.startswith(f"{PLATFORM_CASH}:", autoescape=True),
        )
    )
    return int(total or 0)


@dataclass(frozen=True, slots=True)
class AccountBalance:
    account: str
    currency: str
    debits_minor: int
    credits_minor: int

    @property
    def balance_minor(self) -> int:
        """Debit-positive, like ``models.ledger.balances``."""
        return self.debits_minor - self.credits_minor


@dataclass(frozen=True, slots=True)
class CurrencyTotals:
    currency: str
    debits_minor: int
    credits_minor: int

    @property
    def balanced(self) -> bool:
        return self.debits_minor == self.credits_minor


@dataclass(frozen=True, slots=True)
class LedgerReport:
    transactions: int
    entries: int
    balances: tuple[AccountBalance, ...]
    trial_balance: tuple[CurrencyTotals, ...]
    violations: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.violations


_DEBITS = case((ledger_entries.c.direction == Direction.DEBIT.value, ledger_entries.c.amount_minor), else_=0)
_CREDITS = case((ledger_entries.c.direction == Direction.CREDIT.value, ledger_entries.c.amount_minor), else_=0)


async def account_balances(conn: AsyncConnection) -> tuple[AccountBalance, ...]:
    rows = await conn.execute(
        select(
            ledger_entries.c.account,
            ledger_entries.c.currency,
            func.coalesce(func.sum(_DEBITS), 0),
            func.coalesce(func.sum(_CREDITS), 0),
        )
        .group_by(ledger_entries.c.account, ledger_entries.c.currency)
        .order_by(ledger_entries.c.account, ledger_entries.c.currency)
    )
    return tuple(AccountBalance(account, currency, int(d), int(c)) for account, currency, d, c in rows)


# Each check is one query returning (description-ready) rows; the LIMIT keeps a badly
# broken ledger from producing millions of lines, while the count says how many there are.
_CHECKS: tuple[tuple[str, str], ...] = (
    (
        "unbalanced",
        """
        SELECT e.transaction_id::text, min(e.reference_id), e.currency,
               sum(CASE WHEN e.direction = 'DEBIT' THEN e.amount_minor ELSE 0 END),
               sum(CASE WHEN e.direction = 'CREDIT' THEN e.amount_minor ELSE 0 END)
          FROM ledger_entries e
         GROUP BY e.transaction_id, e.currency
        HAVING sum(CASE WHEN e.direction = 'DEBIT' THEN e.amount_minor ELSE 0 END)
            <> sum(CASE WHEN e.direction = 'CREDIT' THEN e.amount_minor ELSE 0 END)
         ORDER BY 1, 3
        """,
    ),
    (
        "too_few_entries",
        """
        SELECT t.id::text, t.reference_id, count(e.id)
          FROM ledger_transactions t LEFT JOIN ledger_entries e ON e.transaction_id = t.id
         GROUP BY t.id, t.reference_id
        HAVING count(e.id) < 2
         ORDER BY 1
        """,
    ),
    (
        "orphan_entry",
        """
        SELECT e.id, e.transaction_id::text, e.reference_id
          FROM ledger_entries e LEFT JOIN ledger_transactions t ON t.id = e.transaction_id
         WHERE t.id IS NULL
         ORDER BY 1
        """,
    ),
    (
        "bad_amount_or_direction",
        """
        SELECT e.id, e.reference_id, e.amount_minor, e.direction
          FROM ledger_entries e
         WHERE e.amount_minor <= 0 OR e.direction NOT IN ('DEBIT', 'CREDIT')
         ORDER BY 1
        """,
    ),
    (
        "copy_mismatch",
        """
        SELECT e.id, e.transaction_id::text, t.reference_id
          FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id
         WHERE e.reference_id IS DISTINCT FROM t.reference_id
            OR e.offer_id IS DISTINCT FROM t.offer_id
            OR e.transaction_type IS DISTINCT FROM t.transaction_type
            OR e.transaction_timestamp IS DISTINCT FROM t.transaction_timestamp
         ORDER BY 1
        """,
    ),
)


def _describe(kind: str, row: Sequence[Any]) -> str:
    if kind == "unbalanced":
        tx, ref, currency, debits, credits = row
        return f"transaction {tx} ({ref}) is unbalanced in {currency}: debits {debits} != credits {credits}"
    if kind == "too_few_entries":
        tx, ref, count = row
        return f"transaction {tx} ({ref}) has {count} entries, needs at least 2"
    if kind == "orphan_entry":
        entry, tx, ref = row
        return f"entry {entry} ({ref}) points at missing transaction {tx}"
    if kind == "bad_amount_or_direction":
        entry, ref, amount, direction = row
        return f"entry {entry} ({ref}) has amount {amount} direction {direction!r}: amounts must be positive, DEBIT or CREDIT"
    entry, tx, ref = row
    return f"entry {entry} does not match its transaction {tx} ({ref}) in reference/offer/type/timestamp"


async def check_ledger(conn: AsyncConnection, max_per_check: int = 100) -> LedgerReport:
    """Recompute the ledger's invariants from the rows, independently of the triggers.

    The triggers stop bad writes; this finds bad rows that got in anyway (triggers disabled
    by the table owner, data restored from elsewhere, a future migration gone wrong).
    """
    n_transactions = int(await conn.scalar(select(func.count()).select_from(ledger_transactions)) or 0)
    n_entries = int(await conn.scalar(select(func.count()).select_from(ledger_entries)) or 0)
    violations: list[str] = []
    for kind, sql in _CHECKS:
        total = int(await conn.scalar(text(f"SELECT count(*) FROM ({sql}) AS found")) or 0)
        if not total:
            continue
        rows = await conn.execute(text(f"{sql} LIMIT :limit"), {"limit": max_per_check})
        violations.extend(_describe(kind, tuple(row)) for row in rows)
        if total > max_per_check:
            violations.append(f"... and {total - max_per_check} more {kind.replace('_', ' ')} violations")
    trial = await conn.execute(
        select(
            ledger_entries.c.currency,
            func.coalesce(func.sum(_DEBITS), 0),
            func.coalesce(func.sum(_CREDITS), 0),
        )
        .group_by(ledger_entries.c.currency)
        .order_by(ledger_entries.c.currency)
    )
    trial_balance = tuple(CurrencyTotals(currency, int(d), int(c)) for currency, d, c in trial)
    violations.extend(
        f"trial balance in {t.currency} is off: total debits {t.debits_minor} != total credits {t.credits_minor}"
        for t in trial_balance
        if not t.balanced
    )
    return LedgerReport(
        transactions=n_transactions,
        entries=n_entries,
        balances=await account_balances(conn),
        trial_balance=trial_balance,
        violations=tuple(violations),
    )


async def offer_ledger(conn: AsyncConnection, offer_id: str) -> list[dict[str, Any]]:
    """An offer's entries in posting order, JSON-ready, for the API and the admin page."""
    rows = await conn.execute(
        select(
            ledger_entries.c.id.label("entry_id"),
            ledger_entries.c.transaction_id,
            ledger_entries.c.reference_id,
            ledger_entries.c.transaction_type,
            ledger_entries.c.transaction_timestamp,
            ledger_entries.c.account,
            ledger_entries.c.direction,
            ledger_entries.c.amount_minor,
            ledger_entries.c.currency,
            ledger_transactions.c.description,
        )
        .join(ledger_transactions, ledger_transactions.c.id == ledger_entries.c.transaction_id)
        .where(ledger_entries.c.offer_id == offer_id)
        .order_by(ledger_entries.c.transaction_timestamp, ledger_entries.c.id)
    )
    return [jsonable(dict(row)) for row in rows.mappings()]
