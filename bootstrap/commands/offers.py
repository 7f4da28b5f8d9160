"""`spacemusic offers lapse [--dry-run [--now TIME]] [--json]`: publish ``offer.lapsed`` for
every term-sheet-issued offer past its valid_until (the sweep the pipeline worker runs on
its schedule, ``agents.lapse``), or with ``--dry-run`` only list them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click
from rich.console import Console
from rich.table import Table

from agents.lapse import SweepResult, sweep
from bootstrap.commands.support import ISO_TIME, load_settings, run
from infra.avro import codec_from_settings
from infra.db import create_engine
from infra.kafka import EventPublisher
from infra.settings import Settings

console = Console()


async def _sweep(settings: Settings, now: datetime, dry_run: bool) -> SweepResult:
    engine = create_engine(settings, pool_size=1)
    publisher = None if dry_run else EventPublisher(settings, codec_from_settings(settings))
    try:
        if publisher is not None:
            await publisher.start()
        return await sweep(engine, publisher, now, dry_run=dry_run)
    finally:
        if publisher is not None:
            await publisher.stop()
        await engine.dispose()


@click.group("offers")
def offers() -> None:
    """Offers across deals (one offer's state: `spacemusic deal OFFER_ID`)."""


@offers.command("lapse")
@click.option("--dry-run", is_flag=True, help="List the offers that would lapse; publish nothing.")
@click.option(
    "--now",
    type=ISO_TIME,
    default=None,
    help="With --dry-run: which offers will have lapsed by this instant (ISO-8601; default: now).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per offer instead of a table.")
def lapse(dry_run: bool, now: datetime | None, as_json: bool) -> None:
    """Publish offer.lapsed for each term-sheet-issued offer past its valid_until.

    Nobody accepted, declined or withdrew these in time. Each offer's lapse has one event id,
    so running this again (or beside the pipeline worker's own schedule) publishes nothing
    new that the projector would apply twice. Exit 0 whether or not any offer lapsed,
    1 when another sweep holds the lock (nothing done; run it again).
    """
    if now is not None and not dry_run:
        # Lapsing as of a later instant would end offers their term sheets still promise.
        raise click.UsageError("--now is only for --dry-run: a lapse is published as of the current time")
    settings = load_settings(logs_to_stderr=True)
    result = run(_sweep(settings, now or datetime.now(UTC), dry_run))
    if result.skipped_locked:
        raise click.ClickException("another lapse sweep is running (advisory lock held); try again shortly")
    verb = "would lapse" if dry_run else "lapsed"
    if as_json:
        for event in result.lapsed:
            click.echo(
                json.dumps(
                    {
                        "offer_id": event.offer_id,
                        "creator_id": event.creator_id,
                        "valid_until": event.valid_until.isoformat(),
                        "event_id": event.event_id,
                        "published": not dry_run,
                    }
                )
            )
        return
    table = Table("offer_id", "creator_id", "valid_until", title=f"{len(result.lapsed)} offer(s) {verb}")
    for event in result.lapsed:
        table.add_row(event.offer_id, event.creator_id, event.valid_until.isoformat())
    console.print(table)
