"""`spacemusic replay`: read lifecycle topics (or the dead-letter topic) again, outside any
consumer group, and print, re-publish or project what they hold.

Writes are dry runs unless ``--execute`` is given: an operator sees exactly what would be
written (as JSON lines on stdout) before anything is. Stdout carries data only; progress,
undecodable-message reports, logs and the summary go to stderr, so `replay | jq` works.

Exit status: 0 when the run completed (undecodable messages are reported and counted, and
do not stop it), 1 when it could not run (topic missing on the broker, offset out of range,
registry unreachable) or when messages were selected but not one of them could be decoded,
2 for usage errors (unknown topic name, conflicting options).
"""

from __future__ import annotations

import enum
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import click
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bootstrap.commands.support import (
    ISO_TIME,
    Decoder,
    ProgressReporter,
    console,
    emit,
    event_time,
    json_value,
    load_settings,
    record_json,
    run,
    uuid_option,
)
from infra.avro import (
    RegistryUnavailable,
    codec_from_settings,
)
from infra.db import create_engine
from infra.kafka import EventPublisher, all_logical_topics
from infra.retry import QUICK
from infra.settings import Settings
from infra.topic_reader import RawRecord, ReadPlan, ReadSpec, TopicReader, TopicReadError
from models.events import DEADLETTER_TOPIC, LIFECYCLE_EVENTS, DeadLetter, Event
from projections.projector import Position, apply_to_deal, take_write_lock
from projections.tables import deal_events

REPLAY_HEADER = "replayed_from"
REGISTRY_ATTEMPTS = QUICK.max_attempts


# ---------------------------------------------------------------- outputs


class Output(enum.StrEnum):
    JSON = "json"
    REPUBLISH = "republish"
    PROJECT = "project"


class JsonLines:
    async def write(self, record: RawRecord, obj: Event | DeadLetter) -> str:
        emit(record_json(record, obj))
        return "printed"


class Republisher:
    """Same key, same bytes, original headers plus a marker saying where it came from."""

    def __init__(self, publisher: EventPublisher | None, target: str | None) -> None:
        self._publisher = publisher  # None: dry run
        self._target = target

    async def write(self, record: RawRecord, obj: Event | DeadLetter) -> str:
        target = self._target or record.topic
        headers = [*record.headers, (REPLAY_HEADER, record.position.encode())]
        action = "would_publish"
        if self._publisher is not None:
            await self._publisher.send_raw(target, record.key, record.value, headers)
            action = "published"
        emit(
            {
                "action": action,
                "target_topic": target,
                "source": record.position,
                "key": json_value(record.key),
                "headers": [[k, json_value(v)] for k, v in headers],
                "event_type": obj.TOPIC,
                "event_id": obj.dead_letter_id if isinstance(obj, DeadLetter) else obj.event_id,
            }
        )
        return action


class ProjectionApplier:
    """Folds events into the projections the way the projector does, minus its tracking
    rows: the live projector's positions stay its own, and the event-id guard in
    ``deal_events`` makes anything it already applied a no-op."""

    def __init__(self, settings: Settings, engine: AsyncEngine, execute: bool) -> None:
        self._settings = settings
        self._engine = engine
        self._execute = execute

    async def write(self, record: RawRecord, obj: Event | DeadLetter) -> str:
        assert isinstance(obj, Event), "dead letters are rejected before the run starts"
        position = Position(self._settings.topic(record.topic), record.partition, record.offset)
        if self._execute:
            # One short transaction per event: the write lock also serialises the live
            # projector, which must not stall behind a long replay.
            async with self._engine.begin() as conn:
                await take_write_lock(conn)
                action = (await apply_to_deal(conn, obj, position)).value
        else:
            async with self._engine.connect() as conn:
                present = await conn.scalar(
                    select(deal_events.c.event_id).where(deal_events.c.event_id == obj.event_id)
                )
            action = "already_applied" if present else "would_apply"
        emit(
            {
                "action": action,
                "source": record.position,
                "event_type": obj.TOPIC,
                "event_id": obj.event_id,
                "offer_id": obj.offer_id,
            }
        )
        return action


# ---------------------------------------------------------------- the run


