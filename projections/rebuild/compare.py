"""Phase 3 (compare): live and shadow tables, row by row and as a whole.

Each row is hashed in Postgres over its compared columns; a table's hash is the sum of its
row hashes mod 2^64 (independent of row order, so one pass and no sort computes it with
the row diff)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.dialects.postgresql import JSONB

from projections.rebuild.report import RowDiff, TableComparison
from projections.rebuild.shadow import EVENT_COLUMNS, OFFER_COLUMNS, SHADOW_EVENTS, SHADOW_OFFERS
from projections.tables import deal_events


def quoted(name: str) -> str:
    return f'"{name}"'


def column_list(columns: Iterable[str], prefix: str = "") -> str:
    return ", ".join(f"{prefix}{quoted(c)}" for c in columns)


def plain_row(record: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    # asyncpg returns its own UUID type; the domain (Deal, deal_json) works with strings.
    return {c: (str(record[c]) if isinstance(record[c], uuid.UUID) else record[c]) for c in columns}


@dataclass(frozen=True, slots=True)
class TableSpec:
    live: str
    shadow: str
    columns: tuple[str, ...]  # the compared columns
    key: str
    jsonb: tuple[str, ...] = ()

    def row_hash(self, alias: str) -> str:
        """A 64-bit hash of one row's compared columns: the text of the scalar columns (a ROW's
        text keeps NULL and '' apart) plus Postgres' own hash of each jsonb value, which is
        key-order independent and much cheaper than printing the jsonb."""
        scalars = [c for c in self.columns if c not in self.jsonb]
        text = f"ROW({column_list(scalars, alias)})::text" + "".join(
            f" || ':' || coalesce(jsonb_hash_extended({alias}{quoted(c)}, 0)::text, '')" for c in self.jsonb
        )
        return f"hashtextextended({text}, 0)"


OFFERS_SPEC = TableSpec("offers", SHADOW_OFFERS, OFFER_COLUMNS, "offer_id")
EVENTS_SPEC = TableSpec(
    "deal_events",
    SHADOW_EVENTS,
    EVENT_COLUMNS,
    "event_id",
    tuple(c.name for c in deal_events.columns if isinstance(c.type, JSONB) and c.name in EVENT_COLUMNS),
)


def _fold_hash(total: Any) -> str:
    # The table hash is the sum of the row hashes mod 2^64: independent of row order, so no
    # sort is needed; one pass over each table computes it together with the row diff.
    return f"{int(total or 0) % 2**64:016x}"


async def table_hash(db: asyncpg.Connection, spec: TableSpec, table: str | None = None) -> tuple[int, str]:
    """(rows, canonical hash) of one table; comparable with the hashes in a RebuildReport
    computed by the same Postgres server."""
    row = await db.fetchrow(f"SELECT count(*) AS n, sum({spec.row_hash('')}) AS h FROM {table or spec.live}")
    assert row is not None
    return int(row["n"]), _fold_hash(row["h"])


async def canonical_hashes(db: asyncpg.Connection) -> dict[str, tuple[int, str]]:
    """The live tables' canonical hashes (what a rebuild's shadow hashes are compared with)."""
    return {spec.live: await table_hash(db, spec) for spec in (OFFERS_SPEC, EVENTS_SPEC)}


async def compare_table(db: asyncpg.Connection, spec: TableSpec, samples: int) -> TableComparison:
    """Row by row (by key and row hash) and as a whole (canonical hash), in one pass."""
    key = quoted(spec.key)
    row = await db.fetchrow(
        "SELECT count(l.k) AS live_rows, sum(l.h) AS live_sum, count(s.k) AS shadow_rows, sum(s.h) AS shadow_sum, "
        "coalesce(array_agg(s.k::text ORDER BY s.k) FILTER (WHERE l.k IS NULL), '{}') AS missing, "
        "coalesce(array_agg(l.k::text ORDER BY l.k) FILTER (WHERE s.k IS NULL), '{}') AS extra, "
        "coalesce(array_agg(l.k::text ORDER BY l.k) FILTER (WHERE l.h <> s.h), '{}') AS differs "
        f"FROM (SELECT {key} AS k, {spec.row_hash('')} AS h FROM {spec.live}) l "
        f"FULL JOIN (SELECT {key} AS k, {spec.row_hash('')} AS h FROM {spec.shadow}) s ON s.k = l.k"
    )
    assert row is not None
    kinds = {"missing": list(row["missing"]), "extra": list(row["extra"]), "differs": list(row["differs"])}
    sampled = [(k, kind) for kind, keys in kinds.items() for k in keys][:samples]
    details: list[RowDiff] = []
    if sampled:
        keys = [k for k, _ in sampled]
        query = f"SELECT {column_list(spec.columns)} FROM {{table}} WHERE {key} = ANY($1::uuid[])"
        live_rows = {
            str(r[spec.key]): plain_row(r, spec.columns) for r in await db.fetch(query.format(table=spec.live), keys)
        }
        shadow_rows = {
            str(r[spec.key]): plain_row(r, spec.columns) for r in await db.fetch(query.format(table=spec.shadow), keys)
        }
        others = [c for c in spec.columns if c != spec.key]
        for k, kind in sampled:
            left, right = live_rows.get(k), shadow_rows.get(k)
            changed = tuple(c for c in others if left and right and left[c] != right[c])
            details.append(RowDiff(spec.live, k, kind, changed, left, right))
    return TableComparison(
        table=spec.live,
        live_rows=int(row["live_rows"]),
        shadow_rows=int(row["shadow_rows"]),
        live_hash=_fold_hash(row["live_sum"]),
        shadow_hash=_fold_hash(row["shadow_sum"]),
        missing=tuple(kinds["missing"]),
        extra=tuple(kinds["extra"]),
        differing=tuple(kinds["differs"]),
        samples=tuple(details),
    )
