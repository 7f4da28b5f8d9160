"""Avro on the wire: the local schema catalog, event <-> record mapping, and the Confluent
wire format through a real Schema Registry (subjects ``<topic>-value``).

Decoding uses the writer schema fetched by id from the registry and *our* schema as the
reader, so old messages are read through Avro schema resolution after a compatible change.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import types
import typing
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastavro
import httpx
from schema_registry.client import AsyncSchemaRegistryClient
from schema_registry.client.errors import ClientError
from schema_registry.client.schema import AvroSchema
from schema_registry.serializers import AsyncAvroMessageSerializer
from schema_registry.serializers.errors import SerializerError

from models.errors import InvalidEvent
from models.events import DeadLetter, Event, RoyaltyPeriod
from models.validation import validate_event

if TYPE_CHECKING:
    from infra.settings import Settings


class DecodeError(ValueError):
    """The bytes are not a decodable message for this topic: a dead-letter case."""


class RegistryUnavailable(RuntimeError):
    """The registry could not be reached: transient, retry rather than dead-letter."""


@dataclass(frozen=True)
class SchemaCatalog:
    """The ``.avsc`` files in ``schema/``, keyed by logical topic name."""

    raw: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, directory: Path) -> SchemaCatalog:
        raw = {
            path.name.removesuffix(".avsc"): json.loads(path.read_text()) for path in sorted(directory.glob("*.avsc"))
        }
        if not raw:
            raise FileNotFoundError(f"no .avsc schemas in {directory}")
        return cls(raw)

    def parsed(self, topic: str) -> dict[str, Any]:
        return fastavro.parse_schema(self.raw[topic])

    @property
    def topics(self) -> list[str]:
        return list(self.raw)


# ---------------------------------------------------------------- event <-> record mapping


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


Convert = typing.Callable[[Any], Any]
# Values Avro takes and gives as they are (fastavro reads and writes datetimes itself).
_AS_IS = (str, int, bool, float, bytes, datetime)
_SCALARS = (str, int, bool, float)


def _text(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


def _utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _royalty_period(value: Any) -> RoyaltyPeriod:
    return RoyaltyPeriod(period=value["period"], amount_minor=int(value["amount_minor"]))


def _royalty_history(value: Any) -> tuple[RoyaltyPeriod, ...]:
    # One comprehension, no call per month: a royalty history is most of an offer's decode.
    return tuple([RoyaltyPeriod(v["period"], int(v["amount_minor"])) for v in value])


def _optional(hint: Any) -> Any:
    """``X`` for ``X | None``; the hint itself otherwise (a union of several stays a union)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1:
            return inner[0]
    return hint


