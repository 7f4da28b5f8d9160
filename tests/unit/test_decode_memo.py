"""The worker's memo of decoded events (infra.avro.DecodedMemo) and what may enter it."""

from __future__ import annotations

import dataclasses
import io
import uuid
from datetime import UTC, datetime, timedelta, timezone

import fastavro
import pytest

from infra.avro import DecodedMemo, SchemaCatalog, event_to_record, record_to_event, survives_the_wire
from infra.settings import REPO_ROOT
from models.events import OfferCreated, OfferValuated
from tests.support.events import lifecycle

CATALOG = SchemaCatalog.load(REPO_ROOT / "schema")


def wire(event: OfferCreated | OfferValuated) -> OfferCreated | OfferValuated:
    """The event as a consumer reads it back: encoded with its schema, decoded, mapped."""
    schema = CATALOG.parsed(event.TOPIC)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, event_to_record(event))
    buf.seek(0)
    return record_to_event(type(event), fastavro.schemaless_reader(buf, schema, schema))


def test_the_memo_answers_by_class_and_exact_bytes() -> None:
    created = lifecycle()[0]
    memo = DecodedMemo(4)
    memo.put(b"\x00abc", created)
    assert memo.get(OfferCreated, b"\x00abc") is created
    assert memo.get(OfferCreated, b"\x00abd") is None
    assert memo.get(OfferValuated, b"\x00abc") is None  # another topic's reader schema
    assert (memo.hits, memo.misses) == (1, 2)


def test_the_memo_forgets_its_oldest_entries_first() -> None:
    created = lifecycle()[0]
    memo = DecodedMemo(3)
    for i in range(5):
        memo.put(bytes([i]), created)
    assert [memo.get(OfferCreated, bytes([i])) is not None for i in range(5)] == [False, False, True, True, True]


def test_an_event_that_survives_the_wire_is_what_a_consumer_would_decode() -> None:
    for event in lifecycle()[:2]:
        assert survives_the_wire(event)
        assert wire(event) == event


@pytest.mark.parametrize(
    "occurred_at",
    [
        datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),  # microseconds: Avro keeps milliseconds
        datetime(2026, 3, 1, 13, 0, 0, tzinfo=timezone(timedelta(hours=1))),  # same instant, not UTC
    ],
)
def test_an_event_the_wire_would_change_is_never_remembered_as_encoded(occurred_at: datetime) -> None:
    event = dataclasses.replace(lifecycle()[0], occurred_at=occurred_at)
    assert not survives_the_wire(event)
    decoded = wire(event)
    assert decoded != event or decoded.occurred_at.tzinfo is not occurred_at.tzinfo


def test_an_invalid_event_is_never_remembered_as_encoded() -> None:
    event = dataclasses.replace(lifecycle()[0], currency="XXX")
    assert not survives_the_wire(event)


@pytest.mark.parametrize(
    "value", [str(uuid.UUID(int=7)).upper(), "{" + str(uuid.UUID(int=7)) + "}", uuid.UUID(int=7).hex]
)
def test_uuid_forms_outside_the_fast_path_are_still_accepted(value: str) -> None:
    event = dataclasses.replace(lifecycle()[0], offer_id=value)
    assert record_to_event(OfferCreated, event_to_record(event)).offer_id == value


def test_a_malformed_uuid_is_still_rejected() -> None:
    from models.errors import InvalidEvent

    record = event_to_record(lifecycle()[0])
    for bad in ("0" * 36, str(uuid.UUID(int=7))[:-1] + "g", str(uuid.UUID(int=7)) + "0"):
        with pytest.raises(InvalidEvent):
            record_to_event(OfferCreated, {**record, "offer_id": bad})
