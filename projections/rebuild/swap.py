"""Phase 3 (swap): make the live tables equal to the shadow, writing only the rows that differ.

A merge, not a table rename or a DELETE-all + INSERT-all: renames change table OIDs under
the web processes' prepared statements; rewriting every row costs WAL and lock time in
proportion to the table. Merging the differing rows in the reconcile transaction gives
readers the same guarantee (old rows until COMMIT, then the new ones) at a cost in
proportion to the differences: an identical rebuild writes nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

from projections.rebuild.compare import column_list, plain_row, quoted
from projections.rebuild.report import TableComparison
from projections.rebuild.shadow import EVENT_COLUMNS, OFFER_COLUMNS, SHADOW_EVENTS, SHADOW_OFFERS
from projections.rows import deal_json
from projections.writers import NOTIFY_CHANNEL

CORRECTION_EVENT_TYPE = "projection.rebuilt"


async def swap(db: asyncpg.Connection, run_id: str, offers_cmp: TableComparison, events_cmp: TableComparison) -> int:
    """Make the live tables equal to the shadow (the caller holds the projection write lock,
    inside the reconcile transaction). Only differing rows are written; key lists are joined
    through unnest. Returns the number of offers inserted or corrected."""
    if events_cmp.extra:
        await db.execute(
            "DELETE FROM deal_events l USING unnest($1::uuid[]) AS u(k) WHERE l.event_id = u.k",
            list(events_cmp.extra),
        )
    upsert_events = [*events_cmp.missing, *events_cmp.differing]
    if upsert_events:
        sets = ", ".join(f"{quoted(c)} = EXCLUDED.{quoted(c)}" for c in EVENT_COLUMNS if c != "event_id")
        await db.execute(
            f"INSERT INTO deal_events ({column_list(EVENT_COLUMNS)}) "
            f"SELECT {column_list(EVENT_COLUMNS, 's.')} FROM {SHADOW_EVENTS} s JOIN unnest($1::uuid[]) AS u(k) "
            f"ON s.event_id = u.k ON CONFLICT (event_id) DO UPDATE SET {sets}",
            upsert_events,
        )
    if offers_cmp.extra:
        # A live deal no event supports. SSE clients learn of it on their next full load.
        await db.execute(
            "DELETE FROM offers l USING unnest($1::uuid[]) AS u(k) WHERE l.offer_id = u.k", list(offers_cmp.extra)
        )
    changed = [*offers_cmp.missing, *offers_cmp.differing]
    if not changed:
        return 0
    # Every corrected deal gets a change-log row (its SSE id), as the projector writes per event.
    rows = await db.fetch(
        f"SELECT {column_list(OFFER_COLUMNS, 's.')} FROM {SHADOW_OFFERS} s JOIN unnest($1::uuid[]) AS u(k) "
        "ON s.offer_id = u.k ORDER BY s.offer_id",
        changed,
    )
    columns: list[list[Any]] = [[], [], [], [], []]
    for record in rows:
        row = plain_row(record, OFFER_COLUMNS)
        offer_id = row["offer_id"]
        columns[0].append(offer_id)
        columns[1].append(row["creator_id"])
        columns[2].append(str(uuid.uuid5(uuid.NAMESPACE_URL, f"spacemusic:rebuild:{run_id}:{offer_id}")))
        columns[3].append(row["status"])
        columns[4].append(json.dumps(deal_json(row), separators=(",", ":")))
    seqs = await db.fetch(
        "INSERT INTO deal_changes (offer_id, creator_id, event_id, event_type, status, deal) "
        "SELECT o, c, e, $6::text, s, d::jsonb FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[]) "
        "AS u(o, c, e, s, d) RETURNING offer_id, seq",
        *columns,
        CORRECTION_EVENT_TYPE,
    )
    by_offer = {str(r["offer_id"]): int(r["seq"]) for r in seqs}
    sets = ", ".join(f"{quoted(c)} = EXCLUDED.{quoted(c)}" for c in (*OFFER_COLUMNS, "change_seq") if c != "offer_id")
    await db.execute(
        f"INSERT INTO offers ({column_list(OFFER_COLUMNS)}, first_seq, change_seq) "
        f"SELECT {column_list(OFFER_COLUMNS, 's.')}, u.seq, u.seq FROM {SHADOW_OFFERS} s "
        f"JOIN unnest($1::uuid[], $2::bigint[]) AS u(offer_id, seq) ON u.offer_id = s.offer_id "
        f"ON CONFLICT (offer_id) DO UPDATE SET {sets}",  # first_seq stays: the deal keeps its place in lists
        list(by_offer),
        list(by_offer.values()),
    )
    # One wake-up is enough: the feeds re-read everything after the last sequence they sent.
    await db.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(max(by_offer.values())))
    return len(by_offer)
