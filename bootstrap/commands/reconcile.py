"""`spacemusic reconcile [--since TIME] [--json]`: compare the providers' transfers with our
payouts and the ledger (``agents.reconcile``); exit 1 on any drift."""

from __future__ import annotations

import json
import sys
from datetime import datetime

import click
from rich.console import Console
from rich.table import Table

from agents.reconcile import ReconcileReport, reconcile
from bootstrap.commands.support import ISO_TIME, load_settings, run
from infra.db import create_engine
from infra.providers.stripe import StripeClient
from infra.providers.wise import WiseClient
from infra.settings import Settings
from state.provider_objects import SqlProviderObjects

console = Console()


async def _reconcile(settings: Settings, since: datetime | None) -> ReconcileReport:
    engine = create_engine(settings, pool_size=1)
    timeout = settings.payout_provider_timeout_seconds
    stripe = (
        StripeClient(settings.stripe_api_base, settings.stripe_api_key.get_secret_value(), timeout)
        if settings.stripe_api_key.get_secret_value()
        else None
    )
    wise = (
        WiseClient(
            settings.wise_api_base,
            settings.wise_token.get_secret_value(),
            settings.wise_profile_id,
            timeout,
            objects=SqlProviderObjects(engine, "WISE"),
        )
        if settings.wise_token.get_secret_value() and settings.wise_profile_id
        else None
    )
    try:
        return await reconcile(engine, stripe, wise, since)
    finally:
        for client in (stripe, wise):
            if client is not None:
                await client.aclose()
        await engine.dispose()


@click.command("reconcile")
@click.option("--since", type=ISO_TIME, default=None, help="Only transfers and payouts created since (ISO-8601).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per drift instead of a table.")
def reconcile_command(since: datetime | None, as_json: bool) -> None:
    """List the providers' transfers and compare them with payouts and the ledger."""
    settings = load_settings(logs_to_stderr=True)
    report = run(_reconcile(settings, since))
    if as_json:
        for d in report.drifts:
            line = {"kind": d.kind, "payout_id": d.payout_id, "provider": d.provider, "reference": d.reference}
            sys.stdout.write(json.dumps({**line, "detail": d.detail}) + "\n")
    else:
        table = Table(title=f"Reconciliation: {report.transfers} transfers, {report.payouts} payouts")
        for column in ("kind", "payout_id", "provider", "reference", "detail"):
            table.add_column(column, no_wrap=True)
        for d in report.drifts:
            table.add_row(d.kind, d.payout_id or "", d.provider, d.reference or "", d.detail)
        console.print(table)
        console.print("clean" if report.ok else f"{len(report.drifts)} drift(s)")
    sys.exit(0 if report.ok else 1)
