"""Conversions between the pure ``Deal`` and its table row / JSON form."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from infra.sql import jsonable
from models.deal import Deal

DEAL_FIELDS = tuple(f.name for f in dataclasses.fields(Deal))
_DEAL_FIELD_SET = frozenset(DEAL_FIELDS)
_JSON_FIELDS = (*DEAL_FIELDS, "status")
# Values JSON carries as they are; anything else goes through ``jsonable`` (datetimes).
_AS_IS = (str, int, bool, float, type(None))


def deal_to_row(deal: Deal) -> dict[str, Any]:
    row = {name: getattr(deal, name) for name in DEAL_FIELDS}
    row["status"] = deal.status.value
    return row


def row_to_deal(row: Mapping[str, Any]) -> Deal:
    return Deal(**{name: value for name, value in row.items() if name in _DEAL_FIELD_SET})


def deal_document(deal: Deal) -> dict[str, Any]:
    """``deal_json(deal_to_row(deal))`` in one pass (the projector makes one per event)."""
    out = {}
    for name in DEAL_FIELDS:
        value = getattr(deal, name)
        out[name] = value if type(value) in _AS_IS else jsonable(value)
    out["status"] = deal.status.value
    return out


def deal_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The deal as the API and the SSE stream show it."""
    # The live projector writes one per event: plain values skip jsonable's walk.
    out = {}
    for name in _JSON_FIELDS:
        value = row.get(name)
        out[name] = value if type(value) in _AS_IS else jsonable(value)
    if "change_seq" in row:
        out["change_seq"] = row["change_seq"]
    return out
