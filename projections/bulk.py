"""Many rows in one statement with one parameter set: a column of values per array, unnested.

SQLAlchemy's executemany processes every row's parameters in Python (its bind processors,
then its multi-row VALUES batching); in the live projector that was about a tenth of the
worker's CPU. Here a batch is sent as one array per column: the driver encodes each array
in one go, the statement is prepared once, and ``RETURNING`` still reports which rows went
in. JSON columns travel as text and are cast in the statement (JSONB stores them parsed,
so the text's spacing never reaches a reader).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, TextClause, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import JSON, String, TypeEngine

_DIALECT = postgresql.dialect()


@dataclass(frozen=True)
class BulkInsert:
    """An ``INSERT ... SELECT FROM unnest(...)`` for a fixed list of columns."""

    statement: TextClause
    columns: tuple[str, ...]
    json_columns: frozenset[str]

    def params(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        """The rows as one array per column (absent keys are NULL)."""
        params: dict[str, list[Any]] = {}
        for i, column in enumerate(self.columns):
            values = [row.get(column) for row in rows]
            if column in self.json_columns:
                values = [None if v is None else json.dumps(v) for v in values]
            params[f"c{i}"] = values
        return params


def _quoted(name: str) -> str:
    return _DIALECT.identifier_preparer.quote(name)


def _array_type(column_type: TypeEngine[Any]) -> str:
    """The element type the values travel as. Text for every string column: an explicit
    cast to ``varchar(n)`` would silently truncate a longer value, while the INSERT's own
    assignment to the column rejects it, as a plain INSERT does."""
    if isinstance(column_type, (JSON, String)):
        return "text"
    return column_type.compile(dialect=_DIALECT)


@functools.cache
def bulk_insert(table: Table, columns: tuple[str, ...], conflict: str = "", returning: str = "") -> BulkInsert:
    """The statement for ``columns`` of ``table``; ``conflict`` and ``returning`` are the
    SQL that follows the rows (``ON CONFLICT ...``, a column name). Built once per use."""
    json_columns = frozenset(c for c in columns if isinstance(table.c[c].type, JSON))
    arrays, selected = [], []
    for i, column in enumerate(columns):
        sql_type = _array_type(table.c[column].type)
        arrays.append(f"CAST(:c{i} AS {sql_type}[])")
        selected.append(f"c{i}::jsonb" if column in json_columns else f"c{i}")
    names = ", ".join(f"c{i}" for i in range(len(columns)))
    sql = (
        f"INSERT INTO {_quoted(table.name)} ({', '.join(_quoted(c) for c in columns)}) "
        f"SELECT {', '.join(selected)} FROM unnest({', '.join(arrays)}) AS rows({names})"
    )
    if conflict:
        sql += f" {conflict}"
    if returning:
        sql += f" RETURNING {_quoted(returning)}"
    return BulkInsert(text(sql), columns, json_columns)


def update_on_conflict(key: str, columns: Sequence[str]) -> str:
    """``ON CONFLICT (key) DO UPDATE`` of ``columns`` to the values offered."""
    updates = ", ".join(f"{_quoted(c)} = EXCLUDED.{_quoted(c)}" for c in columns)
    return f"ON CONFLICT ({_quoted(key)}) DO UPDATE SET {updates}"
