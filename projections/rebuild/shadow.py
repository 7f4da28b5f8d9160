"""The shadow tables a rebuild folds into, beside the live ones.

UNLOGGED (throwaway tables need no WAL), created ``LIKE`` the live tables, keys added after
the bulk load (faster). Rows are built by the live projector's own row builders
(``projections.writers``), so shadow and live rows can only differ by what the events say.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from infra.avro import json_dumps
from models.deal import Deal
from projections.rebuild.report import RebuildError
from projections.rows import deal_to_row
from projections.tables import deal_events, offers
from projections.writers import Located, history_row, shadow_tables

SHADOW_OFFERS = "offers_rebuild"
SHADOW_EVENTS = "deal_events_rebuild"
SHADOW = shadow_tables(SHADOW_OFFERS, SHADOW_EVENTS)

# first_seq/change_seq are SSE bookkeeping a rebuild cannot recompute: never compared,
# kept from the live row on a swap. recorded_at is when the projector wrote the row.
OFFER_COLUMNS: tuple[str, ...] = tuple(c.name for c in offers.columns if c.name not in ("first_seq", "change_seq"))
EVENT_COLUMNS: tuple[str, ...] = tuple(c.name for c in deal_events.columns if c.name != "recorded_at")


async def create(conn: asyncpg.Connection) -> None:
    await conn.execute(f"DROP TABLE IF EXISTS {SHADOW_OFFERS}, {SHADOW_EVENTS}")
    await conn.execute(f"CREATE UNLOGGED TABLE {SHADOW_OFFERS} (LIKE offers INCLUDING DEFAULTS)")
    await conn.execute(
        f"ALTER TABLE {SHADOW_OFFERS} ALTER COLUMN first_seq DROP NOT NULL, ALTER COLUMN change_seq DROP NOT NULL"
    )
    await conn.execute(f"CREATE UNLOGGED TABLE {SHADOW_EVENTS} (LIKE deal_events INCLUDING DEFAULTS)")


async def add_keys(conn: asyncpg.Connection) -> None:
    try:
        await conn.execute(f"ALTER TABLE {SHADOW_OFFERS} ADD PRIMARY KEY (offer_id)")
        await conn.execute(f"ALTER TABLE {SHADOW_EVENTS} ADD PRIMARY KEY (event_id)")
    except asyncpg.UniqueViolationError as exc:
        # Two workers folded the same offer: its events are not co-partitioned.
        raise RebuildError(
            "the same offer or event was read by two workers (topics not co-partitioned by offer_id?): "
            f"rerun with --workers 1 ({exc})"
        ) from exc
    await conn.execute(f"ANALYZE {SHADOW_OFFERS}, {SHADOW_EVENTS}")


async def drop(conn: asyncpg.Connection) -> None:
    await conn.execute(f"DROP TABLE IF EXISTS {SHADOW_OFFERS}, {SHADOW_EVENTS}")


def event_record(located: Located) -> tuple[Any, ...]:
    """A history row for COPY: the projector's own row, in EVENT_COLUMNS order."""
    row = history_row(located)
    row["payload"] = json_dumps(row["payload"])
    return tuple(row[c] for c in EVENT_COLUMNS)


def offer_record(deal: Deal) -> tuple[Any, ...]:
    row = deal_to_row(deal)
    return tuple(row[c] for c in OFFER_COLUMNS)


async def copy_events(conn: asyncpg.Connection, records: Sequence[tuple[Any, ...]]) -> None:
    if records:
        await conn.copy_records_to_table(SHADOW_EVENTS, records=list(records), columns=list(EVENT_COLUMNS))


async def copy_offers(conn: asyncpg.Connection, deals: Iterable[Deal]) -> None:
    records = [offer_record(d) for d in deals]
    if records:
        await conn.copy_records_to_table(SHADOW_OFFERS, records=records, columns=list(OFFER_COLUMNS))
