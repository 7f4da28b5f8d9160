"""`spacemusic payouts list [--stuck] [--older-than SECONDS] [--json]`: the payout state
machine as operators need it, above all the payouts that are neither paid nor refused
(parked, unknown, or mid-call), oldest first.

`spacemusic payouts retry OFFER_ID [--recipient ID] --by NAME`: a new payout for a deal whose
payout failed (an ``offer.payout.requested`` with ``retry_of``, ``requested_by=operator:NAME``).
`spacemusic payouts cancel PAYOUT_ID --by NAME`: a parked payout ends ``failed`` once the
provider confirms nothing moved (an ``offer.payout.completed`` FAILED naming who cancelled)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from agents.payouts import PayoutRunner, retry_request
from bootstrap.commands.support import json_value, load_settings, run, uuid_option
from infra.avro import codec_from_settings
from infra.crypto import RecipientVault
from infra.db import create_engine
from infra.kafka import EventPublisher
from infra.providers.stripe import StripeClient
from infra.providers.wise import WiseClient
from infra.settings import Settings
from models.events import PayoutRequested
from state import payouts as store
from state.provider_objects import SqlProviderObjects

console = Console()


async def _rows(settings: Settings, stuck: bool, older_than: float, limit: int) -> list[dict[str, Any]]:
    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            if stuck:
                return await store.stuck(conn, older_than)
            return await store.list_payouts(conn, limit)
    finally:
        await engine.dispose()


@click.group()
def payouts() -> None:
    """Inspect payouts (the payout state machine in Postgres)."""


@payouts.command("list")
@click.option("--stuck", is_flag=True, help="Only payouts neither paid nor refused (parked, unknown, in flight).")
@click.option("--older-than", type=float, default=0.0, show_default=True, help="With --stuck: unchanged this long.")
@click.option("--limit", type=int, default=50, show_default=True, help="Without --stuck: the most recent N.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
def list_command(stuck: bool, older_than: float, limit: int, as_json: bool) -> None:
    """List payouts; exit 1 with --stuck when any payout is stuck."""
    settings = load_settings(logs_to_stderr=True)
    rows = run(_rows(settings, stuck, older_than, limit))
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps({k: json_value(v) for k, v in row.items()}, sort_keys=True, default=str) + "\n")
    else:
        table = Table(title="Stuck payouts" if stuck else "Payouts")
        columns = ["payout_id", "offer_id", "phase", "parked_from", "amount_minor", "currency", "checks", "updated_at"]
        if stuck:
            columns.append("age_seconds")
        for column in columns:
            table.add_column(column, no_wrap=True)
        for row in rows:
            table.add_row(*(str(json_value(row.get(c)) if row.get(c) is not None else "") for c in columns))
        console.print(table)
        if stuck:
            console.print(f"{len(rows)} stuck payout(s)")
    if stuck and rows and not as_json:
        sys.exit(1)


def provider_clients(settings: Settings, engine: Any) -> tuple[StripeClient | None, WiseClient | None]:
    """The Stripe and Wise adapters as the worker builds them (None when not configured)."""
    timeout = settings.payout_provider_timeout_seconds
    stripe_key = settings.stripe_api_key.get_secret_value()
    wise_token = settings.wise_token.get_secret_value()
    stripe = StripeClient(settings.stripe_api_base, stripe_key, timeout) if stripe_key else None
    wise = (
        WiseClient(
            settings.wise_api_base,
            wise_token,
            settings.wise_profile_id,
            timeout,
            objects=SqlProviderObjects(engine, "WISE"),
        )
        if wise_token and settings.wise_profile_id
        else None
    )
    return stripe, wise


async def _with_publisher(settings: Settings, work: Any) -> Any:
    engine = create_engine(settings, pool_size=2)
    publisher = EventPublisher(settings, codec_from_settings(settings))
    await publisher.start()
    try:
        return await work(engine, publisher)
    finally:
        await publisher.stop()
        await engine.dispose()


@payouts.command("retry")
@click.argument("offer_id")
@click.option("--recipient", "recipient_id", default=None, help="Another recipient of the same creator.")
@click.option("--by", "by", required=True, help="Who retries (recorded in the deal's history).")
def retry_command(offer_id: str, recipient_id: str | None, by: str) -> None:
    """Retry a deal's FAILED payout: a new payout, linked to the failed one (an event)."""
    settings = load_settings(logs_to_stderr=True)
    offer_id = uuid_option(offer_id, "offer_id") or offer_id
    recipient_id = uuid_option(recipient_id, "--recipient")

    async def work(engine: Any, publisher: EventPublisher) -> PayoutRequested:
        async with engine.connect() as conn:
            event = await retry_request(conn, offer_id, recipient_id, by, datetime.now(UTC))
        await publisher.publish(event)
        return event

    try:
        event = run(_with_publisher(settings, work))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"retry requested: payout {event.payout_id} (retries {event.retry_of}) by operator:{by}")


@payouts.command("cancel")
@click.argument("payout_id")
@click.option("--by", "by", required=True, help="Who cancels (recorded in the deal's history).")
def cancel_command(payout_id: str, by: str) -> None:
    """Cancel a PARKED payout once the provider confirms nothing moved (exit 1 otherwise)."""
    settings = load_settings(logs_to_stderr=True)
    payout_id = uuid_option(payout_id, "payout_id") or payout_id

    async def work(engine: Any, publisher: EventPublisher) -> str:
        stripe, wise = provider_clients(settings, engine)
        runner = PayoutRunner(
            engine,
            publisher,
            RecipientVault.from_settings(settings),
            stripe,
            wise,
            settle_seconds=settings.payout_settle_seconds,
            driver=f"operator:{by}",
        )
        try:
            return await runner.cancel_when_free(payout_id, by)
        finally:
            for client in (stripe, wise):
                if client is not None:
                    await client.aclose()

    outcome = run(_with_publisher(settings, work))
    console.print(outcome)
    if outcome != "cancelled":
        sys.exit(1)
