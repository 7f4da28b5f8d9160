"""The double-entry ledger: transactions and entries, append-only and balanced in the database.

What Postgres enforces here (so a bug, a manual psql session or a future writer in another
language cannot break the books):

- append-only: UPDATE, DELETE and TRUNCATE on either table raise;
- balanced: at COMMIT, every ledger transaction that got entries in this database
  transaction has >= 2 entries and debits = credits per currency (a DEFERRABLE INITIALLY
  DEFERRED constraint trigger, so the entries of one posting may arrive in any order and
  any number of statements);
- no empty transactions: at COMMIT, a newly inserted ledger transaction has >= 2 entries;
- sealed: entries can only be added to a ledger transaction created in the same database
  transaction, and their copied columns (offer_id, reference_id, type, timestamp) must
  equal the transaction's;
- unique reference per transaction, positive amounts, ISO-shaped currency, known direction.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ID = UUID(as_uuid=False)
# Kept in step with models.ledger.ACCOUNT_PATTERN (migrations must not change when the
# model does, so the pattern is copied rather than imported).
ACCOUNT_PATTERN = r"^[a-z][a-z0-9_]*(:[A-Za-z0-9_.-]+)?$"

# One statement per string: asyncpg prepares each statement, and a prepared statement
# cannot hold several commands.
_FUNCTIONS = (
    """
CREATE FUNCTION ledger_forbid_mutation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger is append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'correct a posting with a new, reversing posting';
END
$$
""",
    """
-- now() is the start time of the database transaction: equal for every statement in it
-- and different for any later one. Stamping it here (whatever the client sent) lets the
-- entries trigger tell "created in this transaction" from "already committed".
CREATE FUNCTION ledger_stamp_transaction() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.created_at := now();
    RETURN NEW;
END
$$
""",
    """
CREATE FUNCTION ledger_check_entry() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parent ledger_transactions%ROWTYPE;
BEGIN
    SELECT * INTO parent FROM ledger_transactions WHERE id = NEW.transaction_id;
    IF NOT FOUND THEN
        -- the foreign key reports it too; this keeps the message about the ledger
        RAISE EXCEPTION 'ledger entry for unknown transaction %', NEW.transaction_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF parent.created_at <> now() THEN
        RAISE EXCEPTION 'ledger transaction % (%) is already posted: entries cannot be added to it',
            parent.id, parent.reference_id
            USING ERRCODE = 'restrict_violation',
                  HINT = 'record a new posting instead';
    END IF;
    IF NEW.reference_id IS DISTINCT FROM parent.reference_id
       OR NEW.offer_id IS DISTINCT FROM parent.offer_id
       OR NEW.transaction_type IS DISTINCT FROM parent.transaction_type
       OR NEW.transaction_timestamp IS DISTINCT FROM parent.transaction_timestamp THEN
        RAISE EXCEPTION 'ledger entry does not match its transaction % (%): reference_id, offer_id, '
            'transaction_type and transaction_timestamp must be copied from it', parent.id, parent.reference_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$
""",
    """
-- Runs at COMMIT (deferred), once per inserted entry: re-checking the whole transaction
-- each time is a few rows through an index, and keeps the trigger stateless.
CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target uuid;
    n_entries bigint;
    bad record;
