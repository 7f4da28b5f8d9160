"""Every event round-trips through its .avsc with fastavro (no registry needed)."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime

import fastavro
import pytest

from infra.avro import SchemaCatalog, event_payload, event_to_record, record_to_deadletter, record_to_event
from infra.settings import REPO_ROOT
from infra.sql import jsonable
from models.errors import InvalidEvent
from models.events import (
    EVENT_BY_TOPIC,
    DeadLetter,
    OfferAccepted,
    OfferCreated,
    OfferValuated,
    PayoutCompleted,
    PayoutProvider,
    PayoutStatus,
    RoyaltyPeriod,
    ValuationOutcome,
)
from tests.support.events import T0, lifecycle

CATALOG = SchemaCatalog.load(REPO_ROOT / "schema")


def roundtrip(topic: str, record: dict) -> dict:
    schema = CATALOG.parsed(topic)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, schema, schema)


@pytest.mark.parametrize("event", lifecycle(), ids=lambda e: e.TOPIC)
def test_event_roundtrips_through_its_schema(event) -> None:
    decoded = roundtrip(event.TOPIC, event_to_record(event))
    assert record_to_event(type(event), decoded) == event


def test_every_topic_has_a_schema_and_an_event() -> None:
    assert set(CATALOG.topics) == set(EVENT_BY_TOPIC) | {"offer.deadletter"}


def test_deadletter_roundtrip_keeps_raw_bytes() -> None:
    letter = DeadLetter(
        dead_letter_id="00000000-0000-4000-8000-000000000009",
        consumer="projector",
        original_topic="offer.created",
        original_partition=2,
        original_offset=41,
        original_key=b"k",
        original_value=b"\x00garbage",
        error_type="DecodeError",
        error="bad",
        failed_at=T0,
    )
    assert record_to_deadletter(roundtrip("offer.deadletter", event_to_record(letter))) == letter


def test_semantically_invalid_records_are_rejected() -> None:
    record = event_to_record(lifecycle()[0])
    with pytest.raises(InvalidEvent, match="currency"):
        record_to_event(OfferCreated, {**record, "currency": "XXX"})
    with pytest.raises(InvalidEvent, match="negative"):
        record_to_event(OfferCreated, {**record, "royalty_history": [{"period": "2025-01", "amount_minor": -5}]})
    with pytest.raises(InvalidEvent):
        record_to_event(OfferCreated, {**record, "offer_id": "not-a-uuid"})


def _samples() -> list:
    now = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
    ids = {"offer_id": str(uuid.uuid4()), "creator_id": str(uuid.uuid4()), "correlation_id": "c"}
    return [
        OfferCreated(
            event_id=str(uuid.uuid4()),
            occurred_at=now,
            currency="EUR",
            royalty_history=tuple(RoyaltyPeriod(f"2025-{m:02d}", 1000 * m) for m in range(1, 13)),
            **ids,
        ),
        OfferValuated(
            event_id=str(uuid.uuid4()),
            occurred_at=now,
            outcome=ValuationOutcome.FAILED,
            currency="EUR",
            model_version="v1",
            failure_reason="insufficient_history",
            causation_id=str(uuid.uuid4()),
            **ids,
        ),
        OfferAccepted(
            event_id=str(uuid.uuid4()),
            occurred_at=now,
            advance_minor=5,
            currency="JPY",
            termsheet_sha256="0" * 64,
            accepted_by="x",
            **ids,
        ),
        PayoutCompleted(
            event_id=str(uuid.uuid4()),
            occurred_at=now,
            payout_id=str(uuid.uuid4()),
            status=PayoutStatus.FAILED,
            provider=PayoutProvider.NONE,
            amount_minor=0,
            currency="EUR",
            **ids,
        ),
    ]


@pytest.mark.parametrize("event", _samples(), ids=lambda e: e.TOPIC)
def test_the_record_mapping_round_trips_every_event_type(event) -> None:
    record = event_to_record(event)
    # fastavro hands uuid logical types over as UUID objects
    uuids = {"event_id", "offer_id", "creator_id", "causation_id", "payout_id", "recipient_id"}
    as_read = {k: uuid.UUID(v) if k in uuids and isinstance(v, str) else v for k, v in record.items()}
    for candidate in (record, as_read):
        built = record_to_event(type(event), candidate)
        assert built == record_to_event(type(event), candidate) == event
        assert event_payload(built) == jsonable(event_to_record(built))


def test_a_valuation_stays_after_its_offer_on_the_wire() -> None:
    """Event times travel as timestamp-millis: the valuation's tick must survive encoding,
    or a deal's history lists both events at one instant (and orders them by event id)."""
    from agents.valuation import valuate

    offer = OfferCreated(
        event_id=str(uuid.uuid4()),
        offer_id=str(uuid.uuid4()),
        creator_id=str(uuid.uuid4()),
        occurred_at=datetime(2026, 12, 3, 12, 0, 0, 123456, tzinfo=UTC),
        correlation_id=str(uuid.uuid4()),
        currency="EUR",
        royalty_history=(RoyaltyPeriod("2026-10", 10_000), RoyaltyPeriod("2026-11", 12_000)),
    )
    wire_offer = record_to_event(OfferCreated, roundtrip(OfferCreated.TOPIC, event_to_record(offer)))
    valued = valuate(wire_offer)
    wire_valued = record_to_event(OfferValuated, roundtrip(OfferValuated.TOPIC, event_to_record(valued)))
    assert wire_valued.occurred_at > wire_offer.occurred_at
    assert valuate(wire_offer) == valued  # the same cause, the same event (redelivery)
