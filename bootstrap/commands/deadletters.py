"""`spacemusic deadletters`: what is parked in ``offer.deadletter`` and why, and re-driving
parked messages to their original topic once the cause is fixed.

The log is the record of re-drives. A re-driven copy carries a ``redriven_from`` header
(the dead-letter id) and a ``redriven_original`` header (``topic:partition:offset``), and
"already re-driven" is answered by reading the original topic from shortly before the
failure onwards. Nothing can disagree with what was actually published, there is no
second store to update after the publish, and no migration. A message two consumers both
parked is one message: re-driving it once re-delivers it to every consumer of the topic,
so the second dead letter for the same original is skipped.

Re-driving relies on what every consumer already guarantees: events are applied once per
event id, and derived events get deterministic ids, so a copy a consumer had in fact
processed before is a no-op for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import click
from rich.console import Console
from rich.table import Table

from bootstrap.commands.support import (
    ISO_TIME,
    Decoder,
    ProgressReporter,
    emit,
    json_value,
    load_settings,
    run,
    uuid_option,
)
from infra.avro import DecodeError, RegistryCodec, RegistryUnavailable, codec_from_settings
from infra.kafka import EventPublisher
from infra.settings import Settings
from infra.topic_reader import RawRecord, ReadSpec, TopicReader, TopicReadError
from models.errors import InvalidEvent
from models.events import DEADLETTER_TOPIC, EVENT_BY_TOPIC, DeadLetter

out = Console()
console = Console(stderr=True)

REDRIVEN_FROM = "redriven_from"
REDRIVEN_ORIGINAL = "redriven_original"
# Re-driven copies are searched from this long before the earliest failure: the copy's
# timestamp comes from the re-driving host's clock, which need not agree with the worker's.
CLOCK_MARGIN = timedelta(hours=1)


def original_position(letter: DeadLetter) -> str:
    return f"{letter.original_topic}:{letter.original_partition}:{letter.original_offset}"


@dataclass(frozen=True, slots=True)
class Redrive:
    """A re-driven copy found in the original topic."""

    dead_letter_id: str
    original: str
    copy: RawRecord


@dataclass(frozen=True)
class Parked:
    letters: tuple[DeadLetter, ...]  # all of them, unique by id, in failure order
    scope: list[DeadLetter]  # the ones asked about: re-drive status is looked up for these
    by_letter: dict[str, Redrive]
    by_original: dict[str, Redrive]

    def redrive_of(self, letter: DeadLetter) -> Redrive | None:
        return self.by_letter.get(letter.dead_letter_id) or self.by_original.get(original_position(letter))


Scope = Callable[[tuple[DeadLetter, ...]], list[DeadLetter]]


async def _load(settings: Settings, codec: RegistryCodec, progress: bool | None, scope: Scope) -> Parked:
    decoder = Decoder(codec)
    letters: dict[str, DeadLetter] = {}
    async with TopicReader(settings) as reader:
        plan = await reader.plan(ReadSpec(topics=(DEADLETTER_TOPIC,)))
        reporter = ProgressReporter(plan.total, "dead letters", progress)
        with reporter.running():
            async for record in reader.read(plan):
                reporter.advance()
                letter = await decoder(record)
                # The id is derived from consumer and origin, so a letter written twice (the
                # harness retried its publish) is one entry.
                if isinstance(letter, DeadLetter):
                    letters.setdefault(letter.dead_letter_id, letter)
        ordered = tuple(sorted(letters.values(), key=lambda dl: (dl.failed_at, dl.dead_letter_id)))
        # Only the letters asked about: the original topics are read from their earliest
        # failure on, and an old letter nobody asked about must not widen that scan.
        scoped = scope(ordered)
        by_letter, by_original = await _find_redrives(reader, scoped, progress)
    return Parked(ordered, scoped, by_letter, by_original)


async def _find_redrives(
    reader: TopicReader, letters: list[DeadLetter], progress: bool | None
) -> tuple[dict[str, Redrive], dict[str, Redrive]]:
    earliest: dict[str, datetime] = {}
    for letter in letters:
        current = earliest.get(letter.original_topic)
        earliest[letter.original_topic] = min(current, letter.failed_at) if current else letter.failed_at
    if not earliest:
        return {}, {}
    present = set()
    for topic in earliest:
        try:
            await reader.partitions([topic])
            present.add(topic)
        except TopicReadError:
            console.print(
                f"[yellow]original topic {topic} is not on the broker: cannot tell what was re-driven[/yellow]"
            )
    by_letter: dict[str, Redrive] = {}
    by_original: dict[str, Redrive] = {}
    for topic in sorted(present):
        plan = await reader.plan(ReadSpec(topics=(topic,), from_time=earliest[topic] - CLOCK_MARGIN))
        reporter = ProgressReporter(plan.total, f"re-drives in {topic}", progress)
        with reporter.running():
            async for record in reader.read(plan):
                reporter.advance()
                letter_id = record.header(REDRIVEN_FROM)
                if letter_id is None:
                    continue
                original = (record.header(REDRIVEN_ORIGINAL) or b"").decode("utf-8", "replace")
                found = Redrive(letter_id.decode("utf-8", "replace"), original, record)
                by_letter.setdefault(found.dead_letter_id, found)  # the first copy is the re-drive
                if original:
                    by_original.setdefault(original, found)
    return by_letter, by_original


def _filtered(
    letters: tuple[DeadLetter, ...], consumer: str | None, topic: str | None, since: datetime | None
) -> list[DeadLetter]:
    return [
        dl
        for dl in letters
        if (consumer is None or dl.consumer == consumer)
        and (topic is None or dl.original_topic == topic)
        and (since is None or dl.failed_at >= since)
    ]


def _letter_json(letter: DeadLetter, redrive: Redrive | None) -> dict[str, object]:
    return {
        "dead_letter_id": letter.dead_letter_id,
        "consumer": letter.consumer,
        "original_topic": letter.original_topic,
        "original_partition": letter.original_partition,
        "original_offset": letter.original_offset,
        "key": json_value(letter.original_key),
        "error_type": letter.error_type,
        "error": letter.error,
        "failed_at": letter.failed_at.isoformat(),
        "redriven": redrive.copy.position if redrive else None,
        "redriven_at": redrive.copy.timestamp.isoformat() if redrive else None,
    }


@click.group()
def deadletters() -> None:
    """Messages consumers could not process, parked in offer.deadletter."""


_progress = click.option(
    "--progress/--no-progress", default=None, help="Force the progress report on or off (default: on a terminal)."
)


@deadletters.command("list")
@click.option("--consumer", help="Only letters parked by this consumer (valuation, projector, termsheets, ...).")
@click.option("--topic", help="Only letters whose original topic is this logical topic.")
@click.option("--since", type=ISO_TIME, help="Only letters parked at or after this time (naive = UTC).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Show the most recent N.")
@click.option("--pending", is_flag=True, help="Only letters not re-driven yet.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout instead of a table.")
@_progress
def deadletters_list(
    consumer: str | None,
    topic: str | None,
    since: datetime | None,
    limit: int,
    pending: bool,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Show what is parked, why, and whether it was re-driven."""
    settings = load_settings(logs_to_stderr=True)
    parked = _run_load(settings, progress, lambda all_letters: _filtered(all_letters, consumer, topic, since))
    letters = parked.scope
    if pending:
        letters = [dl for dl in letters if parked.redrive_of(dl) is None]
    shown = letters[-limit:]
    if not as_json and not shown:
        console.print(f"no dead letters match ({len(parked.letters)} parked in total)", soft_wrap=True)
        return
    if as_json:
        for letter in shown:
            emit(_letter_json(letter, parked.redrive_of(letter)))
        return
    table = Table(title=f"dead letters ({len(shown)} of {len(letters)} matching, {len(parked.letters)} parked)")
    for heading in ("dead_letter_id", "consumer", "original", "key", "error_type", "error", "failed_at", "re-driven"):
        table.add_column(heading, no_wrap=heading in ("dead_letter_id", "original", "failed_at"), overflow="fold")
    for letter in shown:
        redrive = parked.redrive_of(letter)
        table.add_row(
            letter.dead_letter_id,
            letter.consumer,
            original_position(letter),
            str(json_value(letter.original_key)),
            letter.error_type,
            letter.error[:200],
            letter.failed_at.isoformat(timespec="seconds"),
            redrive.copy.position if redrive else "-",
        )
    out.print(table)
    # The same breakdown as spacemusic_dead_letters_total, but for the whole log rather than
    # what one worker process has counted since it started.
    reasons = Counter((dl.original_topic, dl.error_type.split(":")[0], parked.redrive_of(dl) is None) for dl in letters)
    totals = Table("original topic", "reason", "pending", "re-driven", title="by topic and reason")
    for t, reason in sorted({(t, r) for t, r, _ in reasons}):
        totals.add_row(t, reason, str(reasons[(t, reason, True)]), str(reasons[(t, reason, False)]))
    out.print(totals)