BEGIN
    IF TG_TABLE_NAME = 'ledger_transactions' THEN
        target := NEW.id;
    ELSE
        target := NEW.transaction_id;
    END IF;
    SELECT count(*) INTO n_entries FROM ledger_entries WHERE transaction_id = target;
    IF n_entries < 2 THEN
        RAISE EXCEPTION 'ledger transaction % has % entries, a posting needs at least 2', target, n_entries
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT currency,
           sum(amount_minor) FILTER (WHERE direction = 'DEBIT') AS debits,
           sum(amount_minor) FILTER (WHERE direction = 'CREDIT') AS credits
      INTO bad
      FROM ledger_entries
     WHERE transaction_id = target
     GROUP BY currency
    HAVING coalesce(sum(amount_minor) FILTER (WHERE direction = 'DEBIT'), 0)
        <> coalesce(sum(amount_minor) FILTER (WHERE direction = 'CREDIT'), 0)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced in %: debits % <> credits %',
            target, bad.currency, coalesce(bad.debits, 0), coalesce(bad.credits, 0)
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$
""",
)

_TRIGGERS = (
    """CREATE TRIGGER ledger_transactions_no_update_delete
    BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_mutation()""",
    """CREATE TRIGGER ledger_transactions_no_truncate
    BEFORE TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_mutation()""",
    """CREATE TRIGGER ledger_entries_no_update_delete
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_mutation()""",
    """CREATE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_forbid_mutation()""",
    """CREATE TRIGGER ledger_transactions_stamp
    BEFORE INSERT ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_stamp_transaction()""",
    """CREATE TRIGGER ledger_entries_check_entry
    BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry()""",
    """CREATE CONSTRAINT TRIGGER ledger_entries_balanced
    AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced()""",
    """CREATE CONSTRAINT TRIGGER ledger_transactions_have_entries
    AFTER INSERT ON ledger_transactions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced()""",
)

_TRIGGER_NAMES = (
    ("ledger_transactions_have_entries", "ledger_transactions"),
    ("ledger_entries_balanced", "ledger_entries"),
    ("ledger_entries_check_entry", "ledger_entries"),
    ("ledger_transactions_stamp", "ledger_transactions"),
    ("ledger_entries_no_truncate", "ledger_entries"),
    ("ledger_entries_no_update_delete", "ledger_entries"),
    ("ledger_transactions_no_truncate", "ledger_transactions"),
    ("ledger_transactions_no_update_delete", "ledger_transactions"),
)
_FUNCTION_NAMES = (
    "ledger_check_balanced",
    "ledger_check_entry",
    "ledger_stamp_transaction",
    "ledger_forbid_mutation",
)


def upgrade() -> None:
    op.create_table(
        "ledger_transactions",
        sa.Column("id", ID, nullable=False),
        sa.Column("reference_id", sa.Text, nullable=False),
        sa.Column("offer_id", ID),
        sa.Column("transaction_type", sa.Text, nullable=False),
        sa.Column("transaction_timestamp", TS, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_transactions"),
        sa.UniqueConstraint("reference_id", name="uq_ledger_transactions_reference_id"),
        sa.CheckConstraint("reference_id <> ''", name=op.f("ck_ledger_transactions_reference_id_not_empty")),
        sa.CheckConstraint("transaction_type <> ''", name=op.f("ck_ledger_transactions_transaction_type_not_empty")),
    )
    op.create_index("ix_ledger_transactions_offer_id", "ledger_transactions", ["offer_id"])

    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), nullable=False),
        sa.Column("transaction_id", ID, nullable=False),
        sa.Column("offer_id", ID),
        sa.Column("reference_id", sa.Text, nullable=False),
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("direction", sa.Text, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.CHAR(3), nullable=False),
        sa.Column("transaction_type", sa.Text, nullable=False),
        sa.Column("transaction_timestamp", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_entries"),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name="fk_ledger_entries_transaction_id_ledger_transactions",
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_ledger_entries_amount_positive")),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_ledger_entries_currency_iso")),
        sa.CheckConstraint("direction IN ('DEBIT', 'CREDIT')", name=op.f("ck_ledger_entries_direction")),
        sa.CheckConstraint(f"account ~ '{ACCOUNT_PATTERN}'", name=op.f("ck_ledger_entries_account_name")),
    )
    # The seed's five indexes (ix_ledger_entries_id duplicates the primary key's index; kept
    # because the seed's queries name it) plus transaction_id, which the balance trigger and
    # the foreign key look rows up by.
    for column in ("offer_id", "id", "reference_id", "transaction_timestamp", "transaction_type", "transaction_id"):
        op.create_index(f"ix_ledger_entries_{column}", "ledger_entries", [column])

    for statement in (*_FUNCTIONS, *_TRIGGERS):
        op.execute(statement)


def downgrade() -> None:
    for trigger, table in _TRIGGER_NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    for function in _FUNCTION_NAMES:
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    op.drop_table("ledger_entries")
    op.drop_table("ledger_transactions")
