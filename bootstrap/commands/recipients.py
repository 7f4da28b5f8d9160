"""`spacemusic recipients`: rotate the key payout recipient details are sealed under, and
check that every recipient still opens (docs/runbooks/rotate-recipient-key.md)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from bootstrap.commands.support import ProgressReporter, console, load_settings, run
from infra.crypto import RecipientVault
from infra.db import create_engine
from infra.settings import SettingsError
from state import recipient_keys
from state.recipient_keys import Unreadable

PROCEDURE = """
Rotating the key, with no downtime:

\b
  1. Add the new key FIRST in RECIPIENT_ENCRYPTION_KEYS, keeping the old ones after it:
     RECIPIENT_ENCRYPTION_KEYS="k3:<new>,k2:<old>"  (new key: `openssl rand -base64 32`)
  2. Deploy web and workers: new recipients are sealed under k3, old rows still open.
  3. spacemusic recipients rotate-key   (re-seals every row not under k3, legacy Fernet included)
  4. spacemusic recipients check --require-current   (every row opens, all under k3)
  5. Remove the old key from the keyring (and RECIPIENT_ENCRYPTION_KEY once no legacy row is
     left), deploy again, and run `check` once more.
"""


def _vault() -> tuple[Any, RecipientVault]:
    settings = load_settings(logs_to_stderr=True)
    try:
        vault = RecipientVault.from_settings(settings)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    return settings, vault


def _report_failures(failed: list[Unreadable]) -> None:
    for item in failed[:50]:
        console.print(f"[red]unreadable[/red] {item.reason}", highlight=False, soft_wrap=True)
    if len(failed) > 50:
        console.print(f"... and {len(failed) - 50} more", highlight=False)


@click.group()
def recipients() -> None:
    """Payout recipients: their details are sealed (AES-256-GCM, bound to the recipient and
    creator ids) under the keyring RECIPIENT_ENCRYPTION_KEYS."""


@recipients.command("rotate-key", epilog=PROCEDURE)
@click.option("--batch", default=200, show_default=True, type=click.IntRange(1, 10_000), help="Rows per transaction.")
@click.option("--dry-run", is_flag=True, help="Open every row to rotate and count; write nothing.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
def rotate_key(batch: int, dry_run: bool, progress: bool | None) -> None:
    """Re-seal every recipient not under the current (first) key of RECIPIENT_ENCRYPTION_KEYS.

    Each batch is one transaction holding row locks (rows a writer holds are skipped and
    counted as left: run again). Safe to interrupt and run again: rows already under the
    current key are not touched. Prints a JSON summary on stdout; exits 1 when a row could
    not be opened with the configured keys (it is left as it was).
    """
    settings, vault = _vault()

    async def go() -> recipient_keys.RotationSummary:
        engine = create_engine(settings, pool_size=1)
        try:
            total = await recipient_keys.count_to_rotate(engine, vault.current_key_id)
            reporter = ProgressReporter(total, f"re-sealing under {vault.current_key_id}", progress)
            with reporter.running():
                return await recipient_keys.rotate(engine, vault, batch=batch, dry_run=dry_run, on_row=reporter.advance)
        finally:
            await engine.dispose()

    summary = run(go())
    _report_failures(summary.failed)
    verb = "would rotate" if dry_run else "rotated"
    console.print(
        f"{verb} {summary.rotated}, already current {summary.already_current}, failed {len(summary.failed)}, "
        f"left {summary.left} (current key {summary.current_key_id})",
        highlight=False,
    )
    click.echo(json.dumps(summary.as_dict(), sort_keys=True))
    if summary.failed:
        sys.exit(1)


@recipients.command("check", epilog=PROCEDURE)
@click.option(
    "--require-current", is_flag=True, help="Also fail when a row is not under the current key (before removing one)."
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
def check(require_current: bool, progress: bool | None) -> None:
    """Open every recipient with its own ids and the configured keys; write nothing.

    Prints a JSON summary (rows per key id; "legacy" = the Fernet key) and exits 1 when a
    row does not open: its key is not configured, or its details were copied from another
    recipient's row or altered.
    """
    settings, vault = _vault()

    async def go() -> recipient_keys.CheckSummary:
        engine = create_engine(settings, pool_size=1)
        try:
            reporter = ProgressReporter(await recipient_keys.count_all(engine), "checking recipients", progress)
            with reporter.running():
                return await recipient_keys.check(engine, vault, on_row=reporter.advance)
        finally:
            await engine.dispose()

    summary = run(go())
    _report_failures(summary.failed)
    console.print(
        f"opened {summary.opened} ({', '.join(f'{k}: {n}' for k, n in sorted(summary.by_key.items())) or 'none'}), "
        f"failed {len(summary.failed)}, not under current key {summary.current_key_id}: {summary.not_current}",
        highlight=False,
    )
    click.echo(json.dumps(summary.as_dict(), sort_keys=True))
    if summary.failed or (require_current and summary.not_current):
        sys.exit(1)
