"""The event outbox: the web app's events, committed with the answer they belong to.

A command handler writes its idempotency record and the encoded event (an ``event_outbox``
row) in one transaction, then publishes and sets ``sent_at``. A process killed in between
leaves an unsent row, which the relay (web/relay.py) publishes later; ``event_id`` is unique,
so the same command can never queue two different events. See docs/architecture.md
("The outbox").

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "event_outbox",
        sa.Column("seq", sa.BigInteger, autoincrement=True, nullable=False),
        sa.Column("event_id", UUID(as_uuid=False), nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("message_key", sa.LargeBinary),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("headers", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", TS),
        sa.PrimaryKeyConstraint("seq", name="pk_event_outbox"),
        sa.UniqueConstraint("event_id", name="uq_event_outbox_event_id"),
    )
    # The relay's one question: the oldest unsent rows.
    op.create_index("ix_event_outbox_unsent", "event_outbox", ["seq"], postgresql_where=sa.text("sent_at IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_event_outbox_unsent", table_name="event_outbox")
    op.drop_table("event_outbox")
