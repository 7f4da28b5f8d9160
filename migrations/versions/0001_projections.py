"""Deals projection, per-deal history, SSE change log, tracking rows.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ID = UUID(as_uuid=False)


def upgrade() -> None:
    op.create_table(
        "offers",
        sa.Column("offer_id", ID, primary_key=True),
        sa.Column("creator_id", ID, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(3)),
        sa.Column("created_at", TS),
        sa.Column("updated_at", TS),
        sa.Column("royalty_months", sa.Integer),
        sa.Column("royalty_total_minor", sa.BigInteger),
        sa.Column("valuation_outcome", sa.String(16)),
        sa.Column("valuation_low_minor", sa.BigInteger),
        sa.Column("valuation_median_minor", sa.BigInteger),
        sa.Column("valuation_high_minor", sa.BigInteger),
        sa.Column("valuation_failure_reason", sa.Text),
        sa.Column("valuation_model", sa.String(64)),
        sa.Column("valued_at", TS),
        sa.Column("termsheet_key", sa.Text),
        sa.Column("termsheet_sha256", sa.String(64)),
        sa.Column("accepted_at", TS),
        sa.Column("advance_minor", sa.BigInteger),
        sa.Column("payout_id", ID),
        sa.Column("recipient_id", ID),
        sa.Column("payout_requested_at", TS),
        sa.Column("payout_status", sa.String(16)),
        sa.Column("payout_provider", sa.String(16)),
        sa.Column("payout_reference", sa.Text),
        sa.Column("paid_amount_minor", sa.BigInteger),
        sa.Column("payout_failure_reason", sa.Text),
        sa.Column("payout_completed_at", TS),
        sa.Column("receipt_key", sa.Text),
        sa.Column("receipt_sha256", sa.String(64)),
        sa.Column("event_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("change_seq", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_offers_creator_id", "offers", ["creator_id"])
    op.create_index("ix_offers_first_seq", "offers", ["first_seq"])

    op.create_table(
        "deal_events",
        sa.Column("event_id", ID, primary_key=True),
        sa.Column("offer_id", ID, nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("recorded_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_deal_events_offer_id_occurred_at", "deal_events", ["offer_id", "occurred_at"])

    op.create_table(
        "deal_changes",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("offer_id", ID, nullable=False),
        sa.Column("creator_id", ID, nullable=False),
        sa.Column("event_id", ID, nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("deal", JSONB, nullable=False),
        sa.Column("changed_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_deal_changes_offer_id", "deal_changes", ["offer_id"])

    op.create_table(
        "projection_tracking",
        sa.Column("consumer", sa.String(128), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("consumer", "topic", "partition", name="pk_projection_tracking"),
    )


def downgrade() -> None:
    op.drop_table("projection_tracking")
    op.drop_table("deal_changes")
    op.drop_table("deal_events")
    op.drop_table("offers")
