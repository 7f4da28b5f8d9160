"""Every schema round-trips through the real Schema Registry in the Confluent wire format,
and `spacemusic schemas check` refuses a BACKWARD-incompatible change."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from infra.avro import DecodeError, event_to_record, record_to_deadletter, record_to_event
from models.events import DeadLetter
from tests.support.events import T0, lifecycle
from tests.support.stack import run_cli


@pytest.mark.parametrize("event", lifecycle(), ids=lambda e: e.TOPIC)
async def test_event_roundtrips_through_registry(codec, event) -> None:
    data = await codec.encode_event(event)
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0 and schema_id > 0
    assert await codec.decode_event(type(event), data) == event


async def test_deadletter_roundtrips_through_registry(codec) -> None:
    letter = DeadLetter(
        dead_letter_id="00000000-0000-4000-8000-000000000009",
        consumer="valuation",
        original_topic="offer.created",
        original_partition=0,
        original_offset=3,
        original_key=None,
        original_value=b"\xff\xfe",
        error_type="DecodeError",
        error="x",
        failed_at=T0,
    )
    data = await codec.encode_event(letter)
    assert record_to_deadletter(await codec.decode("offer.deadletter", data)) == letter


async def test_garbage_is_a_decode_error(codec) -> None:
    for garbage in (b"", b"hello world", b"\x00\x00\x00\x00\x01", b"\x00\x7f\xff\xff\xff" + b"body", b"\x01" * 40):
        with pytest.raises(DecodeError):
            await codec.decode("offer.created", garbage)
    valid = await codec.encode_event(lifecycle()[0])
    with pytest.raises(DecodeError):
        await codec.decode("offer.created", valid[:12])  # truncated body


def _schema_copy(tmp_path: Path) -> Path:
    target = tmp_path / "schema"
    shutil.copytree(Path(__file__).resolve().parents[2] / "schema", target)
    return target


def _add_field(schema_dir: Path, topic: str, field: dict) -> None:
    path = schema_dir / f"{topic}.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append(field)
    path.write_text(json.dumps(schema))


def test_schemas_check_passes_on_the_committed_schemas(stack_env) -> None:
    result = run_cli(stack_env, "schemas", "check")
    assert "NO" not in result.stdout + result.stderr


def test_schemas_check_fails_on_a_breaking_change(stack_env, tmp_path) -> None:
    schema_dir = _schema_copy(tmp_path)
    _add_field(schema_dir, "offer.created", {"name": "catalog_size", "type": "int"})  # no default: breaks BACKWARD
    result = run_cli({**stack_env, "SCHEMA_DIR": str(schema_dir)}, "schemas", "check", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "incompatible" in (result.stdout + result.stderr).lower()


def test_schemas_check_accepts_a_compatible_change(stack_env, tmp_path) -> None:
    schema_dir = _schema_copy(tmp_path)
    _add_field(schema_dir, "offer.created", {"name": "catalog_size", "type": ["null", "int"], "default": None})
    result = run_cli({**stack_env, "SCHEMA_DIR": str(schema_dir)}, "schemas", "check", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_old_messages_decode_after_a_compatible_change(codec) -> None:
    """Reader schema = ours, writer schema = the registered one: resolution fills defaults."""
    data = await codec.encode_event(lifecycle()[0])
    decoded = await codec.decode("offer.created", data)
    assert record_to_event(type(lifecycle()[0]), decoded) == lifecycle()[0]
    assert event_to_record(lifecycle()[0])["currency"] == "EUR"