@dataclass
class Summary:
    output: Output
    execute: bool
    planned: int = 0
    scanned: int = 0
    selected: Counter[str] = field(default_factory=Counter)
    decoded: Counter[str] = field(default_factory=Counter)
    undecodable: Counter[str] = field(default_factory=Counter)
    actions: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: float = 0.0

    def print(self, topics: tuple[str, ...]) -> None:
        verbs = sorted({verb for _, verb in self.actions})
        table = Table(title=f"replay summary ({self.output.value})")
        for heading in ("topic", "selected", "decoded", "undecodable", *verbs):
            table.add_column(heading, justify="left" if heading == "topic" else "right", no_wrap=True)
        for topic in topics:
            table.add_row(
                topic,
                str(self.selected[topic]),
                str(self.decoded[topic]),
                str(self.undecodable[topic]),
                *(str(self.actions[(topic, verb)]) for verb in verbs),
            )
        console.print(table)
        console.print(
            f"scanned {self.scanned} of {self.planned} planned record(s), selected {sum(self.selected.values())}, "
            f"decoded {sum(self.decoded.values())}, undecodable {sum(self.undecodable.values())} "
            f"in {self.seconds:.1f}s",
            soft_wrap=True,
        )
        if self.output is not Output.JSON and not self.execute:
            console.print(
                "[yellow]DRY RUN: nothing was written; re-run with --execute to write[/yellow]", soft_wrap=True
            )


class WriteFailed(RuntimeError):
    """Writing one record failed: the run stops there, with what it did so far."""

    def __init__(self, position: str, cause: Exception, summary: Summary) -> None:
        super().__init__(f"writing {position} failed: {type(cause).__name__}: {cause}")
        self.summary = summary


@dataclass(frozen=True)
class ReplayRequest:
    spec: ReadSpec
    output: Output
    target_topic: str | None
    offer_id: str | None
    execute: bool
    progress: bool | None


async def _replay(settings: Settings, request: ReplayRequest) -> Summary:
    summary = Summary(output=request.output, execute=request.execute)
    started = time.monotonic()
    codec = codec_from_settings(settings)
    decoder = Decoder(codec)
    publisher: EventPublisher | None = None
    engine: AsyncEngine | None = None
    try:
        async with TopicReader(settings) as reader:
            plan = await reader.plan(request.spec)
            if request.target_topic is not None:
                await reader.partitions([request.target_topic])  # must exist: never create by typo
            summary.planned = plan.total
            writer: JsonLines | Republisher | ProjectionApplier
            if request.output is Output.REPUBLISH:
                if request.execute:
                    publisher = EventPublisher(settings, codec)
                    await publisher.start()
                writer = Republisher(publisher, request.target_topic)
            elif request.output is Output.PROJECT:
                engine = create_engine(settings, pool_size=1)
                writer = ProjectionApplier(settings, engine, request.execute)
            else:
                writer = JsonLines()
            await _run_plan(reader, plan, request, decoder, writer, summary)
    finally:
        if publisher is not None:
            await publisher.stop()
        if engine is not None:
            await engine.dispose()
        summary.undecodable = decoder.undecodable
        summary.seconds = time.monotonic() - started
    return summary


async def _run_plan(
    reader: TopicReader,
    plan: ReadPlan,
    request: ReplayRequest,
    decoder: Decoder,
    writer: JsonLines | Republisher | ProjectionApplier,
    summary: Summary,
) -> None:
    offer_key = request.offer_id.encode() if request.offer_id else None
    matched: list[tuple[RawRecord, Event | DeadLetter]] = []
    progress = ProgressReporter(plan.total, "replay", request.progress)
    with progress.running():
        async for record in reader.read(plan):
            summary.scanned += 1
            progress.advance()
            # Every lifecycle message (and every dead letter) is keyed by its offer id, so
            # the key filters without decoding the rest of the log.
            if offer_key is not None and record.key != offer_key:
                continue
            summary.selected[record.topic] += 1
            obj = await decoder(record)
            if obj is None:
                continue
            summary.decoded[record.topic] += 1
            if offer_key is not None:
                matched.append((record, obj))
            else:
                await _write(writer, record, obj, summary)
    # One offer across topics: merged in event time, the order in which it happened.
    matched.sort(key=lambda pair: (event_time(pair[1]), pair[0].topic, pair[0].partition, pair[0].offset))
    for record, obj in matched:
        await _write(writer, record, obj, summary)


async def _write(
    writer: JsonLines | Republisher | ProjectionApplier, record: RawRecord, obj: Event | DeadLetter, summary: Summary
) -> None:
    try:
        action = await writer.write(record, obj)
    except BrokenPipeError:
        raise
    except Exception as exc:  # broker or database trouble: stop in order rather than skip ahead
        raise WriteFailed(record.position, exc, summary) from exc
    summary.actions[(record.topic, action)] += 1


