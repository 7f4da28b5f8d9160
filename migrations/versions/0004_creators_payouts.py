"""Creators, encrypted payout recipients, payout state machine, API idempotency.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ID = UUID(as_uuid=False)


def upgrade() -> None:
    op.create_table(
        "creators",
        sa.Column("creator_id", ID, primary_key=True),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("country", sa.String(2)),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "payout_recipients",
        sa.Column("recipient_id", ID, primary_key=True),
        sa.Column("creator_id", ID, sa.ForeignKey("creators.creator_id"), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("details_ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("masked", JSONB, nullable=False),
        sa.Column("key_version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_payout_recipients_creator_id", "payout_recipients", ["creator_id"])
    op.create_table(
        "payouts",
        sa.Column("payout_id", ID, primary_key=True),
        sa.Column("offer_id", ID, nullable=False, unique=True),
        sa.Column("creator_id", ID, nullable=False),
        sa.Column("recipient_id", ID, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("phase", sa.String(20), nullable=False),
        sa.Column("provider", sa.String(10)),
        sa.Column("provider_reference", sa.Text),
        sa.Column("failure_reason", sa.Text),
        sa.Column("requested_event_id", ID, nullable=False),
        sa.Column("correlation_id", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("completed_at", TS),
        sa.CheckConstraint("amount_minor >= 0", name="ck_payouts_amount_not_negative"),
        sa.CheckConstraint(
            "phase IN ('intent','stripe_pending','stripe_unknown','stripe_failed','wise_pending','wise_unknown','succeeded','failed')",
            name="ck_payouts_phase_known",
        ),
    )
    op.create_index("ix_payouts_phase", "payouts", ["phase"])
    op.create_table(
        "payout_attempts",
        sa.Column("attempt_id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("payout_id", ID, sa.ForeignKey("payouts.payout_id"), nullable=False),
        sa.Column("provider", sa.String(10), nullable=False),
        sa.Column("operation", sa.String(10), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reference", sa.Text),
        sa.Column("failure_reason", sa.Text),
        sa.Column("started_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("finished_at", TS),
    )
    op.create_index(
        "uq_payout_attempts_one_success",
        "payout_attempts",
        ["payout_id"],
        unique=True,
        postgresql_where=sa.text("status = 'succeeded'"),
    )
    op.create_index("ix_payout_attempts_payout_id", "payout_attempts", ["payout_id"])
    op.create_table(
        "api_idempotency",
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("response_status", sa.Integer, nullable=False),
        sa.Column("response_body", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("scope", "idempotency_key", name="pk_api_idempotency"),
    )


def downgrade() -> None:
    op.drop_table("api_idempotency")
    op.drop_table("payout_attempts")
    op.drop_table("payouts")
    op.drop_table("payout_recipients")
    op.drop_table("creators")
