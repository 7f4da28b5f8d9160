"""Provider webhooks: the verified deliveries (deduplicated by the provider's event id) and
the deal facts of a payout reversed or bounced after it was counted as paid.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

_DEAL_COLUMNS: tuple[tuple[str, sa.types.TypeEngine], ...] = (
    ("payout_reversed_at", TS),
    ("payout_reversed_amount_minor", sa.BigInteger()),
    ("payout_reversal_reason", sa.Text()),
)


def upgrade() -> None:
    op.create_table(
        "provider_webhooks",
        sa.Column("provider", sa.String(10), nullable=False),
        # Stripe's evt_..., Wise's X-Delivery-Id: one row per event, whatever the redeliveries.
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        # published | ignored:<why>: what the web app did with it (never the raw payload).
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("payout_id", UUID(as_uuid=False)),
        sa.Column("provider_reference", sa.Text),
        sa.Column("received_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("provider", "event_id", name="pk_provider_webhooks"),
        sa.CheckConstraint("event_id <> ''", name="ck_provider_webhooks_event_id_not_empty"),
    )
    op.create_index("ix_provider_webhooks_payout_id", "provider_webhooks", ["payout_id"])
    for name, type_ in _DEAL_COLUMNS:
        op.add_column("offers", sa.Column(name, type_))


def downgrade() -> None:
    for name, _ in reversed(_DEAL_COLUMNS):
        op.drop_column("offers", name)
    op.drop_index("ix_provider_webhooks_payout_id", table_name="provider_webhooks")
    op.drop_table("provider_webhooks")
