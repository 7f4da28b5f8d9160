"""Conversions between the pure ``Deal`` and its table row / JSON form."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from infra.sql import jsonable
from models.deal import Deal

DEAL_FIELDS = tuple(f.name for f in dataclasses.fields(Deal))


def deal_to_row(deal: Deal) -> dict[str, Any]:
    row = {name: getattr(deal, name) for name in DEAL_FIELDS}
    row["status"] = deal.status.value
    return row


def row_to_deal(row: Mapping[str, Any]) -> Deal:
    return Deal(**{name: row[name] for name in DEAL_FIELDS if name in row})


def deal_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The deal as the API and the SSE stream show it."""
    out = {name: jsonable(row.get(name)) for name in (*DEAL_FIELDS, "status")}
    if "change_seq" in row:
        out["change_seq"] = row["change_seq"]
    return out
