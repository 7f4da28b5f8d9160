"""One head again: the payouts-safety branch (0005) and the sessions line (0006..0010).

0006 was written beside 0005 (concurrent work, both on 0004), which left two heads; each
branch touches different tables, so the merge needs no operations. With one head,
``alembic upgrade head`` and ``alembic current`` mean what operators expect.

Revision ID: 0011
Revises: 0005, 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

revision = "0011"
down_revision = ("0005", "0010")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: both parents' tables are already in place."""


def downgrade() -> None:
    """Nothing to undo: downgrading past this splits back into the two branches."""
