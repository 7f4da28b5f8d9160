"""SQLAlchemy Core tables for the projections and the tracking rows.

``offers`` is the deals read model (one row per offer, the folded state), ``deal_events``
the per-deal history, ``deal_changes`` the change log that feeds the SSE stream (its
``seq`` is the SSE event id), ``projection_tracking`` the per-consumer positions written
in the same transaction as the projection rows.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from infra.sql import TS, metadata

offers = Table(
    "offers",
    metadata,
    Column("offer_id", UUID(as_uuid=False), primary_key=True),
    Column("creator_id", UUID(as_uuid=False), nullable=False, index=True),
    Column("status", String(32), nullable=False),
    Column("currency", String(3)),
    Column("created_at", TS),
    Column("updated_at", TS),
    Column("royalty_months", Integer),
    Column("royalty_total_minor", BigInteger),
    Column("valuation_outcome", String(16)),
    Column("valuation_low_minor", BigInteger),
    Column("valuation_median_minor", BigInteger),
    Column("valuation_high_minor", BigInteger),
    Column("valuation_failure_reason", Text),
    Column("valuation_model", String(64)),
    Column("valued_at", TS),
    Column("termsheet_key", Text),
    Column("termsheet_sha256", String(64)),
    Column("accepted_at", TS),
    Column("advance_minor", BigInteger),
    Column("payout_id", UUID(as_uuid=False)),
    Column("recipient_id", UUID(as_uuid=False)),
    Column("payout_requested_at", TS),
    Column("payout_status", String(16)),
    Column("payout_provider", String(16)),
    Column("payout_reference", Text),
    Column("paid_amount_minor", BigInteger),
    Column("payout_failure_reason", Text),
    Column("payout_completed_at", TS),
    Column("payout_reversed_at", TS),  # migration 0008
    Column("payout_reversed_amount_minor", BigInteger),
    Column("payout_reversal_reason", Text),
    Column("receipt_key", Text),
    Column("receipt_sha256", String(64)),
    Column("valid_until", TS),
    Column("declined_at", TS),
    Column("declined_by", Text),
    Column("decline_reason", Text),
    Column("withdrawn_at", TS),
    Column("withdrawn_by", Text),
    Column("withdraw_reason", Text),
    Column("lapsed_at", TS),
    Column("event_count", Integer, nullable=False, server_default="0"),
    Column("first_seq", BigInteger, nullable=False),
    Column("change_seq", BigInteger, nullable=False),
    Index("ix_offers_status", "status"),
    Index("ix_offers_first_seq", "first_seq"),
    # The lapse sweeper's question (migration 0007): open offers by valid_until.
    Index("ix_offers_open_valid_until", "valid_until", postgresql_where=text("status = 'termsheet_issued'")),
)

deal_events = Table(
    "deal_events",
    metadata,
    Column("event_id", UUID(as_uuid=False), primary_key=True),
    Column("offer_id", UUID(as_uuid=False), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("occurred_at", TS, nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("recorded_at", TS, nullable=False, server_default=func.now()),
    Index("ix_deal_events_offer_id_occurred_at", "offer_id", "occurred_at"),
)

deal_changes = Table(
    "deal_changes",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    Column("offer_id", UUID(as_uuid=False), nullable=False),
    Column("creator_id", UUID(as_uuid=False), nullable=False),
    Column("event_id", UUID(as_uuid=False), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("deal", JSONB, nullable=False),
    Column("changed_at", TS, nullable=False, server_default=func.now()),
    Index("ix_deal_changes_offer_id", "offer_id"),
)

projection_tracking = Table(
    "projection_tracking",
    metadata,
    Column("consumer", String(128), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("updated_at", TS, nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "topic", "partition"),
)
