"""Payout safety: parked phase, compare-and-set bookkeeping, terminal phases immutable,
Wise objects stored once, key versions on recipients.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

OLD_PHASES = (
    "'intent','stripe_pending','stripe_unknown','stripe_failed','wise_pending','wise_unknown','succeeded','failed'"
)
NEW_PHASES = OLD_PHASES + ",'parked'"

TERMINAL_GUARD = """
CREATE FUNCTION payouts_terminal_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        -- A paid payout (its posting is on the books) can never be deleted: a redelivered
        -- request would otherwise start it again. Rows without money behind them may go.
        IF OLD.phase = 'succeeded' AND EXISTS (
            SELECT 1 FROM ledger_transactions WHERE reference_id = 'payout:' || OLD.payout_id::text
        ) THEN
            RAISE EXCEPTION 'payout % is terminal (%) and posted: it cannot be deleted', OLD.payout_id, OLD.phase
                USING ERRCODE = 'restrict_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.phase IN ('succeeded', 'failed') AND (
        NEW.phase IS DISTINCT FROM OLD.phase
        OR NEW.provider IS DISTINCT FROM OLD.provider
        OR NEW.provider_reference IS DISTINCT FROM OLD.provider_reference
        OR NEW.failure_reason IS DISTINCT FROM OLD.failure_reason
        OR NEW.amount_minor IS DISTINCT FROM OLD.amount_minor
        OR NEW.currency IS DISTINCT FROM OLD.currency
        OR NEW.recipient_id IS DISTINCT FROM OLD.recipient_id
        OR NEW.offer_id IS DISTINCT FROM OLD.offer_id
        OR NEW.completed_at IS DISTINCT FROM OLD.completed_at
    ) THEN
        RAISE EXCEPTION 'payout % is terminal (%): its outcome cannot change', OLD.payout_id, OLD.phase
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$
"""
# 0004 declared `offer_id ... unique=True`; its constraint name depends on the naming convention.
DROP_OFFER_UNIQUE = """
DO $$
DECLARE c text;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
              WHERE conrelid = 'payouts'::regclass AND contype = 'u'
                AND conkey = ARRAY[(SELECT attnum FROM pg_attribute
                                     WHERE attrelid = 'payouts'::regclass AND attname = 'offer_id')]
    LOOP
        EXECUTE format('ALTER TABLE payouts DROP CONSTRAINT %I', c);
    END LOOP;
END $$
"""

TERMINAL_TRIGGER = """
CREATE TRIGGER payouts_terminal_immutable BEFORE UPDATE OR DELETE ON payouts
    FOR EACH ROW EXECUTE FUNCTION payouts_terminal_immutable()
"""


def upgrade() -> None:
    op.drop_constraint("ck_payouts_phase_known", "payouts", type_="check")  # 0004 name, via the convention
    op.create_check_constraint(op.f("ck_payouts_phase_known"), "payouts", f"phase IN ({NEW_PHASES})")
    op.add_column("payouts", sa.Column("parked_from", sa.String(10)))
    op.add_column("payouts", sa.Column("parked_at", TS))
    op.add_column("payouts", sa.Column("next_check_at", TS))
    op.add_column("payouts", sa.Column("checks", sa.Integer, nullable=False, server_default="0"))
    op.add_column("payouts", sa.Column("stripe_key_attempt", sa.Integer, nullable=False, server_default="0"))
    op.add_column("payouts", sa.Column("ambiguous_since", TS))
    op.add_column("payouts", sa.Column("outcome_published_at", TS))
    op.add_column("payouts", sa.Column("driver", sa.Text))
    op.create_check_constraint(
        op.f("ck_payouts_parked_has_provider"), "payouts", "phase <> 'parked' OR parked_from IN ('STRIPE','WISE')"
    )
    op.create_index(
        "ix_payouts_next_check_at", "payouts", ["next_check_at"], postgresql_where=sa.text("phase = 'parked'")
    )
    # Outcomes recorded before this revision were published by the old agent.
    op.execute("UPDATE payouts SET outcome_published_at = completed_at WHERE phase IN ('succeeded','failed')")
    op.execute(TERMINAL_GUARD)
    op.execute(TERMINAL_TRIGGER)
    op.add_column("payout_attempts", sa.Column("idempotency_key", sa.Text))
    # The idempotency scope holds "<operation>:<subject>"; 64 characters broke long subjects.
    op.alter_column("api_idempotency", "scope", type_=sa.Text, existing_type=sa.String(64), existing_nullable=False)
    # Operator retries: several payouts per offer, at most one that is not a failure.
    op.add_column("payouts", sa.Column("retry_of", UUID(as_uuid=False)))
    op.execute(DROP_OFFER_UNIQUE)
    op.create_index("ix_payouts_offer_id", "payouts", ["offer_id"])
    op.create_index(
        "uq_payouts_one_live_per_offer",
        "payouts",
        ["offer_id"],
        unique=True,
        postgresql_where=sa.text("phase <> 'failed'"),
    )
    op.create_table(
        "provider_objects",
        sa.Column("provider", sa.String(10), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("object_key", sa.Text, nullable=False),
        sa.Column("object_id", sa.Text, nullable=False),
        sa.Column("expires_at", TS),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("provider", "kind", "object_key", name="pk_provider_objects"),
    )


def downgrade() -> None:
    op.alter_column("api_idempotency", "scope", type_=sa.String(64), existing_type=sa.Text, existing_nullable=False)
    op.drop_index("uq_payouts_one_live_per_offer", table_name="payouts")
    op.drop_index("ix_payouts_offer_id", table_name="payouts")
    op.create_unique_constraint(op.f("uq_payouts_offer_id"), "payouts", ["offer_id"])
    op.drop_column("payouts", "retry_of")
    op.drop_table("provider_objects")
    op.drop_column("payout_attempts", "idempotency_key")
    op.execute("DROP TRIGGER IF EXISTS payouts_terminal_immutable ON payouts")
    op.execute("DROP FUNCTION IF EXISTS payouts_terminal_immutable()")
    op.drop_index("ix_payouts_next_check_at", table_name="payouts")
    op.drop_constraint(op.f("ck_payouts_parked_has_provider"), "payouts", type_="check")
    op.execute("UPDATE payouts SET phase = lower(parked_from) || '_unknown' WHERE phase = 'parked'")
    for column in (
        "driver",
        "outcome_published_at",
        "ambiguous_since",
        "stripe_key_attempt",
        "checks",
        "next_check_at",
        "parked_at",
        "parked_from",
    ):
        op.drop_column("payouts", column)
    op.drop_constraint(op.f("ck_payouts_phase_known"), "payouts", type_="check")
    op.create_check_constraint("ck_payouts_phase_known", "payouts", f"phase IN ({OLD_PHASES})")
