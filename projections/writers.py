"""The one set of row writers for the deal projections, live and shadow.

The live projector, `replay --output project` and the rebuild's catch-up all fold events
into deals through ``fold_into``; the rebuild's bulk load COPYs rows built by the same
``history_row`` / ``deal_to_row``. A ``DealTables`` names the tables written: the live
ones, or the rebuild's shadow copies (same columns, no change log).

Everything here runs inside the caller's transaction; callers that write the live tables
hold the projection write lock (see ``projections.projector``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import MetaData, Table, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.avro import event_payload
from models.deal import Deal, apply_event
from models.events import Event
from projections.bulk import BulkInsert, bulk_insert, update_on_conflict
from projections.rows import DEAL_FIELDS, deal_document, deal_to_row
from projections.tables import deal_changes, deal_events, offers

NOTIFY_CHANNEL = "deal_changes"
# first_seq/change_seq are SSE bookkeeping, written by the live path only.
SEQ_COLUMNS = ("first_seq", "change_seq")


# Named tuples, not frozen dataclasses: one of each is built per event read (live and
# rebuild), and building the dataclasses was 4 % of the live projector's CPU.
class Position(NamedTuple):
    topic: str  # physical topic
    partition: int
    offset: int


class Located(NamedTuple):
    """An event and where in the log it was read."""

    event: Event
    position: Position


@dataclass(frozen=True)
class DealTables:
    offers: Table
    events: Table
    change_log: bool  # live: every applied event gets a deal_changes row (its SSE id)


LIVE = DealTables(offers, deal_events, change_log=True)


def shadow_tables(offers_name: str, events_name: str) -> DealTables:
    """Table objects for shadow copies created with ``CREATE TABLE ... (LIKE <live>)``."""
    meta = MetaData()
    return DealTables(
        offers.to_metadata(meta, name=offers_name), deal_events.to_metadata(meta, name=events_name), change_log=False
    )


def history_row(located: Located) -> dict[str, Any]:
    event, position = located.event, located.position
    return {
        "event_id": event.event_id,
        "offer_id": event.offer_id,
        "event_type": event.TOPIC,
        "occurred_at": event.occurred_at,
        "topic": position.topic,
        "partition": position.partition,
        "offset": position.offset,
        "payload": event_payload(event),
    }


async def insert_history(conn: AsyncConnection, tables: DealTables, items: Sequence[Located]) -> list[Located]:
    """History rows for the events not recorded yet (the event id is the key); returns those
    events, in the order given. A repeated event id (redelivery, replay) is dropped here."""
    first: dict[str, Located] = {}
    for item in items:
        first.setdefault(item.event.event_id, item)
    if not first:
        return []
    insert = _history_insert(tables)
    result = await conn.execute(insert.statement, insert.params([history_row(item) for item in first.values()]))
    inserted = {str(r[0]) for r in result}
    return [item for item in first.values() if item.event.event_id in inserted]


async def load_deals(conn: AsyncConnection, tables: DealTables, offer_ids: Iterable[str]) -> dict[str, Deal]:
    """The current deals, locked for this transaction (sorted: a fixed lock order)."""
    wanted = sorted(set(offer_ids))
    if not wanted:
        return {}
    table = tables.offers
    # The columns in the Deal's field order: a row is the deal's arguments as it stands.
    rows = await conn.execute(
        select(*(table.c[name] for name in DEAL_FIELDS))
        .where(table.c.offer_id.in_(wanted))
        .order_by(table.c.offer_id)
        .with_for_update()
    )
    return {deal.offer_id: deal for deal in (Deal(*row) for row in rows)}


async def _allocate_seqs(conn: AsyncConnection, count: int) -> list[int]:
    """``count`` change sequences in ascending order (drawn under the write lock, so they
    also commit in order)."""
    result = await conn.execute(_ALLOCATE_SEQS, {"n": count})
    return sorted(int(r[0]) for r in result)


@dataclass(frozen=True)
class Folded:
    applied: list[Located]  # new events, in the order they were folded
    deals: dict[str, Deal]  # every touched deal, after the batch
    last_seq: int | None  # the highest change sequence written (live tables only)


async def fold_into(conn: AsyncConnection, tables: DealTables, items: Sequence[Located]) -> Folded:
    """Fold a batch of events into ``tables``: history rows, one upsert per touched deal
    and (live) one change-log row per applied event, whose sequence is the deal's SSE id."""
    applied = await insert_history(conn, tables, items)
    if not applied:
        return Folded([], {}, None)
    deals = await load_deals(conn, tables, (item.event.offer_id for item in applied))
    existing = set(deals)
    # Per applied event, the deal as the change log shows it; per touched deal, its row.
    documents: list[dict[str, Any]] = []
    for item in applied:
        deal = apply_event(deals.get(item.event.offer_id), item.event)
        deals[deal.offer_id] = deal
        if tables.change_log:
            documents.append(deal_document(deal))
    rows = {offer_id: deal_to_row(deal) for offer_id, deal in deals.items()}
    last_seq = None
    if tables.change_log:
        seqs = await _allocate_seqs(conn, len(applied))
        first_seq: dict[str, int] = {}
        change_rows = []
        for seq, item, document in zip(seqs, applied, documents, strict=True):
            first_seq.setdefault(item.event.offer_id, seq)
            rows[item.event.offer_id]["change_seq"] = seq
            change_rows.append(
                {
                    "seq": seq,
                    "offer_id": item.event.offer_id,
                    "creator_id": item.event.creator_id,
                    "event_id": item.event.event_id,
                    "event_type": item.event.TOPIC,
                    "status": document["status"],
                    "deal": document,
                }
            )
        await conn.execute(_CHANGES_INSERT.statement, _CHANGES_INSERT.params(change_rows))
        for offer_id, row in rows.items():
            if offer_id not in existing:
                row["first_seq"] = first_seq[offer_id]
        last_seq = seqs[-1]
    await upsert_deals(conn, tables, list(rows.values()))
    return Folded(applied, deals, last_seq)


