"""`spacemusic deal <offer_id> [--as-of TIME]`: a deal as it stood at a moment, folded from
its events with the same pure ``models.deal.fold`` the projector's ``apply_event`` builds on.

The default source is the log itself (every lifecycle topic, filtered by the offer id
key), which answers even when the projections are suspect; ``--source db`` reads the
projector's ``deal_events`` history instead, which is faster but only as right as the
projection.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from sqlalchemy import select

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
from infra.avro import RegistryUnavailable, codec_from_settings, event_to_record, record_to_event
from infra.db import create_engine
from infra.settings import Settings
from infra.topic_reader import ReadSpec, TopicReader, TopicReadError
from models.deal import Deal, fold
from models.errors import InvalidEvent
from models.events import EVENT_BY_TOPIC, LIFECYCLE_EVENTS, Event
from models.money import CURRENCY_EXPONENTS, Money
from projections.rows import deal_json, deal_to_row
from projections.tables import deal_events

out = Console()
console = Console(stderr=True)


@dataclass(frozen=True, slots=True)
class Located:
    """An event and where it was read from (``topic:partition:offset``)."""

    event: Event
    source: str


async def events_from_kafka(settings: Settings, offer_id: str, progress: bool | None) -> list[Located]:
    key = offer_id.encode()
    decoder = Decoder(codec_from_settings(settings))
    found: dict[str, Located] = {}
    async with TopicReader(settings) as reader:
        plan = await reader.plan(ReadSpec(topics=tuple(cls.TOPIC for cls in LIFECYCLE_EVENTS)))
        reporter = ProgressReporter(plan.total, "reading the log", progress)
        with reporter.running():
            async for record in reader.read(plan):
                reporter.advance()
                if record.key != key:
                    continue
                event = await decoder(record)
                # A redelivered or replayed event is the same event: the projector folds each
                # event id once, and so must this, or the counts would disagree with it.
                if isinstance(event, Event) and event.offer_id == offer_id:
                    found.setdefault(event.event_id, Located(event, record.position))
    return list(found.values())


def _from_payload(cls: type[Event], payload: dict[str, Any]) -> Event:
    """``deal_events.payload`` is the Avro record made JSON: datetimes became ISO strings."""
    hints = typing.get_type_hints(cls)
    record = dict(payload)
    for f in dataclasses.fields(cls):
        value = record.get(f.name)
        if isinstance(value, str) and datetime in (hints[f.name], *typing.get_args(hints[f.name])):
            record[f.name] = datetime.fromisoformat(value)
    return record_to_event(cls, record)


async def events_from_db(settings: Settings, offer_id: str) -> list[Located]:
    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        deal_events.c.event_type,
                        deal_events.c.payload,
                        deal_events.c.topic,
                        deal_events.c.partition,
                        deal_events.c.offset,
                    )
                    .where(deal_events.c.offer_id == offer_id)
                    .order_by(deal_events.c.occurred_at, deal_events.c.event_id)
                )
            ).all()
    finally:
        await engine.dispose()
    located: list[Located] = []
    for row in rows:
        cls = EVENT_BY_TOPIC.get(row.event_type)
        if cls is None:
            console.print(f"[yellow]skipping a history row of unknown type {row.event_type}[/yellow]")
            continue
        try:
            event = _from_payload(cls, row.payload)
        except InvalidEvent as exc:
            click.echo(f"unreadable history row {row.topic}:{row.partition}:{row.offset}: {exc}", err=True)
            continue
        # deal_events stores the physical topic; show the logical one like the Kafka source.
        topic = row.topic.removeprefix(settings.topic_namespace)
        located.append(Located(event, f"{topic}:{row.partition}:{row.offset}"))
    return located


def _money(minor: int | None, currency: str | None) -> str:
    if minor is None:
        return "-"
    if currency in CURRENCY_EXPONENTS:
        return Money(minor, currency).format()
    return f"{minor} (minor units)"


def _summary(event: Event) -> str:
    """The facts an operator looks for first in each kind of event."""
    record = event_to_record(event)
    currency = record.get("currency")
    parts: list[str] = []
    for name, value in record.items():
        if name in ("event_id", "offer_id", "creator_id", "occurred_at", "correlation_id", "causation_id", "currency"):
            continue
        if name == "royalty_history":
            parts.append(f"{len(value)} month(s) of royalties")
        elif name.endswith("_minor"):
            if value is not None:
                parts.append(f"{name.removesuffix('_minor')}={_money(value, currency)}")
        elif value is not None and name not in ("sha256", "termsheet_sha256", "size_bytes"):
            parts.append(f"{name}={value}")
    return ", ".join(parts)


def _deal_panel(deal: Deal, as_of: datetime | None) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("status", f"[green]{deal.status.value}[/green]")
    for f in dataclasses.fields(Deal):
        value = getattr(deal, f.name)
        if value is None:
            continue
        if f.name.endswith("_minor"):
            shown = _money(value, deal.currency)
        elif isinstance(value, datetime):
            shown = value.isoformat(timespec="milliseconds")
        else:
            shown = str(value)
        table.add_row(f.name, shown)
    when = f"as of {as_of.isoformat()}" if as_of else "now"
    return Panel(table, title=f"deal {deal.offer_id} ({when})", expand=False)


def _timeline(events: list[Located], as_of: datetime | None) -> Table:
    # Two columns, details stacked: a terminal 80 columns wide still shows every fact.
    table = Table(title="events", show_lines=True)
    table.add_column("occurred_at", no_wrap=True)
    table.add_column("event", overflow="fold")
    for item in events:
        later = as_of is not None and item.event.occurred_at > as_of
        name = item.event.TOPIC + (" [italic](after as-of: not in this state)[/italic]" if later else "")
        details = f"[bold]{name}[/bold]\n[dim]{item.event.event_id} at {item.source}[/dim]"
        facts = _summary(item.event)
        table.add_row(
            item.event.occurred_at.isoformat(timespec="milliseconds"),
            details + (f"\n{facts}" if facts else ""),
            style="dim" if later else "",
        )
    return table


def _ordered(events: list[Located]) -> list[Located]:
    # The order fold itself uses, so the timeline reads the way the state was built.
    return sorted(events, key=lambda e: (e.event.occurred_at, e.event.event_id))


@click.command()
@click.argument("offer_id")
@click.option("--as-of", type=ISO_TIME, help="The moment to show (ISO-8601, naive = UTC). Default: now.")
@click.option(
    "--source",
    type=click.Choice(["kafka", "db"]),
    default="kafka",
    show_default=True,
    help="kafka: the lifecycle topics (authoritative); db: the projector's deal_events history (fast).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine output: one JSON document on stdout.")
@click.option("--progress/--no-progress", default=None, help="Force the progress report on or off.")
def deal(offer_id: str, as_of: datetime | None, source: str, as_json: bool, progress: bool | None) -> None:
    """Print a deal's state (now, or as of a time), folded from its events."""
    offer_id = uuid_option(offer_id, "OFFER_ID") or offer_id
    settings = load_settings(logs_to_stderr=True)
    try:
        if source == "db":
            events = run(events_from_db(settings, offer_id))
        else:
            events = run(events_from_kafka(settings, offer_id, progress))
    except TopicReadError as exc:
        raise click.ClickException(str(exc)) from exc
    except RegistryUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    if not events:
        raise click.ClickException(f"no events for offer {offer_id} in {source}")
    events = _ordered(events)
    state = fold([e.event for e in events], as_of)
    if as_json:
        emit(
            {
                "offer_id": offer_id,
                "as_of": as_of.isoformat() if as_of else None,
                "source": source,
                "status": state.status.value if state else None,
                "deal": deal_json(deal_to_row(state)) if state else None,
                "events": [
                    {
                        "event_type": e.event.TOPIC,
                        "event_id": e.event.event_id,
                        "occurred_at": e.event.occurred_at.isoformat(),
                        "source": e.source,
                        "applied": as_of is None or e.event.occurred_at <= as_of,
                        "event": json_value(event_to_record(e.event)),
                    }
                    for e in events
                ],
            }
        )
        return
    if state is None:
        first = events[0].event.occurred_at.isoformat()
        out.print(f"offer {offer_id} did not exist yet at {as_of.isoformat() if as_of else '-'} (first event {first})")
    else:
        out.print(_deal_panel(state, as_of))
    out.print(_timeline(events, as_of))
    sys.stdout.flush()
