"""The ledger against the real Postgres: what the database itself refuses, and the checks.

Tests on the shared session database only ever add rows (the ledger cannot lose any), with
fresh ids, and assert on their own references. Anything that needs a known-clean ledger,
migrates up and down, or disables triggers uses a throwaway database of its own.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agents.reversals import post_reversal
from infra.db import create_engine
from infra.settings import Settings
from models.events import PayoutProvider, PayoutReversed
from models.ledger import CREATOR_ADVANCES_RECEIVABLE, Posting, balances, payout_posting
from models.reversal import reversal_event_id
from state.ledger import check_ledger, offer_ledger, payout_reversed_minor, post
from state.tables import payouts
from tests.support.stack import REPO, run_cli

AT = datetime(2026, 11, 26, 12, 30, tzinfo=UTC)
LEDGER_TRIGGERS = 8
LEDGER_FUNCTIONS = 4


def _payout(amount_minor: int = 2_556_000, currency: str = "EUR", provider: str = "STRIPE") -> Posting:
    return payout_posting(
        payout_id=str(uuid.uuid4()),
        offer_id=str(uuid.uuid4()),
        creator_id=str(uuid.uuid4()),
        amount_minor=amount_minor,
        currency=currency,
        provider=provider,
        provider_reference="tr_test",
        occurred_at=AT,
    )


async def _post(engine: AsyncEngine, posting: Posting) -> bool:
    async with engine.begin() as conn:
        return await post(conn, posting, str(uuid.uuid4()))


async def _count(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text(sql), params) or 0)


async def _insert_tx(conn: AsyncConnection, tx_id: str, reference_id: str, offer_id: str | None = None) -> None:
    await conn.execute(
        text(
            "INSERT INTO ledger_transactions (id, reference_id, offer_id, transaction_type, transaction_timestamp)"
            " VALUES (:id, :ref, :offer, 'test', :ts)"
        ),
        {"id": tx_id, "ref": reference_id, "offer": offer_id, "ts": AT},
    )


async def _insert_entry(
    conn: AsyncConnection,
    tx_id: str,
    reference_id: str,
    direction: str,
    amount_minor: int,
    currency: str = "EUR",
    offer_id: str | None = None,
    account: str = "test_account",
) -> None:
    await conn.execute(
        text(
            "INSERT INTO ledger_entries (transaction_id, offer_id, reference_id, account, direction, amount_minor,"
            " currency, transaction_type, transaction_timestamp)"
            " VALUES (:tx, :offer, :ref, :account, :direction, :amount, :currency, 'test', :ts)"
        ),
        {
            "tx": tx_id,
            "offer": offer_id,
            "ref": reference_id,
            "account": account,
            "direction": direction,
            "amount": amount_minor,
            "currency": currency,
            "ts": AT,
        },
    )


async def _refused_at_commit(engine: AsyncEngine, writes: Any, match: str) -> None:
    """Run ``writes(conn)``: every statement must succeed, and COMMIT must then fail."""
    async with engine.connect() as conn:
        transaction = await conn.begin()
        await writes(conn)
        with pytest.raises(DBAPIError, match=match):
            await transaction.commit()


# --- posting ------------------------------------------------------------------------------


async def test_a_payout_posts_one_transaction_with_two_entries(engine: AsyncEngine) -> None:
    posting = _payout()
    assert await _post(engine, posting) is True
    ref = posting.reference_id
    assert await _count(engine, "SELECT count(*) FROM ledger_transactions WHERE reference_id = :r", r=ref) == 1
    assert await _count(engine, "SELECT count(*) FROM ledger_entries WHERE reference_id = :r", r=ref) == 2
    async with engine.connect() as conn:
        rows = await offer_ledger(conn, posting.offer_id or "")
    assert [(r["account"], r["direction"], r["amount_minor"], r["currency"]) for r in rows] == [
        (CREATOR_ADVANCES_RECEIVABLE, "DEBIT", 2_556_000, "EUR"),
        ("platform_cash:stripe", "CREDIT", 2_556_000, "EUR"),
    ]
    assert {r["reference_id"] for r in rows} == {ref}
    assert {r["transaction_type"] for r in rows} == {"payout"}
    assert datetime.fromisoformat(rows[0]["transaction_timestamp"]) == AT
    assert "tr_test" in rows[0]["description"]


async def test_posting_the_same_reference_again_is_a_no_op(engine: AsyncEngine) -> None:
    posting = _payout()
    assert await _post(engine, posting) is True
    assert await _post(engine, posting) is False
    ref = posting.reference_id
    assert await _count(engine, "SELECT count(*) FROM ledger_transactions WHERE reference_id = :r", r=ref) == 1
    assert await _count(engine, "SELECT count(*) FROM ledger_entries WHERE reference_id = :r", r=ref) == 2


async def test_concurrent_posts_of_one_reference_write_it_once(engine: AsyncEngine) -> None:
    posting = _payout()
    results = await asyncio.gather(*(_post(engine, posting) for _ in range(4)))
    assert sorted(results) == [False, False, False, True]
    ref = posting.reference_id
    assert await _count(engine, "SELECT count(*) FROM ledger_entries WHERE reference_id = :r", r=ref) == 2


async def test_offer_ledger_of_an_unknown_offer_is_empty(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await offer_ledger(conn, str(uuid.uuid4())) == []


# --- append-only --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET amount_minor = amount_minor + 1 WHERE reference_id = :r",
        "UPDATE ledger_entries SET account = 'somewhere_else' WHERE reference_id = :r",
        "UPDATE ledger_transactions SET description = 'edited' WHERE reference_id = :r",
        "DELETE FROM ledger_entries WHERE reference_id = :r",
        "DELETE FROM ledger_transactions WHERE reference_id = :r",
    ],
)
async def test_update_and_delete_are_refused(engine: AsyncEngine, statement: str) -> None:
    posting = _payout()
    await _post(engine, posting)
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(text(statement), {"r": posting.reference_id})
    ref = posting.reference_id
    assert await _count(engine, "SELECT count(*) FROM ledger_entries WHERE reference_id = :r", r=ref) == 2
    assert (
        await _count(engine, "SELECT sum(amount_minor) FROM ledger_entries WHERE reference_id = :r", r=ref)
        == 2 * next(iter(posting.entries)).amount_minor
    )


@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE ledger_entries",
        "TRUNCATE ledger_transactions, ledger_entries",
        "TRUNCATE ledger_transactions CASCADE",
    ],
)
async def test_truncate_is_refused(engine: AsyncEngine, statement: str) -> None:
    await _post(engine, _payout())
    before = await _count(engine, "SELECT count(*) FROM ledger_entries")
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    assert await _count(engine, "SELECT count(*) FROM ledger_entries") >= before > 0


# --- balanced at commit -------------------------------------------------------------------


async def test_unbalanced_entries_fail_at_commit(engine: AsyncEngine) -> None:
    tx, ref = str(uuid.uuid4()), f"test:{uuid.uuid4()}"

    async def writes(conn: AsyncConnection) -> None:
        await _insert_tx(conn, tx, ref)
        await _insert_entry(conn, tx, ref, "DEBIT", 100)
        await _insert_entry(conn, tx, ref, "CREDIT", 99)

    await _refused_at_commit(engine, writes, "unbalanced in EUR: debits 100 <> credits 99")
    assert await _count(engine, "SELECT count(*) FROM ledger_transactions WHERE reference_id = :r", r=ref) == 0
    assert await _count(engine, "SELECT count(*) FROM ledger_entries WHERE reference_id = :r", r=ref) == 0


async def test_balance_is_per_currency_at_commit(engine: AsyncEngine) -> None:
    tx, ref = str(uuid.uuid4()), f"test:{uuid.uuid4()}"

    async def writes(conn: AsyncConnection) -> None:
        await _insert_tx(conn, tx, ref)
        await _insert_entry(conn, tx, ref, "DEBIT", 100, "EUR")
        await _insert_entry(conn, tx, ref, "CREDIT", 100, "USD")

    await _refused_at_commit(engine, writes, "unbalanced in (EUR|USD)")


async def test_entries_may_arrive_in_any_order_within_the_transaction(engine: AsyncEngine) -> None:
    # Deferred: the check runs at COMMIT, so a half-written posting mid-transaction is fine.
    tx, ref = str(uuid.uuid4()), f"test:{uuid.uuid4()}"
    async with engine.begin() as conn:
        await _insert_tx(conn, tx, ref)
        await _insert_entry(conn, tx, ref, "CREDIT", 60)
        await _insert_entry(conn, tx, ref, "DEBIT", 100)
        await _insert_entry(conn, tx, ref, "CREDIT", 40)
    assert await _count(engine, "SELECT count(*) FROM ledger_entries WHERE reference_id = :r", r=ref) == 3


async def test_a_single_entry_fails_at_commit(engine: AsyncEngine) -> None:
    tx, ref = str(uuid.uuid4()), f"test:{uuid.uuid4()}"

    async def writes(conn: AsyncConnection) -> None:
        await _insert_tx(conn, tx, ref)
        await _insert_entry(conn, tx, ref, "DEBIT", 100)

    await _refused_at_commit(engine, writes, "has 1 entries")


async def test_a_transaction_without_entries_fails_at_commit(engine: AsyncEngine) -> None:
    tx, ref = str(uuid.uuid4()), f"test:{uuid.uuid4()}"

    async def writes(conn: AsyncConnection) -> None:
        await _insert_tx(conn, tx, ref)

    await _refused_at_commit(engine, writes, "has 0 entries")


async def test_entries_cannot_be_added_to_a_posted_transaction(engine: AsyncEngine) -> None:
    tx, ref = str(uuid.uuid4()), f"test:{uuid.uuid4()}"
    async with engine.begin() as conn:
        await _insert_tx(conn, tx, ref)
        await _insert_entry(conn, tx, ref, "DEBIT", 100)
        await _insert_entry(conn, tx, ref, "CREDIT", 100)
    # Balanced on its own, but it would change a posting that is already on the books.
    with pytest.raises(DBAPIError, match="already posted"):
        async with engine.begin() as conn:
            await _insert_entry(conn, tx, ref, "DEBIT", 5)
            await _insert_entry(conn, tx, ref, "CREDIT", 5)
    assert await _count(engine, "SELECT count(*) FROM ledger_entries WHERE reference_id = :r", r=ref) == 2


async def test_entries_must_copy_their_transaction(engine: AsyncEngine) -> None:
    tx, ref = str(uuid.uuid4()), f"test:{uuid.uuid4()}"
    with pytest.raises(DBAPIError, match="does not match its transaction"):
        async with engine.begin() as conn:
            await _insert_tx(conn, tx, ref, offer_id=str(uuid.uuid4()))
            await _insert_entry(conn, tx, ref, "DEBIT", 100, offer_id=str(uuid.uuid4()))


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("amount_minor", 0, "ck_ledger_entries_amount_positive"),
        ("amount_minor", -1, "ck_ledger_entries_amount_positive"),
        ("currency", "eur", "ck_ledger_entries_currency_iso"),
        ("direction", "SIDEWAYS", "ck_ledger_entries_direction"),
        ("account", "Not An Account", "ck_ledger_entries_account_name"),
    ],
)
async def test_row_constraints(engine: AsyncEngine, column: str, value: object, constraint: str) -> None:
    tx, ref = str(uuid.uuid4()), f"test:{uuid.uuid4()}"
    entry: dict[str, Any] = {"direction": "DEBIT", "amount_minor": 100, "currency": "EUR", "account": "test_account"}
    entry[column] = value
    with pytest.raises(DBAPIError, match=constraint):
        async with engine.begin() as conn:
            await _insert_tx(conn, tx, ref)
            await _insert_entry(conn, tx, ref, **entry)


async def test_reference_ids_are_unique(engine: AsyncEngine) -> None:
    ref = f"test:{uuid.uuid4()}"
    await _post_raw_balanced(engine, str(uuid.uuid4()), ref)
    with pytest.raises(DBAPIError, match="uq_ledger_transactions_reference_id"):
        await _post_raw_balanced(engine, str(uuid.uuid4()), ref)


async def _post_raw_balanced(engine: AsyncEngine, tx: str, ref: str) -> None:
    async with engine.begin() as conn:
        await _insert_tx(conn, tx, ref)
        await _insert_entry(conn, tx, ref, "DEBIT", 1)
        await _insert_entry(conn, tx, ref, "CREDIT", 1)


# --- reversals: one posting per total, each the increment (agents/reversals.py) -----------


async def _succeeded_payout(engine: AsyncEngine, amount_minor: int = 9000) -> dict[str, Any]:
    row = {
        "payout_id": str(uuid.uuid4()),
        "offer_id": str(uuid.uuid4()),
        "creator_id": str(uuid.uuid4()),
        "recipient_id": str(uuid.uuid4()),
        "amount_minor": amount_minor,
        "currency": "EUR",
        "phase": "succeeded",
        "provider": "STRIPE",
        "provider_reference": "tr_" + uuid.uuid4().hex[:12],
        "requested_event_id": str(uuid.uuid4()),
        "correlation_id": "reversal-test",
        "completed_at": AT,
        "outcome_published_at": AT,
    }
    async with engine.begin() as conn:
        await conn.execute(insert(payouts).values(**row))
    return row


def _reversed(payout: dict[str, Any], total_minor: int) -> PayoutReversed:
    return PayoutReversed(
        event_id=reversal_event_id(payout["payout_id"], total_minor),
        offer_id=payout["offer_id"],
        creator_id=payout["creator_id"],
        occurred_at=AT,
        correlation_id=payout["correlation_id"],
        payout_id=payout["payout_id"],
        provider=PayoutProvider.STRIPE,
        provider_reference=payout["provider_reference"],
        amount_minor=total_minor,
        currency="EUR",
        reason="stripe_transfer_partially_reversed"
        if total_minor < payout["amount_minor"]
        else "stripe_transfer_reversed",
        provider_event_id="evt_" + uuid.uuid4().hex[:12],
    )


async def _reversal_postings(engine: AsyncEngine, payout_id: str) -> dict[str, int]:
    """reference -> what it gave back (its debit to platform cash)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT reference_id, amount_minor FROM ledger_entries"
                " WHERE reference_id LIKE :prefix AND direction = 'DEBIT' AND account = 'platform_cash:stripe'"
            ),
            {"prefix": f"payout-reversal:{payout_id}:%"},
        )
        return {r.reference_id: int(r.amount_minor) for r in rows}


