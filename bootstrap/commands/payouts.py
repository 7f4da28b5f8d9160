"""`spacemusic payouts list [--stuck] [--older-than SECONDS] [--json]`: the payout state
machine as operators need it, above all the payouts that are neither paid nor refused
(parked, unknown, or mid-call), oldest first."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from bootstrap.commands.support import json_value, load_settings, run
from infra.db import create_engine
from infra.settings import Settings
from state import payouts as store

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
