"""Recipient details under a versioned keyring: the key id each row is sealed under.

``key_id`` names the keyring entry (RECIPIENT_ENCRYPTION_KEYS) whose AES-256-GCM key sealed
``details_ciphertext``; NULL is a row still sealed with the legacy Fernet key
(RECIPIENT_ENCRYPTION_KEY), which `spacemusic recipients rotate-key` re-encrypts. The envelope
itself carries the key id too (it is authoritative); the column lets rotation find the rows
it still has to do with an index instead of decrypting the whole table. ``key_version`` (an
integer nothing ever read or wrote) is superseded but kept: processes of the previous
release still select it during a rolling deploy.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("payout_recipients", sa.Column("key_id", sa.String(32)))
    op.create_index("ix_payout_recipients_key_id", "payout_recipients", ["key_id"])


def downgrade() -> None:
    op.drop_index("ix_payout_recipients_key_id", table_name="payout_recipients")
    op.drop_column("payout_recipients", "key_id")