async def test_a_payout_reversed_in_parts_posts_each_increment_and_an_older_total_nothing(
    engine: AsyncEngine,
) -> None:
    payout = await _succeeded_payout(engine)
    pid = payout["payout_id"]
    assert await post_reversal(engine, _reversed(payout, 3000)) is True
    assert await post_reversal(engine, _reversed(payout, 3000)) is False  # redelivered
    assert await post_reversal(engine, _reversed(payout, 9000)) is True
    assert await post_reversal(engine, _reversed(payout, 3000)) is False  # an older total, late
    assert await _reversal_postings(engine, pid) == {
        f"payout-reversal:{pid}:3000": 3000,
        f"payout-reversal:{pid}:9000": 6000,
    }
    async with engine.connect() as conn:
        assert await payout_reversed_minor(conn, pid) == 9000
    assert await post_reversal(engine, _reversed(payout, 9001)) is False  # more than paid: refused
    # Out of order: the full total first, then the partial that preceded it at the provider.
    other = await _succeeded_payout(engine)
    assert await post_reversal(engine, _reversed(other, 9000)) is True
    assert await post_reversal(engine, _reversed(other, 3000)) is False
    assert await _reversal_postings(engine, other["payout_id"]) == {f"payout-reversal:{other['payout_id']}:9000": 9000}


