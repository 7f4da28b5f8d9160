"""What every command shares: settings (read once, here, at the entry point) and logging,
option types (times, UUIDs), JSON lines on stdout, decoding with reports, and progress."""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from infra.avro import DecodeError, RegistryCodec, RegistryUnavailable, event_to_record
from infra.logging import configure_logging
from infra.retry import QUICK, retry
from infra.settings import Settings, SettingsError
from infra.topic_reader import RawRecord, decode_record
from models.errors import InvalidEvent
from models.events import DeadLetter, Event

T = TypeVar("T")


def load_settings(*, logs_to_stderr: bool = False) -> Settings:
    """Settings from the environment (a missing one is a clean CLI error), logging set up."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    configure_logging(settings.log_level, sys.stderr if logs_to_stderr else None)
    return settings


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


console = Console(stderr=True)
LONG_RUN_RECORDS = 10_000  # above this a run reports progress even without a terminal


class IsoTime(click.ParamType):
    """ISO-8601 instant; a time without an offset is UTC (operators paste log timestamps)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            parsed = value
        else:
            try:
                parsed = datetime.fromisoformat(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not an ISO-8601 time (e.g. 2026-01-31T12:00:00Z or 2026-01-31)", param, ctx)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


ISO_TIME = IsoTime()


def uuid_option(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a UUID", param_hint=name) from exc


def json_value(value: Any) -> Any:
    """JSON for decoded records: bytes as text when they are printable UTF-8 (keys, ids),
    otherwise ``{"base64": ...}`` so an Avro body survives the trip intact."""
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and all(c.isprintable() or c in "\t\n\r" for c in text):
            return text
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return value


def record_json(record: RawRecord, obj: Event | DeadLetter | None) -> dict[str, Any]:
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": json_value(record.key),
        "timestamp": record.timestamp.isoformat(),
        "headers": [[k, json_value(v)] for k, v in record.headers],
        "event_type": obj.TOPIC if obj is not None else None,
        "event": json_value(event_to_record(obj)) if obj is not None else None,
    }


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")


def event_time(obj: Event | DeadLetter) -> datetime:
    return obj.failed_at if isinstance(obj, DeadLetter) else obj.occurred_at


class Decoder:
    """Decodes records, reporting (not raising) the ones that are not valid messages.

    A registry that cannot be reached is retried briefly and then ends the run: every
    following record would fail the same way, and reporting them all as bad would lie."""

    def __init__(self, codec: RegistryCodec) -> None:
        self._codec = codec
        self.undecodable: Counter[str] = Counter()

    async def __call__(self, record: RawRecord) -> Event | DeadLetter | None:
        try:
            return await retry(
                QUICK,
                lambda: decode_record(self._codec, record),
                what="registry",
                retry_on=(RegistryUnavailable,),
                position=record.position,
            )
        except (DecodeError, InvalidEvent) as exc:
            self.undecodable[record.topic] += 1
            key = json.dumps(json_value(record.key))
            click.echo(f"undecodable {record.position} key={key}: {type(exc).__name__}: {exc}", err=True)
            return None


class ProgressReporter:
    """A rich bar on a terminal; on a pipe, a plain line every few seconds for long runs."""

    def __init__(self, total: int, label: str, forced: bool | None) -> None:
        self._total = total
        self._label = label
        tty = console.is_terminal
        enabled = forced if forced is not None else (tty or total >= LONG_RUN_RECORDS)
        self._bar: Progress | None = None
        self._text = enabled and not tty and total > 0
        if enabled and tty and total > 0:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
                # Stdout is the data stream: rich must not route it through the live display.
                redirect_stdout=False,
            )
            self._task = self._bar.add_task(label, total=total)
        self._done = 0
        self._last_line = time.monotonic()

    def advance(self) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.advance(self._task)
        elif self._text and time.monotonic() - self._last_line >= 5:
            self._last_line = time.monotonic()
            click.echo(f"{self._label}: {self._done}/{self._total} ({100 * self._done // self._total}%)", err=True)

    @contextmanager
    def running(self) -> Iterator[ProgressReporter]:
        if self._bar is None:
            yield self
            return
        with self._bar:
            yield self