async def upsert_deals(conn: AsyncConnection, tables: DealTables, rows: Sequence[dict[str, Any]]) -> None:
    """Insert or update deal rows; a deal keeps its ``first_seq`` (its place in lists)."""
    if not rows:
        return
    upsert = _deal_upsert(tables)
    values = sorted(rows, key=lambda r: r["offer_id"])
    if tables.change_log:
        # New deals carry their first_seq; existing ones keep theirs (the conflict update
        # never touches it), so a placeholder for them is never stored.
        for value in values:
            if value.get("first_seq") is None:
                value["first_seq"] = value["change_seq"]
    await conn.execute(upsert.statement, upsert.params(values))


# Built once: parsing a text() clause per batch showed in the live projector's profile.
_ALLOCATE_SEQS = text("SELECT nextval(pg_get_serial_sequence('deal_changes', 'seq')) FROM generate_series(1, :n)")
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


# The row writers' statements (see projections.bulk), built once per set of tables.
_HISTORY_COLUMNS = ("event_id", "offer_id", "event_type", "occurred_at", "topic", "partition", "offset", "payload")
_CHANGES_INSERT = bulk_insert(
    deal_changes, ("seq", "offer_id", "creator_id", "event_id", "event_type", "status", "deal")
)


@functools.cache
def _history_insert(tables: DealTables) -> BulkInsert:
    return bulk_insert(tables.events, _HISTORY_COLUMNS, "ON CONFLICT (event_id) DO NOTHING", returning="event_id")


@functools.cache
def _deal_upsert(tables: DealTables) -> BulkInsert:
    columns = tuple(c.name for c in tables.offers.columns if c.name not in SEQ_COLUMNS or tables.change_log)
    kept = ("offer_id", "first_seq")  # the key, and a deal's place in lists
    return bulk_insert(tables.offers, columns, update_on_conflict("offer_id", [c for c in columns if c not in kept]))


async def notify(conn: AsyncConnection, seq: int) -> None:
    """One wake-up per transaction: the feeds re-read everything after the last sequence
    they sent, so the payload is only a hint."""
    await conn.execute(_NOTIFY, {"channel": NOTIFY_CHANNEL, "payload": str(seq)})