async def test_concurrent_reversals_of_one_payout_never_post_more_than_the_latest_total(
    engine: AsyncEngine,
) -> None:
    # Without the payout's row lock, two totals read the same "already posted" and both post
    # from it (3000 + 9000 = 12000 given back for a 9000 payout).
    for _ in range(5):
        payout = await _succeeded_payout(engine)
        totals = [3000, 9000, 6000, 9000, 3000, 6000]
        results = await asyncio.gather(*(post_reversal(engine, _reversed(payout, t)) for t in totals))
        postings = await _reversal_postings(engine, payout["payout_id"])
        assert sum(postings.values()) == 9000, postings
        assert sum(results) == len(postings)
        assert f"payout-reversal:{payout['payout_id']}:9000" in postings


# --- the check ----------------------------------------------------------------------------


async def test_check_ledger_finds_nothing_wrong_with_a_good_ledger(engine: AsyncEngine) -> None:
    await _post(engine, _payout(currency="GBP", provider="WISE"))
    async with engine.connect() as conn:
        report = await check_ledger(conn)
    assert report.ok, report.violations
    assert report.transactions >= 1 and report.entries >= 2 * report.transactions
    assert all(t.balanced for t in report.trial_balance)
    assert "GBP" in {t.currency for t in report.trial_balance}
    for currency in {b.currency for b in report.balances}:
        assert sum(b.balance_minor for b in report.balances if b.currency == currency) == 0


