"""`spacemusic ledger`: recompute and check the double-entry ledger, show balances."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from bootstrap.commands.support import load_settings, run
from infra.db import create_engine
from infra.settings import Settings
from models.money import CURRENCY_EXPONENTS, Money
from state.ledger import AccountBalance, LedgerReport, account_balances, check_ledger

console = Console()


def _amount(minor: int, currency: str) -> str:
    # Money.format knows the exponent; a currency it does not know still prints raw minor units.
    return Money(minor, currency).format() if currency in CURRENCY_EXPONENTS else f"{currency} {minor} (minor)"


async def _report(settings: Settings) -> LedgerReport:
    engine = create_engine(settings, pool_size=1)
    try:
        # REPEATABLE READ: every check reads the same snapshot, so a posting committed
        # mid-check cannot look like a half-written transaction.
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                return await check_ledger(conn)
    finally:
        await engine.dispose()


async def _balances(settings: Settings) -> tuple[AccountBalance, ...]:
    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            return await account_balances(conn)
    finally:
        await engine.dispose()


def _balances_table(balances: tuple[AccountBalance, ...]) -> Table:
    table = Table(title="Account balances")
    # Never wrap names or amounts: operators grep this output and copy account names from it.
    table.add_column("account", no_wrap=True)
    table.add_column("currency", no_wrap=True)
    for heading in ("debits", "credits", "balance (debit +)"):
        table.add_column(heading, justify="right", no_wrap=True)
    for b in balances:
        table.add_row(
            b.account,
            b.currency,
            _amount(b.debits_minor, b.currency),
            _amount(b.credits_minor, b.currency),
            _amount(b.balance_minor, b.currency),
        )
    return table


@click.group()
def ledger() -> None:
    """The double-entry ledger (append-only, balanced per currency)."""


@ledger.command("check")
def ledger_check() -> None:
    """Recompute every invariant from the entries; exit 1 if any is violated."""
    report = run(_report(load_settings()))
    console.print(_balances_table(report.balances))
    trial = Table("currency", "total debits", "total credits", "balanced", title="Trial balance")
    for t in report.trial_balance:
        trial.add_row(
            t.currency,
            _amount(t.debits_minor, t.currency),
            _amount(t.credits_minor, t.currency),
            "[green]yes[/green]" if t.balanced else "[red]NO[/red]",
        )
    console.print(trial)
    console.print(f"{report.transactions} transactions, {report.entries} entries")
    if report.ok:
        console.print("[green]ledger OK: no violations[/green]")
        return
    violations = Table("violation", title=f"{len(report.violations)} violation(s)", style="red")
    for line in report.violations:
        violations.add_row(line)
    console.print(violations)
    sys.exit(1)


@ledger.command("balances")
def ledger_balances() -> None:
    """Balance of every account, per currency (debits positive)."""
    console.print(_balances_table(run(_balances(load_settings()))))
