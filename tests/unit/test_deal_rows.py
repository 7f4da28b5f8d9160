"""The deal's row and JSON forms, as the projector writes them per event."""

from __future__ import annotations

from infra.sql import jsonable
from models.deal import apply_event
from projections.rows import DEAL_FIELDS, deal_document, deal_json, deal_to_row, row_to_deal
from tests.support.events import lifecycle


def test_deal_json_is_the_jsonable_form_of_every_field_at_every_step() -> None:
    deal = None
    for event in lifecycle():
        deal = apply_event(deal, event)
        row = deal_to_row(deal)
        expected = {name: jsonable(row.get(name)) for name in (*DEAL_FIELDS, "status")}
        assert deal_json(row) == expected
        assert deal_json({**row, "change_seq": 9}) == {**expected, "change_seq": 9}
        assert deal_document(deal) == expected
        assert list(deal_document(deal)) == list(expected)  # the same keys in the same order


def test_a_row_with_extra_columns_reads_back_as_the_same_deal() -> None:
    deal = None
    for event in lifecycle():
        deal = apply_event(deal, event)
    row = {**deal_to_row(deal), "first_seq": 1, "change_seq": 2}
    assert row_to_deal(row) == deal
