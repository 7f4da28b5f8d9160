"""`spacemusic rebuild-projections`: rebuild the deal projections from the event log,
compare them with the live ones, and swap them in. The machinery is projections.rebuild;
this module is options, progress and the report."""

from __future__ import annotations

import sys
from typing import Any

import asyncpg
import click
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from bootstrap.commands.support import load_settings, run
from infra.gc_tuning import tune_gc
from projections import rebuild as machinery

EXIT_IDENTICAL = 0
EXIT_DIFFERENT = 1
EXIT_FAILED = 2


class _EventRate(ProgressColumn):
    """Events per second over rich's speed window (its transfer column speaks bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} events/s" if speed else "- events/s", style="progress.data.speed")


def _tp(tp: tuple[str, int]) -> str:
    return f"{tp[0]}[{tp[1]}]"


def _short(value: Any, width: int = 60) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


def _summary(report: machinery.RebuildReport) -> Table:
    read = report.read
    table = Table(title=f"rebuild-projections ({report.mode}{', forced' if report.forced else ''})", show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value")
    table.add_row("events read", f"{read.events_read:,} ({report.workers} reader processes)")
    table.add_row("events applied", f"{read.events_applied:,}")
    table.add_row("duplicates dropped", f"{read.duplicates:,} (same event id seen again)")
    table.add_row("undecodable skipped", f"{read.skipped:,} (the live projector dead-letters these)")
    table.add_row("offers", f"{read.offers:,}")
    table.add_row("read throughput", f"{report.events_per_second:,.0f} events/s")
    table.add_row("caught up", f"{report.catch_up_events:,} events written while the rebuild ran")
    for name in ("read", "index", "catch_up", "lock_wait", "compare", "swap", "locked", "snapshot", "total"):
        if name in report.timings:
            label = {"locked": "projector paused (lock held)", "snapshot": "compare snapshot (no lock)"}.get(
                name, f"time: {name.replace('_', ' ')}"
            )
            table.add_row(label, f"{report.timings[name]:.2f} s")
    if report.live_behind:
        lag = ", ".join(f"{_tp(tp)} by {n}" for tp, n in sorted(report.live_behind.items()))
        table.add_row("[yellow]live projector behind[/yellow]", f"{lag} offsets (its rows count as differences)")
    if report.truncated_partitions:
        table.add_row(
            "[yellow]log does not start at 0[/yellow]",
            ", ".join(_tp(tp) for tp in report.truncated_partitions) + " (retention removed events)",
        )
    if report.handed_over:
        table.add_row(
            "tracking handed over", ", ".join(f"{_tp(tp)}={o}" for tp, o in sorted(report.handed_over.items()))
        )
    return table


def _comparison(report: machinery.RebuildReport) -> Table:
    table = Table(title="live vs rebuilt")
    for heading in ("table", "live rows", "rebuilt rows", "live hash", "rebuilt hash", "missing", "extra", "differ"):
        table.add_column(
            heading, no_wrap=True, justify="right" if heading.endswith(("rows", "ing", "tra", "fer")) else "left"
        )
    for t in report.tables:
        style = "green" if t.identical else "red"
        table.add_row(
            t.table,
            f"{t.live_rows:,}",
            f"{t.shadow_rows:,}",
            f"[{style}]{t.live_hash}[/{style}]",
            f"[{style}]{t.shadow_hash}[/{style}]",
            str(len(t.missing)),
            str(len(t.extra)),
            str(len(t.differing)),
        )
    return table


def _differences(report: machinery.RebuildReport) -> Table | None:
    samples = [d for t in report.tables for d in t.samples]
    if not samples:
        return None
    table = Table(title="differences (first rows per table; missing = only the rebuild has it, extra = only live)")
    for heading in ("table", "key", "kind", "column", "live", "rebuilt"):
        table.add_column(heading, no_wrap=heading in ("table", "key", "kind", "column"))
    for d in samples:
        if d.kind == "differs":
            for column in d.columns:
                table.add_row(
                    d.table,
                    d.key,
                    d.kind,
                    column,
                    _short(d.live[column] if d.live else None),
                    _short(d.shadow[column] if d.shadow else None),
                )
        else:
            table.add_row(d.table, d.key, d.kind, "", "(row)" if d.live else "-", "(row)" if d.shadow else "-")
    return table


def _skipped(report: machinery.RebuildReport) -> Table | None:
    if not report.read.skipped_samples:
        return None
    table = Table(title="undecodable messages skipped (first ones)")
    for heading in ("topic", "partition", "offset", "error"):
        table.add_column(heading)
    for s in report.read.skipped_samples:
        table.add_row(s.topic, str(s.partition), str(s.offset), f"{s.error_type}: {_short(s.error, 80)}")
    return table


def _verdict(report: machinery.RebuildReport) -> tuple[str, int]:
    if report.identical:
        if report.mode == "verify":
            return "[green]identical: the live projections match the event log[/green]", EXIT_IDENTICAL
        return (
            "[green]identical: live tables confirmed (nothing to change), tracking consistent[/green]",
            EXIT_IDENTICAL,
        )
    if report.swapped:
        return (
            f"[yellow]forced swap: {report.differences} differing rows replaced, {report.changed_offers} deals "
            "re-announced on the SSE stream[/yellow]",
            EXIT_IDENTICAL,
        )
    hint = " (rerun with --force to replace the live rows)" if report.mode == "swap" else ""
    return f"[red]{report.differences} differing rows: live tables left unchanged{hint}[/red]", EXIT_DIFFERENT


def print_report(report: machinery.RebuildReport, console: Console) -> int:
    """The end-of-run report; returns the exit code."""
    console.print(_summary(report))
    console.print(_comparison(report))
    for table in (_differences(report), _skipped(report)):
        if table is not None:
            console.print(table)
    verdict, code = _verdict(report)
    console.print(verdict)
    return code


@click.command("rebuild-projections")
@click.option("--verify-only", is_flag=True, help="Rebuild and compare, never touch the live tables (no lock).")
@click.option("--force", is_flag=True, help="Swap even when the comparison finds differences (repairs live rows).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Reader processes for the read phase [default: one per CPU, at most one per partition].",
)
@click.option(
    "--wait-for-live",
    "live_wait",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for a lagging live projector to reach the rebuild's position.",
)
@click.option(
    "--show",
    "samples",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Differing rows described column by column, per table.",
)
def rebuild_projections(verify_only: bool, force: bool, workers: int | None, live_wait: float, samples: int) -> None:
    """Rebuild the deal projections (offers, deal_events) from offset 0 of every offer.*
    topic, compare them row by row with the live tables, and swap them in.

    \b
    Phases:
      1. read      every partition up to the high-water marks taken at the start, folded
                   with the projector's own code into UNLOGGED shadow tables. No lock:
                   the web and the live projector are untouched.
      2. catch-up  the shadow follows the live projector's tracking positions.
      3. reconcile one transaction: read the live positions, apply the last events to
                   the shadow, compare (row by row + canonical hash per table), swap.

    \b
    The lock: the swap takes the projection write lock, the one every live projector
    transaction takes first, for step 3 only. The projector waits (it does not fail)
    for the time shown as "projector paused" in the report; readers never wait and see
    the old rows until the commit, then the new ones. --verify-only takes no lock (it
    compares inside one consistent snapshot).

    \b
    The swap writes only the rows that differ, so it is a no-op when the projections
    are identical; it happens only when they are identical or with --force. Corrected
    deals get a change-log row, so SSE clients receive them. Tracking positions stay
    those of the live projector (or move forward to the rebuild's when it was behind):
    no gap, no double apply. Never produces events, payments or documents.

    Exit status: 0 identical (or force-swapped), 1 differences found (live unchanged),
    2 the rebuild could not run.
    """
    if verify_only and force:
        raise click.UsageError("--verify-only and --force exclude each other")
    settings = load_settings()
    tune_gc(settings.gc_gen0_threshold)  # a million decodes: see infra/gc_tuning.py
    err = Console(stderr=True)
    options = machinery.RebuildOptions(
        swap=not verify_only, force=force, workers=workers, live_wait_seconds=live_wait, samples=samples
    )
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _EventRate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )
    task = progress.add_task("read", total=None)

    def advance(n: int, total: int) -> None:
        progress.update(task, total=total, advance=n)

    def phase(name: str) -> None:
        if name != "read":
            progress.update(task, description="read (done)")
            err.print(f"[bold]{name}[/bold] …")

    try:
        with progress:
            report = run(machinery.rebuild_projections(settings, options, progress=advance, phase=phase))
    except machinery.RebuildError as exc:
        err.print(f"[red]rebuild-projections failed: {exc}[/red] (live tables unchanged)")
        sys.exit(EXIT_FAILED)
    except (OSError, KafkaError, asyncpg.PostgresError, SQLAlchemyError) as exc:
        err.print(f"[red]rebuild-projections failed: {type(exc).__name__}: {exc}[/red] (live tables unchanged)")
        sys.exit(EXIT_FAILED)
    sys.exit(print_report(report, Console()))
