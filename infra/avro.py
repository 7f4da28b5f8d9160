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


def event_to_record(event: Event | DeadLetter) -> dict[str, Any]:
    return {f.name: _plain(getattr(event, f.name)) for f in dataclasses.fields(event)}


def _coerce(value: Any, hint: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(value, inner[0]) if len(inner) == 1 else value
    if origin is tuple:
        item_hint = typing.get_args(hint)[0]
        return tuple(_coerce(v, item_hint) for v in value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if hint is RoyaltyPeriod:
        return RoyaltyPeriod(period=value["period"], amount_minor=int(value["amount_minor"]))
    if hint is str and isinstance(value, uuid.UUID):
        return str(value)
    if hint is datetime and isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # Resolving type hints is most of a decode's cost; they never change for a class.
    return typing.get_type_hints(cls)


_PASS, _STR, _COERCE = 0, 1, 2
_SCALARS = (str, int, bool, float)


@functools.cache
def _field_plan(cls: type) -> tuple[tuple[str, Any, int], ...]:
    """Per field of an event class: (name, hint, how to convert), decided once per class.

    Ints pass through; strings only turn a UUID into its text; anything else (enums,
    datetimes, tuples of records) goes through ``_coerce``. This is the decode hot path:
    every consumer and the rebuild map every record through it."""
    hints = _hints(cls)
    plan = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_args(hint) else [hint]
        base = args[0] if len(args) == 1 else None
        kind = _PASS if base in (int, bool, float) else _STR if base is str else _COERCE
        plan.append((f.name, hint, kind))
    return tuple(plan)


def record_to_event(cls: type[Event], record: dict[str, Any]) -> Event:
    """Build and validate a domain event from a decoded record (InvalidEvent if it is not one)."""
    kwargs: dict[str, Any] = {}
    try:
        for name, hint, kind in _field_plan(cls):
            if name not in record:
                continue
            value = record[name]
            if kind == _STR:
                kwargs[name] = str(value) if isinstance(value, uuid.UUID) else value
            elif kind == _PASS or value is None:
                kwargs[name] = value
            else:
                kwargs[name] = _coerce(value, hint)
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
    return {name: _json_item(getattr(event, name)) for name, _, _ in _field_plan(type(event))}


def record_to_deadletter(record: dict[str, Any]) -> DeadLetter:
    hints = _hints(DeadLetter)
    return DeadLetter(**{f.name: _coerce(record.get(f.name), hints[f.name]) for f in dataclasses.fields(DeadLetter)})


# ---------------------------------------------------------------- the registry codec


class RegistryCodec:
    """Confluent wire format (magic byte, 4-byte schema id, Avro body) via the registry."""

    def __init__(self, client: AsyncSchemaRegistryClient, catalog: SchemaCatalog, topic_namespace: str = "") -> None:
        self._client = client
        self._catalog = catalog
        self._namespace = topic_namespace
        self._serializers = {
            topic: AsyncAvroMessageSerializer(client, reader_schema=catalog.parsed(topic))  # type: ignore[arg-type]
            for topic in catalog.topics
        }
        self._schemas = {topic: AvroSchema(catalog.raw[topic]) for topic in catalog.topics}

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
                ids[topic] = await self._client.register(self.subject(topic), schema)
            except httpx.HTTPError as exc:
                raise RegistryUnavailable(f"schema registry unreachable: {exc}") from exc
        return ids

    async def encode(self, topic: str, record: dict[str, Any]) -> bytes:
        try:
            return await self._serializers[topic].encode_record_with_schema(
                self.subject(topic), self._schemas[topic], record
            )
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"schema registry unreachable: {exc}") from exc

    async def encode_event(self, event: Event | DeadLetter) -> bytes:
        return await self.encode(event.TOPIC, event_to_record(event))

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
        record = await self.decode(cls.TOPIC, data)
        return record_to_event(cls, record)

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


def codec_from_settings(settings: Settings) -> RegistryCodec:
    """The codec every process uses: our schemas, the configured registry and namespace."""
    return RegistryCodec(
        new_registry_client(settings.schema_registry_url),
        SchemaCatalog.load(settings.schema_dir),
        settings.topic_namespace,
    )