def _from_record(hint: Any) -> Convert | None:
    """How a decoded value becomes the field's type; None: it already is (decided once per
    field, not per value: this is the decode hot path of every consumer and the rebuild)."""
    hint = _optional(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return None  # a real union: Avro already picked the branch
    if origin is tuple:
        if typing.get_args(hint)[0] is RoyaltyPeriod:
            return _royalty_history
        item = _from_record(typing.get_args(hint)[0])
        if item is None:
            return tuple
        return lambda value: tuple(None if v is None else item(v) for v in value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    if hint is RoyaltyPeriod:
        return _royalty_period
    if hint is str:
        return _text
    if hint is datetime:
        return _utc
    return None


def _flat_records(hint: Any) -> Convert | None:
    """For a tuple of flat records (the royalty history: only scalar fields), one dict per
    item without the recursive walk; None for any other hint. Avro and JSON take the same."""
    if typing.get_origin(hint) is not tuple:
        return None
    item = typing.get_args(hint)[0]
    if not (dataclasses.is_dataclass(item) and all(h in _SCALARS for h in _hints(item).values())):
        return None
    names = tuple(f.name for f in dataclasses.fields(item))
    return lambda value: [{n: getattr(v, n) for n in names} for v in value]


def _to_record(hint: Any) -> Convert | None:
    """How a field's value becomes what Avro writes; None: as it is."""
    base = _optional(hint)
    if base in _AS_IS:
        return None
    return _flat_records(base) or _plain


def _to_json(hint: Any) -> Convert:
    """How a field's value becomes a JSON value (what ``_json_item`` does, decided per field)."""
    base = _optional(hint)
    if base is datetime:
        return datetime.isoformat
    return _flat_records(base) or _json_item


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # Resolving type hints is most of a decode's cost; they never change for a class.
    return typing.get_type_hints(cls)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    from_record: Convert | None
    to_record: Convert | None
    to_json: Convert

    def read(self, value: Any) -> Any:
        """A decoded value as the field's type (None stays None)."""
        return value if self.from_record is None or value is None else self.from_record(value)


@functools.cache
def _field_plan(cls: type) -> tuple[_Field, ...]:
    """Per field of an event class, its conversions both ways, decided once per class."""
    hints = _hints(cls)
    return tuple(
        _Field(f.name, _from_record(hints[f.name]), _to_record(hints[f.name]), _to_json(hints[f.name]))
        for f in dataclasses.fields(cls)
    )


def event_to_record(event: Event | DeadLetter) -> dict[str, Any]:
    record = {}
    for field in _field_plan(type(event)):
        value = getattr(event, field.name)
        record[field.name] = value if field.to_record is None or value is None else field.to_record(value)
    return record


def record_to_event(cls: type[Event], record: dict[str, Any]) -> Event:
    """Build and validate a domain event from a decoded record (InvalidEvent if it is not one)."""
    kwargs: dict[str, Any] = {}
    try:
        for field in _field_plan(cls):
            if field.name not in record:
                continue
            value = record[field.name]
            kwargs[field.name] = field.read(value)
        event = cls(**kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidEvent(f"record is not a valid {cls.__name__}: {exc}") from exc
    return validate_event(event)


def _json_item(item: Any) -> Any:
    if item is None or type(item) in _SCALARS:
        return item
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return {f.name: _json_item(getattr(item, f.name)) for f in dataclasses.fields(item)}
    if isinstance(item, datetime):
        return item.isoformat()
    if isinstance(item, enum.Enum):
        return item.value
    if isinstance(item, (tuple, list)):
        return [_json_item(v) for v in item]
    return item


def json_dumps(value: Any) -> str:
    """Compact JSON of already-JSON values (as ``event_payload`` returns)."""
    return json.dumps(value, separators=(",", ":"))


def event_payload(event: Event) -> dict[str, Any]:
    """The event as JSON values (datetimes as ISO-8601, enums as their value): what the
    deal history stores and the API shows."""
    payload = {}
    for field in _field_plan(type(event)):
        value = getattr(event, field.name)
        payload[field.name] = None if value is None else field.to_json(value)
    return payload


def record_to_deadletter(record: dict[str, Any]) -> DeadLetter:
    kwargs = {}
    for field in _field_plan(DeadLetter):
        value = record.get(field.name)
        kwargs[field.name] = field.read(value)
    return DeadLetter(**kwargs)


# ---------------------------------------------------------------- decoded events, remembered


class DecodedMemo:
    """The events a process decoded or encoded lately, by their exact wire bytes.

    Decoding is a pure function of the bytes (they name their writer schema, and a registry
    id never changes meaning), and events are immutable, so one worker's agents can share a
    decode: the valuation and the projector both read every ``offer.created``, and the
    projector reads back every ``offer.valuated`` the valuation just encoded. Bounded: the
    oldest entries go first. The two reads of ``offer.created`` come in lockstep and always
    fit; under a backlog the projector reads the valuations back late, and those deeper
    than the memo are decoded again (docs/performance.md)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._events: dict[tuple[type, bytes], Event] = {}
        self.hits = 0
        self.misses = 0

    def get(self, cls: type[Event], data: bytes) -> Event | None:
        event = self._events.get((cls, data))
        if event is None:
            self.misses += 1
        else:
            self.hits += 1
        return event

    def put(self, data: bytes, event: Event) -> None:
        events = self._events
        events[(type(event), data)] = event
        if len(events) > self._capacity:
            del events[next(iter(events))]


def survives_the_wire(event: Event) -> bool:
    """Would decoding this event's bytes give back an equal event, validation included?
    Times travel as UTC milliseconds: a finer or non-UTC time comes back different."""
    for field in _field_plan(type(event)):
        value = getattr(event, field.name)
        if isinstance(value, datetime) and (value.tzinfo is not UTC or value.microsecond % 1000):
            return False
    try:
        validate_event(event)
    except InvalidEvent:
        return False
    return True


# ---------------------------------------------------------------- the registry codec


class RegistryCodec:
    """Confluent wire format (magic byte, 4-byte schema id, Avro body) via the registry."""

    def __init__(
        self,
        client: AsyncSchemaRegistryClient,
        catalog: SchemaCatalog,
        topic_namespace: str = "",
        memo_capacity: int = 0,
    ) -> None:
        self._client = client
        # Off unless asked for: it pays only where one process decodes a message twice.
        self.memo = DecodedMemo(memo_capacity) if memo_capacity > 0 else None
        self._catalog = catalog
        self._namespace = topic_namespace
        self._serializers = {
            topic: AsyncAvroMessageSerializer(client, reader_schema=catalog.parsed(topic))  # type: ignore[arg-type]
            for topic in catalog.topics
        }
        self._schemas = {topic: AvroSchema(catalog.raw[topic]) for topic in catalog.topics}
        # The id each local schema has in the registry, once known: encoding by id skips the
        # client's register() cache lookup, which serialises the whole schema to JSON on every
        # call (a third of an encode).
        self._schema_ids: dict[str, int] = {}

    @property
    def catalog(self) -> SchemaCatalog:
        return self._catalog

    def subject(self, topic: str) -> str:
        return f"{self._namespace}{topic}-value"

    async def register_all(self) -> dict[str, int]:
        """Register every local schema (idempotent); call at start-up so no first message
        waits on the registry."""
        ids: dict[str, int] = {}
        for topic, schema in self._schemas.items():
            try:
                ids[topic] = self._schema_ids[topic] = await self._client.register(self.subject(topic), schema)
            except httpx.HTTPError as exc:
                raise RegistryUnavailable(f"schema registry unreachable: {exc}") from exc
        return ids

    async def _schema_id(self, topic: str) -> int:
        schema_id = self._schema_ids.get(topic)
        if schema_id is None:
            schema_id = self._schema_ids[topic] = await self._client.register(self.subject(topic), self._schemas[topic])
        return schema_id

    async def encode(self, topic: str, record: dict[str, Any]) -> bytes:
        serializer = self._serializers[topic]
        try:
            schema_id = await self._schema_id(topic)
            if schema_id not in serializer.id_to_writers:
                # The first time: the serializer keeps its writer for our schema under that id.
                return await serializer.encode_record_with_schema(self.subject(topic), self._schemas[topic], record)
            return await serializer.encode_record_with_schema_id(schema_id, record)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"schema registry unreachable: {exc}") from exc

    async def encode_event(self, event: Event | DeadLetter) -> bytes:
        data = await self.encode(event.TOPIC, event_to_record(event))
        if self.memo is not None and isinstance(event, Event) and survives_the_wire(event):
            self.memo.put(data, event)
        return data

    async def decode(self, topic: str, data: bytes | None) -> dict[str, Any]:
        if not data:
            raise DecodeError("empty message value")
        try:
            record = await self._serializers[topic].decode_message(data)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"schema registry unreachable: {exc}") from exc
        except (SerializerError, ClientError) as exc:
            raise DecodeError(str(exc)) from exc
        except Exception as exc:  # fastavro raises many types on corrupt bodies
            raise DecodeError(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(record, dict):
            raise DecodeError("decoded value is not a record")
        return record

    async def decode_event(self, cls: type[Event], data: bytes | None) -> Event:
        memo = self.memo
        if memo is None or not data:
            return record_to_event(cls, await self.decode(cls.TOPIC, data))
        if (known := memo.get(cls, data)) is not None:
            return known
        event = record_to_event(cls, await self.decode(cls.TOPIC, data))
        memo.put(data, event)
        return event

    async def check_compatibility(self, topic: str) -> tuple[bool, str]:
        """Is the local schema BACKWARD compatible with what the registry holds?"""
        subject = self.subject(topic)
        try:
            versions = await self._client.get_versions(subject)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"schema registry unreachable: {exc}") from exc
        if not versions:
            return True, "new subject"
        result = await self._client.test_compatibility(subject, self._schemas[topic], verbose=True)
        if isinstance(result, dict):
            ok = bool(result.get("is_compatible"))
            messages = result.get("messages") or []
            return ok, "; ".join(map(str, messages)) if messages else ("compatible" if ok else "incompatible")
        return bool(result), "compatible" if result else "incompatible"


def new_registry_client(url: str) -> AsyncSchemaRegistryClient:
    return AsyncSchemaRegistryClient(url=url, timeout=httpx.Timeout(10.0))


def codec_from_settings(settings: Settings, memo_capacity: int = 0) -> RegistryCodec:
    """The codec every process uses: our schemas, the configured registry and namespace
    (``memo_capacity``: see ``DecodedMemo``)."""
    return RegistryCodec(
        new_registry_client(settings.schema_registry_url),
        SchemaCatalog.load(settings.schema_dir),
        settings.topic_namespace,
        memo_capacity,
    )