# --- throwaway databases: migrations and the CLI ------------------------------------------


@dataclass(frozen=True)
class Scratch:
    env: dict[str, str]
    engine: AsyncEngine


@asynccontextmanager
async def scratch_database(stack_env: dict[str, str], run_id: str) -> AsyncIterator[Scratch]:
    """A migrated database of this test's own, dropped afterwards."""
    name = f"sm_test_{run_id}_ledger_{uuid.uuid4().hex[:8]}"
    admin_dsn = stack_env["DATABASE_URL"]
    await _admin(admin_dsn, f'CREATE DATABASE "{name}"')
    env = {**stack_env, "DATABASE_URL": admin_dsn.rsplit("/", 1)[0] + f"/{name}"}
    engine = create_engine(Settings.from_env(env), pool_size=1)
    try:
        await asyncio.to_thread(run_cli, env, "migrate")
        yield Scratch(env, engine)
    finally:
        await engine.dispose()
        await _admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _ledger_objects(engine: AsyncEngine) -> tuple[int, int, int]:
    async with engine.connect() as conn:
        tables = await conn.scalar(
            text("SELECT count(*) FROM pg_class WHERE relname IN ('ledger_transactions', 'ledger_entries')")
        )
        triggers = await conn.scalar(text("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'ledger\\_%'"))
        functions = await conn.scalar(text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'ledger\\_%'"))
    return int(tables or 0), int(triggers or 0), int(functions or 0)


async def test_migration_downgrades_and_upgrades_again(stack_env: dict[str, str], run_id: str) -> None:
    async with scratch_database(stack_env, run_id) as db:
        assert await _ledger_objects(db.engine) == (2, LEDGER_TRIGGERS, LEDGER_FUNCTIONS)
        assert await _post(db.engine, _payout()) is True

        await asyncio.to_thread(run_cli, db.env, "migrate", "--downgrade", "--revision", "0002")
        await db.engine.dispose()  # cached plans and types refer to the dropped tables
        assert await _ledger_objects(db.engine) == (0, 0, 0)
        async with db.engine.connect() as conn:
            assert await conn.scalar(text("SELECT version_num FROM alembic_version")) == "0002"

        await asyncio.to_thread(run_cli, db.env, "migrate")
        await db.engine.dispose()
        assert await _ledger_objects(db.engine) == (2, LEDGER_TRIGGERS, LEDGER_FUNCTIONS)
        posting = _payout()
        assert await _post(db.engine, posting) is True
        assert await _post(db.engine, posting) is False
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.engine.begin() as conn:
                await conn.execute(text("DELETE FROM ledger_entries"))


def _ledger_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`spacemusic ledger ...` once the group is registered; the group itself until then."""
    from bootstrap.cli import cli

    env = {**env, "COLUMNS": "200"}  # rich wraps at 80 columns when not on a terminal
    if "ledger" in cli.commands:
        return run_cli(env, "ledger", *args, check=False)
    code = (
        "import sys; from bootstrap.commands.ledger import ledger; ledger(sys.argv[1:], prog_name='spacemusic ledger')"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


async def test_cli_check_exit_code_follows_the_violations(stack_env: dict[str, str], run_id: str) -> None:
    async with scratch_database(stack_env, run_id) as db:
        postings = [_payout(), _payout(amount_minor=7, currency="GBP", provider="WISE"), _payout(amount_minor=5)]
        for posting in postings:
            assert await _post(db.engine, posting)

        clean = await asyncio.to_thread(_ledger_cli, db.env, "check")
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert "no violations" in clean.stdout
        async with db.engine.connect() as conn:
            report = await check_ledger(conn)
        assert report.ok and (report.transactions, report.entries) == (3, 6)
        expected = balances(entry for posting in postings for entry in posting.entries)
        assert {(b.account, b.currency): b.balance_minor for b in report.balances} == expected

        shown = await asyncio.to_thread(_ledger_cli, db.env, "balances")
        assert shown.returncode == 0, shown.stderr
        assert "platform_cash:wise" in shown.stdout and "EUR -25,560.05" in shown.stdout

        # The triggers stop these writes, so get them past as the table owner can (and as a
        # restore or a careless migration might): the check must not trust the triggers.
        lone, lone_ref = str(uuid.uuid4()), "test:lone"
        bad, bad_ref = str(uuid.uuid4()), "test:unbalanced"
        async with db.engine.begin() as conn:
            for table in ("ledger_transactions", "ledger_entries"):
                await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            await _insert_tx(conn, lone, lone_ref)
            await _insert_tx(conn, bad, bad_ref)
            await _insert_entry(conn, bad, bad_ref, "DEBIT", 100)
            await _insert_entry(conn, bad, bad_ref, "CREDIT", 90)
            for table in ("ledger_transactions", "ledger_entries"):
                await conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))

        async with db.engine.connect() as conn:
            report = await check_ledger(conn)
        assert not report.ok
        joined = "\n".join(report.violations)
        assert f"transaction {lone} (test:lone) has 0 entries" in joined
        assert f"transaction {bad} (test:unbalanced) is unbalanced in EUR: debits 100 != credits 90" in joined
        assert "trial balance in EUR is off" in joined
        assert len(report.violations) == 3, report.violations

        broken = await asyncio.to_thread(_ledger_cli, db.env, "check")
        assert broken.returncode == 1, broken.stdout + broken.stderr
        assert "3 violation(s)" in broken.stdout
