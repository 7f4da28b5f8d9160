"""Re-sealing payout recipients under the current key, and checking that every row opens.

Rotation walks the rows not yet under the current key in recipient-id order, one batch per
transaction, each row locked (FOR UPDATE SKIP LOCKED) while it is opened with its own ids and
re-sealed. A row that does not open (its key is gone, or its envelope belongs to another row)
is left exactly as it is and reported. Rows are only ever rewritten to the current key, so a
second run, or a run resumed after a crash, does nothing to what is done.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.crypto import RecipientDetailsUnreadable, RecipientVault, key_id_of
from state.tables import payout_recipients as t

log = structlog.get_logger(__name__)

COLUMNS = (t.c.recipient_id, t.c.creator_id, t.c.details_ciphertext, t.c.key_id)
# One statement per batch, executed for many rows (a round trip per row was 390 rows/s).
RESEAL = (
    update(t)
    .where(t.c.recipient_id == bindparam("rid"))
    .values(details_ciphertext=bindparam("sealed"), key_id=bindparam("kid"))
)


@dataclass
class Unreadable:
    recipient_id: str
    reason: str  # names the recipient and key id, never the details


@dataclass
class RotationSummary:
    current_key_id: str
    to_rotate: int = 0  # rows not under the current key when the run started
    rotated: int = 0
    already_current: int = 0
    failed: list[Unreadable] = field(default_factory=list)
    left: int = 0  # still not under the current key afterwards (locked by a writer, or added meanwhile)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "current_key_id": self.current_key_id,
            "dry_run": self.dry_run,
            "rotated" if not self.dry_run else "would_rotate": self.rotated,
            "already_current": self.already_current,
            "failed": len(self.failed),
            "left": self.left,
        }


@dataclass
class CheckSummary:
    current_key_id: str
    by_key: Counter[str] = field(default_factory=Counter)  # opened rows per key id ("legacy" = Fernet)
    failed: list[Unreadable] = field(default_factory=list)

    @property
    def opened(self) -> int:
        return sum(self.by_key.values())

    @property
    def not_current(self) -> int:
        return self.opened - self.by_key[self.current_key_id]

    def as_dict(self) -> dict[str, Any]:
        return {
            "current_key_id": self.current_key_id,
            "opened": self.opened,
            "by_key": dict(sorted(self.by_key.items())),
            "not_under_current_key": self.not_current,
            "failed": len(self.failed),
        }


def _not_current(current_key_id: str) -> Any:
    return t.c.key_id.is_distinct_from(current_key_id)


async def count_to_rotate(engine: AsyncEngine, current_key_id: str) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).where(_not_current(current_key_id))) or 0)


async def count_all(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(t)) or 0)


async def rotate(
    engine: AsyncEngine,
    vault: RecipientVault,
    *,
    batch: int = 200,
    dry_run: bool = False,
    on_row: Callable[[], None] = lambda: None,
) -> RotationSummary:
    current = vault.current_key_id
    summary = RotationSummary(current_key_id=current, dry_run=dry_run)
    summary.to_rotate = await count_to_rotate(engine, current)
    async with engine.connect() as conn:
        summary.already_current = int(await conn.scalar(select(func.count()).where(t.c.key_id == current)) or 0)
    after: str | None = None  # the id cursor: failed and skipped rows are passed, never retried in a run
    while True:
        async with engine.begin() as conn:
            query = select(*COLUMNS).where(_not_current(current)).order_by(t.c.recipient_id).limit(batch)
            if after is not None:
                query = query.where(t.c.recipient_id > after)
            if not dry_run:
                query = query.with_for_update(skip_locked=True)
            rows = (await conn.execute(query)).all()
            if not rows:
                break
            resealed: list[dict[str, Any]] = []
            for recipient_id, creator_id, ciphertext, _key_id in rows:
                recipient_id, creator_id, ciphertext = str(recipient_id), str(creator_id), bytes(ciphertext)
                after = recipient_id
                on_row()
                if vault.is_current(ciphertext):
                    # Sealed under the current key already; only the column lagged behind.
                    resealed.append({"rid": recipient_id, "sealed": ciphertext, "kid": current})
                    summary.already_current += 1
                    continue
                try:
                    details = vault.open(ciphertext, recipient_id=recipient_id, creator_id=creator_id)
                except RecipientDetailsUnreadable as exc:
                    summary.failed.append(Unreadable(recipient_id, str(exc)))
                    log.error("recipient_rotation_failed", recipient_id=recipient_id, reason=str(exc))
                    continue
                sealed = vault.seal(details, recipient_id=recipient_id, creator_id=creator_id)
                resealed.append({"rid": recipient_id, "sealed": sealed, "kid": key_id_of(sealed)})
                summary.rotated += 1
            if resealed and not dry_run:
                await conn.execute(RESEAL, resealed)
    if dry_run:
        summary.left = summary.to_rotate
    else:
        summary.left = await count_to_rotate(engine, current)
    log.info("recipient_key_rotation_done", **summary.as_dict())
    return summary


async def check(
    engine: AsyncEngine, vault: RecipientVault, *, batch: int = 500, on_row: Callable[[], None] = lambda: None
) -> CheckSummary:
    """Open every row with its own ids (no locks, nothing written)."""
    summary = CheckSummary(current_key_id=vault.current_key_id)
    after: str | None = None
    while True:
        async with engine.connect() as conn:
            query = select(*COLUMNS).order_by(t.c.recipient_id).limit(batch)
            if after is not None:
                query = query.where(t.c.recipient_id > after)
            rows = (await conn.execute(query)).all()
        if not rows:
            break
        for recipient_id, creator_id, ciphertext, _key_id in rows:
            recipient_id, creator_id, ciphertext = str(recipient_id), str(creator_id), bytes(ciphertext)
            after = recipient_id
            on_row()
            try:
                vault.open(ciphertext, recipient_id=recipient_id, creator_id=creator_id)
                summary.by_key[key_id_of(ciphertext) or "legacy"] += 1
            except RecipientDetailsUnreadable as exc:
                summary.failed.append(Unreadable(recipient_id, str(exc)))
    return summary