def _run_load(settings: Settings, progress: bool | None, scope: Scope) -> Parked:
    try:
        return run(_load(settings, codec_from_settings(settings), progress, scope))
    except TopicReadError as exc:
        raise click.ClickException(str(exc)) from exc
    except RegistryUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


@dataclass(frozen=True)
class Decision:
    letter: DeadLetter
    action: str  # redriven | would_redrive | skip | failed
    reason: str


async def _still_failing(codec: RegistryCodec, letter: DeadLetter) -> str | None:
    """Why the parked bytes still cannot be decoded as their topic's event, if they cannot.

    Only decoding can be checked here; a handler bug that is fixed by a deploy shows as a
    clean decode, and the re-driven copy will tell."""
    cls = EVENT_BY_TOPIC.get(letter.original_topic)
    if cls is None:
        return f"no event type for topic {letter.original_topic}"
    try:
        await codec.decode_event(cls, letter.original_value)
    except (DecodeError, InvalidEvent) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def _redrive(
    settings: Settings,
    ids: tuple[str, ...],
    select_all: bool,
    filters: tuple[str | None, str | None, datetime | None],
    execute: bool,
    force: bool,
    progress: bool | None,
) -> list[Decision]:
    codec = codec_from_settings(settings)

    def scope(letters: tuple[DeadLetter, ...]) -> list[DeadLetter]:
        if select_all:
            return _filtered(letters, *filters)
        by_id = {dl.dead_letter_id: dl for dl in letters}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise click.ClickException(f"no dead letter with id {', '.join(unknown)} (nothing was re-driven)")
        return sorted((by_id[i] for i in dict.fromkeys(ids)), key=lambda dl: (dl.failed_at, dl.dead_letter_id))

    parked = await _load(settings, codec, progress, scope)
    chosen = parked.scope
    decisions: list[Decision] = []
    publisher: EventPublisher | None = None
    sent: dict[str, str] = {}  # original position -> letter id, re-driven in this run
    try:
        for letter in chosen:
            done = parked.redrive_of(letter)
            position = original_position(letter)
            if done is not None:
                via = "" if done.dead_letter_id == letter.dead_letter_id else f" via {done.dead_letter_id}"
                decisions.append(Decision(letter, "skip", f"already re-driven{via}: {done.copy.position}"))
                continue
            if position in sent:
                decisions.append(Decision(letter, "skip", f"same original message re-driven via {sent[position]}"))
                continue
            if not letter.original_value:
                decisions.append(Decision(letter, "skip", "the parked message is empty: nothing to re-drive"))
                continue
            failing = await _still_failing(codec, letter)
            if failing and not force:
                decisions.append(Decision(letter, "skip", f"still fails: {failing} (fix the cause, or --force)"))
                continue
            note = f" despite: {failing}" if failing else ""
            if not execute:
                decisions.append(Decision(letter, "would_redrive", f"to {letter.original_topic}{note}"))
                sent[position] = letter.dead_letter_id
                continue
            if publisher is None:
                publisher = EventPublisher(settings, codec)
                await publisher.start()
            headers = [
                (REDRIVEN_FROM, letter.dead_letter_id.encode()),
                (REDRIVEN_ORIGINAL, position.encode()),
            ]
            try:
                await publisher.send_raw(letter.original_topic, letter.original_key, letter.original_value, headers)
            except Exception as exc:  # the broker said no: report what was done, re-drive the rest later
                decisions.append(Decision(letter, "failed", f"{type(exc).__name__}: {exc}"))
                break
            sent[position] = letter.dead_letter_id
            decisions.append(Decision(letter, "redriven", f"to {letter.original_topic}{note}"))
    finally:
        if publisher is not None:
            await publisher.stop()
    return decisions