@click.command()
@click.option(
    "--topic",
    "topics",
    multiple=True,
    metavar="TOPIC",
    help="Logical topic to read (repeatable), e.g. offer.created or offer.deadletter. Default: every lifecycle topic.",
)
@click.option(
    "--partition", "partitions", type=click.IntRange(min=0), multiple=True, help="Only this partition (repeatable)."
)
@click.option("--from-offset", type=click.IntRange(min=0), help="First offset to read, per partition.")
@click.option("--from-time", type=ISO_TIME, help="Start at the first message at or after this time (naive = UTC).")
@click.option("--to-offset", type=click.IntRange(min=0), help="Last offset to read (inclusive), per partition.")
@click.option(
    "--to-time", type=ISO_TIME, help="Stop after messages at this time (inclusive). Default: the end at start."
)
@click.option("--offer-id", help="Only this offer's messages, all topics merged in event-time order.")
@click.option(
    "--output",
    type=click.Choice([o.value for o in Output]),
    default=Output.JSON.value,
    show_default=True,
    help="json: JSON lines on stdout; republish: send to --target-topic; project: apply to the projections.",
)
@click.option(
    "--target-topic", metavar="TOPIC", help="Logical topic to re-publish to (must exist). Default: the source topic."
)
@click.option("--execute", is_flag=True, help="Actually write (republish/project). Without it: a dry run.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Force the progress report on or off (default: on a terminal or a long run).",
)
def replay(
    topics: tuple[str, ...],
    partitions: tuple[int, ...],
    from_offset: int | None,
    from_time: datetime | None,
    to_offset: int | None,
    to_time: datetime | None,
    offer_id: str | None,
    output: str,
    target_topic: str | None,
    execute: bool,
    progress: bool | None,
) -> None:
    """Read offer.* topics (or the dead-letter topic) again: print, re-publish or project.

    Reads from an offset, a time, or the beginning, up to an offset, a time, or the end of
    each partition as it was when the run started. Anything that writes is a dry run
    unless --execute is given.
    """
    request = _request(
        topics,
        partitions,
        from_offset,
        from_time,
        to_offset,
        to_time,
        offer_id,
        output,
        target_topic,
        execute,
        progress,
    )
    summary = _run(load_settings(logs_to_stderr=True), request)
    if summary is None:
        return
    selected = sum(summary.selected.values())
    if selected == 0:
        console.print("nothing matched: the selected range holds no messages" + (" for that offer" if offer_id else ""))
    elif not summary.decoded:
        raise click.ClickException(
            f"none of the {selected} selected message(s) could be decoded (see the reports above)"
        )


def _request(
    topics: tuple[str, ...],
    partitions: tuple[int, ...],
    from_offset: int | None,
    from_time: datetime | None,
    to_offset: int | None,
    to_time: datetime | None,
    offer_id: str | None,
    output: str,
    target_topic: str | None,
    execute: bool,
    progress: bool | None,
) -> ReplayRequest:
    """The options as one request, or a usage error naming the option at fault."""
    known = all_logical_topics()
    for topic in topics:
        if topic not in known:
            raise click.BadParameter(f"unknown topic {topic!r}; known topics: {', '.join(known)}", param_hint="--topic")
    if target_topic is not None and output != Output.REPUBLISH.value:
        raise click.BadParameter("only meaningful with --output republish", param_hint="--target-topic")
    chosen = tuple(dict.fromkeys(topics)) or tuple(cls.TOPIC for cls in LIFECYCLE_EVENTS)
    if output == Output.PROJECT.value and DEADLETTER_TOPIC in chosen:
        raise click.BadParameter(
            f"{DEADLETTER_TOPIC} holds dead letters, not deal events: re-drive them with `spacemusic deadletters redrive`",
            param_hint="--topic",
        )
    try:
        spec = ReadSpec(
            topics=chosen,
            partitions=partitions,
            from_offset=from_offset,
            from_time=from_time,
            to_offset=to_offset,
            to_time=to_time,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if execute and output == Output.JSON.value:
        console.print("[dim]--execute has no effect with --output json (it writes nothing)[/dim]")
    return ReplayRequest(
        spec=spec,
        output=Output(output),
        target_topic=target_topic,
        offer_id=uuid_option(offer_id, "--offer-id"),
        execute=execute,
        progress=progress,
    )


def _run(settings: Settings, request: ReplayRequest) -> Summary | None:
    """Run the replay and print its summary; None when the reader of stdout went away."""
    try:
        summary = run(_replay(settings, request))
    except TopicReadError as exc:
        raise click.ClickException(str(exc)) from exc
    except RegistryUnavailable as exc:
        raise click.ClickException(f"{exc} (gave up after {REGISTRY_ATTEMPTS} attempts; nothing was skipped)") from exc
    except WriteFailed as exc:
        sys.stdout.flush()
        exc.summary.print(request.spec.topics)
        raise click.ClickException(
            f"{exc}; every record before it was written (one JSON line each on stdout). Re-running the same "
            "replay is safe: consumers and the projections drop events they already have."
        ) from exc
    except BrokenPipeError:
        # `replay | head`: the reader went away, which is not a failure of the replay.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return None
    sys.stdout.flush()
    summary.print(request.spec.topics)
    return summary
