"""The row writers' one-statement bulk insert (projections/bulk.py) against Postgres."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Column, MetaData, String, Table, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.sql import TS
from projections.bulk import bulk_insert, update_on_conflict


def scratch_table() -> Table:
    name = f"bulk_{uuid.uuid4().hex[:8]}"
    return Table(
        name,
        MetaData(),
        Column("id", UUID(as_uuid=False), primary_key=True),
        Column("code", String(3)),
        Column("at", TS),
        Column("doc", JSONB),
    )


@pytest.fixture
async def table(engine: AsyncEngine) -> AsyncIterator[Table]:
    """A scratch table shaped like the projections' columns, dropped afterwards."""
    scratch = scratch_table()
    async with engine.begin() as conn:
        await conn.execute(
            text(f"CREATE TABLE {scratch.name} (id uuid PRIMARY KEY, code varchar(3), at timestamptz, doc jsonb)")
        )
    yield scratch
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP TABLE IF EXISTS {scratch.name}"))


async def test_rows_go_in_typed_and_returning_names_only_the_new_ones(engine: AsyncEngine, table: Table) -> None:
    insert = bulk_insert(table, ("id", "code", "at", "doc"), "ON CONFLICT (id) DO NOTHING", returning="id")
    at = datetime(2026, 12, 4, 10, 0, 0, 123456, tzinfo=UTC)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    rows = [{"id": first, "code": "EUR", "at": at, "doc": {"a": [1, None]}}, {"id": second}]
    async with engine.begin() as conn:
        inserted = {str(r[0]) for r in await conn.execute(insert.statement, insert.params(rows))}
        again = {str(r[0]) for r in await conn.execute(insert.statement, insert.params(rows[:1]))}
        stored = (await conn.execute(text(f"SELECT id, code, at, doc FROM {table.name} ORDER BY code"))).all()
    assert inserted == {first, second}
    assert again == set()  # the conflict did nothing, and RETURNING says so
    assert [(str(r[0]), r[1], r[2], r[3]) for r in stored] == [
        (first, "EUR", at, {"a": [1, None]}),
        (second, None, None, None),
    ]


async def test_an_over_long_string_is_refused_not_truncated(engine: AsyncEngine, table: Table) -> None:
    insert = bulk_insert(table, ("id", "code"))
    with pytest.raises(DBAPIError, match="too long"):
        async with engine.begin() as conn:
            await conn.execute(insert.statement, insert.params([{"id": str(uuid.uuid4()), "code": "EURO"}]))


async def test_an_upsert_updates_the_named_columns_only(engine: AsyncEngine, table: Table) -> None:
    key = str(uuid.uuid4())
    insert = bulk_insert(table, ("id", "code", "doc"), update_on_conflict("id", ["code"]))
    async with engine.begin() as conn:
        await conn.execute(insert.statement, insert.params([{"id": key, "code": "EUR", "doc": {"v": 1}}]))
        await conn.execute(insert.statement, insert.params([{"id": key, "code": "JPY", "doc": {"v": 2}}]))
        row = (await conn.execute(text(f"SELECT code, doc FROM {table.name}"))).one()
    assert tuple(row) == ("JPY", {"v": 1})