@deadletters.command("redrive")
@click.option("--id", "ids", multiple=True, help="Dead-letter id to re-drive (repeatable).")
@click.option("--all", "select_all", is_flag=True, help="Every parked letter matching the filters.")
@click.option("--consumer", help="With --all: only letters parked by this consumer.")
@click.option("--topic", help="With --all: only letters from this original topic.")
@click.option("--since", type=ISO_TIME, help="With --all: only letters parked at or after this time.")
@click.option("--execute", is_flag=True, help="Actually publish. Without it: a dry run.")
@click.option("--force", is_flag=True, help="Re-drive even messages that still fail to decode.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout instead of a table.")
@_progress
def deadletters_redrive(
    ids: tuple[str, ...],
    select_all: bool,
    consumer: str | None,
    topic: str | None,
    since: datetime | None,
    execute: bool,
    force: bool,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Re-publish parked messages (original key and bytes) to their original topic.

    Letters already re-driven are skipped, and so are messages that still fail to decode
    (unless --force). A dry run unless --execute is given.
    """
    if bool(ids) == select_all:
        raise click.UsageError("choose the letters: --id ID (repeatable) or --all (with optional filters)")
    if ids and (consumer or topic or since):
        raise click.UsageError("--consumer/--topic/--since filter --all; with --id the ids are the selection")
    ids = tuple(uuid_option(i, "--id") or i for i in ids)
    settings = load_settings(logs_to_stderr=True)
    try:
        decisions = run(_redrive(settings, ids, select_all, (consumer, topic, since), execute, force, progress))
    except TopicReadError as exc:
        raise click.ClickException(str(exc)) from exc
    except RegistryUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        for d in decisions:
            emit(
                {
                    "dead_letter_id": d.letter.dead_letter_id,
                    "original": original_position(d.letter),
                    "action": d.action,
                    "reason": d.reason,
                }
            )
    else:
        table = Table("dead_letter_id", "consumer", "original", "action", "detail", title="re-drive")
        for d in decisions:
            table.add_row(d.letter.dead_letter_id, d.letter.consumer, original_position(d.letter), d.action, d.reason)
        out.print(table)
    counts = Counter(d.action for d in decisions)
    console.print(
        f"{len(decisions)} selected: "
        + ", ".join(f"{n} {action}" for action, n in sorted(counts.items()))
        + ("" if execute else "\n[yellow]DRY RUN: nothing was published; re-run with --execute[/yellow]"),
        soft_wrap=True,
    )
    if not decisions:
        console.print("nothing selected", soft_wrap=True)
    if any(d.action == "failed" for d in decisions):
        raise click.ClickException("a re-drive failed; the ones before it were published, re-run to re-drive the rest")
