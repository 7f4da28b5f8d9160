"""Offers lapse, are declined or withdrawn: the deal facts behind those statuses, and an index
for the lapse sweeper (term-sheet-issued deals by valid_until).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

# valid_until is derived by the fold (the term sheet's date plus models.offers.OFFER_VALIDITY)
# and stored so the sweeper and GET /deals can filter on it.
_COLUMNS: tuple[tuple[str, sa.types.TypeEngine], ...] = (
    ("valid_until", TS),
    ("declined_at", TS),
    ("declined_by", sa.Text()),
    ("decline_reason", sa.Text()),
    ("withdrawn_at", TS),
    ("withdrawn_by", sa.Text()),
    ("withdraw_reason", sa.Text()),
    ("lapsed_at", TS),
)


def upgrade() -> None:
    for name, type_ in _COLUMNS:
        op.add_column("offers", sa.Column(name, type_))
    # The sweeper asks "which open offers are past valid_until": only term-sheet-issued rows matter.
    op.create_index(
        "ix_offers_open_valid_until",
        "offers",
        ["valid_until"],
        postgresql_where=sa.text("status = 'termsheet_issued'"),
    )


def downgrade() -> None:
    op.drop_index("ix_offers_open_valid_until", table_name="offers")
    for name, _ in reversed(_COLUMNS):
        op.drop_column("offers", name)
